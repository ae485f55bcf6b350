//! The body of an ingest request: one JSON event, or JSON lines, checked
//! whole before anything is accepted.

use serde_json::Value;

use super::error::{ApiError, ApiResult};

/// How long an ingest request waits for room before it is answered 429.
pub(crate) const INGEST_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Validates a body of one JSON event or JSON lines, and returns it as
/// compact lines (one event each, `\n`-terminated) with the count.
pub(crate) fn json_lines(body: &[u8]) -> ApiResult<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(body.len() + 1);
    let mut count = 0;
    // One event spread over lines (pretty-printed): compact it. (A body
    // that does not parse as one document is read as JSON lines below.)
    if body.contains(&b'\n')
        && let Ok(value) = serde_json::from_slice::<Value>(body)
    {
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(b'\n');
        return Ok((out, 1));
    }
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            return Err(ApiError::BadRequest(format!(
                "line {}: not a JSON event ({e}); nothing of this request was accepted",
                n + 1
            )));
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        count += 1;
    }
    if count == 0 {
        return Err(ApiError::BadRequest(
            "no events: send one JSON event or JSON lines".into(),
        ));
    }
    Ok((out, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_compacted_counted_and_refused_whole_on_a_bad_line() {
        let (lines, n) = json_lines(b"{\"a\":1}\n\n  {\"a\":2}  \n").unwrap();
        assert_eq!((lines.as_slice(), n), (&b"{\"a\":1}\n{\"a\":2}\n"[..], 2));
        let (lines, n) = json_lines(b"{\n  \"a\": 1\n}").unwrap();
        assert_eq!((lines.as_slice(), n), (&b"{\"a\":1}\n"[..], 1));
        let err = json_lines(b"{\"a\":1}\nnot json\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2: not a JSON event"), "{err}");
        assert!(json_lines(b"\n\n").is_err());
        // A document `Value` cannot hold (a number out of range), spread over
        // lines: neither one event nor JSON lines, so a 400, never a panic.
        assert!(json_lines(b"{\"a\":1e400,\n\"b\":1}").is_err());
    }
}
