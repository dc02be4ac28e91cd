//! The real binary against an independent WebSocket implementation: the
//! Python `websockets` server in `tests/py/ws_server.py`, over ws:// and
//! wss:// (certificates from rcgen), with subprotocols and a token check.

mod pysupport;
mod support;

use pysupport::{start_tls_server, PyServer, TlsMaterial, WRONG_NAME};
use support::{probe, run, Record, Run, TempDir};

/// A successful record of `interpretation`: SPEC "The record".
fn assert_success(run: &Run, interpretation: &str) -> Record {
    let rec = run.record();
    assert_eq!(run.code, 0, "exit code of a successful probe: {run:#?}");
    assert_eq!(rec.reason, None, "reason: {rec:#?}");
    assert_eq!(rec.probe, "probe", "the ad-hoc probe's name: {rec:#?}");
    assert_eq!(rec.interpretation, interpretation, "{rec:#?}");
    assert_eq!(rec.meta.http_status, Some(101), "{rec:#?}");
    let value = rec
        .value
        .unwrap_or_else(|| panic!("value must be a number: {rec:#?}"));
    if interpretation == "connection_success" {
        assert_eq!(value, 1.0, "{rec:#?}");
        assert_eq!(rec.health, "healthy", "{rec:#?}");
    } else {
        assert!(value > 0.0, "a latency is positive: {rec:#?}");
        // Seed thresholds: healthy under 200 ms, unhealthy over 1000 ms.
        let health = if value < 200.0 {
            "healthy"
        } else if value > 1000.0 {
            "unhealthy"
        } else {
            "degraded"
        };
        assert_eq!(rec.health, health, "{rec:#?}");
    }
    rec
}

/// A failed open: SPEC "Reason codes", `ws_open_failed`.
fn assert_open_failed(run: &Run) -> Record {
    let rec = run.record();
    assert_eq!(
        rec.reason.as_deref(),
        Some("ws_open_failed"),
        "{rec:#?}\nstderr: {}",
        run.stderr
    );
    assert_eq!(rec.value, None, "handshake_latency has no data: {rec:#?}");
    assert_eq!(rec.health, "unknown", "{rec:#?}");
    assert_eq!(run.code, 1, "a record with a reason exits 1: {rec:#?}");
    rec
}

fn ms(rec: &Record, key: &str) -> f64 {
    rec.timings()
        .get(key)
        .unwrap_or_else(|| panic!("meta.timings.{key} must be a number: {rec:#?}"))
}

/// `meta.error` of a record, lower-cased ("" when absent).
fn meta_error(rec: &Record) -> String {
    rec.meta.error.as_deref().unwrap_or_default().to_lowercase()
}

#[test]
fn ws_handshake_latency() {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let url = server.ws_url("/socket");
    let run = probe(&[&url, "--interpretation", "handshake_latency"]);
    let rec = assert_success(&run, "handshake_latency");
    assert_eq!(rec.url, url, "{rec:#?}");
    assert_eq!(
        rec.meta.remote_addr,
        Some(format!("127.0.0.1:{}", server.port)),
        "{rec:#?}"
    );
    let open = ms(&rec, "open_ms");
    assert!(
        (rec.value.unwrap() - open).abs() < 0.002,
        "handshake value is the open time: {rec:#?}"
    );
    // On the raw record: these keys must be absent, not null.
    let raw = run.raw_record();
    assert!(
        raw["meta"]["timings"].get("rtt_ms").is_none(),
        "only phases that ran appear: {raw}"
    );
    assert!(
        raw["meta"].get("tls_verified").is_none() && raw["meta"].get("tls_version").is_none(),
        "no TLS keys on ws://: {raw}"
    );
    assert_eq!(
        rec.meta.close_clean,
        Some(true),
        "the server answered our Close: {rec:#?}"
    );
}

#[test]
fn ws_round_trip_latency_text_echo() {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let run = probe(&[
        &server.ws_url("/"),
        "--interpretation",
        "round_trip_latency",
        "--send",
        "{\"op\":\"ping\",\"n\":1}",
        "--expect",
        "\"op\":\"ping\"",
        "--timeout-ms",
        "5000",
    ]);
    let rec = assert_success(&run, "round_trip_latency");
    let rtt = ms(&rec, "rtt_ms");
    assert!(
        (rec.value.unwrap() - rtt).abs() < 0.002,
        "round_trip_scope message: value is rtt_ms: {rec:#?}"
    );
    assert!(ms(&rec, "open_ms") > 0.0, "{rec:#?}");
    assert_eq!(rec.meta.skipped_messages, Some(0), "{rec:#?}");
    assert_eq!(rec.meta.close_clean, Some(true), "{rec:#?}");
}

#[test]
fn ws_round_trip_reply_mismatch() {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let run = probe(&[
        &server.ws_url("/"),
        "--interpretation",
        "round_trip_latency",
        "--send",
        "hello",
        "--expect",
        "goodbye",
        "--timeout-ms",
        "500",
    ]);
    let rec = run.record();
    assert_eq!(rec.reason.as_deref(), Some("ws_reply_mismatch"), "{rec:#?}");
    assert_eq!(rec.value, None, "{rec:#?}");
    assert_eq!(rec.meta.last_reply.as_deref(), Some("hello"), "{rec:#?}");
    assert!(rec.meta.skipped_messages >= Some(1), "{rec:#?}");
    assert_eq!(run.code, 1, "{run:#?}");
}

#[test]
fn ws_connection_success() {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let run = probe(&[
        &server.ws_url("/"),
        "--interpretation",
        "connection_success",
    ]);
    assert_success(&run, "connection_success");
}

#[test]
fn wss_with_test_ca_is_verified() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.good, &[]) else {
        return;
    };
    let ca = tls.ca_pem.to_str().unwrap();
    for interpretation in ["handshake_latency", "connection_success"] {
        let run = probe(&[
            &server.wss_url("/"),
            "--ca-file",
            ca,
            "--interpretation",
            interpretation,
        ]);
        let rec = assert_success(&run, interpretation);
        assert_eq!(rec.meta.tls_verified, Some(true), "{rec:#?}");
        assert_eq!(rec.meta.tls_version.as_deref(), Some("TLSv1.3"), "{rec:#?}");
        assert!(ms(&rec, "tls_ms") > 0.0, "{rec:#?}");
    }
    // Round trip over TLS, binary-safe text echo.
    let run = probe(&[
        &server.wss_url("/"),
        "--ca-file",
        ca,
        "--interpretation",
        "round_trip_latency",
        "--send",
        "over-tls",
        "--expect",
        "over-tls",
    ]);
    let rec = assert_success(&run, "round_trip_latency");
    assert_eq!(rec.meta.tls_verified, Some(true), "{rec:#?}");
}

#[test]
fn wss_insecure_is_reported_unverified() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.good, &[]) else {
        return;
    };
    let run = probe(&[&server.wss_url("/"), "--insecure"]);
    let rec = assert_success(&run, "handshake_latency");
    assert_eq!(rec.meta.tls_verified, Some(false), "{rec:#?}");
    assert!(rec.meta.tls_version.is_some(), "{rec:#?}");
}

#[test]
fn wss_server_name_override() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.wrong_name, &[]) else {
        return;
    };
    let run = probe(&[
        &server.wss_url("/"),
        "--ca-file",
        tls.ca_pem.to_str().unwrap(),
        "--server-name",
        WRONG_NAME,
    ]);
    let rec = assert_success(&run, "handshake_latency");
    assert_eq!(rec.meta.tls_verified, Some(true), "{rec:#?}");
}

#[test]
fn wss_unknown_ca_fails_naming_the_issuer() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.good, &[]) else {
        return;
    };
    // No --ca-file: the built-in webpki roots do not know the test CA.
    let run = probe(&[&server.wss_url("/")]);
    let rec = assert_open_failed(&run);
    let error = meta_error(&rec);
    assert!(
        error.contains("issuer") || error.contains("unknown"),
        "meta.error should say the issuer is unknown: {rec:#?}"
    );
}

#[test]
fn wss_wrong_name_fails_naming_the_name() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.wrong_name, &[]) else {
        return;
    };
    let run = probe(&[
        &server.wss_url("/"),
        "--ca-file",
        tls.ca_pem.to_str().unwrap(),
    ]);
    let rec = assert_open_failed(&run);
    let error = meta_error(&rec);
    assert!(
        error.contains("name") && !error.contains("expired") && !error.contains("issuer"),
        "meta.error should say the name does not match: {rec:#?}"
    );
}

#[test]
fn wss_expired_certificate_fails_saying_expired() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.expired, &[]) else {
        return;
    };
    let run = probe(&[
        &server.wss_url("/"),
        "--ca-file",
        tls.ca_pem.to_str().unwrap(),
    ]);
    let rec = assert_open_failed(&run);
    assert!(
        meta_error(&rec).contains("expired"),
        "meta.error should say the certificate expired: {rec:#?}"
    );
}

#[test]
fn subprotocol_offered_and_selected() {
    let Some(server) = PyServer::start(&["--subprotocol", "chat.v2"]) else {
        return;
    };
    let url = server.ws_url("/");
    let run = probe(&[&url, "--protocol", "other", "--protocol", "chat.v2"]);
    let rec = assert_success(&run, "handshake_latency");
    assert_eq!(rec.meta.subprotocol.as_deref(), Some("chat.v2"), "{rec:#?}");

    // Offering nothing: this server refuses the upgrade with 400.
    let run = probe(&[&url]);
    let rec = assert_open_failed(&run);
    assert_eq!(rec.meta.http_status, Some(400), "{rec:#?}");
    // On the raw record: the key must be absent, not null.
    let raw = run.raw_record();
    assert!(raw["meta"].get("subprotocol").is_none(), "{raw}");
}

#[test]
fn auth_required_401_then_bearer_token_succeeds() {
    let Some(server) = PyServer::start(&["--require-auth", "tok-3rdparty"]) else {
        return;
    };
    let url = server.ws_url("/private");
    let run = probe(&[&url]);
    let rec = assert_open_failed(&run);
    assert_eq!(rec.meta.http_status, Some(401), "{rec:#?}");

    let run = probe(&[
        &url,
        "--header",
        "Authorization: Bearer tok-3rdparty",
        "--interpretation",
        "round_trip_latency",
        "--send",
        "authed",
    ]);
    assert_success(&run, "round_trip_latency");
}

#[test]
fn once_runs_two_configured_probes() {
    let Some(plain) = PyServer::start(&[]) else {
        return;
    };
    let tls = TlsMaterial::generate();
    let Some(secure) = start_tls_server(&tls.good, &[]) else {
        return;
    };
    let dir = TempDir::new("wsprobe-once");
    let config = serde_json::json!({
        "labels": { "site": "test-bench" },
        "defaults": { "timeout_ms": 5000 },
        "probes": [
            {
                "name": "py-rtt",
                "url": plain.ws_url("/rtt"),
                "interpretation": "round_trip_latency",
                "send_message": "{\"op\":\"ping\"}",
                "expect_message": "\"op\":\"ping\"",
                "labels": { "tier": "plain" }
            },
            {
                "name": "py-open-tls",
                "url": secure.wss_url("/open"),
                "tls": { "ca_file": tls.ca_pem.to_str().unwrap() }
            }
        ]
    });
    let path = dir.write("config.json", &config.to_string());
    let run = run(&["once", "-c", path.to_str().unwrap()]);
    assert_eq!(run.records().len(), 2, "{run:#?}");
    assert_eq!(run.code, 0, "{run:#?}");

    let label = |rec: &Record, name: &str| rec.labels.get(name).cloned();
    let rtt = run.by_probe("py-rtt");
    assert_eq!(rtt.reason, None, "{rtt:#?}");
    assert_eq!(rtt.interpretation, "round_trip_latency", "{rtt:#?}");
    assert!(rtt.value > Some(0.0), "{rtt:#?}");
    assert_eq!(
        label(&rtt, "site").as_deref(),
        Some("test-bench"),
        "{rtt:#?}"
    );
    assert_eq!(label(&rtt, "tier").as_deref(), Some("plain"), "{rtt:#?}");

    let open = run.by_probe("py-open-tls");
    assert_eq!(open.reason, None, "{open:#?}");
    assert_eq!(open.interpretation, "handshake_latency", "{open:#?}");
    assert!(open.value > Some(0.0), "{open:#?}");
    assert_eq!(open.meta.tls_verified, Some(true), "{open:#?}");
    assert_eq!(
        label(&open, "site").as_deref(),
        Some("test-bench"),
        "{open:#?}"
    );
}
