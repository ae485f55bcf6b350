//! JSON lines from a file: one event per non-empty line.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{ConnectorError, Source, SourcePosition, SourceRecord, SplitPosition, split_offset};

pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    len: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<Self, ConnectorError> {
        let file = File::open(path).map_err(|source| ConnectorError::Open {
            path: path.to_owned(),
            source,
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 16, file),
            offset: 0,
            len,
        })
    }
}

impl Source for FileSource {
    fn read_batch(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<bool, ConnectorError> {
        let mut taken = 0;
        while taken < max {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line).map_err(|source| {
                ConnectorError::Read {
                    path: self.path.clone(),
                    source,
                }
            })?;
            if n == 0 {
                return Ok(false);
            }
            let at = self.offset;
            self.offset += n as u64;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
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
        Ok(())
    }

    fn progress_unit(&self) -> &'static str {
        "bytes"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_non_empty_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}").unwrap();
        let mut source = FileSource::open(&path).unwrap();
        let mut out = Vec::new();
        while source.read_batch(&mut out, 2).unwrap() {}
        let values: Vec<&[u8]> = out.iter().map(|r| r.value.as_slice()).collect();
        assert_eq!(values, vec![&b"{\"a\":1}"[..], b"{\"a\":2}", b"{\"a\":3}"]);
        assert_eq!(source.progress().0, source.progress().1.unwrap());
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = FileSource::open(Path::new("/no/such/file.jsonl"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/file.jsonl"), "{err}");
    }
}
