//! `allowlistctl` over the same API: the same flows as the API tests, and tables that stay
//! readable whatever the names hold.

use super::*;

#[test]
fn allowlistctl_drives_the_same_flows() {
    let s = setup(&["--ack-min", "2s", "--ack-max", "60s"]);
    let d = &s.daemon;
    let ok = |args: &[&str]| {
        let output = d.ctl(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "allowlistctl {args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let fails = |args: &[&str]| {
        let output = d.ctl(args);
        assert!(
            !output.status.success(),
            "allowlistctl {args:?} should fail"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let refused = fails(&["--token", "s3cret", "status"]);
    assert!(
        refused.contains("ALLOWLIST_TOKEN"),
        "a token on the command line is refused, naming the way: {refused}"
    );
    let created = ok(&[
        "create",
        "office",
        "-d",
        "desks",
        "--entry",
        &format!("{CLIENT_ALLOWED_V4}=v4"),
        "--entry",
        &CLIENT_ALLOWED_V6.to_string(),
    ]);
    assert!(
        created.contains("198.18.0.2/32") && created.contains("desks"),
        "{created}"
    );
    let listed = ok(&["list"]);
    assert!(
        listed.contains("office") && listed.contains("ENTRIES"),
        "{listed}"
    );
    let json: Value = serde_json::from_str(&ok(&["--json", "show", "office"])).expect("json");
    assert_eq!(json["name"], "office");

    let host_bits = fails(&["add", "office", "198.18.0.9/24"]);
    assert!(
        host_bits.contains("did you mean 198.18.0.0/24") && host_bits.contains("host_bits_set"),
        "{host_bits}"
    );
    assert!(fails(&["show", "nosuch"]).contains("no allowlist"));

    let locked = fails(&[
        "enable",
        "office",
        "--client-ip",
        &CLIENT_DENIED_V4.to_string(),
    ]);
    assert!(
        locked.contains("would_lock_out") && locked.contains("198.18.0.3"),
        "{locked}"
    );
    let status = ok(&[
        "enable",
        "office",
        "--client-ip",
        &CLIENT_ALLOWED_V4.to_string(),
    ]);
    assert!(status.contains("pending:       enable"), "{status}");
    let early = fails(&["ack"]);
    assert!(early.contains("too_early"), "{early}");
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    std::thread::sleep(Duration::from_millis(1100));
    assert!(ok(&["ack"]).contains("pending:       none"));

    ok(&[
        "add",
        "office",
        &CLIENT_DENIED_V4.to_string(),
        "-d",
        "temporary",
    ]);
    assert!(passes(&s.link, CLIENT_DENIED_V4));
    ok(&["remove", "office", &CLIENT_DENIED_V4.to_string()]);
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    assert!(ok(&["status"]).contains("pending:       update"));
    std::thread::sleep(Duration::from_millis(2100));
    ok(&["ack"]);

    assert!(ok(&["evaluate", &CLIENT_DENIED_V4.to_string()]).starts_with("dropped (no_match)"));
    let stats = ok(&["stats"]);
    assert!(
        stats.contains("dropped") && stats.contains("BUSIEST ENTRIES"),
        "{stats}"
    );

    let update = d.state_dir.with_extension("update.json");
    std::fs::write(&update, json!({"name": "office", "description": "all", "entries": [{"cidr": "198.18.0.0/29"}, {"cidr": "fd00:a11::/64"}]}).to_string()).expect("write");
    ok(&[
        "update",
        "office",
        "--from-file",
        update.to_str().expect("path"),
    ]);
    std::fs::remove_file(&update).expect("cleanup");
    assert!(passes(&s.link, CLIENT_DENIED_V4), "widened by the update");
    std::thread::sleep(Duration::from_millis(2100));
    ok(&["ack"]);
    assert!(fails(&["delete", "office"]).contains("allowlist_enabled"));
    ok(&["disable", "office"]);
    assert!(
        fails(&["delete", "office"]).contains("change_pending"),
        "a revert would need it"
    );
    std::thread::sleep(Duration::from_millis(2100));
    ok(&["ack"]);
    assert!(ok(&["delete", "office"]).contains("deleted"));
    assert!(ok(&["status"]).contains("enforcing:     no"));
}

#[test]
fn allowlistctl_tables_escape_control_characters_and_end_quietly_into_head() {
    let s = setup(&[]);
    let d = &s.daemon;
    let entries: Vec<Value> = (0..5000u32)
        .map(
            |n| json!({ "cidr": format!("10.{}.{}.0/24", n / 256, n % 256), "description": "row" }),
        )
        .collect();
    let forged = "desks\nevil                   yes      99999  \u{1b}[2Jgone";
    let created = d.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": "office", "description": forged, "entries": entries })),
    );
    assert_eq!(created.status, 201);
    let output = d.ctl(&["list"]);
    assert!(output.status.success());
    let listed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(listed.lines().count(), 2, "a heading and one row: {listed}");
    assert!(listed.contains("desks\\nevil"), "{listed}");
    assert!(listed.contains("\\u{1b}[2Jgone"), "{listed}");
    assert!(
        !listed.contains('\u{1b}'),
        "no escape sequence reaches the terminal"
    );

    let stderr = d.ctl_into_closed_pipe(&["show", "office"]);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "allowlistctl show | head: {stderr}"
    );
}
