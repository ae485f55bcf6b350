// Test-only: the counter again under another crate name, so that its
// `VERSION` (and with it the component bytes) differ. Tests swap between the
// two and tell from the output which one handled an event.
include!("../../counter/src/lib.rs");
