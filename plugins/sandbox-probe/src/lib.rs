//! A test-only plugin for the host's sandbox tests: each event tells it to
//! misbehave in one way (spin, exhaust memory, panic, touch the filesystem)
//! so the host can show it contains the damage.

use serde::Deserialize;
use weir_sdk::{Context, Error, Event, Processor};

/// What an event asks the probe to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Emit `ok`.
    Ok,
    /// Spin forever (the host's fuel or epoch limit must stop it).
    Loop,
    /// Allocate and touch memory until the host's memory limit kills it.
    Alloc,
    /// Panic (the host sees a trap and the panic message in the log).
    Panic,
    /// Read `/etc/hostname` and emit `opened: ...` or `denied: ...`.
    OpenFile,
    /// Reject the event without trapping.
    Reject,
}

#[derive(Debug, Deserialize)]
struct Command {
    action: Action,
}

/// The probe.
pub struct SandboxProbe;

impl Processor for SandboxProbe {
    type Config = ();

    fn open(config: Config) -> Result<Self, Error> {
        match config.on_open {
            Some(Action::Sleep) => sleep_an_hour(),
            Some(Action::Poll) => poll_an_hour(),
            // Until the call deadline: an open that is slow (the host's
            // liveness tests: a server answers while it resumes).
            Some(Action::Loop) => spin(),
            Some(other) => return Err(Error::msg(format!("open cannot {other:?}"))),
            None => {}
        }
        Ok(SandboxProbe {
            big: ValueState::new("big"),
            list: ListState::new("list"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        match event.json::<Command>()?.action {
            Action::Ok => ctx.emit("ok"),
            Action::Loop => spin(),
            Action::Alloc => exhaust_memory(),
            Action::Panic => panic!("boom: the probe was told to panic"),
            Action::OpenFile => match std::fs::read_to_string("/etc/hostname") {
                Ok(content) => ctx.emit(format!("opened: {content}")),
                Err(error) => ctx.emit(format!("denied: {error}")),
            },
            Action::Reject => return Err(Error::msg("rejected on purpose")),
        }
        Ok(())
    }
}

/// Loops forever; `black_box` keeps the optimizer from proving the loop
/// has no effect and removing it.
fn spin() -> ! {
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

/// Holds on to 1 MiB chunks, writing every page of each, until allocation
/// fails (an abort, which traps).
fn exhaust_memory() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut chunks = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
}

weir_sdk::export!(SandboxProbe);

#[cfg(test)]
mod tests {
    use weir_sdk::testing::Harness;

    use super::*;

    fn probe(action: &str) -> Event {
        Event::new_json("k", &serde_json::json!({ "action": action }))
    }

    #[test]
    fn ok_emits_ok() {
        let mut h = Harness::<SandboxProbe>::open(()).unwrap();
        h.process(probe("ok")).unwrap();
        assert_eq!(h.outputs("main")[0].value, b"ok");
    }

    #[test]
    fn reject_fails_the_event_without_panicking() {
        let mut h = Harness::<SandboxProbe>::open(()).unwrap();
        let error = h.process(probe("reject")).unwrap_err();
        assert_eq!(error.message(), "rejected on purpose");
        assert!(h.outputs("main").is_empty());
    }

    #[test]
    #[should_panic(expected = "boom: the probe was told to panic")]
    fn panic_panics_with_its_message() {
        let mut h = Harness::<SandboxProbe>::open(()).unwrap();
        let _ = h.process(probe("panic"));
    }

    #[test]
    fn an_unknown_action_is_rejected() {
        let mut h = Harness::<SandboxProbe>::open(()).unwrap();
        let error = h.process(probe("dance")).unwrap_err();
        assert!(
            error.message().contains("unknown variant `dance`"),
            "{error}"
        );
    }

    #[test]
    fn every_action_name_parses() {
        let names = ["ok", "loop", "alloc", "panic", "open-file", "reject"];
        let actions: Vec<Action> = names
            .iter()
            .map(|n| {
                serde_json::from_value::<Command>(serde_json::json!({ "action": n }))
                    .unwrap()
                    .action
            })
            .collect();
        use Action::*;
        assert_eq!(actions, [Ok, Loop, Alloc, Panic, OpenFile, Reject]);
    }
}
