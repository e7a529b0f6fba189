use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use time::OffsetDateTime;

use super::*;
use crate::policy::PortScope;

fn settings() -> Settings {
    Settings {
        max_lists: 4,
        max_entries: 8,
        max_name_len: 16,
        max_description_len: 20,
        ack_min: Duration::from_secs(60),
        ack_max: Duration::from_secs(120),
        rule_capacity: 16,
    }
}

fn t(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + seconds)
}

/// Deterministic ids: al1, en2, ...
fn ids() -> impl FnMut(&'static str) -> String {
    let mut n = 0;
    move |prefix| {
        n += 1;
        format!("{prefix}{n}")
    }
}

fn input(name: &str, cidrs: &[&str]) -> AllowlistInput {
    AllowlistInput {
        name: name.into(),
        description: None,
        entries: Some(
            cidrs
                .iter()
                .map(|cidr| EntryInput {
                    cidr: (*cidr).into(),
                    description: None,
                })
                .collect(),
        ),
        allow_all: false,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn create(
    model: &mut Model,
    next_id: &mut impl FnMut(&'static str) -> String,
    name: &str,
    cidrs: &[&str],
) -> String {
    model
        .create(input(name, cidrs), t(0), &settings(), next_id)
        .expect("create")
        .id
        .clone()
}

#[test]
fn create_generates_ids_and_host_prefixes() {
    let mut model = Model::default();
    let mut next_id = ids();
    let list = model
        .create(
            input("office", &["192.0.2.7", "2001:db8::/32"]),
            t(0),
            &settings(),
            &mut next_id,
        )
        .expect("create");
    assert_ne!(list.id, list.name);
    assert_eq!(list.version, 1);
    assert_eq!(list.entries[0].cidr, net("192.0.2.7/32"));
    assert_ne!(list.entries[0].id, list.entries[1].id);
    assert_ne!(list.entries[0].rule, list.entries[1].rule);
}

#[test]
fn bad_input_is_refused_with_the_field_and_changes_nothing() {
    let mut model = Model::default();
    let mut next_id = ids();
    create(&mut model, &mut next_id, "office", &["192.0.2.7"]);
    let before = model.clone();
    let cases: Vec<(AllowlistInput, &str, Option<&str>)> = vec![
        (input("office", &[]), "duplicate_name", None),
        (
            input("x", &["10.0.0.1/8"]),
            "host_bits_set",
            Some("entries[0].cidr"),
        ),
        (
            input("x", &["10.0.0.0/8", "nonsense"]),
            "invalid_cidr",
            Some("entries[1].cidr"),
        ),
        (
            input("x", &["10.0.0.1", "10.0.0.1/32"]),
            "duplicate_entry",
            Some("entries[1].cidr"),
        ),
        (
            input("a-name-that-is-far-too-long", &[]),
            "limit_exceeded",
            Some("name"),
        ),
        (input(" ", &[]), "invalid_request", Some("name")),
        (
            input(
                "x",
                &[
                    "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
                    "10.0.0.7", "10.0.0.8",
                ],
            ),
            "limit_exceeded",
            Some("entries"),
        ),
    ];
    for (bad, code, field) in cases {
        let err = model
            .create(bad, t(1), &settings(), &mut next_id)
            .expect_err(code);
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(err.field(), field, "{err}");
    }
    let mut long = input("x", &[]);
    long.description = Some("d".repeat(21));
    let err = model
        .create(long, t(1), &settings(), &mut next_id)
        .expect_err("too long");
    assert_eq!(
        (err.code(), err.field()),
        ("limit_exceeded", Some("description"))
    );
    assert_eq!(err.to_string(), "description is too long: the limit is 20");
    assert_eq!(model, before);
}

#[test]
fn the_list_limit_holds() {
    let mut model = Model::default();
    let mut next_id = ids();
    for i in 0..4 {
        create(&mut model, &mut next_id, &format!("l{i}"), &[]);
    }
    let err = model
        .create(input("l5", &[]), t(0), &settings(), &mut next_id)
        .expect_err("limit");
    assert_eq!(err.code(), "limit_exceeded");
    assert!(err.to_string().contains("the limit is 4"), "{err}");
}

#[test]
fn replace_keeps_ids_of_kept_prefixes_and_checks_the_version() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(
        &mut model,
        &mut next_id,
        "office",
        &["192.0.2.7", "198.51.100.0/24"],
    );
    let kept = model.allowlist(&id).expect("list").entries[1].clone();
    let list = model
        .replace(
            &id,
            input("hq", &["198.51.100.0/24", "203.0.113.5"]),
            Some(1),
            t(5),
            &settings(),
            &mut next_id,
        )
        .expect("replace");
    assert_eq!(list.name, "hq");
    assert_eq!(list.version, 2);
    assert_eq!(list.entries[0].id, kept.id);
    assert_eq!(list.entries[0].rule, kept.rule);
    assert_eq!(list.updated_at, t(5));
    let err = model
        .replace(
            &id,
            input("hq", &[]),
            Some(1),
            t(6),
            &settings(),
            &mut next_id,
        )
        .expect_err("stale");
    assert_eq!(err.code(), "precondition_failed");
    assert_eq!(
        model.pending(),
        None,
        "the list is not enabled: no pending change"
    );
}

#[test]
fn enable_is_pending_until_acknowledged_in_its_window() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    assert!(model.enforcing());
    let pending = model.pending().expect("pending").clone();
    assert_eq!(
        (pending.action, pending.acknowledge_after, pending.revert_at),
        (Action::Enable, t(60), t(120))
    );

    let err = model
        .acknowledge(t(20), &settings())
        .expect_err("too early");
    assert_eq!(
        err,
        ModelError::TooEarly {
            retry_after_seconds: 40,
            ack_min_seconds: 60
        }
    );
    let err = model
        .disable(std::slice::from_ref(&id), t(21), &settings())
        .expect_err("pending");
    assert_eq!(err.code(), "change_pending");

    model.acknowledge(t(61), &settings()).expect("ack");
    assert_eq!(model.pending(), None);
    assert_eq!(
        model.acknowledge(t(62), &settings()),
        Err(ModelError::NothingPending)
    );
    assert_eq!(
        model.revert_if_due(t(500)),
        None,
        "acknowledged changes stay"
    );
    assert!(model.enforcing());
}

#[test]
fn an_unacknowledged_enable_reverts_at_ack_max() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(&[id], &[], false, t(0), &settings())
        .expect("enable");
    assert_eq!(model.revert_if_due(t(119)), None);
    let reverted = model.revert_if_due(t(120)).expect("reverted");
    assert_eq!(reverted.action, Action::Enable);
    assert!(!model.enforcing());
    assert_eq!(model.pending(), None);
}

#[test]
fn an_acknowledgement_after_the_deadline_reverts_instead() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(&[id], &[], false, t(0), &settings())
        .expect("enable");
    assert_eq!(
        model.acknowledge(t(130), &settings()),
        Err(ModelError::NothingPending)
    );
    assert!(!model.enforcing());
}

#[test]
fn enabling_an_empty_policy_is_refused_unless_always_allow_covers_something() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "empty", &[]);
    let err = model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect_err("empty");
    assert_eq!(err.code(), "empty_policy");
    model.set_always_allow(vec![(net("198.18.0.2/32"), 100)]);
    model
        .enable(&[id], &[addr("198.18.0.2")], false, t(0), &settings())
        .expect("always-allow makes it non-empty");
}

#[test]
fn the_lockout_guard_names_who_would_be_cut_off_and_yields_to_force() {
    let mut model = Model::default();
    let mut next_id = ids();
    let office = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    let guarded = [
        addr("192.0.2.9"),
        addr("203.0.113.7"),
        addr("2001:db8::1"),
        addr("203.0.113.7"),
    ];
    let err = model
        .enable(
            std::slice::from_ref(&office),
            &guarded,
            false,
            t(0),
            &settings(),
        )
        .expect_err("lockout");
    assert_eq!(
        err,
        ModelError::WouldLockOut {
            addresses: vec![addr("203.0.113.7"), addr("2001:db8::1")]
        }
    );
    assert!(!model.enforcing());
    model
        .enable(
            std::slice::from_ref(&office),
            &guarded,
            true,
            t(0),
            &settings(),
        )
        .expect("forced");
    model.acknowledge(t(60), &settings()).expect("ack");

    // Once enforcing, enabling more lists only widens: no guard.
    let other = create(&mut model, &mut next_id, "other", &["198.51.100.0/24"]);
    model
        .enable(&[other], &guarded, false, t(70), &settings())
        .expect("widening");
}

fn entries(cidrs: &[&str]) -> EntriesInput {
    EntriesInput {
        entries: cidrs
            .iter()
            .map(|cidr| EntryInput {
                cidr: (*cidr).into(),
                description: None,
            })
            .collect(),
        allow_all: false,
    }
}

#[test]
fn removing_from_an_enabled_list_is_pending_and_reverts_to_the_list_as_it_was() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(
        &mut model,
        &mut next_id,
        "office",
        &["192.0.2.0/24", "198.51.100.7"],
    );
    let lab = create(&mut model, &mut next_id, "lab", &["203.0.113.0/25"]);
    model
        .enable(&[id.clone(), lab.clone()], &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    let acknowledged = model.allowlist(&id).expect("list").clone();

    let gone = acknowledged.entries[1].clone();
    model
        .remove_entry(&id, &gone.id, None, t(100), &settings())
        .expect("remove");
    assert_eq!(model.pending().map(|p| p.action), Some(Action::Update));
    assert_eq!(model.effective_policy().lookup(addr("198.51.100.7")), None);
    assert!(
        model.rules_in_use().contains(&gone.rule),
        "reserved until resolved"
    );

    // The list the change concerns stays as the change left it until the change ends.
    for refused in [
        model
            .add_entries(
                &id,
                entries(&["203.0.113.128/25"]),
                t(101),
                &settings(),
                &mut next_id,
            )
            .map(|_| ()),
        model
            .replace(
                &id,
                input("office", &["192.0.2.0/24"]),
                None,
                t(102),
                &settings(),
                &mut next_id,
            )
            .map(|_| ()),
    ] {
        let err = refused.expect_err("frozen");
        assert_eq!(err.code(), "change_pending");
        assert!(
            err.to_string()
                .contains(&format!("allowlist {id} is part of the pending change")),
            "{err}"
        );
    }
    // Another enabled list may widen: enabled before and after, it needs no acknowledgement.
    model
        .add_entries(
            &lab,
            entries(&["203.0.113.128/25"]),
            t(103),
            &settings(),
            &mut next_id,
        )
        .expect("add to another list");

    model.revert_if_due(t(220)).expect("reverted");
    let list = model.allowlist(&id).expect("list");
    assert_eq!(
        list.entries, acknowledged.entries,
        "exactly as acknowledged"
    );
    assert!(list.version > acknowledged.version + 1, "a new version");
    assert!(
        model
            .effective_policy()
            .lookup(addr("203.0.113.200"))
            .is_some(),
        "the widening of the other list stays"
    );
}

#[test]
fn emptying_the_only_enabled_list_is_refused() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    let entry = model.allowlist(&id).expect("list").entries[0].id.clone();
    let err = model
        .remove_entry(&id, &entry, None, t(70), &settings())
        .expect_err("empty");
    assert_eq!(err.code(), "empty_policy");
    assert_eq!(model.allowlist(&id).expect("list").entries.len(), 1);
}

#[test]
fn an_enabled_list_cannot_be_deleted() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    assert_eq!(
        model.delete(&id, None).expect_err("enabled").code(),
        "allowlist_enabled"
    );
    model.revert_if_due(t(120));
    assert_eq!(
        model.delete(&id, Some(9)).expect_err("stale").code(),
        "precondition_failed"
    );
    model.delete(&id, Some(1)).expect("delete");
    assert_eq!(model.allowlist(&id).expect_err("gone").code(), "not_found");
}

#[test]
fn a_list_a_pending_disable_would_restore_cannot_be_deleted() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    model
        .disable(std::slice::from_ref(&id), t(70), &settings())
        .expect("disable");
    assert_eq!(
        model.delete(&id, None).expect_err("pending").code(),
        "change_pending"
    );
    model.revert_if_due(t(190)).expect("reverted");
    assert!(model.is_enabled(&id), "the revert found its list");
}

#[test]
fn evaluate_explains_the_verdict() {
    let mut model = Model::default();
    model.set_always_allow(vec![(net("10.0.0.0/8"), 100)]);
    let mut next_id = ids();
    let id = create(
        &mut model,
        &mut next_id,
        "office",
        &["192.0.2.0/24", "192.0.2.7"],
    );
    assert_eq!(
        model.evaluate(addr("203.0.113.1")).reason,
        Reason::NotEnforcing
    );
    model
        .enable(std::slice::from_ref(&id), &[], true, t(0), &settings())
        .expect("enable");
    assert_eq!(model.evaluate(addr("10.1.1.1")).reason, Reason::AlwaysAllow);
    let eval = model.evaluate(addr("192.0.2.7"));
    assert_eq!(
        (eval.allowed, eval.reason, eval.matches.len()),
        (true, Reason::Allowlist, 2)
    );
    assert_eq!(eval.matches[0].allowlist_id, id);
    let eval = model.evaluate(addr("203.0.113.1"));
    assert_eq!((eval.allowed, eval.reason), (false, Reason::NoMatch));
}

#[test]
fn rules_are_reused_after_deletion_and_renumbered_when_out_of_range() {
    let mut model = Model::default();
    let mut next_id = ids();
    let a = create(&mut model, &mut next_id, "a", &["192.0.2.1", "192.0.2.2"]);
    model.delete(&a, None).expect("delete");
    let b = create(&mut model, &mut next_id, "b", &["192.0.2.3"]);
    assert_eq!(model.allowlist(&b).expect("list").entries[0].rule, 0);
    assert_eq!(model.renumber_rules(16), 0);
    assert_eq!(
        model.renumber_rules(0),
        0,
        "nothing fits: nothing can change"
    );
    let mut small = model.clone();
    small.allowlists.get_mut(&b).expect("list").entries[0].rule = 40;
    assert_eq!(small.renumber_rules(16), 1);
    assert_eq!(small.allowlist(&b).expect("list").entries[0].rule, 0);
}

#[test]
fn the_model_survives_a_json_round_trip() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(
        &mut model,
        &mut next_id,
        "office",
        &["192.0.2.0/24", "2001:db8::/48"],
    );
    model
        .enable(&[id], &[], false, t(0), &settings())
        .expect("enable");
    let json = serde_json::to_string(&model).expect("serialize");
    let back: Model = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, model);
}

#[test]
fn scope_changes_are_pending_and_revert_to_the_default() {
    let mut model = Model::default();
    let ssh: PortScope = "tcp/22".parse().expect("scope");
    model.set_default_scopes([ssh].into());
    assert_eq!(model.scopes(), &BTreeSet::from([ssh]));
    let web: BTreeSet<PortScope> = ["tcp/22", "tcp/443"]
        .iter()
        .map(|s| s.parse().expect("scope"))
        .collect();
    model
        .set_scopes(web.clone(), t(0), &settings())
        .expect("scopes");
    assert_eq!(model.scopes(), &web);
    assert_eq!(model.pending().map(|p| p.action), Some(Action::Scopes));
    assert_eq!(
        model
            .set_scopes(BTreeSet::new(), t(1), &settings())
            .expect_err("pending")
            .code(),
        "change_pending"
    );
    model.revert_if_due(t(120)).expect("reverted");
    assert_eq!(
        model.scopes(),
        &BTreeSet::from([ssh]),
        "back to the default"
    );
    model
        .set_scopes(web.clone(), t(200), &settings())
        .expect("scopes");
    model.acknowledge(t(260), &settings()).expect("ack");
    assert_eq!(model.scopes(), &web);
    model
        .set_scopes(web, t(300), &settings())
        .expect("unchanged");
    assert_eq!(
        model.pending(),
        None,
        "setting the same scopes changes nothing"
    );
}

#[test]
fn a_list_being_enabled_may_widen_but_not_narrow_and_its_revert_disables_it() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    model
        .add_entries(
            &id,
            entries(&["198.51.100.7"]),
            t(1),
            &settings(),
            &mut next_id,
        )
        .expect("widening the list being enabled");
    let first = model.allowlist(&id).expect("list").entries[0].id.clone();
    let err = model
        .remove_entry(&id, &first, None, t(2), &settings())
        .expect_err("narrowing while pending");
    assert_eq!(err.code(), "change_pending");
    model.revert_if_due(t(120)).expect("reverted");
    assert!(!model.enforcing(), "disabled again");
    assert_eq!(
        model.allowlist(&id).expect("list").entries.len(),
        2,
        "nothing lost"
    );
}

#[test]
fn a_state_of_format_1_loads_with_its_pending_change_and_allow_all_lists() {
    let entry = |id: &str, cidr: &str, rule: u32| serde_json::json!({"id": id, "cidr": cidr, "description": "", "rule": rule});
    let list = |id: &str, name: &str, entries: Vec<serde_json::Value>| {
        serde_json::json!({
            "id": id, "name": name, "description": "", "entries": entries,
            "created_at": "2027-01-15T08:00:00Z", "updated_at": "2027-01-15T08:00:00Z",
            "version": 3,
        })
    };
    // Written by the release before format 2: a narrowing update of "office" is pending.
    let saved = serde_json::json!({
        "allowlists": {
            "al1": list("al1", "office", vec![entry("en1", "192.0.2.0/24", 0)]),
            "al2": list("al2", "open", vec![entry("en3", "0.0.0.0/0", 2)]),
        },
        "enabled": ["al1"],
        "pending": {
            "action": "update",
            "allowlist_ids": ["al1"],
            "applied_at": "2027-01-15T08:00:00Z",
            "acknowledge_after": "2027-01-15T08:01:00Z",
            "revert_at": "2027-01-15T08:02:00Z",
            "restore": {"entries": {"allowlist_id": "al1", "entries": [entry("en2", "198.51.100.7/32", 1)]}},
        },
        "scopes": null,
    });
    let mut model: Model = serde_json::from_value(saved).expect("format 1 reads");
    model.validate(&settings()).expect("valid");
    assert!(
        model.allowlist("al2").expect("open").allow_all,
        "asked for then"
    );
    assert!(
        model.rules_in_use().contains(&1),
        "the entry to restore keeps its rule"
    );
    let resaved: serde_json::Value = serde_json::to_value(&model).expect("json");
    assert_eq!(resaved["format"], 2);
    model.revert_if_due(t(1_000_000)).expect("reverted");
    let cidrs: Vec<IpNet> = model
        .allowlist("al1")
        .expect("office")
        .entries
        .iter()
        .map(|e| e.cidr)
        .collect();
    assert_eq!(cidrs, [net("192.0.2.0/24"), net("198.51.100.7/32")]);

    let newer = serde_json::json!({"format": 3, "allowlists": {}, "enabled": [], "pending": null});
    let err = serde_json::from_value::<Model>(newer).expect_err("newer format");
    assert!(
        err.to_string().contains("written by a newer allowlistd"),
        "{err}"
    );
}
