//! The control plane at large lists: a release allowlistd driven over its API (load,
//! replace, restart, scrapes, reads during a long write, slow readers), beside nftables and
//! ipset loading and replacing the same prefixes. Rounds interleave the three systems.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use allowlist_tests::daemon::{API_ADDR, Daemon, TempDir};
use allowlist_tests::netns::TestLink;
use anyhow::Context as _;
use ipnet::IpNet;

use crate::control_peers::{Peer, PeerTimes};
use crate::kernel_memory::pinned_maps;
use crate::measure::verdict;
use crate::sources::disjoint_v4_prefixes;

/// List sizes.
const SIZES: [u32; 3] = [10_000, 100_000, 1_000_000];
/// Rounds at each size; figures are medians, with the range.
const ROUNDS: usize = 3;
/// Readers that stop reading in the slow-reader phase.
const SLOW_READERS: usize = 10;
/// What each slow reader reads before it stops.
const SLOW_READER_BYTES: usize = 1 << 20;

/// What one round measured for the daemon, in seconds and MiB.
#[derive(Debug, Clone, Default)]
struct Round {
    create: f64,
    enable: f64,
    ack: f64,
    replace: f64,
    ack_replace: f64,
    peak_rss_mib: f64,
    restart: f64,
    metrics: f64,
    metrics_bytes: usize,
    /// Slowest answers while the replace ran: /healthz, GET /v1/allowlists (its headers),
    /// GET /v1/enforcement.
    during_replace: [f64; 3],
    /// Probes of each kind answered while the replace ran.
    probes: usize,
    idle_rss_mib: f64,
    readers_peak_rss_mib: f64,
    /// /v1/enforcement and the acknowledgement while the slow readers hold their responses.
    readers_enforcement: f64,
    readers_ack: f64,
    /// Kernel memory of every map the daemon pinned, after the replace.
    kernel_mib: f64,
}

/// Every round of one size, for the daemon and its peers.
struct Size {
    size: u32,
    rounds: Vec<Round>,
    peers: Vec<PeerTimes>,
}

/// Measures every size and writes the section.
pub fn control_section(text: &mut String) -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    for size in SIZES {
        let old = disjoint_v4_prefixes(0x0a11_0c01, size);
        let new = disjoint_v4_prefixes(0x0a11_0c02, size);
        let mut rounds = Vec::new();
        let mut peers = Vec::new();
        for round in 0..ROUNDS {
            eprintln!(
                "allowlist-bench: the API with {size} entries, round {}",
                round + 1
            );
            rounds.push(daemon_round(size, &old, &new).context("timing the API")?);
            for peer in [Peer::Nft, Peer::Ipset] {
                eprintln!("allowlist-bench: {} with {size} prefixes", peer.name());
                peers.push(peer.measure(&old, &new)?);
            }
        }
        sizes.push(Size {
            size,
            rounds,
            peers,
        });
    }
    report(text, &sizes)
}

/// A JSON body creating (or replacing with) a list named `big` of `prefixes`.
fn list_body(prefixes: &[IpNet]) -> String {
    let mut body = String::with_capacity(prefixes.len() * 28 + 64);
    body.push_str("{\"name\":\"big\",\"entries\":[");
    for (index, net) in prefixes.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        let _ = write!(body, "{{\"cidr\":\"{net}\"}}");
    }
    body.push_str("]}");
    body
}

/// The status code of a raw response.
fn status_of(raw: &[u8]) -> u16 {
    raw.get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Sends a request and times it to the last byte of the response; checks the status.
fn timed(
    daemon: &Daemon,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
) -> anyhow::Result<(f64, Vec<u8>)> {
    let auth = format!("Bearer {}", daemon.token);
    let started = Instant::now();
    let raw = daemon.exchange(method, path, body, &[("Authorization", &auth)])?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status_of(&raw) == status,
        "{method} {path}: {}",
        String::from_utf8_lossy(&raw[..raw.len().min(2000)])
    );
    Ok((elapsed, raw))
}

/// A request sent on a connection of its own, left for the caller to read.
fn send(daemon: &Daemon, method: &str, path: &str) -> anyhow::Result<TcpStream> {
    let mut stream = daemon.connect()?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {API_ADDR}\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n",
        daemon.token
    )?;
    Ok(stream)
}

/// Reads from `stream` until `bytes` have come (the headers included) or it ends.
fn read_some(stream: &mut TcpStream, bytes: usize) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    while got.len() < bytes {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buffer[..n]);
    }
    Ok(got)
}

/// Seconds until the response to `GET path` starts (its status line and headers).
fn answered(daemon: &Daemon, path: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut stream = send(daemon, "GET", path)?;
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer)?;
        anyhow::ensure!(
            n > 0,
            "GET {path}: the connection closed before the headers"
        );
        got.extend_from_slice(&buffer[..n]);
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status_of(&got) == 200,
        "GET {path}: {}",
        String::from_utf8_lossy(&got)
    );
    Ok(elapsed)
}

/// The id in the response that created a list.
fn list_id(raw: &[u8]) -> anyhow::Result<String> {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(4096)]);
    let start = text.find("\"id\":\"").context("no id in the response")? + 6;
    let end = text[start..].find('"').context("no end of the id")?;
    Ok(text[start..start + end].to_owned())
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// One round of the daemon at `size` entries.
fn daemon_round(size: u32, old: &[IpNet], new: &[IpNet]) -> anyhow::Result<Round> {
    let link = TestLink::create()?;
    let state = TempDir::new()?;
    let max_entries = (2 * size).to_string();
    let args = [
        "--max-entries",
        &max_entries,
        "--max-body-bytes",
        "536870912",
        "--ack-min",
        "1s",
        "--ack-max",
        "10m",
    ];
    let mut daemon = Daemon::start(&link, state.path(), &args)?;
    let (old_body, new_body) = (list_body(old), list_body(new));
    let mut round = Round::default();

    let (create, created) = timed(&daemon, "POST", "/v1/allowlists", Some(&old_body), 201)?;
    round.create = create;
    let id = list_id(&created)?;
    drop(created);
    let enable = format!("{{\"allowlist_ids\":[\"{id}\"],\"force\":true}}");
    round.enable = timed(
        &daemon,
        "POST",
        "/v1/enforcement/enable",
        Some(&enable),
        202,
    )?
    .0;
    std::thread::sleep(Duration::from_millis(1050));
    round.ack = timed(&daemon, "POST", "/v1/enforcement/acknowledge", None, 200)?.0;

    let mut scrapes = Vec::new();
    for _ in 0..5 {
        let (took, raw) = timed(&daemon, "GET", "/metrics", None, 200)?;
        scrapes.push(took);
        round.metrics_bytes = round.metrics_bytes.max(raw.len());
    }
    round.metrics = median(scrapes);

    // The replace, probed by readers all along.
    let path = format!("/v1/allowlists/{id}");
    let (replace, probes) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let writer = scope.spawn(|| timed(&daemon, "PUT", &path, Some(&new_body), 200));
        let mut slowest = [0f64; 3];
        let mut probes = 0;
        // The write is under way once its body is sent; probe until it answers.
        while !writer.is_finished() {
            let healthz = answered(&daemon, "/healthz")?;
            let lists = answered(&daemon, "/v1/allowlists")?;
            let enforcement = answered(&daemon, "/v1/enforcement")?;
            for (slot, took) in slowest.iter_mut().zip([healthz, lists, enforcement]) {
                *slot = slot.max(took);
            }
            probes += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        let replace = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the replace panicked"))??;
        Ok((replace.0, (slowest, probes)))
    })?;
    round.replace = replace;
    (round.during_replace, round.probes) = probes;
    round.kernel_mib = kernel_memory_mib(&state.pin_dir())?;
    round.peak_rss_mib = mib(daemon.peak_rss_kib());

    // Slow readers: each reads a little of a full listing, then stops reading.
    std::thread::sleep(Duration::from_millis(1000));
    round.idle_rss_mib = mib(daemon.rss_kib());
    let mut readers = Vec::new();
    for _ in 0..SLOW_READERS {
        let mut stream = send(&daemon, "GET", "/v1/allowlists")?;
        read_some(&mut stream, SLOW_READER_BYTES)?;
        readers.push(stream);
    }
    let mut peak = round.idle_rss_mib;
    for _ in 0..20 {
        peak = peak.max(mib(daemon.rss_kib()));
        std::thread::sleep(Duration::from_millis(50));
    }
    round.readers_enforcement = timed(&daemon, "GET", "/v1/enforcement", None, 200)?.0;
    round.readers_ack = timed(&daemon, "POST", "/v1/enforcement/acknowledge", None, 200)?.0;
    round.ack_replace = round.readers_ack;
    for _ in 0..20 {
        peak = peak.max(mib(daemon.rss_kib()));
        std::thread::sleep(Duration::from_millis(50));
    }
    round.readers_peak_rss_mib = peak;
    drop(readers);

    // A restart: from the old process gone to the new one answering, enforcing.
    daemon.stop()?;
    let started = Instant::now();
    let daemon = Daemon::start(&link, state.path(), &args)?;
    round.restart = started.elapsed().as_secs_f64();
    let (_, enforcement) = timed(&daemon, "GET", "/v1/enforcement", None, 200)?;
    anyhow::ensure!(
        String::from_utf8_lossy(&enforcement).contains("\"enforcing\":true"),
        "not enforcing after the restart"
    );
    Ok(round)
}

/// Kernel memory of every map pinned under `pin_dir` (any layout version), as `bpftool`
/// reports it (`bytes_memlock`), in MiB.
fn kernel_memory_mib(pin_dir: &Path) -> anyhow::Result<f64> {
    let bytes: u64 = pinned_maps(pin_dir)?
        .iter()
        .filter_map(|shown| shown["bytes_memlock"].as_u64())
        .sum();
    Ok(bytes as f64 / (1024.0 * 1024.0))
}

/// The median of `samples`.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `median (min–max)` of one figure over rounds.
fn spread(values: impl Iterator<Item = f64>, scale: f64, decimals: usize) -> (f64, String) {
    let mut values: Vec<f64> = values.map(|v| v * scale).collect();
    values.sort_by(f64::total_cmp);
    let median = median(values.clone());
    let (low, high) = (values[0], values[values.len() - 1]);
    (
        median,
        format!("{median:.decimals$} ({low:.decimals$}–{high:.decimals$})"),
    )
}

/// Writes the control-plane section.
fn report(text: &mut String, sizes: &[Size]) -> anyhow::Result<()> {
    writeln!(text, "\n## Control plane\n")?;
    writeln!(
        text,
        "A release `allowlistd` in a namespace, driven over its HTTP API with N IPv4 prefixes \
         (half /32, half /20–/28, none overlapping): create a list, enable it (the kernel \
         gets the policy), acknowledge, then replace it with N other prefixes (`PUT` on the \
         enabled list: written beside the old policy, then switched; pending until \
         acknowledged). Each request timed as a client sees it, to the last byte of the \
         response (the request bodies are serialized before the clock starts). Medians of \
         {ROUNDS} rounds, range in brackets; each round interleaved with the peers below.\n"
    )?;
    writeln!(
        text,
        "| entries | create (s) | enable (s) | create + enable (s) | acknowledge (s) | replace (s) | \
         acknowledge the replace (s) | peak RSS after the replace (MiB) | restart (s) |"
    )?;
    writeln!(text, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for s in sizes {
        let r = &s.rounds;
        writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.size,
            spread(r.iter().map(|r| r.create), 1.0, 2).1,
            spread(r.iter().map(|r| r.enable), 1.0, 2).1,
            spread(r.iter().map(|r| r.create + r.enable), 1.0, 2).1,
            spread(r.iter().map(|r| r.ack), 1.0, 3).1,
            spread(r.iter().map(|r| r.replace), 1.0, 2).1,
            spread(r.iter().map(|r| r.ack_replace), 1.0, 3).1,
            spread(r.iter().map(|r| r.peak_rss_mib), 1.0, 0).1,
            spread(r.iter().map(|r| r.restart), 1.0, 2).1,
        )?;
    }

    writeln!(text, "\n### Reads\n")?;
    writeln!(
        text,
        "`GET /metrics` with every entry enabled (5 scrapes a round). While the replace runs, a \
         client probes without pause: `/healthz`, `GET /v1/allowlists` (until its headers: \
         the answer starts; the body is the previous state, written as it is sent) and `GET \
         /v1/enforcement`; the slowest of each. Then {SLOW_READERS} clients each read \
         {} KiB of `GET /v1/allowlists` and stop reading, holding their responses: the daemon's \
         resident memory (`VmRSS`, sampled every 50 ms) against what it was just before, and \
         `GET /v1/enforcement` and the acknowledgement of the replace meanwhile.\n",
        SLOW_READER_BYTES / 1024
    )?;
    writeln!(
        text,
        "| entries | /metrics (ms) | /metrics (KiB) | slowest /healthz during the replace (ms) | \
         slowest GET /v1/allowlists (ms) | slowest GET /v1/enforcement (ms) | probes | idle RSS \
         (MiB) | peak RSS with slow readers (MiB) | /v1/enforcement with slow readers (ms) | \
         acknowledge with slow readers (ms) |"
    )?;
    writeln!(
        text,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for s in sizes {
        let r = &s.rounds;
        writeln!(
            text,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.size,
            spread(r.iter().map(|r| r.metrics), 1000.0, 1).1,
            r.iter().map(|r| r.metrics_bytes).max().unwrap_or(0) as f64 / 1024.0,
            spread(r.iter().map(|r| r.during_replace[0]), 1000.0, 1).1,
            spread(r.iter().map(|r| r.during_replace[1]), 1000.0, 1).1,
            spread(r.iter().map(|r| r.during_replace[2]), 1000.0, 1).1,
            r.iter().map(|r| r.probes).sum::<usize>(),
            spread(r.iter().map(|r| r.idle_rss_mib), 1.0, 0).1,
            spread(r.iter().map(|r| r.readers_peak_rss_mib), 1.0, 0).1,
            spread(r.iter().map(|r| r.readers_enforcement), 1000.0, 1).1,
            spread(r.iter().map(|r| r.readers_ack), 1000.0, 1).1,
        )?;
    }

    writeln!(text, "\n### Beside nftables and ipset\n")?;
    writeln!(
        text,
        "The same prefixes loaded, then replaced, in a namespace of the bench's own: `nft -f` \
         of a table with an interval set and a rule using it, then one `nft -f` that flushes \
         the set and adds the others (one transaction); `ipset restore` of a `hash:net` set, \
         then one `ipset restore` that fills a second set and swaps it in. The daemon's load \
         is create + enable + acknowledge, its replace the `PUT` + acknowledge. Seconds, \
         medians of {ROUNDS} (range).\n"
    )?;
    writeln!(
        text,
        "| entries | daemon load | nft load | ipset load | daemon replace | nft replace | ipset \
         replace | faster than both (load, replace) | kernel memory after the replace: daemon \
         / ipset (MiB) |"
    )?;
    writeln!(text, "|---:|---:|---:|---:|---:|---:|---:|---|---:|")?;
    for s in sizes {
        let r = &s.rounds;
        let of = |peer: Peer| s.peers.iter().filter(move |p| p.peer == peer);
        let load = spread(r.iter().map(|r| r.create + r.enable + r.ack), 1.0, 2);
        let replace = spread(r.iter().map(|r| r.replace + r.ack_replace), 1.0, 2);
        let nft_load = spread(of(Peer::Nft).map(|p| p.load), 1.0, 2);
        let ipset_load = spread(of(Peer::Ipset).map(|p| p.load), 1.0, 2);
        let nft_replace = spread(of(Peer::Nft).map(|p| p.replace), 1.0, 2);
        let ipset_replace = spread(of(Peer::Ipset).map(|p| p.replace), 1.0, 2);
        let memory = spread(r.iter().map(|r| r.kernel_mib), 1.0, 0);
        let ipset_memory = spread(of(Peer::Ipset).filter_map(|p| p.memory_mib), 1.0, 1);
        writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {}, {} | {} / {} |",
            s.size,
            load.1,
            nft_load.1,
            ipset_load.1,
            replace.1,
            nft_replace.1,
            ipset_replace.1,
            verdict(load.0 < nft_load.0.min(ipset_load.0)),
            verdict(replace.0 < nft_replace.0.min(ipset_replace.0)),
            memory.1,
            ipset_memory.1,
        )?;
    }
    targets(text, sizes)
}

/// The targets of the control plane, each with its verdict.
fn targets(text: &mut String, sizes: &[Size]) -> anyhow::Result<()> {
    writeln!(text, "\n### Targets\n")?;
    writeln!(text, "| target | measured | verdict |")?;
    writeln!(text, "|---|---:|---|")?;
    let at = |size: u32| sizes.iter().find(|s| s.size == size);
    let mut row = |what: &str, value: f64, unit: &str, limit: f64| -> anyhow::Result<()> {
        writeln!(
            text,
            "| {what} | {value:.2} {unit} | {} |",
            verdict(value <= limit)
        )?;
        Ok(())
    };
    let med = |s: &Size, f: fn(&Round) -> f64| median(s.rounds.iter().map(f).collect());
    if let Some(s) = at(100_000) {
        row(
            "100k entries created + enabled ≤ 0.25 s",
            med(s, |r| r.create + r.enable),
            "s",
            0.25,
        )?;
        row(
            "peak RSS after create, enable, ack, replace of 100k ≤ 64 MiB",
            med(s, |r| r.peak_rss_mib),
            "MiB",
            64.0,
        )?;
    }
    if let Some(s) = at(1_000_000) {
        row(
            "1M entries created + enabled ≤ 3 s",
            med(s, |r| r.create + r.enable),
            "s",
            3.0,
        )?;
        row(
            "1M replaced by 1M others ≤ 4 s",
            med(s, |r| r.replace),
            "s",
            4.0,
        )?;
        row(
            "peak RSS with 1M entries after the same sequence ≤ 400 MiB",
            med(s, |r| r.peak_rss_mib),
            "MiB",
            400.0,
        )?;
        let ipset_memory: Vec<f64> = s.peers.iter().filter_map(|p| p.memory_mib).collect();
        let ipset_memory = median(ipset_memory);
        row(
            &format!(
                "kernel memory of every map after the 1M replace ≤ 2x ipset's set of the same \
                 prefixes ({:.1} MiB, same run)",
                ipset_memory
            ),
            med(s, |r| r.kernel_mib),
            "MiB",
            2.0 * ipset_memory,
        )?;
        row(
            "restart with 1M entries to healthy and enforcing ≤ 3 s",
            med(s, |r| r.restart),
            "s",
            3.0,
        )?;
        row(
            "`GET /metrics` with 1M enabled entries ≤ 100 ms",
            med(s, |r| r.metrics) * 1000.0,
            "ms",
            100.0,
        )?;
        let bytes = s.rounds.iter().map(|r| r.metrics_bytes).max().unwrap_or(0);
        row(
            "`GET /metrics` with 1M enabled entries ≤ 1 MiB",
            bytes as f64 / 1024.0,
            "KiB",
            1024.0,
        )?;
        let slowest = |i: usize| {
            s.rounds
                .iter()
                .map(|r| r.during_replace[i])
                .fold(0.0, f64::max)
                * 1000.0
        };
        row(
            "`/healthz` during a 1M replace ≤ 100 ms (slowest)",
            slowest(0),
            "ms",
            100.0,
        )?;
        row(
            "`GET /v1/allowlists` answered during a 1M replace ≤ 100 ms (slowest)",
            slowest(1),
            "ms",
            100.0,
        )?;
        let ratio = med(s, |r| r.readers_peak_rss_mib / r.idle_rss_mib);
        row("10 slow readers at 1M: peak RSS ≤ 2× idle", ratio, "×", 2.0)?;
        let slowest_reader_wait = s
            .rounds
            .iter()
            .map(|r| r.readers_enforcement.max(r.readers_ack))
            .fold(0.0, f64::max)
            * 1000.0;
        row(
            "`/v1/enforcement` and acknowledge with 10 slow readers ≤ 100 ms (slowest)",
            slowest_reader_wait,
            "ms",
            100.0,
        )?;
    }
    writeln!(
        text,
        "\nWhat the figures are made of (the daemon's debug log, `RUST_LOG=allowlist_daemon=debug`, \
         times each transaction's model change, save and kernel write). A create is the \
         body's parsing, checks, a state file of its own for the list's entries (written once, \
         never again for an enable or an acknowledgement) and a response that echoes the list: \
         most of a create and of a replace. The kernel's part of an enable or a replace is the \
         range tables of both families built in one pass over the sorted prefixes and written \
         through small memory mappings, and the policy's SHA-256 for the generation's record \
         (the LPM trie this replaced took 1.2 µs a prefix, 1.1 s at 1M). A restart reads three \
         generation records instead of the tries. The kernel memory is the maps sized to the \
         policies in force (see Kernel memory): at 1M with the replace pending, three \
         generations of leaves sized for the class of 1.3M prefixes and the hit counts of \
         both lists' rule ids (16 bytes each, shared by the CPUs), three times ipset's one \
         set. The peak RSS at 1M is the \
         request body, its parsed entries, the old and new lists and policies alive at once \
         during a replace; the daemon keeps glibc's allocator to one arena (with one per \
         thread, the default, the same sequence peaked at 392-427 MiB, moving by tens of MiB \
         between rounds). Compare within one run."
    )?;
    Ok(())
}
