//! Lists through the API: created, read, replaced, edited and deleted; unknown ids, bad
//! input and stale versions refused with a code, changing nothing.

use super::*;

#[test]
fn allowlists_can_be_created_read_replaced_edited_and_deleted() {
    let s = setup(&[]);
    let d = &s.daemon;
    let created = d.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "office", "entries": [{"cidr": "192.0.2.7", "description": "desk"}, {"cidr": "2001:db8::/48"}]})),
    );
    assert_eq!(created.status, 201);
    assert_eq!(created.header("etag"), Some("\"1\""));
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_ne!(id, "office");
    let saved = std::fs::read_to_string(d.state_dir.join("state.json")).expect("state file");
    assert!(
        saved.contains(&id) && saved.contains("192.0.2.7/32"),
        "on disk before the response: {saved}"
    );
    assert_eq!(created.body["entries"][0]["cidr"], "192.0.2.7/32");
    assert_eq!(created.body["entries"][0]["description"], "desk");
    assert_eq!(created.body["enabled"], false);
    for key in ["created_at", "updated_at", "description"] {
        assert!(created.body[key].is_string(), "{key}");
    }
    let kept_entry = created.body["entries"][1]["id"].clone();

    let all = d.call("GET", "/v1/allowlists", None);
    assert_eq!(
        (all.status, all.body["allowlists"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let one = d.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert_eq!((one.status, one.header("etag")), (200, Some("\"1\"")));
    // The same list, each entry with its use: none yet.
    let mut expected = created.body.clone();
    for entry in expected["entries"].as_array_mut().expect("entries") {
        entry["hits"] = json!(0);
        entry["last_hit"] = Value::Null;
    }
    assert_eq!(one.body, expected);

    let replaced = d.call(
        "PUT",
        &format!("/v1/allowlists/{id}"),
        Some(&json!({"name": "hq", "description": "moved", "entries": [{"cidr": "2001:db8::/48"}, {"cidr": "198.51.100.0/24"}]})),
    );
    assert_eq!(
        (replaced.status, replaced.header("etag")),
        (200, Some("\"2\""))
    );
    assert_eq!(replaced.body["name"], "hq");
    // Entries come sorted by prefix, IPv4 first, whatever the order given.
    assert_eq!(replaced.body["entries"][0]["cidr"], "198.51.100.0/24");
    assert_eq!(
        replaced.body["entries"][1]["id"], kept_entry,
        "a kept prefix keeps its id"
    );

    let added = d.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({"entries": [{"cidr": "203.0.113.9", "description": "vpn"}]})),
    );
    assert_eq!(added.status, 201);
    assert_eq!(added.body["entries"][0]["cidr"], "203.0.113.9/32");
    let added_id = added.body["entries"][0]["id"]
        .as_str()
        .expect("entry id")
        .to_owned();

    let removed = d.call(
        "DELETE",
        &format!("/v1/allowlists/{id}/entries/{added_id}"),
        None,
    );
    assert_eq!((removed.status, removed.body.clone()), (204, Value::Null));
    let after = d.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert_eq!(after.body["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(after.header("etag"), Some("\"4\""));

    assert_eq!(
        d.call("DELETE", &format!("/v1/allowlists/{id}"), None)
            .status,
        204
    );
    assert_error(
        &d.call("GET", &format!("/v1/allowlists/{id}"), None),
        404,
        "not_found",
    );
    let healthz = d.request("GET", "/healthz", None, &[]).expect("healthz");
    assert_eq!(healthz.body["status"], "ok");
}

#[test]
fn unknown_ids_get_404() {
    let s = setup(&[]);
    let d = &s.daemon;
    let id = create_office(d);
    let body = json!({"name": "x", "entries": []});
    for (method, path, body) in [
        ("GET", "/v1/allowlists/al_nope".to_owned(), None),
        ("PUT", "/v1/allowlists/al_nope".to_owned(), Some(&body)),
        ("DELETE", "/v1/allowlists/al_nope".to_owned(), None),
        (
            "POST",
            "/v1/allowlists/al_nope/entries".to_owned(),
            Some(&json!({"entries": [{"cidr": "192.0.2.1"}]})),
        ),
        (
            "DELETE",
            "/v1/allowlists/al_nope/entries/en_x".to_owned(),
            None,
        ),
        (
            "DELETE",
            format!("/v1/allowlists/{id}/entries/en_nope"),
            None,
        ),
        (
            "POST",
            "/v1/enforcement/enable".to_owned(),
            Some(&json!({"allowlist_ids": ["al_nope"]})),
        ),
        (
            "POST",
            "/v1/enforcement/disable".to_owned(),
            Some(&json!({"allowlist_ids": ["al_nope"]})),
        ),
        ("GET", "/v1/no/such/route".to_owned(), None),
    ] {
        assert_error(&d.call(method, &path, body), 404, "not_found");
    }
    // A method a route does not take: 405 in the same envelope, with the methods it takes.
    for (method, path, allowed) in [
        ("DELETE", "/v1/enforcement", "GET"),
        ("GET", "/v1/enforcement/acknowledge", "POST"),
        ("POST", "/healthz", "GET"),
        ("PUT", "/metrics", "GET"),
    ] {
        let response = d.call(method, path, None);
        assert_error(&response, 405, "method_not_allowed");
        assert!(
            response
                .header("allow")
                .is_some_and(|allow| allow.contains(allowed)),
            "{method} {path}: {response:?}"
        );
    }
}

#[test]
fn bad_input_is_refused_with_a_code_and_changes_nothing() {
    let s = setup(&[
        "--max-lists",
        "2",
        "--max-entries",
        "3",
        "--max-name-len",
        "8",
        "--max-description-len",
        "10",
        "--max-body-bytes",
        "4096",
    ]);
    let d = &s.daemon;
    let post_list = |body: Value| d.call("POST", "/v1/allowlists", Some(&body));
    let office =
        post_list(json!({"name": "office", "entries": [{"cidr": CLIENT_ALLOWED_V4.to_string()}]}));
    assert_eq!(office.status, 201, "{office:?}");
    let id = office.body["id"].as_str().expect("id").to_owned();
    let state_file = d.state_dir.join("state.json");
    let before = std::fs::read(&state_file).expect("state file");
    let auth = format!("Bearer {}", d.token);
    let headers = [("Authorization", auth.as_str())];
    let list = |entries: Value| json!({"name": "other", "entries": entries});

    let malformed = d
        .raw("POST", "/v1/allowlists", Some("{\"name\": "), &headers)
        .expect("request");
    assert_error(&malformed, 400, "invalid_request");
    let unknown = post_list(json!({"name": "x", "colour": "red"}));
    assert_error(&unknown, 400, "invalid_request");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("colour")
    );
    let unknown_entry_field = post_list(list(json!([{"cidr": "192.0.2.1", "comment": "x"}])));
    assert_error(&unknown_entry_field, 400, "invalid_request");

    let invalid = post_list(list(json!([{"cidr": "192.0.2.1"}, {"cidr": "192.0.2"}])));
    assert_error(&invalid, 400, "invalid_cidr");
    assert_eq!(invalid.body["error"]["field"], "entries[1].cidr");
    let host_bits = post_list(list(json!([{"cidr": "198.51.100.9/24"}])));
    assert_error(&host_bits, 400, "host_bits_set");
    assert_eq!(host_bits.body["error"]["field"], "entries[0].cidr");
    assert!(
        host_bits.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("198.51.100.0/24")
    );
    let bad_ip = d.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id], "client_ip": "nope"})),
    );
    assert_error(&bad_ip, 400, "invalid_request");

    let duplicate_entry = post_list(list(
        json!([{"cidr": "192.0.2.1"}, {"cidr": "192.0.2.1/32"}]),
    ));
    assert_error(&duplicate_entry, 409, "duplicate_entry");
    let duplicate_added = d.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({"entries": [{"cidr": CLIENT_ALLOWED_V4.to_string()}]})),
    );
    assert_error(&duplicate_added, 409, "duplicate_entry");
    let duplicate_name = d.call("POST", "/v1/allowlists", Some(&json!({"name": "office"})));
    assert_error(&duplicate_name, 409, "duplicate_name");

    let huge = format!(
        "{{\"name\": \"x\", \"description\": \"{}\"}}",
        "a".repeat(5000)
    );
    assert_error(
        &d.raw("POST", "/v1/allowlists", Some(&huge), &headers)
            .expect("request"),
        413,
        "payload_too_large",
    );

    for (body, limit) in [
        (json!({"name": "far-too-long-name"}), "8"),
        (
            json!({"name": "x", "description": "far too long a description"}),
            "10",
        ),
        (
            list(json!([{"cidr": "192.0.2.1"}, {"cidr": "192.0.2.2"}, {"cidr": "192.0.2.3"}])),
            "3",
        ),
    ] {
        let response = d.call("POST", "/v1/allowlists", Some(&body));
        assert_error(&response, 422, "limit_exceeded");
        let message = response.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&format!("the limit is {limit}")),
            "{message}"
        );
    }
    assert_eq!(
        std::fs::read(&state_file).expect("state file"),
        before,
        "refusals change nothing"
    );

    assert_eq!(
        d.call("POST", "/v1/allowlists", Some(&json!({"name": "second"})))
            .status,
        201
    );
    let third = d.call("POST", "/v1/allowlists", Some(&json!({"name": "third"})));
    assert_error(&third, 422, "limit_exceeded");
    assert!(
        third.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("the limit is 2")
    );
}

#[test]
fn if_match_refuses_changes_to_a_list_that_changed_meanwhile() {
    let s = setup(&[]);
    let d = &s.daemon;
    let id = create_office(d);
    let body = json!({"name": "office", "entries": [{"cidr": "192.0.2.0/24"}]});
    let auth = format!("Bearer {}", d.token);
    let with = |etag: &'static str| vec![("Authorization", auth.as_str()), ("If-Match", etag)];

    // Two admins read version 1; the first writes, the second is refused.
    let put_over_version_1 = || {
        d.request(
            "PUT",
            &format!("/v1/allowlists/{id}"),
            Some(&body),
            &with("\"1\""),
        )
        .expect("put")
    };
    let first = put_over_version_1();
    assert_eq!((first.status, first.header("etag")), (200, Some("\"2\"")));
    let second = put_over_version_1();
    assert_error(&second, 412, "precondition_failed");
    let entry = first.body["entries"][0]["id"]
        .as_str()
        .expect("entry")
        .to_owned();
    // A stale version, or one that is no version at all, removes nothing and deletes nothing.
    for (path, version) in [
        (format!("/v1/allowlists/{id}/entries/{entry}"), "\"1\""),
        (format!("/v1/allowlists/{id}"), "\"1\""),
        (format!("/v1/allowlists/{id}"), "yesterday"),
    ] {
        let refused = d
            .request("DELETE", &path, None, &with(version))
            .expect("delete");
        assert_error(&refused, 412, "precondition_failed");
    }
    assert_eq!(
        d.call("GET", &format!("/v1/allowlists/{id}"), None).body["entries"][0]["cidr"],
        "192.0.2.0/24"
    );
    let delete = d
        .request(
            "DELETE",
            &format!("/v1/allowlists/{id}"),
            None,
            &with("\"2\""),
        )
        .expect("delete");
    assert_eq!(delete.status, 204);
}
