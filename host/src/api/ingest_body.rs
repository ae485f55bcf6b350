//! The body of an ingest request: one JSON event, or JSON lines, checked
//! whole before anything is accepted.
//!
//! A body is validated without building a tree of it: each event is parsed
//! into `Checked` (which checks it as a `serde_json::Value` would, numbers
//! in range included, and keeps nothing), and one
//! event spread over lines is compacted by copying its bytes minus the
//! whitespace between tokens. So the memory an ingest request costs beyond
//! its body is its compacted copy, whatever the body's shape (a
//! `serde_json::Value` of a 16 MiB body of small arrays costs many times
//! that), and an event reaches the plugin as it was sent (keys in their
//! order, numbers as written).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::{ApiError, ApiResult};

/// How long an ingest request waits for room before it is answered 429.
pub(crate) const INGEST_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Validates a body of one JSON event or JSON lines, and returns it as
/// compact lines (one event each, `\n`-terminated) with the count.
pub(crate) fn json_lines(body: &[u8]) -> ApiResult<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(body.len() + 1);
    let mut count = 0;
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = serde_json::from_slice::<Checked>(line) {
            // The first event does not end on its line: the body may be one
            // event spread over lines (pretty-printed). If it is not, the
            // error that names the place is the whole body's.
            if count == 0 && e.is_eof() {
                return one_event(body);
            }
            return Err(not_an_event(n + 1, 0, &e));
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

/// A body that must be one JSON document (over several lines): checked,
/// then compacted to one line.
fn one_event(body: &[u8]) -> ApiResult<(Vec<u8>, usize)> {
    if let Err(e) = serde_json::from_slice::<Checked>(body) {
        return Err(not_an_event(e.line(), e.column(), &e));
    }
    let mut out = compact(body);
    out.push(b'\n');
    Ok((out, 1))
}

/// The 400 for a body whose line `line` (and `column`, if known) is not a
/// JSON event.
fn not_an_event(line: usize, column: usize, e: &serde_json::Error) -> ApiError {
    // serde_json's message ends with its own position, which counts from
    // the start of what it parsed; say the body's instead.
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let what = message.strip_suffix(&suffix).unwrap_or(&message);
    let at = if column > 0 {
        format!("line {line}, column {column}")
    } else {
        format!("line {line}")
    };
    ApiError::BadRequest(format!(
        "{at}: not a JSON event ({what}); nothing of this request was accepted"
    ))
}

/// A JSON document checked as `serde_json::Value` would parse it (syntax,
/// strings, numbers in range, nesting depth), keeping nothing of it.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Checked, A::Error> {
        while items.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Checked, A::Error> {
        while entries.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Valid JSON without the whitespace between its tokens (whitespace inside
/// strings is kept): one pass, no tree.
fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: &[u8]) -> String {
        json_lines(body).unwrap_err().to_string()
    }

    #[test]
    fn json_lines_are_compacted_counted_and_refused_whole_on_a_bad_line() {
        let (lines, n) = json_lines(b"{\"a\":1}\n\n  {\"a\":2}  \n").unwrap();
        assert_eq!((lines.as_slice(), n), (&b"{\"a\":1}\n{\"a\":2}\n"[..], 2));
        let (lines, n) = json_lines(b"{\n  \"a\": 1\n}").unwrap();
        assert_eq!((lines.as_slice(), n), (&b"{\"a\":1}\n"[..], 1));
        let err = error_of(b"{\"a\":1}\nnot json\n");
        assert!(err.starts_with("line 2: not a JSON event"), "{err}");
        assert!(json_lines(b"\n\n").is_err());
        // A number out of range, spread over lines: neither one event nor
        // JSON lines, so a 400, never a panic.
        assert!(json_lines(b"{\"a\":1e400,\n\"b\":1}").is_err());
    }

    #[test]
    fn a_pretty_printed_event_is_compacted_as_sent_keys_in_order_and_strings_intact() {
        let body = b"{\n  \"b\": 1.50,\n  \"a\": [1, 2],\n  \"s\": \"x y\\\" {\\n\"\n}\n";
        let (lines, n) = json_lines(body).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "{\"b\":1.50,\"a\":[1,2],\"s\":\"x y\\\" {\\n\"}\n"
        );
    }

    #[test]
    fn a_bad_line_deep_in_a_pretty_printed_event_is_named_with_its_column() {
        let err = error_of(b"{\n  \"a\": 1,\n  \"b\": tru,\n  \"c\": 2\n}\n");
        assert!(
            err.starts_with("line 3, column 11: not a JSON event"),
            "{err}"
        );
        assert!(!err.contains("at line"), "{err}");
    }

    #[test]
    fn a_bad_line_among_many_is_named_and_its_message_has_no_inner_position() {
        let mut body = Vec::new();
        for i in 0..10_000 {
            body.extend_from_slice(format!("{{\"i\":{i}}}\n").as_bytes());
        }
        body.extend_from_slice(b"{\"i\":}\n{\"i\":0}\n");
        let err = error_of(&body);
        assert!(
            err.starts_with("line 10001: not a JSON event (expected value)"),
            "{err}"
        );
    }
}
