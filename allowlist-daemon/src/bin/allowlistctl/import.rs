//! `allowlistctl import`: a list's entries replaced, in one change, by the prefixes of a
//! file or a feed: one CIDR or address per line, AWS's ip-ranges.json, GitHub's meta API, or
//! a JSON array of strings.

use std::collections::BTreeMap;

use allowlist_daemon::policy::{FeedFormat, FeedRead, parse_cidr, read_feed};
use anyhow::bail;
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::client::Api;

/// What an import changes, counted.
struct Counts {
    added: usize,
    removed: usize,
    unchanged: usize,
    repeated: usize,
    skipped: usize,
}

/// Replaces the entries of `list` by the prefixes of `text`: entries already there keep
/// their ids, descriptions and expiries, new ones get `description`. Any invalid prefix stops it, with
/// every one named by its place, unless `skip_invalid`. With `dry_run`, says what would
/// change and changes nothing.
pub(crate) struct Import<'a> {
    pub(crate) list: &'a str,
    pub(crate) text: &'a str,
    pub(crate) format: FeedFormat,
    pub(crate) description: Option<&'a str>,
    pub(crate) skip_invalid: bool,
    pub(crate) dry_run: bool,
    pub(crate) allow_all: bool,
}

/// A list's replacement, ready to send: what `PUT /v1/allowlists/{id}` takes.
pub(crate) struct Replacement {
    /// The list's id.
    pub(crate) id: String,
    /// The body of the `PUT`.
    pub(crate) body: Value,
    /// The list's version when it was read (the `PUT`'s `If-Match`).
    pub(crate) version: Option<u64>,
}

impl Replacement {
    /// The replacement of `current` (a list as the API shows it) by `entries`, keeping its
    /// name, description and feed.
    pub(crate) fn of(current: &Value, entries: Vec<Value>, allow_all: bool) -> Self {
        let mut body = json!({
            "name": current["name"],
            "entries": entries,
            "allow_all": allow_all,
        });
        if !current["description"].is_null() {
            body["description"] = current["description"].clone();
        }
        // A replace without it would drop the list's feed.
        if !current["source"].is_null() {
            body["source"] = current["source"].clone();
        }
        Self {
            id: current["id"].as_str().unwrap_or_default().to_owned(),
            body,
            version: current["version"].as_u64(),
        }
    }
}

impl Import<'_> {
    /// Runs the import; returns what to print: the counts, and the list as it is now.
    pub(crate) fn run(&self, api: &Api) -> anyhow::Result<Value> {
        let (summary, replacement) = self.plan(api)?;
        let Some(Replacement { id, body, version }) = replacement else {
            return Ok(json!({ "import": summary }));
        };
        let list = api.request("PUT", &format!("/v1/allowlists/{id}"), Some(&body), version)?;
        // The list without its entries (there may be a million).
        let list: serde_json::Map<String, Value> = list
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.as_str() != "entries")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(json!({ "import": summary, "allowlist": list }))
    }

    /// What the import would change, counted, and the replacement that makes it (none when
    /// it changes nothing or with `dry_run`).
    pub(crate) fn plan(&self, api: &Api) -> anyhow::Result<(Value, Option<Replacement>)> {
        let FeedRead {
            prefixes: wanted,
            repeated,
            invalid,
        } = read_feed(self.text, self.format)?;
        if !invalid.is_empty() && !self.skip_invalid {
            bail!(
                "{} invalid prefixes; nothing changed (--skip-invalid imports the others):\n  {}",
                invalid.len(),
                invalid.join("\n  ")
            );
        }
        let current = api.resolve(self.list)?;
        let id = current["id"].as_str().unwrap_or_default().to_owned();
        // The entries there now: their descriptions and expiries are kept.
        let mut existing: BTreeMap<IpNet, (Value, Value)> = BTreeMap::new();
        api.entry_pages(&id, |entries| {
            for entry in entries {
                if let Some(net) = entry["cidr"].as_str().and_then(|c| parse_cidr(c).ok()) {
                    existing.insert(
                        net,
                        (entry["description"].clone(), entry["expires_at"].clone()),
                    );
                }
            }
            true
        })?;
        let counts = Counts {
            added: wanted
                .iter()
                .filter(|net| !existing.contains_key(net))
                .count(),
            removed: existing.keys().filter(|net| !wanted.contains(net)).count(),
            unchanged: wanted
                .iter()
                .filter(|net| existing.contains_key(net))
                .count(),
            repeated,
            skipped: invalid.len(),
        };
        let summary = json!({
            "allowlist_id": id,
            "added": counts.added,
            "removed": counts.removed,
            "unchanged": counts.unchanged,
            "repeated": counts.repeated,
            "skipped_invalid": counts.skipped,
            "invalid": invalid,
            "dry_run": self.dry_run,
        });
        if self.dry_run || (counts.added == 0 && counts.removed == 0) {
            return Ok((summary, None));
        }
        let entries: Vec<Value> = wanted
            .iter()
            .map(|net| {
                let (description, expires_at) = match existing.get(net) {
                    Some((description, expires_at)) => (description.clone(), expires_at.clone()),
                    None => (json!(self.description), Value::Null),
                };
                let mut entry = json!({ "cidr": net.to_string() });
                if !description.is_null() {
                    entry["description"] = description;
                }
                if !expires_at.is_null() {
                    entry["expires_at"] = expires_at;
                }
                entry
            })
            .collect();
        Ok((
            summary,
            Some(Replacement::of(&current, entries, self.allow_all)),
        ))
    }
}

/// The import's report for people.
pub(crate) fn describe(report: &Value) -> String {
    let import = &report["import"];
    let count = |key: &str| import[key].as_u64().unwrap_or(0);
    let mut text = format!(
        "{}{}: {} added, {} removed, {} unchanged",
        if import["dry_run"] == true {
            "would import into "
        } else {
            "imported into "
        },
        import["allowlist_id"].as_str().unwrap_or_default(),
        count("added"),
        count("removed"),
        count("unchanged"),
    );
    if count("repeated") > 0 {
        text.push_str(&format!(" ({} repeated in the input)", count("repeated")));
    }
    if count("skipped_invalid") > 0 {
        text.push_str(&format!(
            "; {} invalid skipped:\n  {}",
            count("skipped_invalid"),
            import["invalid"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    text
}
