//! `cargo xtask run` without arguments: a demonstration of allowlistd that touches none of the
//! machine's own interfaces. It creates two network namespaces joined by a veth pair, runs
//! allowlistd on the server side with one client address of each family allowed, and shows
//! which probes from the allowed and the denied addresses get through. Everything it creates
//! is removed when it ends.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allowlist_tests::allowlistd_binary;
use allowlist_tests::netns::*;
use allowlist_tests::traffic::{ping_answers, tcp_connects, udp_gets_through};
use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let link = TestLink::create().context("creating the demo namespaces")?;
    let allowed = [CLIENT_ALLOWED_V4.to_string(), CLIENT_ALLOWED_V6.to_string()];
    let args = [
        "--iface",
        SERVER_IF,
        "--allow",
        &allowed[0],
        "--allow",
        &allowed[1],
        "--stats-interval",
        "1h",
    ];
    println!(
        "namespaces {} and {}, joined by {SERVER_IF} <-> {CLIENT_IF}",
        link.server.name(),
        link.client.name()
    );
    println!("running: allowlistd {}", args.join(" "));
    let mut daemon = Command::new("nsenter")
        .arg(format!("--net={}", link.server.path()))
        .arg(allowlistd_binary()?)
        .args(args)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting allowlistd")?;
    let outcome = probe(&link);
    // SIGTERM: allowlistd logs its counters and detaches.
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let status = daemon.wait().context("waiting for allowlistd")?;
    outcome?;
    if !status.success() {
        bail!("allowlistd exited with {status}");
    }
    println!("allowlistd stopped and detached; namespaces removed");
    Ok(())
}

fn probe(link: &TestLink) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !link.server_has_xdp()? {
        if Instant::now() > deadline {
            bail!("allowlistd did not attach within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "\n{:<16} {:<18} {:<8} {:<8} {:<8}",
        "source", "to", "UDP", "TCP", "ping"
    );
    let families: [(IpAddr, IpAddr, IpAddr); 2] = [
        (
            CLIENT_ALLOWED_V4.into(),
            CLIENT_DENIED_V4.into(),
            SERVER_V4.into(),
        ),
        (
            CLIENT_ALLOWED_V6.into(),
            CLIENT_DENIED_V6.into(),
            SERVER_V6.into(),
        ),
    ];
    let shown = |passed: bool| if passed { "passes" } else { "dropped" };
    for (allowed, denied, server) in families {
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
