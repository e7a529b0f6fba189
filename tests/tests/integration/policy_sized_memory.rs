//! The kernel memory follows the policies in force, not `--max-entries`: a small policy
//! takes little at the largest ceiling; growing to a million prefixes and back gives the
//! memory back (a while later: a list disabled and enabled again, or replaced by as many
//! other entries, loads nothing, and a load verifies few instructions); the kernel falls
//! back at the deadline, with the daemon killed, between generations of very different
//! sizes, either way, and after a third large policy was written while one was pending; a
//! restart adopts them as they are.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use allowlist_daemon::dataplane::{Dataplane, SHRINK_AFTER};
use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::scenario::*;
use allowlist_tests::traffic::passes;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The largest `--max-entries`, and a window long enough for a million entries.
const ARGS: [&str; 6] = [
    "--max-entries",
    "2097152",
    "--ack-min",
    "0s",
    "--ack-max",
    "60s",
];
/// The budget of a small policy: every map but the flow table.
const SMALL_BUDGET: u64 = 8 << 20;

/// `count` host entries in 10.0.0.0/8 from the `first`-th on, then the office's.
fn hosts_and_office(first: u32, count: u32) -> Vec<Value> {
    (first..first + count)
        .map(|n| Ipv4Addr::from(0x0a00_0000 + n).to_string())
        .chain(office())
        .map(|cidr| json!({ "cidr": cidr }))
        .collect()
}

/// The kernel memory of every map but the flow table, as `GET /v1/stats` gives it.
fn kernel_bytes(daemon: &Daemon) -> u64 {
    let stats = daemon.call("GET", "/v1/stats", None).body;
    stats["kernel_memory"]["without_flows_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("kernel memory in {stats}"))
}

/// Replaces the entries of list `id` (named `name`) with `entries`, and acknowledges the
/// change when it is pending (a change that only adds entries is not).
fn replace_for_good(daemon: &Daemon, id: &str, name: &str, entries: Vec<Value>) {
    replace(daemon, id, name, entries);
    if enforcement(daemon)["pending"] != Value::Null {
        acknowledge_now(daemon);
    }
}

/// Replaces the entries of list `id` (named `name`) with `entries`, a change that removes
/// some; returns when it reverts unless acknowledged.
fn replace_pending(daemon: &Daemon, id: &str, name: &str, entries: Vec<Value>) -> OffsetDateTime {
    replace(daemon, id, name, entries);
    let now = enforcement(daemon);
    now["pending"]["revert_at"]
        .as_str()
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        .unwrap_or_else(|| panic!("a pending change in {now}"))
}

/// Replaces the entries of list `id` (named `name`) with `entries`.
fn replace(daemon: &Daemon, id: &str, name: &str, entries: Vec<Value>) {
    let replaced = daemon.call(
        "PUT",
        &format!("/v1/allowlists/{id}"),
        Some(&json!({ "name": name, "entries": entries })),
    );
    assert_eq!(
        replaced.status,
        200,
        "{:?}\n{}",
        replaced.body["error"],
        daemon.log()
    );
}

/// Acknowledges the pending change.
fn acknowledge_now(daemon: &Daemon) {
    let response = daemon.call("POST", "/v1/enforcement/acknowledge", None);
    assert_eq!(response.status, 200, "{response:?}");
}

/// A daemon with [`ARGS`] enforcing, acknowledged, the list "big" of `hosts` hosts and the
/// office; and the list's id.
fn enforcing(link: &TestLink, state: &TempDir, hosts: u32) -> (Daemon, String) {
    let daemon = Daemon::start(link, state.path(), &ARGS).expect("allowlistd");
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": "big", "entries": hosts_and_office(0, hosts) })),
    );
    assert_eq!(created.status, 201, "{:?}", created.body["error"]);
    let id = created.body["id"].as_str().expect("id").to_owned();
    enable(&daemon, &id);
    acknowledge_now(&daemon);
    assert!(enforcing_office(link));
    (daemon, id)
}

#[test]
fn a_small_policy_at_the_largest_ceiling_takes_little_kernel_memory() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &ARGS).expect("allowlistd");
    let empty = kernel_bytes(&daemon);
    assert!(empty <= SMALL_BUDGET, "no policy: {empty} bytes");

    let entries = hosts_and_office(0, 8);
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": "admins", "entries": entries })),
    );
    assert_eq!(created.status, 201, "{:?}", created.body["error"]);
    enable(&daemon, created.body["id"].as_str().expect("id"));
    acknowledge_now(&daemon);
    assert!(enforcing_office(&link));
    let ten = kernel_bytes(&daemon);
    assert!(ten <= SMALL_BUDGET, "ten entries: {ten} bytes");
}

#[test]
fn a_list_created_is_not_enforced_so_only_enabling_it_makes_the_tables_again() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &ARGS).expect("allowlistd");
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": "big", "entries": hosts_and_office(0, 20_000) })),
    );
    assert_eq!(created.status, 201, "{:?}", created.body["error"]);
    let resizes = || daemon.log().matches("making them again").count();
    assert_eq!(resizes(), 0, "created: {}", daemon.log());

    enable(&daemon, created.body["id"].as_str().expect("id"));
    assert_eq!(resizes(), 1, "enabled: {}", daemon.log());
    acknowledge_now(&daemon);
    assert!(enforcing_office(&link));
}

#[test]
fn growing_to_a_million_prefixes_and_back_gives_the_memory_back() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (daemon, id) = enforcing(&link, &state, 0);
    let small = kernel_bytes(&daemon);

    replace_for_good(&daemon, &id, "big", hosts_and_office(0, 1_000_000));
    assert!(enforcing_office(&link));
    let big = kernel_bytes(&daemon);
    assert!(big > 10 * small, "grown: {small} -> {big} bytes");
    let log = daemon.log();
    assert!(log.contains("making them again"), "{log}");

    replace_for_good(&daemon, &id, "big", hosts_and_office(0, 0));
    assert!(enforcing_office(&link));
    assert!(
        kernel_bytes(&daemon) > 10 * small,
        "kept a while, in case the policy grows back"
    );
    let deadline = Instant::now() + SHRINK_AFTER + Duration::from_secs(10);
    let back = loop {
        let back = kernel_bytes(&daemon);
        if back <= small + (1 << 20) || Instant::now() > deadline {
            break back;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        back <= small + (1 << 20),
        "given back within {SHRINK_AFTER:?}: {small} -> {big} -> {back} bytes"
    );
    assert!(enforcing_office(&link));
}

#[test]
fn a_list_disabled_and_enabled_again_keeps_its_tables() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (daemon, id) = enforcing(&link, &state, 20_000);
    let resizes = || daemon.log().matches("making them again").count();
    assert_eq!(resizes(), 1, "enabled: {}", daemon.log());
    disable(&daemon, &id);
    acknowledge_now(&daemon);
    enable(&daemon, &id);
    acknowledge_now(&daemon);
    assert!(enforcing_office(&link));
    assert_eq!(resizes(), 1, "no load either way: {}", daemon.log());
}

#[test]
fn a_list_replaced_by_as_many_other_entries_keeps_its_tables() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (daemon, id) = enforcing(&link, &state, 20_000);
    let resizes = || daemon.log().matches("making them again").count();
    assert_eq!(resizes(), 1, "enabled: {}", daemon.log());
    // Each replacement takes new rule ids while the replaced entries keep theirs.
    for first in [100_000, 200_000] {
        replace_pending(&daemon, &id, "big", hosts_and_office(first, 20_000));
        acknowledge_now(&daemon);
        assert!(enforcing_office(&link));
    }
    assert_eq!(resizes(), 1, "no load for a replacement: {}", daemon.log());
}

/// Every resize of the tables loads the programs again: the kernel's verifier must walk few
/// instructions (before the classification and the flow lookups were global functions, the
/// XDP program took 129,063, about 130 ms on this machine's kind of CPU).
#[test]
fn loading_the_programs_walks_few_instructions_in_the_verifier() {
    let dataplane = Dataplane::load(8192, 1024).expect("loading the XDP program (are you root?)");
    let (xdp, egress) = dataplane.verified_instructions().expect("program info");
    assert!(xdp > 0 && xdp < 90_000, "XDP program: {xdp} instructions");
    assert!(
        egress > 0 && egress < 5_000,
        "egress program: {egress} instructions"
    );
}

/// With `before` hosts enforced and `after` hosts (and the denied client) pending, the
/// daemon killed: the pending policy is enforced until its deadline, then the kernel falls
/// back to the one before by itself.
fn killed_with_a_change_pending_the_kernel_falls_back(before: u32, after: u32) {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, id) = enforcing(&link, &state, before);
    let mut entries = hosts_and_office(1 << 22, after);
    entries.push(json!({ "cidr": CLIENT_DENIED_V4.to_string() }));
    let deadline = replace_pending(&daemon, &id, "big", entries);
    assert!(
        passes(&link, CLIENT_DENIED_V4),
        "the pending policy is in force"
    );

    daemon.kill().expect("kill -9");
    assert!(
        passes(&link, CLIENT_DENIED_V4),
        "still in force, the daemon dead"
    );
    let left = deadline - OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(300));
    assert!(
        enforcing_office(&link),
        "at the deadline the kernel is back to the policy of {before} hosts"
    );
}

#[test]
fn killed_with_a_million_pending_over_ten_thousand_the_kernel_falls_back() {
    killed_with_a_change_pending_the_kernel_falls_back(10_000, 1_000_000);
}

#[test]
fn killed_with_ten_thousand_pending_over_a_million_the_kernel_falls_back() {
    killed_with_a_change_pending_the_kernel_falls_back(1_000_000, 10_000);
}

#[test]
fn a_third_large_policy_while_one_is_pending_makes_the_tables_again_and_falls_back() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, id) = enforcing(&link, &state, 1_000_000);
    let extra = create(&daemon, "extra", &["10.200.0.1/32".to_owned()]);
    enable(&daemon, &extra);
    acknowledge_now(&daemon);
    let mut entries = hosts_and_office(1 << 22, 1_000_000);
    entries.push(json!({ "cidr": CLIENT_DENIED_V6.to_string() }));
    let deadline = replace_pending(&daemon, &id, "big", entries);
    assert!(
        passes(&link, CLIENT_DENIED_V6),
        "the pending policy is in force"
    );
    assert!(!passes(&link, CLIENT_DENIED_V4), "not in either policy");

    // Large tables hold two generations, both in force now: new policies (another list
    // grows while the change is pending: in force, and in what the change falls back to)
    // have the maps made again.
    let added = daemon.call(
        "POST",
        &format!("/v1/allowlists/{extra}/entries"),
        Some(&json!({ "entries": [{ "cidr": CLIENT_DENIED_V4.to_string() }] })),
    );
    assert_eq!(added.status, 201, "{:?}", added.body["error"]);
    let log = daemon.log();
    assert!(
        log.contains("both generations of the tables are in force"),
        "{log}"
    );
    assert!(
        passes(&link, CLIENT_DENIED_V4),
        "the new policy is in force"
    );
    assert!(passes(&link, CLIENT_DENIED_V6), "with the pending change");
    let now = enforcement(&daemon);
    assert_eq!(
        now["pending"]["revert_at"]
            .as_str()
            .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok()),
        Some(deadline),
        "the same change pending: {now}"
    );

    daemon.kill().expect("kill -9");
    let left = deadline - OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(300));
    assert!(
        !passes(&link, CLIENT_DENIED_V6),
        "at the deadline the kernel falls back"
    );
    assert!(
        passes(&link, CLIENT_DENIED_V4) && passes(&link, CLIENT_ALLOWED_V4),
        "to the acknowledged policy with the entry added meanwhile"
    );
}

#[test]
fn a_restart_adopts_generations_of_different_sizes() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, id) = enforcing(&link, &state, 1_000);
    let revert_at = replace_pending(&daemon, &id, "big", hosts_and_office(1 << 22, 200_000));
    let before = kernel_bytes(&daemon);
    let resizes = daemon.log().matches("making them again").count();

    let daemon = restart_under_stream(&link, &mut daemon, Stop::Terminate, &state, &ARGS, 400_000);
    let log = daemon.log();
    assert!(
        log.contains("the kernel already enforced the state on disk"),
        "nothing rewritten: {log}"
    );
    assert_eq!(
        log.matches("making them again").count(),
        resizes,
        "no tables made again: {log}"
    );
    assert_eq!(kernel_bytes(&daemon), before, "the same maps");
    let after = enforcement(&daemon);
    let still = after["pending"]["revert_at"]
        .as_str()
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok());
    assert_eq!(still, Some(revert_at), "still pending: {after}");
    acknowledge_now(&daemon);
    assert!(enforcing_office(&link));
}
