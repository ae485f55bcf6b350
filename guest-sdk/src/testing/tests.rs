//! The test host's semantics, checked through a plugin that runs scripts:
//! each event's value is a JSON list of operations.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Deserialize;

use super::*;
use crate::{Context, ListState, MapState, Timer, ValueState};

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Set(u64),
    Clear,
    Append(String),
    Put(String, i64),
    Remove(String),
    EventTimer(i64),
    DeleteEventTimer(i64),
    ProcessingTimer(i64),
    /// When the timer at `.0` fires, register an event-time timer at `.1`.
    Then(i64, i64),
    Emit(String),
    EmitKeyed(String, String),
    EmitTo(String, String),
    Log(String),
    Count(String, u64),
    Fail(String),
    Panic,
    /// Emit what the map and list hold, read back through the typed API.
    Report,
}

#[derive(Default, Deserialize)]
struct Config {
    #[serde(default)]
    fail_timers_at: Vec<i64>,
    #[serde(default)]
    touch_state_in_open: bool,
}

struct Script {
    config: Config,
    value: ValueState<u64>,
    map: MapState<String, i64>,
    list: ListState<String>,
    then: MapState<i64, i64>,
}

impl Processor for Script {
    type Config = Config;

    fn open(config: Config) -> Result<Self, Error> {
        let value = ValueState::new("value");
        if config.touch_state_in_open {
            value.get()?;
        }
        Ok(Script {
            config,
            value,
            map: MapState::new("map"),
            list: ListState::new("list"),
            then: MapState::new("then"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        for op in event.json::<Vec<Op>>()? {
            match op {
                Op::Set(v) => self.value.set(&v)?,
                Op::Clear => self.value.clear(),
                Op::Append(s) => self.list.append(&s)?,
                Op::Put(k, v) => self.map.put(&k, &v)?,
                Op::Remove(k) => self.map.remove(&k)?,
                Op::EventTimer(ts) => ctx.register_event_time_timer(ts),
                Op::DeleteEventTimer(ts) => ctx.delete_event_time_timer(ts),
                Op::ProcessingTimer(ts) => ctx.register_processing_time_timer(ts),
                Op::Then(at, next) => self.then.put(&at, &next)?,
                Op::Emit(v) => ctx.emit(v),
                Op::EmitKeyed(k, v) => ctx.emit_keyed(k, v),
                Op::EmitTo(o, v) => ctx.emit_to(&o, v),
                Op::Log(m) => ctx.log(Level::Warn, m),
                Op::Count(n, d) => ctx.counter_add(&n, d),
                Op::Fail(m) => return Err(Error::msg(m)),
                Op::Panic => panic!("told to panic"),
                Op::Report => {
                    let report = serde_json::json!({
                        "map": self.map.entries()?,
                        "map_is_empty": self.map.is_empty(),
                        "has_a": self.map.contains("a")?,
                        "a": self.map.get("a")?,
                        "list": self.list.read()?,
                        "value": self.value.get()?,
                    });
                    ctx.emit_json_to("report", &report)?;
                }
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<(), Error> {
        let fired = serde_json::json!({
            "key": String::from_utf8_lossy(ctx.key()),
            "ts": ctx.timestamp(),
            "domain": format!("{:?}", timer.domain()),
            "watermark": ctx.watermark(),
        });
        ctx.emit_json(&fired)?;
        if let Some(next) = self.then.get(&timer.timestamp())? {
            ctx.register_event_time_timer(next);
        }
        if self.config.fail_timers_at.contains(&timer.timestamp()) {
            return Err(Error::msg("told to fail"));
        }
        Ok(())
    }
}

fn script(key: &str, ops: serde_json::Value) -> Event {
    Event::new_json(key, &ops)
}

fn open() -> Harness<Script> {
    Harness::open(Config::default()).unwrap()
}

fn fired(harness: &Harness<Script>) -> Vec<(String, i64)> {
    let outputs = harness.outputs("main");
    let fired = outputs
        .iter()
        .map(|o| o.json::<serde_json::Value>().unwrap());
    fired
        .map(|f| {
            (
                f["key"].as_str().unwrap().to_owned(),
                f["ts"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn value_state_is_scoped_to_the_current_key() {
    let mut h = open();
    h.process(script("a", serde_json::json!([{"set": 1}])))
        .unwrap();
    h.process(script("b", serde_json::json!([{"set": 2}])))
        .unwrap();
    assert_eq!(h.state::<u64>("a", "value"), Some(1));
    assert_eq!(h.state::<u64>("b", "value"), Some(2));
    h.process(script("a", serde_json::json!([{"clear": null}])))
        .unwrap();
    assert_eq!(h.state::<u64>("a", "value"), None);
    assert_eq!(h.state::<u64>("b", "value"), Some(2));
}

#[test]
fn map_and_list_state_round_trip_through_the_typed_api() {
    let mut h = open();
    let ops = serde_json::json!([
        {"put": ["b", 2]}, {"put": ["a", 1]}, {"put": ["a", 3]}, {"remove": "b"},
        {"put": ["c", 4]}, {"append": "x"}, {"append": "y"}, {"report": null}
    ]);
    h.process(script("k", ops)).unwrap();
    let report: serde_json::Value = h.outputs("report")[0].json().unwrap();
    assert_eq!(
        report,
        serde_json::json!({
            "map": [["a", 3], ["c", 4]], "map_is_empty": false, "has_a": true, "a": 3,
            "list": ["x", "y"], "value": null,
        })
    );
    assert_eq!(
        h.map_state::<String, i64>("k", "map"),
        vec![("a".into(), 3), ("c".into(), 4)]
    );
    assert_eq!(h.list_state::<String>("k", "list"), vec!["x", "y"]);
    assert!(h.map_state::<String, i64>("other", "map").is_empty());

    h.process(script("other", serde_json::json!([{"report": null}])))
        .unwrap();
    let report: serde_json::Value = h.outputs("report")[1].json().unwrap();
    assert_eq!(report["map_is_empty"], true);
    assert_eq!(report["has_a"], false);
}

fn output(key: Option<&str>, value: &str, timestamp: Option<i64>) -> Output {
    let key = key.map(|k| k.as_bytes().to_vec());
    let value = value.as_bytes().to_vec();
    Output {
        key,
        value,
        timestamp,
    }
}

#[test]
fn outputs_carry_the_current_key_and_timestamp() {
    let mut h = open();
    let ops = serde_json::json!([
        {"emit": "m"}, {"emit_keyed": ["other", "k"]}, {"emit_to": ["side", "s"]},
        {"emit_to": ["main", "n"]}
    ]);
    h.process(script("a", ops).with_timestamp(42)).unwrap();
    h.process(Event::unkeyed(r#"[{"emit": "u"}]"#)).unwrap();
    let expected = [
        output(Some("a"), "m", Some(42)),
        output(Some("other"), "k", Some(42)),
        output(Some("a"), "n", Some(42)),
        output(None, "u", None),
    ];
    assert_eq!(h.take_outputs("main"), expected);
    assert_eq!(h.outputs("side"), [output(Some("a"), "s", Some(42))]);
    assert!(
        h.outputs("main").is_empty(),
        "take_outputs empties the output"
    );
}

#[test]
fn registering_the_same_timer_twice_gives_one_timer() {
    let mut h = open();
    h.process(script(
        "a",
        serde_json::json!([{"event_timer": 10}, {"event_timer": 10}]),
    ))
    .unwrap();
    h.process(script(
        "a",
        serde_json::json!([{"event_timer": 10}, {"processing_timer": 10}]),
    ))
    .unwrap();
    assert_eq!(
        h.pending_timers("a"),
        [
            (10, TimeDomain::EventTime),
            (10, TimeDomain::ProcessingTime)
        ]
    );
    h.advance_watermark(10).unwrap();
    assert_eq!(fired(&h), [("a".to_owned(), 10)]);
    assert_eq!(h.pending_timers("a"), [(10, TimeDomain::ProcessingTime)]);
}

#[test]
fn timers_fire_in_timestamp_then_key_order_with_their_key_in_scope() {
    let mut h = open();
    h.process(script(
        "b",
        serde_json::json!([{"event_timer": 20}, {"event_timer": 10}]),
    ))
    .unwrap();
    h.process(script(
        "a",
        serde_json::json!([{"event_timer": 20}, {"event_timer": 30}]),
    ))
    .unwrap();
    h.advance_watermark(25).unwrap();
    assert_eq!(
        fired(&h),
        [("b".into(), 10), ("a".into(), 20), ("b".into(), 20)]
    );
    let first: serde_json::Value = h.outputs("main")[0].json().unwrap();
    assert_eq!(
        first["watermark"], 25,
        "the watermark moves before timers fire"
    );
    assert_eq!(first["domain"], "EventTime");
    assert_eq!(h.outputs("main")[0].timestamp, Some(10));
    assert_eq!(h.pending_timers("a"), [(30, TimeDomain::EventTime)]);
}

#[test]
fn a_timer_registered_by_a_timer_that_is_already_due_fires_too() {
    let mut h = open();
    let ops = serde_json::json!([{"event_timer": 10}, {"then": [10, 5]}, {"then": [5, 50]}]);
    h.process(script("a", ops)).unwrap();
    h.advance_watermark(20).unwrap();
    assert_eq!(fired(&h), [("a".into(), 10), ("a".into(), 5)]);
    assert_eq!(h.pending_timers("a"), [(50, TimeDomain::EventTime)]);
}

#[test]
fn a_deleted_timer_does_not_fire() {
    let mut h = open();
    let ops =
        serde_json::json!([{"event_timer": 10}, {"event_timer": 11}, {"delete_event_timer": 10}]);
    h.process(script("a", ops)).unwrap();
    h.advance_watermark(100).unwrap();
    assert_eq!(fired(&h), [("a".into(), 11)]);
}

#[test]
fn the_watermark_never_moves_back_and_timers_wait_for_it() {
    let mut h = open();
    assert_eq!(h.watermark(), i64::MIN);
    h.advance_watermark(100).unwrap();
    h.advance_watermark(50).unwrap();
    assert_eq!(h.watermark(), 100);
    h.process(script("a", serde_json::json!([{"event_timer": 101}])))
        .unwrap();
    h.advance_watermark(100).unwrap();
    assert!(fired(&h).is_empty());
    h.advance_watermark(101).unwrap();
    assert_eq!(fired(&h), [("a".into(), 101)]);
}

#[test]
fn processing_time_timers_follow_the_wall_clock() {
    let mut h = open();
    h.process(script("a", serde_json::json!([{"processing_timer": 1000}])))
        .unwrap();
    h.advance_watermark(i64::MAX).unwrap();
    assert!(fired(&h).is_empty());
    h.advance_processing_time(1000).unwrap();
    assert_eq!(fired(&h), [("a".into(), 1000)]);
    assert_eq!(h.processing_time(), 1000);
    let out: serde_json::Value = h.outputs("main")[0].json().unwrap();
    assert_eq!(out["domain"], "ProcessingTime");
}

#[test]
fn a_failing_timer_is_reported_and_the_other_due_timers_still_fire() {
    let mut h = Harness::<Script>::open_json(r#"{"fail_timers_at": [10]}"#).unwrap();
    h.process(script(
        "a",
        serde_json::json!([{"event_timer": 10}, {"event_timer": 11}]),
    ))
    .unwrap();
    let error = h.advance_watermark(20).unwrap_err();
    assert_eq!(error.message(), "timer 10 of key \"a\": told to fail");
    assert_eq!(fired(&h), [("a".into(), 10), ("a".into(), 11)]);
}

#[test]
fn a_rejected_event_returns_the_plugins_error() {
    let mut h = open();
    let error = h
        .process(script("a", serde_json::json!([{"fail": "no thanks"}])))
        .unwrap_err();
    assert_eq!(error.message(), "no thanks");
    let error = h.process(Event::new("a", "not json")).unwrap_err();
    assert!(error.message().starts_with("invalid JSON"), "{error}");
}

#[test]
fn logs_and_counters_are_recorded() {
    let mut h = open();
    let ops = serde_json::json!([{"log": "hello"}, {"count": ["n", 2]}, {"count": ["n", 3]}]);
    h.process(script("a", ops)).unwrap();
    assert_eq!(h.logs(), [(Level::Warn, "hello".to_owned())]);
    assert_eq!(h.counters().get("n"), Some(&5));
}

#[test]
fn two_harnesses_do_not_share_anything() {
    let mut first = open();
    let mut second = open();
    first
        .process(script(
            "a",
            serde_json::json!([{"set": 1}, {"event_timer": 5}]),
        ))
        .unwrap();
    second
        .process(script("a", serde_json::json!([{"set": 2}])))
        .unwrap();
    assert_eq!(first.state::<u64>("a", "value"), Some(1));
    assert_eq!(second.state::<u64>("a", "value"), Some(2));
    assert!(second.pending_timers("a").is_empty());
}

#[test]
fn a_harness_stays_usable_after_the_plugin_panics() {
    let mut h = open();
    h.process(script("a", serde_json::json!([{"set": 7}])))
        .unwrap();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        h.process(script("a", serde_json::json!([{"panic": null}])))
    }));
    assert!(panicked.is_err());
    assert_eq!(h.state::<u64>("a", "value"), Some(7));
    h.process(script("a", serde_json::json!([{"set": 8}])))
        .unwrap();
    assert_eq!(h.state::<u64>("a", "value"), Some(8));
}

#[test]
#[should_panic(expected = "value-state.get outside an event or timer")]
fn touching_state_in_open_fails_like_the_host() {
    let _ = Harness::<Script>::open(Config {
        touch_state_in_open: true,
        ..Config::default()
    });
}

#[test]
#[should_panic(expected = "emit-to \"late\": [\"late\", \"dead-letter\"] are the host's")]
fn emitting_to_a_host_only_output_fails() {
    let mut h = open();
    let _ = h.process(script("a", serde_json::json!([{"emit_to": ["late", "x"]}])));
}

struct TwoKinds;

impl Processor for TwoKinds {
    type Config = ();
    fn open(_: ()) -> Result<Self, Error> {
        ValueState::<u64>::new("s");
        MapState::<u64, u64>::new("s");
        Ok(TwoKinds)
    }
    fn process(&mut self, _: &mut Context, _: &Event) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
#[should_panic(expected = "state \"s\" was declared as Value and then as Map")]
fn a_state_name_keeps_one_kind() {
    let _ = Harness::<TwoKinds>::open(());
}

#[test]
fn a_bad_json_config_names_the_field() {
    let error = Harness::<Script>::open_json(r#"{"fail_timers_at": "ten"}"#)
        .err()
        .unwrap();
    assert!(
        error
            .message()
            .starts_with("invalid plugin config: fail_timers_at:"),
        "{error}"
    );
}
