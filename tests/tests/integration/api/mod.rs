//! The admin API over real HTTP, against allowlistd with its program attached in a namespace,
//! with packets showing the effect of each step: one module per concern, sharing the setup
//! below.

mod access;
mod allowlistctl;
mod changes;
mod lists;
mod observe;

use std::time::Duration;

use allowlist_tests::daemon::{API_ADDR, Daemon, Response, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::scenario;
use allowlist_tests::traffic::{TcpSession, passes};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

/// Short acknowledgement windows, through the flags.
const WINDOWS: &[&str] = &["--ack-min", "1s", "--ack-max", "3s"];

struct Setup {
    daemon: Daemon,
    link: TestLink,
    // Dropped last: the daemon's state lives here.
    _state: TempDir,
}

fn setup(args: &[&str]) -> Setup {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), args).expect("allowlistd");
    Setup {
        daemon,
        link,
        _state: state,
    }
}

/// Creates the list "office" allowing the client's allowed addresses; returns its id.
fn create_office(daemon: &Daemon) -> String {
    let response = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({
            "name": "office",
            "description": "the client's allowed addresses",
            "entries": [
                {"cidr": CLIENT_ALLOWED_V4.to_string(), "description": "v4"},
                {"cidr": CLIENT_ALLOWED_V6.to_string()},
            ],
        })),
    );
    assert_eq!(response.status, 201, "{response:?}");
    response.body["id"].as_str().expect("id").to_owned()
}

fn enable(daemon: &Daemon, ids: &[&str]) -> Response {
    daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({ "allowlist_ids": ids })),
    )
}

/// Creates "office", enables it and acknowledges the enable; returns its id.
fn enforce_office(daemon: &Daemon) -> String {
    let id = create_office(daemon);
    scenario::enable(daemon, &id);
    scenario::acknowledge(daemon);
    id
}

/// Enables one list past the lockout guard.
fn enable_forced(daemon: &Daemon, id: &str) -> Response {
    daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({ "allowlist_ids": [id], "force": true })),
    )
}

fn state(daemon: &Daemon) -> Value {
    let response = daemon.call("GET", "/v1/enforcement", None);
    assert_eq!(response.status, 200);
    response.body
}

fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(
        (response.status, response.code()),
        (status, code),
        "{response:?}"
    );
    assert!(
        response.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{response:?}"
    );
}
