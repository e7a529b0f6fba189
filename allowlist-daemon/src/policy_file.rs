//! Policy files: allowlists declared in TOML (or JSON of the same shape), read by
//! `allowlistctl apply` and `allowlistctl fleet publish`, written by `allowlistctl export`.
//!
//! ```toml
//! base = "r20261202T021500-3f9a"   # optional: the fleet release this file was made from
//!
//! [[allowlist]]
//! name = "office"
//! description = "office and VPN"
//! enabled = true
//! entries = [
//!   { cidr = "203.0.113.0/24", description = "office" },
//!   { cidr = "2001:db8:10::/48" },
//! ]
//! ```
//!
//! A file published to a fleet may say how the release rolls out (`allowlistctl fleet
//! publish --wave` says it on the command line instead):
//!
//! ```toml
//! [rollout]
//! waves = ["canary-*", "25%", "100%"]
//! soak = "10m"                     # optional: each healthy wave goes on by itself
//! ```
//!
//! A file is checked as a whole before anything is done with it: an unknown key, a bad or
//! duplicate prefix, a name used twice, an allow-all prefix without `allow_all = true` are
//! refused with the file, the line (the path in the document for JSON) and what is wrong.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::model::{DesiredList, EntryInput, SourceInput};
use crate::policy::parse_cidr;

/// A policy file, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The fleet release the file was made from (`allowlistctl fleet export`): a publish
    /// based on another release than the fleet's current one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The lists, in the file's order.
    #[serde(default, rename = "allowlist")]
    pub allowlists: Vec<DesiredList>,
    /// How a fleet release of the file rolls out (`allowlistctl fleet publish` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutTable>,
}

/// The `[rollout]` table of a policy file: the waves of a fleet release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutTable {
    /// The waves, in order: host names, globs or shares of the fleet (`25%`).
    pub waves: Vec<String>,
    /// How long each wave's hosts keep the release, all healthy, before the next wave
    /// starts without an acknowledgement (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
}

/// A file that cannot be used: which, where in it, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {problem}", file.display(), at.as_ref().map(|at| format!(":{at}")).unwrap_or_default())]
pub struct PolicyFileError {
    /// The file.
    pub file: PathBuf,
    /// The line (TOML) or the path in the document (JSON), when known.
    pub at: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// The TOML shape, with spans for the lines of errors found after parsing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    allowlist: Vec<Spanned<TomlList>>,
    #[serde(default)]
    rollout: Option<RolloutTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlList {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    allow_all: bool,
    #[serde(default)]
    entries: Vec<Spanned<EntryInput>>,
    #[serde(default)]
    source: Option<SourceInput>,
}

impl PolicyFile {
    /// Reads and checks the file at `path` (JSON if it ends in `.json` or starts with `{`).
    pub fn read(path: &Path) -> Result<PolicyFile, PolicyFileError> {
        let text = std::fs::read_to_string(path).map_err(|err| PolicyFileError {
            file: path.to_owned(),
            at: None,
            problem: err.to_string(),
        })?;
        PolicyFile::parse(path, &text)
    }

    /// Parses and checks `text`, the content of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<PolicyFile, PolicyFileError> {
        let fail = |at: Option<String>, problem: String| PolicyFileError {
            file: path.to_owned(),
            at,
            problem,
        };
        let json =
            path.extension().is_some_and(|ext| ext == "json") || text.trim_start().starts_with('{');
        // Where each list and entry sits: a line in TOML, a path in JSON.
        let mut places: Vec<(String, Vec<String>)> = Vec::new();
        let file = if json {
            let file: PolicyFile = serde_json::from_str(text).map_err(|err| {
                fail(
                    Some(format!("{}:{}", err.line(), err.column())),
                    err.to_string(),
                )
            })?;
            for (i, list) in file.allowlists.iter().enumerate() {
                let entries = (0..list.entries.len())
                    .map(|j| format!("allowlist[{i}].entries[{j}]"))
                    .collect();
                places.push((format!("allowlist[{i}]"), entries));
            }
            file
        } else {
            let raw: TomlFile = toml::from_str(text).map_err(|err| {
                let line = err.span().map(|span| Lines::of(text).at(span.start));
                fail(line, err.message().to_owned())
            })?;
            let mut file = PolicyFile {
                base: raw.base,
                allowlists: Vec::new(),
                rollout: raw.rollout,
            };
            let lines = Lines::of(text);
            for list in raw.allowlist {
                let list = list.into_inner();
                let name_line = lines.at(list.name.span().start);
                let entry_lines = list
                    .entries
                    .iter()
                    .map(|e| lines.at(e.span().start))
                    .collect();
                places.push((name_line, entry_lines));
                file.allowlists.push(DesiredList {
                    name: list.name.into_inner(),
                    description: list.description,
                    enabled: list.enabled,
                    allow_all: list.allow_all,
                    entries: list.entries.into_iter().map(Spanned::into_inner).collect(),
                    source: list.source,
                });
            }
            file
        };
        let mut names = BTreeSet::new();
        for (list, (at, entry_places)) in file.allowlists.iter().zip(&places) {
            let name = list.name.trim();
            if name.is_empty() {
                return Err(fail(Some(at.clone()), "the list's name is empty".into()));
            }
            if !names.insert(name) {
                return Err(fail(
                    Some(at.clone()),
                    format!("a list named {name:?} is declared twice"),
                ));
            }
            let mut prefixes = BTreeSet::new();
            for (entry, at) in list.entries.iter().zip(entry_places) {
                let net = parse_cidr(&entry.cidr)
                    .map_err(|err| fail(Some(at.clone()), format!("{name}: {err}")))?;
                if net.prefix_len() == 0 && !list.allow_all {
                    return Err(fail(
                        Some(at.clone()),
                        format!(
                            "{name}: {net} allows every source of its family; say \
                             allow_all = true for the list if that is what you mean"
                        ),
                    ));
                }
                if !prefixes.insert(net) {
                    return Err(fail(
                        Some(at.clone()),
                        format!("{name}: {net} is in the list twice"),
                    ));
                }
            }
        }
        Ok(file)
    }

    /// The file as TOML, in the shape [`PolicyFile::parse`] reads.
    pub fn to_toml(&self) -> String {
        let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let mut out = String::new();
        if let Some(base) = &self.base {
            out.push_str(&format!("base = {}\n", quote(base)));
        }
        for list in &self.allowlists {
            out.push_str(&format!("\n[[allowlist]]\nname = {}\n", quote(&list.name)));
            if !list.description.is_empty() {
                out.push_str(&format!("description = {}\n", quote(&list.description)));
            }
            out.push_str(&format!("enabled = {}\n", list.enabled));
            if list.allow_all {
                out.push_str("allow_all = true\n");
            }
            if let Some(source) = &list.source {
                out.push_str(&format!(
                    "source = {{ url = {}, format = {}",
                    quote(&source.url),
                    quote(source.format.name())
                ));
                if let Some(refresh) = &source.refresh {
                    out.push_str(&format!(", refresh = {}", quote(refresh)));
                }
                out.push_str(" }\n");
            }
            out.push_str("entries = [\n");
            for entry in &list.entries {
                out.push_str(&format!("  {{ cidr = {}", quote(&entry.cidr)));
                if let Some(description) = entry.description.as_deref().filter(|d| !d.is_empty()) {
                    out.push_str(&format!(", description = {}", quote(description)));
                }
                for (key, value) in [("expires_at", &entry.expires_at), ("ttl", &entry.ttl)] {
                    if let Some(value) = value {
                        out.push_str(&format!(", {key} = {}", quote(value)));
                    }
                }
                out.push_str(" },\n");
            }
            out.push_str("]\n");
        }
        if let Some(rollout) = &self.rollout {
            let waves: Vec<String> = rollout.waves.iter().map(|wave| quote(wave)).collect();
            out.push_str(&format!("\n[rollout]\nwaves = [{}]\n", waves.join(", ")));
            if let Some(soak) = &rollout.soak {
                out.push_str(&format!("soak = {}\n", quote(soak)));
            }
        }
        out
    }
}

/// Where the lines of a text start, to tell the line of an offset quickly.
struct Lines(Vec<usize>);

impl Lines {
    fn of(text: &str) -> Lines {
        Lines(text.match_indices('\n').map(|(at, _)| at).collect())
    }

    /// The 1-based line of byte `offset`, as text.
    fn at(&self, offset: usize) -> String {
        (self.0.partition_point(|newline| *newline < offset) + 1).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyFile, String> {
        PolicyFile::parse(Path::new("office.toml"), text).map_err(|err| err.to_string())
    }

    const OFFICE: &str = r#"
[[allowlist]]
name = "office"
description = "office and VPN"
enabled = true
entries = [
  { cidr = "203.0.113.0/24", description = "office" },
  { cidr = "2001:db8:10::/48" },
]

[[allowlist]]
name = "lab"
entries = [{ cidr = "198.51.100.7" }]
"#;

    #[test]
    fn a_file_reads_as_its_lists() {
        let file = parse(OFFICE).expect("valid");
        assert_eq!(file.base, None);
        assert_eq!(file.allowlists.len(), 2);
        let office = &file.allowlists[0];
        assert_eq!((office.name.as_str(), office.enabled), ("office", true));
        assert_eq!(office.entries[0].description.as_deref(), Some("office"));
        assert!(!file.allowlists[1].enabled, "not enabled unless it says so");
    }

    #[test]
    fn toml_and_json_round_trip_through_export() {
        let with_times_and_a_feed = OFFICE
            .replace(
                "{ cidr = \"2001:db8:10::/48\" }",
                "{ cidr = \"2001:db8:10::/48\", expires_at = \"2030-01-01T00:00:00Z\" }",
            )
            .replace(
                "name = \"lab\"",
                "name = \"lab\"\nsource = { url = \"https://***@feeds.example/lab\", format = \"aws\", refresh = \"1h\" }",
            );
        let mut file = parse(&with_times_and_a_feed).expect("valid");
        assert!(file.allowlists[1].source.is_some());
        assert!(file.allowlists[0].entries[1].expires_at.is_some());
        file.base = Some("r1".into());
        assert_eq!(parse(&file.to_toml()).expect("exported TOML"), file);
        let with_waves = format!(
            "{with_times_and_a_feed}\n[rollout]\nwaves = [\"canary-*\", \"25%\"]\nsoak = \"10m\"\n"
        );
        file = parse(&with_waves).expect("a rollout table");
        assert_eq!(file.rollout.as_ref().map(|r| r.waves.len()), Some(2));
        assert_eq!(parse(&file.to_toml()).expect("exported TOML"), file);
        let json = serde_json::to_string(&file).expect("json");
        let from_json = PolicyFile::parse(Path::new("office.json"), &json).expect("JSON");
        assert_eq!(from_json, file);
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_problem() {
        let cases = [
            (
                OFFICE.replace("198.51.100.7", "198.51.100.7/24"),
                "office.toml:13: lab: 198.51.100.7/24 has host bits set",
            ),
            (
                OFFICE.replace("\"lab\"", "\"office\""),
                "office.toml:12: a list named \"office\" is declared twice",
            ),
            (
                OFFICE.replace("enabled = true", "enabled = true\ncolour = 1"),
                "office.toml:6: unknown field `colour`",
            ),
            (
                OFFICE.replace("2001:db8:10::/48", "203.0.113.0/24"),
                "office.toml:8: office: 203.0.113.0/24 is in the list twice",
            ),
            (
                OFFICE.replace("198.51.100.7", "0.0.0.0/0"),
                "office.toml:13: lab: 0.0.0.0/0 allows every source",
            ),
            (
                OFFICE.replace("198.51.100.7", "nonsense"),
                "office.toml:13: lab: \"nonsense\" is not an IPv4/IPv6 address",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected);
            assert!(err.starts_with(expected), "{err}");
        }
        let err = PolicyFile::parse(
            Path::new("x.json"),
            r#"{"allowlist": [{"name": "a", "entries": [{"cidr": "10.0.0.1/8"}]}]}"#,
        )
        .expect_err("host bits")
        .to_string();
        assert!(
            err.starts_with("x.json:allowlist[0].entries[0]: a: 10.0.0.1/8 has host bits set"),
            "{err}"
        );
    }
}
