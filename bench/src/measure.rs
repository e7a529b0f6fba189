//! What every section measures with: the repeat of a test run, the median of samples,
//! interleaved timings of two settings, and the verdict a target gets.

use std::time::Duration;

use allowlist_daemon::dataplane::Dataplane;

/// Packets per test run of the XDP program on one frame.
pub const REPEAT: u32 = 1_000_000;

/// Rounds of an interleaved measurement; the median is reported.
pub const INTERLEAVED_RUNS: usize = 15;

/// Per-packet time of each of `frames`, as medians of [`INTERLEAVED_RUNS`] rounds, with a
/// setting off and on: each round sets it off (`set(dataplane, false)`) and times every
/// frame, then on and again, so that both see the same noise. `[off, on]` per frame, in ns.
pub fn interleaved(
    dataplane: &mut Dataplane,
    frames: &[Vec<u8>],
    mut set: impl FnMut(&mut Dataplane, bool) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<[f64; 2]>> {
    let mut samples = vec![[Vec::new(), Vec::new()]; frames.len()];
    for _ in 0..INTERLEAVED_RUNS {
        for (slot, on) in [(0, false), (1, true)] {
            set(dataplane, on)?;
            for (frame, samples) in frames.iter().zip(&mut samples) {
                samples[slot].push(dataplane.run_frame(frame, REPEAT)?.duration);
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|[off, on]| [median(off), median(on)])
        .collect())
}

/// The median of `samples`, in ns.
pub fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_nanos() as f64
}

/// The verdict a report gives a target: met or missed.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}
