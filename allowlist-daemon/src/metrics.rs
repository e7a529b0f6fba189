//! `GET /metrics`: the counters operators watch, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use allowlist_common::Counter;
use time::OffsetDateTime;

use crate::dataplane::DataplaneError;
use crate::fleet::{FleetState, FleetView};
use crate::service::{Snapshot, Usage};

/// Requests served by the API, by route and status code.
pub type RequestCounts = BTreeMap<(String, u16), u64>;

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric: per interface, per list, per always-allow prefix, and per entry
/// only for the `top_entries` entries with the most hits, so that a scrape stays small
/// whatever the size of the lists.
pub fn render(
    snapshot: &Snapshot,
    usage: &Usage,
    top_entries: usize,
    requests: &RequestCounts,
    fleet: Option<&FleetView>,
) -> Result<String, DataplaneError> {
    let stats = usage.stats(snapshot, top_entries)?;
    let model = &snapshot.model;
    let mut out = String::new();

    family(
        &mut out,
        "allowlist_packets_total",
        "counter",
        "Packets seen by the XDP program, by interface (other: test runs and interfaces \
         without a slot of their own) and verdict, with the program's current mode.",
    );
    let interfaces = usage.interface_counters()?;
    for (interface, counters) in &interfaces {
        for counter in Counter::ALL {
            if matches!(
                counter,
                Counter::FlowsRecorded | Counter::PreviewWouldDrop | Counter::PreviewWouldPass
            ) {
                continue;
            }
            let _ = writeln!(
                out,
                "allowlist_packets_total{{interface=\"{}\",mode=\"{}\",verdict=\"{}\"}} {}",
                label(interface),
                snapshot.mode,
                counter.name(),
                counters.get(counter)
            );
        }
    }

    family(
        &mut out,
        "allowlist_preview_packets_total",
        "counter",
        "Packets a preview's candidate would treat otherwise than the policy in force, by \
         interface: would_drop (passed today), would_pass (refused today).",
    );
    for (interface, counters) in &interfaces {
        for (candidate, counter) in [
            ("would_drop", Counter::PreviewWouldDrop),
            ("would_pass", Counter::PreviewWouldPass),
        ] {
            let _ = writeln!(
                out,
                "allowlist_preview_packets_total{{interface=\"{}\",candidate=\"{candidate}\"}} {}",
                label(interface),
                counters.get(counter)
            );
        }
    }

    family(
        &mut out,
        "allowlist_allowlist_hits_total",
        "counter",
        "Packets allowed by each allowlist.",
    );
    for list in &stats.allowlists {
        let _ = writeln!(
            out,
            "allowlist_allowlist_hits_total{{allowlist_id=\"{}\",name=\"{}\",enabled=\"{}\"}} {}",
            label(&list.allowlist_id),
            label(&list.name),
            list.enabled,
            list.hits
        );
    }
    family(
        &mut out,
        "allowlist_allowlist_entries",
        "gauge",
        "Entries in each allowlist.",
    );
    for list in &stats.allowlists {
        let _ = writeln!(
            out,
            "allowlist_allowlist_entries{{allowlist_id=\"{}\",name=\"{}\"}} {}",
            label(&list.allowlist_id),
            label(&list.name),
            list.entries
        );
    }
    family(
        &mut out,
        "allowlist_entry_hits_total",
        "counter",
        "Packets allowed by the entries with the most hits (--metrics-top-entries of them, \
         those with none left out); every entry's hits are in GET /v1/stats and the list's \
         entries.",
    );
    for entry in stats.entries.iter().filter(|entry| entry.hits > 0) {
        let _ = writeln!(
            out,
            "allowlist_entry_hits_total{{allowlist_id=\"{}\",entry_id=\"{}\",cidr=\"{}\"}} {}",
            label(&entry.allowlist_id),
            entry.entry_id,
            entry.cidr,
            entry.hits
        );
    }
    family(
        &mut out,
        "allowlist_always_allow_hits_total",
        "counter",
        "Packets allowed by each always-allow prefix.",
    );
    for prefix in &stats.always_allow {
        let _ = writeln!(
            out,
            "allowlist_always_allow_hits_total{{cidr=\"{}\"}} {}",
            prefix.cidr, prefix.hits
        );
    }

    family(
        &mut out,
        "allowlist_enforcing",
        "gauge",
        "1 while some allowlist is enabled.",
    );
    let _ = writeln!(out, "allowlist_enforcing {}", u8::from(model.enforcing()));
    family(
        &mut out,
        "allowlist_pending_change",
        "gauge",
        "1 while a change waits for acknowledgement.",
    );
    let _ = writeln!(
        out,
        "allowlist_pending_change {}",
        u8::from(model.pending().is_some())
    );
    family(
        &mut out,
        "allowlist_pending_revert_seconds",
        "gauge",
        "Seconds until the pending change is reverted (0 when none is pending).",
    );
    let seconds = model.pending().map_or(0.0, |pending| {
        (pending.revert_at - OffsetDateTime::now_utc())
            .as_seconds_f64()
            .max(0.0)
    });
    let _ = writeln!(out, "allowlist_pending_revert_seconds {seconds:.3}");
    family(
        &mut out,
        "allowlist_reverts_total",
        "counter",
        "Changes reverted because they were not acknowledged in time.",
    );
    let _ = writeln!(out, "allowlist_reverts_total {}", snapshot.reverts);

    family(
        &mut out,
        "allowlist_flows",
        "gauge",
        "Flows the host started that are remembered for replies.",
    );
    let _ = writeln!(out, "allowlist_flows {}", stats.flows.live);
    family(
        &mut out,
        "allowlist_flows_recorded_total",
        "counter",
        "Flows recorded by the egress program.",
    );
    let _ = writeln!(
        out,
        "allowlist_flows_recorded_total {}",
        stats.flows.recorded
    );
    family(
        &mut out,
        "allowlist_flows_evicted_total",
        "counter",
        "Flows pushed out by newer ones because the map was full.",
    );
    let _ = writeln!(out, "allowlist_flows_evicted_total {}", stats.flows.evicted);

    family(
        &mut out,
        "allowlist_kernel_memory_bytes",
        "gauge",
        "Kernel memory each BPF map takes now, as the kernel accounts it (memlock).",
    );
    for map in &stats.kernel_memory.maps {
        let _ = writeln!(
            out,
            "allowlist_kernel_memory_bytes{{map=\"{}\"}} {}",
            label(&map.map),
            map.bytes
        );
    }

    family(
        &mut out,
        "allowlist_api_requests_total",
        "counter",
        "Admin API requests, by route and status.",
    );
    for ((route, status), count) in requests {
        let _ = writeln!(
            out,
            "allowlist_api_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
            label(route)
        );
    }
    if let Some(fleet) = fleet {
        render_fleet(&mut out, fleet);
    }
    Ok(out)
}

/// The fleet follower's series: connected, where the host stands, which release.
fn render_fleet(out: &mut String, fleet: &FleetView) {
    family(
        out,
        "allowlist_fleet_connected",
        "gauge",
        "1 while the fleet's etcd answers.",
    );
    let _ = writeln!(
        out,
        "allowlist_fleet_connected {}",
        u8::from(fleet.connected)
    );
    family(
        out,
        "allowlist_fleet_state",
        "gauge",
        "1 for where the host stands with the fleet's current release.",
    );
    for state in [
        FleetState::Waiting,
        FleetState::Applying,
        FleetState::Pending,
        FleetState::Acknowledged,
        FleetState::Reverted,
        FleetState::Failed,
        FleetState::Detached,
    ] {
        let name = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "allowlist_fleet_state{{state=\"{name}\"}} {}",
            u8::from(fleet.state == state)
        );
    }
    family(
        out,
        "allowlist_fleet_release_info",
        "gauge",
        "The fleet's current release and the one acknowledged on this host.",
    );
    let _ = writeln!(
        out,
        "allowlist_fleet_release_info{{fleet=\"{}\",release=\"{}\",applied=\"{}\"}} 1",
        label(&fleet.fleet),
        label(fleet.release.as_deref().unwrap_or("")),
        label(fleet.applied.as_deref().unwrap_or(""))
    );
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
