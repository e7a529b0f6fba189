//! The policy model: which prefixes are allowed and which rule allows each, and what an
//! entry or a scope may be. Pure: no I/O, no kernel.

mod cidr;
mod coverage;
mod feed;
mod prefixes;
mod scope;
mod text;

pub use cidr::{CidrError, check_prefix, parse_cidr};
pub use coverage::covered_family;
pub use feed::{FeedError, FeedFormat, FeedRead, Found, feed_prefixes, read_feed};
pub use prefixes::Policy;
pub use scope::{PortScope, Transport};
pub use text::{CidrText, serialize_cidr};
