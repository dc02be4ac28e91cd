//! The probe engine against small local servers, one scenario per test,
//! through the real binary (`wsprobe probe URL flags`). Each test checks the
//! record against the contract in SPEC.md (Measurement, Reason codes, The
//! record), not against what the implementation happens to do.

mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const RT: &str = "round_trip_latency";
const HS: &str = "handshake_latency";
const CS: &str = "connection_success";

fn close_enough(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.0015
}

/// The probe's Close after a measurement: code 1000 (SPEC.md, Measurement:
/// "a Close frame (1000)").
fn assert_closed_with_1000(server: &Server) -> Vec<Event> {
    let events = server.until_client_close();
    match events.last() {
        Some(Event::ClientClose { code, .. }) => assert_eq!(
            *code,
            Some(1000),
            "the probe must close with 1000; server saw {events:?}"
        ),
        other => panic!("no Close: {other:?}"),
    }
    events
}

// ---------------------------------------------------------------------------
// The three interpretations against a well-behaved echo server
// ---------------------------------------------------------------------------

#[test]
fn handshake_latency_against_echo() {
    let server = echo_server();
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--interpretation", HS, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, None);
    assert_eq!(run.code, 0, "exit code; stderr:\n{}", run.stderr);
    assert_eq!(r.probe, "probe");
    assert_eq!(r.url, url);
    assert_eq!(r.interpretation, HS);
    let value = r.value.expect("value present on success");
    assert!((0.0..2000.0).contains(&value), "value {value}");
    assert_eq!(r.health, "healthy", "loopback open is under 200 ms: {r:#?}");
    assert_eq!(r.meta.http_status, Some(101), "{r:#?}");
    assert_eq!(r.meta.remote_addr.as_deref(), Some(server.addr().as_str()));
    assert_eq!(
        r.meta.close_clean,
        Some(true),
        "server answered the Close: {r:#?}"
    );
    assert_eq!(r.meta.phase, None, "phase only on failures: {r:#?}");
    assert_eq!(r.meta.error, None, "{r:#?}");
    assert_eq!(r.meta.tls_version, None, "ws:// has no TLS: {r:#?}");
    assert_eq!(r.meta.tls_verified, None, "ws:// has no TLS: {r:#?}");
    let t = r.timings();
    assert!(t.connect_ms.is_some(), "connect ran: {r:#?}");
    assert!(t.upgrade_ms.is_some(), "upgrade ran: {r:#?}");
    assert!(t.total_ms.is_some(), "{r:#?}");
    assert!(t.tls_ms.is_none(), "no TLS phase on ws://: {r:#?}");
    assert!(
        t.rtt_ms.is_none(),
        "no round trip in handshake_latency: {r:#?}"
    );
    let open = t.open_ms.expect("open_ms present");
    assert!(
        close_enough(value, open),
        "value {value} is the open time {open}"
    );
    let events = assert_closed_with_1000(&server);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Text(_) | Event::Binary(_))),
        "handshake_latency sends no message: {events:?}"
    );
}

#[test]
fn round_trip_latency_against_echo() {
    let server = echo_server();
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "hello-wsprobe",
        "--expect",
        "lo-ws",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    assert_eq!(run.code, 0);
    assert_eq!(r.interpretation, RT);
    assert_eq!(r.health, "healthy", "{r:#?}");
    assert_eq!(server.text(), "hello-wsprobe", "send_message goes as text");
    let value = r.value.expect("value on success");
    let t = r.timings();
    let rtt = t.rtt_ms.expect("rtt_ms present");
    assert!(
        close_enough(value, rtt),
        "round_trip_scope message: value {value} == rtt_ms {rtt}"
    );
    assert!(t.open_ms.is_some(), "{r:#?}");
    assert_eq!(r.meta.skipped_messages, Some(0), "{r:#?}");
    assert_eq!(
        r.meta.last_reply, None,
        "last_reply is for mismatches: {r:#?}"
    );
    assert_eq!(r.meta.close_clean, Some(true), "{r:#?}");
    assert_closed_with_1000(&server);
}

#[test]
fn round_trip_without_expect_accepts_any_reply() {
    let server = echo_server();
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "x",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    assert!(r.value.is_some());
    assert_closed_with_1000(&server);
}

#[test]
fn connection_success_against_echo_is_one() {
    let server = echo_server();
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--interpretation", CS, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, None);
    assert_eq!(run.code, 0);
    assert_eq!(r.value, Some(1.0), "{r:#?}");
    assert_eq!(r.health, "healthy", "{r:#?}");
    let events = assert_closed_with_1000(&server);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Text(_))),
        "connection_success sends no message: {events:?}"
    );
}

// ---------------------------------------------------------------------------
// The socket never opens
// ---------------------------------------------------------------------------

#[test]
fn connection_refused_is_open_failed() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/socket");
    let (r, run) = probe_one(&[&url, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, Some("ws_open_failed"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None, "{r:#?}");
    assert_eq!(r.health, "unknown", "{r:#?}");
    assert!(
        r.meta.error.as_deref().is_some_and(|e| !e.is_empty()),
        "meta.error holds the raw detail: {r:#?}"
    );
    let t = r.timings();
    assert!(
        t.upgrade_ms.is_none() && t.open_ms.is_none() && t.rtt_ms.is_none() && t.tls_ms.is_none(),
        "only phases that ran appear in timings: {r:#?}"
    );
    let tried = format!("127.0.0.1:{port}");
    assert_eq!(
        r.meta.remote_addr.as_deref(),
        Some(tried.as_str()),
        "{r:#?}"
    );
}

#[test]
fn connection_success_refused_is_zero_not_null() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/socket");
    let (r, run) = probe_one(&[&url, "--interpretation", CS, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, Some("ws_open_failed"));
    assert_eq!(run.code, 1);
    assert_eq!(
        r.value,
        Some(0.0),
        "never null for connection_success: {r:#?}"
    );
    assert_eq!(r.health, "unhealthy", "{r:#?}");
}

#[test]
fn wrong_accept_key_is_open_failed() {
    let server = wrong_accept_server();
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, Some("ws_open_failed"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None);
    assert_eq!(r.health, "unknown");
    assert!(r.meta.error.is_some(), "{r:#?}");
    assert!(r.timings().open_ms.is_none(), "never opened: {r:#?}");
    server.request();
}

#[test]
fn connection_header_with_several_tokens_still_opens() {
    // `Connection: keep-alive, Upgrade` is valid (RFC 6455 section 4.1: the
    // header must contain the token); tungstenite's own client refuses it.
    let server = keep_alive_upgrade_server();
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "hi",
        "--expect",
        "hi",
    ]);
    assert_reason(&r, &run, None);
    assert_eq!(r.meta.http_status, Some(101));
    assert_closed_with_1000(&server);
}

fn assert_status_open_failed(status: &'static str, code: u16) {
    let server = http_status_server(status, String::new());
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, Some("ws_open_failed"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None);
    assert_eq!(r.meta.http_status, Some(code), "{r:#?}");
    assert!(r.meta.error.is_some(), "{r:#?}");
    assert!(r.timings().open_ms.is_none(), "{r:#?}");
}

#[test]
fn http_401_is_open_failed_with_status() {
    assert_status_open_failed("401 Unauthorized", 401);
}

#[test]
fn http_403_is_open_failed_with_status() {
    assert_status_open_failed("403 Forbidden", 403);
}

#[test]
fn connection_success_http_403_is_zero() {
    let server = http_status_server("403 Forbidden", String::new());
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--interpretation", CS, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, Some("ws_open_failed"));
    assert_eq!(r.value, Some(0.0), "{r:#?}");
    assert_eq!(r.health, "unhealthy");
    assert_eq!(r.meta.http_status, Some(403));
}

#[test]
fn redirect_is_reported_not_followed() {
    // The Location points at a second local listener: if the probe followed
    // it, that listener would hold a completed connection in its backlog.
    let target = TcpListener::bind("127.0.0.1:0").expect("bind");
    let location = format!(
        "http://127.0.0.1:{}/moved",
        target.local_addr().unwrap().port()
    );
    let server = http_status_server("302 Found", format!("Location: {location}\r\n"));
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, Some("ws_open_failed"));
    assert_eq!(r.meta.http_status, Some(302), "{r:#?}");
    assert_eq!(
        r.meta.location.as_deref(),
        Some(location.as_str()),
        "{r:#?}"
    );
    target.set_nonblocking(true).unwrap();
    match target.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the probe followed the redirect: {other:?}"),
    }
}

#[test]
fn unoffered_subprotocol_is_open_failed() {
    let server = wrong_protocol_server("other");
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--protocol", "chat", "--timeout-ms", "2000"]);
    assert_reason(&r, &run, Some("ws_open_failed"));
    assert_eq!(r.value, None);
    assert!(r.meta.error.is_some(), "{r:#?}");
}

// ---------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------

#[test]
fn silent_after_tcp_accept_is_handshake_timeout_in_upgrade() {
    let server = silent_after_tcp_server();
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--timeout-ms", "1000"]);
    assert_reason(&r, &run, Some("ws_handshake_timeout"));
    assert_eq!(run.code, 1);
    assert_eq!(r.meta.phase.as_deref(), Some("upgrade"), "{r:#?}");
    assert_eq!(r.value, None);
    assert_eq!(r.health, "unknown");
    let t = r.timings();
    assert!(t.connect_ms.is_some(), "connect ran: {r:#?}");
    assert!(t.open_ms.is_none() && t.rtt_ms.is_none(), "{r:#?}");
    assert!(
        run.elapsed >= Duration::from_millis(1000),
        "the probe gave up before timeout_ms: {:?}",
        run.elapsed
    );
    assert!(
        run.elapsed < Duration::from_millis(1500),
        "the probe overran timeout_ms: {:?}",
        run.elapsed
    );
}

#[test]
fn connection_success_silent_server_is_zero() {
    let server = silent_after_tcp_server();
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--interpretation", CS, "--timeout-ms", "1000"]);
    assert_reason(&r, &run, Some("ws_handshake_timeout"));
    assert_eq!(r.value, Some(0.0), "{r:#?}");
    assert_eq!(r.health, "unhealthy");
    assert_eq!(r.meta.phase.as_deref(), Some("upgrade"), "{r:#?}");
}

#[test]
fn trickled_101_cannot_stretch_the_deadline() {
    let server = trickle_101_server();
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--timeout-ms", "1000"]);
    assert!(
        run.elapsed < Duration::from_millis(1200),
        "a 1-byte-per-100-ms 101 stretched a 1000 ms probe to {:?}",
        run.elapsed
    );
    assert_reason(&r, &run, Some("ws_handshake_timeout"));
    assert_eq!(r.meta.phase.as_deref(), Some("upgrade"), "{r:#?}");
    assert_eq!(r.value, None);
}

#[test]
fn silent_after_upgrade_is_reply_timeout() {
    let server = silent_after_upgrade_server();
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--timeout-ms",
        "1000",
    ]);
    assert_reason(&r, &run, Some("ws_reply_timeout"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None);
    assert_eq!(r.health, "unknown");
    assert_eq!(r.meta.last_reply, None, "no reply arrived: {r:#?}");
    assert!(r.timings().open_ms.is_some(), "the open completed: {r:#?}");
    assert_eq!(server.text(), "ping");
    // The socket was open: it is closed cleanly even on this error path.
    assert_closed_with_1000(&server);
    assert_eq!(r.meta.close_clean, Some(true), "{r:#?}");
    assert!(
        run.elapsed >= Duration::from_millis(1000),
        "gave up early: {:?}",
        run.elapsed
    );
    // Deadline, plus at most 1000 ms of close wait (the server answers it
    // at once), plus process overhead.
    assert!(
        run.elapsed < Duration::from_millis(2200),
        "{:?}",
        run.elapsed
    );
}

// ---------------------------------------------------------------------------
// The server closes before the reply
// ---------------------------------------------------------------------------

#[test]
fn server_close_4001_is_closed_early() {
    let server = close_before_reply_server(Some((4001, "bye")));
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, Some("ws_closed_early"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None);
    assert_eq!(r.health, "unknown");
    assert_eq!(r.meta.close_code, Some(4001), "{r:#?}");
    assert_eq!(r.meta.close_reason.as_deref(), Some("bye"), "{r:#?}");
}

#[test]
fn server_close_without_code_is_1005() {
    let server = close_before_reply_server(None);
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, Some("ws_closed_early"));
    assert_eq!(r.meta.close_code, Some(1005), "{r:#?}");
}

#[test]
fn tcp_drop_without_close_is_1006() {
    let server = drop_before_reply_server();
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, Some("ws_closed_early"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None);
    assert_eq!(r.meta.close_code, Some(1006), "{r:#?}");
    assert!(
        run.elapsed < Duration::from_millis(1500),
        "the drop ends the run at once: {:?}",
        run.elapsed
    );
}

// ---------------------------------------------------------------------------
// Matching replies
// ---------------------------------------------------------------------------

#[test]
fn greeting_is_skipped_when_it_does_not_match() {
    let server = greeting_server("welcome to the server", Some("pong"));
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--expect",
        "pong",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    assert!(r.value.is_some());
    assert_eq!(
        r.meta.skipped_messages,
        Some(1),
        "the greeting is skipped: {r:#?}"
    );
    assert_closed_with_1000(&server);
}

#[test]
fn greeting_matches_a_blank_expect() {
    // The server never answers the probe's message: only the greeting can
    // satisfy the run.
    let server = greeting_server("welcome to the server", None);
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--expect",
        "",
        "--timeout-ms",
        "1000",
    ]);
    assert_reason(&r, &run, None);
    assert!(r.value.is_some());
    assert_eq!(r.meta.skipped_messages, Some(0), "{r:#?}");
}

#[test]
fn only_mismatching_replies_is_reply_mismatch() {
    let server = replies_server(vec!["nope-1".into(), "nope-2".into()]);
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--expect",
        "pong",
        "--timeout-ms",
        "1000",
    ]);
    assert_reason(&r, &run, Some("ws_reply_mismatch"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None);
    assert_eq!(r.health, "unknown");
    assert_eq!(r.meta.last_reply.as_deref(), Some("nope-2"), "{r:#?}");
    assert_eq!(r.meta.skipped_messages, Some(2), "{r:#?}");
    assert_closed_with_1000(&server);
}

#[test]
fn last_reply_is_cut_to_256_bytes() {
    let long = "x".repeat(1000);
    let server = replies_server(vec![long.clone()]);
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--expect",
        "pong",
        "--timeout-ms",
        "1000",
    ]);
    assert_reason(&r, &run, Some("ws_reply_mismatch"));
    let last = r.meta.last_reply.as_deref().expect("last_reply");
    assert!(
        !last.is_empty() && last.len() <= 256,
        "{} bytes",
        last.len()
    );
    assert!(long.starts_with(last), "a cut of the reply: {last:?}");
}

#[test]
fn binary_reply_is_matched_as_bytes() {
    let server = binary_reply_server(b"\x00\xff\x10pong\x01\x02");
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--expect",
        "pong",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    assert!(r.value.is_some());
    assert_eq!(r.meta.skipped_messages, Some(0), "{r:#?}");
    assert_closed_with_1000(&server);
}

#[test]
fn fragmented_reply_is_reassembled_before_matching() {
    // "pong" spans three frames.
    let server = fragmented_reply_server(&["po", "n", "g!"]);
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--expect",
        "pong!",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    assert!(r.value.is_some());
    assert_eq!(r.meta.skipped_messages, Some(0), "{r:#?}");
    assert_closed_with_1000(&server);
}

#[test]
fn server_ping_is_answered_with_pong() {
    // The server replies only after the Pong arrives.
    let server = ping_first_server(b"are-you-there", "pong");
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--expect",
        "pong",
        "--timeout-ms",
        "2000",
    ]);
    let pong = server.wait_for("a Pong", |e| match e {
        Event::Pong(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(pong, b"are-you-there", "the Pong echoes the Ping's payload");
    assert_reason(&r, &run, None);
    assert!(r.value.is_some());
    assert_closed_with_1000(&server);
}

#[test]
fn frame_announcing_2_pow_40_bytes_is_refused_at_once() {
    let pid = Arc::new(AtomicU32::new(0));
    let server = huge_frame_server(Arc::clone(&pid));
    let url = server.url();
    let run = probe_with(
        &[
            &url,
            "--interpretation",
            RT,
            "--send",
            "ping",
            "--expect",
            "pong",
            "--timeout-ms",
            "5000",
        ],
        |child| pid.store(child, Ordering::SeqCst),
    );
    let records = run.records();
    assert_eq!(records.len(), 1, "stdout:\n{}", run.stdout);
    let r = &records[0];
    assert_reason(r, &run, Some("ws_reply_mismatch"));
    assert_eq!(run.code, 1);
    assert_eq!(r.value, None);
    assert!(
        r.meta.error.as_deref().is_some_and(|e| !e.is_empty()),
        "meta.error says why: {r:#?}"
    );
    assert!(
        run.elapsed < Duration::from_millis(2500),
        "the run ends at once, not at the 5000 ms deadline: {:?}",
        run.elapsed
    );
    let events = server.until_client_close();
    if let Some(Event::ProbeVmHwmKb(Some(kb))) =
        events.iter().find(|e| matches!(e, Event::ProbeVmHwmKb(_)))
    {
        assert!(
            *kb < 64 * 1024,
            "peak RSS {kb} kB: the message was read into memory"
        );
    }
    assert!(
        matches!(
            events.last(),
            Some(Event::ClientClose {
                code: Some(1009),
                ..
            })
        ),
        "the probe closes with 1009 (message too big); server saw {events:?}"
    );
}

// ---------------------------------------------------------------------------
// Measurement and thresholds
// ---------------------------------------------------------------------------

#[test]
fn slow_reply_is_measured_and_degraded() {
    let server = slow_echo_server(Duration::from_millis(300));
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    let value = r.value.expect("value");
    assert!((300.0..1000.0).contains(&value), "value {value}");
    assert_eq!(r.health, "degraded", "200 <= {value} <= 1000: {r:#?}");
    let open = r.timings().open_ms.expect("open_ms");
    assert!(open < 300.0, "the reply delay is not in the open: {open}");
}

#[test]
fn slow_upgrade_is_measured_and_degraded() {
    let server = slow_upgrade_server(Duration::from_millis(250));
    let url = server.url();
    let (r, run) = probe_one(&[&url, "--timeout-ms", "2000"]);
    assert_reason(&r, &run, None);
    let value = r.value.expect("value");
    assert!((250.0..1000.0).contains(&value), "value {value}");
    assert_eq!(r.health, "degraded", "{r:#?}");
    let upgrade = r.timings().upgrade_ms.expect("upgrade_ms");
    assert!(
        upgrade >= 250.0,
        "the wait for the 101 is in upgrade_ms: {upgrade}"
    );
    assert_closed_with_1000(&server);
}

#[test]
fn reply_after_the_deadline_is_reply_timeout() {
    let server = slow_echo_server(Duration::from_millis(1500));
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--timeout-ms",
        "1000",
    ]);
    assert_reason(&r, &run, Some("ws_reply_timeout"));
    assert_eq!(r.value, None);
    assert!(
        run.elapsed < Duration::from_millis(2200),
        "{:?}",
        run.elapsed
    );
}

// ---------------------------------------------------------------------------
// What the handshake carries
// ---------------------------------------------------------------------------

#[test]
fn protocols_are_offered_and_the_chosen_one_reported() {
    let server = echo_server();
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--protocol",
        "chat",
        "--protocol",
        "superchat",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    let (_, headers) = server.request();
    let offered: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .flat_map(|(_, v)| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    assert_eq!(offered, ["chat", "superchat"]);
    assert_eq!(r.meta.subprotocol.as_deref(), Some("chat"), "{r:#?}");
}

#[test]
fn headers_are_sent_with_the_upgrade() {
    let server = echo_server();
    let url = server.url_path("/socket?room=5");
    let (r, run) = probe_one(&[
        &url,
        "--header",
        "X-Probe-Test: hello there",
        "--header",
        "Origin: https://app.example",
        "--timeout-ms",
        "2000",
    ]);
    assert_reason(&r, &run, None);
    let (path, headers) = server.request();
    assert_eq!(path, "/socket?room=5");
    assert_eq!(header(&headers, "x-probe-test"), Some("hello there"));
    assert_eq!(header(&headers, "origin"), Some("https://app.example"));
    assert_eq!(r.meta.subprotocol, None, "none offered: {r:#?}");
}

#[test]
fn the_deadline_ends_a_wait_on_time_not_on_the_kernel_tick() {
    // A socket timeout (SO_RCVTIMEO) ended a 3 s wait 194 ms late on this
    // 250 Hz kernel; the probe's wait must end within a few milliseconds.
    let server = silent_after_tcp_server();
    let (r, run) = probe_one(&[&server.url(), "--timeout-ms", "3000"]);
    assert_reason(&r, &run, Some("ws_handshake_timeout"));
    let total = r.timings().total_ms.expect("total_ms");
    assert!(
        (3000.0..3100.0).contains(&total),
        "the run should end at its 3000 ms deadline: total_ms {total}"
    );
}
