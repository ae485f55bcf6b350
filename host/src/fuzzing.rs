//! Entry points of the cargo-fuzz targets in `fuzz/` (run by
//! `scripts/fuzz.sh`): each feeds arbitrary bytes to one of the host's
//! readers of untrusted input and asserts what must hold whatever the bytes
//! are. Hidden, and not an API: nothing but the fuzz targets and the tests
//! below call it; the readers themselves are unchanged.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::checkpoint::{BackendConfig, LoadedCheckpoint, read_manifest, restore_subtask};
use crate::engine::Changes;
use crate::engine::bindings::{BatchResult, Failure};
use crate::runtime::json_field::{JsonPointer, key_bytes, parse_i64};
use crate::spec::{PipelineSpec, StateBackendKind};

/// Separates the files of a checkpoint input: `MANIFEST.json`, then
/// `subtask-0/state.bin`, then `subtask-0/timers.bin`.
pub const FILE_SEPARATOR: &[u8] = b"\n--weir-fuzz-file--\n";

/// The spec parser: TOML and JSON, parse and validate. A spec that validates
/// must answer its key and time sources (they `expect` a validated spec) and
/// must validate again from the JSON the server stores (`pipeline.json`),
/// as the same spec.
pub fn spec(data: &[u8]) {
    let mut accepted = Vec::new();
    if let Ok(spec) = PipelineSpec::from_json(data) {
        accepted.push(spec);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(spec) = PipelineSpec::from_toml(text)
    {
        accepted.push(spec);
    }
    for spec in accepted {
        let _ = spec.timestamp_source();
        let _ = spec.key_source();
        let stored = serde_json::to_value(&spec).expect("a spec serializes");
        let bytes = serde_json::to_vec(&stored).expect("a JSON value serializes");
        let again = PipelineSpec::from_json(&bytes).unwrap_or_else(|e| {
            panic!("a valid spec no longer validates from its stored JSON: {e}\n{stored}")
        });
        assert_eq!(
            serde_json::to_value(&again).expect("a spec serializes"),
            stored,
            "a spec changed through its stored JSON"
        );
    }
}

/// The plugin-result decoder: the first two bytes (little-endian) say how
/// many of the rest are `changes`, the others are `bytes`. It must accept
/// exactly the results a reference reading of the WIT contract accepts, and
/// hand out each change's fields, in order, as exactly the bytes given.
pub fn batch_result(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (changes, bytes) = rest.split_at(split);
    let expected = reference_changes(changes, bytes.len());
    let result = BatchResult {
        bytes: bytes.to_vec(),
        changes: changes.to_vec(),
        failures: vec![Failure {
            item: u32::from(u16::from_le_bytes(*head)),
            reason: "rejected".into(),
        }],
    };
    let decoded = Changes::new(result);
    let (Some(expected), Ok(decoded)) = (&expected, &decoded) else {
        assert!(
            expected.is_none() && decoded.is_err(),
            "the decoder and the contract disagree on a result: reference {expected:?}, decoder {:?}",
            decoded.as_ref().err()
        );
        return;
    };
    let mut concatenated = Vec::with_capacity(bytes.len());
    let mut count = 0;
    for (change, record) in decoded.iter().zip(expected) {
        assert_eq!(
            (change.item, change.state, change.timestamp),
            (record.item, record.state, record.timestamp)
        );
        let fields = [change.name, change.key, change.value];
        for (field, len) in fields.into_iter().zip(record.lens) {
            assert_eq!(field.map(<[u8]>::len), usize::try_from(len).ok());
            concatenated.extend_from_slice(field.unwrap_or_default());
        }
        count += 1;
    }
    assert_eq!(count, expected.len(), "every change is handed out");
    assert_eq!(concatenated, bytes, "the fields are the bytes, in order");
    assert_eq!(decoded.failures().len(), 1, "failures pass through");
}

#[derive(Debug)]
struct ReferenceChange {
    item: u32,
    state: u32,
    timestamp: i64,
    lens: [i32; 3],
}

/// The WIT's `batch-result` rules, read straight off the comments of
/// `packed-change`: 32-byte records, an op below 10, a domain below 2, bytes
/// 6-7 zero, lengths of -1 (absent) or more, adding up to the bytes.
fn reference_changes(changes: &[u8], bytes: usize) -> Option<Vec<ReferenceChange>> {
    const CHANGE_SIZE: usize = 32;
    if !changes.len().is_multiple_of(CHANGE_SIZE) {
        return None;
    }
    let u32_at = |r: &[u8], at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
    let mut total: i128 = 0;
    let mut out = Vec::new();
    for r in changes.chunks(CHANGE_SIZE) {
        if r[4] >= 10 || r[5] >= 2 || r[6] != 0 || r[7] != 0 {
            return None;
        }
        let lens = [12, 16, 20].map(|at| u32_at(r, at) as i32);
        if lens.iter().any(|&len| len < -1) {
            return None;
        }
        total += lens.iter().map(|&len| i128::from(len.max(0))).sum::<i128>();
        out.push(ReferenceChange {
            item: u32_at(r, 0),
            state: u32_at(r, 8),
            timestamp: i64::from_le_bytes(r[24..32].try_into().unwrap()),
            lens,
        });
    }
    (total == bytes as i128).then_some(out)
}

/// The JSON field scanner: a pointer on the first line, the document after
/// it. Where serde_json accepts the whole document (without duplicate member
/// names, where the two differ by design), the scanner must find the same
/// value, and its integer and key readings must agree with plain ones.
pub fn json_field(data: &[u8]) {
    let _ = parse_i64(data);
    let _ = key_bytes(data);
    let (pointer, doc) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    let Ok(pointer) = std::str::from_utf8(pointer) else {
        return;
    };
    let Ok(parsed) = JsonPointer::parse(pointer) else {
        return;
    };
    let found = parsed.lookup(doc);
    if let Ok(Some(raw)) = found {
        assert_eq!(parse_i64(raw), reference_i64(raw), "parse_i64({raw:?})");
        if let Ok(serde_json::Value::String(s)) = serde_json::from_slice(raw) {
            assert_eq!(&*key_bytes(raw), s.as_bytes(), "key_bytes({raw:?})");
        }
    }
    let Ok(Strict(whole)) = serde_json::from_slice::<Strict>(doc) else {
        return;
    };
    let found = found.unwrap_or_else(|e| panic!("valid JSON, yet the scanner says {e}"));
    let expected = whole.pointer(pointer);
    let got = found.map(|raw| {
        serde_json::from_slice::<serde_json::Value>(raw)
            .unwrap_or_else(|e| panic!("the scanner found {raw:?}, which is not JSON: {e}"))
    });
    assert_eq!(got.as_ref(), expected, "pointer {pointer:?}");
}

/// A JSON integer or a string holding exactly one, by the standard library.
fn reference_i64(raw: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(raw).ok()?;
    let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if raw.len() >= 2 => inner,
        _ => text,
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'));
    if plain { text.parse().ok() } else { None }
}

/// A JSON value that refuses duplicate member names.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if members.insert(name, value).is_some() {
                return Err(de::Error::custom("duplicate member name"));
            }
        }
        Ok(members.into())
    }
}

/// The checkpoint reader: the input is a manifest, a portable state file and
/// a timer file (split at [`FILE_SEPARATOR`]), laid out as subtask 0 of a
/// checkpoint. The manifest's own CRC is written to match (the fuzzer is to
/// get past it, to what a restore trusts); then it is loaded, restored at
/// parallelism 1 and 2 into memory backends, and exported as a savepoint.
/// Every step may refuse; none may panic, hang or allocate what the files do
/// not hold. Returns how many subtask restores succeeded.
pub fn checkpoint(data: &[u8]) -> usize {
    let mut parts = split(data, FILE_SEPARATOR);
    let manifest = parts.next().unwrap_or_default();
    let state = parts.next().unwrap_or_default();
    let timers = parts.next().unwrap_or_default();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("chk");
    let write = |rel: &str, bytes: &[u8]| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    write("MANIFEST.json", manifest);
    write(
        "MANIFEST.json.crc32",
        format!("{:08x}\n", crc32fast::hash(manifest)).as_bytes(),
    );
    write("subtask-0/state.bin", state);
    write("subtask-0/timers.bin", timers);
    let Ok(manifest) = read_manifest(&dir) else {
        return 0;
    };
    // `read_manifest` refuses paths outside the checkpoint's directory;
    // RocksDB is not the reader tested here.
    if manifest
        .subtasks
        .iter()
        .any(|s| matches!(s.state, crate::checkpoint::StateFiles::Rocksdb { .. }))
    {
        return 0;
    }
    let _ = crate::checkpoint::load_checkpoint(&dir);
    let loaded = LoadedCheckpoint {
        dir: dir.clone(),
        manifest,
    };
    let mut restored = 0;
    for parallelism in 1..=2u32 {
        for index in 0..parallelism as usize {
            let config = BackendConfig {
                kind: StateBackendKind::Memory,
                dir: tmp.path().join("backend"),
                rocksdb: Default::default(),
            };
            if restore_subtask(&loaded, index, parallelism, &config).is_ok() {
                restored += 1;
            }
        }
    }
    let _ = crate::checkpoint::export_savepoint(&loaded, &tmp.path().join("savepoint"));
    restored
}

fn split<'a>(mut data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match data.windows(separator.len()).position(|w| w == separator) {
            Some(at) => {
                let part = &data[..at];
                data = &data[at + separator.len()..];
                Some(part)
            }
            None => {
                done = true;
                Some(data)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{
        FORMAT_VERSION, Manifest, PluginIdentity, SnapshotKind, SourceCheckpoint, write_subtask,
    };
    use crate::connectors::SplitPosition;
    use crate::runtime::timer_service::TimeDomain;
    use crate::runtime::timers::Timers;
    use crate::runtime::watermarks::WatermarkSnapshot;
    use crate::state::{KeyedStateBackend, MemoryBackend, StateCatalog, StateKind};

    fn seed_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(name)
    }

    fn seed(name: &str) -> Vec<u8> {
        let path = seed_path(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A checkpoint input as the real writer makes it: subtask 0 of 1, with
    /// value, map and list state and a timer in two key groups.
    fn checkpoint_input() -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        let mut backend = MemoryBackend::default();
        let mut catalog = StateCatalog::default();
        let value = catalog.declare("window", StateKind::Value).unwrap();
        let map = catalog.declare("seen", StateKind::Map).unwrap();
        let list = catalog.declare("events", StateKind::List).unwrap();
        let mut timers = Timers::default();
        for (kg, key) in [(3u16, &b"alice"[..]), (100, &b"bob"[..])] {
            backend.value_set(kg, value, key, b"{\"count\":2}").unwrap();
            backend
                .map_put(kg, map, key, b"m".to_vec(), b"1".to_vec())
                .unwrap();
            backend.list_append(kg, list, key, b"e1".to_vec()).unwrap();
            timers
                .register(TimeDomain::EventTime, kg, key, 60_000)
                .unwrap();
        }
        let subtask =
            write_subtask(tmp.path(), 0, 0..=127, &mut backend, &catalog, &mut timers).unwrap();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            id: 1,
            kind: SnapshotKind::Checkpoint,
            created_ms: 0,
            duration_ms: 0,
            size_bytes: 0,
            finished: false,
            pipeline: "p".into(),
            spec: serde_json::Value::Null,
            key_by: "/user_id".into(),
            plugin: PluginIdentity {
                digest: "d".into(),
                config: serde_json::Value::Null,
                state_version: 0,
            },
            source: SourceCheckpoint {
                position: vec![SplitPosition {
                    split: "f".into(),
                    offset: 10,
                }],
                records: 10,
                watermarks: WatermarkSnapshot {
                    watermark: 0,
                    split_max_timestamps: vec![0],
                },
            },
            subtasks: vec![subtask],
            sinks: Vec::new(),
            files: Vec::new(),
        };
        let mut input = serde_json::to_vec_pretty(&manifest).unwrap();
        for file in ["subtask-0/state.bin", "subtask-0/timers.bin"] {
            input.extend_from_slice(FILE_SEPARATOR);
            input.extend_from_slice(&std::fs::read(tmp.path().join(file)).unwrap());
        }
        input
    }

    #[test]
    fn the_checkpoint_seed_restores_at_both_parallelisms() {
        // The fuzzer starts from this seed: it must reach the restore, or
        // the target would only ever exercise the manifest's parser.
        // WEIR_WRITE_FUZZ_SEEDS=1 writes it anew after a format change.
        let path = seed_path("checkpoint/memory-subtask");
        if std::env::var_os("WEIR_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(&path, checkpoint_input()).unwrap();
        }
        assert_eq!(checkpoint(&checkpoint_input()), 3);
        assert_eq!(checkpoint(&seed("checkpoint/memory-subtask")), 3);
    }

    #[test]
    fn the_spec_seeds_are_valid_specs() {
        // Seeds the parser refuses would leave validation unexplored.
        for name in [
            "fraud.toml",
            "fraud-durable.toml",
            "kafka-fraud.toml",
            "live-swap.toml",
        ] {
            let text = String::from_utf8(seed(&format!("spec/{name}"))).unwrap();
            PipelineSpec::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            spec(text.as_bytes());
        }
        for name in ["fraud-durable.json", "kafka-fraud.json", "http.json"] {
            let json = seed(&format!("spec/{name}"));
            PipelineSpec::from_json(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
            spec(&json);
        }
    }

    #[test]
    fn the_json_field_seeds_find_their_field() {
        for name in ["nested", "array-index", "timestamp-string", "escaped-name"] {
            let input = seed(&format!("json_field/{name}"));
            let at = input.iter().position(|&b| b == b'\n').unwrap();
            let pointer = JsonPointer::parse(std::str::from_utf8(&input[..at]).unwrap()).unwrap();
            let found = pointer.lookup(&input[at + 1..]).unwrap();
            assert!(found.is_some(), "{name}");
            json_field(&input);
        }
    }

    #[test]
    fn the_batch_result_seeds_are_one_valid_one_malformed() {
        let decode = |name: &str| {
            let input = seed(&format!("batch_result/{name}"));
            batch_result(&input);
            let split = usize::from(u16::from_le_bytes([input[0], input[1]]));
            let (changes, bytes) = input[2..].split_at(split);
            reference_changes(changes, bytes.len()).map(|c| c.len())
        };
        assert_eq!(decode("two-changes"), Some(3));
        assert_eq!(decode("malformed"), None);
    }

    #[test]
    fn the_decoder_agrees_with_the_contract_on_a_bad_op_a_bad_domain_and_a_bad_length() {
        let mut record = [0u8; 32];
        record[12..24].copy_from_slice(&[0xff; 12]); // all three absent
        let input = |record: &[u8]| [&32u16.to_le_bytes()[..], record].concat();
        batch_result(&input(&record));
        for (at, byte) in [(4, 10), (5, 2), (6, 1), (15, 0x80)] {
            let mut bad = record;
            bad[at] = byte;
            batch_result(&input(&bad));
        }
    }
}
