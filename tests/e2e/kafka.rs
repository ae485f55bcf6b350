//! Kafka in, Kafka out, through the real `weir` binary and a real
//! Kafka-protocol broker (tansu, see tansu.rs): the W2 reference alerts
//! from a four-partition topic, the same across SIGKILLs (no loss; exact
//! once duplicates are dropped by their `weir-origin` header), malformed
//! records dead-lettered with their partition and offset, and a broker
//! restart in the middle of a run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::connectors::{generator_record, kafka_headers, write_generator_value};
use weir_test_artifacts::FRAUD_DETECTOR;

use crate::support::{
    WEIR, cache_dir, checkpoint_ids, newest_checkpoint, read_jsonl, toml_path, wait_for_checkpoint,
};
use crate::tansu::{Broker, ReadRecord};

const BASE_TS: i64 = 1_700_000_000_000;
const EVENTS: u64 = 1_000_000;

/// (user_id, window_start, ts) of an alert.
type Alert = (u64, i64, i64);

/// The W2 rule (threshold 5 in 60 s per user) over the generator's first
/// `events` events, without state or timers: what any correct run emits.
fn reference_alerts(events: u64) -> Vec<Alert> {
    let mut windows: HashMap<u64, (i64, u32)> = HashMap::new();
    let mut alerts = Vec::new();
    for i in 0..events {
        let (user, _, ts) = generator_record(i);
        let window = windows.entry(user).or_insert((i64::MIN / 2, 0));
        if ts < window.0 + 60_000 {
            window.1 += 1;
        } else {
            *window = (ts, 1);
        }
        if window.1 == 5 {
            alerts.push((user, window.0, ts));
        }
    }
    alerts.sort_unstable();
    alerts
}

/// The reference at 1 M events, checked against the published figures.
fn reference() -> Vec<Alert> {
    let alerts = reference_alerts(EVENTS);
    assert_eq!(alerts.len(), 2_056);
    assert_eq!(alerts.iter().map(|a| a.0).sum::<u64>(), 103_597_187);
    assert_eq!(
        alerts.iter().map(|a| a.2 - BASE_TS).sum::<i64>(),
        1_073_632_637
    );
    alerts
}

fn parse_alert(value: &str) -> Alert {
    let v: Value = serde_json::from_str(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    (
        v["user_id"].as_u64().unwrap(),
        v["window_start"].as_i64().unwrap(),
        v["ts"].as_i64().unwrap(),
    )
}

fn sorted_alerts<'a>(records: impl IntoIterator<Item = &'a ReadRecord>) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = records.into_iter().map(|r| parse_alert(&r.value)).collect();
    alerts.sort_unstable();
    alerts
}

/// The records left once duplicates (same pipeline, output and origin) are
/// dropped, as a consumer would.
fn without_duplicates(records: &[ReadRecord]) -> Vec<&ReadRecord> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| {
            let id = (
                r.header(kafka_headers::PIPELINE).map(str::to_owned),
                r.header(kafka_headers::OUTPUT).map(str::to_owned),
                r.header(kafka_headers::ORIGIN)
                    .expect("every record has an origin")
                    .to_owned(),
            );
            seen.insert(id)
        })
        .collect()
}

/// Asserts that `alerts`, once duplicates are dropped by `weir-origin`, are
/// exactly `reference`.
fn assert_reference_without_duplicates(alerts: &[ReadRecord], reference: &[Alert]) {
    let kept = without_duplicates(alerts);
    eprintln!(
        "{} alerts written, {} after dropping duplicates by weir-origin",
        alerts.len(),
        kept.len()
    );
    assert_eq!(sorted_alerts(kept), reference);
}

/// Writes the generator's first `events` events to `topic`, keyed by user.
fn produce_w2(broker: &Broker, topic: &str, events: u64) {
    produce_w2_range(broker, topic, 0..events);
}

/// Writes the generator's events `range` to `topic`, keyed by user.
fn produce_w2_range(broker: &Broker, topic: &str, range: std::ops::Range<u64>) {
    let started = Instant::now();
    let events = range.end - range.start;
    broker.produce(
        topic,
        range.map(|i| {
            let mut value = Vec::with_capacity(64);
            write_generator_value(i, &mut value);
            (generator_record(i).0.to_string().into_bytes(), value)
        }),
    );
    eprintln!(
        "produced {events} events to {topic} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

struct Spec<'a> {
    brokers: String,
    topic: &'a str,
    group: &'a str,
    key_by: &'a str,
    parallelism: u32,
    checkpoint_ms: Option<u64>,
    alerts: &'a str,
    bounded: bool,
}

impl Spec<'_> {
    fn toml(&self) -> String {
        format!(
            r#"
name = "fraud"
parallelism = {parallelism}
[source]
kind = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group = "{group}"
start = "earliest"
bounded = {bounded}
# tansu 0.6 answers a fetch in the middle of a record batch with the next
# batch: a restore fetches from a batch (10 000 records) earlier.
resume_overlap = 10000
[event_time]
field = "/ts"
[key_by]
field = "{key_by}"
[plugin]
wasm = {wasm}
config = {{ threshold = 5, window_ms = 60000 }}
{checkpoint}
[[sink]]
output = "alerts"
kind = "kafka"
brokers = "{brokers}"
topic = "{alerts}"
[[sink]]
output = "late"
kind = "file"
path = "late.jsonl"
[[sink]]
output = "dead-letter"
kind = "file"
path = "dead-letter.jsonl"
"#,
            parallelism = self.parallelism,
            brokers = self.brokers,
            topic = self.topic,
            group = self.group,
            bounded = self.bounded,
            key_by = self.key_by,
            alerts = self.alerts,
            wasm = toml_path(FRAUD_DETECTOR),
            checkpoint = self.checkpoint_ms.map_or(String::new(), |ms| format!(
                "[checkpoint]\ninterval_ms = {ms}\ndir = \"checkpoints\"\nretain = 3"
            )),
        )
    }
}

fn weir(dir: &Path) -> Command {
    let mut command = Command::new(WEIR);
    command
        .current_dir(dir)
        .args([
            "run",
            "--quiet",
            "--summary-json",
            "summary.json",
            "pipeline.toml",
        ])
        .env("WEIR_CACHE_DIR", cache_dir());
    command
}

/// `weir run`'s stderr goes to this file in the run's directory: a pipe
/// nobody reads while it runs would block it once librdkafka's warnings
/// fill 64 KiB.
const WEIR_LOG: &str = "weir.log";

fn weir_logging_to_file(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join(WEIR_LOG)).unwrap();
    weir(dir).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn weir_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(WEIR_LOG)).unwrap_or_default()
}

/// Runs `weir run` to the end (at most `limit`), asserting it succeeds.
fn run_to_end(dir: &Path, limit: Duration) {
    let mut child = weir_logging_to_file(dir);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "weir run did not finish within {limit:?}:\n{}",
                weir_log(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "weir run failed:\n{}", weir_log(dir));
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    if path.exists() {
        read_jsonl(path)
    } else {
        Vec::new()
    }
}

/// The checks every complete W2 run passes: no late events, no errors, all
/// windows closed.
fn check_summary(dir: &Path, events_in: Option<u64>) {
    let summary = summary(dir);
    if let Some(n) = events_in {
        assert_eq!(summary["events_in"], n, "{summary}");
    }
    assert_eq!(
        summary["outputs"]["late"].as_u64().unwrap_or(0),
        0,
        "{summary}"
    );
    assert!(lines(&dir.join("late.jsonl")).is_empty(), "late events");
    assert!(
        summary["errors"].as_object().unwrap().is_empty(),
        "{summary}"
    );
    assert_eq!(summary["keys_in_state"], 0, "{summary}");
}

#[test]
fn w2_from_a_four_partition_topic_writes_the_reference_alerts_to_a_topic() {
    let broker = Broker::start();
    broker.create_topic("transactions", 4);
    broker.create_topic("alerts", 2);
    produce_w2(&broker, "transactions", EVENTS);
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        brokers: broker.brokers(),
        topic: "transactions",
        group: "weir-fraud",
        key_by: "/user_id",
        parallelism: 2,
        checkpoint_ms: Some(1_000),
        alerts: "alerts",
        bounded: true,
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    let started = Instant::now();
    run_to_end(dir.path(), Duration::from_secs(300));
    eprintln!(
        "kafka -> W2 -> kafka, 1 M events: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_summary(dir.path(), Some(EVENTS));

    let alerts = broker.read_all("alerts");
    assert_eq!(sorted_alerts(&alerts), reference());
    // Without a crash there is nothing to drop, and every origin is a
    // partition and offset of the input.
    assert_eq!(without_duplicates(&alerts).len(), alerts.len());
    for alert in &alerts {
        let origin = alert.header(kafka_headers::ORIGIN).unwrap();
        assert!(origin.starts_with("transactions/"), "{origin}");
        assert_eq!(alert.header(kafka_headers::PIPELINE), Some("fraud"));
        assert_eq!(alert.header(kafka_headers::OUTPUT), Some("alerts"));
        let user = parse_alert(&alert.value).0.to_string();
        assert_eq!(alert.key.as_deref(), Some(user.as_bytes()), "keyed by user");
    }
    // The last checkpoint's offsets are committed to the group, for lag tools.
    let committed = broker.committed("weir-fraud", "transactions", 4);
    let total: i64 = committed
        .iter()
        .map(|o| o.expect("every partition committed"))
        .sum();
    assert_eq!(total, EVENTS as i64);
}

#[test]
fn sigkilled_twice_the_alerts_topic_holds_every_reference_alert_and_exactly_them_without_duplicates()
 {
    let broker = Broker::start();
    broker.create_topic("transactions", 4);
    broker.create_topic("alerts", 2);
    produce_w2(&broker, "transactions", EVENTS);
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        brokers: broker.brokers(),
        topic: "transactions",
        group: "weir-fraud-crash",
        // The Kafka key is the user: the same state split as "/user_id".
        key_by: "record-key",
        parallelism: 2,
        checkpoint_ms: Some(200),
        alerts: "alerts",
        bounded: true,
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    for kill in 0..2 {
        // Only checkpoints this run completes count (the killed run's are on disk).
        let checkpoint = newest_checkpoint(dir.path());
        let mut child = weir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Mid-way: two checkpoints into this run, then some more records.
        let first = wait_for_checkpoint(dir.path(), checkpoint, &mut child);
        let second = first.and_then(|id| wait_for_checkpoint(dir.path(), id, &mut child));
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            second.is_some() && child.try_wait().unwrap().is_none(),
            "kill {kill}: the run ended before it could be killed mid-way"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    run_to_end(dir.path(), Duration::from_secs(300));
    let log = weir_log(dir.path());
    assert!(log.contains("resuming from checkpoint"), "{log}");
    check_summary(dir.path(), None);

    let reference = reference();
    let alerts = broker.read_all("alerts");
    let distinct: std::collections::BTreeSet<Alert> =
        alerts.iter().map(|r| parse_alert(&r.value)).collect();
    let missing: Vec<&Alert> = reference.iter().filter(|a| !distinct.contains(a)).collect();
    assert!(missing.is_empty(), "lost alerts: {missing:?}");
    assert_reference_without_duplicates(&alerts, &reference);
}

#[test]
fn malformed_records_go_to_dead_letter_with_their_partition_and_offset() {
    let broker = Broker::start();
    broker.create_topic("transactions", 2);
    broker.create_topic("alerts", 1);
    // Good events, with a record that is not JSON and one without the key
    // field among them; each bad one goes to the partition its key picks.
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000)
        .map(|i| {
            let mut value = Vec::new();
            write_generator_value(i, &mut value);
            (generator_record(i).0.to_string().into_bytes(), value)
        })
        .collect();
    records.insert(700, (b"bad-1".to_vec(), b"this is not JSON".to_vec()));
    records.insert(
        1_400,
        (
            b"bad-2".to_vec(),
            br#"{"amount_cents":5,"ts":1700000000700}"#.to_vec(),
        ),
    );
    broker.produce("transactions", records);
    // Where the bad records landed.
    let input = broker.read_all("transactions");
    let place = |value: &str| {
        let r = input.iter().find(|r| r.value == value).unwrap();
        (format!("transactions/{}", r.partition), r.offset)
    };
    let not_json = place("this is not JSON");
    let no_key = place(r#"{"amount_cents":5,"ts":1700000000700}"#);

    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        brokers: broker.brokers(),
        topic: "transactions",
        group: "weir-dead-letter",
        key_by: "/user_id",
        parallelism: 1,
        checkpoint_ms: Some(1_000),
        alerts: "alerts",
        bounded: true,
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    run_to_end(dir.path(), Duration::from_secs(120));
    let summary = summary(dir.path());
    assert_eq!(summary["events_in"], 2_002, "{summary}");
    assert_eq!(summary["errors"]["unroutable"], 2, "{summary}");
    let dead = lines(&dir.path().join("dead-letter.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reasons: BTreeMap<String, &Value> = dead
        .iter()
        .map(|d| (d["value"].as_str().unwrap().to_owned(), d))
        .collect();
    for (value, (split, offset)) in [
        ("this is not JSON", &not_json),
        (r#"{"amount_cents":5,"ts":1700000000700}"#, &no_key),
    ] {
        let d = reasons[value];
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("source split {split}, offset {offset}")),
            "{reason}"
        );
        assert_eq!(d["split"], split.as_str());
        assert_eq!(d["offset"], *offset);
    }
    // The pipeline went on: the good events' alerts are all there.
    assert_eq!(
        sorted_alerts(&broker.read_all("alerts")),
        reference_alerts(2_000)
    );
}

#[test]
fn a_broker_restarted_mid_stream_loses_nothing() {
    let mut broker = Broker::durable();
    broker.create_topic("transactions", 4);
    broker.create_topic("alerts", 2);
    // Fewer events than the others: the sqlite store is slower.
    const EVENTS: u64 = 300_000;
    const BEFORE_RESTART: u64 = EVENTS / 2;
    // A live stream, so the restart falls inside the run however fast it
    // reads: the first half is there from the start, the second half only
    // comes after the broker is back, and the run stops at `EVENTS` records.
    produce_w2_range(&broker, "transactions", 0..BEFORE_RESTART);
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        brokers: broker.brokers(),
        topic: "transactions",
        group: "weir-restart",
        key_by: "/user_id",
        parallelism: 2,
        checkpoint_ms: Some(200),
        alerts: "alerts",
        bounded: false,
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    let log = std::fs::File::create(dir.path().join(WEIR_LOG)).unwrap();
    let mut child = weir(dir.path())
        .args(["--stop-after", &EVENTS.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Records have been read and alerts written before the broker goes.
    wait_for_alerts(&broker, &mut child, dir.path());
    assert!(
        wait_for_checkpoint(dir.path(), 0, &mut child).is_some(),
        "the run ended before the broker restart:\n{}",
        weir_log(dir.path())
    );
    eprintln!(
        "restarting the broker {:.1} s into the run",
        started.elapsed().as_secs_f64()
    );
    broker.restart(Duration::from_secs(2));
    produce_w2_range(&broker, "transactions", BEFORE_RESTART..EVENTS);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!(
                "weir did not finish within 300 s of the broker restart:\n{}",
                weir_log(dir.path())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("the run ended {:.1} s in", started.elapsed().as_secs_f64());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "weir run failed across the broker restart:\n{}",
        weir_log(dir.path())
    );
    // Stopped at `EVENTS` records, so its last windows are still in state.
    let summary = summary(dir.path());
    assert_eq!(summary["events_in"], EVENTS, "{summary}");
    assert_eq!(summary["stopped"], true, "{summary}");
    assert!(
        summary["errors"].as_object().unwrap().is_empty(),
        "{summary}"
    );
    assert!(
        lines(&dir.path().join("late.jsonl")).is_empty(),
        "late events"
    );
    let alerts = broker.read_all("alerts");
    // The run was not interrupted: nothing is written twice either.
    assert_eq!(without_duplicates(&alerts).len(), alerts.len());
    assert_eq!(sorted_alerts(&alerts), reference_alerts(EVENTS));
}

/// Waits until the run has written its first alert.
fn wait_for_alerts(broker: &Broker, child: &mut Child, dir: &Path) {
    let start = Instant::now();
    while broker.read_all("alerts").is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "weir ended before writing an alert:\n{}",
            weir_log(dir)
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no alert within 120 s:\n{}",
            weir_log(dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The spec of the scale-out test: the W2 pipeline of the others, its
/// partitions shared through `shared`, the group's session short so a
/// killed member is noticed in seconds.
fn group_spec(brokers: &str, shared: &Path, bounded: bool) -> String {
    format!(
        r#"
name = "fraud"
[source]
kind = "kafka"
brokers = "{brokers}"
topics = ["transactions"]
group = "weir-fraud-group"
start = "earliest"
bounded = {bounded}
resume_overlap = 10000
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000" }}
[source.scale_out]
shared = {shared}
[event_time]
field = "/ts"
[key_by]
field = "record-key"
[plugin]
wasm = {wasm}
config = {{ threshold = 5, window_ms = 60000 }}
[checkpoint]
interval_ms = 200
dir = "checkpoints"
retain = 3
[[sink]]
output = "alerts"
kind = "kafka"
brokers = "{brokers}"
topic = "alerts"
"#,
        shared = toml_path(shared.to_str().unwrap()),
        wasm = toml_path(FRAUD_DETECTOR),
    )
}

/// The partitions a group member's log says it holds now (its last
/// `group: holding [...]` line).
fn held(dir: &Path) -> Option<Vec<String>> {
    let log = weir_log(dir);
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with("group: holding ["))?;
    let inner = line.strip_prefix("group: holding [")?.strip_suffix(']')?;
    Some(
        inner
            .split(", ")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Offsets of each partition's newest complete shared checkpoint.
fn shared_offsets(shared: &Path) -> BTreeMap<i32, u64> {
    let mut offsets = BTreeMap::new();
    for p in 0..4 {
        let dir = shared.join(format!("fraud/transactions/{p}"));
        let newest = checkpoint_ids(&dir)
            .filter(|id| dir.join(format!("chk-{id}/INDEX.json")).exists())
            .max();
        let Some(id) = newest else { continue };
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("chk-{id}/MANIFEST.json"))).unwrap(),
        )
        .unwrap();
        offsets.insert(
            p,
            manifest["source"]["position"][0]["offset"]
                .as_u64()
                .unwrap(),
        );
    }
    offsets
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{what}: after {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn two_processes_in_one_group_split_the_partitions_and_the_survivor_takes_over_a_killed_ones_state()
{
    let broker = Broker::start();
    broker.create_topic("transactions", 4);
    broker.create_topic("alerts", 2);
    const HALF: u64 = EVENTS / 2;
    produce_w2_range(&broker, "transactions", 0..HALF);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&a, &b] {
        let spec = group_spec(&broker.brokers(), shared.path(), false);
        std::fs::write(dir.path().join("pipeline.toml"), spec).unwrap();
    }
    let mut first = weir_logging_to_file(a.path());
    wait_until(
        "the first process holds every partition",
        Duration::from_secs(60),
        || held(a.path()).is_some_and(|h| h.len() == 4),
    );
    let mut second = weir_logging_to_file(b.path());
    wait_until(
        "the two processes split the partitions",
        Duration::from_secs(120),
        || {
            let (ha, hb) = (held(a.path()), held(b.path()));
            ha.is_some_and(|h| h.len() == 2) && hb.is_some_and(|h| h.len() == 2)
        },
    );
    let (held_a, held_b) = (held(a.path()).unwrap(), held(b.path()).unwrap());
    assert!(
        held_a.iter().all(|p| !held_b.contains(p)),
        "{held_a:?} {held_b:?}"
    );

    // Every partition's first half is in a shared checkpoint: the state of
    // the second process's partitions lives there only.
    let ends: BTreeMap<i32, u64> = {
        let input = broker.read_all("transactions");
        (0..4)
            .map(|p| (p, input.iter().filter(|r| r.partition == p).count() as u64))
            .collect()
    };
    wait_until(
        "the first half is checkpointed",
        Duration::from_secs(180),
        || shared_offsets(shared.path()) == ends,
    );
    second.kill().unwrap(); // SIGKILL
    second.wait().unwrap();
    produce_w2_range(&broker, "transactions", HALF..EVENTS);

    // The survivor gets the killed member's partitions once the group
    // notices (the session timeout), from their shared checkpoints.
    let reference = reference();
    wait_until(
        "every reference alert is written",
        Duration::from_secs(300),
        || {
            assert!(
                first.try_wait().unwrap().is_none(),
                "the surviving process ended:\n{}",
                weir_log(a.path())
            );
            let alerts = broker.read_all("alerts");
            let distinct: std::collections::BTreeSet<Alert> =
                alerts.iter().map(|r| parse_alert(&r.value)).collect();
            reference.iter().all(|a| distinct.contains(a))
        },
    );
    assert_eq!(held(a.path()).unwrap().len(), 4, "{}", weir_log(a.path()));
    let log = weir_log(a.path());
    for p in &held_b {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("  {p}: resuming from checkpoint"))),
            "{p} was not restored from the killed process's checkpoint:\n{log}"
        );
    }

    // SIGTERM: the survivor hands its partitions back and ends cleanly.
    let pid = first.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let limit = Instant::now() + Duration::from_secs(60);
    while first.try_wait().unwrap().is_none() {
        assert!(Instant::now() < limit, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(first.wait().unwrap().success(), "{}", weir_log(a.path()));
    let summary = summary(a.path());
    assert!(
        summary["errors"].as_object().unwrap().is_empty(),
        "{summary}"
    );
    assert_eq!(
        summary["outputs"]["late"].as_u64().unwrap_or(0),
        0,
        "{summary}"
    );

    eprintln!("the surviving process's log:\n{}", weir_log(a.path()));
    let alerts = broker.read_all("alerts");
    assert_reference_without_duplicates(&alerts, &reference);
}

#[test]
fn a_bounded_group_run_ends_in_every_process_once_every_partition_is_finished() {
    let broker = Broker::start();
    broker.create_topic("transactions", 4);
    broker.create_topic("alerts", 2);
    const EVENTS: u64 = 200_000;
    produce_w2(&broker, "transactions", EVENTS);
    let shared = tempfile::tempdir().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut children = Vec::new();
    for dir in &dirs {
        let spec = group_spec(&broker.brokers(), shared.path(), true);
        std::fs::write(dir.path().join("pipeline.toml"), spec).unwrap();
        children.push(weir_logging_to_file(dir.path()));
    }
    let limit = Instant::now() + Duration::from_secs(180);
    for (child, dir) in children.iter_mut().zip(&dirs) {
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < limit, "no end:\n{}", weir_log(dir.path()));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(child.wait().unwrap().success(), "{}", weir_log(dir.path()));
    }
    // Between them, every event once (a partition handed over at a
    // rebalance resumes from its checkpoint: its replayed tail counts twice).
    let events: u64 = dirs
        .iter()
        .map(|d| summary(d.path())["events_in"].as_u64().unwrap())
        .sum();
    assert!(events >= EVENTS, "{events}");
    // The summaries name the partitions each process ran: all four between them.
    let mut partitions: Vec<String> = dirs
        .iter()
        .flat_map(|d| {
            let summary = summary(d.path());
            summary["partitions"]
                .as_array()
                .unwrap_or_else(|| panic!("no partitions in {summary}"))
                .iter()
                .map(|p| p["partition"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    assert_eq!(
        partitions,
        [
            "transactions/0",
            "transactions/1",
            "transactions/2",
            "transactions/3"
        ]
    );
    let alerts = broker.read_all("alerts");
    assert_eq!(
        sorted_alerts(without_duplicates(&alerts)),
        reference_alerts(EVENTS)
    );
}
