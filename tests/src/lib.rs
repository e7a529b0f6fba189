//! Shared helpers of the end-to-end tests: namespaces and veth pairs, real traffic between
//! them, hand-built frames and an oracle for what a frame carries.
//!
//! The tests need root (they load BPF programs and create network namespaces); run them with
//! `cargo xtask test`.
#![warn(missing_docs)]
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the documentation is for whoever works on the code: `cargo doc --document-private-items`"
)]

pub mod crowd;
pub mod daemon;
pub mod etcd;
pub mod feed_server;
pub mod fleet;
pub mod frames;
pub mod kernel_image;
pub mod mounts;
pub mod netns;
pub mod openapi;
pub mod operator_keys;
pub mod reference;
pub mod scenario;
pub mod traffic;

use std::path::PathBuf;

use anyhow::Context as _;

use allowlist_common::{Counter, Mode};
use allowlist_daemon::dataplane::{Dataplane, Verdict};
use allowlist_daemon::policy::{Policy, parse_cidr};

/// A policy from CIDR strings, rule ids in order from 0.
pub fn policy(cidrs: &[&str]) -> Policy {
    cidrs
        .iter()
        .zip(0..)
        .map(|(cidr, rule)| (parse_cidr(cidr).expect("test CIDR"), rule))
        .collect()
}

/// A freshly loaded program (its own maps) with `cidrs` allowed, in `mode`, not attached.
pub fn loaded(cidrs: &[&str], mode: Mode) -> Dataplane {
    let mut dataplane =
        Dataplane::load(1024, 1024).expect("loading the XDP program (are you root?)");
    dataplane
        .apply(&policy(cidrs))
        .expect("applying the policy");
    dataplane.set_mode(mode).expect("setting the mode");
    dataplane
}

/// What the XDP program does with `frame`, run once by the kernel.
pub fn verdict(dataplane: &Dataplane, frame: &[u8]) -> Verdict {
    dataplane.run_frame(frame, 1).expect("test run").verdict
}

/// The program's counter `counter`, summed over interfaces and CPUs.
pub fn counter(dataplane: &Dataplane, counter: Counter) -> u64 {
    dataplane
        .readings()
        .counters()
        .expect("counters")
        .get(counter)
}

/// The `allowlistd` binary of the same build as the running executable: beside it
/// (`target/<profile>/`) or one level up (tests run from `target/<profile>/deps/`).
pub fn allowlistd_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("allowlistd"))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "no allowlistd beside {}: build it first (cargo xtask test and cargo xtask run do)",
                exe.display()
            )
        })
}
