//! Applying declared lists: policy files and fleet releases.

use super::*;

fn declared(name: &str, cidrs: &[&str], enabled: bool) -> DesiredList {
    DesiredList {
        name: name.into(),
        description: String::new(),
        enabled,
        allow_all: false,
        entries: entry_inputs(cidrs),
        source: None,
    }
}

fn release<'a>(id: &'a str) -> Scope<'a> {
    Scope::Fleet {
        fleet: "web",
        release: id,
    }
}

#[test]
fn a_file_applies_as_one_pending_change_and_its_revert_deletes_what_it_created() {
    let mut model = Model::default();
    let mut next_id = ids();
    let own = create(&mut model, &mut next_id, "own", &["198.51.100.7"]);
    let desired = vec![
        declared("office", &["192.0.2.0/24"], true),
        declared("spare", &["203.0.113.0/25"], false),
    ];
    let report = model
        .apply(
            desired.clone(),
            Scope::Local { prune: true },
            &[],
            false,
            t(0),
            &settings(),
            &mut next_id,
        )
        .expect("apply");
    assert_eq!(report.created, ["office", "spare"]);
    assert_eq!(
        (report.enabled.as_slice(), report.deleted.as_slice()),
        (&["office".to_owned()][..], &["own".to_owned()][..])
    );
    assert_eq!(model.pending().map(|p| p.action), Some(Action::Apply));
    assert!(model.allowlist(&own).is_err(), "pruned");

    model.revert_if_due(t(120)).expect("reverted");
    assert!(!model.enforcing());
    assert_eq!(
        model
            .allowlists()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["own"]
    );

    let mut again = model.clone();
    again
        .apply(
            desired.clone(),
            Scope::Local { prune: false },
            &[],
            false,
            t(200),
            &settings(),
            &mut next_id,
        )
        .expect("apply");
    again.acknowledge(t(260), &settings()).expect("ack");
    let unchanged = again
        .apply(
            desired,
            Scope::Local { prune: false },
            &[],
            false,
            t(300),
            &settings(),
            &mut next_id,
        )
        .expect("again");
    assert!(unchanged.is_empty(), "{unchanged:?}");
    assert!(again.pending().is_none());
}

#[test]
fn a_file_with_one_bad_list_changes_nothing() {
    let mut model = Model::default();
    let mut next_id = ids();
    let before = model.clone();
    let err = model
        .apply(
            vec![
                declared("office", &["192.0.2.0/24"], true),
                declared("bad", &["10.0.0.1/8"], false),
            ],
            Scope::Local { prune: false },
            &[],
            false,
            t(0),
            &settings(),
            &mut next_id,
        )
        .expect_err("host bits");
    assert_eq!(
        (err.code(), err.field()),
        ("host_bits_set", Some("allowlists[1].entries[0].cidr"))
    );
    assert_eq!(model, before);
}

#[test]
fn fleet_lists_change_only_by_release_and_a_release_only_by_the_fleets_acknowledgement() {
    let mut model = Model::default();
    let mut next_id = ids();
    let local = create(&mut model, &mut next_id, "local", &["198.51.100.7"]);
    model
        .apply(
            vec![declared("office", &["192.0.2.0/24"], true)],
            release("r1"),
            &[],
            false,
            t(0),
            &settings(),
            &mut next_id,
        )
        .expect("release");
    assert_eq!(model.pending_release(), Some("r1"));
    assert_eq!(
        model
            .acknowledge(t(70), &settings())
            .expect_err("local ack")
            .code(),
        "fleet_release_pending"
    );
    model
        .acknowledge_release("r1", t(70), &settings())
        .expect("fleet ack");
    assert_eq!(model.fleet().applied.as_deref(), Some("r1"));

    let office = model
        .allowlists()
        .find(|l| l.name == "office")
        .expect("office")
        .id
        .clone();
    let edits = [
        model
            .clone()
            .add_entries(
                &office,
                entries(&["10.0.0.0/8"]),
                t(80),
                &settings(),
                &mut next_id,
            )
            .map(|_| ()),
        model.clone().delete(&office, None).map(|_| ()),
        model
            .clone()
            .disable(std::slice::from_ref(&office), t(80), &settings()),
    ];
    for edit in edits {
        assert_eq!(edit.expect_err("fleet list").code(), "fleet_managed");
    }
    let clash = model
        .clone()
        .apply(
            vec![declared("local", &["10.0.0.0/8"], true)],
            release("r2"),
            &[],
            false,
            t(90),
            &settings(),
            &mut next_id,
        )
        .expect_err("a local list's name");
    assert_eq!(clash.code(), "duplicate_name");
    assert!(model.allowlist(&local).is_ok());

    // A release nobody acknowledges reverts, and the host remembers not to apply it again.
    model
        .apply(
            vec![declared("office", &["192.0.2.0/25"], true)],
            release("r2"),
            &[],
            false,
            t(100),
            &settings(),
            &mut next_id,
        )
        .expect("release 2");
    model.revert_if_due(t(220)).expect("reverted");
    assert_eq!(model.fleet().reverted.as_deref(), Some("r2"));
    let restored = model.allowlist(&office).expect("office");
    assert_eq!(
        restored.entries[0].cidr,
        net("192.0.2.0/24"),
        "release 1's list is back"
    );

    model.set_detached(true).expect("detach");
    model
        .clone()
        .add_entries(
            &office,
            entries(&["10.0.0.0/8"]),
            t(300),
            &settings(),
            &mut next_id,
        )
        .expect("editable once detached");
}
