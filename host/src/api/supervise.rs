//! What a pipeline's run thread does on every tick, besides running it:
//! measure the event rate for the status, and delete ingest-log segments
//! every retained checkpoint has read past.

use std::time::Instant;

use crate::checkpoint::{self, CheckpointStore};
use crate::connectors::IngestLog;

/// Deletes ingest-log segments every retained checkpoint has read past,
/// once per newly completed checkpoint.
pub(crate) fn trim_ingest_log(
    log: &IngestLog,
    store: &CheckpointStore,
    trimmed_after: &mut Option<u64>,
) {
    let ids = store.ids();
    let (Some(&oldest), Some(&newest)) = (ids.first(), ids.last()) else {
        return;
    };
    if *trimmed_after == Some(newest) {
        return;
    }
    *trimmed_after = Some(newest);
    if let Ok(c) = checkpoint::load_checkpoint(&store.dir_of(oldest))
        && let Some(p) = c.manifest.source.position.first()
        && let Err(e) = log.truncate_before(p.offset)
    {
        tracing::warn!(dir = %log.dir().display(), "cannot trim the ingest log: {e}");
    }
}

#[derive(Default)]
pub(crate) struct RateMeter {
    last: Option<(Instant, u64)>,
}

impl RateMeter {
    /// The rate since the last sample, once a second has passed.
    pub(crate) fn sample(&mut self, count: u64) -> Option<f64> {
        let now = Instant::now();
        match self.last {
            None => {
                self.last = Some((now, count));
                None
            }
            Some((at, before)) if now.duration_since(at).as_secs_f64() >= 1.0 => {
                self.last = Some((now, count));
                Some(count.saturating_sub(before) as f64 / now.duration_since(at).as_secs_f64())
            }
            Some(_) => None,
        }
    }
}
