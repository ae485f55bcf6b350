//! JSON lines from a file: one event per non-empty line.
//!
//! Only a regular file is read: a FIFO would block the opener until someone
//! writes, and a device such as `/dev/zero` never ends (the open itself is
//! non-blocking, so neither can hang a request). A line longer than the
//! limit is never held whole: its first bytes go to `dead-letter` with the
//! reason, the rest is skipped, and reading goes on after it. One call
//! reads at most `READ_BUDGET` bytes, so a huge line cannot keep the source
//! task from its commands (stop, swap, checkpoints) for long.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{
    ConnectorError, RejectedRecord, Source, SourcePosition, SourceRecord, SplitPosition,
    split_offset,
};

/// The most bytes one `read_batch` call reads (a multiple of any sane line
/// limit's worth of work, small enough to serve commands between calls).
const READ_BUDGET: usize = 8 << 20;
/// How much of an overlong line its dead-letter shows.
const REJECTED_PREFIX: usize = 1024;

pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    /// Where the next line starts (what a checkpoint records: never the
    /// middle of a line).
    offset: u64,
    len: u64,
    max_line: usize,
    /// The line being read, over as many calls as its length takes.
    partial: Partial,
    rejected: Vec<RejectedRecord>,
}

/// A line read in part.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    /// Bytes of the line consumed so far (all of them, kept or not).
    consumed: u64,
    /// The line is over the limit: only its prefix is kept.
    overlong: bool,
}

/// What a file that is not a regular one is, for the error.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

impl FileSource {
    /// Opens `path` (a regular file) whose lines may be up to `max_line`
    /// bytes long.
    pub fn open(path: &Path, max_line: usize) -> Result<Self, ConnectorError> {
        let open_error = |source| ConnectorError::Open {
            path: path.to_owned(),
            source,
        };
        // Non-blocking, so that opening a FIFO nobody writes to returns at
        // once (and is then refused below) instead of waiting for a writer.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_error)?;
        let metadata = file.metadata().map_err(open_error)?;
        if !metadata.file_type().is_file() {
            return Err(ConnectorError::NotAFile {
                path: path.to_owned(),
                kind: kind_of(metadata.file_type()),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 16, file),
            offset: 0,
            len: metadata.len(),
            max_line: max_line.max(1),
            partial: Partial::default(),
            rejected: Vec::new(),
        })
    }

    /// Reads on in the current line; `Some(line)` once it ends (at a
    /// newline, or at the end of the file), `None` at the end of the file
    /// with nothing read or when `budget` runs out first.
    fn next_line(&mut self, budget: &mut usize) -> Result<Option<Vec<u8>>, ConnectorError> {
        loop {
            if *budget == 0 {
                return Ok(None);
            }
            let available = self
                .reader
                .fill_buf()
                .map_err(|source| ConnectorError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if available.is_empty() {
                if self.partial.consumed == 0 {
                    return Ok(None);
                }
                // The last line has no newline.
                return Ok(Some(self.end_line(false)));
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.map_or(available.len(), |at| at + 1).min(*budget);
            let chunk = &available[..take];
            let room = if self.partial.overlong {
                REJECTED_PREFIX
            } else {
                // The line ending (`\n` or `\r\n`) is not part of the
                // limit; one byte more than it tells an overlong line (and
                // at least the prefix a rejected line shows is kept).
                (self.max_line + 2).max(REJECTED_PREFIX)
            }
            .saturating_sub(self.partial.bytes.len());
            self.partial
                .bytes
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.partial.consumed += take as u64;
            *budget -= take;
            let ended = newline.is_some_and(|at| at < take);
            self.reader.consume(take);
            if !self.partial.overlong && line_body(&self.partial.bytes).len() > self.max_line {
                self.partial.overlong = true;
                self.partial.bytes.truncate(REJECTED_PREFIX);
            }
            if ended {
                return Ok(Some(self.end_line(true)));
            }
        }
    }

    /// Closes the line read so far: returns it (an overlong line is
    /// rejected and comes back empty), and moves the offset past it.
    fn end_line(&mut self, newline: bool) -> Vec<u8> {
        let Partial {
            mut bytes,
            consumed,
            overlong,
        } = std::mem::take(&mut self.partial);
        let at = self.offset;
        self.offset += consumed;
        if overlong {
            let shown = line_body(&bytes).len();
            bytes.truncate(shown);
            self.rejected.push(RejectedRecord {
                split: 0,
                offset: at,
                error: "too-large",
                reason: format!(
                    "a line of {} bytes is longer than the file source's limit of {} bytes (source.max_line_bytes); its first {} bytes are in `value`",
                    consumed - u64::from(newline),
                    self.max_line,
                    bytes.len().min(REJECTED_PREFIX)
                ),
                prefix: bytes,
            });
            return Vec::new();
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        bytes
    }
}

/// A line without its line ending (`\n` or `\r\n`): what the limit counts.
fn line_body(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Source for FileSource {
    fn read_batch(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<bool, ConnectorError> {
        let mut taken = 0;
        let mut budget = READ_BUDGET;
        while taken < max {
            let at = self.offset;
            let Some(line) = self.next_line(&mut budget)? else {
                // Out of budget: more to read, at the next call.
                return Ok(budget == 0 || self.partial.consumed > 0);
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(SourceRecord {
                key: None,
                value: line,
                timestamp: None,
                headers: Vec::new(),
                split: 0,
                offset: at,
            });
            taken += 1;
        }
        Ok(true)
    }

    fn take_rejected(&mut self, out: &mut Vec<RejectedRecord>) {
        out.append(&mut self.rejected);
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.offset, Some(self.len))
    }

    fn position(&self) -> SourcePosition {
        vec![SplitPosition {
            split: self.path.display().to_string(),
            offset: self.offset,
        }]
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        let split = self.path.display().to_string();
        let offset = split_offset(position, &split, "file")?;
        if offset > self.len {
            return Err(ConnectorError::Seek(format!(
                "the checkpoint is at byte {offset} of {split} but the file has only {} bytes",
                self.len
            )));
        }
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|source| ConnectorError::Read {
                path: self.path.clone(),
                source,
            })?;
        self.offset = offset;
        self.partial = Partial::default();
        Ok(())
    }

    fn progress_unit(&self) -> &'static str {
        "bytes"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(source: &mut FileSource, batch: usize) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        while source.read_batch(&mut out, batch).unwrap() {}
        out
    }

    #[test]
    fn reads_non_empty_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}").unwrap();
        let mut source = FileSource::open(&path, 1 << 20).unwrap();
        let out = read_all(&mut source, 2);
        let values: Vec<&[u8]> = out.iter().map(|r| r.value.as_slice()).collect();
        assert_eq!(values, vec![&b"{\"a\":1}"[..], b"{\"a\":2}", b"{\"a\":3}"]);
        let offsets: Vec<u64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 12, 21]);
        assert_eq!(source.progress().0, source.progress().1.unwrap());
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = FileSource::open(Path::new("/no/such/file.jsonl"), 1 << 20)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/file.jsonl"), "{err}");
    }

    #[test]
    fn a_line_over_the_limit_is_rejected_with_its_prefix_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(5000));
        // Exactly at the limit (with a CRLF ending) passes; one byte more
        // does not.
        let at_limit = format!("{{\"b\":\"{}\"}}", "y".repeat(92));
        assert_eq!(at_limit.len(), 100);
        let over = format!("{at_limit}z");
        std::fs::write(
            &path,
            format!("{{\"a\":1}}\n{long}\n{at_limit}\r\n{over}\n{{\"a\":2}}\n{long}"),
        )
        .unwrap();
        let mut source = FileSource::open(&path, 100).unwrap();
        let out = read_all(&mut source, 1024);
        let values: Vec<&[u8]> = out.iter().map(|r| r.value.as_slice()).collect();
        assert_eq!(
            values,
            vec![&b"{\"a\":1}"[..], at_limit.as_bytes(), b"{\"a\":2}"]
        );
        let mut rejected = Vec::new();
        source.take_rejected(&mut rejected);
        assert_eq!(rejected.len(), 3, "{rejected:?}");
        let first = &rejected[0];
        assert_eq!(first.offset, 8);
        assert_eq!(first.prefix.len(), REJECTED_PREFIX);
        assert!(long.as_bytes().starts_with(&first.prefix));
        assert!(
            first.reason.contains("a line of 5008 bytes")
                && first
                    .reason
                    .contains("limit of 100 bytes (source.max_line_bytes)"),
            "{}",
            first.reason
        );
        assert_eq!(rejected[1].prefix, over.as_bytes());
        // The last line has no newline and is rejected at the end of file.
        assert_eq!(rejected[2].offset, source.len - long.len() as u64);
        assert_eq!(source.progress().0, source.len);
    }

    #[test]
    fn a_huge_line_is_read_in_bounded_steps_and_never_held_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let huge = vec![b'x'; 3 * READ_BUDGET];
        let mut content = huge.clone();
        content.extend_from_slice(b"\n{\"a\":1}\n");
        std::fs::write(&path, &content).unwrap();
        let mut source = FileSource::open(&path, 1 << 20).unwrap();
        let mut out = Vec::new();
        let mut calls = 0;
        while source.read_batch(&mut out, 1024).unwrap() {
            calls += 1;
            assert!(source.partial.bytes.capacity() <= 2 << 20);
            // A checkpoint taken meanwhile restarts at the huge line.
            if out.is_empty() {
                assert_eq!(source.position()[0].offset, 0);
            }
        }
        assert!(calls >= 3, "{calls} calls");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, b"{\"a\":1}");
        let mut rejected = Vec::new();
        source.take_rejected(&mut rejected);
        assert_eq!(rejected.len(), 1);
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once_naming_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("in.fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Opening a FIFO nobody writes to would block a plain open.
        let began = std::time::Instant::now();
        let err = FileSource::open(&fifo, 1 << 20).err().unwrap();
        assert!(began.elapsed() < std::time::Duration::from_secs(2));
        let message = err.to_string();
        assert!(
            message.contains("in.fifo is a FIFO, not a regular file"),
            "{message}"
        );
        let err = FileSource::open(Path::new("/dev/zero"), 1 << 20)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("/dev/zero is a character device, not a regular file"),
            "{err}"
        );
        let err = FileSource::open(dir.path(), 1 << 20).err().unwrap();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
