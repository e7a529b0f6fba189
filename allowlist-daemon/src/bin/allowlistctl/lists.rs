//! The verbs that change or show lists: create, add, remove, update, import, delete, show,
//! export.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use serde_json::{Value, json};

use crate::client::Api;
use crate::import::{Import, Replacement};
use crate::output::{self, Output};
use crate::preview::{self, PreviewArgs};

/// `allowlistctl create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// Its name.
    pub(crate) name: String,
    /// What it is for.
    #[arg(long, short)]
    pub(crate) description: Option<String>,
    /// An entry: CIDR or address, optionally followed by =DESCRIPTION; repeat for several.
    #[arg(long = "entry", short, value_name = "CIDR[=DESCRIPTION]")]
    pub(crate) entries: Vec<String>,
    /// Let the list hold 0.0.0.0/0 or ::/0, which allow every source of their family.
    #[arg(long)]
    pub(crate) allow_all: bool,
    /// A feed the list follows (http:// or https://): allowlistd reads it every
    /// --refresh and replaces the entries by what it says, without an acknowledgement,
    /// unless it is empty or would remove more than half of them.
    #[arg(long, value_name = "URL")]
    pub(crate) source_url: Option<String>,
    /// How the feed is written.
    #[arg(long, value_enum, default_value = "lines", requires = "source_url")]
    pub(crate) source_format: allowlist_daemon::policy::FeedFormat,
    /// Time between two reads of the feed.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1h",
        requires = "source_url"
    )]
    pub(crate) refresh: String,
}

/// `allowlistctl add`.
#[derive(Debug, clap::Args)]
pub(crate) struct AddArgs {
    /// Id or name.
    pub(crate) list: String,
    /// CIDRs or addresses.
    #[arg(required = true)]
    pub(crate) cidrs: Vec<String>,
    /// Description of the new entries.
    #[arg(long, short)]
    pub(crate) description: Option<String>,
    /// The new entries leave the list by themselves after this long (90m, 2h, 3d; at most
    /// allowlistd's --max-entry-ttl), without an acknowledgement.
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
    pub(crate) ttl: Option<String>,
    /// The new entries leave the list by themselves at this time (RFC 3339:
    /// 2026-12-24T18:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub(crate) expires_at: Option<String>,
    /// Let the list hold 0.0.0.0/0 or ::/0, which allow every source of their family.
    #[arg(long)]
    pub(crate) allow_all: bool,
}

/// `allowlistctl import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// Id or name.
    pub(crate) list: String,
    /// The file, or - for stdin.
    pub(crate) file: PathBuf,
    /// How the input is written.
    #[arg(long, value_enum, default_value = "lines")]
    pub(crate) format: allowlist_daemon::policy::FeedFormat,
    /// Description of the entries added.
    #[arg(long, short)]
    pub(crate) description: Option<String>,
    /// Import the valid prefixes and report the invalid ones, instead of changing nothing.
    #[arg(long)]
    pub(crate) skip_invalid: bool,
    /// Say what would change; change nothing.
    #[arg(long, conflicts_with = "preview")]
    pub(crate) dry_run: bool,
    /// Let the list hold 0.0.0.0/0 or ::/0, which allow every source of their family.
    #[arg(long)]
    pub(crate) allow_all: bool,
    #[command(flatten)]
    pub(crate) preview: PreviewArgs,
}

/// Creates a list.
pub(crate) fn create(api: &Api, args: CreateArgs) -> anyhow::Result<Output> {
    let entries: Vec<Value> = args
        .entries
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((cidr, description)) => json!({"cidr": cidr, "description": description}),
            None => json!({"cidr": entry}),
        })
        .collect();
    let mut body = json!({"name": args.name, "entries": entries, "allow_all": args.allow_all});
    if let Some(description) = args.description {
        body["description"] = json!(description);
    }
    if let Some(url) = args.source_url {
        body["source"] =
            json!({ "url": url, "format": args.source_format, "refresh": args.refresh });
    }
    Ok(Output::List(api.post("/v1/allowlists", &body)?))
}

/// Adds entries to a list; shows it after.
pub(crate) fn add(api: &Api, args: AddArgs, as_json: bool) -> anyhow::Result<Output> {
    let id = api.resolve_id(&args.list)?;
    let entries: Vec<Value> = args
        .cidrs
        .iter()
        .map(|cidr| {
            let mut entry = json!({
                "cidr": cidr,
                "description": args.description.clone().unwrap_or_default(),
            });
            if let Some(ttl) = &args.ttl {
                entry["ttl"] = json!(ttl);
            }
            if let Some(at) = &args.expires_at {
                entry["expires_at"] = json!(at);
            }
            entry
        })
        .collect();
    api.post(
        &format!("/v1/allowlists/{id}/entries"),
        &json!({ "entries": entries, "allow_all": args.allow_all }),
    )?;
    show(api, &id, as_json)
}

/// Removes one entry, named by its id or its CIDR, from a list.
pub(crate) fn remove(
    api: &Api,
    list: &str,
    entry: &str,
    preview: &PreviewArgs,
    as_json: bool,
) -> anyhow::Result<Output> {
    let current = api.resolve(list)?;
    let id = current["id"].as_str().unwrap_or_default();
    let entry_id = find_entry(api, id, entry)?;
    if let Some(window) = &preview.preview {
        let mut entries = Vec::new();
        api.entry_pages(id, |page| {
            entries.extend(
                page.iter()
                    .filter(|e| e["id"] != entry_id.as_str())
                    .map(kept),
            );
            true
        })?;
        let allow_all = current["allow_all"] == true;
        let replacement = Replacement::of(&current, entries, allow_all);
        preview_replacement(api, &replacement, window, preview.allow_drops, as_json)?;
        return Ok(Output::Printed);
    }
    api.request(
        "DELETE",
        &format!("/v1/allowlists/{id}/entries/{entry_id}"),
        None,
        current["version"].as_u64(),
    )?;
    Ok(Output::State(api.get("/v1/enforcement")?))
}

/// Replaces a list's name, description and entries with a JSON file, if the list did not
/// change since it was read.
pub(crate) fn update(api: &Api, list: &str, from_file: &Path) -> anyhow::Result<Output> {
    let current = api.resolve(list)?;
    let text = read_text(from_file)?;
    let body: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", from_file.display()))?;
    let id = current["id"].as_str().unwrap_or_default();
    Ok(Output::List(api.request(
        "PUT",
        &format!("/v1/allowlists/{id}"),
        Some(&body),
        current["version"].as_u64(),
    )?))
}

/// Replaces a list's entries with the prefixes of a file or a feed.
pub(crate) fn import(api: &Api, args: ImportArgs, as_json: bool) -> anyhow::Result<Output> {
    let text = read_text(&args.file)?;
    let import = Import {
        list: &args.list,
        text: &text,
        format: args.format,
        description: args.description.as_deref(),
        skip_invalid: args.skip_invalid,
        dry_run: args.dry_run,
        allow_all: args.allow_all,
    };
    if let Some(window) = &args.preview.preview {
        let (summary, replacement) = import.plan(api)?;
        let Some(replacement) = replacement else {
            return Ok(Output::Imported(json!({ "import": summary })));
        };
        preview_replacement(api, &replacement, window, args.preview.allow_drops, as_json)?;
        return Ok(Output::Printed);
    }
    Ok(Output::Imported(import.run(api)?))
}

/// Judges `replacement` on live traffic for `window` instead of making it, and prints the
/// report.
fn preview_replacement(
    api: &Api,
    replacement: &Replacement,
    window: &str,
    allow_drops: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let body = json!({ "replace": { "id": replacement.id, "list": replacement.body } });
    let report = preview::run(api, body, window)?;
    preview::verdict(report, allow_drops, as_json)
}

/// An entry as the API shows it, as a replacement sends it back: its prefix, description
/// and expiry.
fn kept(entry: &Value) -> Value {
    let mut kept = json!({ "cidr": entry["cidr"] });
    for field in ["description", "expires_at"] {
        if !entry[field].is_null() {
            kept[field] = entry[field].clone();
        }
    }
    kept
}

/// Deletes a list that is not enabled.
pub(crate) fn delete(api: &Api, list: &str) -> anyhow::Result<Output> {
    let current = api.resolve(list)?;
    let id = current["id"].as_str().unwrap_or_default();
    api.request(
        "DELETE",
        &format!("/v1/allowlists/{id}"),
        None,
        current["version"].as_u64(),
    )?;
    Ok(Output::Done(
        format!(
            "deleted {id} ({})",
            current["name"].as_str().unwrap_or_default()
        ),
        json!({ "deleted": id, "name": current["name"] }),
    ))
}

/// Lists the lists: with their entries only for JSON.
pub(crate) fn list(api: &Api, as_json: bool) -> anyhow::Result<Output> {
    let path = if as_json {
        "/v1/allowlists"
    } else {
        "/v1/allowlists?entries=false"
    };
    Ok(Output::Lists(api.get(path)?))
}

/// This host's own lists as a policy file.
pub(crate) fn export(api: &Api) -> anyhow::Result<Output> {
    let lists = api.get("/v1/allowlists")?;
    let file = allowlist_daemon::policy_file::PolicyFile {
        base: None,
        allowlists: lists["allowlists"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|list| list["fleet"].is_null())
            .map(declared)
            .collect(),
        rollout: None,
    };
    Ok(Output::File(file))
}

/// A list as the API shows it, as a policy file declares it.
fn declared(list: &Value) -> allowlist_daemon::model::DesiredList {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    allowlist_daemon::model::DesiredList {
        name: text(&list["name"]),
        description: text(&list["description"]),
        enabled: list["enabled"] == true,
        allow_all: list["allow_all"] == true,
        entries: list["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| allowlist_daemon::model::EntryInput {
                cidr: text(&entry["cidr"]),
                description: Some(text(&entry["description"])).filter(|d| !d.is_empty()),
                expires_at: entry["expires_at"].as_str().map(str::to_owned),
                ttl: None,
            })
            .collect(),
        // As the API shows it: credentials as `***`, which an apply on this host keeps.
        source: list["source"]["url"]
            .as_str()
            .map(|url| allowlist_daemon::model::SourceInput {
                url: url.to_owned(),
                format: serde_json::from_value(list["source"]["format"].clone())
                    .unwrap_or_default(),
                refresh: list["source"]["refresh"].as_str().map(str::to_owned),
            }),
    }
}

/// Shows a list: as the API's JSON, or its summary and then its entries page by page, so
/// that a list of a million entries prints without being held whole.
pub(crate) fn show(api: &Api, list: &str, as_json: bool) -> anyhow::Result<Output> {
    let summary = api.resolve(list)?;
    let id = summary["id"].as_str().unwrap_or_default();
    if as_json {
        return Ok(Output::List(api.get(&format!("/v1/allowlists/{id}"))?));
    }
    output::print_list_header(&summary);
    api.entry_pages(id, |entries| {
        output::print_entry_rows(entries);
        true
    })?;
    Ok(Output::Printed)
}

/// The id of the entry of list `id` named by its id or by its CIDR.
fn find_entry(api: &Api, id: &str, entry: &str) -> anyhow::Result<String> {
    if entry.starts_with("en_") {
        return Ok(entry.to_owned());
    }
    let wanted = allowlist_daemon::policy::parse_cidr(entry)
        .map_err(|err| anyhow!("{entry:?} is neither an entry id nor a CIDR: {err}"))?;
    let mut found = None;
    api.entry_pages(id, |entries| {
        for e in entries {
            let cidr = e["cidr"]
                .as_str()
                .and_then(|c| c.parse::<ipnet::IpNet>().ok());
            if cidr == Some(wanted) {
                found = e["id"].as_str().map(str::to_owned);
            }
            if found.is_some() || cidr.is_some_and(|cidr| cidr > wanted) {
                return false;
            }
        }
        true
    })?;
    found.ok_or_else(|| anyhow!("{id} has no entry with CIDR {wanted}"))
}

/// The text of `file` (`-`: standard input).
fn read_text(file: &Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading stdin");
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}
