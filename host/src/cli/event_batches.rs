//! Cutting a JSON-lines file into request bodies for the ingest route:
//! whole lines only, at most `MAX_LINES` lines and `MAX_BYTES` bytes each
//! (the route takes 16 MiB; half leaves room for a line that ends past it).
//! Blank lines are skipped; lines are not parsed: the server names a bad one.

use std::io::BufRead;

pub(crate) const MAX_LINES: usize = 10_000;
pub(crate) const MAX_BYTES: usize = 8 << 20;

/// One request body: `lines` JSON lines, newline-terminated.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Batch {
    pub body: String,
    pub lines: usize,
    /// The file's line number of the batch's first line (1-based).
    pub first_line: usize,
}

/// The batches of `reader`, in order.
pub(crate) fn batches<R: BufRead>(
    reader: R,
    max_lines: usize,
    max_bytes: usize,
) -> impl Iterator<Item = std::io::Result<Batch>> {
    let mut lines = reader.lines().enumerate();
    std::iter::from_fn(move || {
        let mut batch = Batch::default();
        loop {
            if batch.lines >= max_lines || batch.body.len() >= max_bytes {
                return Some(Ok(batch));
            }
            match lines.next() {
                None if batch.lines == 0 => return None,
                None => return Some(Ok(batch)),
                Some((_, Err(e))) => return Some(Err(e)),
                Some((number, Ok(line))) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    if batch.lines == 0 {
                        batch.first_line = number + 1;
                    }
                    batch.body.push_str(&line);
                    batch.body.push('\n');
                    batch.lines += 1;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str, max_lines: usize, max_bytes: usize) -> Vec<Batch> {
        batches(text.as_bytes(), max_lines, max_bytes)
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn lines_are_cut_into_batches_of_at_most_max_lines() {
        let text: String = (0..25).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let batches = cut(&text, 10, MAX_BYTES);
        let sizes: Vec<usize> = batches.iter().map(|b| b.lines).collect();
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(batches[1].first_line, 11);
        let joined: String = batches.iter().map(|b| b.body.as_str()).collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn a_batch_ends_once_it_reaches_max_bytes() {
        let batches = cut("aaaa\nbbbb\ncccc\n", 100, 8);
        let bodies: Vec<&str> = batches.iter().map(|b| b.body.as_str()).collect();
        assert_eq!(bodies, ["aaaa\nbbbb\n", "cccc\n"]);
    }

    #[test]
    fn blank_lines_are_skipped_and_a_last_line_gets_its_newline() {
        let batches = cut("\n1\n  \n2", 10, MAX_BYTES);
        assert_eq!(
            batches,
            [Batch {
                body: "1\n2\n".into(),
                lines: 2,
                first_line: 2
            }]
        );
        assert!(cut("", 10, MAX_BYTES).is_empty());
    }
}
