//! How each rule (allowlist entry) was used, and when it stops allowing, in 16 bytes shared
//! by every CPU: a hit count, exact up to [`EXACT_HITS`] and approximate beyond, the second
//! of the last hit, and the deadline of an expiring entry.
//!
//! The count is a sampled counter in segments of [`EXACT_HITS`] steps: in segment `s` (the
//! count's value divided by [`EXACT_HITS`]) a hit adds a step with probability `2^-s`, so a
//! step stands for `2^s` hits. A hit costs one load and, in the first segment or one time in
//! `2^s`, one atomic add; the count's memory does not grow with the CPUs. Each segment is
//! [`EXACT_HITS`] samples, so the estimate stays within a few percent (the unit tests bound
//! it) up to about `EXACT_HITS * 2^40` hits, where it stops growing.
//!
//! The last hit is the program's clock in whole seconds, written only when the second
//! changes: a busy rule's line is written once a second, not once a packet.

/// Hits counted one by one: below this many, the count is exact.
pub const EXACT_HITS: u32 = 4096;

/// The last segment: the count stops there (about `EXACT_HITS * 2^41` hits).
pub const LAST_SEGMENT: u32 = 40;

/// How one rule was used: the value of [`crate::MAP_RULE_HITS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// The sampled count (see the module's documentation); [`RuleStats::hits`] reads it.
    /// Changed by atomic adds only.
    pub count: u64,
    /// [`crate::MAP_CLOCK`] in whole seconds at the last hit; 0: none yet.
    pub last_hit_s: u32,
    /// For the rule of an expiring entry (flagged [`crate::EXPIRING_RULE`] in the range
    /// tables): the `CLOCK_MONOTONIC_COARSE` second from which it stops allowing, in the
    /// kernel, daemon or not; 0: never. Written by user space alone.
    pub expires_s: u32,
}

impl RuleStats {
    /// Byte offset of [`RuleStats::expires_s`], which user space writes alone while the
    /// program updates the rest.
    pub const EXPIRES_OFFSET: usize = core::mem::offset_of!(RuleStats, expires_s);

    /// Whether the deadline has come at `now_s` (`CLOCK_MONOTONIC_COARSE` seconds).
    #[inline(always)]
    pub const fn expired_at(&self, now_s: u32) -> bool {
        self.expires_s != 0 && now_s >= self.expires_s
    }
}

impl RuleStats {
    /// The hits the count stands for: exact below [`EXACT_HITS`], an estimate beyond.
    pub const fn hits(&self) -> u64 {
        let segment = self.count / EXACT_HITS as u64;
        if segment > LAST_SEGMENT as u64 + 1 {
            // Not a count the program makes: as many as it ever counts.
            return EXACT_HITS as u64 * ((1u64 << (LAST_SEGMENT + 1)) - 1);
        }
        let within = self.count % EXACT_HITS as u64;
        // Segments before this one: EXACT_HITS steps of 1, 2, 4, ... 2^(segment-1) hits.
        let full = EXACT_HITS as u64 * ((1u64 << segment) - 1);
        full + (within << segment)
    }
}

/// The segment a count of `count` is in, when a hit may add to it; `None` once it is full.
#[inline(always)]
pub const fn sample_shift(count: u64) -> Option<u32> {
    let segment = count / EXACT_HITS as u64;
    if segment > LAST_SEGMENT as u64 {
        None
    } else {
        Some(segment as u32)
    }
}

/// Whether a hit with random bits `random` adds a step to a count in segment `shift`: one
/// time in `2^shift`.
#[inline(always)]
pub const fn sampled(shift: u32, random: u64) -> bool {
    shift == 0 || random & ((1u64 << shift) - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64, as the kernel's random numbers would be drawn.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    /// The count after `hits` hits, as the program counts them.
    fn count(hits: u64, random: &mut Random) -> RuleStats {
        let mut stats = RuleStats::default();
        for _ in 0..hits {
            if let Some(shift) = sample_shift(stats.count)
                && sampled(shift, random.next())
            {
                stats.count += 1;
            }
        }
        stats
    }

    #[test]
    fn hits_are_exact_below_the_first_segment() {
        let mut random = Random(1);
        for hits in [
            0,
            1,
            2,
            100,
            u64::from(EXACT_HITS) - 1,
            u64::from(EXACT_HITS),
        ] {
            assert_eq!(count(hits, &mut random).hits(), hits);
        }
    }

    #[test]
    fn beyond_it_the_estimate_stays_within_a_few_percent() {
        let mut random = Random(7);
        for hits in [5_000u64, 20_000, 100_000, 1_000_000, 10_000_000] {
            let mut worst = 0f64;
            for _ in 0..20 {
                let estimate = count(hits, &mut random).hits() as f64;
                worst = worst.max((estimate - hits as f64).abs() / hits as f64);
            }
            assert!(worst < 0.05, "{hits} hits: worst of 20 off by {worst:.4}");
        }
    }

    #[test]
    fn the_count_stops_at_its_last_segment() {
        let full = RuleStats {
            count: u64::from((LAST_SEGMENT + 1) * EXACT_HITS),
            ..RuleStats::default()
        };
        assert_eq!(sample_shift(full.count), None);
        assert!(full.hits() > 1 << 52, "{}", full.hits());
        let last = RuleStats {
            count: full.count - 1,
            ..RuleStats::default()
        };
        assert!(last.hits() < full.hits());
        let garbage = RuleStats {
            count: u64::MAX,
            ..RuleStats::default()
        };
        assert_eq!(
            garbage.hits(),
            full.hits(),
            "no overflow on a count never made"
        );
    }
}
