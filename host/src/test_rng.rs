//! A random number generator for the unit tests.

/// xorshift64: deterministic, so a failure reproduces. Each call gives a
/// number below its argument.
pub(crate) fn rng(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}
