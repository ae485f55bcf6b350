//! The trait a plugin author implements, and how one item reaches it. Both
//! backends (the wasm export and the test harness) go through `handle_*`, so
//! the context an item sees is built in one place.

use serde::de::DeserializeOwned;

use crate::{Context, Error, Event, Timer};

/// A keyed process function: the whole of a Weir plugin.
///
/// The host calls [`open`](Processor::open) once per instance (and again after
/// every swap), then [`process`](Processor::process) for each event and
/// [`on_timer`](Processor::on_timer) for each fired timer, each with the
/// item's key in scope. Everything durable lives in host state
/// ([`ValueState`](crate::ValueState) and friends), never in `self`: the host
/// may replace the instance at any time.
pub trait Processor: Sized + 'static {
    /// The plugin's config, parsed from the pipeline's JSON. An absent config
    /// (`""`, `null` or `{}`) is `Default::default()`, so keep `Default` in
    /// line with any `#[serde(default)]` values.
    type Config: DeserializeOwned + Default;

    /// Builds the plugin. Declare states here; state access, timers and
    /// outputs are not available yet.
    fn open(config: Self::Config) -> Result<Self, Error>;

    /// Handles one event. An `Err` marks the event as failed; the batch goes on.
    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error>;

    /// Handles one fired timer. By default does nothing.
    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: &Timer) -> Result<(), Error> {
        let _ = (ctx, timer);
        Ok(())
    }
}

/// Runs `plugin` on one event, with the event's key and time in scope.
pub(crate) fn handle_event<P: Processor>(plugin: &mut P, event: &Event) -> Result<(), Error> {
    let mut ctx = Context::new(event.key(), event.timestamp());
    plugin.process(&mut ctx, event)
}

/// Runs `plugin` on one fired timer, with the timer's key and time in scope.
pub(crate) fn handle_timer<P: Processor>(plugin: &mut P, timer: &Timer) -> Result<(), Error> {
    let mut ctx = Context::new(Some(timer.key()), Some(timer.timestamp()));
    plugin.on_timer(&mut ctx, timer)
}
