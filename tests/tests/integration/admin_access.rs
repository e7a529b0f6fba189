//! Reaching the admin API: a unix socket private to the daemon's user that names its peers,
//! TLS for an address beyond loopback (plain HTTP there refused), the limits that keep slow
//! or many clients from holding it, and the lockout guard finding the operator's address
//! when `sudo` has stripped SSH_CONNECTION or the operator calls over the network.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use allowlist_tests::allowlistd_binary;
use allowlist_tests::crowd::{Behaviour, Crowd};
use allowlist_tests::daemon::{API_ADDR, Daemon, Response, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::scenario::{create, disable, enable};
use serde_json::json;

fn allowlistctl() -> PathBuf {
    allowlistd_binary()
        .expect("allowlistd binary")
        .with_file_name("allowlistctl")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Creates a list named `name` holding `cidr`.
fn create_list(daemon: &Daemon, name: &str, cidr: &str) {
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": name, "entries": [{"cidr": cidr}]})),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
}

#[test]
fn the_api_on_a_unix_socket_is_private_to_its_user_and_names_each_peer() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let socket = state.path().with_extension("sock");
    let listen = format!("unix:{}", socket.display());
    let mut daemon =
        Daemon::start_listening(&link, state.path(), &listen, &[]).expect("allowlistd");

    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "only the daemon's user may connect");
    let status = daemon.ctl(&["status"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        text(&status).contains("enforcing:     no"),
        "{}",
        text(&status)
    );

    let refused = daemon
        .request(
            "GET",
            "/v1/enforcement",
            None,
            &[("Authorization", "Bearer wrong")],
        )
        .expect("request");
    assert_eq!(refused.status, 401);
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|line| line.contains("refused") && line.contains("peer=uid 0 (pid ")),
        "the audit line names the peer's uid and pid: {log}"
    );
    let tcp =
        NetNs::enter_path(&link.server.path(), || TcpStream::connect(API_ADDR)).expect("enter");
    assert!(tcp.is_err(), "nothing listens on TCP");

    daemon.stop().expect("stop");
    assert!(!socket.exists(), "the socket goes with the daemon");
}

/// A CA and a certificate it signed for `ip`, with its key (mode 0600), in `dir`: returns
/// (ca, cert, key).
fn certificates(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    let [ca_key, ca, key, request, cert, extensions] = [
        "ca.key", "ca.pem", "api.key", "api.csr", "api.pem", "ext.cnf",
    ]
    .map(|f| dir.join(f));
    std::fs::write(&extensions, format!("subjectAltName=IP:{ip}\n")).expect("extensions");
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            text(&output)
        );
    };
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=allowlist test CA",
            ][..],
            &ec,
            &["-keyout", &path(&ca_key), "-out", &path(&ca)],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", &format!("/CN={ip}")][..],
            &ec,
            &["-keyout", &path(&key), "-out", &path(&request)],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &path(&request),
        "-CA",
        &path(&ca),
        "-CAkey",
        &path(&ca_key),
        "-CAcreateserial",
        "-extfile",
        &path(&extensions),
        "-out",
        &path(&cert),
    ]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (ca, cert, key)
}

#[test]
fn beyond_loopback_the_api_speaks_tls_and_guards_the_remote_operator() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let files = TempDir::new().expect("certificate dir");
    let listen = format!("{SERVER_V4}:9443");

    let (_, plain) =
        Daemon::refusal_listening(&link, state.path(), &listen, &[]).expect("plain HTTP");
    assert!(
        plain.contains("plain HTTP would show them the admin token")
            && plain.contains("--insecure-listen"),
        "{plain}"
    );

    let (ca, cert, key) = certificates(files.path(), &SERVER_V4.to_string());
    let [cert, key, ca] = [cert, key, ca].map(|p| p.to_string_lossy().into_owned());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (_, exposed) = Daemon::refusal_listening(
        &link,
        state.path(),
        &listen,
        &["--tls-cert", &cert, "--tls-key", &key],
    )
    .expect("exposed key");
    assert!(
        exposed.contains("can be read by other users or changed by its group (mode 0644)"),
        "{exposed}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let daemon = Daemon::start_listening(
        &link,
        state.path(),
        &listen,
        &["--tls-cert", &cert, "--tls-key", &key],
    )
    .expect("allowlistd with TLS");
    // allowlistctl in the client namespace, as an operator on another host, outside SSH.
    let remote_ctl = |args: &[&str]| -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", link.client.path()))
            .arg(allowlistctl())
            .args(["--url", &daemon.url(), "--cacert", &ca, "--token-file"])
            .arg(state.path().join("admin.token"))
            .args(args)
            .env_remove("SSH_CONNECTION")
            .output()
            .expect("allowlistctl")
    };
    let status = remote_ctl(&["status"]);
    assert!(status.status.success(), "over TLS: {}", text(&status));
    let office = format!("{CLIENT_ALLOWED_V4}/32");
    for (name, cidr) in [("elsewhere", "192.0.2.0/24"), ("office", office.as_str())] {
        let created = remote_ctl(&["create", name, "--entry", cidr]);
        assert!(created.status.success(), "{}", text(&created));
    }

    let untrusted = Command::new("nsenter")
        .arg(format!("--net={}", link.client.path()))
        .arg(allowlistctl())
        .args(["--url", &daemon.url(), "--token-file"])
        .arg(state.path().join("admin.token"))
        .arg("status")
        .output()
        .expect("allowlistctl");
    assert!(
        !untrusted.status.success(),
        "a certificate the client does not trust is refused: {}",
        text(&untrusted)
    );

    // The operator's own connection is guarded: enabling a list without its address is
    // refused, naming it; with it, the answer says the guard kept it reachable.
    let locked = remote_ctl(&["enable", "elsewhere"]);
    assert!(
        !locked.status.success()
            && text(&locked).contains("would_lock_out")
            && text(&locked).contains(&CLIENT_ALLOWED_V4.to_string()),
        "{}",
        text(&locked)
    );
    let enabled = remote_ctl(&["enable", "office"]);
    assert!(
        text(&enabled).contains(&format!(
            "lockout guard: kept reachable {CLIENT_ALLOWED_V4} (api_peer)"
        )),
        "{}",
        text(&enabled)
    );
}

#[test]
fn under_sudo_allowlistctl_finds_the_ssh_client_in_the_shell_it_was_started_from() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &[]).expect("allowlistd");
    create_list(&daemon, "office", &format!("{CLIENT_ALLOWED_V4}/32"));
    // The login shell has SSH_CONNECTION; allowlistctl runs without it, as `sudo` runs it.
    let under_sudo = |ssh_client: &str| -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", link.server.path()))
            .args([
                "sh",
                "-c",
                r#""$@"; exit $?"#,
                "sh",
                "env",
                "-u",
                "SSH_CONNECTION",
            ])
            .arg(allowlistctl())
            .args(["--url", &daemon.url(), "--token-file"])
            .arg(state.path().join("admin.token"))
            .args(["enable", "office"])
            .env(
                "SSH_CONNECTION",
                format!("{ssh_client} 50022 {SERVER_V4} 22"),
            )
            .output()
            .expect("allowlistctl")
    };
    let locked = under_sudo("203.0.113.9");
    assert!(
        !locked.status.success()
            && text(&locked).contains("would_lock_out")
            && text(&locked).contains("203.0.113.9"),
        "{}",
        text(&locked)
    );
    let log = daemon.log();
    assert!(
        log.lines().any(|line| line.contains("refused")
            && line.contains("status=409")
            && line.contains("peer=127.0.0.1:")),
        "the refused enable is an audit line with the peer: {log}"
    );
    let enabled = under_sudo(&CLIENT_ALLOWED_V4.to_string());
    assert!(
        text(&enabled).contains(&format!(
            "lockout guard: kept reachable {CLIENT_ALLOWED_V4} (client_ip)"
        )),
        "{}",
        text(&enabled)
    );
}

/// Reads from `stream` until it is closed; returns what came and how long it took, or
/// fails after `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => got.extend_from_slice(&chunk[..read]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!(
                "still open after {:?} ({err}); got {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn idle_and_stalled_clients_are_closed_and_cannot_keep_the_operator_out() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(
        &link,
        state.path(),
        &["--header-timeout", "1s", "--max-connections", "4"],
    )
    .expect("allowlistd");
    // Three times the connection limit, idle, and one that sends half a header.
    let mut idle: Vec<TcpStream> = (0..12)
        .map(|_| daemon.connect().expect("connect"))
        .collect();
    let mut stalled = daemon.connect().expect("connect");
    stalled
        .write_all(b"GET /v1/enforcement HTTP/1.1\r\nHost: x\r\n")
        .expect("half a header");

    // Four at a time, each closed after the header timeout: all gone within a few seconds.
    let (_, took) = read_until_closed(&mut stalled, Duration::from_secs(10));
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    for connection in &mut idle {
        read_until_closed(connection, Duration::from_secs(5));
    }
    let answer = daemon.call("GET", "/v1/enforcement", None);
    assert_eq!(answer.status, 200, "the operator gets through");
    assert!(
        daemon.log().contains("every API connection is in use"),
        "{}",
        daemon.log()
    );
}

/// The slowest answers to `/healthz` and to an acknowledgement, asked over and over for
/// `period`: list `id` (disabled) enabled then disabled, each change acknowledged.
fn slowest_answers(daemon: &Daemon, id: &str, period: Duration) -> (Duration, Duration) {
    let timed = |method: &str, path: &str, status: u16| {
        let started = Instant::now();
        let answer = daemon.call(method, path, None);
        assert_eq!(answer.status, status, "{method} {path}: {:?}", answer.body);
        started.elapsed()
    };
    let (mut healthz, mut acknowledge) = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    // Enabled and disabled again in each round: the list ends as it began.
    while started.elapsed() < period {
        for switch in [enable as fn(&Daemon, &str) -> Response, disable] {
            healthz = healthz.max(timed("GET", "/healthz", 200));
            switch(daemon, id);
            acknowledge = acknowledge.max(timed("POST", "/v1/enforcement/acknowledge", 200));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    (healthz, acknowledge)
}

#[test]
fn an_operator_gets_through_crowds_of_stalled_and_idle_clients() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    // The default connection limit (256) and header timeout (10 s), a daemon of 1024 files.
    let daemon = Daemon::start_wrapped(
        &link,
        state.path(),
        &["prlimit", "--nofile=1024:1024", "--"],
        &["--ack-min", "0s"],
    )
    .expect("allowlistd");
    let id = create(&daemon, "office", &["198.18.0.2/32".to_owned()]);
    let address = API_ADDR.parse().expect("address");
    for (clients, behaviour) in [(500, Behaviour::SlowHeaders), (2000, Behaviour::Idle)] {
        let crowd = Crowd::start(&link.server.path(), address, clients, behaviour).expect("crowd");
        std::thread::sleep(Duration::from_secs(3));
        let (healthz, acknowledge) = slowest_answers(&daemon, &id, Duration::from_secs(60));
        let opened = crowd.connections();
        drop(crowd);
        eprintln!(
            "{clients} {behaviour:?} clients, {opened} connections: slowest /healthz \
             {healthz:?}, acknowledgement {acknowledge:?}"
        );
        assert!(
            healthz < Duration::from_secs(2) && acknowledge < Duration::from_secs(2),
            "{clients} {behaviour:?} clients: /healthz answered within {healthz:?}, an \
             acknowledgement within {acknowledge:?}"
        );
        assert!(
            opened > clients as u64,
            "the crowd was shed and came back: {opened} connections"
        );
    }
    assert!(daemon.log().contains("every API connection is in use"));
}

#[test]
fn allowlistctl_finds_the_packaged_socket_without_a_url() {
    let socket_dir = Path::new("/run/allowlistd");
    let made_dir = !socket_dir.exists();
    std::fs::create_dir_all(socket_dir).expect("socket directory");
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let started =
        Daemon::start_listening(&link, state.path(), "unix:/run/allowlistd/api.sock", &[]);
    let status = started.as_ref().map(|_| {
        Command::new(allowlistctl())
            .arg("--token-file")
            .arg(state.path().join("admin.token"))
            .arg("status")
            .env_remove("ALLOWLIST_URL")
            .output()
            .expect("allowlistctl")
    });
    let status = status.map_err(|err| format!("{err:#}"));
    drop(started);
    if made_dir {
        let _ = std::fs::remove_dir_all(socket_dir);
    }
    let status = status.expect("allowlistd on the packaged socket");
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("enforcing:"), "{}", text(&status));
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_408() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &["--request-timeout", "1s"]).expect("daemon");
    let mut stream = daemon.connect().expect("connect");
    let request = format!(
        "POST /v1/allowlists HTTP/1.1\r\nHost: {API_ADDR}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        daemon.token
    );
    stream.write_all(request.as_bytes()).expect("headers");
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    let lists = daemon.call("GET", "/v1/allowlists", None);
    assert_eq!(lists.body["allowlists"], json!([]), "nothing was created");
}
