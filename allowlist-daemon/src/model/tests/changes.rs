//! Enable, disable, scopes, acknowledge, revert, the lockout guard.

use super::*;

#[test]
fn enable_is_pending_until_acknowledged_in_its_window() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create_enabled(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
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
        .remove_entry(&id, gone.id, None, t(100), &settings())
        .expect("remove");
    assert_eq!(model.pending().map(|p| p.action), Some(Action::Update));
    assert_eq!(model.effective_policy().lookup(addr("198.51.100.7")), None);
    assert!(
        model.rules_in_use().contains(gone.rule as usize),
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
    let id = create_enabled(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model.acknowledge(t(60), &settings()).expect("ack");
    let entry = model.allowlist(&id).expect("list").entries[0].id;
    let err = model
        .remove_entry(&id, entry, None, t(70), &settings())
        .expect_err("empty");
    assert_eq!(err.code(), "empty_policy");
    assert_eq!(model.allowlist(&id).expect("list").entries.len(), 1);
}

#[test]
fn a_list_a_pending_disable_would_restore_cannot_be_deleted() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create_enabled(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
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
    let id = create_enabled(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
    model
        .add_entries(
            &id,
            entries(&["198.51.100.7"]),
            t(1),
            &settings(),
            &mut next_id,
        )
        .expect("widening the list being enabled");
    let first = model.allowlist(&id).expect("list").entries[0].id;
    let err = model
        .remove_entry(&id, first, None, t(2), &settings())
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
