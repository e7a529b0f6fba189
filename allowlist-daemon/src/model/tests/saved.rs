//! The state as saved and read back.

use super::*;

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
            "al1": list("al1", "office", vec![entry("en_1", "192.0.2.0/24", 0)]),
            "al2": list("al2", "open", vec![entry("en_3", "0.0.0.0/0", 2)]),
        },
        "enabled": ["al1"],
        "pending": {
            "action": "update",
            "allowlist_ids": ["al1"],
            "applied_at": "2027-01-15T08:00:00Z",
            "acknowledge_after": "2027-01-15T08:01:00Z",
            "revert_at": "2027-01-15T08:02:00Z",
            "restore": {"entries": {"allowlist_id": "al1", "entries": [entry("en_2", "198.51.100.7/32", 1)]}},
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
        model.rules_in_use().contains(1),
        "the entry to restore keeps its rule"
    );
    let resaved: serde_json::Value = serde_json::to_value(&model).expect("json");
    assert_eq!(resaved["format"], 3);
    model.revert_if_due(t(1_000_000)).expect("reverted");
    let cidrs: Vec<IpNet> = model
        .allowlist("al1")
        .expect("office")
        .entries
        .iter()
        .map(|e| e.cidr)
        .collect();
    assert_eq!(cidrs, [net("192.0.2.0/24"), net("198.51.100.7/32")]);

    let newer = serde_json::json!({"format": 4, "allowlists": {}, "enabled": [], "pending": null});
    let err = serde_json::from_value::<Model>(newer).expect_err("newer format");
    assert!(
        err.to_string().contains("written by a newer allowlistd"),
        "{err}"
    );
}

#[test]
fn an_entry_id_used_twice_is_refused_where_it_is_used_the_second_time() {
    let list = |id: &str, name: &str, entry_id: &str, cidr: &str| {
        serde_json::json!({
            "id": id, "name": name, "description": "",
            "entries": [{"id": entry_id, "cidr": cidr, "rule": if id == "al1" { 0 } else { 1 }}],
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "version": 1,
        })
    };
    let state = |second_id: &str| {
        serde_json::json!({
            "format": 3,
            "allowlists": {
                "al1": list("al1", "a", "en_0000000000000001", "192.0.2.1/32"),
                "al2": list("al2", "b", second_id, "192.0.2.2/32"),
            },
            "enabled": [],
            "pending": null,
        })
    };
    let model: Model = serde_json::from_value(state("en_0000000000000002")).expect("state");
    model.validate(&settings()).expect("ids once each");
    let model: Model = serde_json::from_value(state("en_0000000000000001")).expect("state");
    let err = model
        .validate(&settings())
        .expect_err("an id twice")
        .to_string();
    assert!(
        err.contains("allowlists.al2.entries[0]") && err.contains("is used twice"),
        "{err}"
    );
}
