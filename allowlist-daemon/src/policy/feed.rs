//! Lists of prefixes as files and feeds publish them: one CIDR or address per line, AWS's
//! ip-ranges.json, GitHub's meta API, a JSON array. Used by `allowlistctl import` and by the
//! daemon's refresh of lists that name a source.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parse_cidr;

/// Why a feed cannot be read at all (a prefix that does not parse is reported per place).
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The input is not JSON, for a JSON format.
    #[error("the input is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The JSON is not of the shape of its format.
    #[error("{0}")]
    Shape(&'static str),
}

/// How the input is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// One CIDR or address per line; `#` starts a comment; blank lines are skipped.
    #[default]
    Lines,
    /// AWS ip-ranges.json: `prefixes[].ip_prefix` and `ipv6_prefixes[].ipv6_prefix`.
    Aws,
    /// GitHub's meta API (`/meta`): every array of CIDRs it holds (hooks, web, api, git, ...).
    Github,
    /// A JSON array of CIDR strings.
    Json,
}

impl FeedFormat {
    /// The format's name, as the API and policy files write it.
    pub fn name(self) -> &'static str {
        match self {
            FeedFormat::Lines => "lines",
            FeedFormat::Aws => "aws",
            FeedFormat::Github => "github",
            FeedFormat::Json => "json",
        }
    }
}

/// A prefix of a feed as written, and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where: `line 7`, `prefixes[3].ip_prefix`.
    pub place: String,
    /// As written.
    pub text: String,
}

/// The prefixes of a feed, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedRead {
    /// Every valid prefix, once.
    pub prefixes: BTreeSet<IpNet>,
    /// Prefixes given more than once.
    pub repeated: usize,
    /// The invalid ones: `place: why`.
    pub invalid: Vec<String>,
}

impl FeedRead {
    /// The invalid prefixes for a message: how many, and the first few by place.
    pub fn invalid_summary(&self) -> String {
        const SHOWN: usize = 3;
        let mut text = format!(
            "{} invalid prefixes ({}",
            self.invalid.len(),
            self.invalid[..self.invalid.len().min(SHOWN)].join("; ")
        );
        if self.invalid.len() > SHOWN {
            text.push_str("; ...");
        }
        text.push(')');
        text
    }
}

/// The prefixes `text` holds in `format`, parsed: the valid ones, and each invalid one by
/// its place.
pub fn read_feed(text: &str, format: FeedFormat) -> Result<FeedRead, FeedError> {
    let mut read = FeedRead::default();
    for item in feed_prefixes(text, format)? {
        match parse_cidr(&item.text) {
            Ok(net) => {
                if !read.prefixes.insert(net) {
                    read.repeated += 1;
                }
            }
            Err(err) => read.invalid.push(format!("{}: {err}", item.place)),
        }
    }
    Ok(read)
}

/// The prefixes `text` holds in `format`, each with its place, as written (not checked).
pub fn feed_prefixes(text: &str, format: FeedFormat) -> Result<Vec<Found>, FeedError> {
    if format == FeedFormat::Lines {
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
    let feed: Value = serde_json::from_str(text)?;
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
        FeedFormat::Aws => {
            let mut any = false;
            for (array, key) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
                for (index, item) in feed[array].as_array().into_iter().flatten().enumerate() {
                    any = true;
                    strings(format!("{array}[{index}].{key}"), &item[key]);
                }
            }
            if !any {
                return Err(FeedError::Shape(
                    "no prefixes[] or ipv6_prefixes[] in the input: is it AWS ip-ranges.json?",
                ));
            }
        }
        FeedFormat::Github => {
            let object = feed
                .as_object()
                .ok_or(FeedError::Shape("GitHub's meta API answers an object"))?;
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
        FeedFormat::Json => {
            let items = feed
                .as_array()
                .ok_or(FeedError::Shape("expected a JSON array of CIDRs"))?;
            for (index, item) in items.iter().enumerate() {
                strings(format!("[{index}]"), item);
            }
        }
        FeedFormat::Lines => {}
    }
    Ok(found)
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
        let found = feed_prefixes(
            "# office\n  192.0.2.0/24  \n\n198.51.100.7 # laptop\n\t2001:db8::/32\n",
            FeedFormat::Lines,
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
    fn aws_and_github_feeds_give_their_feed_prefixes() {
        let aws = r#"{"syncToken":"1","prefixes":[{"ip_prefix":"3.5.140.0/22","service":"S3"}],
            "ipv6_prefixes":[{"ipv6_prefix":"2600:1f18::/33","service":"EC2"}]}"#;
        assert_eq!(
            texts(&feed_prefixes(aws, FeedFormat::Aws).expect("aws")),
            [
                ("prefixes[0].ip_prefix", "3.5.140.0/22"),
                ("ipv6_prefixes[0].ipv6_prefix", "2600:1f18::/33")
            ]
        );
        let github = r#"{"verifiable_password_authentication":false,
            "hooks":["192.30.252.0/22","2a0a:a440::/29"],"domains":{"website":["*.github.com"]},
            "ssh_keys":["ssh-ed25519 AAAA"]}"#;
        assert_eq!(
            texts(&feed_prefixes(github, FeedFormat::Github).expect("github")),
            [
                ("hooks[0]", "192.30.252.0/22"),
                ("hooks[1]", "2a0a:a440::/29")
            ]
        );
        assert!(feed_prefixes("{}", FeedFormat::Aws).is_err());
    }
}
