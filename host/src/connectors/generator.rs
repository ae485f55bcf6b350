//! The fixed test generator: a deterministic stream of card transactions
//! whose expected results are known, so every workload can be checked.

use std::time::{Duration, Instant};

use super::{ConnectorError, Source, SourcePosition, SourceRecord, SplitPosition, split_offset};

/// The base of the generator's event times, in ms since the Unix epoch.
pub const BASE_TS: i64 = 1_700_000_000_000;

/// The number of users of the fixed generator.
pub const DEFAULT_USERS: u64 = 100_000;

/// Event `i`: `(user_id, amount_cents, ts)`, by splitmix64 of `i + 1`.
pub fn generator_record(i: u64) -> (u64, u64, i64) {
    generator_record_among(i, DEFAULT_USERS)
}

/// Event `i` with `users` users instead of 100 000 (for large-state tests).
pub fn generator_record_among(i: u64, users: u64) -> (u64, u64, i64) {
    let mut z = (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (
        (z >> 32) % users.max(1),
        (z & 0xFFFF_FFFF) % 100_000,
        BASE_TS + i as i64,
    )
}

/// Writes event `i` as the JSON value `{"user_id":…,"amount_cents":…,"ts":…}`.
pub fn write_generator_value(i: u64, out: &mut Vec<u8>) {
    write_generator_value_among(i, DEFAULT_USERS, out);
}

/// `write_generator_value` with `users` users.
pub fn write_generator_value_among(i: u64, users: u64, out: &mut Vec<u8>) {
    let (user, amount, ts) = generator_record_among(i, users);
    let mut ints = itoa::Buffer::new();
    out.extend_from_slice(b"{\"user_id\":");
    out.extend_from_slice(ints.format(user).as_bytes());
    out.extend_from_slice(b",\"amount_cents\":");
    out.extend_from_slice(ints.format(amount).as_bytes());
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(ints.format(ts).as_bytes());
    out.push(b'}');
}

pub struct GeneratorSource {
    next: u64,
    end: u64,
    users: u64,
    limit: Option<RateLimit>,
}

/// At most `per_second` events per second, counted from the first read.
struct RateLimit {
    per_second: u64,
    started: Option<Instant>,
    made: u64,
}

impl RateLimit {
    /// Waits until `n` more events are within the limit.
    fn admit(&mut self, n: u64) {
        let started = *self.started.get_or_insert_with(Instant::now);
        self.made += n;
        let due = Duration::from_secs_f64(self.made as f64 / self.per_second as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

impl GeneratorSource {
    pub fn new(events: u64) -> Self {
        Self::with_users(events, DEFAULT_USERS)
    }

    pub fn with_users(events: u64, users: u64) -> Self {
        Self {
            next: 0,
            end: events,
            users,
            limit: None,
        }
    }

    /// Makes at most `per_second` events per second (a test or a demo that
    /// needs a run to last).
    pub fn limited_to(mut self, per_second: u64) -> Self {
        self.limit = Some(RateLimit {
            per_second: per_second.max(1),
            started: None,
            made: 0,
        });
        self
    }
}

impl Source for GeneratorSource {
    fn read_batch(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<bool, ConnectorError> {
        let stop = self.end.min(self.next + max as u64);
        if let Some(limit) = &mut self.limit {
            limit.admit(stop - self.next);
        }
        for i in self.next..stop {
            let mut value = Vec::with_capacity(64);
            write_generator_value_among(i, self.users, &mut value);
            out.push(SourceRecord {
                key: None,
                value,
                timestamp: None,
                headers: Vec::new(),
                split: 0,
                offset: i,
            });
        }
        self.next = stop;
        Ok(self.next < self.end)
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.next, Some(self.end))
    }

    fn position(&self) -> SourcePosition {
        vec![SplitPosition {
            split: "generator".into(),
            offset: self.next,
        }]
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        let offset = split_offset(position, "generator", "generator")?;
        if offset > self.end {
            return Err(ConnectorError::Seek(format!(
                "the checkpoint is at event {offset} but the generator makes only {}",
                self.end
            )));
        }
        self.next = offset;
        Ok(())
    }

    fn progress_unit(&self) -> &'static str {
        "events"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_events_match_the_published_vectors() {
        assert_eq!(generator_record(0), (91033, 50767, BASE_TS));
        assert_eq!(generator_record(1), (98634, 82036, BASE_TS + 1));
        assert_eq!(generator_record(2), (32184, 91215, BASE_TS + 2));
    }

    #[test]
    fn a_rate_limit_spreads_the_events_over_time() {
        let mut source = GeneratorSource::new(3_000).limited_to(10_000);
        let mut out = Vec::new();
        let began = Instant::now();
        while source.read_batch(&mut out, 1_000).unwrap() {}
        // 3 000 events at 10 000 per second take at least 0.3 s (a bound
        // below, which a slow machine cannot break).
        assert!(began.elapsed() >= Duration::from_millis(300));
        assert_eq!(out.len(), 3_000);
    }

    #[test]
    fn values_are_json_with_the_three_fields() {
        let mut source = GeneratorSource::new(3);
        let mut out = Vec::new();
        assert!(!source.read_batch(&mut out, 10).unwrap());
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0].value,
            br#"{"user_id":91033,"amount_cents":50767,"ts":1700000000000}"#
        );
        assert_eq!(source.progress(), (3, Some(3)));
    }

    #[test]
    fn batches_resume_where_the_last_one_stopped() {
        let mut source = GeneratorSource::new(5);
        let mut out = Vec::new();
        assert!(source.read_batch(&mut out, 2).unwrap());
        assert!(source.read_batch(&mut out, 2).unwrap());
        assert!(!source.read_batch(&mut out, 2).unwrap());
        assert_eq!(out.len(), 5);
        assert!(out[4].value.ends_with(b"\"ts\":1700000000004}"));
    }
}
