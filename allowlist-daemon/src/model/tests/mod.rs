//! Unit tests of the pure model, with the helpers they share.

mod apply;
mod changes;
mod expiry;
mod feeds;
mod lists;
mod saved;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use time::OffsetDateTime;

use super::*;
use crate::policy::PortScope;

fn settings() -> Settings {
    Settings::small()
}

fn t(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + seconds)
}

fn ids() -> SequentialIds {
    SequentialIds(0)
}

fn input(name: &str, cidrs: &[&str]) -> AllowlistInput {
    AllowlistInput {
        name: name.into(),
        description: None,
        entries: Some(entry_inputs(cidrs)),
        allow_all: false,
        source: None,
    }
}

/// `cidrs` as the entries of a request.
fn entry_inputs(cidrs: &[&str]) -> Vec<EntryInput> {
    cidrs
        .iter()
        .map(|cidr| EntryInput {
            cidr: (*cidr).into(),
            description: None,
            expires_at: None,
            ttl: None,
        })
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn create(model: &mut Model, next_id: &mut SequentialIds, name: &str, cidrs: &[&str]) -> String {
    model
        .create(input(name, cidrs), t(0), &settings(), next_id)
        .expect("create")
        .id
        .clone()
}

fn entries(cidrs: &[&str]) -> EntriesInput {
    EntriesInput {
        entries: entry_inputs(cidrs),
        allow_all: false,
    }
}

/// Creates list `name` with `cidrs` and enables it at `t(0)`: pending until acknowledged.
fn create_enabled(
    model: &mut Model,
    next_id: &mut SequentialIds,
    name: &str,
    cidrs: &[&str],
) -> String {
    let id = create(model, next_id, name, cidrs);
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    id
}
