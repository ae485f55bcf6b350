//! The `http` source: events posted to the control plane, made durable in an
//! ingest log before the request is answered, then read by the pipeline like
//! a file it tails.
//!
//! The log is what makes HTTP ingest lose nothing: an accepted request is
//! fsynced (it survives a crash of the process, of the kernel, or a power
//! loss) before the client hears `200`, and the source's position is a byte
//! offset into the log, which checkpoints record and a restore seeks to.
//! Concurrent requests share fsyncs (group commit, `durable::GroupSync`):
//! each waits for the first fsync that starts after its write, so the cost
//! per request falls as the load rises. The pipeline reads only what is
//! durable, so no checkpoint ever records a position past a power loss.
//! The log is cut into segments so that what every retained checkpoint has
//! read can be deleted. Backpressure: when the pipeline has more than
//! `max_pending_bytes` unread, `append` waits, then refuses (the API answers
//! 429); it never drops.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{ConnectorError, Source, SourcePosition, SourceRecord, SplitPosition, split_offset};
use crate::durable::{self, GroupSync};

/// A new segment starts once the current one holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Names the log, so that a position recorded in another pipeline's log
/// (a savepoint taken elsewhere) is recognised as such.
const ID_FILE: &str = "LOG_ID";

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "the pipeline is behind: {pending} bytes of accepted events are waiting to be read (limit {limit})"
    )]
    Full { pending: u64, limit: u64 },
    #[error("writing the ingest log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The durable queue between the ingest route and the pipeline's source.
pub struct IngestLog {
    dir: PathBuf,
    /// The split name positions in this log carry: `http:<id>`.
    split: String,
    writer: Mutex<Writer>,
    /// Signalled when events are appended.
    appended: Condvar,
    /// The end of the durable appends: readers never read past it.
    end: AtomicU64,
    /// Fsyncs of the current segment, shared by concurrent appends.
    durable: GroupSync,
    /// How far the source has read.
    read: AtomicU64,
    max_pending_bytes: u64,
    segment_bytes: u64,
}

struct Writer {
    file: File,
    base: u64,
    len: u64,
}

impl std::fmt::Debug for IngestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestLog")
            .field("dir", &self.dir)
            .field("end", &self.end())
            .finish_non_exhaustive()
    }
}

impl IngestLog {
    /// Opens (or creates) the log in `dir`. A torn last line, from a crash
    /// in the middle of an append that was never acknowledged, is cut off.
    pub fn open(dir: &Path, max_pending_bytes: u64) -> Result<Arc<Self>, ConnectorError> {
        Self::open_with(dir, max_pending_bytes, SEGMENT_BYTES)
    }

    fn open_with(
        dir: &Path,
        max_pending_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Arc<Self>, ConnectorError> {
        let open_err = |path: &Path, source| ConnectorError::Open {
            path: path.to_owned(),
            source,
        };
        durable::create_dir_all(dir).map_err(|e| open_err(dir, e))?;
        let id_path = dir.join(ID_FILE);
        let id = match std::fs::read_to_string(&id_path) {
            Ok(id) => id.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let id = format!("{nanos:x}{:x}", std::process::id());
                durable::write_atomic(&id_path, id.as_bytes())
                    .map_err(|e| open_err(&id_path, e))?;
                id
            }
            Err(e) => return Err(open_err(&id_path, e)),
        };
        let bases = segment_bases(dir).map_err(|e| open_err(dir, e))?;
        let base = bases.last().copied().unwrap_or(0);
        let path = segment_path(dir, base);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| open_err(&path, e))?;
        let len = complete_length(&mut file).map_err(|e| open_err(&path, e))?;
        file.set_len(len).map_err(|e| open_err(&path, e))?;
        // What an earlier process wrote but never synced is made durable
        // before anyone reads it, and so is the segment's name.
        file.sync_data().map_err(|e| open_err(&path, e))?;
        durable::sync_dir(dir).map_err(|e| open_err(dir, e))?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            split: format!("http:{id}"),
            writer: Mutex::new(Writer { file, base, len }),
            appended: Condvar::new(),
            end: AtomicU64::new(base + len),
            durable: GroupSync::new(base + len),
            read: AtomicU64::new(bases.first().copied().unwrap_or(0)),
            max_pending_bytes,
            segment_bytes,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset of the oldest event the log still holds.
    pub fn start(&self) -> u64 {
        segment_bases(&self.dir)
            .ok()
            .and_then(|bases| bases.first().copied())
            .unwrap_or(0)
    }

    /// The offset after the last accepted (durable) event.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Accepted but not yet read by the pipeline.
    pub fn pending_bytes(&self) -> u64 {
        self.end().saturating_sub(self.read.load(Ordering::Relaxed))
    }

    /// How many fsyncs the log has made (group commit shares them).
    pub fn syncs(&self) -> u64 {
        self.durable.syncs()
    }

    /// Appends `lines` (complete JSON lines, each ending in `\n`) as one
    /// write, and returns once they are fsynced. Waits up to `patience`
    /// while the pipeline is too far behind.
    pub fn append(&self, lines: &[u8], patience: Duration) -> Result<u64, IngestError> {
        debug_assert!(lines.is_empty() || lines.ends_with(b"\n"));
        let deadline = Instant::now() + patience;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let pending = self.pending_bytes();
            if pending < self.max_pending_bytes {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(IngestError::Full {
                    pending,
                    limit: self.max_pending_bytes,
                });
            }
            // The reader does not signal (it must not take this lock per
            // batch); poll in short slices instead.
            drop(writer);
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
            writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        }
        if writer.len >= self.segment_bytes {
            // The full segment is made durable before the next one starts,
            // so a group fsync only ever has the current segment to sync.
            let full = segment_path(&self.dir, writer.base);
            writer
                .file
                .sync_data()
                .map_err(|source| IngestError::Io { path: full, source })?;
            let base = writer.base + writer.len;
            let path = segment_path(&self.dir, base);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|file| durable::sync_dir(&self.dir).map(|()| file))
                .map_err(|source| IngestError::Io { path, source })?;
            *writer = Writer { file, base, len: 0 };
        }
        if let Err(source) = writer.file.write_all(lines) {
            // Cut off whatever part made it, so the log stays line-aligned.
            let _ = writer.file.set_len(writer.len);
            return Err(IngestError::Io {
                path: segment_path(&self.dir, writer.base),
                source,
            });
        }
        writer.len += lines.len() as u64;
        let end = writer.base + writer.len;
        let segment = writer.base;
        drop(writer);
        self.durable
            .wait(end, || self.sync_written())
            .map_err(|source| IngestError::Io {
                path: segment_path(&self.dir, segment),
                source,
            })?;
        // Publish what is durable (under the writer lock, which readers
        // waiting in `wait_past` hold while they check).
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.end.fetch_max(self.durable.synced(), Ordering::AcqRel);
        drop(writer);
        self.appended.notify_all();
        Ok(end)
    }

    /// Fsyncs the current segment; returns the log offset that covers.
    /// Earlier segments were synced when they filled.
    fn sync_written(&self) -> std::io::Result<u64> {
        let (file, covered) = {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            (writer.file.try_clone()?, writer.base + writer.len)
        };
        file.sync_data()?;
        Ok(covered)
    }

    /// Deletes the segments that lie wholly before `offset` (what every
    /// retained checkpoint has read).
    pub fn truncate_before(&self, offset: u64) -> std::io::Result<usize> {
        let bases = segment_bases(&self.dir)?;
        let mut removed = 0;
        for pair in bases.windows(2) {
            if pair[1] <= offset {
                std::fs::remove_file(segment_path(&self.dir, pair[0]))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Blocks up to `max` until the log extends past `offset`.
    fn wait_past(&self, offset: u64, max: Duration) {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.end() > offset {
            return;
        }
        let _ = self.appended.wait_timeout(writer, max);
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.jsonl"))
}

/// The base offsets of the segments in `dir`, ascending.
fn segment_bases(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name
            .strip_suffix(".jsonl")
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The length of `file` up to and including its last newline.
fn complete_length(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut at = len;
    let mut buf = [0u8; 4096];
    while at > 0 {
        let chunk = at.min(buf.len() as u64);
        file.seek(SeekFrom::Start(at - chunk))?;
        let part = &mut buf[..chunk as usize];
        std::io::Read::read_exact(file, part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(at - chunk + i as u64 + 1);
        }
        at -= chunk;
    }
    Ok(0)
}

/// Reads the ingest log from a position, forever.
pub struct HttpSource {
    log: Arc<IngestLog>,
    position: u64,
    /// The segment being read: its base, and a reader at `position`.
    reader: Option<(u64, BufReader<File>)>,
    line: Vec<u8>,
}

impl HttpSource {
    /// A source at the start of what the log still holds (a restore then
    /// seeks to its checkpoint's position).
    pub fn new(log: Arc<IngestLog>) -> Self {
        let position = log.start();
        log.read.store(position, Ordering::Relaxed);
        Self {
            log,
            position,
            reader: None,
            line: Vec::new(),
        }
    }

    /// A reader at `self.position`, in the segment that holds it (at the end
    /// of a segment, that is the next one, which starts there).
    fn reader(&mut self) -> Result<&mut BufReader<File>, ConnectorError> {
        if self.reader.is_none() {
            let dir = &self.log.dir;
            let read_err = |source| ConnectorError::Read {
                path: dir.clone(),
                source,
            };
            let base = segment_bases(dir)
                .map_err(read_err)?
                .into_iter()
                .rev()
                .find(|&b| b <= self.position)
                .ok_or_else(|| {
                    ConnectorError::Seek(format!(
                        "offset {} of the ingest log in {} was deleted",
                        self.position,
                        dir.display()
                    ))
                })?;
            let path = segment_path(dir, base);
            let mut file = File::open(&path).map_err(|source| ConnectorError::Open {
                path: path.clone(),
                source,
            })?;
            file.seek(SeekFrom::Start(self.position - base))
                .map_err(|source| ConnectorError::Read { path, source })?;
            self.reader = Some((base, BufReader::with_capacity(256 << 10, file)));
        }
        Ok(&mut self.reader.as_mut().expect("just opened").1)
    }
}

impl Source for HttpSource {
    fn read_batch(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<bool, ConnectorError> {
        let end = self.log.end();
        let mut taken = 0;
        while taken < max && self.position < end {
            let mut line = std::mem::take(&mut self.line);
            line.clear();
            let read = self
                .reader()?
                .read_until(b'\n', &mut line)
                .map_err(|source| ConnectorError::Read {
                    path: self.log.dir.clone(),
                    source,
                })?;
            if read == 0 {
                // The end of a segment, and the log goes on: the rest is in
                // the next segment, which starts here.
                self.line = line;
                if self
                    .reader
                    .take()
                    .is_some_and(|(base, _)| base == self.position)
                {
                    return Err(ConnectorError::Seek(format!(
                        "the ingest log in {} ends at {} but claims {end}",
                        self.log.dir.display(),
                        self.position
                    )));
                }
                continue;
            }
            let at = self.position;
            self.position += read as u64;
            if line.last() == Some(&b'\n') {
                line.pop();
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
        self.log.read.store(self.position, Ordering::Relaxed);
        Ok(true)
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.position, Some(self.log.end()))
    }

    fn progress_unit(&self) -> &'static str {
        "bytes"
    }

    fn position(&self) -> SourcePosition {
        vec![SplitPosition {
            split: self.log.split.clone(),
            offset: self.position,
        }]
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        // A snapshot of another pipeline (a savepoint started elsewhere)
        // read another log: this one is read from its beginning.
        if let [p] = position.as_slice()
            && p.split.starts_with("http:")
            && p.split != self.log.split
        {
            tracing::info!(
                "the snapshot read another ingest log ({}); reading this one from its start",
                p.split
            );
            self.position = self.log.start();
            self.reader = None;
            self.log.read.store(self.position, Ordering::Relaxed);
            return Ok(());
        }
        let offset = split_offset(position, &self.log.split, "http")?;
        if offset > self.log.end() {
            return Err(ConnectorError::Seek(format!(
                "the checkpoint read the ingest log up to {offset}, but it ends at {}",
                self.log.end()
            )));
        }
        self.position = offset;
        self.reader = None;
        self.log.read.store(offset, Ordering::Relaxed);
        Ok(())
    }

    fn wait_for_input(&mut self, max: Duration) {
        self.log.wait_past(self.position, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(source: &mut HttpSource, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        source.read_batch(&mut out, max).unwrap();
        out.into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect()
    }

    #[test]
    fn appended_lines_are_read_in_order_and_a_restart_resumes_at_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(dir.path(), 1 << 20).unwrap();
        log.append(b"{\"a\":1}\n{\"a\":2}\n", Duration::ZERO)
            .unwrap();
        let mut source = HttpSource::new(log.clone());
        assert_eq!(values(&mut source, 1), ["{\"a\":1}"]);
        let position = source.position();
        assert_eq!(values(&mut source, 10), ["{\"a\":2}"]);
        assert!(values(&mut source, 10).is_empty());
        drop((source, log));

        // A crash left half a line that was never acknowledged.
        let segment = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
        f.write_all(b"{\"torn\":").unwrap();
        let log = IngestLog::open(dir.path(), 1 << 20).unwrap();
        log.append(b"{\"a\":3}\n", Duration::ZERO).unwrap();
        let mut source = HttpSource::new(log);
        source.seek(&position).unwrap();
        assert_eq!(values(&mut source, 10), ["{\"a\":2}", "{\"a\":3}"]);
    }

    #[test]
    fn an_append_returns_only_once_fsynced_and_concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(dir.path(), u64::MAX).unwrap();
        assert_eq!(log.syncs(), 0);
        let end = log.append(b"{\"a\":1}\n", Duration::ZERO).unwrap();
        assert_eq!(log.syncs(), 1, "the acknowledged append was fsynced");
        assert_eq!(log.durable.synced(), end);
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let end = log.append(b"{\"b\":2}\n", Duration::ZERO).unwrap();
                        assert!(log.durable.synced() >= end, "acknowledged before durable");
                        assert!(log.end() >= end, "readers see what was acknowledged");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert!(log.syncs() <= 201, "{} fsyncs", log.syncs());
        let mut source = HttpSource::new(log.clone());
        assert_eq!(values(&mut source, 1000).len(), 201);
    }

    /// Ingest throughput: 4 clients, each appending bodies of 1000 events,
    /// with the log's group commit, against the same appends with no fsync
    /// (what the log did before) and with one fsync per append. Run with
    /// `cargo test --release -p weir --lib ingest_throughput -- --ignored --nocapture`
    /// (figures in BENCHMARKS.md).
    /// One way of taking a request's bytes, shared by the client threads.
    type Append = Arc<dyn Fn(&[u8]) + Send + Sync>;

    #[test]
    #[ignore = "a benchmark: prints figures"]
    fn ingest_throughput() {
        const CLIENTS: usize = 4;
        const REQUESTS: usize = 250;
        let mut body = Vec::new();
        for i in 0..1000 {
            writeln!(
                body,
                "{{\"user\":\"u{}\",\"amount\":{i},\"ts\":1700000000000}}",
                i % 97
            )
            .unwrap();
        }
        let body = Arc::new(body);
        let run = |name: &str, append: Append| {
            let started = Instant::now();
            let clients: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let append = append.clone();
                    let body = body.clone();
                    std::thread::spawn(move || {
                        for _ in 0..REQUESTS {
                            append(&body);
                        }
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            let requests = (CLIENTS * REQUESTS) as f64;
            println!(
                "{name:<28} {:>9.0} requests/s {:>11.0} events/s",
                requests / secs,
                requests * 1000.0 / secs
            );
        };
        // The temporary directory must be on a disk (not tmpfs) to measure.
        let dir = tempfile::tempdir().unwrap();
        let plain = |sync: bool| -> Append {
            let path = dir.path().join(format!("plain-{sync}.jsonl"));
            let file = Mutex::new(File::create(path).unwrap());
            Arc::new(move |bytes: &[u8]| {
                let mut file = file.lock().unwrap();
                file.write_all(bytes).unwrap();
                if sync {
                    file.sync_data().unwrap();
                }
            })
        };
        run("no fsync (before)", plain(false));
        run("fsync per request", plain(true));
        let log = IngestLog::open(&dir.path().join("log"), u64::MAX).unwrap();
        let appender = log.clone();
        run(
            "group commit (now)",
            Arc::new(move |bytes: &[u8]| {
                appender.append(bytes, Duration::ZERO).unwrap();
            }),
        );
        println!(
            "group commit: {} fsyncs for {} requests",
            log.syncs(),
            CLIENTS * REQUESTS
        );
    }

    #[test]
    fn a_full_log_refuses_after_waiting_and_takes_again_once_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(dir.path(), 10).unwrap();
        log.append(b"{\"n\":123456}\n", Duration::ZERO).unwrap();
        let err = log
            .append(b"{\"n\":7}\n", Duration::from_millis(20))
            .unwrap_err();
        assert!(
            matches!(
                err,
                IngestError::Full {
                    pending: 13,
                    limit: 10
                }
            ),
            "{err}"
        );
        let mut source = HttpSource::new(log.clone());
        assert_eq!(values(&mut source, 10).len(), 1);
        log.append(b"{\"n\":7}\n", Duration::ZERO).unwrap();
        assert_eq!(values(&mut source, 10), ["{\"n\":7}"]);
    }

    #[test]
    fn reading_crosses_segments_and_old_segments_can_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open_with(dir.path(), u64::MAX, 100).unwrap();
        // Three segments: each big line fills one.
        let big = format!("\"{}\"\n", "x".repeat(100));
        log.append(big.as_bytes(), Duration::ZERO).unwrap();
        log.append(b"1\n", Duration::ZERO).unwrap();
        log.append(big.as_bytes(), Duration::ZERO).unwrap();
        log.append(b"2\n", Duration::ZERO).unwrap();
        assert_eq!(segment_bases(dir.path()).unwrap().len(), 3);
        let mut source = HttpSource::new(log.clone());
        let got = values(&mut source, 10);
        assert_eq!(got.len(), 4);
        assert_eq!(&got[1], "1");
        assert_eq!(&got[3], "2");
        let at = source.position()[0].offset;
        assert_eq!(log.truncate_before(at).unwrap(), 2);
        let mut again = HttpSource::new(log.clone());
        again
            .seek(&vec![SplitPosition {
                split: log.split.clone(),
                offset: big.len() as u64 * 2 + 2,
            }])
            .unwrap();
        assert_eq!(values(&mut again, 10), ["2"]);
        // A position in another log: this one is read from its start (its
        // oldest segment), whatever was read before.
        let mut elsewhere = HttpSource::new(log.clone());
        values(&mut elsewhere, 10);
        elsewhere
            .seek(&vec![SplitPosition {
                split: "http:another".into(),
                offset: 1 << 40,
            }])
            .unwrap();
        assert_eq!(values(&mut elsewhere, 10), ["2"]);
    }
}
