//! `allowlistctl fleet status`: each host's state, and how far a release in waves got.

use allowlist_daemon::fleet::release::MAX_RELEASE_BYTES;
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
        // Only a release in waves has a progress key: the content is read for those alone.
        let (progress, revision) = runtime.block_on(store.progress(id))?;
        if revision != 0 {
            let (release, _) = runtime.block_on(store.release(id, MAX_RELEASE_BYTES))?;
            rollout = release.rollout.map(|waves| (waves, progress));
        }
    }
    let hosts: Vec<Value> = hosts
        .into_iter()
        .map(|(host, status)| {
            let mut value = match status {
                Some(status) => json!(status),
                None => json!({ "host": host, "state": "gone" }),
            };
            if let Some((waves, _)) = &rollout {
                value["wave"] = json!(waves.wave_of(&host));
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
