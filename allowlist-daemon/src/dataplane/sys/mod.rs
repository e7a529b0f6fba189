//! System calls aya 0.14 does not make, fenced here: the batch operations of `bpf(2)` and
//! memory-mapped arrays. The daemon's only `unsafe` code.

mod batch;
mod window;

pub use batch::BatchError;
pub(super) use batch::BatchMap;
pub(super) use window::{Access, ArrayWindow};
