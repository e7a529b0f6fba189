//! System calls aya 0.14 does not make, fenced here: the batch operations of `bpf(2)`,
//! memory-mapped arrays, and the rtnetlink query of an interface's XDP program.

mod batch;
mod window;
mod xdp_holder;

pub use batch::BatchError;
pub(super) use batch::BatchMap;
pub(super) use window::{Access, ArrayWindow};
pub(super) use xdp_holder::xdp_holder;
pub use xdp_holder::{XdpAttachment, XdpHolder};
