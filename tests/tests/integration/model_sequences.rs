//! Random sequences of every admin operation, of time passing (expiries, deadlines), of feed
//! reads (any content, hostile ones included), of fleet releases and of the daemon dying and
//! coming back, driven against the pure model and checked after every step against a small
//! reference of what the kernel should enforce, against what the daemon writes to the kernel
//! (which then expires and reverts by itself), and against the model's safety invariants.

use std::collections::BTreeSet;
use std::time::Duration;

use std::net::IpAddr;

use allowlist_daemon::model::{
    AllowlistInput, DesiredList, EntriesInput, EntryId, EntryInput, GuardedAddress, IdSource,
    Model, ModelError, Scope, SequentialIds, Settings, SourceInput,
};
use allowlist_daemon::policy::{FeedFormat, PortScope};
use allowlist_tests::kernel_image::KernelImage;
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
        /// The list follows a feed.
        fed: bool,
    },
    Add {
        list: usize,
        cidrs: Vec<usize>,
        /// Seconds the entries live (`None`: for good).
        ttl: Option<i64>,
    },
    /// A read of the list's feed: what the list holds without `drop` and with `add` (only
    /// `add`, when `whole`: any content, hostile ones included), with an established session
    /// from probe `session` to a protected port.
    FeedRead {
        list: usize,
        add: Vec<usize>,
        drop: Vec<usize>,
        whole: bool,
        session: Option<usize>,
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
        /// An established session from this probe to a protected port.
        session: Option<usize>,
    },
    /// The fleet acknowledges the pending release.
    FleetAck,
    Acknowledge,
    Wait {
        seconds: i64,
    },
    /// The daemon dies (`kill -9`): nothing reaches it, the kernel goes on alone.
    Kill,
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
    // Most operations on one list, so that they build on each other.
    let list = prop_oneof![3 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)];
    let cidrs = || proptest::collection::vec(0..POOL.len(), 0..4);
    let ttl = prop_oneof![1 => Just(None), 1 => (1..200i64).prop_map(Some)];
    // Lists created empty, then given entries that expire, are how a policy may come to
    // expire whole.
    let created = prop_oneof![1 => Just(Vec::new()), 1 => cidrs()];
    let session = prop_oneof![2 => Just(None), 1 => (0..probes().len()).prop_map(Some)];
    prop_oneof![
        2 => (list.clone(), created, any::<bool>())
            .prop_map(|(list, cidrs, fed)| Op::Create { list, cidrs, fed }),
        3 => (list.clone(), cidrs(), ttl).prop_map(|(list, cidrs, ttl)| Op::Add { list, cidrs, ttl }),
        4 => (list.clone(), cidrs(), cidrs(), proptest::bool::weighted(0.2), session)
            .prop_map(|(list, add, drop, whole, session)| Op::FeedRead { list, add, drop, whole, session }),
        2 => (list.clone(), 0..4usize).prop_map(|(list, entry)| Op::Remove { list, entry }),
        2 => (list.clone(), prop_oneof![3 => Just(None), 1 => (0..NAMES.len()).prop_map(Some)], cidrs())
            .prop_map(|(list, name, cidrs)| Op::Replace { list, name: name.unwrap_or(list), cidrs }),
        1 => list.clone().prop_map(|list| Op::Delete { list }),
        4 => proptest::collection::vec(list.clone(), 1..3).prop_map(|lists| Op::Enable { lists }),
        2 => proptest::collection::vec(0..NAMES.len(), 1..3).prop_map(|lists| Op::Disable { lists }),
        1 => proptest::collection::vec(0..PORTS.len(), 0..3).prop_map(|ports| Op::Scopes { ports }),
        2 => Just(Op::Acknowledge),
        1 => (declared(), any::<bool>()).prop_map(|(lists, prune)| Op::Apply { lists, prune }),
        2 => (declared(), prop_oneof![2 => Just(None), 1 => (0..probes().len()).prop_map(Some)])
            .prop_map(|(lists, session)| Op::Release { lists, session }),
        1 => Just(Op::FleetAck),
        4 => prop_oneof![Just(1i64), Just(30), Just(61), Just(125), 0..250i64]
            .prop_map(|seconds| Op::Wait { seconds }),
        1 => Just(Op::Kill),
        3 => Just(Op::Restart),
    ]
}

/// Operations on two lists whose entries mostly expire and which may follow feeds, with time
/// passing and the daemon dying: how expiries, feed reads, deadlines and the kernel's own
/// work meet.
fn timed_op() -> impl Strategy<Value = Op> {
    let list = prop_oneof![3 => Just(0usize), 1 => Just(1usize)];
    let cidrs = || proptest::collection::vec(0..POOL.len(), 1..3);
    let ttl = prop_oneof![1 => Just(None), 4 => (1..120i64).prop_map(Some)];
    let session = prop_oneof![2 => Just(None), 1 => (0..probes().len()).prop_map(Some)];
    prop_oneof![
        1 => (list.clone(), prop_oneof![3 => Just(Vec::new()), 1 => cidrs()], any::<bool>())
            .prop_map(|(list, cidrs, fed)| Op::Create { list, cidrs, fed }),
        5 => (list.clone(), cidrs(), ttl).prop_map(|(list, cidrs, ttl)| Op::Add { list, cidrs, ttl }),
        3 => (list.clone(), cidrs(), cidrs(), proptest::bool::weighted(0.2), session)
            .prop_map(|(list, add, drop, whole, session)| Op::FeedRead { list, add, drop, whole, session }),
        1 => (list.clone(), 0..4usize).prop_map(|(list, entry)| Op::Remove { list, entry }),
        3 => list.clone().prop_map(|list| Op::Enable { lists: vec![list] }),
        1 => list.clone().prop_map(|list| Op::Disable { lists: vec![list] }),
        3 => Just(Op::Acknowledge),
        5 => prop_oneof![Just(1i64), Just(30), Just(61), 0..200i64]
            .prop_map(|seconds| Op::Wait { seconds }),
        1 => Just(Op::Kill),
        2 => Just(Op::Restart),
    ]
}

/// Addresses whose verdicts are compared: each pool prefix's first and last address, and one
/// outside every prefix of each family.
fn probes() -> Vec<IpAddr> {
    let mut probes: Vec<IpAddr> = POOL
        .iter()
        .flat_map(|cidr| {
            let net: IpNet = cidr.parse().expect("pool");
            [net.network(), net.broadcast()]
        })
        .collect();
    probes.push("10.9.9.9".parse().expect("outside"));
    probes.push("2001:db9::1".parse().expect("outside"));
    probes.sort();
    probes.dedup();
    probes
}

struct Harness {
    model: Model,
    reference: Reference,
    at: i64,
    next_id: u64,
    release: u64,
    /// What the daemon last wrote to the kernel.
    kernel: KernelImage,
    /// The daemon is dead: the kernel goes on alone until a restart.
    dead: bool,
}

fn time(at: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + at)
}

fn entries(cidrs: &[usize]) -> Vec<EntryInput> {
    expiring(cidrs, None)
}

/// The entries of `cidrs`, living `ttl` seconds (`None`: for good).
fn expiring(cidrs: &[usize], ttl: Option<i64>) -> Vec<EntryInput> {
    cidrs
        .iter()
        .map(|&i| EntryInput {
            cidr: POOL[i].to_owned(),
            description: None,
            expires_at: None,
            ttl: ttl.map(|seconds| format!("{seconds}s")),
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

/// A feed, which the test reads for the daemon.
fn feed() -> SourceInput {
    SourceInput {
        url: "https://feeds.example/list.txt".into(),
        format: FeedFormat::Lines,
        refresh: Some("1m".into()),
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

/// `seen` without the prefixes of entries past their time at `now` (held until then) that
/// `after` no longer enforces: an operation may end such a hold, which is an expiry, not a
/// change to acknowledge.
fn without_ended_holds(seen: &Seen, state: &Model, after: &Seen, now: OffsetDateTime) -> Seen {
    let ended: BTreeSet<IpNet> = state
        .enabled()
        .iter()
        .filter_map(|id| state.allowlist(id).ok())
        .flat_map(|list| list.entries.iter())
        .filter(|entry| entry.expired(now) && !after.prefixes.contains(&entry.cidr))
        .map(|entry| entry.cidr)
        .collect();
    Seen {
        prefixes: seen.prefixes.difference(&ended).copied().collect(),
        ..seen.clone()
    }
}

impl Harness {
    fn new() -> Self {
        let model = Model::default();
        Harness {
            kernel: KernelImage::of(&model, time(0)),
            model,
            reference: Reference::new(ACK_MIN, ACK_MAX),
            at: 0,
            next_id: 0,
            release: 0,
            dead: false,
        }
    }

    /// What the daemon does at `now` by itself, on its ticks: reverts a change past its
    /// deadline, takes out expired entries, and writes the kernel.
    fn tick(&mut self, at: i64) {
        self.model.revert_if_due(time(at));
        self.model.expire(time(at));
        self.kernel = KernelImage::of(&self.model, time(0));
    }

    /// Lets time pass until `to`: with the daemon running, it acts at each expiry and
    /// deadline in turn; dead, only the kernel does.
    fn wait_until(&mut self, to: i64) {
        self.reference.advance(self.at, to);
        if !self.dead {
            loop {
                let deadline = self.model.pending().map(|p| p.revert_at);
                let next = self
                    .model
                    .next_expiry_after(time(self.at))
                    .into_iter()
                    .chain(deadline.filter(|at| *at > time(self.at)))
                    .min()
                    .filter(|at| *at <= time(to));
                let Some(next) = next else { break };
                let next = (next - time(0)).whole_seconds();
                self.tick(next);
                self.at = next;
            }
            self.tick(to);
        }
        self.at = to;
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
        guarded: &[GuardedAddress],
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
            .apply(desired, scope, guarded, false, now, &settings(), ids)?;
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
        if self.dead && !matches!(op, Op::Wait { .. } | Op::Restart | Op::Kill) {
            // Nothing reaches a dead daemon.
            return self.check();
        }
        let settings = settings();
        let now = time(self.at);
        let before = seen(&self.model);
        let reverted_before = seen(&self.model.reverted());
        let (model_before, reverted_model_before) = (self.model.clone(), self.model.reverted());
        let pending_before = self.model.pending().map(|p| p.applied_at);
        let mut ids = SequentialIds(self.next_id);
        let outcome: Result<(), ModelError> = match op {
            Op::Create { list, cidrs, fed } => {
                let input = AllowlistInput {
                    source: fed.then(feed),
                    ..input(NAMES[*list], cidrs)
                };
                self.model.create(input, now, &settings, &mut ids).map(|l| {
                    let id = l.id.clone();
                    self.reference.create(&id, parsed(cidrs));
                    self.reference.set_feed(&id, *fed);
                })
            }
            Op::Add { list, cidrs, ttl } => {
                let id = self.id_of(*list).unwrap_or_default();
                self.model
                    .add_entries(
                        &id,
                        EntriesInput {
                            entries: expiring(cidrs, *ttl),
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
                        let until = ttl.map(|ttl| self.at + ttl);
                        self.reference
                            .set_expiries(&id, parsed(cidrs).into_iter().map(|net| (net, until)));
                    })
            }
            Op::FeedRead {
                list,
                add,
                drop,
                whole,
                session,
            } => {
                let id = self.id_of(*list).unwrap_or_default();
                let mut prefixes = parsed(add);
                if !whole {
                    let kept = self.reference.entries(&id);
                    prefixes.extend(kept.difference(&parsed(drop)));
                }
                let guarded: Vec<GuardedAddress> = session
                    .map(|probe| GuardedAddress {
                        address: probes()[probe],
                        found: "session to port 22".into(),
                    })
                    .into_iter()
                    .collect();
                let addresses: Vec<IpAddr> = guarded.iter().map(|g| g.address).collect();
                let result = self
                    .model
                    .refresh_from_source(&id, &prefixes, &guarded, now, &settings, &mut ids)
                    .map(|_| ());
                let accepted =
                    self.reference
                        .feed_read(&id, &prefixes, &addresses, settings.max_entries);
                prop_assert_eq!(
                    result.is_ok(),
                    accepted,
                    "a feed read of {:?} for {}: model {:?}",
                    prefixes,
                    id,
                    result
                );
                result
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
                    .map(|()| {
                        // Declared without times or a feed, the list now has neither (what
                        // a revert restores keeps both).
                        self.reference.set_entries(self.at, &id, parsed(cidrs));
                        self.reference.set_feed(&id, false);
                        self.reference
                            .set_expiries(&id, parsed(cidrs).into_iter().map(|net| (net, None)));
                    })
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
                self.apply(lists, scope, &[], now, &mut ids)
            }
            Op::Release { lists, session } => {
                self.release += 1;
                let release = format!("r{}", self.release);
                let scope = Scope::Fleet {
                    fleet: "fleet",
                    release: &release,
                };
                let guarded: Vec<GuardedAddress> = session
                    .map(|probe| GuardedAddress {
                        address: probes()[probe],
                        found: "session to port 22".into(),
                    })
                    .into_iter()
                    .collect();
                let before = self.reference.now.clone();
                let result = self.apply(lists, scope, &guarded, now, &mut ids);
                // No release cuts a protected session, whatever it holds; and the guard
                // refuses only what would.
                let cuts = |after: &Enforced| {
                    guarded
                        .iter()
                        .any(|g| before.allows(g.address) && !after.allows(g.address))
                };
                match &result {
                    Ok(()) => prop_assert!(
                        !cuts(&self.reference.now),
                        "release {} cut a protected session",
                        release
                    ),
                    Err(ModelError::WouldLockOut { .. }) => {
                        let mut judged = self.reference.clone();
                        let declared: Vec<_> = lists
                            .iter()
                            .map(|(name, cidrs, enabled)| {
                                let id = self.id_of(*name).unwrap_or_else(|| format!("new-{name}"));
                                (id, parsed(cidrs), *enabled)
                            })
                            .collect();
                        // A release deletes the fleet's lists it does not name.
                        let deleted: Vec<String> = self
                            .model
                            .allowlists()
                            .filter(|list| {
                                list.fleet.is_some()
                                    && !lists.iter().any(|(name, ..)| NAMES[*name] == list.name)
                            })
                            .map(|list| list.id.clone())
                            .collect();
                        judged.apply(self.at, &declared, &deleted, true);
                        prop_assert!(
                            cuts(&judged.now),
                            "release {} refused, though it cuts nothing",
                            release
                        );
                    }
                    Err(_) => {}
                }
                result
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
                self.wait_until(self.at + seconds);
                Ok(())
            }
            Op::Kill => {
                self.dead = true;
                Ok(())
            }
            Op::Restart => {
                let json = serde_json::to_string(&self.model).expect("serialize");
                let back: Model = serde_json::from_str(&json).map_err(|err| {
                    TestCaseError::fail(format!("the saved state does not load: {err}"))
                })?;
                prop_assert_eq!(&back, &self.model, "the state survives a restart");
                back.validate(&settings).map_err(|err| {
                    TestCaseError::fail(format!("the saved state is refused on load: {err}"))
                })?;
                self.model = back;
                self.dead = false;
                self.tick(self.at);
                self.reference.advance(self.at, self.at);
                Ok(())
            }
        };
        if outcome.is_ok() && !matches!(op, Op::Wait { .. } | Op::Kill | Op::Restart) {
            // Each commit takes out what has expired, and writes the kernel.
            self.model.expire(now);
            self.kernel = KernelImage::of(&self.model, time(0));
            self.reference.expire(self.at);
        }
        self.next_id = ids.0;
        let after = seen(&self.model);
        let pending_after = self.model.pending().map(|p| p.applied_at);
        let reverted_after = seen(&self.model.reverted());
        // What was enforced before, but the holds the operation ended, as either view sees.
        let before_now = without_ended_holds(&before, &model_before, &after, now);
        let before_reverted = without_ended_holds(&before, &model_before, &reverted_after, now);
        let reverted_before = without_ended_holds(
            &reverted_before,
            &reverted_model_before,
            &reverted_after,
            now,
        );
        if outcome.is_err() {
            prop_assert_eq!(&after, &before, "a refused {:?} changed nothing", op);
        } else if !matches!(
            op,
            Op::Wait { .. }
                | Op::Kill
                | Op::Restart
                | Op::Acknowledge
                | Op::FleetAck
                | Op::FeedRead { .. }
        ) {
            // No change escapes its acknowledgement.
            match (pending_before, pending_after) {
                (None, None) => prop_assert!(
                    widens(&before_now, &after),
                    "{:?} narrowed the policy without a pending change: {:?} -> {:?}",
                    op,
                    before_now,
                    after
                ),
                (None, Some(_)) => prop_assert_eq!(
                    reverted_after,
                    before_reverted,
                    "the new pending change reverts to what was enforced before"
                ),
                (Some(b), Some(a)) => {
                    prop_assert_eq!(b, a, "one change at a time");
                    prop_assert!(
                        widens(&before_now, &after),
                        "{:?} narrowed the policy while a change was pending",
                        op
                    );
                    prop_assert!(
                        widens(&reverted_before, &reverted_after),
                        "{:?} narrowed what the pending change reverts to: {:?} -> {:?}",
                        op,
                        reverted_before,
                        reverted_after
                    );
                }
                (Some(_), None) => prop_assert!(false, "{:?} ended the pending change", op),
            }
        }
        self.check()
    }

    /// The kernel against the reference: exactly, but for an entry past its time that only
    /// the daemon removes (inside another prefix in force) while the daemon is dead.
    fn check_kernel(&self) -> Result<(), TestCaseError> {
        for probe in probes() {
            let verdict = self.kernel.verdict(probe, self.at);
            let passes = verdict != allowlist_tests::kernel_image::KernelVerdict::Drop;
            let wanted = self.reference.now.allows(probe);
            if passes == wanted {
                continue;
            }
            prop_assert!(
                self.dead && passes && self.kernel.passes_by_daemon_expiry(verdict, self.at),
                "the kernel {} {} at {} (daemon {}); the reference: {:?}",
                if passes { "passes" } else { "drops" },
                probe,
                self.at,
                if self.dead { "dead" } else { "running" },
                self.reference.now
            );
        }
        Ok(())
    }

    /// The model against the reference, the kernel against both, and the invariants.
    fn check(&self) -> Result<(), TestCaseError> {
        self.check_kernel()?;
        if self.dead {
            // The model waits on disk for the restart.
            return Ok(());
        }
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

    #[test]
    fn time_feeds_and_a_dead_daemon_keep_the_invariants_too(
        ops in proptest::collection::vec(timed_op(), 1..40)
    ) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.step(op)?;
        }
    }
}

#[test]
fn a_held_entry_stays_in_the_kernel_past_its_time() {
    let mut harness = Harness::new();
    for op in [
        Op::Create {
            list: 0,
            cidrs: vec![],
            fed: false,
        },
        Op::Add {
            list: 0,
            cidrs: vec![0],
            ttl: Some(10),
        },
        Op::Enable { lists: vec![0] },
        Op::Wait { seconds: 61 },
        Op::Acknowledge,
        Op::Wait { seconds: 100 },
        Op::Kill,
        Op::Wait { seconds: 100 },
        Op::Restart,
    ] {
        harness.step(&op).expect("step");
    }
}

#[test]
fn a_release_that_cuts_a_protected_session_is_refused() {
    let mut harness = Harness::new();
    let session = probes()
        .iter()
        .position(|probe| *probe == "192.0.2.0".parse::<IpAddr>().expect("probe"));
    for op in [
        Op::Release {
            lists: vec![(0, vec![0], true)],
            session: None,
        },
        Op::Wait { seconds: 61 },
        Op::FleetAck,
        Op::Release {
            lists: vec![(0, vec![2], true)],
            session,
        },
    ] {
        harness.step(&op).expect("step");
    }
    assert!(
        harness.model.pending().is_none(),
        "refused: nothing pending"
    );
}
