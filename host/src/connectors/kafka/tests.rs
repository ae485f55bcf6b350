//! The source and sink against librdkafka's mock cluster (in-process, no
//! broker to run). The real broker is tested end to end in tests/e2e/kafka.rs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::*;
use crate::connectors::{
    Origin, OutputRecord, Sink, SinkContext, SinkState, Source, SourceRecord, SplitPosition,
};
use crate::spec::{KafkaSinkSpec, KafkaSourceSpec, KafkaStart};

fn source_spec(brokers: &str, topic: &str) -> KafkaSourceSpec {
    KafkaSourceSpec {
        brokers: brokers.to_owned(),
        topics: vec![topic.to_owned()],
        group: "weir-test".into(),
        start: KafkaStart::Earliest,
        bounded: true,
        resume_overlap: 0,
        properties: BTreeMap::new(),
        scale_out: None,
        only_partition: None,
    }
}

fn sink(brokers: &str, topic: &str, splits: &[&str]) -> KafkaSink {
    let spec = KafkaSinkSpec {
        output: "alerts".into(),
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        exactly_once: false,
        properties: BTreeMap::new(),
    };
    let context = SinkContext {
        pipeline: "p".into(),
        splits: splits.iter().map(|s| s.to_string()).collect(),
    };
    KafkaSink::open(&spec, &context, None).unwrap()
}

/// Writes the values `0..n` (keyed by themselves if `keyed`) to `topic`
/// through a sink, and waits until they are delivered.
fn produce(brokers: &str, topic: &str, n: u64, keyed: bool) {
    let mut sink = sink(brokers, topic, &[]);
    let records: Vec<OutputRecord> = (0..n)
        .map(|i| OutputRecord {
            key: keyed.then(|| i.to_string().into_bytes()),
            value: i.to_string().into_bytes(),
            timestamp: None,
            origin: Origin::Unknown,
        })
        .collect();
    sink.write(&records).unwrap();
    sink.flush().unwrap();
}

/// Reads until the source ends (bounded), within a time limit.
fn read_all(source: &mut KafkaSource) -> Vec<SourceRecord> {
    let mut out = Vec::new();
    let start = Instant::now();
    loop {
        let more = source.read_batch(&mut out, 1024).unwrap();
        if !more {
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bounded source did not end; read {}",
            out.len()
        );
        source.wait_for_input(Duration::from_millis(20));
    }
}

fn header<'a>(record: &'a SourceRecord, name: &str) -> &'a str {
    let (_, value) = record
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no header {name}"));
    std::str::from_utf8(value).unwrap()
}

#[test]
fn what_the_sink_writes_the_bounded_source_reads_back_with_keys_headers_and_offsets() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut sink = sink(&brokers, "out", &["in/0"]);
    let records: Vec<OutputRecord> = (0..20u64)
        .map(|i| OutputRecord {
            key: Some(format!("user-{}", i % 5).into_bytes()),
            value: format!("{{\"n\":{i}}}").into_bytes(),
            timestamp: Some(1_700_000_000_000 + i as i64),
            origin: Origin::Record {
                split: 0,
                offset: i,
                index: 0,
            },
        })
        .collect();
    sink.write(&records).unwrap();
    let state = sink.pre_commit(7).unwrap();
    assert_eq!(
        state,
        Some(SinkState::Kafka(KafkaSinkState { checkpoint: 7 }))
    );

    let mut source = KafkaSource::open(&source_spec(&brokers, "out")).unwrap();
    assert_eq!(source.splits(), 2);
    assert_eq!(source.split_names(), ["out/0", "out/1"]);
    let read = read_all(&mut source);
    assert_eq!(read.len(), 20);
    let mut finished = Vec::new();
    source.take_finished_splits(&mut finished);
    finished.sort_unstable();
    assert_eq!(finished, [0, 1]);
    // One key, one partition; per partition, in the order written.
    for key in 0..5 {
        let key = format!("user-{key}").into_bytes();
        let of_key: Vec<&SourceRecord> = read
            .iter()
            .filter(|r| r.key.as_ref() == Some(&key))
            .collect();
        assert_eq!(of_key.len(), 4);
        assert!(of_key.iter().all(|r| r.split == of_key[0].split));
        assert!(of_key.windows(2).all(|w| w[0].offset < w[1].offset));
    }
    let first = read.iter().find(|r| r.value == b"{\"n\":0}").unwrap();
    assert_eq!(first.timestamp, Some(1_700_000_000_000));
    assert_eq!(header(first, headers::ORIGIN), "in/0@0#0");
    assert_eq!(header(first, headers::PIPELINE), "p");
    assert_eq!(header(first, headers::OUTPUT), "alerts");
    assert_eq!(header(first, headers::EPOCH), "1");
    let total: u64 = source.position().iter().map(|p| p.offset).sum();
    assert_eq!(total, 20);
}

#[test]
fn a_seek_rewinds_to_a_position_and_a_completed_checkpoint_commits_it() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("in", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "in", 300, true);

    let mut source = KafkaSource::open(&source_spec(&brokers, "in")).unwrap();
    let mut first = Vec::new();
    let start = Instant::now();
    while first.len() < 100 && start.elapsed() < Duration::from_secs(30) {
        let left = 100 - first.len();
        source.read_batch(&mut first, left).unwrap();
        source.wait_for_input(Duration::from_millis(20));
    }
    assert_eq!(first.len(), 100);
    let position = source.position();
    let rest = read_all(&mut source);
    assert_eq!(first.len() + rest.len(), 300);

    // A new source (a restart) resumes at the position: exactly the rest,
    // also when it fetches again from before it (and skips what it has).
    let overlapping = KafkaSourceSpec {
        resume_overlap: 40,
        ..source_spec(&brokers, "in")
    };
    let mut again = KafkaSource::open(&overlapping).unwrap();
    again.seek(&position).unwrap();
    let mut replayed: Vec<Vec<u8>> = read_all(&mut again).into_iter().map(|r| r.value).collect();
    let mut expected: Vec<Vec<u8>> = rest.into_iter().map(|r| r.value).collect();
    replayed.sort();
    expected.sort();
    assert_eq!(replayed, expected);

    // The group sees the committed offsets (for lag tools).
    again.checkpoint_complete(&position).unwrap();
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "weir-test")
        .create()
        .unwrap();
    let mut asked = TopicPartitionList::new();
    asked.add_partition_range("in", 0, 2);
    let start = Instant::now();
    let committed = loop {
        // Serve the asynchronous commit.
        let _ = again.read_batch(&mut Vec::new(), 0);
        let found = probe
            .committed_offsets(asked.clone(), Duration::from_secs(5))
            .unwrap();
        let offsets: Vec<Offset> = found.elements().iter().map(|e| e.offset()).collect();
        if offsets.iter().all(|o| matches!(o, Offset::Offset(_)))
            || start.elapsed() > Duration::from_secs(20)
        {
            break offsets;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let expected: Vec<Offset> = position
        .iter()
        .map(|p| Offset::Offset(p.offset as i64))
        .collect();
    assert_eq!(committed, expected);
}

#[test]
fn a_position_from_other_topics_is_refused() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("a", 1, 1).unwrap();
    let mut source = KafkaSource::open(&source_spec(&cluster.bootstrap_servers(), "a")).unwrap();
    let err = source
        .seek(&vec![crate::connectors::SplitPosition {
            split: "b/0".into(),
            offset: 3,
        }])
        .unwrap_err()
        .to_string();
    assert!(err.contains("b/0") && err.contains("a/0"), "{err}");
}

#[test]
fn a_missing_topic_fails_the_open_with_its_name() {
    let cluster = MockCluster::new(1).unwrap();
    let err = KafkaSource::open(&source_spec(&cluster.bootstrap_servers(), "nope"))
        .err()
        .expect("no such topic")
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn a_bounded_source_over_an_empty_partition_ends() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("sparse", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let spec = KafkaSinkSpec {
        output: "main".into(),
        brokers: brokers.clone(),
        topic: "sparse".into(),
        exactly_once: false,
        // Everything to partition 0 (no key: one partition per batch).
        properties: BTreeMap::from([("sticky.partitioning.linger.ms".into(), "100000".into())]),
    };
    let mut sink = KafkaSink::open(&spec, &SinkContext::default(), None).unwrap();
    let records: Vec<OutputRecord> = (0..10u64)
        .map(|i| OutputRecord {
            key: None,
            value: i.to_string().into_bytes(),
            timestamp: None,
            origin: Origin::Unknown,
        })
        .collect();
    sink.write(&records).unwrap();
    sink.flush().unwrap();
    let mut source = KafkaSource::open(&source_spec(&brokers, "sparse")).unwrap();
    assert_eq!(read_all(&mut source).len(), 10);
    let mut finished = Vec::new();
    source.take_finished_splits(&mut finished);
    finished.sort_unstable();
    assert_eq!(finished, [0, 1, 2]);
}

#[test]
fn a_failed_delivery_fails_the_checkpoint_and_the_writes_after_it() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 1, 1).unwrap();
    let mut sink = sink(&cluster.bootstrap_servers(), "out", &[]);
    // The broker refuses the next produce requests for good.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 20],
    );
    let record = OutputRecord {
        key: None,
        value: b"{}".to_vec(),
        timestamp: None,
        origin: Origin::Unknown,
    };
    sink.write(std::slice::from_ref(&record)).unwrap();
    let err = sink.pre_commit(1).unwrap_err().to_string();
    assert!(err.contains("could not be written to topic out"), "{err}");
    let err = sink.write(&[record]).unwrap_err().to_string();
    assert!(err.contains("could not be written"), "{err}");
}

#[test]
fn a_header_name_that_is_not_utf8_is_read_lossily_instead_of_failing_the_source() {
    use rdkafka::message::OwnedHeaders;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("raw", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let headers = OwnedHeaders::new_with_capacity(1);
    let (name, value) = (b"bad\xffname", b"v");
    // rdkafka's API takes header names as &str; the wire takes any bytes.
    // SAFETY: an `OwnedHeaders` is a writable librdkafka header list (rdkafka
    // casts the native pointer to `&BorrowedHeaders` the same way), and both
    // buffers outlive the call, which copies them.
    let err = unsafe {
        let hdrs = std::ptr::from_ref(headers.as_borrowed())
            .cast::<rdkafka::bindings::rd_kafka_headers_t>()
            .cast_mut();
        rdkafka::bindings::rd_kafka_header_add(
            hdrs,
            name.as_ptr().cast(),
            name.len() as isize,
            value.as_ptr().cast(),
            value.len() as isize,
        )
    };
    assert_eq!(
        err,
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to("raw")
                .key("k")
                .payload("{}")
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut source = KafkaSource::open(&source_spec(&brokers, "raw")).unwrap();
    let read = read_all(&mut source);
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].headers,
        [("bad\u{fffd}name".to_owned(), b"v".to_vec())]
    );
}

#[test]
fn a_partition_that_lost_the_checkpointed_offset_fails_the_source_instead_of_skipping() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("short", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "short", 10, false);

    // The checkpoint says 50, the log ends at 10 (truncated, or recreated).
    let spec = KafkaSourceSpec {
        bounded: false,
        ..source_spec(&brokers, "short")
    };
    let mut source = KafkaSource::open(&spec).unwrap();
    source
        .seek(&vec![SplitPosition {
            split: "short/0".into(),
            offset: 50,
        }])
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let error = loop {
        match source.read_batch(&mut out, 100) {
            Err(e) => break e.to_string(),
            Ok(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no error; read {out:?}"
                );
                source.wait_for_input(Duration::from_millis(20));
            }
        }
    };
    assert!(out.is_empty(), "{out:?}");
    assert!(
        error.contains("short/0 went back from offset 50 to 0"),
        "{error}"
    );
}

#[test]
fn a_partition_the_checkpoint_does_not_know_is_read_from_its_oldest_record() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("grown", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, "grown", 40, true);

    // Restored from a checkpoint taken when the topic had one partition,
    // with `start = "latest"`: grown/1 is read whole, grown/0 from 0.
    let spec = KafkaSourceSpec {
        start: KafkaStart::Latest,
        ..source_spec(&brokers, "grown")
    };
    let mut source = KafkaSource::open(&spec).unwrap();
    source
        .seek(&vec![SplitPosition {
            split: "grown/0".into(),
            offset: 0,
        }])
        .unwrap();
    assert_eq!(read_all(&mut source).len(), 40);
}

/// What a client sends first to a plain TCP listener on loopback that
/// never answers: the first bytes of the connection.
fn first_bytes_sent(properties: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let reader = std::thread::spawn(move || {
        let began = Instant::now();
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(began.elapsed() < Duration::from_secs(10), "no connection");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).unwrap();
        buf.to_vec()
    });
    let user: BTreeMap<String, String> = properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let consumer: BaseConsumer = client_config(&addr, &user, &[("group.id", "weir-test")])
        .unwrap()
        .create(
            rdkafka::consumer::DefaultConsumerContext,
            "creating the consumer",
        )
        .unwrap();
    // Fails (nothing answers); the connection attempt is what counts.
    let _ = consumer.fetch_metadata(None, Duration::from_secs(2));
    reader.join().unwrap()
}

#[test]
fn the_built_librdkafka_speaks_tls_and_scram() {
    // A build without OpenSSL refuses these at configuration ("not
    // supported in this build").
    let hello = first_bytes_sent(&[
        ("security.protocol", "sasl_ssl"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "weir"),
        ("sasl.password", "not-used"),
        ("enable.ssl.certificate.verification", "false"),
    ]);
    // A TLS record of type handshake (22), version 3.x: a ClientHello.
    assert_eq!(hello[0], 22, "{hello:?}");
    assert_eq!(hello[1], 3, "{hello:?}");
}

#[test]
fn a_property_read_from_the_environment_is_set_and_never_shown_in_an_error() {
    // CARGO_MANIFEST_DIR is set in the environment of every `cargo test`.
    let secret = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let user = BTreeMap::from([
        ("security.protocol".into(), "sasl_plaintext".into()),
        ("sasl.mechanism.env".into(), "CARGO_MANIFEST_DIR".into()),
    ]);
    // librdkafka refuses the value, and its error quotes it
    // ("Unsupported SASL mechanism: <value>").
    let client = client_config("127.0.0.1:1", &user, &[("group.id", "weir-test")]).unwrap();
    let err = client
        .create::<_, BaseConsumer>(
            rdkafka::consumer::DefaultConsumerContext,
            "creating the consumer",
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("SASL mechanism: <redacted>"), "{err}");
    assert!(!err.contains(&secret), "{err}");

    let user = BTreeMap::from([("sasl.password.env".into(), "WEIR_TEST_NO_SUCH_VAR".into())]);
    let Err(err) = client_config("127.0.0.1:1", &user, &[]) else {
        panic!("an unset variable must fail")
    };
    let err = err.to_string();
    assert!(
        err.contains("sasl.password.env") && err.contains("WEIR_TEST_NO_SUCH_VAR"),
        "{err}"
    );
}
