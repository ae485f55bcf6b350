//! `export!` and the glue it expands to: the component's `handler` exports
//! (`open`, `process`, `on-timer`) implemented once, generically, for any
//! [`Processor`](crate::Processor). The macro only names the plugin type, so
//! the plugin's crate needs no wit-bindgen of its own.

/// Exports a [`Processor`](crate::Processor) as the component's
/// `weir:plugin/processor` world. Use it once per plugin crate:
///
/// ```
/// # use weir_sdk::{Context, Error, Event, Processor};
/// # struct MyPlugin;
/// # impl Processor for MyPlugin {
/// #     type Config = ();
/// #     fn open(_: ()) -> Result<Self, Error> { Ok(MyPlugin) }
/// #     fn process(&mut self, _: &mut Context, _: &Event) -> Result<(), Error> { Ok(()) }
/// # }
/// weir_sdk::export!(MyPlugin);
/// ```
///
/// On wasm it emits the component exports; natively it only checks that the
/// type is a `Processor`, so the crate's tests build as usual.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __WeirExport = $crate::__private::Export<$plugin>;
            $crate::__private::bindings::__export_weir_handler!(__WeirExport with_types_in $crate::__private::bindings);
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = $crate::__private::assert_processor::<$plugin>();
    };
}

/// Compile-time check used by `export!` on native targets.
#[doc(hidden)]
pub const fn assert_processor<P: crate::Processor>() {}

#[cfg(target_arch = "wasm32")]
pub use guest::Export;

#[cfg(target_arch = "wasm32")]
mod guest {
    use std::any::Any;
    use std::cell::RefCell;
    use std::marker::PhantomData;

    use crate::processor::{handle_event, handle_timer};
    use crate::sys::wasm::{
        EVENT_SIZE, TIMER_SIZE, begin_batch, begin_item, bindings, for_each_event, for_each_timer,
        install_panic_hook, take_changes,
    };
    use crate::{Error, Processor, config};

    thread_local! {
        // The open plugin. `Any` because a static cannot be generic over
        // the plugin type; the downcast is one comparison per batch.
        static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// The component's `Guest` implementation for plugin `P`.
    #[doc(hidden)]
    pub struct Export<P>(PhantomData<P>);

    impl<P: Processor> bindings::Guest for Export<P> {
        fn open(config: String) -> Result<(), String> {
            install_panic_hook();
            let config = config::parse::<P::Config>(&config).map_err(Error::into_message)?;
            let plugin = P::open(config).map_err(Error::into_message)?;
            // A second `open` (after a swap) replaces the previous instance.
            PLUGIN.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
            Ok(())
        }

        fn process(events: bindings::EventBatch) -> bindings::BatchResult {
            with_plugin(|plugin: &mut P| {
                run_batch(events.events.len() / EVENT_SIZE, |item| {
                    for_each_event(events, |index, first_of_key, event| {
                        item(index, first_of_key, &mut || handle_event(plugin, event))
                    })
                })
            })
        }

        fn on_timer(fired: bindings::TimerBatch) -> bindings::BatchResult {
            with_plugin(|plugin: &mut P| {
                run_batch(fired.timers.len() / TIMER_SIZE, |item| {
                    for_each_timer(fired, |index, first_of_key, timer| {
                        item(index, first_of_key, &mut || handle_timer(plugin, timer))
                    })
                })
            })
        }

        fn state_version() -> u32 {
            P::STATE_VERSION
        }

        fn migrate(
            from: u32,
            items: Vec<bindings::StoredValue>,
        ) -> Result<Vec<Option<Vec<u8>>>, String> {
            install_panic_hook();
            items
                .iter()
                .map(|item| {
                    P::migrate(from, &item.state, &item.value).map_err(|e| {
                        format!("migrating state {:?}: {}", item.state, e.into_message())
                    })
                })
                .collect()
        }
    }

    fn with_plugin<P: Processor, R>(f: impl FnOnce(&mut P) -> R) -> R {
        PLUGIN.with(|cell| {
            let mut slot = cell.borrow_mut();
            let plugin = slot.as_mut().and_then(|plugin| plugin.downcast_mut::<P>());
            match plugin {
                Some(plugin) => f(plugin),
                None => {
                    install_panic_hook();
                    panic!("the host called the plugin before a successful `open`")
                }
            }
        })
    }

    /// Handles a batch of `len` items in order and returns what it changed,
    /// with the items the plugin rejected. `walk` hands each item to the
    /// closure it is given: its index, the index of the batch's first item
    /// with its key, and how to handle it. Each item begins (with its key,
    /// for the state overlay) before the plugin sees it, so every change
    /// carries its item.
    fn run_batch(
        len: usize,
        walk: impl FnOnce(&mut dyn FnMut(u32, u32, &mut dyn FnMut() -> Result<(), Error>)),
    ) -> bindings::BatchResult {
        let mut failures = Vec::new();
        // A batch is at most as long as the host's u32 item indices reach.
        begin_batch(len as u32);
        walk(&mut |index, first_of_key, handle| {
            begin_item(index, first_of_key);
            if let Err(error) = handle() {
                failures.push(bindings::Failure {
                    item: index,
                    reason: error.into_message(),
                });
            }
        });
        let (bytes, changes) = take_changes();
        bindings::BatchResult {
            bytes,
            changes,
            failures,
        }
    }
}
