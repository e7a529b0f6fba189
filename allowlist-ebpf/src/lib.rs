//! Host-side stub of the eBPF crate.
//!
//! The real program is the `allowlist` binary target, built for `bpfel-unknown-none` by
//! `aya-build` from the daemon's build script. This empty library lets that build script
//! declare a build-dependency on this crate so cargo rebuilds the object when it changes.
#![no_std]
