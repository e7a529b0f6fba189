//! Steps the daemon tests share: the "office" list that allows the client's allowed
//! addresses, enabling and acknowledging it, and whether the kernel enforces it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{Daemon, Response, TempDir};
use crate::netns::{
    CLIENT_ALLOWED_V4, CLIENT_ALLOWED_V6, CLIENT_DENIED_V4, CLIENT_DENIED_V6, SERVER_V4, TestLink,
};
use crate::traffic::{UdpStream, passes};

/// A short window: acknowledgements after 1 s, reverts after 4 s.
pub const WINDOW: [&str; 4] = ["--ack-min", "1s", "--ack-max", "4s"];

/// Whether the kernel enforces the "office" list: the allowed client passes, the denied
/// one does not (both families). Fails if it is neither that nor no policy at all.
pub fn enforcing_office(link: &TestLink) -> bool {
    let enforced = passes(link, CLIENT_ALLOWED_V4)
        && passes(link, CLIENT_ALLOWED_V6)
        && !passes(link, CLIENT_DENIED_V4)
        && !passes(link, CLIENT_DENIED_V6);
    assert!(
        enforced || (passes(link, CLIENT_DENIED_V4) && passes(link, CLIENT_DENIED_V6)),
        "neither the office policy nor no policy"
    );
    enforced
}

/// Creates the list `name` with `cidrs`; returns its id.
pub fn create(daemon: &Daemon, name: &str, cidrs: &[String]) -> String {
    let entries: Vec<Value> = cidrs.iter().map(|cidr| json!({ "cidr": cidr })).collect();
    let response = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": name, "entries": entries })),
    );
    assert_eq!(response.status, 201, "{response:?}");
    response.body["id"].as_str().expect("id").to_owned()
}

/// The client's allowed addresses, both families.
pub fn office() -> Vec<String> {
    vec![CLIENT_ALLOWED_V4.to_string(), CLIENT_ALLOWED_V6.to_string()]
}

/// Enables the list `id`; fails unless it is accepted.
pub fn enable(daemon: &Daemon, id: &str) -> Response {
    let response = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({ "allowlist_ids": [id] })),
    );
    assert_eq!(response.status, 202, "{response:?}");
    response
}

/// Disables the list `id`; fails unless it is accepted.
pub fn disable(daemon: &Daemon, id: &str) -> Response {
    let response = daemon.call(
        "POST",
        "/v1/enforcement/disable",
        Some(&json!({ "allowlist_ids": [id] })),
    );
    assert_eq!(response.status, 202, "{response:?}");
    response
}

/// Acknowledges the pending change once [`WINDOW`] allows it.
pub fn acknowledge(daemon: &Daemon) {
    std::thread::sleep(Duration::from_millis(1050));
    let response = daemon.call("POST", "/v1/enforcement/acknowledge", None);
    assert_eq!(response.status, 200, "{response:?}");
}

/// allowlistd (with [`WINDOW`]) in `link`, keeping its state in `state`, enforcing the
/// "office" list, enabled and acknowledged; and the list's id.
pub fn enforcing_office_daemon(link: &TestLink, state: &TempDir) -> (Daemon, String) {
    let daemon = Daemon::start(link, state.path(), &WINDOW).expect("allowlistd");
    let id = create(&daemon, "office", &office());
    enable(&daemon, &id);
    acknowledge(&daemon);
    (daemon, id)
}

/// The entries of list `id`, as `GET /v1/allowlists/ID` gives them.
pub fn list_entries(daemon: &Daemon, id: &str) -> Vec<Value> {
    let list = daemon.call("GET", &format!("/v1/allowlists/{id}"), None);
    list.body["entries"].as_array().cloned().unwrap_or_default()
}

/// `GET /v1/enforcement`.
pub fn enforcement(daemon: &Daemon) -> Value {
    daemon.call("GET", "/v1/enforcement", None).body
}

/// The `dropped` counter.
pub fn dropped(daemon: &Daemon) -> u64 {
    let stats = daemon.call("GET", "/v1/stats", None);
    stats.body["counters"]["dropped"].as_u64().expect("dropped")
}

/// The state file in `state`.
pub fn state_file(state: &TempDir) -> std::path::PathBuf {
    state.path().join("state.json")
}

/// How [`restart_under_stream`] takes the daemon down.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// SIGTERM: it stops as it would under systemd.
    Terminate,
    /// SIGKILL: it dies without a word.
    Kill,
}

/// Takes `daemon` down (`stop`) while the allowed client streams `datagrams` UDP datagrams
/// to the server, checks that the denied client is dropped while it is down, and starts a
/// daemon again on `state` with `args`. Asserts that the stream outlasted the restart and
/// that no datagram of it was lost; returns the new daemon (`daemon` is kept, stopped: its
/// log is the new one's).
pub fn restart_under_stream(
    link: &TestLink,
    daemon: &mut Daemon,
    stop: Stop,
    state: &TempDir,
    args: &[&str],
    datagrams: u64,
) -> Daemon {
    let mut restarted = None;
    let mut denied_passed_while_down = None;
    let stream = UdpStream::run(
        link,
        CLIENT_ALLOWED_V4.into(),
        SERVER_V4.into(),
        datagrams,
        || {
            match stop {
                Stop::Terminate => daemon.stop()?,
                Stop::Kill => daemon.kill()?,
            }
            denied_passed_while_down = Some(passes(link, CLIENT_DENIED_V4));
            restarted = Some(Daemon::start(link, state.path(), args)?);
            Ok(())
        },
    )
    .expect("stream");
    assert!(stream.outlasted(), "the restart happened under traffic");
    assert_eq!(
        stream.received(),
        stream.sent(),
        "no packet of the allowed source was lost"
    );
    assert_eq!(denied_passed_while_down, Some(false), "denied while down");
    restarted.expect("restarted")
}
