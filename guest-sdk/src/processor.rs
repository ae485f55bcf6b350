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

    /// The version of the format this plugin keeps its state in. Raise it
    /// when a new version of the plugin stores state differently, and
    /// implement [`migrate`](Processor::migrate): when a swap (or a restore)
    /// brings this version onto state written by a lower one, the host runs
    /// `migrate` on every stored value before the plugin takes traffic.
    const STATE_VERSION: u32 = 0;

    /// Rewrites one stored value of state `state` (a value, a map entry's
    /// value, or a list item), written in state version `from`, into this
    /// version's format; `Ok(None)` drops it. An `Err` refuses the swap and
    /// the old version keeps running. By default values are kept as they are.
    fn migrate(from: u32, state: &str, value: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let _ = (from, state);
        Ok(Some(value.to_vec()))
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
