//! What a plugin can do while handling one item: read its key and time, the
//! clocks, register timers, emit results, log. Everything here applies to
//! the item in scope, which the host tracks; `Context` only carries what
//! the plugin would otherwise ask the host for on every call.

use serde::Serialize;

use crate::{Error, Level, TimeDomain, sys};

/// The item being handled (an event or a fired timer) and the host's services.
#[derive(Debug)]
pub struct Context<'a> {
    key: Option<&'a [u8]>,
    timestamp: Option<i64>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(key: Option<&'a [u8]>, timestamp: Option<i64>) -> Self {
        Context { key, timestamp }
    }

    /// The current key (empty if the event is not keyed).
    pub fn key(&self) -> &'a [u8] {
        self.key.unwrap_or_default()
    }

    /// The event time of the current item; for a timer, its timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The event-time watermark: no event at or before it is expected any more.
    pub fn watermark(&self) -> i64 {
        sys::watermark()
    }

    /// The host's wall clock, in ms since the Unix epoch.
    pub fn processing_time(&self) -> i64 {
        sys::processing_time()
    }

    /// Fires [`Processor::on_timer`](crate::Processor::on_timer) for this key
    /// once the watermark reaches `timestamp`. Registering twice gives one timer.
    pub fn register_event_time_timer(&mut self, timestamp: i64) {
        sys::register_timer(TimeDomain::EventTime, timestamp);
    }

    /// Deletes this key's event-time timer at `timestamp`, if any.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) {
        sys::delete_timer(TimeDomain::EventTime, timestamp);
    }

    /// Fires [`Processor::on_timer`](crate::Processor::on_timer) for this key
    /// once the wall clock reaches `timestamp`. Registering twice gives one timer.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) {
        sys::register_timer(TimeDomain::ProcessingTime, timestamp);
    }

    /// Deletes this key's processing-time timer at `timestamp`, if any.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) {
        sys::delete_timer(TimeDomain::ProcessingTime, timestamp);
    }

    /// Emits `value` to the main output, keyed by the current key (so a later
    /// stage keeps the partitioning). The record carries the item's timestamp.
    pub fn emit(&mut self, value: impl AsRef<[u8]>) {
        sys::emit(self.key, value.as_ref());
    }

    /// Emits `value` to the main output under another key.
    pub fn emit_keyed(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        sys::emit(Some(key.as_ref()), value.as_ref());
    }

    /// Emits `value` to the side output `output` (for example `"alerts"`),
    /// keyed by the current key. `"main"` is the main output; `late` and
    /// `dead-letter` are the host's alone (emitting to them traps).
    pub fn emit_to(&mut self, output: &str, value: impl AsRef<[u8]>) {
        sys::emit_to(output, self.key, value.as_ref());
    }

    /// Emits `value` as JSON to the main output.
    pub fn emit_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.emit(serde_json::to_vec(value)?);
        Ok(())
    }

    /// Emits `value` as JSON to the side output `output`.
    pub fn emit_json_to<T: Serialize + ?Sized>(
        &mut self,
        output: &str,
        value: &T,
    ) -> Result<(), Error> {
        self.emit_to(output, serde_json::to_vec(value)?);
        Ok(())
    }

    /// Writes a structured log line through the host.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        sys::log(level, message.as_ref());
    }

    /// Adds `delta` to the host counter `name`.
    pub fn counter_add(&self, name: &str, delta: u64) {
        sys::counter_add(name, delta);
    }
}
