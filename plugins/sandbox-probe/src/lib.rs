//! A test-only plugin for the host's sandbox tests: each event tells it to
//! misbehave in one way (spin, exhaust memory, panic, touch the filesystem,
//! sleep, wait, grow its state or its names without end, flood the log) so
//! the host can show it contains the damage. Its config can make `open`
//! misbehave too (`{"on_open": "sleep"}`).

use serde::Deserialize;
use weir_sdk::{Context, Error, Event, Level, ListState, Processor, ValueState};

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
    /// Sleep an hour (`std::thread::sleep`), then emit `slept`.
    Sleep,
    /// Wait on `wasi:io/poll.poll` for an hour's clock subscription, then
    /// emit `polled`.
    Poll,
    /// Set a value state to a value of `n` bytes, then emit `stored`.
    BigValue,
    /// Append an item of `n` bytes to the key's list, read the whole list
    /// and emit its length.
    GrowList,
    /// Emit `ok` to the output `out-<n>`.
    NewOutput,
    /// Add 1 to the counter `c-<n>`.
    NewCounter,
    /// Log `n` lines of 10 KiB at warn level.
    LogFlood,
}

#[derive(Debug, Deserialize)]
struct Command {
    action: Action,
    /// A size or an index, for the actions that take one.
    #[serde(default)]
    n: u64,
}

/// The probe's config: what `open` does before it succeeds.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    on_open: Option<Action>,
}

/// The probe.
pub struct SandboxProbe {
    big: ValueState<String>,
    list: ListState<String>,
}

impl Processor for SandboxProbe {
    type Config = Config;

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
        let command = event.json::<Command>()?;
        let n = command.n;
        match command.action {
            Action::Ok => ctx.emit("ok"),
            Action::Loop => spin(),
            Action::Alloc => exhaust_memory(),
            Action::Panic => panic!("boom: the probe was told to panic"),
            Action::OpenFile => match std::fs::read_to_string("/etc/hostname") {
                Ok(content) => ctx.emit(format!("opened: {content}")),
                Err(error) => ctx.emit(format!("denied: {error}")),
            },
            Action::Reject => return Err(Error::msg("rejected on purpose")),
            Action::Sleep => {
                sleep_an_hour();
                ctx.emit("slept");
            }
            Action::Poll => {
                poll_an_hour();
                ctx.emit("polled");
            }
            Action::BigValue => {
                self.big.set(&"x".repeat(n as usize))?;
                ctx.emit("stored");
            }
            Action::GrowList => {
                self.list.append(&"x".repeat(n as usize))?;
                ctx.emit(format!("list: {}", self.list.read()?.len()));
            }
            Action::NewOutput => ctx.emit_to(&format!("out-{n}"), "ok"),
            Action::NewCounter => ctx.counter_add(&format!("c-{n}"), 1),
            Action::LogFlood => {
                let line = "y".repeat(10 << 10);
                for _ in 0..n {
                    ctx.log(Level::Warn, &line);
                }
            }
        }
        Ok(())
    }
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

fn sleep_an_hour() {
    std::thread::sleep(HOUR);
}

/// `wasi:io/poll.poll` on a subscription to the monotonic clock an hour
/// from now, through the raw imports (std has no poll).
#[cfg(target_arch = "wasm32")]
fn poll_an_hour() {
    #[link(wasm_import_module = "wasi:clocks/monotonic-clock@0.2.0")]
    unsafe extern "C" {
        #[link_name = "subscribe-duration"]
        fn subscribe_duration(nanos: i64) -> i32;
    }
    #[link(wasm_import_module = "wasi:io/poll@0.2.0")]
    unsafe extern "C" {
        #[link_name = "poll"]
        fn poll(pollables: *const i32, len: usize, ready: *mut [usize; 2]);
        #[link_name = "[resource-drop]pollable"]
        fn drop_pollable(pollable: i32);
    }
    // SAFETY: the canonical ABI of `subscribe-duration: func(u64) ->
    // pollable` and `poll: func(list<borrow<pollable>>) -> list<u32>`; the
    // returned list is allocated by the guest's `cabi_realloc` and leaked.
    unsafe {
        let pollable = subscribe_duration(HOUR.as_nanos() as i64);
        let mut ready = [0usize; 2];
        poll(&pollable, 1, &mut ready);
        drop_pollable(pollable);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn poll_an_hour() {
    std::thread::sleep(HOUR);
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
        let mut h = Harness::<SandboxProbe>::open(Config::default()).unwrap();
        h.process(probe("ok")).unwrap();
        assert_eq!(h.outputs("main")[0].value, b"ok");
    }

    #[test]
    fn reject_fails_the_event_without_panicking() {
        let mut h = Harness::<SandboxProbe>::open(Config::default()).unwrap();
        let error = h.process(probe("reject")).unwrap_err();
        assert_eq!(error.message(), "rejected on purpose");
        assert!(h.outputs("main").is_empty());
    }

    #[test]
    #[should_panic(expected = "boom: the probe was told to panic")]
    fn panic_panics_with_its_message() {
        let mut h = Harness::<SandboxProbe>::open(Config::default()).unwrap();
        let _ = h.process(probe("panic"));
    }

    #[test]
    fn an_unknown_action_is_rejected() {
        let mut h = Harness::<SandboxProbe>::open(Config::default()).unwrap();
        let error = h.process(probe("dance")).unwrap_err();
        assert!(
            error.message().contains("unknown variant `dance`"),
            "{error}"
        );
    }

    #[test]
    fn every_action_name_parses() {
        let names = [
            "ok",
            "loop",
            "alloc",
            "panic",
            "open-file",
            "reject",
            "sleep",
            "poll",
            "big-value",
            "grow-list",
            "new-output",
            "new-counter",
            "log-flood",
        ];
        let actions: Vec<Action> = names
            .iter()
            .map(|n| {
                serde_json::from_value::<Command>(serde_json::json!({ "action": n }))
                    .unwrap()
                    .action
            })
            .collect();
        use Action::*;
        assert_eq!(
            actions,
            [
                Ok, Loop, Alloc, Panic, OpenFile, Reject, Sleep, Poll, BigValue, GrowList,
                NewOutput, NewCounter, LogFlood
            ]
        );
    }
}
