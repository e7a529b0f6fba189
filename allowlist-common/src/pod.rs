//! The map types as [`aya::Pod`], for user space (the `user` feature).

use crate::preview::{PreviewKey, PreviewSeen};
use crate::ranges::short::{ShortV4, ShortV6};
use crate::ranges::v4::V4Leaf;
use crate::ranges::v6::V6Header;
use crate::ranges::{RangeBucket, Regions};
use crate::{Config, FlowKey, FlowState, GenerationRecord, RuleStats, SourceKey, SourceSeen};

// SAFETY (every impl below): the type is `#[repr(C)]`, `Copy`, made of integers and byte
// arrays laid out without padding, so every bit pattern of its size is a valid value.
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for SourceKey {}
unsafe impl aya::Pod for SourceSeen {}
unsafe impl aya::Pod for PreviewKey {}
unsafe impl aya::Pod for PreviewSeen {}
unsafe impl aya::Pod for RuleStats {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowState {}
unsafe impl aya::Pod for GenerationRecord {}
unsafe impl aya::Pod for RangeBucket {}
unsafe impl aya::Pod for Regions {}
unsafe impl aya::Pod for V6Header {}
unsafe impl aya::Pod for V4Leaf {}
unsafe impl aya::Pod for ShortV4 {}
unsafe impl aya::Pod for ShortV6 {}
