//! A test-only plugin for the host's event-time tests: it echoes each event
//! with the time it saw, and each fired timer with its key, so a test reads
//! off the output what the host did with timestamps, watermarks and timers.
//!
//! Event `{"id": "a", "timer": 10}` emits `{"event":"a","ts":..,"watermark":..}`
//! and registers an event-time timer at 10, which later emits
//! `{"timer":10,"key":"<key>"}`. `"after_ms": 5` registers a processing-time
//! timer 5 ms after the host's clock; when it fires it emits
//! `{"timer":..,"key":..,"processing_time":true}` and counts
//! `processing-time-timers`.

use serde::{Deserialize, Serialize};
use weir_sdk::{Context, Error, Event, Processor, TimeDomain, Timer};

#[derive(Debug, Deserialize)]
struct Input {
    id: String,
    #[serde(default)]
    timer: Option<i64>,
    #[serde(default)]
    after_ms: Option<i64>,
}

/// Emitted for each event.
#[derive(Debug, Serialize)]
struct EventSeen<'a> {
    event: &'a str,
    ts: Option<i64>,
    watermark: i64,
}

/// Emitted for each fired timer.
#[derive(Debug, Serialize)]
struct TimerFired<'a> {
    timer: i64,
    key: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    processing_time: bool,
}

/// The echo.
pub struct TimerEcho;

impl Processor for TimerEcho {
    type Config = ();

    fn open((): ()) -> Result<Self, Error> {
        Ok(TimerEcho)
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        let input: Input = event.json()?;
        let seen = EventSeen {
            event: &input.id,
            ts: ctx.timestamp(),
            watermark: ctx.watermark(),
        };
        ctx.emit_json(&seen)?;
        if let Some(at) = input.timer {
            ctx.register_event_time_timer(at);
        }
        if let Some(after) = input.after_ms {
            let at = ctx.processing_time().saturating_add(after);
            ctx.register_processing_time_timer(at);
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<(), Error> {
        let key = String::from_utf8_lossy(timer.key());
        let processing_time = timer.domain() == TimeDomain::ProcessingTime;
        if processing_time {
            ctx.counter_add("processing-time-timers", 1);
        }
        ctx.emit_json(&TimerFired {
            timer: timer.timestamp(),
            key: &key,
            processing_time,
        })
    }
}

weir_sdk::export!(TimerEcho);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_sdk::testing::Harness;

    use super::*;

    fn outputs(harness: &Harness<TimerEcho>) -> Vec<String> {
        let outputs = harness.outputs("main").iter();
        outputs
            .map(|o| String::from_utf8(o.value.clone()).unwrap())
            .collect()
    }

    #[test]
    fn each_event_is_echoed_with_its_timestamp_and_the_watermark() {
        let mut h = Harness::<TimerEcho>::open(()).unwrap();
        h.advance_watermark(99).unwrap();
        h.process(Event::new_json("k", &json!({"id": "a"})).with_timestamp(100))
            .unwrap();
        h.process(Event::new_json("k", &json!({"id": "b"})))
            .unwrap();
        assert_eq!(
            outputs(&h),
            [
                r#"{"event":"a","ts":100,"watermark":99}"#,
                r#"{"event":"b","ts":null,"watermark":99}"#
            ]
        );
    }

    #[test]
    fn a_requested_timer_fires_with_its_key_once_the_watermark_reaches_it() {
        let mut h = Harness::<TimerEcho>::open(()).unwrap();
        h.process(Event::new_json("user-1", &json!({"id": "a", "timer": 50})).with_timestamp(10))
            .unwrap();
        h.process(Event::new_json("user-1", &json!({"id": "b", "timer": 50})).with_timestamp(11))
            .unwrap();
        h.advance_watermark(49).unwrap();
        assert_eq!(h.outputs("main").len(), 2);
        h.advance_watermark(50).unwrap();
        let fired = h.outputs("main")[2..].to_vec();
        assert_eq!(fired.len(), 1, "one timer per (key, timestamp)");
        assert_eq!(fired[0].value, br#"{"timer":50,"key":"user-1"}"#);
        assert_eq!(fired[0].timestamp, Some(50));
    }

    #[test]
    fn a_processing_time_timer_fires_by_the_clock_and_is_counted() {
        let mut h = Harness::<TimerEcho>::open(()).unwrap();
        h.advance_processing_time(1_000).unwrap();
        h.process(Event::new_json("k", &json!({"id": "a", "after_ms": 5})))
            .unwrap();
        h.advance_processing_time(1_004).unwrap();
        assert_eq!(h.outputs("main").len(), 1);
        h.advance_processing_time(1_005).unwrap();
        assert_eq!(
            h.outputs("main")[1].value,
            br#"{"timer":1005,"key":"k","processing_time":true}"#
        );
        assert_eq!(h.counters().get("processing-time-timers"), Some(&1));
    }

    #[test]
    fn timers_of_several_keys_fire_in_timestamp_then_key_order() {
        let mut h = Harness::<TimerEcho>::open(()).unwrap();
        for (key, at) in [("b", 20), ("a", 20), ("c", 10)] {
            h.process(Event::new_json(key, &json!({"id": key, "timer": at})))
                .unwrap();
        }
        h.take_outputs("main");
        h.advance_watermark(i64::MAX).unwrap();
        assert_eq!(
            outputs(&h),
            [
                r#"{"timer":10,"key":"c"}"#,
                r#"{"timer":20,"key":"a"}"#,
                r#"{"timer":20,"key":"b"}"#
            ]
        );
    }

    #[test]
    fn an_event_without_an_id_is_rejected() {
        let mut h = Harness::<TimerEcho>::open(()).unwrap();
        let error = h
            .process(Event::new_json("k", &json!({"timer": 5})))
            .unwrap_err();
        assert!(error.message().contains("missing field `id`"), "{error}");
        assert!(h.pending_timers("k").is_empty());
    }
}
