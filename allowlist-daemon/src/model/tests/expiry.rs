//! Entries that expire: given a ttl or a time, they leave their lists (and what a revert
//! restores) at that time, without an acknowledgement, but never empty an enforced policy.

use super::*;

/// `cidr` with a time to live.
fn with_ttl(cidr: &str, ttl: &str) -> EntriesInput {
    EntriesInput {
        entries: vec![EntryInput {
            cidr: cidr.into(),
            description: None,
            expires_at: None,
            ttl: Some(ttl.into()),
        }],
        allow_all: false,
    }
}

/// Adds `cidr` with a time to live `ttl` to list `id` at `now`; returns the entry added.
fn add_expiring(
    model: &mut Model,
    next_id: &mut SequentialIds,
    id: &str,
    (cidr, ttl): (&str, &str),
    now: OffsetDateTime,
) -> Entry {
    model
        .add_entries(id, with_ttl(cidr, ttl), now, &settings(), next_id)
        .expect("add")
        .remove(0)
}

fn cidrs(model: &Model, id: &str) -> Vec<String> {
    model
        .allowlist(id)
        .expect("list")
        .entries
        .iter()
        .map(|entry| entry.cidr.to_string())
        .collect()
}

#[test]
fn an_entry_leaves_its_list_and_the_policy_at_its_time_without_a_pending_change() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    let added = add_expiring(
        &mut model,
        &mut next_id,
        &id,
        ("198.51.100.7", "2h"),
        t(100),
    );
    assert_eq!(added.expires_at.map(Expiry::time), Some(t(100 + 7200)));
    assert_eq!(model.next_expiry(), Some(t(7300)));
    let version = model.allowlist(&id).expect("list").version;

    assert_eq!(model.expire(t(7299)), Expired::default(), "not yet");
    let expired = model.expire(t(7300));
    assert_eq!(expired.removed.len(), 1);
    assert!(expired.held.is_empty());
    assert_eq!(cidrs(&model, &id), ["192.0.2.0/24"]);
    assert_eq!(model.pending(), None, "no acknowledgement asked");
    assert_eq!(model.allowlist(&id).expect("list").version, version + 1);
    assert!(
        !model
            .effective_policy()
            .iter()
            .any(|(net, _)| *net == super::net("198.51.100.7/32"))
    );
    assert_eq!(model.next_expiry(), None);
}

#[test]
fn an_expired_entry_is_not_brought_back_by_a_revert() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    add_expiring(
        &mut model,
        &mut next_id,
        &id,
        ("198.51.100.7", "300s"),
        t(0),
    );
    let lab = create(&mut model, &mut next_id, "lab", &["203.0.113.0/24"]);
    model
        .enable(&[id.clone(), lab], &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    // A narrowing edit is pending when the entry expires.
    let keep = model
        .allowlist(&id)
        .expect("list")
        .entry(&super::net("192.0.2.0/24"))
        .expect("entry")
        .id;
    model
        .remove_entry(&id, keep, None, t(100), &settings())
        .expect("a narrowing edit, pending");
    let expired = model.expire(t(300));
    assert_eq!(expired.removed.len(), 1, "{expired:?}");
    assert!(cidrs(&model, &id).is_empty());
    model.revert_now(t(400)).expect("reverted");
    assert_eq!(
        cidrs(&model, &id),
        ["192.0.2.0/24"],
        "the revert restores the list as acknowledged, less what expired"
    );
}

#[test]
fn an_expiry_that_would_empty_an_enforced_policy_waits() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "temporary", &[]);
    add_expiring(&mut model, &mut next_id, &id, ("198.51.100.7", "1h"), t(0));
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    let expired = model.expire(t(3600));
    assert!(expired.removed.is_empty());
    assert_eq!(
        expired.held.len(),
        1,
        "kept: the enforced policy would allow nothing"
    );
    assert_eq!(cidrs(&model, &id), ["198.51.100.7/32"]);
    assert_eq!(model.next_expiry_after(t(3600)), None);

    model
        .add_entries(
            &id,
            entries(&["192.0.2.0/24"]),
            t(3700),
            &settings(),
            &mut next_id,
        )
        .expect("another entry");
    let expired = model.expire(t(3700));
    assert_eq!(expired.removed.len(), 1, "now it can go");
    assert_eq!(cidrs(&model, &id), ["192.0.2.0/24"]);
}

#[test]
fn the_entries_that_expire_last_are_held_in_the_kernel_too() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "temporary", &[]);
    let first = add_expiring(&mut model, &mut next_id, &id, ("198.51.100.7", "1h"), t(0));
    let last = add_expiring(&mut model, &mut next_id, &id, ("198.51.100.8", "2h"), t(0));
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    let expiring = model.kernel_expiring();
    assert_eq!(expiring.get(&first.rule), Some(&t(3600)));
    assert!(
        !expiring.contains_key(&last.rule),
        "the last to expire is never given its deadline: the kernel would drop everything"
    );
    // Looked at late (the daemon was down): the entries go in the order of their times.
    let expired = model.expire(t(3 * 3600));
    assert_eq!(expired.removed.len(), 1, "{expired:?}");
    assert_eq!(expired.removed[0].1.id, first.id);
    assert_eq!(expired.held.len(), 1);
    assert_eq!(cidrs(&model, &id), ["198.51.100.8/32"]);
    assert!(model.kernel_expiring().is_empty());
    assert!(
        model
            .effective_policy()
            .iter()
            .all(|(_, rule)| *rule & allowlist_common::EXPIRING_RULE == 0)
    );
}

#[test]
fn an_entry_expired_in_what_a_revert_restores_is_not_brought_back() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(
        &mut model,
        &mut next_id,
        "office",
        &["192.0.2.2/32", "192.0.2.5/32"],
    );
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    model.acknowledge(t(60), &settings()).expect("ack");
    add_expiring(&mut model, &mut next_id, &id, ("192.0.2.3", "5s"), t(100));
    // Replaced by its two permanent entries: a narrowing edit, pending.
    model
        .replace(
            &id,
            input("office", &["192.0.2.5/32", "192.0.2.2/32"]),
            None,
            t(101),
            &settings(),
            &mut next_id,
        )
        .expect("replace");
    assert!(model.pending().is_some());
    let expired = model.expire(t(105));
    assert_eq!(expired.removed.len(), 1, "from what the revert restores");
    assert!(expired.changed());
    model.revert_now(t(300)).expect("reverted");
    assert_eq!(cidrs(&model, &id), ["192.0.2.2/32", "192.0.2.5/32"]);
}

#[test]
fn a_time_to_live_must_be_in_the_future_and_within_the_limit() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &[]);
    let refused = |model: &mut Model, next_id: &mut SequentialIds, input: EntriesInput| {
        model
            .add_entries(&id, input, t(0), &settings(), next_id)
            .expect_err("refused")
            .to_string()
    };
    assert!(
        refused(&mut model, &mut next_id, with_ttl("192.0.2.1", "8d")).contains("at most 7days")
    );
    assert!(
        refused(&mut model, &mut next_id, with_ttl("192.0.2.1", "soon")).contains("not a duration")
    );
    assert!(
        refused(
            &mut model,
            &mut next_id,
            with_ttl("192.0.2.1", "106751991167300d")
        )
        .contains("at most 7days"),
        "a time to live past any date is refused, not a panic"
    );
    let both = EntriesInput {
        entries: vec![EntryInput {
            cidr: "192.0.2.1".into(),
            description: None,
            expires_at: Some("2030-01-01T00:00:00Z".into()),
            ttl: Some("1h".into()),
        }],
        allow_all: false,
    };
    assert!(refused(&mut model, &mut next_id, both).contains("not both"));
    let past = EntriesInput {
        entries: vec![EntryInput {
            cidr: "192.0.2.1".into(),
            description: None,
            expires_at: Some("2020-01-01T00:00:00Z".into()),
            ttl: None,
        }],
        allow_all: false,
    };
    assert!(refused(&mut model, &mut next_id, past).contains("before it is added"));
}

#[test]
fn the_kernel_expires_only_entries_no_other_prefix_holds() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    let alone = add_expiring(&mut model, &mut next_id, &id, ("198.51.100.7", "1h"), t(0)).rule;
    let inside = add_expiring(&mut model, &mut next_id, &id, ("192.0.2.9", "1h"), t(0)).rule;
    model
        .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
        .expect("enable");
    let expiring = model.kernel_expiring();
    assert_eq!(expiring.get(&alone), Some(&t(3600)));
    assert!(
        !expiring.contains_key(&inside),
        "inside 192.0.2.0/24: the daemon removes it, the kernel cannot"
    );
    let flagged: Vec<u32> = model
        .effective_policy()
        .iter()
        .filter(|(_, rule)| **rule & allowlist_common::EXPIRING_RULE != 0)
        .map(|(_, rule)| *rule & !allowlist_common::EXPIRING_RULE)
        .collect();
    assert_eq!(flagged, [alone]);
}

#[test]
fn an_entry_stays_small_with_its_expiry() {
    // A million entries are held in memory, more than once during a replace.
    assert!(
        std::mem::size_of::<Entry>() <= 56,
        "{} bytes",
        std::mem::size_of::<Entry>()
    );
}
