//! Unit-testing plugins without a host (native targets only).
//!
//! [`Harness`] runs a [`Processor`] against an in-memory host with Weir's
//! semantics: state scoped to the current key, one timer per (key,
//! timestamp, domain), timers firing in (timestamp, key) order, outputs
//! stamped with the current item's timestamp. Each harness owns its host,
//! so any number of harnesses can live in one test.
//!
//! ```
//! use weir_sdk::testing::Harness;
//! use weir_sdk::{Context, Error, Event, Processor, Timer};
//!
//! /// Echoes each event once the watermark passes its timestamp.
//! struct Delay;
//!
//! impl Processor for Delay {
//!     type Config = ();
//!     fn open(_: ()) -> Result<Self, Error> {
//!         Ok(Delay)
//!     }
//!     fn process(&mut self, ctx: &mut Context, _: &Event) -> Result<(), Error> {
//!         let ts = ctx.timestamp().ok_or("events need a timestamp")?;
//!         ctx.register_event_time_timer(ts);
//!         Ok(())
//!     }
//!     fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<(), Error> {
//!         ctx.emit(timer.timestamp().to_string());
//!         Ok(())
//!     }
//! }
//!
//! let mut harness = Harness::<Delay>::open(())?;
//! harness.process(Event::new("k", "x").with_timestamp(10))?;
//! assert!(harness.outputs("main").is_empty());
//! harness.advance_watermark(10)?;
//! assert_eq!(harness.outputs("main")[0].value, b"10");
//! assert_eq!(harness.outputs("main")[0].timestamp, Some(10));
//! # Ok::<(), Error>(())
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::processor::{handle_event, handle_timer};
use crate::sys::native::TestHost;
use crate::{Error, Event, Level, Processor, TimeDomain, config, state};

/// A record a plugin emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The record's key.
    pub key: Option<Vec<u8>>,
    /// The record's value.
    pub value: Vec<u8>,
    /// The timestamp of the item that emitted it.
    pub timestamp: Option<i64>,
}

impl Output {
    /// The value decoded from JSON.
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.value)?)
    }
}

/// A plugin instance driven by an in-memory host.
pub struct Harness<P: Processor> {
    plugin: P,
    host: TestHost,
}

impl<P: Processor> Harness<P> {
    /// Opens the plugin with `config`, as the host's `open` would.
    pub fn open(config: P::Config) -> Result<Self, Error> {
        let mut host = TestHost::default();
        let plugin = host.call(None, || P::open(config))?;
        Ok(Harness { plugin, host })
    }

    /// Opens the plugin with a JSON config, parsed exactly as on the host.
    pub fn open_json(config: &str) -> Result<Self, Error> {
        Self::open(config::parse(config)?)
    }

    /// Handles one event, returning the plugin's verdict.
    ///
    /// An unkeyed event runs with the empty key in scope.
    pub fn process(&mut self, event: Event) -> Result<(), Error> {
        let Harness { plugin, host } = self;
        let item = (event.key().unwrap_or_default(), event.timestamp());
        host.call(Some(item), || handle_event(plugin, &event))
    }

    /// Moves the watermark to `watermark` (never backwards) and fires every
    /// due event-time timer, including timers that the callbacks register
    /// and that are already due. Every due timer fires even if one fails;
    /// the error then lists the failures.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<(), Error> {
        self.host.advance_watermark(watermark);
        self.fire_due(TimeDomain::EventTime)
    }

    /// Moves the wall clock to `now` (never backwards) and fires every due
    /// processing-time timer, like [`advance_watermark`](Self::advance_watermark).
    pub fn advance_processing_time(&mut self, now: i64) -> Result<(), Error> {
        self.host.advance_processing_time(now);
        self.fire_due(TimeDomain::ProcessingTime)
    }

    /// The current watermark (`i64::MIN` until advanced).
    pub fn watermark(&self) -> i64 {
        self.host.watermark()
    }

    /// The current wall clock (0 until advanced).
    pub fn processing_time(&self) -> i64 {
        self.host.processing_time()
    }

    /// Records emitted so far to `output` (`"main"` or a side output name).
    pub fn outputs(&self, output: &str) -> &[Output] {
        self.host.outputs(output)
    }

    /// Removes and returns the records emitted so far to `output`.
    pub fn take_outputs(&mut self, output: &str) -> Vec<Output> {
        self.host.take_outputs(output)
    }

    /// The value state `name` of `key`.
    ///
    /// # Panics
    /// If the stored bytes do not decode as `T`.
    pub fn state<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>, name: &str) -> Option<T> {
        self.host
            .value(key.as_ref(), name)
            .map(|bytes| decode(name, bytes))
    }

    /// The entries of map state `name` of `key`, in map-key byte order.
    ///
    /// # Panics
    /// If the stored bytes do not decode as `K` and `V`.
    pub fn map_state<K: DeserializeOwned, V: DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
        name: &str,
    ) -> Vec<(K, V)> {
        let entries = self.host.map(key.as_ref(), name).into_iter().flatten();
        entries
            .map(|(k, v)| (decode(name, k), decode(name, v)))
            .collect()
    }

    /// The items of list state `name` of `key`, oldest first.
    ///
    /// # Panics
    /// If the stored bytes do not decode as `T`.
    pub fn list_state<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>, name: &str) -> Vec<T> {
        let items = self.host.list(key.as_ref(), name).unwrap_or_default();
        items.iter().map(|bytes| decode(name, bytes)).collect()
    }

    /// The timers `key` has registered and that have not fired, in
    /// timestamp order.
    pub fn pending_timers(&self, key: impl AsRef<[u8]>) -> Vec<(i64, TimeDomain)> {
        self.host.pending_timers(key.as_ref())
    }

    /// Every log line so far.
    pub fn logs(&self) -> &[(Level, String)] {
        self.host.logs()
    }

    /// Every counter so far.
    pub fn counters(&self) -> &BTreeMap<String, u64> {
        self.host.counters()
    }

    fn fire_due(&mut self, domain: TimeDomain) -> Result<(), Error> {
        let mut failures = Vec::new();
        while let Some(timer) = self.host.pop_due_timer(domain) {
            let Harness { plugin, host } = self;
            let item = (timer.key(), Some(timer.timestamp()));
            if let Err(error) = host.call(Some(item), || handle_timer(plugin, &timer)) {
                failures.push(format!(
                    "timer {} of key {:?}: {error}",
                    timer.timestamp(),
                    String::from_utf8_lossy(timer.key())
                ));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::msg(failures.join("; ")))
        }
    }
}

/// Test readers panic on undecodable state: that is a failed test, not input.
fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> T {
    state::decode(name, bytes).unwrap_or_else(|error| panic!("{error}"))
}

#[cfg(test)]
mod tests;
