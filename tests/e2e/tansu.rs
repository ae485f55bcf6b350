//! A real Kafka-protocol broker for the Kafka tests: tansu, installed by
//! `scripts/kafka.sh install` (which `scripts/setup.sh` runs), started here
//! on a free port of 127.0.0.1 and killed when the test ends.
//!
//! A missing broker fails the test with what to run: the Kafka tests are
//! never skipped silently.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tansu binary `scripts/kafka.sh` installs.
fn tansu_binary() -> PathBuf {
    let output = Command::new(repo().join("scripts/kafka.sh"))
        .arg("path")
        .output()
        .expect("running scripts/kafka.sh path");
    assert!(output.status.success(), "scripts/kafka.sh path failed");
    let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    assert!(
        path.is_file(),
        "the Kafka tests need the tansu broker, which is not installed at {}: \
         run `scripts/kafka.sh install` (or `scripts/setup.sh`)",
        path.display()
    );
    path
}

/// A broker process on 127.0.0.1.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    storage: String,
    log: PathBuf,
    /// The broker's working directory: its log (and sqlite store).
    dir: tempfile::TempDir,
}

impl Broker {
    /// A broker that keeps its data in memory.
    pub fn start() -> Broker {
        Self::with_storage(|_| "memory://tansu/".to_owned())
    }

    /// A broker whose data survives a restart (a sqlite file).
    pub fn durable() -> Broker {
        // Relative to the broker's directory: tansu reads the URL's path
        // without its leading slash.
        Self::with_storage(|_| "sqlite://tansu.db".to_owned())
    }

    fn with_storage(storage: impl FnOnce(&Path) -> String) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut broker = Broker {
            child: None,
            port,
            storage: storage(dir.path()),
            log: dir.path().join("tansu.log"),
            dir,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(tansu_binary())
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tansu exited ({status}): {}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not listen within 30 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub fn restart(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        self.spawn();
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers());
        config
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures_block_on(admin.create_topics([&topic], &options)).unwrap();
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
        // Wait until the metadata shows every partition.
        let consumer: BaseConsumer = self.config().create().unwrap();
        let start = Instant::now();
        loop {
            let metadata = consumer
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .unwrap();
            let found = metadata.topics().iter().find(|t| t.name() == name);
            if found.is_some_and(|t| t.partitions().len() == partitions as usize) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "topic {name} never appeared"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An idempotent producer with the default (murmur2, as Java's) partitioner.
    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        self.config()
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "500000")
            .create()
            .unwrap()
    }

    /// Writes `records` (key, value) and waits until all are acknowledged.
    /// (In batches of up to 10 000 records: tansu 0.6 then answers
    /// ListOffsets(latest) short of the end, which the bounded source must
    /// see through.)
    pub fn produce(&self, topic: &str, records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        let producer = self.producer();
        for (key, value) in records {
            send(&producer, topic, &key, &value);
        }
        producer.flush(Duration::from_secs(120)).unwrap();
        assert_eq!(
            producer.in_flight_count(),
            0,
            "records to {topic} were not acknowledged"
        );
    }

    /// Everything in `topic`. The end is where the log ends by ListOffsets
    /// and then no record came for two seconds (tansu's ListOffsets may
    /// answer short of the end; see `produce`).
    pub fn read_all(&self, topic: &str) -> Vec<ReadRecord> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", "weir-e2e-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut ends = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            ends.push((p, high));
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .unwrap();
        }
        let total: i64 = ends.iter().map(|(_, high)| high).sum::<i64>();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut next: Vec<i64> = partitions.iter().map(|_| 0).collect();
        let start = Instant::now();
        let mut last_record = Instant::now();
        while ends.iter().zip(&next).any(|((_, high), next)| next < high)
            || last_record.elapsed() < Duration::from_secs(2)
        {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "reading {topic}: {} of about {total} records after 120 s",
                out.len()
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last_record = Instant::now();
                    let i = partitions.iter().position(|&p| p == m.partition()).unwrap();
                    next[i] = m.offset() + 1;
                    let headers = m.headers().map_or_else(Vec::new, |h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    });
                    out.push(ReadRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: String::from_utf8_lossy(m.payload().unwrap_or_default())
                            .into_owned(),
                        headers,
                    });
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    /// The offsets `group` has committed for `topic`'s partitions 0..n.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_range(topic, 0, partitions - 1);
        let found = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(|p| {
                found
                    .find_partition(topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

impl ReadRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
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
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => panic!("producing to {topic}: {e}"),
        }
    }
}

/// Runs a future to completion on a throwaway runtime (the admin API is
/// asynchronous; these tests are not).
fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
