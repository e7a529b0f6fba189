//! Releases in waves: which hosts take a release first, and how far its rollout got.
//!
//! An operator names the waves at publish (`--wave 'canary-*' --wave 25% --wave 100%`): host
//! names, globs, or a share of the fleet's members, counted from the first wave on. They are
//! resolved against the members then and stored in the release, so its signature covers
//! them; the last wave is every other host, those that join later included. How far the
//! rollout got ([`Progress`]) lives beside the release under `rollout/<id>`: the wave open
//! now, or where it halted and why. That key is progress, not authority: whoever forges it
//! gets a host no further than the release itself allows (a pending change that reverts
//! unless acknowledged for its wave).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The waves of a release: the hosts of each, as resolved at publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The waves as the operator named them (`canary-*`, `25%`, `100%`), for people.
    pub specs: Vec<String>,
    /// The hosts of each wave; the last wave also holds every host not named in one.
    pub waves: Vec<Vec<String>>,
    /// How long a wave's hosts keep the release, all healthy, before they acknowledge it by
    /// themselves and the next wave starts (seconds); without it, `fleet ack` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u64>,
}

/// How far a rollout got, as `rollout/<id>` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The wave open now (1 is the first): its hosts and those of earlier waves apply it.
    pub open: usize,
    /// Where the rollout halted, if it did: no later wave ever applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
}

/// Why a rollout halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halt {
    /// The wave in which it halted.
    pub wave: usize,
    /// The host that reverted or failed the release.
    pub host: String,
    /// What that host said.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// Why waves cannot be planned as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolloutError {
    /// A wave is not a host name, a glob or a percentage.
    #[error("wave {wave} ({spec:?}): {why}")]
    Spec {
        /// Its number.
        wave: usize,
        /// As given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// A wave would hold no host.
    #[error(
        "wave {wave} ({spec:?}) holds no host: it matches none of the fleet's {members} \
         members that an earlier wave does not already hold (allowlistctl fleet status lists \
         them)"
    )]
    Empty {
        /// Its number.
        wave: usize,
        /// As given.
        spec: String,
        /// How many members the fleet has.
        members: usize,
    },
}

/// One wave as given.
enum Spec {
    /// A share of the members, counted from the first wave on.
    Percent(u32),
    /// Host names or a glob of them.
    Hosts(glob::Pattern),
}

fn parse(wave: usize, text: &str) -> Result<Spec, RolloutError> {
    let refused = |why: String| RolloutError::Spec {
        wave,
        spec: text.to_owned(),
        why,
    };
    if let Some(number) = text.strip_suffix('%') {
        let percent: u32 = number
            .parse()
            .map_err(|_| refused("a percentage is a whole number from 1 to 100".into()))?;
        if !(1..=100).contains(&percent) {
            return Err(refused(
                "a percentage is a whole number from 1 to 100".into(),
            ));
        }
        return Ok(Spec::Percent(percent));
    }
    if text.is_empty() {
        return Err(refused("empty: name hosts, a glob or a percentage".into()));
    }
    glob::Pattern::new(text)
        .map(Spec::Hosts)
        .map_err(|err| refused(format!("not a glob: {err}")))
}

/// `host`'s place in the order in which percentages take hosts: the same on every run, and
/// not alphabetical (so that `web-a*` is not always first).
fn shuffled(host: &str) -> [u8; 32] {
    Sha256::digest(host.as_bytes()).into()
}

impl Rollout {
    /// Plans waves `specs` over the fleet's `members`, with `soak_seconds`. The last wave is
    /// everyone: `100%` (or `*`) may end the list, else such a wave is added. A wave that
    /// would hold nobody is refused (a typo in a glob would otherwise skip its canaries),
    /// but for the last one.
    pub fn plan(
        specs: &[String],
        members: &[String],
        soak_seconds: Option<u64>,
    ) -> Result<Rollout, RolloutError> {
        let mut specs = specs.to_vec();
        if specs
            .last()
            .is_none_or(|last| last != "100%" && last != "*")
        {
            specs.push("100%".into());
        }
        let mut left: Vec<&String> = members
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        left.sort_by_key(|host| shuffled(host));
        let total = left.len();
        let mut waves: Vec<Vec<String>> = Vec::new();
        for (index, text) in specs.iter().enumerate() {
            let number = index + 1;
            let last = number == specs.len();
            let taken: Vec<&String> = match parse(number, text)? {
                Spec::Percent(100) if !last => {
                    return Err(RolloutError::Spec {
                        wave: number,
                        spec: text.clone(),
                        why: "100% is everyone: only the last wave".into(),
                    });
                }
                Spec::Percent(percent) => {
                    let target = (total * percent as usize).div_ceil(100);
                    let done = total - left.len();
                    left.iter()
                        .take(target.saturating_sub(done))
                        .copied()
                        .collect()
                }
                Spec::Hosts(pattern) => left
                    .iter()
                    .filter(|host| pattern.matches(host))
                    .copied()
                    .collect(),
            };
            let taken: Vec<String> = match last {
                true => left.iter().map(|host| (*host).clone()).collect(),
                false => taken.into_iter().cloned().collect(),
            };
            if taken.is_empty() && !last {
                return Err(RolloutError::Empty {
                    wave: number,
                    spec: text.clone(),
                    members: total,
                });
            }
            left.retain(|host| !taken.contains(host));
            let mut sorted = taken;
            sorted.sort();
            waves.push(sorted);
        }
        Ok(Rollout {
            specs,
            waves,
            soak_seconds,
        })
    }

    /// How many waves.
    pub fn count(&self) -> usize {
        self.waves.len()
    }

    /// `host`'s wave (1 is the first): the last for a host no wave names.
    pub fn wave_of(&self, host: &str) -> usize {
        self.waves
            .iter()
            .position(|hosts| hosts.iter().any(|named| named == host))
            .map_or(self.count(), |index| index + 1)
    }

    /// The hosts of `wave`: those named in it, and for the last wave every member of
    /// `members` no wave names. Linear in the members, for fleets of thousands.
    pub fn hosts_of<'a>(
        &'a self,
        wave: usize,
        members: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&'a str> {
        let Some(named) = wave.checked_sub(1).and_then(|index| self.waves.get(index)) else {
            return Vec::new();
        };
        let mut hosts: Vec<&str> = named.iter().map(String::as_str).collect();
        if wave == self.count() {
            let in_a_wave: HashSet<&str> =
                self.waves.iter().flatten().map(String::as_str).collect();
            hosts.extend(
                members
                    .into_iter()
                    .filter(|member| !in_a_wave.contains(member)),
            );
        }
        hosts
    }

    /// Each named host's wave (a host not named is in the last).
    pub fn waves_by_host(&self) -> HashMap<&str, usize> {
        (1..)
            .zip(&self.waves)
            .flat_map(|(wave, hosts)| hosts.iter().map(move |host| (host.as_str(), wave)))
            .collect()
    }

    /// Why `host` does not apply the release (yet), given how far it got (`None`: it may):
    /// its wave is not open, or the rollout halted.
    pub fn holds(&self, host: &str, progress: &Progress) -> Option<String> {
        let wave = self.wave_of(host);
        // Not even a host of the halted wave that had not applied it yet.
        if let Some(halt) = &progress.halted {
            return Some(format!(
                "the rollout halted in wave {} ({}: {}): this host, in wave {wave}, stays on its \
                 policy (allowlistctl fleet abort takes the fleet back)",
                halt.wave, halt.host, halt.reason
            ));
        }
        (wave > progress.open).then(|| {
            format!(
                "in wave {wave} of {}: wave {} is rolling out",
                self.count(),
                progress.open
            )
        })
    }
}

impl Progress {
    /// How far a rollout got, from what its key holds: the first wave alone when the key is
    /// missing or holds anything else (the safe reading).
    pub fn read(value: Option<&[u8]>) -> Progress {
        value
            .and_then(|value| serde_json::from_slice::<Progress>(value).ok())
            .filter(|progress| progress.open >= 1)
            .unwrap_or(Progress {
                open: 1,
                halted: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|n| format!("web-{n:02}")).collect()
    }

    fn strings(specs: &[&str]) -> Vec<String> {
        specs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn waves_take_named_hosts_then_shares_counted_from_the_start_then_everyone() {
        let mut fleet = members(20);
        fleet.push("canary-1".into());
        fleet.push("canary-2".into());
        let plan = Rollout::plan(&strings(&["canary-*", "25%"]), &fleet, None).expect("plan");
        assert_eq!(plan.specs, strings(&["canary-*", "25%", "100%"]));
        assert_eq!(plan.waves[0], strings(&["canary-1", "canary-2"]));
        // 25 % of 22 is 6 hosts in all: 4 more after the two canaries.
        assert_eq!(plan.waves[1].len(), 4);
        assert_eq!(plan.waves[2].len(), 16);
        assert_eq!(plan.wave_of("canary-2"), 1);
        assert_eq!(plan.wave_of(&plan.waves[1][0]), 2);
        assert_eq!(
            plan.wave_of("joined-later"),
            3,
            "the last wave is everyone else"
        );
        let again = Rollout::plan(&strings(&["canary-*", "25%"]), &fleet, None).expect("plan");
        assert_eq!(plan, again, "the same hosts on every run");
        fleet.push("joined-later".into());
        let members = || fleet.iter().map(String::as_str);
        assert_eq!(plan.hosts_of(1, members()), ["canary-1", "canary-2"]);
        let last = plan.hosts_of(3, members());
        assert_eq!(last.len(), 17);
        assert!(last.contains(&"joined-later"));
        assert_eq!(plan.waves_by_host().get("canary-2"), Some(&1));
    }

    #[test]
    fn a_wave_that_holds_nobody_or_makes_no_sense_is_refused() {
        let fleet = members(3);
        let refused = |specs: &[&str]| Rollout::plan(&strings(specs), &fleet, None).unwrap_err();
        assert!(matches!(
            refused(&["canary-*"]),
            RolloutError::Empty { wave: 1, .. }
        ));
        for bad in [&["0%"][..], &["101%"], &["x%"], &["100%", "web-01"], &[""]] {
            assert!(
                matches!(refused(bad), RolloutError::Spec { .. }),
                "{bad:?}: {}",
                refused(bad)
            );
        }
        let plan = Rollout::plan(&strings(&["web-00", "web-01", "web-02"]), &fleet, None)
            .expect("a last wave with nobody left is fine");
        assert_eq!(plan.count(), 4);
        assert!(plan.waves[3].is_empty());
    }

    #[test]
    fn a_host_waits_for_its_wave_and_never_passes_a_halt() {
        let plan = Rollout::plan(&strings(&["web-00", "web-01"]), &members(3), None).expect("plan");
        let open = |open| Progress { open, halted: None };
        assert_eq!(plan.holds("web-00", &open(1)), None);
        assert!(plan.holds("web-01", &open(1)).is_some());
        assert!(plan.holds("web-02", &open(2)).is_some());
        assert_eq!(plan.holds("web-02", &open(3)), None);
        let halted = Progress {
            open: 3,
            halted: Some(Halt {
                wave: 2,
                host: "web-01".into(),
                reason: "reverted".into(),
                at: "2027-01-01T00:00:00Z".into(),
            }),
        };
        assert!(plan.holds("web-02", &halted).is_some(), "never past a halt");
        assert!(
            plan.holds("web-01", &halted).is_some(),
            "nor to a host of the halted wave that had not applied it yet"
        );
    }

    #[test]
    fn progress_that_cannot_be_read_opens_the_first_wave_only() {
        for value in [None, Some(&b"garbage"[..]), Some(br#"{"open":0}"#)] {
            assert_eq!(Progress::read(value).open, 1);
        }
        assert_eq!(Progress::read(Some(br#"{"open":2}"#)).open, 2);
    }
}
