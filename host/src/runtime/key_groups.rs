//! Keys → key groups → subtasks.
//!
//! A key hashes to one of a fixed number of key groups; a subtask owns a
//! contiguous range of them (Flink's scheme), so state can later be restored
//! at another parallelism by moving whole key groups. The hash is written out
//! here, not borrowed from a hasher crate, because it is persisted: a key must
//! land in the same group in every version of Weir.

/// The maximum parallelism of a pipeline and the unit of state redistribution.
pub const KEY_GROUPS: u16 = 128;

/// The key group of a key: FNV-1a over the bytes, then a murmur3 finaliser so
/// that short numeric keys spread evenly.
pub fn key_group(key: &[u8]) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(KEY_GROUPS)) as u16
}

/// The contiguous key groups `subtask` owns: the inverse of `subtask_of`.
/// With more subtasks than key groups, a subtask may own none (an empty range).
pub fn key_group_range(subtask: usize, parallelism: u32) -> std::ops::RangeInclusive<u16> {
    let start = (0..KEY_GROUPS)
        .find(|&kg| subtask_of(kg, parallelism) == subtask)
        .unwrap_or(KEY_GROUPS);
    let end = (start..KEY_GROUPS)
        .take_while(|&kg| subtask_of(kg, parallelism) == subtask)
        .last()
        .unwrap_or(start);
    start..=end
}

/// The subtask that owns `key_group` when the pipeline runs `parallelism` subtasks.
pub fn subtask_of(key_group: u16, parallelism: u32) -> usize {
    (u32::from(key_group) * parallelism / u32::from(KEY_GROUPS)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_are_stable_across_releases() {
        // Persisted in checkpoints: these values must never change.
        let groups: Vec<u16> = [&b""[..], b"a", b"91033", b"user-1"]
            .iter()
            .map(|k| key_group(k))
            .collect();
        assert_eq!(groups, vec![38, 91, 80, 69]);
    }

    #[test]
    fn numeric_keys_spread_evenly_over_groups() {
        let mut counts = vec![0u32; KEY_GROUPS as usize];
        for user in 0..100_000u32 {
            counts[key_group(user.to_string().as_bytes()) as usize] += 1;
        }
        let expected = 100_000 / u32::from(KEY_GROUPS);
        for (group, count) in counts.iter().enumerate() {
            assert!(
                count.abs_diff(expected) < expected / 5,
                "group {group} holds {count} keys, expected about {expected}"
            );
        }
    }

    #[test]
    fn subtasks_own_contiguous_ranges_covering_every_group() {
        for parallelism in [1u32, 2, 3, 7, 128] {
            let owners: Vec<usize> = (0..KEY_GROUPS)
                .map(|g| subtask_of(g, parallelism))
                .collect();
            assert!(owners.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(owners[0], 0);
            assert_eq!(*owners.last().unwrap(), parallelism as usize - 1);
        }
    }
}
