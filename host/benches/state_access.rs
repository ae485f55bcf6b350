//! W2's state accesses alone, without the plugin: per event, read and write
//! the user's window; per fired timer (two in three events), read and clear
//! the window of the user seen 60 000 events earlier. Isolates what the
//! state backends cost per event from the rest of the pipeline.
//!
//! `cargo bench -p weir --bench state_access` prints ns per event for the
//! memory and the RocksDB backend (N = 5 000 000 over 100 000 users, best of
//! 3 runs; `WEIR_BENCH_EVENTS` overrides N).

use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weir::connectors::generator_record;
use weir::runtime::key_groups::key_group;
use weir::state::{KeyedStateBackend, MemoryBackend, RocksDbBackend, RocksDbOptions};

/// The timer of a window fires 60 s of event time (60 000 events) later.
const WINDOW_EVENTS: usize = 60_000;

fn run(backend: &mut dyn KeyedStateBackend, keys: &[Vec<u8>]) -> f64 {
    let mut out = Vec::new();
    let began = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        let kg = key_group(key);
        out.clear();
        backend.value_get_into(kg, 0, key, &mut out).unwrap();
        // A window's encoded size (postcard: start and count).
        backend.value_set(kg, 0, key, &[7; 7]).unwrap();
        if i >= WINDOW_EVENTS && i % 3 != 0 {
            let fired = &keys[i - WINDOW_EVENTS];
            let kg = key_group(fired);
            out.clear();
            backend.value_get_into(kg, 0, fired, &mut out).unwrap();
            backend.value_clear(kg, 0, fired).unwrap();
        }
    }
    began.elapsed().as_nanos() as f64 / keys.len() as f64
}

fn main() {
    let events: usize = std::env::var("WEIR_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000_000);
    let keys: Vec<Vec<u8>> = (0..events as u64)
        .map(|i| generator_record(i).0.to_string().into_bytes())
        .collect();
    let best = |mut one: Box<dyn FnMut() -> f64>| (0..3).map(|_| one()).fold(f64::MAX, f64::min);
    let memory = best(Box::new(|| run(&mut MemoryBackend::default(), &keys)));
    let rocksdb = best(Box::new(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = RocksDbBackend::open(dir.path(), RocksDbOptions::default()).unwrap();
        run(&mut backend, &keys)
    }));
    println!("W2 state accesses, N = {events}, best of 3:");
    println!("  memory   {memory:.0} ns per event");
    println!("  rocksdb  {rocksdb:.0} ns per event");
}
