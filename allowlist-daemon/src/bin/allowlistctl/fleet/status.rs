//! `allowlistctl fleet status`: each host's state, how far a release in waves got, and
//! what the hosts of a preview found.

use std::collections::BTreeMap;

use allowlist_daemon::fleet::preview::{FleetPreview, HostPreview};
use serde_json::{Value, json};

use super::{Etcd, runtime};
use crate::output::Output;

/// `fleet status`: the current release, every member's status (`gone` when its lease
/// expired) with its wave, and the rollout's waves, open wave and halt.
pub(super) fn status(etcd: &Etcd) -> anyhow::Result<Output> {
    let runtime = runtime()?;
    let mut store = etcd.connect(&runtime)?;
    let current = runtime.block_on(store.current())?.map(|(id, _)| id);
    let hosts = runtime.block_on(store.hosts())?;
    let mut rollout = None;
    if let Some(id) = &current {
        // The header's copy of the waves (the release itself may be large); a header that
        // cannot be read shows no waves: the hosts say what is wrong with it.
        let header = match runtime.block_on(store.header(id)) {
            Ok((header, _)) => Some(header),
            Err(err) if err.is_content() => None,
            Err(err) => return Err(err.into()),
        };
        if let Some(waves) = header.and_then(|header| header.rollout) {
            let (progress, _) = runtime.block_on(store.progress(id))?;
            rollout = Some((waves, progress));
        }
    }
    let by_host = rollout.as_ref().map(|(waves, _)| waves.waves_by_host());
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|(host, status)| {
            let mut value = match status {
                Some(status) => json!(status),
                None => json!({ "host": host, "state": "gone" }),
            };
            if let (Some((waves, _)), Some(by_host)) = (&rollout, &by_host) {
                let last = waves.count();
                value["wave"] = json!(by_host.get(host.as_str()).copied().unwrap_or(last));
            }
            value
        })
        .collect();
    let rollout = rollout.map(|(waves, progress)| {
        json!({
            "waves": waves
                .specs
                .iter()
                .zip(&waves.waves)
                .enumerate()
                .map(|(index, (spec, hosts))| json!({
                    "wave": index + 1,
                    "spec": spec,
                    "hosts": hosts,
                }))
                .collect::<Vec<_>>(),
            "open": progress.open,
            "halted": progress.halted,
            "soak_seconds": waves.soak_seconds,
        })
    });
    Ok(Output::Fleet(json!({
        "fleet": etcd.fleet,
        "current": current,
        "rollout": rollout,
        "hosts": hosts,
    })))
}

/// `fleet status --preview`: the fleet's last preview, each host's findings, and the
/// sources the release would drop summed over the hosts.
pub(super) fn preview(etcd: &Etcd) -> anyhow::Result<Output> {
    let runtime = runtime()?;
    let mut store = etcd.connect(&runtime)?;
    let Some(asked) = runtime.block_on(FleetPreview::current(&mut store))? else {
        anyhow::bail!(
            "fleet {} has no preview: start one with `allowlistctl fleet publish -f FILE \
             --preview 10m`",
            etcd.fleet
        );
    };
    let reports = runtime.block_on(HostPreview::list(&mut store, &asked.release))?;
    let members: Vec<String> = runtime
        .block_on(store.hosts())?
        .into_iter()
        .map(|(host, _)| host)
        .filter(|host| asked.includes(host))
        .collect();
    // Every source the release would drop, summed over the hosts that saw it.
    let mut dropped: BTreeMap<String, (u64, u64, Vec<String>)> = BTreeMap::new();
    let mut hosts: Vec<Value> = Vec::new();
    for host in &members {
        let Some(found) = reports.iter().find(|report| &report.host == host) else {
            hosts.push(json!({ "host": host, "state": "no report" }));
            continue;
        };
        let report = found.report.clone().unwrap_or(Value::Null);
        for source in report["would_drop"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let address = source["address"].as_str().unwrap_or_default().to_owned();
            let sum = dropped.entry(address).or_default();
            sum.0 += source["packets"].as_u64().unwrap_or(0);
            sum.1 += source["bytes"].as_u64().unwrap_or(0);
            sum.2.push(host.clone());
        }
        let state = match (&found.error, report["state"].as_str()) {
            (Some(_), _) => "error",
            (None, Some(state)) => state,
            (None, None) => "no report",
        };
        hosts.push(json!({
            "host": host,
            "state": state,
            "error": found.error,
            "would_drop_packets": report["would_drop"]["packets"],
            "would_drop_sources": report["would_drop"]["sources"].as_array().map_or(0, Vec::len),
            "would_pass_packets": report["would_pass"]["packets"],
            "would_cut": report["would_cut"],
            "updated_at": found.updated_at,
            "report": report,
        }));
    }
    let mut would_drop: Vec<Value> = dropped
        .into_iter()
        .map(|(address, (packets, bytes, hosts))| {
            json!({ "address": address, "packets": packets, "bytes": bytes, "hosts": hosts })
        })
        .collect();
    would_drop.sort_by_key(|source| std::cmp::Reverse(source["packets"].as_u64()));
    Ok(Output::FleetPreview(json!({
        "fleet": etcd.fleet,
        "preview": asked,
        "hosts": hosts,
        "would_drop": would_drop,
    })))
}
