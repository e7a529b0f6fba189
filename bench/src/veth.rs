//! What `ip` says of a test link's interfaces: their MAC addresses and packet counts.

use allowlist_tests::netns::NetNs;
use anyhow::Context as _;

/// The MAC address of `interface` in `ns`.
pub fn mac(ns: &NetNs, interface: &str) -> anyhow::Result<String> {
    let shown = ns.ip(&["-j", "link", "show", interface])?;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    shown[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no MAC address for {interface}"))
}

/// Packets `interface` in `ns` sent (`tx`) or received (`rx`).
pub fn packets(ns: &NetNs, interface: &str, way: &str) -> anyhow::Result<u64> {
    let shown = ns.ip(&["-j", "-s", "link", "show", interface])?;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    shown[0]["stats64"][way]["packets"]
        .as_u64()
        .with_context(|| format!("no {way} packet count for {interface}"))
}
