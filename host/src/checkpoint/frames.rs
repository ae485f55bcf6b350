//! Snapshot files: a magic line, then length-prefixed postcard records, then
//! an end marker. Written and read as streams, so a snapshot never has to
//! fit in memory; a file cut short or with a damaged record is an error
//! (the manifest's CRC catches the rest).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CheckpointError;

const MAGIC: &[u8; 8] = b"WEIRSNP1";
/// Length prefix of the end marker: no record is this long.
const END: u32 = u32::MAX;

pub(crate) struct FrameWriter {
    path: PathBuf,
    out: BufWriter<File>,
    buf: Vec<u8>,
    records: u64,
}

impl FrameWriter {
    pub(crate) fn create(path: &Path) -> Result<Self, CheckpointError> {
        let file = File::create(path).map_err(|e| CheckpointError::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC)
            .map_err(|e| CheckpointError::io(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            out,
            buf: Vec::new(),
            records: 0,
        })
    }

    pub(crate) fn write<T: Serialize>(&mut self, record: &T) -> Result<(), CheckpointError> {
        self.buf.clear();
        let bytes = postcard::to_extend(record, std::mem::take(&mut self.buf))
            .map_err(|e| CheckpointError::Corrupt(format!("encoding a record: {e}")))?;
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&n| n != END)
            .ok_or_else(|| CheckpointError::Corrupt("a state record is over 4 GiB".into()))?;
        self.out
            .write_all(&len.to_le_bytes())
            .and_then(|()| self.out.write_all(&bytes))
            .map_err(|e| CheckpointError::io(&self.path, e))?;
        self.buf = bytes;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker and makes the file durable; returns the record count.
    pub(crate) fn finish(mut self) -> Result<u64, CheckpointError> {
        let path = self.path.clone();
        self.out
            .write_all(&END.to_le_bytes())
            .map_err(|e| CheckpointError::io(&path, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| CheckpointError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| CheckpointError::io(&path, e))?;
        Ok(self.records)
    }
}

/// Calls `each` for every record of a frame file, in order.
pub(crate) fn read_frames<T: DeserializeOwned>(
    path: &Path,
    mut each: impl FnMut(T) -> Result<(), CheckpointError>,
) -> Result<u64, CheckpointError> {
    let corrupt = |why: String| CheckpointError::Corrupt(format!("{}: {why}", path.display()));
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|_| corrupt("too short to be a snapshot file".into()))?;
    if &magic != MAGIC {
        return Err(corrupt("not a Weir snapshot file".into()));
    }
    let mut buf = Vec::new();
    let mut records = 0u64;
    loop {
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| corrupt(format!("cut short after {records} records")))?;
        let len = u32::from_le_bytes(len);
        if len == END {
            return Ok(records);
        }
        // Read what the file holds rather than allocate what a (damaged)
        // length says: a few bytes could otherwise ask for 4 GiB.
        buf.clear();
        let read = (&mut input)
            .take(u64::from(len))
            .read_to_end(&mut buf)
            .map_err(|e| CheckpointError::io(path, e))?;
        if read != len as usize {
            return Err(corrupt(format!("cut short in record {records}")));
        }
        let record = postcard::from_bytes(&buf)
            .map_err(|e| corrupt(format!("record {records} is damaged: {e}")))?;
        each(record)?;
        records += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's peak resident memory (Linux), in KiB.
    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_damaged_record_length_is_cut_short_without_allocating_it() {
        // Found by the checkpoint fuzz target (scripts/fuzz.sh): a state
        // file of 124 bytes whose record length read 4 294 967 291 made the
        // restore allocate (and zero) 4 GiB before finding the file short.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(u32::MAX - 4).to_le_bytes());
        bytes.extend_from_slice(b"a few bytes");
        std::fs::write(&path, bytes).unwrap();
        let before = peak_rss_kib();
        let err = read_frames(&path, |_: (u32, String)| Ok(())).unwrap_err();
        assert!(err.to_string().contains("cut short in record 0"), "{err}");
        let grown_mib = (peak_rss_kib() - before) / 1024;
        assert!(grown_mib < 512, "reading it took {grown_mib} MiB");
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let mut w = FrameWriter::create(&path).unwrap();
        for i in 0..100u32 {
            w.write(&(i, format!("k{i}"))).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 100);
        let mut seen = Vec::new();
        read_frames(&path, |r: (u32, String)| {
            seen.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 100);
        assert_eq!(seen[42], (42, "k42".to_string()));

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = read_frames(&path, |_: (u32, String)| Ok(())).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }
}
