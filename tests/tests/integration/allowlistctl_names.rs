//! allowlistctl names lists by id or by name; a list named like another list's id never
//! shadows it: ids win. Every command answers scripts in JSON with --json.

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::TestLink;
use serde_json::json;

#[test]
fn a_list_named_like_another_lists_id_does_not_shadow_it() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &[]).expect("allowlistd");
    let office = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "office", "entries": [{"cidr": "192.0.2.0/24"}]})),
    );
    let office_id = office.body["id"].as_str().expect("id").to_owned();
    let impostor = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": office_id, "entries": [{"cidr": "198.51.100.0/24"}]})),
    );
    assert_eq!(impostor.status, 201, "{:?}", impostor.body);

    for command in [
        &["show", office_id.as_str()][..],
        &["--json", "show", &office_id],
    ] {
        let shown = daemon.ctl(command);
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.status.success(), "{text}");
        assert!(
            text.contains("192.0.2.0/24") && !text.contains("198.51.100.0/24"),
            "{command:?} shows the list with that id: {text}"
        );
    }
    let enabled = daemon.ctl(&["--json", "enable", &office_id, "--force"]);
    assert!(enabled.status.success(), "{enabled:?}");
    let state = daemon.call("GET", "/v1/enforcement", None);
    assert_eq!(state.body["enabled_allowlist_ids"], json!([office_id]));

    // A deletion answers JSON too: which list went.
    let impostor_id = impostor.body["id"].as_str().expect("id");
    let deleted = daemon.ctl(&["--json", "delete", impostor_id]);
    let answer: serde_json::Value =
        serde_json::from_slice(&deleted.stdout).expect("delete --json answers JSON");
    assert_eq!(answer["deleted"], json!(impostor_id));
}
