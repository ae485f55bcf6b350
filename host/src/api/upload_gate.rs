//! Admission of plugin uploads to the compiler: uploads of one digest run
//! one at a time (the second finds the first one's result stored), uploads
//! of different digests compile side by side, at most `MAX_COMPILES` at once
//! (compiling a large component takes minutes and a core or more).

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

/// Components compiled at the same time.
pub const MAX_COMPILES: usize = 2;

#[derive(Debug, Default)]
struct Admitted {
    digests: HashSet<String>,
    compiling: usize,
}

#[derive(Debug, Default)]
pub struct UploadGate {
    state: Mutex<Admitted>,
    changed: Condvar,
}

/// Holds a digest until dropped; `compile` then takes a compile slot.
pub struct DigestTurn<'a> {
    gate: &'a UploadGate,
    digest: String,
    compiling: bool,
}

impl UploadGate {
    /// Waits until no other upload of `digest` is under way, then holds it.
    pub fn digest(&self, digest: &str) -> DigestTurn<'_> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.digests.contains(digest) {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.digests.insert(digest.to_owned());
        DigestTurn {
            gate: self,
            digest: digest.to_owned(),
            compiling: false,
        }
    }
}

impl DigestTurn<'_> {
    /// Waits for one of the `MAX_COMPILES` compile slots (released on drop).
    pub fn compile_slot(&mut self) {
        if self.compiling {
            return;
        }
        let mut state = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.compiling >= MAX_COMPILES {
            state = self
                .gate
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.compiling += 1;
        self.compiling = true;
    }
}

impl Drop for DigestTurn<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        state.digests.remove(&self.digest);
        if self.compiling {
            state.compiling -= 1;
        }
        drop(state);
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn different_digests_compile_side_by_side_up_to_the_bound() {
        let gate = Arc::new(UploadGate::default());
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    let mut turn = gate.digest(&format!("d{i}"));
                    turn.compile_slot();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), MAX_COMPILES);
    }

    #[test]
    fn one_digest_is_uploaded_once_at_a_time() {
        let gate = Arc::new(UploadGate::default());
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    let _turn = gate.digest("same");
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
