//! `allowlistctl fleet`: publishing, acknowledging and watching a fleet's releases in etcd,
//! and detaching this host from its fleet.

use std::path::PathBuf;

use allowlist_daemon::fleet::release::MAX_RELEASE_BYTES;
use allowlist_daemon::fleet::signature::SigningKey;
use allowlist_daemon::fleet::{EtcdOptions, FleetStore};
use allowlist_daemon::policy_file::PolicyFile;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::Api;
use crate::output::Output;

mod acknowledge;
pub(crate) mod print;
mod publish;
mod status;

/// Where the fleet's etcd is.
#[derive(Debug, Args)]
pub(crate) struct Etcd {
    /// etcd endpoints (http://10.0.0.5:2379); repeat or separate with commas.
    #[arg(
        long,
        env = "ALLOWLIST_FLEET_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    endpoints: Vec<String>,
    /// The fleet.
    #[arg(long, env = "ALLOWLIST_FLEET")]
    fleet: String,
    /// CA certificate (PEM) of etcd's certificates; turns TLS on.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// etcd user, with --password-file.
    #[arg(long, requires = "password_file")]
    user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
}

/// What `allowlistctl fleet` does.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetCommand {
    /// Publish a policy file as the fleet's new release (printed). Hosts apply it as a
    /// pending change and revert it unless it is acknowledged (`fleet ack`) in their window.
    /// Refused if the fleet moved on from the release the file is based on (`base` in the
    /// file, as `fleet export` writes it, or --base), so that two people editing by hand
    /// never overwrite each other.
    Publish(publish::PublishArgs),
    /// Take the fleet back to the release the current one replaced: after a halted rollout,
    /// or any release found wrong. Published as a new release that every host applies as a
    /// pending change and reverts unless acknowledged (`fleet ack`), so that an abort can
    /// never lock anyone out either.
    Abort {
        /// Sign the release with this Ed25519 key (as for `publish`).
        #[arg(long = "sign-key", value_name = "FILE")]
        sign_keys: Vec<PathBuf>,
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Add a signature to a published release: a second operator's, for hosts that need two
    /// (--fleet-trust-threshold 2).
    Sign {
        /// The release [default: the fleet's current one].
        release: Option<String>,
        /// The Ed25519 key to sign with (OpenSSH format, unencrypted).
        #[arg(long = "sign-key", value_name = "FILE", required = true)]
        sign_key: PathBuf,
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Each host of the fleet: its state, release, revert deadline, last word; hosts gone
    /// (their lease expired) too; for a release in waves, each wave and where it stopped.
    Status {
        /// The fleet's last preview instead (`fleet publish --preview`): per host, what the
        /// release would drop that passes today and let in, and the sources it would drop,
        /// summed over the hosts.
        #[arg(long)]
        preview: bool,
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Acknowledge a release for the whole fleet: each host keeps it (from its --ack-min on).
    /// For a release in waves, the wave rolling out: the next starts once each of its hosts
    /// acknowledged. Fails when no host has it pending any more (every host reverted it: see
    /// `reapply`), or when its rollout halted.
    Ack {
        /// The release [default: the fleet's current one].
        release: Option<String>,
        /// Sign the acknowledgement with this Ed25519 key: hosts with --fleet-trust count
        /// only acknowledgements their trusted keys signed; a second operator's `ack` with
        /// their key adds their signature.
        #[arg(long = "sign-key", value_name = "FILE")]
        sign_key: Option<PathBuf>,
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Offer the current release again to hosts that reverted it (they apply it as a pending
    /// change again, to acknowledge): after a host was cut off from etcd past its deadline.
    Reapply {
        /// The hosts [default: every host that reverted the current release].
        hosts: Vec<String>,
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Print a release as a policy file, with `base` set for the next publish.
    Export {
        /// The release [default: the fleet's current one].
        release: Option<String>,
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Stop following the fleet on this host: its fleet lists stay in force and become
    /// editable. The way out when a release is acknowledged and wrong for this host.
    Detach,
    /// Follow the fleet again on this host: the next release replaces its fleet lists.
    Attach,
}

impl Etcd {
    fn options(&self) -> anyhow::Result<EtcdOptions> {
        let user = match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                Some((user.clone(), password.trim().to_owned()))
            }
            _ => None,
        };
        Ok(EtcdOptions {
            endpoints: self.endpoints.clone(),
            ca: self.cacert.clone(),
            identity: self.cert.clone().zip(self.key.clone()),
            user,
        })
    }

    fn connect(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<FleetStore> {
        Ok(runtime.block_on(FleetStore::connect(&self.options()?, &self.fleet))?)
    }
}

/// Who is publishing or acknowledging: user@host.
fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    format!("{user}@{host}")
}

/// Runs `command`; `api` is this host's daemon, for detach and attach.
pub(crate) fn run(command: FleetCommand, api: &Api) -> anyhow::Result<Output> {
    match command {
        FleetCommand::Detach => switch(api, "/v1/fleet/detach"),
        FleetCommand::Attach => switch(api, "/v1/fleet/attach"),
        FleetCommand::Publish(args) => publish::publish(args),
        FleetCommand::Abort { sign_keys, etcd } => publish::abort(&sign_keys, &etcd),
        FleetCommand::Sign {
            release,
            sign_key,
            etcd,
        } => {
            let signer = SigningKey::read(&sign_key)?;
            let runtime = runtime()?;
            let mut store = etcd.connect(&runtime)?;
            let release = current_or(&runtime, &mut store, release)?;
            runtime.block_on(store.sign(&release, &signer))?;
            Ok(Output::Done(
                format!(
                    "signed release {release} of fleet {} with {}",
                    etcd.fleet,
                    signer.fingerprint()
                ),
                json!({ "signed": release, "fleet": etcd.fleet, "by": signer.fingerprint() }),
            ))
        }
        FleetCommand::Status {
            preview: false,
            etcd,
        } => status::status(&etcd),
        FleetCommand::Status {
            preview: true,
            etcd,
        } => status::preview(&etcd),
        FleetCommand::Ack {
            release,
            sign_key,
            etcd,
        } => acknowledge::acknowledge(release, sign_key.as_deref(), &etcd),
        FleetCommand::Reapply { hosts, etcd } => acknowledge::reapply(hosts, &etcd),
        FleetCommand::Export { release, etcd } => {
            let runtime = runtime()?;
            let mut store = etcd.connect(&runtime)?;
            let id = current_or(&runtime, &mut store, release)?;
            let (release, _) = runtime.block_on(store.release(&id, MAX_RELEASE_BYTES))?;
            Ok(Output::File(PolicyFile {
                base: Some(release.id),
                allowlists: release.allowlists,
                // Each release names its own waves.
                rollout: None,
            }))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `release`, or the fleet's current one.
fn current_or(
    runtime: &tokio::runtime::Runtime,
    store: &mut FleetStore,
    release: Option<String>,
) -> anyhow::Result<String> {
    match release {
        Some(release) => Ok(release),
        None => runtime
            .block_on(store.current())?
            .map(|(id, _)| id)
            .context("the fleet has no release yet"),
    }
}

/// Detaches or attaches this host; says what it did and what the host enforces.
fn switch(api: &Api, path: &str) -> anyhow::Result<Output> {
    let done = api.request("POST", path, None, None)?;
    let enforcement = &done["enforcement"];
    let enforcing = match enforcement["enforcing"].as_bool() {
        Some(true) => format!(
            "enforcing: yes ({} lists enabled)",
            enforcement["enabled_allowlist_ids"]
                .as_array()
                .map_or(0, Vec::len)
        ),
        _ => "enforcing: no (everything passes)".to_owned(),
    };
    let drifted: Vec<&str> = done["drifted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|name| name.as_str())
        .collect();
    let message = match (done["detached"].as_bool(), drifted.is_empty()) {
        (Some(true), _) => format!(
            "detached from the fleet: its lists stay in force and are editable here; {enforcing}"
        ),
        (_, true) => {
            format!("attached to the fleet again: the next release replaces its lists; {enforcing}")
        }
        (_, false) => format!(
            "attached to the fleet again; drift: the fleet's lists {} were edited here while \
             detached, so the fleet's current release is applied again, as a pending change \
             to acknowledge (allowlistctl fleet ack); {enforcing}",
            drifted.join(", ")
        ),
    };
    Ok(Output::Done(message, done))
}
