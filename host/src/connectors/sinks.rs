//! The sinks of `weir run`: stdout, a JSON-lines file, and null.
//!
//! All three are at-least-once: they write what they are given, as it comes.
//! With checkpoints on, `weir run` uses the exactly-once file sink instead.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{ConnectorError, OutputRecord, Sink};

/// Appends `value` as one JSON line: as is when it already is JSON, else as a
/// JSON string, so the output is always valid JSON lines.
pub(super) fn write_json_line(out: &mut impl Write, value: &[u8]) -> std::io::Result<()> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() && !value.contains(&b'\n') {
        out.write_all(value)?;
    } else {
        let text = String::from_utf8_lossy(value);
        serde_json::to_writer(&mut *out, &text)?;
    }
    out.write_all(b"\n")
}

pub struct StdoutSink;

impl Sink for StdoutSink {
    fn write(&mut self, records: &[OutputRecord]) -> Result<(), ConnectorError> {
        let mut out = std::io::stdout().lock();
        for r in records {
            write_json_line(&mut out, &r.value).map_err(|source| ConnectorError::Write {
                what: "stdout".into(),
                source,
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        std::io::stdout()
            .flush()
            .map_err(|source| ConnectorError::Write {
                what: "stdout".into(),
                source,
            })
    }
}

pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl FileSink {
    /// Creates (or truncates) the file and its parent directories.
    pub fn create(path: &Path) -> Result<Self, ConnectorError> {
        let open_err = |source| ConnectorError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(open_err)?;
        }
        let file = File::create(path).map_err(open_err)?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 16, file),
        })
    }

    fn err(&self, source: std::io::Error) -> ConnectorError {
        ConnectorError::Write {
            what: self.path.display().to_string(),
            source,
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, records: &[OutputRecord]) -> Result<(), ConnectorError> {
        for r in records {
            if let Err(e) = write_json_line(&mut self.out, &r.value) {
                return Err(self.err(e));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out.flush().map_err(|e| self.err(e))?;
        self.out.get_ref().sync_data().map_err(|e| self.err(e))
    }
}

/// Counts records (the runtime does) and drops them.
pub struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _records: &[OutputRecord]) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8]) -> OutputRecord {
        OutputRecord {
            key: None,
            value: value.to_vec(),
            timestamp: None,
            origin: Default::default(),
        }
    }

    #[test]
    fn the_file_sink_writes_json_values_as_is_and_wraps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        let mut sink = FileSink::create(&path).unwrap();
        sink.write(&[
            record(br#"{"a":1}"#),
            record(b"91033:50767"),
            record(b"a\nb"),
        ])
        .unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n\"91033:50767\"\n\"a\\nb\"\n");
    }
}
