//! The verbs that change what the host enforces: enable, disable, scopes, acknowledge,
//! apply; and its status.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::client::Api;
use crate::output::Output;
use crate::{preview, session};

/// `allowlistctl enable`.
#[derive(Debug, clap::Args)]
pub(crate) struct EnableArgs {
    /// Ids or names.
    #[arg(required = true)]
    pub(crate) lists: Vec<String>,
    /// The address to protect from lockout [default: the client of your SSH session].
    #[arg(long)]
    pub(crate) client_ip: Option<IpAddr>,
    /// Enable even if it would cut off your address or established sessions.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) preview: crate::preview::PreviewArgs,
}

/// `allowlistctl apply`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// The policy file (- for standard input).
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Delete this host's own lists the file does not name.
    #[arg(long)]
    pub(crate) prune: bool,
    /// Print what would change; change nothing.
    #[arg(long, conflicts_with = "preview")]
    pub(crate) dry_run: bool,
    /// Wait until the change may be acknowledged, then acknowledge it: proves that this
    /// client still reaches the host through the new policy.
    #[arg(long, conflicts_with = "preview")]
    pub(crate) wait_ack: bool,
    /// The address to protect from lockout [default: the client of your SSH session].
    #[arg(long)]
    pub(crate) client_ip: Option<IpAddr>,
    /// Apply even if it would cut off your address or established sessions.
    #[arg(long, conflicts_with = "preview")]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) preview: preview::PreviewArgs,
}

/// Whether the host enforces, the lists enabled, the pending change, the kernel memory.
pub(crate) fn status(api: &Api) -> anyhow::Result<Output> {
    let mut state = api.get("/v1/enforcement")?;
    state["kernel_memory"] = api.get("/v1/stats?top=1")?["kernel_memory"].take();
    Ok(Output::State(state))
}

/// Enables lists (a pending change), guarding the operator's address; with `--preview`,
/// judges the change on live traffic instead and prints what it would do.
pub(crate) fn enable(api: &Api, args: EnableArgs, as_json: bool) -> anyhow::Result<Output> {
    let ids = resolve_ids(api, &args.lists)?;
    let client_ip = args.client_ip.or_else(session::operator_address);
    if let Some(window) = &args.preview.preview {
        let mut body = json!({ "enable": ids });
        if let Some(ip) = client_ip {
            body["client_ip"] = json!(ip);
        }
        let report = preview::run(api, body, window)?;
        preview::verdict(report, args.preview.allow_drops, as_json)?;
        return Ok(Output::Printed);
    }
    let mut body = json!({"allowlist_ids": ids, "force": args.force});
    if let Some(ip) = client_ip {
        body["client_ip"] = json!(ip);
    }
    Ok(Output::State(api.post("/v1/enforcement/enable", &body)?))
}

/// Disables lists (a pending change); with `--preview`, judges the change on live traffic
/// instead.
pub(crate) fn disable(
    api: &Api,
    lists: &[String],
    args: &preview::PreviewArgs,
    as_json: bool,
) -> anyhow::Result<Output> {
    let ids = resolve_ids(api, lists)?;
    if let Some(window) = &args.preview {
        let report = preview::run(api, json!({ "disable": ids }), window)?;
        preview::verdict(report, args.allow_drops, as_json)?;
        return Ok(Output::Printed);
    }
    Ok(Output::State(api.post(
        "/v1/enforcement/disable",
        &json!({"allowlist_ids": ids}),
    )?))
}

/// Guards only `ports` (none: every port again); with `--preview`, judges the change on
/// live traffic instead.
pub(crate) fn scopes(
    api: &Api,
    ports: &[String],
    args: &preview::PreviewArgs,
    as_json: bool,
) -> anyhow::Result<Output> {
    if let Some(window) = &args.preview {
        let report = preview::run(api, json!({ "protect": ports }), window)?;
        preview::verdict(report, args.allow_drops, as_json)?;
        return Ok(Output::Printed);
    }
    Ok(Output::State(api.request(
        "PUT",
        "/v1/enforcement/scopes",
        Some(&json!({ "protect": ports })),
        None,
    )?))
}

/// Acknowledges the pending change.
pub(crate) fn acknowledge(api: &Api) -> anyhow::Result<Output> {
    Ok(Output::State(api.request(
        "POST",
        "/v1/enforcement/acknowledge",
        None,
        None,
    )?))
}

/// Converges this host's own lists to a policy file; with `wait_ack`, acknowledges the
/// change once it may be.
pub(crate) fn apply(api: &Api, args: ApplyArgs, as_json: bool) -> anyhow::Result<Output> {
    let policy = read_policy_file(&args.file)?;
    if policy.rollout.is_some() {
        anyhow::bail!(
            "{}: a [rollout] table says how a fleet release rolls out (allowlistctl fleet \
             publish); a host applies its own file at once: remove the table",
            args.file.display()
        );
    }
    if let Some(window) = &args.preview.preview {
        let mut body = json!({
            "apply": { "allowlists": policy.allowlists, "prune": args.prune },
        });
        if let Some(ip) = args.client_ip.or_else(session::operator_address) {
            body["client_ip"] = json!(ip);
        }
        let report = preview::run(api, body, window)?;
        preview::verdict(report, args.preview.allow_drops, as_json)?;
        return Ok(Output::Printed);
    }
    let mut body = json!({
        "allowlists": policy.allowlists,
        "prune": args.prune,
        "dry_run": args.dry_run,
        "force": args.force,
    });
    if let Some(ip) = args.client_ip.or_else(session::operator_address) {
        body["client_ip"] = json!(ip);
    }
    let mut applied = api.post("/v1/apply", &body)?;
    if args.wait_ack && !args.dry_run && !applied["enforcement"]["pending"].is_null() {
        wait_and_acknowledge(api, &applied["enforcement"]["pending"])?;
        applied["acknowledged"] = json!(true);
    }
    Ok(Output::Applied(applied))
}

/// The ids of `lists`, named by id or name.
fn resolve_ids(api: &Api, lists: &[String]) -> anyhow::Result<Vec<String>> {
    lists.iter().map(|list| api.resolve_id(list)).collect()
}

/// Reads a policy file (`-`: standard input), checked as a whole.
pub(crate) fn read_policy_file(
    path: &std::path::Path,
) -> anyhow::Result<allowlist_daemon::policy_file::PolicyFile> {
    use allowlist_daemon::policy_file::PolicyFile;
    if path.as_os_str() == "-" {
        let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
        return Ok(PolicyFile::parse(std::path::Path::new("<stdin>"), &text)?);
    }
    Ok(PolicyFile::read(path)?)
}

/// Waits until the pending change may be acknowledged, then acknowledges it.
fn wait_and_acknowledge(api: &Api, pending: &Value) -> anyhow::Result<()> {
    let after = pending["acknowledge_after"]
        .as_str()
        .and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
        .context("the pending change has no acknowledge_after")?;
    let wait = after - time::OffsetDateTime::now_utc();
    if let Ok(wait) = Duration::try_from(wait) {
        eprintln!(
            "waiting {}s until the change may be acknowledged",
            wait.as_secs() + 1
        );
        std::thread::sleep(wait + Duration::from_millis(200));
    }
    api.request("POST", "/v1/enforcement/acknowledge", None, None)?;
    Ok(())
}
