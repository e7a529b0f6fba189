//! An allowlist and its entries, as the model keeps them.

use std::fmt;
use std::sync::Arc;

use allowlist_common::RuleId;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// An entry's id, unique across lists: 64 bits, written `en_` and 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(pub u64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "en_{:016x}", self.0)
    }
}

impl std::str::FromStr for EntryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("en_")
            .filter(|hex| (1..=16).contains(&hex.len()))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(EntryId)
            .ok_or_else(|| format!("{s:?} is not an entry id (en_ and 16 hex digits)"))
    }
}

impl Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As `Display` writes it, without `core::fmt`: large lists write millions of ids.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = *b"en_0000000000000000";
        for (index, byte) in text[3..].iter_mut().enumerate() {
            *byte = DIGITS[((self.0 >> (60 - 4 * index)) & 0xf) as usize];
        }
        serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Parses the text where the deserializer holds it: no allocation per id.
        struct Text;

        impl serde::de::Visitor<'_> for Text {
            type Value = EntryId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an entry id (en_ and 16 hex digits)")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<EntryId, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Text)
    }
}

/// One allowed prefix in an allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Generated id, unique across lists.
    pub id: EntryId,
    /// The prefix (host bits clear).
    #[serde(serialize_with = "crate::policy::serialize_cidr")]
    pub cidr: IpNet,
    /// Free text, shared between entries that have the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Arc<str>>,
    /// Index of the entry's hit counter in the kernel.
    pub rule: RuleId,
    /// When the entry leaves its list by itself, without an acknowledgement (it was declared
    /// with the entry); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Expiry>,
    /// Added by a read of the list's feed since a person last set the list: not one of the
    /// entries a feed read may remove at most half of (see [`Allowlist::feed_baseline`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_feed: bool,
}

/// When an entry expires, in whole seconds since the Unix epoch: four bytes in an entry (a
/// million of them are held in memory), good until 2106. Written as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Expiry(std::num::NonZeroU32);

impl Expiry {
    /// `at`, rounded up to a whole second; `None` before 1970 or after 2106.
    pub fn from_time(at: OffsetDateTime) -> Option<Self> {
        let seconds = at.unix_timestamp() + i64::from(at.nanosecond() > 0);
        u32::try_from(seconds)
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .map(Expiry)
    }

    /// The time.
    pub fn time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(i64::from(self.0.get()))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl Serialize for Expiry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&self.time(), serializer)
    }
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let at = time::serde::rfc3339::deserialize(deserializer)?;
        Expiry::from_time(at)
            .ok_or_else(|| serde::de::Error::custom("an expiry between 1970 and 2106"))
    }
}

impl Entry {
    /// The description, empty when there is none.
    pub fn description(&self) -> &str {
        self.description.as_deref().unwrap_or("")
    }

    /// Whether the entry has expired at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at.time() <= now)
    }
}

/// A named allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    /// Generated id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The entries, sorted by prefix, each prefix once; shared between copies of the model
    /// until one of them edits the list.
    pub entries: Arc<Vec<Entry>>,
    /// Whether the list may hold a prefix that allows every source of a family
    /// (`0.0.0.0/0`, `::/0`): only when the request said so.
    #[serde(default)]
    pub allow_all: bool,
    /// Where the list comes from: `None` for the host's own lists, else the fleet release
    /// that declared it (read-only through the API while the host follows the fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetOrigin>,
    /// The feed the list follows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<super::ListSource>,
    /// For a list that follows a feed: how many entries it held when a person last set it.
    /// A feed read may take out at most half of those (counted from that time, so that no
    /// series of reads gets past it); entries a feed added since do not count.
    #[serde(default)]
    pub feed_baseline: usize,
    /// When the list was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the list last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Bumped on every change; the HTTP ETag.
    pub version: u64,
}

/// The fleet release a list comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetOrigin {
    /// The fleet.
    pub fleet: String,
    /// The release that declared the list as it is.
    pub release: String,
}

impl Allowlist {
    /// Takes the list as a person just set it: for a list that follows a feed, its entries
    /// become the ones a feed read may remove at most half of.
    pub(super) fn set_by_person(&mut self) {
        if self.source.is_none() {
            return;
        }
        if self.entries.iter().any(|entry| entry.from_feed) {
            for entry in Arc::make_mut(&mut self.entries) {
                entry.from_feed = false;
            }
        }
        self.feed_baseline = self.entries.len();
    }

    /// Whether every prefix of this list is also in `other`: replacing this list by `other`
    /// does not narrow what it allows.
    pub fn is_covered_by(&self, other: &Allowlist) -> bool {
        self.entries
            .iter()
            .all(|entry| other.entry(&entry.cidr).is_some())
    }

    /// The entry of prefix `cidr`, if the list has one (a binary search: entries are sorted).
    pub fn entry(&self, cidr: &IpNet) -> Option<&Entry> {
        self.entries
            .binary_search_by(|entry| entry.cidr.cmp(cidr))
            .ok()
            .map(|index| &self.entries[index])
    }
}

/// Formats a time as RFC 3339.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_serializes_as_it_displays_and_parses_back() {
        for raw in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            let id = EntryId(raw);
            let json = serde_json::to_string(&id).expect("json");
            assert_eq!(json, format!("\"{id}\""));
            assert_eq!(serde_json::from_str::<EntryId>(&json).expect("back"), id);
        }
    }
}
