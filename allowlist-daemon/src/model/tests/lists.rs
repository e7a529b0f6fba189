//! Creating, editing, deleting lists; rules; evaluate.

use super::*;

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
fn an_enabled_list_cannot_be_deleted() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = create_enabled(&mut model, &mut next_id, "office", &["192.0.2.0/24"]);
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
    std::sync::Arc::make_mut(&mut small.allowlists.get_mut(&b).expect("list").entries)[0].rule = 40;
    assert_eq!(small.renumber_rules(16), 1);
    assert_eq!(small.allowlist(&b).expect("list").entries[0].rule, 0);
}

#[test]
fn prefixes_that_together_cover_a_family_need_allow_all() {
    let mut model = Model::default();
    let mut next_id = ids();
    let halves = model
        .create(
            input("halves", &["0.0.0.0/1", "128.0.0.0/1"]),
            t(0),
            &settings(),
            &mut next_id,
        )
        .expect_err("refused");
    assert_eq!(halves.code(), "allow_all_required");
    assert!(halves.to_string().contains("cover 0.0.0.0/0"), "{halves}");
    let id = create(&mut model, &mut next_id, "half", &["::/1"]);
    let added = model
        .add_entries(&id, entries(&["8000::/1"]), t(0), &settings(), &mut next_id)
        .expect_err("the other half");
    assert_eq!(added.code(), "allow_all_required");
    let said = AllowlistInput {
        allow_all: true,
        ..input("halves", &["0.0.0.0/1", "128.0.0.0/1"])
    };
    model
        .create(said, t(0), &settings(), &mut next_id)
        .expect("said so");
}
