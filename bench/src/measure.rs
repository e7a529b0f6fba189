//! What every section measures with: the repeat of a test run, the median of samples, and
//! the verdict a target gets.

use std::time::Duration;

/// Packets per test run of the XDP program on one frame.
pub const REPEAT: u32 = 1_000_000;

/// The median of `samples`, in ns.
pub fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_nanos() as f64
}

/// The verdict a report gives a target: met or missed.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}
