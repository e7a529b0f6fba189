//! `cargo xtask run` without arguments: a demonstration of allowlistd that touches none of the
//! machine's own interfaces. It creates two network namespaces joined by a veth pair, runs
//! allowlistd on the server side, creates and enables an allowlist holding one client address
//! of each family, and shows which probes from the allowed and the denied addresses get
//! through. Everything it creates is removed when it ends.

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::traffic::{ping_answers, tcp_connects, udp_gets_through};
use anyhow::{Context as _, bail};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let link = TestLink::create().context("creating the demo namespaces")?;
    let state = TempDir::new()?;
    println!(
        "namespaces {} and {}, joined by {SERVER_IF} <-> {CLIENT_IF}",
        link.server.name(),
        link.client.name()
    );
    println!(
        "starting allowlistd --iface {SERVER_IF} in {}",
        link.server.name()
    );
    let mut daemon = Daemon::start(&link, state.path(), &["--stats-interval", "1h"])?;

    let entries =
        json!([{"cidr": CLIENT_ALLOWED_V4.to_string()}, {"cidr": CLIENT_ALLOWED_V6.to_string()}]);
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "demo", "entries": entries})),
    );
    let id = created.body["id"]
        .as_str()
        .context("no allowlist id")?
        .to_owned();
    println!("POST /v1/allowlists -> {} {}", created.status, created.body);
    println!("\nnot enforcing yet:");
    probe(&link)?;

    let enabled = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id]})),
    );
    if enabled.status != 202 {
        bail!("enable failed: {}", enabled.body);
    }
    println!(
        "POST /v1/enforcement/enable -> {} (pending until acknowledged)",
        enabled.status
    );
    println!("\nenforcing {CLIENT_ALLOWED_V4} and {CLIENT_ALLOWED_V6}:");
    probe(&link)?;

    daemon.stop()?;
    println!(
        "{}",
        daemon
            .log()
            .lines()
            .rfind(|l| l.contains("counters"))
            .unwrap_or("")
    );
    println!("allowlistd stopped and detached; namespaces removed");
    Ok(())
}

fn probe(link: &TestLink) -> anyhow::Result<()> {
    println!(
        "{:<16} {:<18} {:<8} {:<8} {:<8}",
        "source", "to", "UDP", "TCP", "ping"
    );
    let shown = |passed: bool| if passed { "passes" } else { "dropped" };
    for (allowed, denied, server) in PROBES {
        for source in [allowed, denied] {
            println!(
                "{:<16} {:<18} {:<8} {:<8} {:<8}",
                source,
                server,
                shown(udp_gets_through(link, source, server)?),
                shown(tcp_connects(link, source, server)?),
                shown(ping_answers(link, source, server)?),
            );
        }
    }
    println!();
    Ok(())
}
