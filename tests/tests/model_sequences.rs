//! Random sequences of every admin operation, driven against the pure model and checked after
//! every step against a small reference of what the kernel should enforce, and against the
//! model's safety invariants.

use std::collections::BTreeSet;
use std::time::Duration;

use allowlist_daemon::model::{
    AllowlistInput, DesiredList, EntriesInput, EntryId, EntryInput, IdSource, Model, ModelError,
    Scope, SequentialIds, Settings,
};
use allowlist_daemon::policy::PortScope;
use allowlist_tests::reference::{Enforced, Reference};
use ipnet::IpNet;
use proptest::prelude::*;
use time::OffsetDateTime;

const NAMES: [&str; 3] = ["a", "b", "c"];
const POOL: [&str; 8] = [
    "192.0.2.0/24",
    "192.0.2.7/32",
    "198.51.100.0/24",
    "198.51.100.9/32",
    "203.0.113.0/25",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1::5/128",
];
const PORTS: [&str; 3] = ["tcp/22", "tcp/443", "udp/51820"];
const ACK_MIN: i64 = 60;
const ACK_MAX: i64 = 120;

fn settings() -> Settings {
    Settings {
        max_lists: 3,
        max_entries: 8,
        max_name_len: 16,
        max_description_len: 16,
        ack_min: Duration::from_secs(ACK_MIN as u64),
        ack_max: Duration::from_secs(ACK_MAX as u64),
        rule_capacity: 16,
        max_entry_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        list: usize,
        cidrs: Vec<usize>,
    },
    Add {
        list: usize,
        cidrs: Vec<usize>,
    },
    Remove {
        list: usize,
        entry: usize,
    },
    Replace {
        list: usize,
        name: usize,
        cidrs: Vec<usize>,
    },
    Delete {
        list: usize,
    },
    Enable {
        lists: Vec<usize>,
    },
    Disable {
        lists: Vec<usize>,
    },
    Scopes {
        ports: Vec<usize>,
    },
    /// `allowlistctl apply`: each named list with its prefixes and enabled flag.
    Apply {
        lists: Vec<(usize, Vec<usize>, bool)>,
        prune: bool,
    },
    /// A fleet release of these lists.
    Release {
        lists: Vec<(usize, Vec<usize>, bool)>,
    },
    /// The fleet acknowledges the pending release.
    FleetAck,
    Acknowledge,
    Wait {
        seconds: i64,
    },
    Restart,
}

/// Lists as a policy file or a release declares them: distinct names, prefixes, enabled.
fn declared() -> impl Strategy<Value = Vec<(usize, Vec<usize>, bool)>> {
    proptest::collection::btree_map(
        0..NAMES.len(),
        (
            proptest::collection::vec(0..POOL.len(), 0..4),
            any::<bool>(),
        ),
        0..3,
    )
    .prop_map(|lists| {
        lists
            .into_iter()
            .map(|(name, (cidrs, enabled))| (name, cidrs, enabled))
            .collect()
    })
}

fn op() -> impl Strategy<Value = Op> {
    let list = 0..NAMES.len();
    let cidrs = || proptest::collection::vec(0..POOL.len(), 0..4);
    prop_oneof![
        2 => (list.clone(), cidrs()).prop_map(|(list, cidrs)| Op::Create { list, cidrs }),
        2 => (list.clone(), cidrs()).prop_map(|(list, cidrs)| Op::Add { list, cidrs }),
        2 => (list.clone(), 0..4usize).prop_map(|(list, entry)| Op::Remove { list, entry }),
        2 => (list.clone(), prop_oneof![3 => Just(None), 1 => (0..NAMES.len()).prop_map(Some)], cidrs())
            .prop_map(|(list, name, cidrs)| Op::Replace { list, name: name.unwrap_or(list), cidrs }),
        1 => list.clone().prop_map(|list| Op::Delete { list }),
        3 => proptest::collection::vec(0..NAMES.len(), 1..3).prop_map(|lists| Op::Enable { lists }),
        2 => proptest::collection::vec(0..NAMES.len(), 1..3).prop_map(|lists| Op::Disable { lists }),
        1 => proptest::collection::vec(0..PORTS.len(), 0..3).prop_map(|ports| Op::Scopes { ports }),
        2 => Just(Op::Acknowledge),
        1 => (declared(), any::<bool>()).prop_map(|(lists, prune)| Op::Apply { lists, prune }),
        1 => declared().prop_map(|lists| Op::Release { lists }),
        1 => Just(Op::FleetAck),
        3 => prop_oneof![Just(1i64), Just(30), Just(61), Just(125), 0..130i64]
            .prop_map(|seconds| Op::Wait { seconds }),
        1 => Just(Op::Restart),
    ]
}

struct Harness {
    model: Model,
    reference: Reference,
    at: i64,
    next_id: u64,
    release: u64,
}

fn time(at: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + at)
}

fn entries(cidrs: &[usize]) -> Vec<EntryInput> {
    cidrs
        .iter()
        .map(|&i| EntryInput {
            cidr: POOL[i].to_owned(),
            description: None,
            expires_at: None,
            ttl: None,
        })
        .collect()
}

fn input(name: &str, cidrs: &[usize]) -> AllowlistInput {
    AllowlistInput {
        name: name.to_owned(),
        description: None,
        entries: Some(entries(cidrs)),
        allow_all: false,
        source: None,
    }
}

fn parsed(cidrs: &[usize]) -> BTreeSet<IpNet> {
    cidrs
        .iter()
        .map(|&i| POOL[i].parse().expect("pool"))
        .collect()
}

/// A snapshot of what the model makes the kernel enforce: prefixes, enabled lists, scopes.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    prefixes: BTreeSet<IpNet>,
    enabled: BTreeSet<String>,
    scopes: BTreeSet<PortScope>,
}

fn seen(model: &Model) -> Seen {
    Seen {
        prefixes: model.effective_policy().iter().map(|(n, _)| *n).collect(),
        enabled: model.enabled().clone(),
        scopes: model.scopes().clone(),
    }
}

fn widens(before: &Seen, after: &Seen) -> bool {
    before.prefixes.is_subset(&after.prefixes)
        && before.enabled == after.enabled
        && before.scopes == after.scopes
}

impl Harness {
    fn new() -> Self {
        Harness {
            model: Model::default(),
            reference: Reference::new(ACK_MIN, ACK_MAX),
            at: 0,
            next_id: 0,
            release: 0,
        }
    }

    fn id_of(&self, list: usize) -> Option<String> {
        self.model
            .allowlists()
            .find(|l| l.name == NAMES[list])
            .map(|l| l.id.clone())
    }

    fn ids_of(&self, lists: &[usize]) -> Vec<String> {
        lists
            .iter()
            .map(|&l| self.id_of(l).unwrap_or_else(|| format!("missing-{l}")))
            .collect()
    }

    /// Applies the declared lists in `scope`; the reference follows what the model did.
    fn apply(
        &mut self,
        lists: &[(usize, Vec<usize>, bool)],
        scope: Scope<'_>,
        now: OffsetDateTime,
        ids: IdSource,
    ) -> Result<(), ModelError> {
        let desired = lists
            .iter()
            .map(|(name, cidrs, enabled)| DesiredList {
                name: NAMES[*name].to_owned(),
                description: String::new(),
                enabled: *enabled,
                allow_all: false,
                entries: entries(cidrs),
                source: None,
            })
            .collect();
        let before: BTreeSet<String> = self.model.allowlists().map(|l| l.id.clone()).collect();
        self.model
            .apply(desired, scope, &[], false, now, &settings(), ids)?;
        let declared = lists
            .iter()
            .filter_map(|(name, cidrs, enabled)| {
                Some((self.id_of(*name)?, parsed(cidrs), *enabled))
            })
            .collect::<Vec<_>>();
        let after: BTreeSet<String> = self.model.allowlists().map(|l| l.id.clone()).collect();
        let deleted: Vec<String> = before.difference(&after).cloned().collect();
        let release = matches!(scope, Scope::Fleet { .. });
        self.reference.apply(self.at, &declared, &deleted, release);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let settings = settings();
        let now = time(self.at);
        let before = seen(&self.model);
        let reverted_before = seen(&self.model.reverted());
        let pending_before = self.model.pending().map(|p| p.applied_at);
        let mut ids = SequentialIds(self.next_id);
        let outcome: Result<(), ModelError> = match op {
            Op::Create { list, cidrs } => self
                .model
                .create(input(NAMES[*list], cidrs), now, &settings, &mut ids)
                .map(|l| {
                    let id = l.id.clone();
                    self.reference.create(&id, parsed(cidrs));
                }),
            Op::Add { list, cidrs } => {
                let id = self.id_of(*list).unwrap_or_default();
                self.model
                    .add_entries(
                        &id,
                        EntriesInput {
                            entries: entries(cidrs),
                            allow_all: false,
                        },
                        now,
                        &settings,
                        &mut ids,
                    )
                    .map(|_| {
                        let mut set = self.reference.entries(&id);
                        set.extend(parsed(cidrs));
                        self.reference.set_entries(self.at, &id, set);
                    })
            }
            Op::Remove { list, entry } => {
                let id = self.id_of(*list).unwrap_or_default();
                let target = self.model.allowlist(&id).ok().and_then(|l| {
                    (!l.entries.is_empty()).then(|| l.entries[entry % l.entries.len()].clone())
                });
                let entry_id = target.as_ref().map_or(EntryId(u64::MAX), |e| e.id);
                self.model
                    .remove_entry(&id, entry_id, None, now, &settings)
                    .map(|removed| {
                        let mut set = self.reference.entries(&id);
                        set.remove(&removed.cidr);
                        self.reference.set_entries(self.at, &id, set);
                    })
            }
            Op::Replace { list, name, cidrs } => {
                let id = self.id_of(*list).unwrap_or_default();
                self.model
                    .replace(
                        &id,
                        input(NAMES[*name], cidrs),
                        None,
                        now,
                        &settings,
                        &mut ids,
                    )
                    .map(|_| ())
                    .map(|()| self.reference.set_entries(self.at, &id, parsed(cidrs)))
            }
            Op::Delete { list } => {
                let id = self.id_of(*list).unwrap_or_default();
                self.model
                    .delete(&id, None)
                    .map(|_| self.reference.delete(&id))
            }
            Op::Enable { lists } => {
                let ids = self.ids_of(lists);
                self.model
                    .enable(&ids, &[], false, now, &settings)
                    .map(|()| self.reference.enable(self.at, &ids))
            }
            Op::Disable { lists } => {
                let ids = self.ids_of(lists);
                self.model
                    .disable(&ids, now, &settings)
                    .map(|()| self.reference.disable(self.at, &ids))
            }
            Op::Scopes { ports } => {
                let scopes: BTreeSet<PortScope> = ports
                    .iter()
                    .map(|&p| PORTS[p].parse().expect("port"))
                    .collect();
                let changes = &scopes != self.model.scopes();
                self.model
                    .set_scopes(scopes.clone(), now, &settings)
                    .map(|()| self.reference.set_scopes(self.at, scopes, changes))
            }
            Op::Apply { lists, prune } => {
                let scope = Scope::Local { prune: *prune };
                self.apply(lists, scope, now, &mut ids)
            }
            Op::Release { lists } => {
                self.release += 1;
                let release = format!("r{}", self.release);
                let scope = Scope::Fleet {
                    fleet: "fleet",
                    release: &release,
                };
                self.apply(lists, scope, now, &mut ids)
            }
            Op::FleetAck => {
                let release = self.model.pending_release().map(str::to_owned);
                let result = match release {
                    Some(release) => self.model.acknowledge_release(&release, now, &settings),
                    None => Err(ModelError::NothingPending),
                };
                if result.is_ok() {
                    self.reference.acknowledge();
                }
                result.map(|_| ())
            }
            Op::Acknowledge => {
                let result = self.model.acknowledge(now, &settings).map(|_| ());
                match (&result, &self.reference.pending) {
                    (Ok(()), Some(p)) => {
                        prop_assert!(self.at >= p.acknowledge_after && self.at < p.revert_at);
                        self.reference.acknowledge();
                    }
                    (Ok(()), None) => prop_assert!(false, "acknowledged nothing"),
                    (Err(err), _) => {
                        prop_assert!(
                            ["too_early", "nothing_pending", "fleet_release_pending"]
                                .contains(&err.code())
                        );
                        self.reference.revert_if_due(self.at);
                    }
                }
                result
            }
            Op::Wait { seconds } => {
                self.at += seconds;
                self.model.revert_if_due(time(self.at));
                self.reference.revert_if_due(self.at);
                Ok(())
            }
            Op::Restart => {
                let json = serde_json::to_string(&self.model).expect("serialize");
                let mut back: Model = serde_json::from_str(&json).map_err(|err| {
                    TestCaseError::fail(format!("the saved state does not load: {err}"))
                })?;
                prop_assert_eq!(&back, &self.model, "the state survives a restart");
                back.validate(&settings).map_err(|err| {
                    TestCaseError::fail(format!("the saved state is refused on load: {err}"))
                })?;
                back.revert_if_due(now);
                self.model = back;
                self.reference.revert_if_due(self.at);
                Ok(())
            }
        };
        self.next_id = ids.0;
        let after = seen(&self.model);
        let pending_after = self.model.pending().map(|p| p.applied_at);
        if outcome.is_err() {
            prop_assert_eq!(&after, &before, "a refused {:?} changed nothing", op);
        } else if !matches!(
            op,
            Op::Wait { .. } | Op::Restart | Op::Acknowledge | Op::FleetAck
        ) {
            // No change escapes its acknowledgement.
            match (pending_before, pending_after) {
                (None, None) => prop_assert!(
                    widens(&before, &after),
                    "{:?} narrowed the policy without a pending change: {:?} -> {:?}",
                    op,
                    before,
                    after
                ),
                (None, Some(_)) => prop_assert_eq!(
                    seen(&self.model.reverted()),
                    before.clone(),
                    "the new pending change reverts to what was enforced before"
                ),
                (Some(b), Some(a)) => {
                    prop_assert_eq!(b, a, "one change at a time");
                    prop_assert!(
                        widens(&before, &after),
                        "{:?} narrowed the policy while a change was pending",
                        op
                    );
                    prop_assert!(
                        widens(&reverted_before, &seen(&self.model.reverted())),
                        "{:?} narrowed what the pending change reverts to: {:?} -> {:?}",
                        op,
                        reverted_before,
                        seen(&self.model.reverted())
                    );
                }
                (Some(_), None) => prop_assert!(false, "{:?} ended the pending change", op),
            }
        }
        self.check()
    }

    /// The model against the reference, and its invariants.
    fn check(&self) -> Result<(), TestCaseError> {
        let settings = settings();
        let scopes = |e: &Enforced| e.scopes.clone().unwrap_or_default();
        let expected = |e: &Enforced| Seen {
            prefixes: e.prefixes(),
            enabled: e.enabled.clone(),
            scopes: scopes(e),
        };
        prop_assert_eq!(
            seen(&self.model),
            expected(&self.reference.now),
            "enforced now"
        );
        prop_assert_eq!(
            seen(&self.model.reverted()),
            expected(&self.reference.reverted()),
            "what a revert restores"
        );
        match (self.model.pending(), &self.reference.pending) {
            (None, None) => {}
            (Some(p), Some(r)) => {
                prop_assert_eq!(p.acknowledge_after, time(r.acknowledge_after));
                prop_assert_eq!(p.revert_at, time(r.revert_at));
            }
            (p, r) => prop_assert!(false, "pending: model {:?}, reference {:?}", p, r),
        }
        for state in [&self.model, &self.model.reverted()] {
            if state.enforcing() {
                prop_assert!(!state.effective_policy().is_empty(), "enforcing nothing");
            }
            let lists: Vec<_> = state.allowlists().collect();
            prop_assert!(lists.len() <= settings.max_lists, "too many lists");
            let total: usize = lists.iter().map(|l| l.entries.len()).sum();
            prop_assert!(
                total <= settings.max_entries,
                "{} entries over the limit",
                total
            );
            let names: BTreeSet<_> = lists.iter().map(|l| &l.name).collect();
            prop_assert_eq!(names.len(), lists.len(), "duplicate names");
            for list in &lists {
                let cidrs: BTreeSet<_> = list.entries.iter().map(|e| e.cidr).collect();
                prop_assert_eq!(cidrs.len(), list.entries.len(), "duplicate entries");
            }
            for id in state.enabled() {
                prop_assert!(
                    state.allowlist(id).is_ok(),
                    "enabled list {} is missing",
                    id
                );
            }
            if let Some(pending) = state.pending() {
                let unique: BTreeSet<_> = pending.allowlist_ids.iter().collect();
                prop_assert_eq!(unique.len(), pending.allowlist_ids.len(), "ids twice");
            }
        }
        let rules = self.model.rules_in_use();
        prop_assert!(rules.ones().all(|r| r < settings.rule_capacity as usize));
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_sequence_keeps_the_safety_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.step(op)?;
        }
    }
}
