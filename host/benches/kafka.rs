//! Kafka → Weir → Kafka throughput through a real broker (tansu, installed
//! by `scripts/kafka.sh install`), against what the broker and a bare
//! consume-produce loop sustain on the same machine.
//!
//! `cargo bench -p weir --bench kafka` prints the figures and rewrites the
//! Kafka block of BENCHMARKS.md. `WEIR_BENCH_KAFKA_EVENTS` overrides N
//! (default 1 000 000). Rows:
//! - produce only: N W2 events (JSON, keyed by user) into a 4-partition
//!   topic through an idempotent producer;
//! - consume only: the same N read back by one consumer;
//! - bare copy loop: consume the N and produce each to another topic (one
//!   consumer, one idempotent producer, one thread): the floor any
//!   Kafka-to-Kafka processor pays;
//! - Weir passthrough: the same copy through a pipeline (source, plugin
//!   boundary, sink, checkpoints every second);
//! - Weir W2 at parallelism 1 and 2: the fraud rule, alerts to a topic.

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weir::connectors::{generator_record, write_generator_value};
use weir::engine::Engine;
use weir::runtime::{Pipeline, RunOptions};
use weir::spec::PipelineSpec;

const PARTITIONS: i32 = 4;

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = Command::new(repo.join("scripts/kafka.sh"))
            .arg("path")
            .output()
            .expect("scripts/kafka.sh path");
        let tansu = PathBuf::from(String::from_utf8(path.stdout).unwrap().trim());
        assert!(
            tansu.is_file(),
            "tansu is not installed at {}: run scripts/kafka.sh install",
            tansu.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting tansu");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker {
            child,
            port,
            _dir: dir,
        }
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers());
        config
    }

    fn create_topic(&self, name: &str) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let topic = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1));
        let results = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        for result in results {
            result.unwrap();
        }
    }

    fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        self.config()
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("queue.buffering.max.messages", "500000")
            .create()
            .unwrap()
    }

    /// A consumer of every partition of `topic` from its start.
    fn consumer(&self, topic: &str) -> BaseConsumer {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", "bench")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        consumer
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: &[u8],
) {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
}

struct Row {
    name: String,
    events: u64,
    secs: f64,
    /// CPU time of this process (the broker's is not in it).
    cpu_secs: f64,
    outputs: u64,
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f`, measuring wall and CPU time.
fn timed(f: impl FnOnce() -> u64) -> (f64, f64, u64) {
    let cpu = cpu_seconds();
    let start = Instant::now();
    let outputs = f();
    (start.elapsed().as_secs_f64(), cpu_seconds() - cpu, outputs)
}

fn produce_only(broker: &Broker, events: u64) -> Row {
    broker.create_topic("transactions");
    let producer = broker.producer();
    let (secs, cpu_secs, outputs) = timed(|| {
        let mut value = Vec::with_capacity(64);
        for i in 0..events {
            value.clear();
            write_generator_value(i, &mut value);
            send(
                &producer,
                "transactions",
                generator_record(i).0.to_string().as_bytes(),
                &value,
            );
        }
        producer.flush(Duration::from_secs(300)).unwrap();
        events
    });
    Row {
        name: "broker: produce only (1 idempotent producer)".into(),
        events,
        secs,
        cpu_secs,
        outputs,
    }
}

/// Reads `events` records of `topic`, calling `each` with key and value.
fn consume(broker: &Broker, topic: &str, events: u64, mut each: impl FnMut(&[u8], &[u8])) {
    let consumer = broker.consumer(topic);
    let mut read = 0;
    let start = Instant::now();
    while read < events {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "consumer stuck at {read}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            each(m.key().unwrap_or_default(), m.payload().unwrap_or_default());
            read += 1;
        }
    }
}

fn consume_only(broker: &Broker, events: u64) -> Row {
    let (secs, cpu_secs, outputs) = timed(|| {
        consume(broker, "transactions", events, |_, _| {});
        0
    });
    Row {
        name: "broker: consume only (1 consumer)".into(),
        events,
        secs,
        cpu_secs,
        outputs,
    }
}

fn copy_loop(broker: &Broker, events: u64) -> Row {
    broker.create_topic("copy");
    let producer = broker.producer();
    let (secs, cpu_secs, outputs) = timed(|| {
        consume(broker, "transactions", events, |key, value| {
            send(&producer, "copy", key, value);
        });
        producer.flush(Duration::from_secs(300)).unwrap();
        events
    });
    Row {
        name: "bare consume→produce loop (1 thread)".into(),
        events,
        secs,
        cpu_secs,
        outputs,
    }
}

fn run_weir(
    engine: &Engine,
    broker: &Broker,
    workload: &str,
    parallelism: u32,
    events: u64,
) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("{}-p{parallelism}", workload.to_lowercase());
    broker.create_topic(&out);
    let (wasm, event_time, output) = match workload {
        "passthrough" => (weir_test_artifacts::PASSTHROUGH, "", "main"),
        _ => (
            weir_test_artifacts::FRAUD_DETECTOR,
            "[event_time]\nfield = \"/ts\"\n",
            "alerts",
        ),
    };
    let spec = PipelineSpec::from_toml(&format!(
        r#"
name = "bench-{out}"
parallelism = {parallelism}
[source]
kind = "kafka"
brokers = "{brokers}"
topics = ["transactions"]
group = "bench-{out}"
bounded = true
{event_time}
[key_by]
field = "record-key"
[plugin]
wasm = "{wasm}"
config = {config}
[checkpoint]
interval_ms = 1000
dir = "{checkpoints}"
[[sink]]
output = "{output}"
kind = "kafka"
brokers = "{brokers}"
topic = "{out}"
"#,
        brokers = broker.brokers(),
        config = if workload == "passthrough" {
            "{}"
        } else {
            "{ threshold = 5, window_ms = 60000 }"
        },
        checkpoints = dir.path().join("checkpoints").display(),
    ))
    .expect("benchmark spec");
    let component = std::fs::read(wasm).unwrap();
    let cpu = cpu_seconds();
    let started = Instant::now();
    let pipeline =
        Pipeline::start(engine, &spec, &component, started, RunOptions::default()).expect("start");
    let summary = pipeline.run(|_, _| {}).expect("run");
    assert_eq!(summary.events_in, events);
    Row {
        name: format!("Weir {workload}, parallelism {parallelism}"),
        events,
        // From the start: opening the consumer and producer is part of it.
        secs: started.elapsed().as_secs_f64(),
        cpu_secs: cpu_seconds() - cpu,
        outputs: summary.outputs.iter().map(|(_, n, _)| n).sum(),
    }
}

fn main() {
    let events: u64 = std::env::var("WEIR_BENCH_KAFKA_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let scratch = tempfile::tempdir().unwrap();
    let engine = Engine::new(Some(scratch.path().join("cache"))).unwrap();
    let broker = Broker::start();
    let mut rows = vec![produce_only(&broker, events)];
    rows.push(consume_only(&broker, events));
    rows.push(copy_loop(&broker, events));
    rows.push(run_weir(&engine, &broker, "passthrough", 1, events));
    rows.push(run_weir(&engine, &broker, "W2", 1, events));
    rows.push(run_weir(&engine, &broker, "W2", 2, events));
    let copy = rows[2].events as f64 / rows[2].secs;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Produced by `cargo bench -p weir --bench kafka` (N = {events} W2 events in a {PARTITIONS}-partition topic of a tansu 0.6 broker on 127.0.0.1, memory storage; one run each).\n"
    );
    let _ = writeln!(
        md,
        "| run | events/s | client CPU ns/event | outputs | time / bare loop's |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for row in &rows {
        let rate = row.events as f64 / row.secs;
        let _ = writeln!(
            md,
            "| {} | {:.0} k | {:.0} | {} | {:.2}× |",
            row.name,
            rate / 1e3,
            row.cpu_secs * 1e9 / row.events as f64,
            row.outputs,
            copy / rate
        );
    }
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    let (start, end) = ("<!-- kafka-bench:start -->", "<!-- kafka-bench:end -->");
    let updated = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{start}\n{md}{}", &old[..a], &old[b..]),
        _ => format!("{old}\n## Kafka\n\n{start}\n{md}{end}\n"),
    };
    std::fs::write(&out, updated).unwrap();
    eprintln!("wrote {}", out.display());
}
