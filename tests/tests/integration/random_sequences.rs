//! A few hundred short random sequences of operations against a real allowlistd with fast
//! windows: edits, enables and disables, entries that expire within seconds, and a list that
//! follows a feed served from the test namespace, whose content changes (hostile content
//! included). After each sequence's change takes hold, and again after it is acknowledged or
//! reverted (and across restarts), real packets from a dozen client addresses must pass
//! exactly when the reference model allows them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use allowlist_tests::daemon::{Daemon, Response, TempDir};
use allowlist_tests::feed_server::FeedServer;
use allowlist_tests::netns::*;
use allowlist_tests::reference::Reference;
use allowlist_tests::traffic::Probes;
use ipnet::IpNet;
use serde_json::{Value, json};

/// Sequences run; each is a few operations, then an acknowledgement or a revert.
const SEQUENCES: u32 = 200;
/// Acknowledgements are accepted at once; changes revert after 2 s.
const WINDOW: [&str; 4] = ["--ack-min", "0s", "--ack-max", "2s"];
/// The `--ack-max` of [`WINDOW`].
const ACK_MAX: Duration = Duration::from_secs(2);
const NAMES: [&str; 3] = ["a", "b", "c"];
/// How long a probe waits for the datagrams that get through.
const PROBE_WAIT: Duration = Duration::from_millis(150);
/// The list that follows the feed; operations never edit it, only enable and disable it.
const FED: &str = "fed";
/// How long the daemon may take to read the feed again (it reads it every second).
const FEED_READ: Duration = Duration::from_millis(1500);
/// How far from an entry's expiry packets are not checked: the daemon takes it out on its
/// next tick (every 100 ms), the kernel at the second.
const EXPIRY_MARGIN: f64 = 0.4;

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// splitmix64: a seeded generator, so that a failing run can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn sources() -> Vec<IpAddr> {
    let v4 = (2..8u8).map(|n| IpAddr::from([198, 18, 0, n]));
    let v6 = (2..8u16).map(|n| IpAddr::from([0xfd00, 0xa11, 0, 0, 0, 0, 0, n]));
    v4.chain(v6).collect()
}

/// Prefixes entries are drawn from: each source alone, and prefixes covering several.
fn pool() -> Vec<IpNet> {
    let mut pool: Vec<IpNet> = sources().into_iter().map(IpNet::from).collect();
    for wider in [
        "198.18.0.4/31",
        "198.18.0.0/29",
        "fd00:a11::4/127",
        "fd00:a11::/125",
    ] {
        pool.push(wider.parse().expect("prefix"));
    }
    pool
}

struct Run {
    daemon: Daemon,
    reference: Reference,
    /// The feed of the list [`FED`], its id, and what the feed says.
    feed: FeedServer,
    fed_id: String,
    feed_says: BTreeSet<IpNet>,
    ids: BTreeMap<&'static str, String>,
    rng: Rng,
    pool: Vec<IpNet>,
    log: Vec<String>,
    /// When the last request was sent.
    last_sent: Instant,
    /// When the request that made the pending change was sent: its window is counted from
    /// the daemon's reading of the clock, before it builds and installs the change.
    pending_since: Instant,
}

impl Run {
    fn some_prefixes(&mut self) -> BTreeSet<IpNet> {
        let count = 1 + self.rng.below(3);
        (0..count).map(|_| *self.rng.pick(&self.pool)).collect()
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Response {
        self.last_sent = Instant::now();
        let response = self.daemon.call(method, path, body.as_ref());
        self.log.push(format!(
            "{method} {path} {} -> {} {}",
            body.map(|b| b.to_string()).unwrap_or_default(),
            response.status,
            response.code()
        ));
        response
    }

    /// One random operation, noting when a pending change it makes began.
    fn operate(&mut self) {
        let was_pending = self.reference.pending.is_some();
        self.operation();
        if !was_pending && self.reference.pending.is_some() {
            self.pending_since = self.last_sent;
        }
    }

    /// One random operation; the reference follows what the daemon accepted.
    fn operation(&mut self) {
        // What the daemon does with a request depends on what has expired by then (a
        // replace that drops an expired entry removes nothing): the reference too.
        self.settle_expiries();
        let name = *self.rng.pick(&NAMES);
        let id = self.ids.get(name).cloned();
        let entries = |prefixes: &BTreeSet<IpNet>| -> Vec<Value> {
            prefixes
                .iter()
                .map(|p| json!({ "cidr": p.to_string() }))
                .collect()
        };
        match (self.rng.below(9), id) {
            // Waiting for the daemon's read would outlast a pending change's window.
            (7, _) if self.reference.pending.is_none() => self.change_feed(),
            (8, Some(id)) => self.add_temporary(&id),
            (0, None) | (1..=3, None) => {
                let prefixes = self.some_prefixes();
                let body = json!({"name": name, "entries": entries(&prefixes)});
                let created = self.call("POST", "/v1/allowlists", Some(body));
                if created.status == 201 {
                    let id = created.body["id"].as_str().expect("id").to_owned();
                    self.reference.create(&id, prefixes);
                    self.ids.insert(name, id);
                }
            }
            (0, Some(id)) => {
                if self
                    .call("DELETE", &format!("/v1/allowlists/{id}"), None)
                    .status
                    == 204
                {
                    self.reference.delete(&id);
                    self.ids.remove(name);
                }
            }
            (1, Some(id)) => {
                let added = self.some_prefixes();
                let body = json!({ "entries": entries(&added) });
                let path = format!("/v1/allowlists/{id}/entries");
                if self.call("POST", &path, Some(body)).status == 201 {
                    let mut now = self.reference.entries(&id);
                    now.extend(added);
                    self.reference.set_entries(0, &id, now);
                }
            }
            (2, Some(id)) => {
                let list = self
                    .daemon
                    .call("GET", &format!("/v1/allowlists/{id}"), None);
                let listed = list.body["entries"].as_array().cloned().unwrap_or_default();
                if listed.is_empty() {
                    return;
                }
                let entry = &listed[self.rng.below(listed.len())];
                let path = format!(
                    "/v1/allowlists/{id}/entries/{}",
                    entry["id"].as_str().expect("id")
                );
                if self.call("DELETE", &path, None).status == 204 {
                    let cidr: IpNet = entry["cidr"].as_str().expect("cidr").parse().expect("cidr");
                    let mut now = self.reference.entries(&id);
                    now.remove(&cidr);
                    self.reference.set_entries(0, &id, now);
                }
            }
            (3, Some(id)) => {
                let prefixes = self.some_prefixes();
                let body = json!({"name": name, "entries": entries(&prefixes)});
                if self
                    .call("PUT", &format!("/v1/allowlists/{id}"), Some(body))
                    .status
                    == 200
                {
                    // Replaced by entries without a time: none expires any more (what a
                    // revert restores keeps its times).
                    self.reference.set_entries(0, &id, prefixes.clone());
                    self.reference
                        .set_expiries(&id, prefixes.into_iter().map(|net| (net, None)));
                }
            }
            (4 | 5, _) => {
                let ids = self.ids_to_switch();
                let path = "/v1/enforcement/enable";
                if !ids.is_empty()
                    && self
                        .call("POST", path, Some(json!({"allowlist_ids": ids})))
                        .status
                        == 202
                {
                    self.reference.enable(0, &ids);
                }
            }
            (_, _) => {
                let ids = self.ids_to_switch();
                let path = "/v1/enforcement/disable";
                if !ids.is_empty()
                    && self
                        .call("POST", path, Some(json!({"allowlist_ids": ids})))
                        .status
                        == 202
                {
                    self.reference.disable(0, &ids);
                }
            }
        }
    }

    /// Adds an entry that lives a second or two to list `id`.
    fn add_temporary(&mut self, id: &str) {
        let cidr = *self.rng.pick(&self.pool);
        let ttl = 1 + self.rng.below(2);
        let body = json!({ "entries": [{ "cidr": cidr.to_string(), "ttl": format!("{ttl}s") }] });
        let added = self.call("POST", &format!("/v1/allowlists/{id}/entries"), Some(body));
        if added.status != 201 {
            return;
        }
        let expires_at = added.body["entries"][0]["expires_at"]
            .as_str()
            .and_then(|at| {
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
            })
            .expect("expires_at")
            .unix_timestamp();
        let mut now = self.reference.entries(id);
        now.insert(cidr);
        self.reference.set_entries(0, id, now);
        self.reference.set_expiries(id, [(cidr, Some(expires_at))]);
        self.log
            .push(format!("{cidr} in {id} expires at {expires_at}"));
    }

    /// Gives the feed new content: some prefixes of the pool, or (one time in four) only
    /// prefixes far from the list's, or nothing at all; then waits for the daemon's read.
    fn change_feed(&mut self) {
        let content = match self.rng.below(8) {
            0 => BTreeSet::new(),
            1 | 2 => {
                let junk = ["192.0.2.0/24", "203.0.113.0/24", "2001:db8::/32"];
                let count = 1 + self.rng.below(junk.len());
                junk[..count]
                    .iter()
                    .map(|net| net.parse().expect("prefix"))
                    .collect()
            }
            _ => self.some_prefixes(),
        };
        let text: Vec<String> = content.iter().map(ToString::to_string).collect();
        self.feed.set(200, &text.join("\n"));
        self.feed_says = content.clone();
        self.log.push(format!("the feed says {text:?}"));
        self.sync_feed(&content);
    }

    /// Waits for the daemon's next read of the feed, which says `content`, and has the
    /// reference judge it the same way.
    fn sync_feed(&mut self, content: &BTreeSet<IpNet>) {
        let mut judged = self.reference.clone();
        let accepted = judged.feed_read(&self.fed_id, content, &[], 262_144);
        let fed_entries = |run: &Run| -> BTreeSet<IpNet> {
            let list = run
                .daemon
                .call("GET", &format!("/v1/allowlists/{}", run.fed_id), None);
            list.body["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|entry| entry["cidr"].as_str()?.parse().ok())
                .collect()
        };
        if accepted {
            let deadline = Instant::now() + FEED_READ * 3;
            while &fed_entries(self) != content {
                assert!(
                    Instant::now() < deadline,
                    "the feed's read is not applied\n{}",
                    self.log.join("\n")
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            self.reference = judged;
            self.log.push("the feed's read applied".into());
        } else {
            std::thread::sleep(FEED_READ);
            assert_eq!(
                fed_entries(self),
                self.reference.entries(&self.fed_id),
                "the feed's read is refused\n{}",
                self.log.join("\n")
            );
            self.log.push("the feed's read refused".into());
        }
    }

    /// Waits out any entry's expiry close to now, then takes out of the reference what has
    /// expired, as the daemon has.
    fn settle_expiries(&mut self) {
        let times: Vec<i64> = self
            .reference
            .now
            .expiries
            .values()
            .chain(
                self.reference
                    .pending
                    .iter()
                    .flat_map(|p| p.before.expiries.values()),
            )
            .flat_map(|times| times.values().copied())
            .collect();
        let now = unix_now();
        if let Some(close) = times
            .iter()
            .map(|at| *at as f64)
            .filter(|at| (at - EXPIRY_MARGIN..at + EXPIRY_MARGIN).contains(&now))
            .reduce(f64::max)
        {
            std::thread::sleep(Duration::from_secs_f64(close + EXPIRY_MARGIN - now));
        }
        self.reference.expire(unix_now().floor() as i64);
    }

    /// One or two existing lists, for an enable or a disable.
    fn ids_to_switch(&mut self) -> Vec<String> {
        let mut existing: Vec<String> = self.ids.values().cloned().collect();
        existing.push(self.fed_id.clone());
        if existing.is_empty() {
            return Vec::new();
        }
        let mut ids = vec![self.rng.pick(&existing).clone()];
        if self.rng.below(3) == 0 {
            let other = self.rng.pick(&existing).clone();
            if other != ids[0] {
                ids.push(other);
            }
        }
        ids
    }

    /// Ends the pending change, if any: acknowledged (two times in three) or left to revert.
    fn resolve(&mut self) {
        if self.reference.pending.is_none() {
            return;
        }
        if self.rng.below(3) > 0 {
            let acked = self.call("POST", "/v1/enforcement/acknowledge", None);
            if acked.code() == "nothing_pending" && self.pending_since.elapsed() >= ACK_MAX {
                // The checks since the change outlasted its window on a slow machine: the
                // revert is the right outcome, and the checks that follow hold it to that.
                self.log.push("reverted before the acknowledgement".into());
                self.reference.revert();
                return;
            }
            assert_eq!(
                acked.status,
                200,
                "{acked:?}\n{}\n-- the daemon's log\n{}",
                self.log.join("\n"),
                self.daemon.log()
            );
            self.reference.acknowledge();
        } else {
            let deadline = Instant::now() + Duration::from_secs(6);
            while !self.daemon.call("GET", "/v1/enforcement", None).body["pending"].is_null() {
                assert!(
                    Instant::now() < deadline,
                    "no revert\n{}",
                    self.log.join("\n")
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            self.log.push("reverted".into());
            self.reference.revert();
        }
    }

    /// The daemon has a pending change exactly when the reference does.
    fn check_pending(&self) {
        let state = self.daemon.call("GET", "/v1/enforcement", None).body;
        assert_eq!(
            state["pending"].is_null(),
            self.reference.pending.is_none(),
            "{state}\n{}",
            self.log.join("\n")
        );
    }

    /// Packets from every source pass exactly when the reference allows them.
    fn check_packets(&mut self, probes: &mut Probes, sources: &[IpAddr]) {
        self.settle_expiries();
        let expected: BTreeSet<IpAddr> = sources
            .iter()
            .copied()
            .filter(|s| self.reference.now.allows(*s))
            .collect();
        let mut passed = probes.passing(PROBE_WAIT).expect("probe");
        if passed.is_subset(&expected) && passed != expected {
            // A datagram of an allowed source may wait for neighbour resolution: once more.
            passed.extend(probes.passing(PROBE_WAIT * 4).expect("probe"));
        }
        assert_eq!(
            passed,
            expected,
            "packets disagree with the reference {:?}\n{}",
            self.reference.now,
            self.log.join("\n")
        );
    }
}

#[test]
fn random_sequences_enforce_what_the_reference_allows() {
    let seed = std::env::var("ALLOWLIST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("ALLOWLIST_SEED={seed}");
    let link = TestLink::create().expect("test link");
    let sources = sources();
    for source in &sources {
        if ![CLIENT_ALLOWED_V4, CLIENT_DENIED_V4]
            .map(IpAddr::V4)
            .contains(source)
            && ![CLIENT_ALLOWED_V6, CLIENT_DENIED_V6]
                .map(IpAddr::V6)
                .contains(source)
        {
            link.add_client_address(*source).expect("client address");
        }
    }
    let state = TempDir::new().expect("state dir");
    let mut probes = Probes::new(&link, &sources).expect("probes");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    let feed = FeedServer::serve(&link, "").expect("feed");
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": FED, "source": { "url": feed.url, "refresh": "1s" } })),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let fed_id = created.body["id"].as_str().expect("id").to_owned();
    let mut reference = Reference::new(0, 2);
    reference.create(&fed_id, BTreeSet::new());
    reference.set_feed(&fed_id, true);
    let mut run = Run {
        daemon,
        reference,
        feed,
        fed_id,
        feed_says: BTreeSet::new(),
        ids: BTreeMap::new(),
        rng: Rng(seed),
        pool: pool(),
        log: Vec::new(),
        last_sent: Instant::now(),
        pending_since: Instant::now(),
    };
    for sequence in 0..SEQUENCES {
        run.log.push(format!("-- sequence {sequence}"));
        for _ in 0..1 + run.rng.below(4) {
            run.operate();
        }
        run.check_pending();
        run.check_packets(&mut probes, &sources);
        if run.rng.below(20) == 0 {
            // A restart, maybe inside the window: the change keeps its deadline.
            run.daemon.stop().expect("SIGTERM");
            run.daemon = Daemon::start(&link, state.path(), &WINDOW).expect("restart");
            run.log.push("restarted".into());
            if run.reference.pending.is_some()
                && run.daemon.call("GET", "/v1/enforcement", None).body["pending"].is_null()
            {
                run.log.push("reverted during the restart".into());
                run.reference.revert();
            }
        }
        run.resolve();
        // A read refused while a change froze the list is applied once it is over.
        let said = run.feed_says.clone();
        if run.reference.entries(&run.fed_id) != said
            && run
                .reference
                .clone()
                .feed_read(&run.fed_id, &said, &[], 262_144)
        {
            run.sync_feed(&said);
        }
        run.check_pending();
        run.check_packets(&mut probes, &sources);
    }
    let count = |what: &str| run.log.iter().filter(|line| line.contains(what)).count();
    eprintln!(
        "{SEQUENCES} sequences: {} requests accepted, {} refused as change_pending, {} reverts, \
         {} restarts, {} temporary entries, feed reads {} applied and {} refused",
        count("-> 20"),
        count("change_pending"),
        count("reverted"),
        count("restarted"),
        count("expires at"),
        count("the feed's read applied"),
        count("the feed's read refused"),
    );
    assert!(count("expires at") > 0, "expiries were exercised");
    assert!(
        count("the feed's read applied") > 0 && count("the feed's read refused") > 0,
        "feed reads were exercised"
    );
    assert!(
        count("reverted") > SEQUENCES as usize / 10,
        "reverts were exercised"
    );
    assert!(count("change_pending") > 0, "refusals were exercised");
}
