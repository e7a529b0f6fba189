//! System calls aya 0.14 does not make, fenced here: the batch operations of `bpf(2)`.
//! The daemon's only `unsafe` code.

mod batch;

pub use batch::BatchError;
pub(super) use batch::BatchMap;
