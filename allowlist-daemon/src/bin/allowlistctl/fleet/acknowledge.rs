//! `allowlistctl fleet ack` and `fleet reapply`: keeping a release on the hosts that have it
//! pending, and offering it again to those that reverted it.

use std::path::Path;

use allowlist_daemon::fleet::signature::SigningKey;
use allowlist_daemon::fleet::{FleetState, HostStatus};
use serde_json::json;

use super::{Etcd, current_or, operator, runtime};
use crate::output::Output;

/// `fleet ack`: acknowledges `release` (the current one by default), for the wave rolling
/// out when it has waves.
pub(super) fn acknowledge(
    release: Option<String>,
    sign_key: Option<&Path>,
    etcd: &Etcd,
) -> anyhow::Result<Output> {
    let signer = sign_key.map(SigningKey::read).transpose()?;
    let runtime = runtime()?;
    let mut store = etcd.connect(&runtime)?;
    let release = current_or(&runtime, &mut store, release)?;
    // The header's copy of the waves: the release itself may be large.
    let (header, _) = runtime.block_on(store.header(&release))?;
    let wave = match &header.rollout {
        None => None,
        Some(rollout) => {
            let (progress, _) = runtime.block_on(store.progress(&release))?;
            if let Some(halt) = progress.halted {
                anyhow::bail!(
                    "the rollout of release {release} halted in wave {} ({}: {}): no later wave \
                     applies it and an acknowledgement changes nothing; `allowlistctl fleet \
                     abort` takes the fleet back to the release before it",
                    halt.wave,
                    halt.host,
                    halt.reason
                );
            }
            Some((progress.open, rollout.count()))
        }
    };
    runtime.block_on(store.acknowledge(
        &release,
        wave.map(|(open, _)| open),
        &operator(),
        signer.as_ref(),
    ))?;
    // An acknowledgement no host can use any more changes nothing: say so.
    let hosts = runtime.block_on(store.hosts())?;
    let on_it: Vec<&HostStatus> = hosts
        .iter()
        .filter_map(|(_, status)| status.as_ref())
        .filter(|status| status.release.as_deref() == Some(release.as_str()))
        .collect();
    let reverted: Vec<&str> = on_it
        .iter()
        .filter(|status| status.state == FleetState::Reverted)
        .map(|status| status.host.as_str())
        .collect();
    let waiting = on_it
        .iter()
        .any(|status| matches!(status.state, FleetState::Pending | FleetState::Applying));
    if !reverted.is_empty() && !waiting {
        anyhow::bail!(
            "acknowledged release {release}, but no host has it pending: {} reverted it \
             already, and it changes nothing there; offer it again with `allowlistctl fleet \
             reapply`",
            reverted.join(", ")
        );
    }
    let signed = signer
        .as_ref()
        .map(|signer| format!(", signed by {}", signer.fingerprint()))
        .unwrap_or_default();
    let what = match wave {
        None => format!("release {release}"),
        Some((open, count)) if open < count => format!(
            "wave {open} of {count} of release {release} (wave {} starts once each host of \
             wave {open} acknowledged it)",
            open + 1
        ),
        Some((open, count)) => format!("wave {open} of {count}, the last, of release {release}"),
    };
    Ok(Output::Done(
        format!("acknowledged {what} for fleet {}{signed}", store.fleet()),
        json!({
            "acknowledged": release,
            "wave": wave.map(|(open, _)| open),
            "fleet": store.fleet(),
            "reverted": reverted,
        }),
    ))
}

/// `fleet reapply`: offers the current release again to `hosts` (by default every host that
/// reverted or failed it).
pub(super) fn reapply(hosts: Vec<String>, etcd: &Etcd) -> anyhow::Result<Output> {
    let runtime = runtime()?;
    let mut store = etcd.connect(&runtime)?;
    let release = current_or(&runtime, &mut store, None)?;
    let hosts = if hosts.is_empty() {
        runtime
            .block_on(store.hosts())?
            .into_iter()
            .filter_map(|(host, status)| {
                let status = status?;
                (status.release.as_deref() == Some(release.as_str())
                    && matches!(status.state, FleetState::Reverted | FleetState::Failed))
                .then_some(host)
            })
            .collect()
    } else {
        hosts
    };
    if hosts.is_empty() {
        anyhow::bail!("no host reverted or failed release {release}: nothing to offer");
    }
    runtime.block_on(store.reapply(&release, &hosts))?;
    Ok(Output::Done(
        format!(
            "offered release {release} again to {}: each applies it as a pending change, to \
             acknowledge (allowlistctl fleet ack {release})",
            hosts.join(", ")
        ),
        json!({ "offered": release, "hosts": hosts }),
    ))
}
