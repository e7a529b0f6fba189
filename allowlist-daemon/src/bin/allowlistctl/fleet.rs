//! `allowlistctl fleet`: publishing, acknowledging and watching a fleet's releases in etcd,
//! and detaching this host from its fleet.

use std::path::PathBuf;

use allowlist_daemon::fleet::{EtcdOptions, FleetStore, Release};
use allowlist_daemon::model::rfc3339;
use allowlist_daemon::policy_file::PolicyFile;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::Api;
use crate::output::Output;

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
    /// file, as `fleet export` writes it, or --base).
    Publish {
        /// The policy file.
        #[arg(long = "file", short = 'f', value_name = "FILE")]
        file: PathBuf,
        /// The release the file is based on [default: the file's `base`].
        #[arg(long)]
        base: Option<String>,
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Each host of the fleet: its state, release, revert deadline, last word; hosts gone
    /// (their lease expired) too.
    Status {
        #[command(flatten)]
        etcd: Etcd,
    },
    /// Acknowledge a release for the whole fleet: each host keeps it (from its --ack-min on).
    Ack {
        /// The release [default: the fleet's current one].
        release: Option<String>,
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

/// Runs `command`; `api` is this host's daemon, for detach and attach.
pub(crate) fn run(command: FleetCommand, api: &Api) -> anyhow::Result<Output> {
    match command {
        FleetCommand::Detach => switch(api, "/v1/fleet/detach"),
        FleetCommand::Attach => switch(api, "/v1/fleet/attach"),
        FleetCommand::Publish { file, base, etcd } => {
            let policy = crate::read_policy_file(&file)?;
            let release = Release {
                id: new_release_id()?,
                base: base.or(policy.base),
                published_at: rfc3339(time::OffsetDateTime::now_utc()),
                by: operator(),
                allowlists: policy.allowlists,
            };
            let runtime = runtime()?;
            let mut store = etcd.connect(&runtime)?;
            runtime.block_on(store.publish(&release))?;
            Ok(Output::Done(
                format!(
                    "published release {} of fleet {} (based on {}); hosts apply it now and \
                     revert it unless acknowledged: allowlistctl fleet ack {}",
                    release.id,
                    etcd.fleet,
                    release.base.as_deref().unwrap_or("nothing"),
                    release.id
                ),
                json!({ "published": release.id, "fleet": etcd.fleet, "base": release.base }),
            ))
        }
        FleetCommand::Status { etcd } => {
            let runtime = runtime()?;
            let mut store = etcd.connect(&runtime)?;
            let current = runtime.block_on(store.current())?.map(|(id, _)| id);
            let hosts: Vec<serde_json::Value> = runtime
                .block_on(store.hosts())?
                .into_iter()
                .map(|(host, status)| match status {
                    Some(status) => json!(status),
                    None => json!({ "host": host, "state": "gone" }),
                })
                .collect();
            Ok(Output::Fleet(json!({
                "fleet": etcd.fleet,
                "current": current,
                "hosts": hosts,
            })))
        }
        FleetCommand::Ack { release, etcd } => {
            let runtime = runtime()?;
            let mut store = etcd.connect(&runtime)?;
            let release = current_or(&runtime, &mut store, release)?;
            runtime.block_on(store.acknowledge(&release, &operator()))?;
            Ok(Output::Done(
                format!("acknowledged release {release} for fleet {}", etcd.fleet),
                json!({ "acknowledged": release, "fleet": etcd.fleet }),
            ))
        }
        FleetCommand::Export { release, etcd } => {
            let runtime = runtime()?;
            let mut store = etcd.connect(&runtime)?;
            let id = current_or(&runtime, &mut store, release)?;
            let release = runtime.block_on(store.release(&id))?;
            Ok(Output::File(PolicyFile {
                base: Some(release.id),
                allowlists: release.allowlists,
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

/// Detaches or attaches this host; shows where it stands.
fn switch(api: &Api, path: &str) -> anyhow::Result<Output> {
    api.request("POST", path, None, None)?;
    Ok(Output::State(api.get("/v1/fleet")?))
}
