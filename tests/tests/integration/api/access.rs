//! Who may call the API and what it accepts: the token, the OpenAPI document every
//! response is checked against, the body limit.

use super::*;

#[test]
fn every_endpoint_but_healthz_needs_the_token() {
    let s = setup(&[]);
    let healthz = s
        .daemon
        .request("GET", "/healthz", None, &[])
        .expect("healthz");
    assert_eq!(healthz.status, 200);
    let routes = [
        ("GET", "/v1/allowlists"),
        ("POST", "/v1/allowlists"),
        ("GET", "/v1/allowlists/x"),
        ("PUT", "/v1/allowlists/x"),
        ("DELETE", "/v1/allowlists/x"),
        ("POST", "/v1/allowlists/x/entries"),
        ("DELETE", "/v1/allowlists/x/entries/y"),
        ("GET", "/v1/enforcement"),
        ("POST", "/v1/enforcement/enable"),
        ("POST", "/v1/enforcement/disable"),
        ("POST", "/v1/enforcement/acknowledge"),
        ("PUT", "/v1/enforcement/scopes"),
        ("GET", "/v1/evaluate?ip=192.0.2.1"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/top"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/apply"),
        ("GET", "/v1/fleet"),
        ("POST", "/v1/fleet/detach"),
        ("POST", "/v1/fleet/attach"),
    ];
    let wrong = format!("Bearer {}x", s.daemon.token);
    for (method, path) in routes {
        for headers in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", "Basic abc")],
        ] {
            let response = s
                .daemon
                .request(method, path, Some(&json!({})), &headers)
                .expect("request");
            assert_error(&response, 401, "unauthorized");
        }
    }
    let token_file = s.daemon.state_dir.join("admin.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).expect("token").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let log = s.daemon.log();
    assert!(log.contains("admin.token"), "the path is logged: {log}");
    assert!(!log.contains(&s.daemon.token), "the token is never logged");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("audit") && line.contains("refused"))
        .collect();
    // Anyone may send these: the first of a peer's minute is on record whole, the others
    // are counted in a summary once the minute is over (unit tests of the trail).
    assert_eq!(refusals.len(), 1, "the first refusal is on record: {log}");
    assert!(
        refusals
            .iter()
            .all(|line| line.contains("peer=127.0.0.1:") && line.contains("status=401")),
        "with the peer and the status: {refusals:?}"
    );
}

#[test]
fn the_openapi_document_describes_every_route() {
    let s = setup(&[]);
    let doc = s.daemon.call("GET", "/v1/openapi.json", None);
    assert_eq!(doc.status, 200);
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/allowlists", "get"),
        ("/v1/allowlists", "post"),
        ("/v1/allowlists/{id}", "get"),
        ("/v1/allowlists/{id}", "put"),
        ("/v1/allowlists/{id}", "delete"),
        ("/v1/allowlists/{id}/entries", "post"),
        ("/v1/allowlists/{id}/entries", "get"),
        ("/v1/allowlists/{id}/entries/{entry_id}", "delete"),
        ("/v1/enforcement", "get"),
        ("/v1/enforcement/enable", "post"),
        ("/v1/top", "get"),
        ("/v1/enforcement/disable", "post"),
        ("/v1/enforcement/acknowledge", "post"),
        ("/v1/enforcement/scopes", "put"),
        ("/v1/evaluate", "get"),
        ("/v1/stats", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/apply", "post"),
        ("/v1/fleet", "get"),
        ("/v1/fleet/detach", "post"),
        ("/v1/fleet/attach", "post"),
    ] {
        assert!(
            doc.body["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
    }
}

#[test]
fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    use std::io::{Read as _, Write as _};
    let s = setup(&["--max-body-bytes", "65536"]);
    let d = &s.daemon;
    let mut stream = d.connect().expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!(
        "POST /v1/allowlists HTTP/1.1\r\nHost: {API_ADDR}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{",
        d.token
    );
    stream.write_all(request.as_bytes()).expect("headers");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    // Only the headers and one byte were sent: the answer must not wait for the rest.
    while !String::from_utf8_lossy(&raw).contains("payload_too_large") {
        let read = stream
            .read(&mut chunk)
            .expect("an answer within 5 s, without the body");
        if read == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
}
