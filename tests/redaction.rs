//! SPEC "The record": secrets never reach a record or a log line. Tokens in
//! header values, in secret-named query parameters, in URL userinfo and in
//! a proxy's userinfo (docs/proxy.md) must not appear on stdout or stderr,
//! for `probe`, `once` and `check`, on success and on failure; URLs are
//! written with `REDACTED@` and `name=REDACTED`.

mod pysupport;
mod support;

use serde_json::json;

use pysupport::PyServer;
use support::{free_port, probe, run, run_command, wsprobe, Record, Run, TempDir};

/// Every distinct secret used below; none may ever be printed.
const HEADER_TOKEN: &str = "hdrTok-7Qz1xK";
const WRONG_HEADER_TOKEN: &str = "hdrWrong-4Lm9pV";
const QUERY_TOKEN: &str = "qTok-2Hs8dN";
const QUERY_ACCESS_KEY: &str = "qKey-6Rt3wB";
const USER_NAME: &str = "uName-1Pc5yE";
const USER_SECRET: &str = "uPass-9Jf2gA";
const ENV_TOKEN: &str = "envTok-3Vb7nM";
const PROXY_USER: &str = "pxUser-8Wq4cZ";
const PROXY_SECRET: &str = "pxPass-5Tn2hR";
const SECRETS: &[&str] = &[
    PROXY_USER,
    PROXY_SECRET,
    HEADER_TOKEN,
    WRONG_HEADER_TOKEN,
    QUERY_TOKEN,
    QUERY_ACCESS_KEY,
    USER_NAME,
    USER_SECRET,
    ENV_TOKEN,
];

fn assert_no_secret(run: &Run) {
    assert!(
        !(run.stdout.is_empty() && run.stderr.is_empty()),
        "the run printed nothing to check: {run:#?}"
    );
    for secret in SECRETS {
        assert!(
            !run.stdout.contains(secret),
            "secret {secret:?} on stdout:\n{}",
            run.stdout
        );
        assert!(
            !run.stderr.contains(secret),
            "secret {secret:?} on stderr:\n{}",
            run.stderr
        );
    }
}

fn secret_query() -> String {
    format!("?token={QUERY_TOKEN}&room=lobby&access_key={QUERY_ACCESS_KEY}")
}

/// The redacted form of a URL built with `secret_query()`.
fn assert_query_redacted(rec: &Record) {
    let url = &rec.url;
    assert!(url.contains("token=REDACTED"), "url: {url}");
    assert!(url.contains("access_key=REDACTED"), "url: {url}");
    assert!(
        url.contains("room=lobby"),
        "a harmless parameter stays: {url}"
    );
}

fn assert_userinfo_redacted(rec: &Record, port: u16) {
    let url = &rec.url;
    assert!(
        url.starts_with(&format!("ws://REDACTED@127.0.0.1:{port}/")),
        "url: {url}"
    );
}

#[test]
fn probe_success_redacts_header_and_query() {
    let Some(server) = PyServer::start(&["--require-auth", HEADER_TOKEN]) else {
        return;
    };
    let url = server.ws_url(&format!("/feed{}", secret_query()));
    let header = format!("Authorization: Bearer {HEADER_TOKEN}");
    let run = probe(&[&url, "--header", &header]);
    let rec = run.record();
    assert_eq!(rec.reason, None, "the token was sent: {rec:#?}");
    assert_eq!(run.code, 0);
    assert_query_redacted(&rec);
    assert_no_secret(&run);
}

#[test]
fn probe_success_redacts_userinfo() {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let url = format!(
        "ws://{USER_NAME}:{USER_SECRET}@127.0.0.1:{}/{}",
        server.port,
        secret_query()
    );
    let run = probe(&[&url, "--human"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_no_secret(&run);

    let run = probe(&[&url]);
    let rec = run.record();
    assert_eq!(rec.reason, None, "{rec:#?}");
    assert_userinfo_redacted(&rec, server.port);
    assert_query_redacted(&rec);
    assert_no_secret(&run);
}

#[test]
fn probe_401_redacts_everything() {
    let Some(server) = PyServer::start(&["--require-auth", HEADER_TOKEN]) else {
        return;
    };
    let url = format!(
        "ws://{USER_NAME}:{USER_SECRET}@127.0.0.1:{}/feed{}",
        server.port,
        secret_query()
    );
    let header = format!("Authorization: Bearer {WRONG_HEADER_TOKEN}");
    let run = probe(&[&url, "--header", &header]);
    let rec = run.record();
    assert_eq!(rec.reason.as_deref(), Some("ws_open_failed"), "{rec:#?}");
    assert_eq!(rec.meta.http_status, Some(401), "{rec:#?}");
    assert_eq!(run.code, 1);
    assert_userinfo_redacted(&rec, server.port);
    assert_query_redacted(&rec);
    assert_no_secret(&run);

    let run = probe(&[&url, "--header", &header, "--human"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_no_secret(&run);
}

#[test]
fn probe_refused_redacts_everything() {
    let port = free_port();
    let url = format!(
        "ws://{USER_NAME}:{USER_SECRET}@127.0.0.1:{port}/x{}",
        secret_query()
    );
    let header = format!("X-Api-Token: {HEADER_TOKEN}");
    let cookie = format!("Cookie: session={WRONG_HEADER_TOKEN}");
    let run = probe(&[&url, "--header", &header, "--header", &cookie]);
    let rec = run.record();
    assert_eq!(rec.reason.as_deref(), Some("ws_open_failed"), "{rec:#?}");
    assert_eq!(run.code, 1);
    assert_userinfo_redacted(&rec, port);
    assert_query_redacted(&rec);
    assert_no_secret(&run);

    let run = probe(&[&url, "--header", &header, "--header", &cookie, "--human"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_no_secret(&run);
}

#[test]
fn once_redacts_success_and_failure() {
    let Some(server) = PyServer::start(&["--require-auth", ENV_TOKEN]) else {
        return;
    };
    let dir = TempDir::new("wsprobe-redact");
    let port = free_port();
    let config = json!({
        "probes": [
            {
                "name": "ok-env-token",
                "url": format!("ws://127.0.0.1:{}/a{}", server.port, secret_query()),
                "headers": { "Authorization": "Bearer ${WSPROBE_TEST_SECRET_TOKEN}" }
            },
            {
                "name": "denied",
                "url": format!(
                    "ws://{USER_NAME}:{USER_SECRET}@127.0.0.1:{}/b{}",
                    server.port,
                    secret_query()
                ),
                "headers": { "Authorization": format!("Bearer {WRONG_HEADER_TOKEN}") }
            },
            {
                "name": "refused",
                "url": format!("ws://{USER_NAME}:{USER_SECRET}@127.0.0.1:{port}/c{}", secret_query()),
                "headers": { "X-Auth-Key": HEADER_TOKEN }
            }
        ]
    });
    let path = dir.write("config.json", &config.to_string());
    let mut cmd = wsprobe();
    cmd.args(["once", "-c", path.to_str().unwrap()])
        .env("WSPROBE_TEST_SECRET_TOKEN", ENV_TOKEN);
    let run = run_command(cmd);
    assert_eq!(run.records().len(), 3, "{run:#?}");
    assert_eq!(run.code, 1, "two records have a reason: {run:#?}");

    let ok = run.by_probe("ok-env-token");
    assert_eq!(ok.reason, None, "the env token was sent: {ok:#?}");
    assert_query_redacted(&ok);

    let denied = run.by_probe("denied");
    assert_eq!(
        denied.reason.as_deref(),
        Some("ws_open_failed"),
        "{denied:#?}"
    );
    assert_eq!(denied.meta.http_status, Some(401), "{denied:#?}");
    assert_userinfo_redacted(&denied, server.port);
    assert_query_redacted(&denied);

    let refused = run.by_probe("refused");
    assert_eq!(
        refused.reason.as_deref(),
        Some("ws_open_failed"),
        "{refused:#?}"
    );
    assert_userinfo_redacted(&refused, port);
    assert_query_redacted(&refused);

    assert_no_secret(&run);
}

#[test]
fn config_errors_redact_urls_and_header_values() {
    let dir = TempDir::new("wsprobe-redact-check");
    let config = json!({
        "probes": [
            {
                // Wrong scheme: the error names the url.
                "name": "bad-scheme",
                "url": format!("http://{USER_NAME}:{USER_SECRET}@127.0.0.1:1/{}", secret_query())
            },
            {
                // A fragment is refused.
                "name": "bad-fragment",
                "url": format!("ws://127.0.0.1:1/{}#frag", secret_query())
            },
            {
                // A CR in a header value is refused; the value is not printed.
                "name": "bad-header",
                "url": "ws://127.0.0.1:1/",
                "headers": { "Authorization": format!("Bearer {HEADER_TOKEN}\r\nX-Injected: 1") }
            },
            {
                // A handshake header is refused with a hint.
                "name": "own-header",
                "url": "ws://127.0.0.1:1/",
                "headers": { "Sec-WebSocket-Key": WRONG_HEADER_TOKEN }
            }
        ]
    });
    let path = dir.write("config.json", &config.to_string());
    for command in ["check", "once"] {
        let run = run(&[command, "-c", path.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{command}: invalid config: {run:#?}");
        assert!(run.records().is_empty(), "{command}: nothing ran: {run:#?}");
        for name in ["bad-scheme", "bad-fragment", "bad-header", "own-header"] {
            assert!(
                run.stderr.contains(name),
                "{command}: every problem is listed, {name} missing:\n{}",
                run.stderr
            );
        }
        assert_no_secret(&run);
    }
}

#[test]
fn a_malformed_url_or_header_flag_is_refused_without_quoting_it() {
    // An unencoded '/' in a password makes the rest of it look like a port;
    // a header flag without its colon is all value.
    for args in [
        vec!["probe", "ws://bob:abc/SEKRIT@127.0.0.1:1/"],
        vec![
            "probe",
            "ws://127.0.0.1:1/",
            "--header",
            "Authorization Bearer SEKRIT",
        ],
        // A proxy URL given without --proxy is a second URL.
        vec![
            "probe",
            "ws://127.0.0.1:1/",
            "http://abc:SEKRIT@127.0.0.1:3128",
        ],
    ] {
        let run = support::run(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        for secret in ["SEKRIT", "abc"] {
            assert!(!run.stderr.contains(secret), "{args:?}: {}", run.stderr);
        }
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn a_wss_url_from_a_variable_is_never_probed_in_plain_text() {
    use std::io::Read;
    use support::{spawn_server, Event};

    // A plain TCP server on the port: whatever arrives first is reported.
    // A TLS client's first bytes are a handshake record (0x16), never the
    // upgrade request with its Authorization header.
    let server = spawn_server(|mut stream, tx| {
        let mut first = vec![0u8; 4096];
        let n = stream.read(&mut first).unwrap_or(0);
        first.truncate(n);
        let _ = tx.send(Event::Binary(first));
    });
    let url = format!("wss://127.0.0.1:{}/", server.port);
    let secret = "Bearer plain-text-would-leak-this";
    let mut cmd = wsprobe();
    cmd.env("WSPROBE_TEST_WSS_URL", &url).args([
        "probe",
        "${WSPROBE_TEST_WSS_URL}",
        "--header",
        &format!("Authorization: {secret}"),
        "--timeout-ms",
        "2000",
    ]);
    let run = run_command(cmd);
    let first = server.wait_for("the client's first bytes", |event| match event {
        Event::Binary(bytes) => Some(bytes.clone()),
        _ => None,
    });
    assert_eq!(first.first(), Some(&0x16), "not a TLS record: {first:?}");
    assert!(!String::from_utf8_lossy(&first).contains("plain-text-would-leak"));
    let record = run.record();
    assert_eq!(
        record.reason.as_deref(),
        Some("ws_open_failed"),
        "{record:#?}"
    );
    assert_eq!(record.meta.phase.as_deref(), Some("tls"), "{record:#?}");
}

/// A CONNECT proxy in a thread: every request is tunnelled to the target
/// it names, whatever its credentials. Returns its port.
fn tunnelling_proxy() -> u16 {
    use std::io::{copy, Write};
    use std::net::{TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut client = client;
                let Some(head) = support::read_request_head(&mut client) else {
                    return;
                };
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut up_from, mut up_to) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || copy(&mut up_from, &mut up_to));
                let (mut down_from, mut down_to) = (server, client);
                let _ = copy(&mut down_from, &mut down_to);
            });
        }
    });
    port
}

fn proxy_url(port: u16) -> String {
    format!("http://{PROXY_USER}:{PROXY_SECRET}@127.0.0.1:{port}")
}

fn assert_proxy_redacted(rec: &Record, port: u16) {
    assert_eq!(
        rec.meta.proxy.as_deref(),
        Some(&*format!("http://REDACTED@127.0.0.1:{port}")),
        "{rec:#?}"
    );
}

#[test]
fn probe_through_a_proxy_redacts_its_credentials() {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let target = server.ws_url(&format!("/{}", secret_query()));
    let proxy = tunnelling_proxy();
    let run = probe(&[&target, "--proxy", &proxy_url(proxy)]);
    let rec = run.record();
    assert_eq!(rec.reason, None, "{rec:#?}");
    assert_proxy_redacted(&rec, proxy);
    assert_no_secret(&run);
    let run = probe(&[&target, "--proxy", &proxy_url(proxy), "--human"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("REDACTED@"), "{}", run.stdout);
    assert_no_secret(&run);

    // Refused by the proxy (502 from the fake: nothing listens there),
    // and a proxy that is not there at all.
    let down = format!("ws://127.0.0.1:{}/", free_port());
    let absent = free_port();
    for (url, port) in [(&down, proxy), (&target, absent)] {
        let run = probe(&[url, "--proxy", &proxy_url(port)]);
        let rec = run.record();
        assert_eq!(rec.reason.as_deref(), Some("ws_open_failed"), "{rec:#?}");
        assert_proxy_redacted(&rec, port);
        assert_no_secret(&run);
        let run = probe(&[url, "--proxy", &proxy_url(port), "--human"]);
        assert_eq!(run.code, 1, "{run:#?}");
        assert_no_secret(&run);
    }
}

#[test]
fn once_and_check_redact_proxy_credentials_in_records_and_errors() {
    let dir = TempDir::new("wsprobe-redact-proxy");
    let absent = free_port();
    let good = json!({
        "defaults": { "proxy": proxy_url(absent) },
        "probes": [{ "name": "via-proxy", "url": "wss://stream.example/" }]
    });
    let path = dir.write("good.json", &good.to_string());
    let run = run(&["once", "-c", path.to_str().unwrap()]);
    assert_proxy_redacted(&run.by_probe("via-proxy"), absent);
    assert_no_secret(&run);

    let secret = format!("{PROXY_USER}:{PROXY_SECRET}@");
    let bad = json!({
        "probes": [
            { "name": "socks", "url": "ws://h.example/", "proxy": format!("socks5://{secret}h:1080") },
            { "name": "port", "url": "ws://h.example/", "proxy": format!("http://{secret}h:99999") },
            { "name": "path", "url": "ws://h.example/", "proxy": format!("http://{secret}h/{PROXY_SECRET}") },
            { "name": "env", "url": "wss://h.example/", "proxy": "env" }
        ]
    });
    let path = dir.write("bad.json", &bad.to_string());
    for command in ["check", "once"] {
        let mut cmd = wsprobe();
        cmd.args([command, "-c", path.to_str().unwrap()])
            .env("https_proxy", format!("https://{secret}proxy.example"));
        let run = run_command(cmd);
        assert_eq!(run.code, 2, "{command}: {run:#?}");
        for name in ["socks", "port", "path", "env"] {
            assert!(
                run.stderr.contains(&format!("probe \"{name}\": proxy:")),
                "{command}: {name} missing:\n{}",
                run.stderr
            );
        }
        assert_no_secret(&run);
    }
}
