//! Who may use the instance pool every pipeline of the process shares.
//!
//! The pooling allocator has a fixed number of instance slots (and of
//! memories, tables and core instances, sized so that every slot can hold
//! the largest instance the per-instance limits allow). Without an owner,
//! a few high-parallelism pipelines could take every slot, after which any
//! other pipeline fails to start, to swap or to replace a trapped instance.
//! So a pipeline reserves, when it starts, the most slots it can ever hold
//! at once, and a pipeline that cannot get them is refused then, naming the
//! numbers, while the running ones keep theirs.

use std::sync::{Arc, Mutex};

use super::EngineError;

/// Instance slots of the pool. With the per-instance limits of `limits`
/// this reserves at most `SLOTS * MAX_MEMORIES` linear memories of address
/// space (about 4 GiB each, never committed until used).
pub(crate) const SLOTS: u32 = 512;

/// The slots a pipeline of `parallelism` subtasks may hold at once: an
/// instance per subtask, as many again while a swap prepares the new ones
/// beside them, and the swap's trial instance.
pub fn slots_for(parallelism: u32) -> u32 {
    parallelism.saturating_mul(2).saturating_add(1)
}

/// The slots reserved by running pipelines.
#[derive(Debug)]
pub(crate) struct Ledger {
    total: u32,
    reserved: Mutex<u32>,
}

impl Ledger {
    pub(crate) fn new(total: u32) -> Arc<Self> {
        Arc::new(Self {
            total,
            reserved: Mutex::new(0),
        })
    }

    /// Reserves the slots of a pipeline of `parallelism`, or says why not.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        pipeline: &str,
        parallelism: u32,
    ) -> Result<Reservation, EngineError> {
        let needed = slots_for(parallelism);
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let free = self.total - *reserved;
        if needed > free {
            return Err(EngineError::PoolFull {
                pipeline: pipeline.to_owned(),
                parallelism,
                needed,
                free,
                total: self.total,
            });
        }
        *reserved += needed;
        Ok(Reservation {
            ledger: self.clone(),
            slots: needed,
        })
    }

    #[cfg(test)]
    fn reserved(&self) -> u32 {
        *self.reserved.lock().unwrap()
    }
}

/// Slots held by one pipeline until this is dropped (when its last subtask
/// is gone).
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    slots: u32,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = self
            .ledger
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *reserved -= self.slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_that_cannot_get_its_slots_is_refused_and_the_others_keep_theirs() {
        let ledger = Ledger::new(100);
        let first = ledger.reserve("first", 32).unwrap();
        let second = ledger.reserve("second", 16).unwrap();
        assert_eq!(ledger.reserved(), 65 + 33);

        let error = ledger.reserve("third", 1).unwrap_err().to_string();
        assert!(error.contains("\"third\""), "{error}");
        assert!(error.contains("needs 3"), "{error}");
        assert!(error.contains("2 of 100"), "{error}");
        assert_eq!(ledger.reserved(), 98, "a refusal reserves nothing");

        drop(first);
        assert_eq!(ledger.reserved(), 33);
        let third = ledger.reserve("third", 1).unwrap();
        drop((second, third));
        assert_eq!(ledger.reserved(), 0);
    }
}
