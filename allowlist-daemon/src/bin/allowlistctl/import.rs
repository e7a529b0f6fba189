//! `allowlistctl import`: a list's entries replaced, in one change, by the prefixes of a
//! file or a feed: one CIDR or address per line, AWS's ip-ranges.json, GitHub's meta API, or
//! a JSON array of strings.

use std::collections::{BTreeMap, BTreeSet};

use allowlist_daemon::policy::parse_cidr;
use anyhow::{Context as _, bail};
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::client::Api;

/// How the input is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One CIDR or address per line; `#` starts a comment; blank lines are skipped.
    Lines,
    /// AWS ip-ranges.json: `prefixes[].ip_prefix` and `ipv6_prefixes[].ipv6_prefix`.
    Aws,
    /// GitHub's meta API (`/meta`): every array of CIDRs it holds (hooks, web, api, git, ...).
    Github,
    /// A JSON array of CIDR strings.
    Json,
}

/// A prefix of the input, and where it was.
struct Found {
    /// Where: `line 7`, `prefixes[3].ip_prefix`.
    place: String,
    /// As written.
    text: String,
}

/// The prefixes `text` holds in `format`, each with its place.
fn prefixes(text: &str, format: Format) -> anyhow::Result<Vec<Found>> {
    if format == Format::Lines {
        return Ok(text
            .lines()
            .enumerate()
            .filter_map(|(index, line)| {
                let line = line.split('#').next().unwrap_or_default().trim();
                (!line.is_empty()).then(|| Found {
                    place: format!("line {}", index + 1),
                    text: line.to_owned(),
                })
            })
            .collect());
    }
    let feed: Value = serde_json::from_str(text).context("the input is not JSON")?;
    let mut found = Vec::new();
    let mut strings = |place: String, value: &Value| match value.as_str() {
        Some(text) => found.push(Found {
            place,
            text: text.to_owned(),
        }),
        None => found.push(Found {
            place,
            text: value.to_string(),
        }),
    };
    match format {
        Format::Aws => {
            let mut any = false;
            for (array, key) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
                for (index, item) in feed[array].as_array().into_iter().flatten().enumerate() {
                    any = true;
                    strings(format!("{array}[{index}].{key}"), &item[key]);
                }
            }
            if !any {
                bail!("no prefixes[] or ipv6_prefixes[] in the input: is it AWS ip-ranges.json?");
            }
        }
        Format::Github => {
            let object = feed
                .as_object()
                .context("GitHub's meta API answers an object")?;
            for (key, value) in object {
                let Some(items) = value.as_array() else {
                    continue;
                };
                // Arrays of CIDRs only (the meta API also lists domains and key fingerprints).
                if items
                    .iter()
                    .all(|item| item.as_str().is_some_and(|text| parse_cidr(text).is_ok()))
                {
                    for (index, item) in items.iter().enumerate() {
                        strings(format!("{key}[{index}]"), item);
                    }
                }
            }
        }
        Format::Json => {
            let items = feed.as_array().context("expected a JSON array of CIDRs")?;
            for (index, item) in items.iter().enumerate() {
                strings(format!("[{index}]"), item);
            }
        }
        Format::Lines => {}
    }
    Ok(found)
}

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
    pub(crate) format: Format,
    pub(crate) description: Option<&'a str>,
    pub(crate) skip_invalid: bool,
    pub(crate) dry_run: bool,
    pub(crate) allow_all: bool,
}

impl Import<'_> {
    /// Runs the import; returns what to print: the counts, and the list as it is now.
    pub(crate) fn run(&self, api: &Api) -> anyhow::Result<Value> {
        let found = prefixes(self.text, self.format)?;
        let mut wanted = BTreeSet::new();
        let mut invalid = Vec::new();
        let mut repeated = 0;
        for item in &found {
            match parse_cidr(&item.text) {
                Ok(net) => {
                    if !wanted.insert(net) {
                        repeated += 1;
                    }
                }
                Err(err) => invalid.push(format!("{}: {err}", item.place)),
            }
        }
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
            return Ok(json!({ "import": summary }));
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
        let mut body = json!({
            "name": current["name"],
            "entries": entries,
            "allow_all": self.allow_all,
        });
        if !current["description"].is_null() {
            body["description"] = current["description"].clone();
        }
        let list = api.request(
            "PUT",
            &format!("/v1/allowlists/{id}"),
            Some(&body),
            current["version"].as_u64(),
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(found: &[Found]) -> Vec<(&str, &str)> {
        found
            .iter()
            .map(|f| (f.place.as_str(), f.text.as_str()))
            .collect()
    }

    #[test]
    fn lines_skip_comments_blanks_and_whitespace_and_keep_their_numbers() {
        let found = prefixes(
            "# office\n  192.0.2.0/24  \n\n198.51.100.7 # laptop\n\t2001:db8::/32\n",
            Format::Lines,
        )
        .expect("lines");
        assert_eq!(
            texts(&found),
            [
                ("line 2", "192.0.2.0/24"),
                ("line 4", "198.51.100.7"),
                ("line 5", "2001:db8::/32")
            ]
        );
    }

    #[test]
    fn aws_and_github_feeds_give_their_prefixes() {
        let aws = r#"{"syncToken":"1","prefixes":[{"ip_prefix":"3.5.140.0/22","service":"S3"}],
            "ipv6_prefixes":[{"ipv6_prefix":"2600:1f18::/33","service":"EC2"}]}"#;
        assert_eq!(
            texts(&prefixes(aws, Format::Aws).expect("aws")),
            [
                ("prefixes[0].ip_prefix", "3.5.140.0/22"),
                ("ipv6_prefixes[0].ipv6_prefix", "2600:1f18::/33")
            ]
        );
        let github = r#"{"verifiable_password_authentication":false,
            "hooks":["192.30.252.0/22","2a0a:a440::/29"],"domains":{"website":["*.github.com"]},
            "ssh_keys":["ssh-ed25519 AAAA"]}"#;
        assert_eq!(
            texts(&prefixes(github, Format::Github).expect("github")),
            [
                ("hooks[0]", "192.30.252.0/22"),
                ("hooks[1]", "2a0a:a440::/29")
            ]
        );
        assert!(prefixes("{}", Format::Aws).is_err());
    }
}
