//! A fired timer and the two time domains timers live in.

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires once the watermark reaches the timer's timestamp.
    EventTime,
    /// Fires once the host's wall clock reaches the timer's timestamp.
    ProcessingTime,
}

/// A timer that fired for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub(crate) key: Vec<u8>,
    pub(crate) timestamp: i64,
    pub(crate) domain: TimeDomain,
}

impl Timer {
    /// A timer of `key` at `timestamp` (ms since the Unix epoch).
    pub fn new(key: impl Into<Vec<u8>>, timestamp: i64, domain: TimeDomain) -> Self {
        Timer {
            key: key.into(),
            timestamp,
            domain,
        }
    }

    /// The key that registered the timer.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The timestamp the timer was registered for.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The clock the timer follows.
    pub fn domain(&self) -> TimeDomain {
        self.domain
    }
}
