//! `allowlistctl fleet publish` and `fleet abort`: new releases, in waves or at once.

use std::path::PathBuf;

use allowlist_daemon::fleet::preview::FleetPreview;
use allowlist_daemon::fleet::release::MAX_RELEASE_BYTES;
use allowlist_daemon::fleet::signature::SigningKey;
use allowlist_daemon::fleet::{FleetStore, Release, Rollout};
use allowlist_daemon::model::{DesiredList, rfc3339};
use allowlist_daemon::service::MAX_PREVIEW_WINDOW;
use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::{Etcd, operator, runtime};
use crate::output::Output;

/// The `--base` of a publish that replaces whatever release the fleet is at.
const CURRENT_BASE: &str = "current";

/// What `fleet publish` is asked.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The policy file.
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    file: PathBuf,
    /// The release the file is based on [default: the file's `base`]. `current`: the
    /// release the fleet is at when this publishes, for a pipeline that publishes a
    /// repository's file on every commit: the file replaces whatever is there (still
    /// refused if another publish lands between the read and the write), and nothing is
    /// published when that release already holds the same lists.
    #[arg(long, value_name = "RELEASE|current")]
    base: Option<String>,
    /// Sign the release with this Ed25519 key (OpenSSH format, unencrypted): hosts with
    /// --fleet-trust apply only releases their trusted keys signed. Repeat for several.
    #[arg(long = "sign-key", value_name = "FILE")]
    sign_keys: Vec<PathBuf>,
    /// Roll the release out in waves, in this order: host names, globs ('canary-*') or a
    /// share of the fleet's members ('25%', counted from the first wave). The last wave is
    /// every other host, those that join later included ('100%' may end the list). A wave
    /// applies the release once every host of the wave before acknowledged it; a host
    /// that reverts or fails it halts the rollout (see `fleet abort`).
    #[arg(long = "wave", value_name = "HOSTS|GLOB|N%")]
    waves: Vec<String>,
    /// With --wave: how long a wave's hosts keep the release, all connected and none
    /// reverted, before they acknowledge it themselves and the next wave starts (10m).
    /// Shorter than the hosts' --ack-max, or they revert first. Without it, `fleet ack`
    /// acknowledges each wave.
    #[arg(long, value_name = "DURATION", requires = "waves")]
    soak: Option<humantime::Duration>,
    /// Publish nothing: have the hosts (the first wave's with --wave, else every host)
    /// judge their live traffic against the release for this long (10m, at most 24h),
    /// changing no verdict; `fleet status --preview` shows, per host, what it would drop
    /// and let in. The release is stored, not made current.
    #[arg(long, value_name = "DURATION")]
    preview: Option<humantime::Duration>,
    #[command(flatten)]
    etcd: Etcd,
}

/// A new release id: the time, then randomness (`r20270115T080000-3f9a`).
fn new_release_id() -> anyhow::Result<String> {
    let now = time::OffsetDateTime::now_utc();
    let mut random = [0u8; 2];
    getrandom::fill(&mut random).map_err(|err| anyhow::anyhow!("getrandom: {err}"))?;
    Ok(format!(
        "r{:04}{:02}{:02}T{:02}{:02}{:02}-{:02x}{:02x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        random[0],
        random[1]
    ))
}

/// What a publish based on the current release says when `current` already holds its lists.
fn unchanged(fleet: &str, current: &str) -> Output {
    Output::Done(
        format!("nothing to publish: release {current} of fleet {fleet} already holds these lists"),
        json!({ "published": null, "fleet": fleet, "current": current }),
    )
}

fn signers(paths: &[PathBuf]) -> anyhow::Result<Vec<SigningKey>> {
    Ok(paths
        .iter()
        .map(|path| SigningKey::read(path))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The waves of `rollout`, for people: `1 canary-* (canary-1, canary-2), 2 25% (4 hosts)`.
fn describe_waves(rollout: &Rollout) -> String {
    let last = rollout.count();
    rollout
        .specs
        .iter()
        .zip(&rollout.waves)
        .enumerate()
        .map(|(index, (spec, hosts))| {
            let hosts = match hosts.len() {
                0 => "no host yet".to_owned(),
                1..=3 => hosts.join(", "),
                n => format!("{n} hosts"),
            };
            let later = if index + 1 == last {
                " and any host that joins"
            } else {
                ""
            };
            format!("wave {} {spec} ({hosts}{later})", index + 1)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Publishes `release` signed by `signers`; says what hosts do now.
fn publish_release(
    runtime: &tokio::runtime::Runtime,
    store: &mut FleetStore,
    release: &Release,
    signers: &[SigningKey],
    what: String,
) -> anyhow::Result<Output> {
    runtime.block_on(store.publish(release, signers))?;
    let signed: Vec<String> = signers.iter().map(SigningKey::fingerprint).collect();
    let signed_text = match signed.is_empty() {
        true => ", unsigned".to_owned(),
        false => format!(", signed by {}", signed.join(", ")),
    };
    let next = match &release.rollout {
        Some(rollout) => format!(
            "in {} waves: {}. Wave 1 applies it now and reverts it unless acknowledged: {}",
            rollout.count(),
            describe_waves(rollout),
            match rollout.soak_seconds {
                Some(soak) => format!("each wave goes on by itself after {soak} s, all healthy"),
                None => format!("allowlistctl fleet ack {} (once per wave)", release.id),
            }
        ),
        None => format!(
            "hosts apply it now and revert it unless acknowledged: allowlistctl fleet ack {}",
            release.id
        ),
    };
    Ok(Output::Done(
        format!(
            "published release {} of fleet {} ({what}, based on {}{signed_text}); {next}",
            release.id,
            store.fleet(),
            release.base.as_deref().unwrap_or("nothing"),
        ),
        json!({
            "published": release.id,
            "fleet": store.fleet(),
            "base": release.base,
            "signed_by": signed,
            "rollout": release.rollout,
        }),
    ))
}

/// `fleet publish`.
pub(super) fn publish(asked: PublishArgs) -> anyhow::Result<Output> {
    let etcd = &asked.etcd;
    let policy = crate::read_policy_file(&asked.file)?;
    let signers = signers(&asked.sign_keys)?;
    let runtime = runtime()?;
    let mut store = etcd.connect(&runtime)?;
    let base = match asked.base.or(policy.base) {
        Some(base) if base == CURRENT_BASE => {
            let current = runtime.block_on(store.current())?.map(|(id, _)| id);
            if let Some(id) = &current {
                let (release, _) = runtime.block_on(store.release(id, MAX_RELEASE_BYTES))?;
                if release.allowlists == policy.allowlists {
                    return Ok(unchanged(store.fleet(), id));
                }
            }
            current
        }
        base => base,
    };
    let (waves, soak) = match (&policy.rollout, asked.waves.is_empty()) {
        // The command line says it for this publish; else the file's table.
        (Some(table), true) => {
            let soak = table
                .soak
                .as_deref()
                .map(|soak| {
                    humantime::parse_duration(soak).with_context(|| {
                        format!("{}: [rollout] soak {soak:?}", asked.file.display())
                    })
                })
                .transpose()?;
            (table.waves.clone(), soak)
        }
        _ => (asked.waves, asked.soak.map(Into::into)),
    };
    let rollout = match waves.is_empty() {
        true => None,
        false => {
            let members: Vec<String> = runtime
                .block_on(store.hosts())?
                .into_iter()
                .map(|(host, _)| host)
                .collect();
            let soak = soak.map(|soak: std::time::Duration| soak.as_secs());
            Some(Rollout::plan(&waves, &members, soak)?)
        }
    };
    let release = Release {
        id: new_release_id()?,
        base,
        published_at: rfc3339(time::OffsetDateTime::now_utc()),
        by: operator(),
        allowlists: policy.allowlists,
        rollout,
    };
    if let Some(window) = asked.preview {
        return preview(&runtime, &mut store, &release, &signers, window.into());
    }
    let what = format!("from {}", asked.file.display());
    publish_release(&runtime, &mut store, &release, &signers, what)
}

/// `fleet publish --preview`: stores `release` and asks the hosts of its first wave (every
/// host without waves) to judge live traffic against it for `window`.
fn preview(
    runtime: &tokio::runtime::Runtime,
    store: &mut FleetStore,
    release: &Release,
    signers: &[SigningKey],
    window: std::time::Duration,
) -> anyhow::Result<Output> {
    if window.is_zero() || window > MAX_PREVIEW_WINDOW {
        anyhow::bail!("--preview: a preview runs for more than nothing and at most 24h");
    }
    let hosts = release
        .rollout
        .as_ref()
        .map(|rollout| rollout.waves[0].clone());
    let asked = FleetPreview {
        release: release.id.clone(),
        hosts: hosts.clone(),
        started_at: rfc3339(time::OffsetDateTime::now_utc()),
        window_seconds: window.as_secs().max(1),
        by: operator(),
    };
    runtime.block_on(asked.publish(store, release, signers))?;
    let on = match &hosts {
        Some(hosts) => format!("the hosts of its first wave ({})", hosts.join(", ")),
        None => "every host".to_owned(),
    };
    Ok(Output::Done(
        format!(
            "previewing release {} of fleet {} on {on} for {}: nothing is published and no \
             verdict changes; see what it would drop with `allowlistctl fleet status \
             --preview`",
            release.id,
            store.fleet(),
            humantime::format_duration(window)
        ),
        json!({ "previewing": release.id, "fleet": store.fleet(), "hosts": hosts }),
    ))
}

/// `fleet abort`: the lists of the release the current one replaced (none, if it replaced
/// nothing), published as a new release at once to every host.
pub(super) fn abort(sign_keys: &[PathBuf], etcd: &Etcd) -> anyhow::Result<Output> {
    let signers = signers(sign_keys)?;
    let runtime = runtime()?;
    let mut store = etcd.connect(&runtime)?;
    let Some((current, _)) = runtime.block_on(store.current())? else {
        anyhow::bail!("fleet {} has no release: nothing to abort", store.fleet());
    };
    let (aborted, _) = runtime.block_on(store.release(&current, MAX_RELEASE_BYTES))?;
    let (allowlists, back_to): (Vec<DesiredList>, String) = match &aborted.base {
        Some(base) => {
            let (previous, _) = runtime.block_on(store.release(base, MAX_RELEASE_BYTES))?;
            (previous.allowlists, format!("the lists of {base}"))
        }
        None => (Vec::new(), "no fleet lists, as before it".to_owned()),
    };
    let halted = match aborted.rollout {
        Some(_) => runtime
            .block_on(store.progress(&current))?
            .0
            .halted
            .map(|halt| {
                format!(
                    " (halted in wave {}, {}: {})",
                    halt.wave, halt.host, halt.reason
                )
            })
            .unwrap_or_default(),
        None => String::new(),
    };
    let release = Release {
        id: new_release_id()?,
        base: Some(current.clone()),
        published_at: rfc3339(time::OffsetDateTime::now_utc()),
        by: operator(),
        allowlists,
        rollout: None,
    };
    let what = format!("aborting {current}{halted}: {back_to}");
    publish_release(&runtime, &mut store, &release, &signers, what)
}
