//! Event-time watermarks of one source: bounded out-of-orderness per split,
//! the minimum over active splits, with an idle timeout (Flink's semantics).
//!
//! Per split, `watermark = max_timestamp_seen - max_out_of_orderness_ms - 1`
//! (`i64::MIN` before its first event). The pipeline watermark is the minimum
//! over splits that are neither idle nor finished, and it never goes
//! backwards. An event with `ts <= watermark` is late.
//!
//! It owns: per-split maxima, idleness, and the combined watermark.
//!
//! It must never: read a clock (processing time arrives as `now_ms`, so tests
//! and replays are deterministic), move the watermark backwards, or do more
//! than O(1) work per event except when the split holding the minimum moves.

#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "snapshot, restore and rescaling serve checkpoints, which use them next"
    )
)]

/// What one split has seen.
#[derive(Debug, Clone)]
struct Split {
    /// Highest event timestamp seen; `i64::MIN` before the first event.
    max_ts: i64,
    /// Processing time of the last event, or of the first idleness check if
    /// no event came yet (the idle clock of a silent split starts there).
    last_activity_ms: Option<i64>,
    idle: bool,
    /// A bounded split that has ended no longer holds the watermark back.
    finished: bool,
}

impl Split {
    fn new() -> Split {
        Split {
            max_ts: i64::MIN,
            last_activity_ms: None,
            idle: false,
            finished: false,
        }
    }

    fn watermark(&self, max_out_of_orderness: i64) -> i64 {
        // Saturating: `i64::MIN` (no event yet) stays `i64::MIN`.
        self.max_ts
            .saturating_sub(max_out_of_orderness)
            .saturating_sub(1)
    }
}

/// Enough to rebuild a tracker after a restore: the combined watermark and
/// each split's highest timestamp (`i64::MIN` if it saw none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct WatermarkSnapshot {
    pub(crate) watermark: i64,
    pub(crate) split_max_timestamps: Vec<i64>,
}

impl WatermarkSnapshot {
    /// This snapshot of a source whose splits were `recorded` (by index),
    /// for the same source whose splits are now `names`: each split keeps
    /// its own maximum, matched by name (a Kafka topic that gained a
    /// partition shifts the indices of the partitions after it), and a
    /// split the snapshot does not know starts empty. Without names to
    /// match, splits are matched by index.
    pub(crate) fn for_splits(&self, recorded: &[String], names: &[String]) -> WatermarkSnapshot {
        if recorded.len() != self.split_max_timestamps.len() {
            return self.clone();
        }
        let split_max_timestamps = names
            .iter()
            .map(|name| {
                recorded
                    .iter()
                    .position(|r| r == name)
                    .map_or(i64::MIN, |i| self.split_max_timestamps[i])
            })
            .collect();
        WatermarkSnapshot {
            watermark: self.watermark,
            split_max_timestamps,
        }
    }
}

/// The watermark of one source over its splits.
///
/// Cost: `observe` is O(1) unless the event raises the split that holds the
/// minimum (or wakes an idle split); only then is the minimum recomputed over
/// all splits, O(splits). `check_idle` is O(splits), meant to be called on a
/// timer (e.g. every 100 ms of processing time), not per event.
#[derive(Debug, Clone)]
pub(crate) struct WatermarkTracker {
    splits: Vec<Split>,
    max_out_of_orderness: i64,
    idle_timeout_ms: Option<i64>,
    current: i64,
    /// An active split whose watermark is the minimum; `None` when no split
    /// is active. Only its progress can raise the minimum.
    min_holder: Option<usize>,
}

impl WatermarkTracker {
    /// A tracker over `splits` splits. `idle_timeout_ms: None` means splits
    /// never go idle.
    pub(crate) fn new(
        splits: usize,
        max_out_of_orderness_ms: u64,
        idle_timeout_ms: Option<u64>,
    ) -> WatermarkTracker {
        let mut tracker = WatermarkTracker {
            splits: vec![Split::new(); splits],
            max_out_of_orderness: i64::try_from(max_out_of_orderness_ms).unwrap_or(i64::MAX),
            idle_timeout_ms: idle_timeout_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            current: i64::MIN,
            min_holder: None,
        };
        tracker.recompute();
        tracker
    }

    /// The pipeline watermark: `i64::MIN` before any event, `i64::MAX` after
    /// `end_of_input` or once every split has finished.
    pub(crate) fn current(&self) -> i64 {
        self.current
    }

    /// Whether an event at `ts` is late against the current watermark.
    pub(crate) fn is_late(&self, ts: i64) -> bool {
        ts <= self.current
    }

    /// Records an event of `split` at event time `ts`, received at processing
    /// time `now_ms`, and returns whether it is late (judged against the
    /// watermark before this event). A late event still counts as activity
    /// and still raises its split's maximum if it is higher. Panics if
    /// `split` is out of range.
    pub(crate) fn observe(&mut self, split: usize, ts: i64, now_ms: i64) -> bool {
        let late = ts <= self.current;
        let s = &mut self.splits[split];
        s.last_activity_ms = Some(now_ms);
        if s.finished {
            return late;
        }
        let woke = std::mem::replace(&mut s.idle, false);
        let raised = ts > s.max_ts;
        if raised {
            s.max_ts = ts;
        }
        // Any other split rising cannot change the minimum.
        if woke || (raised && self.min_holder == Some(split)) {
            self.recompute();
        }
        late
    }

    /// Marks splits idle that have seen no event for `idle_timeout_ms` of
    /// processing time (`now_ms - last_event >= timeout`). A split that never
    /// had an event starts its idle clock at its first check. No-op without
    /// an idle timeout.
    pub(crate) fn check_idle(&mut self, now_ms: i64) {
        let Some(timeout) = self.idle_timeout_ms else {
            return;
        };
        let mut changed = false;
        for s in self.splits.iter_mut().filter(|s| !s.idle && !s.finished) {
            match s.last_activity_ms {
                None => s.last_activity_ms = Some(now_ms),
                Some(last) if now_ms.saturating_sub(last) >= timeout => {
                    s.idle = true;
                    changed = true;
                }
                Some(_) => {}
            }
        }
        if changed {
            self.recompute();
        }
    }

    /// The bounded source has ended: the watermark jumps to `i64::MAX`, which
    /// fires every pending event-time timer, and stays there.
    pub(crate) fn end_of_input(&mut self) {
        self.current = i64::MAX;
    }

    /// One bounded split has ended; it no longer holds the watermark back.
    /// When every split has finished the watermark becomes `i64::MAX`.
    pub(crate) fn finish_split(&mut self, split: usize) {
        self.splits[split].finished = true;
        self.recompute();
    }

    /// Adds a split (e.g. a new Kafka partition) and returns its index. It
    /// holds the watermark where it is until its first event or until it goes
    /// idle; the watermark itself does not go back.
    pub(crate) fn add_split(&mut self) -> usize {
        self.splits.push(Split::new());
        self.recompute();
        self.splits.len() - 1
    }

    pub(crate) fn split_count(&self) -> usize {
        self.splits.len()
    }

    /// The watermark of one split on its own.
    pub(crate) fn split_watermark(&self, split: usize) -> i64 {
        self.splits[split].watermark(self.max_out_of_orderness)
    }

    pub(crate) fn is_idle(&self, split: usize) -> bool {
        self.splits[split].idle
    }

    pub(crate) fn snapshot(&self) -> WatermarkSnapshot {
        WatermarkSnapshot {
            watermark: self.current,
            split_max_timestamps: self.splits.iter().map(|s| s.max_ts).collect(),
        }
    }

    /// Restores a snapshot into a fresh tracker. Splits are matched by index;
    /// splits the snapshot does not know start empty. All splits restart
    /// active with their idle clocks reset (processing time does not survive
    /// a restart), and the watermark restarts at the snapshot's.
    pub(crate) fn restore(&mut self, snapshot: &WatermarkSnapshot) {
        for (i, s) in self.splits.iter_mut().enumerate() {
            *s = Split::new();
            if let Some(&max_ts) = snapshot.split_max_timestamps.get(i) {
                s.max_ts = max_ts;
            }
        }
        self.current = snapshot.watermark;
        self.recompute();
    }

    /// Finds the minimum over active splits and raises the watermark to it.
    fn recompute(&mut self) {
        let mut holder = None;
        let mut min = i64::MAX;
        let mut any_unfinished = false;
        for (i, s) in self.splits.iter().enumerate() {
            if s.finished {
                continue;
            }
            any_unfinished = true;
            if s.idle {
                continue;
            }
            let wm = s.watermark(self.max_out_of_orderness);
            if holder.is_none() || wm < min {
                holder = Some(i);
                min = wm;
            }
        }
        self.min_holder = holder;
        if !any_unfinished && !self.splits.is_empty() {
            self.current = i64::MAX;
        } else if holder.is_some() {
            // Monotonic: a split that wakes up behind the watermark does not pull it back.
            self.current = self.current.max(min);
        }
        // No active split: everything is idle and the watermark stays put.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_split_keeps_its_own_maximum_when_splits_were_added() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let snapshot = WatermarkSnapshot {
            watermark: 90,
            split_max_timestamps: vec![100, 200],
        };
        // Topic a gained a partition: b/0 moved from index 1 to 2.
        let remapped = snapshot.for_splits(&names(&["a/0", "b/0"]), &names(&["a/0", "a/1", "b/0"]));
        assert_eq!(remapped.split_max_timestamps, [100, i64::MIN, 200]);
        assert_eq!(remapped.watermark, 90);
        // A snapshot without names for its splits is matched by index.
        assert_eq!(snapshot.for_splits(&[], &names(&["x", "y"])), snapshot);
    }

    #[test]
    fn can_move_to_another_thread() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<WatermarkTracker>();
    }

    #[test]
    fn starts_at_i64_min_before_any_event() {
        let t = WatermarkTracker::new(3, 100, Some(1_000));
        assert_eq!(t.current(), i64::MIN);
        assert_eq!(t.split_watermark(0), i64::MIN);
    }

    #[test]
    fn single_split_watermark_is_max_seen_minus_out_of_orderness_minus_one() {
        let mut t = WatermarkTracker::new(1, 100, None);
        t.observe(0, 1_000, 0);
        assert_eq!(t.current(), 899);
        let mut t = WatermarkTracker::new(1, 0, None);
        t.observe(0, 1_000, 0);
        assert_eq!(t.current(), 999);
    }

    #[test]
    fn out_of_order_events_do_not_lower_the_watermark() {
        let mut t = WatermarkTracker::new(1, 10, None);
        t.observe(0, 1_000, 0);
        t.observe(0, 995, 0);
        assert_eq!(t.current(), 989);
        t.observe(0, 1_005, 0);
        assert_eq!(t.current(), 994);
    }

    #[test]
    fn an_event_at_or_below_the_watermark_is_late() {
        let mut t = WatermarkTracker::new(1, 10, None);
        assert!(!t.observe(0, 1_000, 0));
        // Watermark is now 989.
        assert!(!t.observe(0, 990, 0), "just above the watermark is on time");
        assert!(t.observe(0, 989, 0), "at the watermark is late");
        assert!(t.observe(0, 500, 0));
        assert!(t.is_late(989));
        assert!(!t.is_late(990));
    }

    #[test]
    fn lateness_is_judged_before_the_event_raises_the_watermark() {
        let mut t = WatermarkTracker::new(1, 0, None);
        assert!(!t.observe(0, 5_000, 0));
        assert_eq!(t.current(), 4_999);
    }

    #[test]
    fn combined_watermark_is_the_minimum_over_splits() {
        let mut t = WatermarkTracker::new(3, 0, None);
        t.observe(0, 100, 0);
        t.observe(1, 300, 0);
        assert_eq!(t.current(), i64::MIN, "split 2 has seen nothing yet");
        t.observe(2, 200, 0);
        assert_eq!(t.current(), 99);
        t.observe(0, 400, 0);
        assert_eq!(t.current(), 199);
        t.observe(2, 500, 0);
        assert_eq!(t.current(), 299);
        t.observe(1, 600, 0);
        assert_eq!(t.current(), 399);
    }

    #[test]
    fn raising_a_split_tied_at_the_minimum_keeps_the_other_one_holding_it() {
        let mut t = WatermarkTracker::new(2, 0, None);
        t.observe(0, 100, 0);
        t.observe(1, 100, 0);
        t.observe(0, 200, 0);
        assert_eq!(t.current(), 99);
        t.observe(1, 150, 0);
        assert_eq!(t.current(), 149);
    }

    #[test]
    fn idle_split_is_excluded_from_the_minimum() {
        let mut t = WatermarkTracker::new(2, 0, Some(1_000));
        t.observe(0, 100, 0);
        t.observe(1, 50, 0);
        assert_eq!(t.current(), 49);
        t.observe(0, 300, 900);
        t.check_idle(999);
        assert_eq!(t.current(), 49, "split 1 not idle before the timeout");
        t.check_idle(1_000);
        assert!(t.is_idle(1));
        assert!(!t.is_idle(0));
        assert_eq!(t.current(), 299);
        t.observe(0, 400, 1_001);
        assert_eq!(t.current(), 399, "the active split alone moves it now");
    }

    #[test]
    fn a_split_that_never_sees_an_event_goes_idle_a_timeout_after_the_first_check() {
        let mut t = WatermarkTracker::new(2, 0, Some(1_000));
        t.check_idle(5_000);
        t.observe(0, 100, 5_100);
        assert_eq!(t.current(), i64::MIN);
        t.check_idle(5_999);
        assert_eq!(t.current(), i64::MIN);
        t.check_idle(6_000);
        assert!(t.is_idle(1));
        assert_eq!(t.current(), 99);
    }

    #[test]
    fn idle_split_becomes_active_on_its_next_event() {
        let mut t = WatermarkTracker::new(2, 0, Some(1_000));
        t.observe(0, 100, 0);
        t.observe(1, 100, 0);
        t.observe(0, 500, 2_000);
        t.check_idle(2_000);
        assert!(t.is_idle(1));
        assert_eq!(t.current(), 499);
        t.observe(1, 700, 2_100);
        assert!(!t.is_idle(1));
        t.observe(0, 900, 2_200);
        assert_eq!(t.current(), 699, "split 1 holds the minimum again");
    }

    #[test]
    fn reactivated_split_behind_the_watermark_does_not_move_it_backwards() {
        let mut t = WatermarkTracker::new(2, 0, Some(1_000));
        t.observe(0, 100, 0);
        t.observe(1, 100, 0);
        t.observe(0, 5_000, 2_000);
        t.check_idle(2_000);
        assert_eq!(t.current(), 4_999);
        assert!(t.observe(1, 200, 2_100), "the waking event is late");
        assert_eq!(t.current(), 4_999);
        t.observe(0, 9_000, 2_200);
        assert_eq!(t.current(), 4_999, "split 1 holds it until it catches up");
        t.observe(1, 6_000, 2_300);
        assert_eq!(t.current(), 5_999);
    }

    #[test]
    fn all_splits_idle_keeps_the_watermark_where_it_was() {
        let mut t = WatermarkTracker::new(2, 0, Some(1_000));
        t.observe(0, 100, 0);
        t.observe(1, 200, 0);
        assert_eq!(t.current(), 99);
        t.check_idle(1_000);
        assert!(t.is_idle(0) && t.is_idle(1));
        assert_eq!(t.current(), 99);
        t.check_idle(10_000);
        assert_eq!(t.current(), 99);
        t.observe(1, 300, 10_001);
        assert_eq!(
            t.current(),
            299,
            "one split back: it alone defines the minimum"
        );
    }

    #[test]
    fn splits_never_go_idle_without_a_timeout() {
        let mut t = WatermarkTracker::new(2, 0, None);
        t.observe(0, 100, 0);
        t.check_idle(i64::MAX);
        assert!(!t.is_idle(1));
        assert_eq!(t.current(), i64::MIN);
    }

    #[test]
    fn end_of_input_sets_the_watermark_to_max() {
        let mut t = WatermarkTracker::new(2, 0, None);
        t.observe(0, 100, 0);
        t.end_of_input();
        assert_eq!(t.current(), i64::MAX);
        t.observe(1, 200, 0);
        assert_eq!(t.current(), i64::MAX, "and it stays there");
        assert!(t.is_late(i64::MAX));
    }

    #[test]
    fn finished_splits_stop_holding_the_watermark_and_all_finished_is_max() {
        let mut t = WatermarkTracker::new(2, 0, None);
        t.observe(0, 100, 0);
        t.observe(1, 50, 0);
        t.finish_split(1);
        assert_eq!(t.current(), 99);
        t.observe(0, 200, 0);
        assert_eq!(t.current(), 199);
        t.finish_split(0);
        assert_eq!(t.current(), i64::MAX);
    }

    #[test]
    fn finished_split_plus_idle_splits_keeps_the_watermark() {
        let mut t = WatermarkTracker::new(2, 0, Some(10));
        t.observe(0, 100, 0);
        t.observe(1, 50, 0);
        t.finish_split(1);
        t.check_idle(10);
        assert_eq!(t.current(), 99);
    }

    #[test]
    fn an_added_split_holds_the_watermark_but_does_not_lower_it() {
        let mut t = WatermarkTracker::new(1, 0, None);
        t.observe(0, 100, 0);
        let new = t.add_split();
        assert_eq!((new, t.split_count()), (1, 2));
        assert_eq!(t.current(), 99);
        t.observe(0, 200, 0);
        assert_eq!(t.current(), 99);
        t.observe(1, 150, 0);
        assert_eq!(t.current(), 149);
    }

    #[test]
    fn extreme_timestamps_and_bounds_saturate_instead_of_overflowing() {
        let mut t = WatermarkTracker::new(1, u64::MAX, Some(u64::MAX));
        t.observe(0, 10, i64::MIN);
        assert_eq!(t.current(), i64::MIN + 10);
        t.check_idle(i64::MAX);
        let mut t = WatermarkTracker::new(1, 0, None);
        t.observe(0, i64::MIN + 1, 0);
        assert_eq!(t.current(), i64::MIN);
        t.observe(0, i64::MAX, 0);
        assert_eq!(t.current(), i64::MAX - 1);
    }

    #[test]
    fn a_tracker_without_splits_stays_at_min() {
        let mut t = WatermarkTracker::new(0, 0, Some(1));
        t.check_idle(100);
        assert_eq!(t.current(), i64::MIN);
    }

    #[test]
    fn snapshot_and_restore_round_trip() {
        let mut t = WatermarkTracker::new(2, 5, Some(1_000));
        t.observe(0, 100, 0);
        t.observe(1, 300, 0);
        t.observe(0, 400, 0);
        let snap = t.snapshot();
        assert_eq!(snap.watermark, 294);
        assert_eq!(snap.split_max_timestamps, vec![400, 300]);

        let mut restored = WatermarkTracker::new(2, 5, Some(1_000));
        restored.restore(&snap);
        assert_eq!(restored.current(), 294);
        assert!(restored.is_late(294));
        restored.observe(1, 500, 0);
        assert_eq!(restored.current(), 394);
    }

    #[test]
    fn restore_never_takes_the_watermark_below_the_snapshot() {
        let mut t = WatermarkTracker::new(3, 0, None);
        t.restore(&WatermarkSnapshot {
            watermark: 1_000,
            split_max_timestamps: vec![2_000],
        });
        assert_eq!(t.current(), 1_000, "new splits 1 and 2 have seen nothing");
    }

    /// Recomputes everything from scratch after every step, as the spec reads.
    struct Model {
        max_ts: Vec<i64>,
        last: Vec<Option<i64>>,
        idle: Vec<bool>,
        ooo: i64,
        timeout: i64,
        current: i64,
    }

    impl Model {
        fn refresh(&mut self) {
            let min = (0..self.max_ts.len())
                .filter(|&i| !self.idle[i])
                .map(|i| self.max_ts[i].saturating_sub(self.ooo).saturating_sub(1))
                .min();
            if let Some(min) = min {
                self.current = self.current.max(min);
            }
        }
    }

    #[test]
    fn agrees_with_a_recompute_everything_model_under_random_operations() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let splits = 1 + (next() % 6) as usize;
            let ooo = (next() % 50) as i64;
            let timeout = 1 + (next() % 100) as i64;
            let mut t = WatermarkTracker::new(splits, ooo as u64, Some(timeout as u64));
            let mut m = Model {
                max_ts: vec![i64::MIN; splits],
                last: vec![None; splits],
                idle: vec![false; splits],
                ooo,
                timeout,
                current: i64::MIN,
            };
            let mut now = 0i64;
            for step in 0..500 {
                now += (next() % 20) as i64;
                if next() % 10 == 0 {
                    t.check_idle(now);
                    for i in 0..splits {
                        if m.idle[i] {
                            continue;
                        }
                        match m.last[i] {
                            None => m.last[i] = Some(now),
                            Some(l) if now - l >= m.timeout => m.idle[i] = true,
                            Some(_) => {}
                        }
                    }
                } else {
                    // Skewed so that some splits run behind and some stall.
                    let split = (next() % splits as u64).min(next() % splits as u64) as usize;
                    let ts = now * 10 + (next() % 300) as i64 - 150;
                    let late = t.observe(split, ts, now);
                    assert_eq!(late, ts <= m.current, "round {round} step {step}");
                    m.last[split] = Some(now);
                    m.idle[split] = false;
                    m.max_ts[split] = m.max_ts[split].max(ts);
                }
                m.refresh();
                assert_eq!(t.current(), m.current, "round {round} step {step}");
            }
        }
    }
}
