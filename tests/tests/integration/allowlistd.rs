//! The `allowlistd` binary as an operator runs it: attached inside a namespace, its --allow
//! prefixes always allowed once it enforces, still enforcing after SIGTERM until
//! `allowlistd teardown`; and its refusals of bad input, which leave nothing attached.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use allowlist_tests::allowlistd_binary;
use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::scenario::{create, enable};
use allowlist_tests::traffic::udp_gets_through;
use serde_json::json;

#[test]
fn allowlistd_enforces_past_sigterm_until_teardown() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let mut daemon = Daemon::start(
        &link,
        state.path(),
        &[
            "--allow",
            "198.18.0.2",
            "--xdp-mode",
            "skb",
            "--stats-interval",
            "1s",
        ],
    )
    .expect("allowlistd");
    assert!(link.server_has_xdp().expect("ip link"));
    assert!(
        udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"),
        "no allowlist enabled: not enforcing"
    );

    let list = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "v6", "entries": [{"cidr": "fd00:a11::/126"}]})),
    );
    let id = list.body["id"].as_str().expect("id");
    let enabled = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id]})),
    );
    assert_eq!(enabled.status, 202, "{enabled:?}");

    assert!(
        udp_gets_through(&link, CLIENT_ALLOWED_V4.into(), SERVER_V4.into()).expect("udp"),
        "--allow"
    );
    assert!(!udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
    assert!(
        udp_gets_through(&link, CLIENT_DENIED_V6.into(), SERVER_V6.into()).expect("udp"),
        "::3 is in ::/126"
    );

    daemon.stop().expect("SIGTERM");
    let log = daemon.log();
    assert!(
        log.contains("attached") && log.contains("mode=skb"),
        "{log}"
    );
    let dropped: u64 = log
        .rsplit("dropped=")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dropped >= 1, "the counters are logged: {log}");
    assert!(
        log.contains("the policy stays enforced"),
        "the stop says what stays: {log}"
    );
    assert!(
        link.server_has_xdp().expect("ip link"),
        "still attached after SIGTERM"
    );
    assert!(
        !udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"),
        "still enforcing after SIGTERM"
    );
    assert!(udp_gets_through(&link, CLIENT_ALLOWED_V4.into(), SERVER_V4.into()).expect("udp"));

    let teardown = Command::new(allowlistd_binary().expect("allowlistd binary"))
        .arg("teardown")
        .arg("--pin-dir")
        .arg(state.pin_dir())
        .output()
        .expect("allowlistd teardown");
    assert!(teardown.status.success(), "{teardown:?}");
    assert!(!state.pin_dir().exists(), "the pins are gone");
    assert!(
        !link.server_has_xdp().expect("ip link"),
        "detached by teardown"
    );
    assert!(udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
}

#[test]
fn teardown_refuses_to_pull_the_pins_from_under_a_running_daemon() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &[]).expect("allowlistd");
    let teardown = |force: bool| {
        let mut command = Command::new(allowlistd_binary().expect("allowlistd binary"));
        command
            .arg("teardown")
            .arg("--pin-dir")
            .arg(state.pin_dir());
        if force {
            command.arg("--force");
        }
        command.output().expect("allowlistd teardown")
    };
    let refused = teardown(false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    let pid = daemon.pid().expect("pid");
    assert!(
        stderr.contains(&format!("allowlistd (pid {pid})")) && stderr.contains("--force"),
        "names the daemon and the way on: {stderr}"
    );
    assert!(state.pin_dir().exists(), "nothing removed");
    assert!(link.server_has_xdp().expect("ip link"));
    let forced = teardown(true);
    assert!(forced.status.success(), "{forced:?}");
    assert!(!state.pin_dir().exists(), "removed when forced");
}

fn refused(args: &[&str]) -> String {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let output = Command::new("nsenter")
        .arg(format!("--net={}", link.server.path()))
        .arg(allowlistd_binary().expect("allowlistd binary"))
        .arg("--state-dir")
        .arg(state.path())
        .arg("--pin-dir")
        .arg(state.pin_dir())
        .args(args)
        .output()
        .expect("running allowlistd");
    assert!(!output.status.success(), "allowlistd {args:?} should fail");
    assert!(
        !link.server_has_xdp().expect("ip link"),
        "nothing attached after a refusal"
    );
    assert!(!state.pin_dir().exists(), "nothing pinned after a refusal");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_cidr_with_host_bits_is_refused_naming_the_network_meant() {
    let err = refused(&["--iface", SERVER_IF, "--allow", "198.18.0.9/24"]);
    assert!(err.contains("did you mean 198.18.0.0/24?"), "{err}");
    let err = refused(&["--iface", SERVER_IF, "--allow", "fd00:a11::9/64"]);
    assert!(err.contains("did you mean fd00:a11::/64?"), "{err}");
}

#[test]
fn an_unknown_interface_is_refused_by_name() {
    let err = refused(&["--iface", "nosuch0", "--allow", "198.18.0.2"]);
    assert!(err.contains("nosuch0"), "{err}");
}

#[test]
fn an_interface_that_does_not_exist_yet_is_refused_unless_waited_for() {
    let err = refused(&["--iface", "late0"]);
    assert!(err.contains("there is no interface late0 here"), "{err}");
    assert!(err.contains("--wait-for-iface"), "{err}");
}

/// `xdp-filter` (xdp-tools) loaded on the server's interface of `link`: another XDP
/// program, unloaded when dropped.
struct XdpFilter<'a>(&'a TestLink);

impl<'a> XdpFilter<'a> {
    fn load(link: &'a TestLink) -> Self {
        let loaded = XdpFilter::command(link, "load");
        assert!(loaded.status.success(), "xdp-filter load: {loaded:?}");
        XdpFilter(link)
    }

    /// `xdp-filter VERB` on the server's interface, in its namespace (`nsenter`, so that
    /// libxdp's pins land in the host's bpffs, where unloading finds them).
    fn command(link: &TestLink, verb: &str) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", link.server.path()))
            .args(["xdp-filter", verb, SERVER_IF])
            .output()
            .expect("running xdp-filter")
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let _ = XdpFilter::command(self.0, "unload");
        // libxdp's directory of pins, empty again (left alone when it is not).
        let _ = std::fs::remove_dir("/sys/fs/bpf/xdp");
    }
}

#[test]
fn an_interface_another_xdp_program_holds_is_refused_naming_it() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let filter = XdpFilter::load(&link);
    let output = Command::new("nsenter")
        .arg(format!("--net={}", link.server.path()))
        .arg(allowlistd_binary().expect("allowlistd binary"))
        .args(["--iface", SERVER_IF, "--state-dir"])
        .arg(state.path())
        .arg("--pin-dir")
        .arg(state.pin_dir())
        .output()
        .expect("running allowlistd");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains(&format!("{SERVER_IF} already runs XDP program"))
            && err.contains("(xdpfilt_alw_all, native mode)")
            && err.contains(&format!("xdp-loader unload {SERVER_IF} --all")),
        "{err}"
    );
    assert!(
        !state.pin_dir().exists(),
        "nothing pinned after the refusal"
    );
    let shown = link
        .server
        .ip(&["-details", "link", "show", SERVER_IF])
        .expect("ip link");
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("name xdpfilt_alw_all"),
        "the other program left in place"
    );
    drop(filter);
}

#[test]
fn an_interface_that_appears_after_the_start_is_attached_and_enforced() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(
        &link,
        state.path(),
        &["--iface", "late0", "--wait-for-iface"],
    )
    .expect("allowlistd waiting for late0");
    let id = create(&daemon, "late", &["198.21.0.2/32".to_owned()]);
    enable(&daemon, &id);

    // The interface comes up after the daemon: a veth pair from the server's namespace to
    // the client's, where an allowed and a denied address sit.
    let client = link.client.name().to_owned();
    link.server
        .ip(&[
            "link", "add", "late0", "type", "veth", "peer", "name", "late0p", "netns", &client,
        ])
        .expect("late0");
    link.server
        .ip(&["addr", "add", "198.21.0.1/24", "dev", "late0"])
        .expect("address");
    link.server.ip(&["link", "set", "late0", "up"]).expect("up");
    for address in ["198.21.0.2/24", "198.21.0.3/24"] {
        link.client
            .ip(&["addr", "add", address, "dev", "late0p"])
            .expect("client address");
    }
    link.client
        .ip(&["link", "set", "late0p", "up"])
        .expect("up");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !daemon.log().contains("the interface appeared: attached") {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pings = |source: &str| {
        link.client
            .command(&["ping", "-c", "2", "-W", "1", "-I", source, "198.21.0.1"])
            .output()
            .expect("ping")
            .status
            .success()
    };
    assert!(pings("198.21.0.2"), "the allowed address gets through");
    assert!(!pings("198.21.0.3"), "the denied one is dropped on late0");
}

#[test]
fn a_garbage_allow_entry_is_refused() {
    let err = refused(&["--iface", SERVER_IF, "--allow", "198.18.0"]);
    assert!(err.contains("is not an IPv4/IPv6 address or CIDR"), "{err}");
}

#[test]
fn an_ack_window_that_closes_before_it_opens_is_refused() {
    let err = refused(&["--iface", SERVER_IF, "--ack-min", "2m", "--ack-max", "1m"]);
    assert!(
        err.contains("--ack-min") && err.contains("longer than --ack-max"),
        "{err}"
    );
}

#[test]
fn settings_out_of_their_bounds_are_refused_at_start() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    for (args, expected) in [
        (
            &["--ack-max", "1000000000y"][..],
            "--ack-max 1000000000years is out of range: give 1s to 1day",
        ),
        (
            &["--ack-min", "3s", "--ack-max", "3s"][..],
            "--ack-min 3s and --ack-max 3s leave no time to acknowledge",
        ),
        (
            &["--max-body-bytes", "0"][..],
            "--max-body-bytes 0 is out of range",
        ),
        (
            &["--max-entries", "100000000"][..],
            "--max-entries 100000000 is out of range: give 1 to 8388608",
        ),
    ] {
        let started = std::time::Instant::now();
        let (status, log) = Daemon::refusal(&link, state.path(), args).expect("refusal");
        assert!(!status.success(), "{args:?}");
        assert!(
            log.contains(&format!("error: {expected}")),
            "{args:?}: {log}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{args:?} refused at once, before the kernel"
        );
        assert!(!link.server_has_xdp().expect("ip link"), "{args:?}");
    }
}

#[test]
fn a_listen_address_that_cannot_be_bound_is_refused_before_the_kernel_is_touched() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let taken = "127.0.0.1:9181";
    let _holder = link
        .server
        .enter(|| std::net::TcpListener::bind(taken))
        .expect("enter the namespace")
        .expect("hold the port");
    let (status, log) =
        Daemon::refusal_listening(&link, state.path(), taken, &[]).expect("refusal");
    assert!(!status.success());
    assert!(log.contains("error: ") && log.contains(taken), "{log}");
    assert!(!link.server_has_xdp().expect("ip link"), "nothing attached");
    let pinned = std::fs::read_dir(state.pin_dir())
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(pinned, 0, "nothing pinned: {log}");
}

#[test]
fn a_config_file_supplies_the_flags() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let config = state.path().join("allowlistd.toml");
    std::fs::write(
        &config,
        "allow = [\"198.18.0.2\"]\nack-min = \"5s\"\nack-max = \"7s\"\n",
    )
    .expect("config");
    let config = config.to_str().expect("path").to_owned();
    let daemon = Daemon::start(&link, state.path(), &["--config", &config]).expect("allowlistd");
    let list = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "v6", "entries": [{"cidr": "fd00:a11::2"}]})),
    );
    let id = list.body["id"].as_str().expect("id");
    let enabled = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id]})),
    );
    assert_eq!(enabled.body["always_allow"], json!(["198.18.0.2/32"]));
    let window = enabled.body["pending"].clone();
    let parse = |key: &str| {
        time::OffsetDateTime::parse(
            window[key].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    assert_eq!(
        (parse("acknowledge_after") - parse("applied_at")).whole_seconds(),
        5
    );
    assert_eq!(
        (parse("revert_at") - parse("applied_at")).whole_seconds(),
        7
    );
}

#[test]
fn systemd_hears_ready_only_once_the_program_is_attached() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let socket_path = state.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut daemon = Command::new("nsenter")
        .arg(format!("--net={}", link.server.path()))
        .arg(allowlistd_binary().expect("allowlistd binary"))
        .args(["--iface", SERVER_IF, "--state-dir"])
        .arg(state.path())
        .arg("--pin-dir")
        .arg(state.pin_dir())
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting allowlistd");
    let mut message = [0u8; 256];
    let received = socket.recv(&mut message);
    let attached = link.server_has_xdp().expect("ip link");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let stopping = socket.recv(&mut [0u8; 256]);
    let _ = daemon.wait();
    let len = received.expect("READY=1 within 20 s");
    assert_eq!(
        std::str::from_utf8(&message[..len]).expect("utf-8").trim(),
        "READY=1"
    );
    assert!(attached, "the program was attached when READY=1 arrived");
    assert!(stopping.is_ok(), "STOPPING=1 on SIGTERM");
}

#[test]
fn the_daemon_carries_no_benchmark_program_map_or_method() {
    let binary = std::fs::read(allowlistd_binary().expect("allowlistd")).expect("reading it");
    let binary = String::from_utf8_lossy(&binary);
    let holds = |name: &str| binary.contains(name);
    // Names of the object's own programs and maps are there to be found...
    for present in ["allowlist_egress", "TOP_SOURCES", "RULE_HITS"] {
        assert!(holds(present), "{present} should be in allowlistd");
    }
    // ...and none of the benchmark's: they exist only in the `bench` build.
    for absent in [
        "bench_floor",
        "bench_varied",
        "BENCH_SOURCES",
        "BENCH_HOSTS_V4",
        "BENCH_FOUND",
        "load_for_bench",
    ] {
        assert!(!holds(absent), "{absent} is in allowlistd");
    }
}

#[test]
fn a_token_file_other_users_can_read_is_refused_as_ssh_refuses_a_key() {
    let dir = TempDir::new().expect("dir");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = token.to_string_lossy().into_owned();
    let err = refused(&["--iface", SERVER_IF, "--token-file", &path]);
    assert!(
        err.contains("can be read or written by other users (mode 0644)"),
        "{err}"
    );
    assert!(err.contains(&format!("chmod 600 {path}")), "{err}");
}

#[test]
fn a_stalled_client_does_not_keep_the_daemon_from_stopping() {
    use std::io::Write as _;
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let mut daemon = Daemon::start(&link, state.path(), &[]).expect("allowlistd");
    // Half a request, never finished, and an idle connection.
    let mut stalled = daemon.connect().expect("connect");
    stalled
        .write_all(b"GET /v1/enforcement HTTP/1.1\r\nHost: x\r\n")
        .expect("half a header");
    let _idle = daemon.connect().expect("connect");
    let took = daemon
        .stop_within(std::time::Duration::from_secs(15))
        .expect("a prompt exit");
    assert!(
        took < std::time::Duration::from_secs(10),
        "stopped after {took:?}"
    );
}
