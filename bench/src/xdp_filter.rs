//! The peer on the same hook: xdp-filter from Debian's xdp-tools, timed by `bpftool prog run`.

use std::net::{IpAddr, Ipv4Addr};

use allowlist_tests::frames::udp_frame;
use allowlist_tests::netns::{SERVER_IF, TestLink};
use anyhow::Context as _;

use crate::measure::REPEAT;

/// Per-packet time of xdp-filter (Debian's xdp-tools) in deny mode holding the addresses
/// `listed`, on a frame from a listed (dropped) and from an unlisted (passed) source, as
/// `bpftool prog run` measures it: medians of `runs` runs. It holds 10 000 addresses
/// at most: `None` beyond that.
pub fn xdp_filter(listed: &[Ipv4Addr], runs: usize) -> anyhow::Result<Option<[f64; 2]>> {
    const CAPACITY: usize = 10_000;
    if listed.len() > CAPACITY || listed.is_empty() {
        return Ok(None);
    }
    let link = TestLink::create()?;
    let netns = format!("--net={}", link.server.path());
    let in_netns = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        let output = std::process::Command::new("nsenter")
            .arg(&netns)
            .args(args)
            .output()
            .with_context(|| format!("running {args:?}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    };
    let outcome = (|| -> anyhow::Result<[f64; 2]> {
        in_netns(&["xdp-filter", "load", "-m", "skb", "-p", "allow", SERVER_IF])?;
        for addr in listed {
            in_netns(&["xdp-filter", "ip", "-m", "src", &addr.to_string()])?;
        }
        let shown = in_netns(&["ip", "-j", "-d", "link", "show", SERVER_IF])?;
        let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
        let id = shown[0]["xdp"]["prog"]["id"]
            .as_u64()
            .context("xdp-filter's program id")?;
        let unlisted = Ipv4Addr::new(203, 0, 113, 9);
        anyhow::ensure!(!listed.contains(&unlisted));
        let mut samples: [Vec<f64>; 2] = Default::default();
        let dir = std::env::temp_dir().join(format!("allowlist-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let frames = [listed[0], unlisted].map(|source| udp_frame(IpAddr::V4(source)));
        let paths = [dir.join("listed.bin"), dir.join("unlisted.bin")];
        for (frame, path) in frames.iter().zip(&paths) {
            std::fs::write(path, frame)?;
        }
        for _ in 0..runs {
            for (case, path) in paths.iter().enumerate() {
                let output = std::process::Command::new("bpftool")
                    .args(["prog", "run", "id", &id.to_string(), "data_in"])
                    .arg(path)
                    .args(["repeat", &REPEAT.to_string()])
                    .output()
                    .context("running bpftool")?;
                let text = String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr);
                let ns = text
                    .split("duration (average): ")
                    .nth(1)
                    .and_then(|rest| rest.split("ns").next())
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .with_context(|| format!("bpftool prog run said: {text}"))?;
                samples[case].push(ns);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(samples.map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        }))
    })();
    let _ = in_netns(&["xdp-filter", "unload", "--all", SERVER_IF]);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/xdp-filter");
    // libxdp's own directory, if xdp-filter left it empty.
    let _ = std::fs::remove_dir("/sys/fs/bpf/xdp");
    outcome.map(Some)
}
