//! `GET /metrics`: the counters operators watch, in the Prometheus text format, written by
//! `prometheus-client`.

use std::collections::BTreeMap;

use allowlist_common::Counter;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::dataplane::DataplaneError;
use crate::fleet::{FleetState, FleetView};
use crate::service::{Snapshot, Usage};

/// Requests served by the API, by route and status code.
pub type RequestCounts = BTreeMap<(String, u16), u64>;

/// The content type of what [`render`] writes.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A series' labels, in order.
type Labels = Vec<(&'static str, String)>;

/// A series' value.
#[derive(Debug)]
enum Value {
    /// A counter's.
    Counter(u64),
    /// A gauge's, whole.
    Gauge(i64),
    /// A gauge's, with a fraction.
    Fraction(f64),
}

/// One metric family and its series, in the order read.
#[derive(Debug)]
struct Family {
    /// Its name, a counter's without the `_total` its series end in.
    name: &'static str,
    /// What it counts.
    help: &'static str,
    /// Counter or gauge.
    kind: MetricType,
    /// Its series.
    series: Vec<(Labels, Value)>,
}

/// The metrics of one scrape, in the order they are read (a family is declared even
/// without a series).
#[derive(Debug, Default)]
struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    /// A counter family `name` (its series end in `_total`) of `series`.
    fn counters(
        &mut self,
        name: &'static str,
        help: &'static str,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        self.families.push(Family {
            name: name.strip_suffix("_total").unwrap_or(name),
            help,
            kind: MetricType::Counter,
            series: series
                .into_iter()
                .map(|(labels, value)| (labels, Value::Counter(value)))
                .collect(),
        });
    }

    /// A gauge family `name` of `series`.
    fn gauges(
        &mut self,
        name: &'static str,
        help: &'static str,
        series: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        self.families.push(Family {
            name,
            help,
            kind: MetricType::Gauge,
            series: series
                .into_iter()
                .map(|(labels, value)| (labels, Value::Gauge(value)))
                .collect(),
        });
    }

    /// One gauge without labels.
    fn gauge(&mut self, name: &'static str, help: &'static str, value: i64) {
        self.gauges(name, help, [(Labels::new(), value)]);
    }

    /// One gauge without labels, with a fraction.
    fn fraction(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.families.push(Family {
            name,
            help,
            kind: MetricType::Gauge,
            series: vec![(Labels::new(), Value::Fraction(value))],
        });
    }

    /// One counter without labels.
    fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.counters(name, help, [(Labels::new(), value)]);
    }

    /// The text of every family.
    fn text(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let mut descriptor =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.series {
                let series = descriptor.encode_family(labels)?;
                match value {
                    Value::Counter(value) => ConstCounter::new(*value).encode(series)?,
                    Value::Gauge(value) => ConstGauge::new(*value).encode(series)?,
                    Value::Fraction(value) => ConstGauge::new(*value).encode(series)?,
                }
            }
        }
        Ok(())
    }
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
    let mut scrape = Scrape::default();

    let interfaces = usage.interface_counters()?;
    let verdicts = interfaces.iter().flat_map(|(interface, counters)| {
        Counter::ALL
            .into_iter()
            .filter(|counter| {
                !matches!(
                    counter,
                    Counter::FlowsRecorded | Counter::PreviewWouldDrop | Counter::PreviewWouldPass
                )
            })
            .map(move |counter| {
                let labels = vec![
                    ("interface", interface.clone()),
                    ("mode", snapshot.mode.to_owned()),
                    ("verdict", counter.name().to_owned()),
                ];
                (labels, counters.get(counter))
            })
    });
    scrape.counters(
        "allowlist_packets_total",
        "Packets seen by the XDP program, by interface (other: test runs and interfaces \
         without a slot of their own) and verdict, with the program's current mode.",
        verdicts,
    );
    let previewed = interfaces.iter().flat_map(|(interface, counters)| {
        [
            ("would_drop", Counter::PreviewWouldDrop),
            ("would_pass", Counter::PreviewWouldPass),
        ]
        .map(|(candidate, counter)| {
            let labels = vec![
                ("interface", interface.clone()),
                ("candidate", candidate.to_owned()),
            ];
            (labels, counters.get(counter))
        })
    });
    scrape.counters(
        "allowlist_preview_packets_total",
        "Packets a preview's candidate would treat otherwise than the policy in force, by \
         interface: would_drop (passed today), would_pass (refused today).",
        previewed,
    );

    scrape.counters(
        "allowlist_allowlist_hits_total",
        "Packets allowed by each allowlist.",
        stats.allowlists.iter().map(|list| {
            let labels = vec![
                ("allowlist_id", list.allowlist_id.clone()),
                ("name", list.name.clone()),
                ("enabled", list.enabled.to_string()),
            ];
            (labels, list.hits)
        }),
    );
    scrape.gauges(
        "allowlist_allowlist_entries",
        "Entries in each allowlist.",
        stats.allowlists.iter().map(|list| {
            let labels = vec![
                ("allowlist_id", list.allowlist_id.clone()),
                ("name", list.name.clone()),
            ];
            (labels, i64::try_from(list.entries).unwrap_or(i64::MAX))
        }),
    );
    scrape.counters(
        "allowlist_entry_hits_total",
        "Packets allowed by the entries with the most hits (--metrics-top-entries of them, \
         those with none left out); every entry's hits are in GET /v1/stats and the list's \
         entries.",
        stats
            .entries
            .iter()
            .filter(|entry| entry.hits > 0)
            .map(|entry| {
                let labels = vec![
                    ("allowlist_id", entry.allowlist_id.clone()),
                    ("entry_id", entry.entry_id.to_string()),
                    ("cidr", entry.cidr.to_string()),
                ];
                (labels, entry.hits)
            }),
    );
    scrape.counters(
        "allowlist_always_allow_hits_total",
        "Packets allowed by each always-allow prefix.",
        stats
            .always_allow
            .iter()
            .map(|prefix| (vec![("cidr", prefix.cidr.to_string())], prefix.hits)),
    );

    scrape.gauge(
        "allowlist_enforcing",
        "1 while some allowlist is enabled.",
        i64::from(model.enforcing()),
    );
    scrape.gauge(
        "allowlist_pending_change",
        "1 while a change waits for acknowledgement.",
        i64::from(model.pending().is_some()),
    );
    let seconds = model.pending().map_or(0.0, |pending| {
        (pending.revert_at - OffsetDateTime::now_utc())
            .as_seconds_f64()
            .max(0.0)
    });
    scrape.fraction(
        "allowlist_pending_revert_seconds",
        "Seconds until the pending change is reverted (0 when none is pending).",
        seconds,
    );
    scrape.counter(
        "allowlist_reverts_total",
        "Changes reverted because they were not acknowledged in time.",
        snapshot.reverts,
    );

    scrape.gauge(
        "allowlist_flows",
        "Flows the host started that are remembered for replies.",
        i64::try_from(stats.flows.live).unwrap_or(i64::MAX),
    );
    scrape.counter(
        "allowlist_flows_recorded_total",
        "Flows recorded by the egress program.",
        stats.flows.recorded,
    );
    scrape.counter(
        "allowlist_flows_evicted_total",
        "Flows pushed out by newer ones because the map was full.",
        stats.flows.evicted,
    );

    scrape.gauges(
        "allowlist_kernel_memory_bytes",
        "Kernel memory each BPF map takes now, as the kernel accounts it (memlock).",
        stats.kernel_memory.maps.iter().map(|map| {
            let bytes = i64::try_from(map.bytes).unwrap_or(i64::MAX);
            (vec![("map", map.map.clone())], bytes)
        }),
    );

    scrape.counters(
        "allowlist_api_requests_total",
        "Admin API requests, by route and status.",
        requests.iter().map(|((route, status), count)| {
            let labels = vec![("route", route.clone()), ("status", status.to_string())];
            (labels, *count)
        }),
    );
    if let Some(fleet) = fleet {
        render_fleet(&mut scrape, fleet);
    }
    Ok(scrape.text())
}

/// The fleet follower's series: connected, where the host stands, which release.
fn render_fleet(scrape: &mut Scrape, fleet: &FleetView) {
    scrape.gauge(
        "allowlist_fleet_connected",
        "1 while the fleet's etcd answers.",
        i64::from(fleet.connected),
    );
    let states = [
        FleetState::Waiting,
        FleetState::Applying,
        FleetState::Pending,
        FleetState::Acknowledged,
        FleetState::Reverted,
        FleetState::Failed,
        FleetState::Detached,
    ];
    scrape.gauges(
        "allowlist_fleet_state",
        "1 for where the host stands with the fleet's current release.",
        states.map(|state| {
            let name = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (vec![("state", name)], i64::from(fleet.state == state))
        }),
    );
    let labels = vec![
        ("fleet", fleet.fleet.clone()),
        ("release", fleet.release.clone().unwrap_or_default()),
        ("applied", fleet.applied.clone().unwrap_or_default()),
    ];
    scrape.gauges(
        "allowlist_fleet_release_info",
        "The fleet's current release and the one acknowledged on this host.",
        [(labels, 1)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_in_order_declared_even_empty_with_labels_escaped() {
        let mut scrape = Scrape::default();
        scrape.counters(
            "allowlist_hits_total",
            "Hits.",
            [
                (vec![("name", "b\"\\\n".to_owned())], 2),
                (vec![("name", "a".to_owned())], 1),
            ],
        );
        scrape.gauges("allowlist_empty", "Nothing yet.", []);
        scrape.fraction("allowlist_seconds", "Seconds.", 1.5);
        assert_eq!(
            scrape.text(),
            "# HELP allowlist_hits_total Hits.\n\
             # TYPE allowlist_hits_total counter\n\
             allowlist_hits_total{name=\"b\\\"\\\\\\n\"} 2\n\
             allowlist_hits_total{name=\"a\"} 1\n\
             # HELP allowlist_empty Nothing yet.\n\
             # TYPE allowlist_empty gauge\n\
             # HELP allowlist_seconds Seconds.\n\
             # TYPE allowlist_seconds gauge\n\
             allowlist_seconds 1.5\n"
        );
    }
}
