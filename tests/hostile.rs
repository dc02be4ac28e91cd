//! Hostile servers against the probe, one scenario per test, through the
//! real binary (`wsprobe probe URL flags`).
//!
//! The promise under attack (SPEC.md, "Measurement", "Reason codes", "The
//! record"; README "What a run measures"): whatever a server does, the
//! process does not panic or crash, writes exactly one record whose reason
//! is the contract's, ends within `timeout_ms` plus at most one second for
//! the close, and keeps its memory small. `attack` checks all of that for
//! every scenario; each test then checks the reason and meta its scenario
//! calls for. A panic caught inside the probe (`meta.error` starting
//! "internal error") is a bug, never an accepted outcome.

mod pysupport;
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use pysupport::TlsMaterial;
use support::*;

const RT: &str = "round_trip_latency";
const HS: &str = "handshake_latency";

/// The close after the measurement may take at most 1000 ms (README, "What a
/// run measures"); this is that plus room for process start and exit on a
/// busy 2-core machine.
const CLOSE_AND_SLACK: Duration = Duration::from_millis(1500);

/// Peak resident set allowed to a probe under attack. A debug build's
/// `wsprobe probe` peaks at about 6 MB; the hostile servers below push tens
/// of MB, so a probe that buffered what it was sent would pass this.
const MAX_PEAK_KB: u64 = 16 * 1024;

// ---------------------------------------------------------------------------
// The runner: one probe against a hostile server, with the checks every
// scenario shares
// ---------------------------------------------------------------------------

/// What one attacked run produced.
struct Attacked {
    record: Record,
    run: Run,
}

/// Samples the VmHWM of `pid` every 2 ms until the process is gone (or a
/// zombie, whose status has no VmHWM), keeping the largest value. VmHWM is a
/// high-water mark, so the last sample is the peak up to that moment.
fn sample_peak(pid: u32, peak: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while let Some(kb) = vm_hwm_kb(pid) {
            peak.fetch_max(kb, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(2));
        }
    })
}

/// Runs `wsprobe probe URL --timeout-ms T EXTRA...` and checks what holds
/// for every hostile server: no panic, exactly one valid record, no caught
/// panic in it, the contract's exit code, the run over by the deadline plus
/// the close, and a small peak memory.
fn attack(url: &str, timeout_ms: u64, extra: &[&str]) -> Attacked {
    let timeout = timeout_ms.to_string();
    let mut args = vec![url, "--timeout-ms", timeout.as_str()];
    args.extend_from_slice(extra);
    let peak = Arc::new(AtomicU64::new(0));
    let mut sampler = None;
    let run = probe_with(&args, |pid| {
        sampler = Some(sample_peak(pid, Arc::clone(&peak)));
    });
    if let Some(sampler) = sampler {
        let _ = sampler.join();
    }
    assert!(
        !run.stderr.contains("panicked"),
        "the process panicked:\n{}",
        run.stderr
    );
    let record = run.record();
    if let Some(error) = &record.meta.error {
        assert!(
            !error.starts_with("internal error"),
            "BUG: a panic was caught inside the probe: {record:#?}\nstderr:\n{}",
            run.stderr
        );
    }
    assert_exit_matches(std::slice::from_ref(&record), &run);
    assert_record_shape(&record);
    let bound = Duration::from_millis(timeout_ms) + CLOSE_AND_SLACK;
    assert!(
        run.elapsed <= bound,
        "the run took {:?}, more than timeout_ms ({timeout_ms} ms) plus the close: {record:#?}",
        run.elapsed
    );
    let peak_kb = match peak.load(Ordering::SeqCst) {
        0 => None,
        kb => Some(kb),
    };
    if let Some(kb) = peak_kb {
        assert!(
            kb <= MAX_PEAK_KB,
            "peak RSS {kb} kB (limit {MAX_PEAK_KB} kB): the probe kept what the server sent: \
             {record:#?}"
        );
    }
    eprintln!(
        "attacked: reason {:?}, phase {:?}, error {:?}, elapsed {:?}, peak {peak_kb:?} kB",
        record.reason, record.meta.phase, record.meta.error, run.elapsed
    );
    Attacked { record, run }
}

/// What "The record" says holds for every record (none of these runs is
/// `connection_success`): `value` null exactly when there is a reason,
/// health `unknown` without data, `meta.phase` exactly on the two open
/// failures, `close_clean` never before the socket opened, `total_ms`
/// always.
fn assert_record_shape(record: &Record) {
    let failed_to_open = matches!(
        record.reason.as_deref(),
        Some("ws_open_failed") | Some("ws_handshake_timeout")
    );
    assert_eq!(
        record.value.is_none(),
        record.reason.is_some(),
        "value is null exactly when the run has no data: {record:#?}"
    );
    if record.value.is_none() {
        assert_eq!(record.health, "unknown", "{record:#?}");
    }
    assert_eq!(
        record.meta.phase.is_some(),
        failed_to_open,
        "meta.phase is on ws_open_failed and ws_handshake_timeout only: {record:#?}"
    );
    if failed_to_open {
        assert_eq!(
            record.meta.close_clean, None,
            "close_clean only once the socket was open: {record:#?}"
        );
    }
    assert!(
        record.timings().total_ms.is_some(),
        "total_ms is always there: {record:#?}"
    );
}

impl Attacked {
    fn reason(&self, reason: Option<&str>) -> &Self {
        assert_reason(&self.record, &self.run, reason);
        self
    }

    fn phase(&self, phase: &str) -> &Self {
        assert_eq!(
            self.record.meta.phase.as_deref(),
            Some(phase),
            "meta.phase: {:#?}",
            self.record
        );
        self
    }

    /// `meta.http_status` ("once an HTTP answer was read").
    fn status(&self, status: u16) -> &Self {
        assert_eq!(
            self.record.meta.http_status,
            Some(status),
            "meta.http_status: {:#?}",
            self.record
        );
        self
    }

    /// `meta.error` is there and contains `needle` (case-insensitive).
    fn error_mentions(&self, needle: &str) -> &Self {
        let error = self.record.meta.error.as_deref().unwrap_or("");
        assert!(
            error
                .to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase()),
            "meta.error should mention {needle:?}: {:#?}",
            self.record
        );
        self
    }

    fn has_error(&self) -> &Self {
        assert!(
            self.record
                .meta
                .error
                .as_deref()
                .is_some_and(|e| !e.is_empty()),
            "every failure has meta.error: {:#?}",
            self.record
        );
        self
    }

    /// The failure was found at once, not at the deadline: `total_ms` (the
    /// measurement, close excluded) is under half of `timeout_ms`.
    fn ended_early(&self, timeout_ms: u64) -> &Self {
        let total = self.record.timings().total_ms.unwrap_or(f64::MAX);
        assert!(
            total < timeout_ms as f64 / 2.0,
            "an answer that is already wrong must end the run at once, not at the \
             deadline: total_ms {total}: {:#?}",
            self.record
        );
        self
    }
}

fn round_trip(send: &'static str, expect: &'static str) -> [&'static str; 6] {
    ["--interpretation", RT, "--send", send, "--expect", expect]
}

// ---------------------------------------------------------------------------
// Raw server parts
// ---------------------------------------------------------------------------

/// Reads the upgrade request head, reports it as `Event::Request` and
/// returns the correct `Sec-WebSocket-Accept` for it.
fn read_upgrade(stream: &mut TcpStream, tx: &Sender<Event>) -> Option<String> {
    let head = read_request_head(stream)?;
    Some(accept_for_head(&head, tx))
}

fn accept_for_head(head: &str, tx: &Sender<Event>) -> String {
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let key = header(&headers, "sec-websocket-key")
        .unwrap_or_default()
        .to_owned();
    let _ = tx.send(Event::Request { path, headers });
    derive_accept_key(key.as_bytes())
}

/// A 101 answer with `status_line`, the usual headers with `upgrade` and
/// `connection` values (a header is left out when its value is `None`),
/// `extra` header lines (each ending in CRLF), and the right accept value.
fn answer(
    status_line: &str,
    upgrade: Option<&str>,
    connection: Option<&str>,
    accept: &str,
    extra: &str,
) -> String {
    let mut out = format!("{status_line}\r\n");
    if let Some(upgrade) = upgrade {
        out.push_str(&format!("Upgrade: {upgrade}\r\n"));
    }
    if let Some(connection) = connection {
        out.push_str(&format!("Connection: {connection}\r\n"));
    }
    out.push_str(&format!("Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"));
    out
}

fn good_101(accept: &str) -> String {
    answer(
        "HTTP/1.1 101 Switching Protocols",
        Some("websocket"),
        Some("Upgrade"),
        accept,
        "",
    )
}

/// Reads until the peer closes; reports `EndedWithoutClose`.
fn drain(stream: &mut TcpStream, tx: &Sender<Event>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    let _ = tx.send(Event::EndedWithoutClose);
}

/// Writes `chunk` again and again until the peer is gone.
fn flood(stream: &mut TcpStream, chunk: &[u8]) {
    while stream.write_all(chunk).is_ok() {}
}

/// Answers the upgrade with the bytes `make(accept)` returns (one write),
/// then serves WebSocket messages (echo) when `serve` is set, else drains.
fn raw_answer_server<F>(make: F, serve: bool) -> Server
where
    F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
{
    spawn_server(move |mut stream, tx| {
        let Some(accept) = read_upgrade(&mut stream, tx) else {
            return;
        };
        if stream.write_all(&make(&accept)).is_err() {
            return;
        }
        if serve {
            let mut ws = WebSocket::from_raw_socket(stream, Role::Server, None);
            serve_messages(&mut ws, tx, |ws, m| {
                let _ = ws.send(m.clone());
            });
        } else {
            drain(&mut stream, tx);
        }
    })
}

/// Reads the probe's first message; false when it is not text.
fn first_text(ws: &mut WebSocket<TcpStream>, tx: &Sender<Event>) -> bool {
    match ws.read() {
        Ok(Message::Text(t)) => {
            let _ = tx.send(Event::Text(t.as_str().to_owned()));
            true
        }
        _ => false,
    }
}

/// Upgrades (tungstenite's server handshake), reads the probe's message,
/// writes `bytes` raw, then reads on (reporting the probe's Close, answering
/// it) until the connection ends.
fn after_message_server(bytes: Vec<u8>) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        if !first_text(&mut ws, tx) {
            return;
        }
        if ws.get_mut().write_all(&bytes).is_err() {
            return;
        }
        serve_messages(&mut ws, tx, |_, _| {});
    })
}

/// Upgrades, reads the probe's message, then hands the raw stream to `then`.
fn raw_after_message_server<F>(then: F) -> Server
where
    F: Fn(&mut TcpStream, &Sender<Event>) + Send + Sync + 'static,
{
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        if first_text(&mut ws, tx) {
            then(ws.get_mut(), tx);
        }
    })
}

/// Upgrades, reads the probe's message, then writes `chunk` forever without
/// reading, until the probe is gone.
fn flood_after_message_server(chunk: Vec<u8>) -> Server {
    raw_after_message_server(move |stream, tx| {
        flood(stream, &chunk);
        let _ = tx.send(Event::EndedWithoutClose);
    })
}

/// A server frame with the mask bit set and a mask applied (servers must
/// never mask, RFC 6455 section 5.1).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A Close frame with a raw payload (code and reason as given, unchecked).
fn raw_close(payload: &[u8]) -> Vec<u8> {
    frame(true, 0x8, payload)
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// The probe's Close code as the server saw it: `Some(code)`, or `None`
/// when the connection ended without a Close frame.
fn probe_close(server: &Server) -> Option<Option<u16>> {
    server.wait_for("the end of the connection", |e| match e {
        Event::ClientClose { code, .. } => Some(Some(*code)),
        Event::EndedWithoutClose => Some(None),
        _ => None,
    })
}

/// After a protocol violation the probe may send a Close (RFC 6455 section
/// 7.1.7: Fail the WebSocket Connection) but never one that claims a normal
/// end (1000): 1002 (protocol error), 1007 (bad data) or 1009 (too big).
fn assert_no_normal_close(server: &Server, allowed: &[u16]) {
    match probe_close(server) {
        None => {}
        Some(Some(code)) => assert!(
            allowed.contains(&code),
            "the probe closed with {code} after a protocol violation; expected one of {allowed:?}"
        ),
        Some(None) => panic!("the probe sent a Close without a code after a protocol violation"),
    }
}

// ---------------------------------------------------------------------------
// The upgrade answer
// ---------------------------------------------------------------------------

#[test]
fn endless_header_value_fast_is_refused_at_64_kib() {
    // One header whose value never ends, at loopback speed (tens of MB/s).
    let server = spawn_server(|mut stream, tx| {
        if read_upgrade(&mut stream, tx).is_none() {
            return;
        }
        if stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nX-Filler: ")
            .is_err()
        {
            return;
        }
        flood(&mut stream, &[b'a'; 64 * 1024]);
    });
    let a = attack(&server.url(), 2000, &["--interpretation", HS]);
    a.reason(Some("ws_open_failed"))
        .phase("upgrade")
        .has_error()
        .ended_early(2000);
    assert_eq!(a.record.value, None);
}

#[test]
fn endless_header_lines_fast_are_refused() {
    // Short header lines, never the blank line.
    let server = spawn_server(|mut stream, tx| {
        if read_upgrade(&mut stream, tx).is_none() {
            return;
        }
        if stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\n")
            .is_err()
        {
            return;
        }
        flood(&mut stream, &b"X-More: yes\r\n".repeat(4096));
    });
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .has_error()
        .ended_early(2000);
}

#[test]
fn endless_header_stream_slow_times_out_in_upgrade() {
    // A byte every 50 ms, never the blank line: the deadline ends it.
    let server = spawn_server(|mut stream, tx| {
        if read_upgrade(&mut stream, tx).is_none() {
            return;
        }
        let head = b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'z')) {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let a = attack(&server.url(), 1000, &["--interpretation", HS]);
    a.reason(Some("ws_handshake_timeout"))
        .phase("upgrade")
        .has_error();
    assert_eq!(a.record.value, None);
    assert_eq!(a.record.health, "unknown");
}

#[test]
fn answer_with_200_header_lines_is_refused() {
    let server = raw_answer_server(
        |accept| {
            let extra: String = (0..200).map(|i| format!("X-Line-{i}: {i}\r\n")).collect();
            answer(
                "HTTP/1.1 101 Switching Protocols",
                Some("websocket"),
                Some("Upgrade"),
                accept,
                &extra,
            )
            .into_bytes()
        },
        false,
    );
    // README, "Decisions": the answer's head may have at most 64 header lines.
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .error_mentions("header")
        .ended_early(2000);
}

#[test]
fn answer_with_a_100_kb_header_line_is_refused() {
    let server = raw_answer_server(
        |accept| {
            let extra = format!("X-Big: {}\r\n", "b".repeat(100 * 1024));
            answer(
                "HTTP/1.1 101 Switching Protocols",
                Some("websocket"),
                Some("Upgrade"),
                accept,
                &extra,
            )
            .into_bytes()
        },
        false,
    );
    // README, "Decisions": the answer's head may be at most 64 KiB.
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .has_error()
        .ended_early(2000);
}

#[test]
fn binary_garbage_answer_is_an_open_failure() {
    let server = raw_answer_server(|_| (0..4096u32).map(|i| (i * 7 + 3) as u8).collect(), false);
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .has_error()
        .ended_early(2000);
}

#[test]
fn ssh_banner_answer_is_an_open_failure() {
    let server = raw_answer_server(|_| b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec(), false);
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .has_error()
        .ended_early(2000);
}

#[test]
fn ssh_banner_before_the_request_is_an_open_failure() {
    // A real SSH server speaks first, before reading anything.
    let server = spawn_server(|mut stream, tx| {
        if stream.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").is_ok() {
            drain(&mut stream, tx);
        }
    });
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .has_error()
        .ended_early(2000);
}

#[test]
fn http_1_0_101_opens_or_fails_naming_the_version() {
    // The contract is silent. RFC 6455 section 4.1 lists the client's checks
    // and none is on the version; HTTP/1.0 has no 101 (RFC 9110 section
    // 15.2.2 is HTTP/1.1). Either outcome is defensible; what an operator
    // needs is a prompt answer and, on a failure, the version named.
    let server = raw_answer_server(
        |accept| {
            answer(
                "HTTP/1.0 101 Switching Protocols",
                Some("websocket"),
                Some("Upgrade"),
                accept,
                "",
            )
            .into_bytes()
        },
        true,
    );
    let a = attack(&server.url(), 2000, &["--interpretation", HS]);
    match a.record.reason.as_deref() {
        None => assert!(a.record.value.is_some()),
        Some("ws_open_failed") => {
            a.phase("upgrade").error_mentions("1.0");
        }
        other => panic!("HTTP/1.0 101: unexpected reason {other:?}: {:#?}", a.record),
    }
    eprintln!(
        "HTTP/1.0 101: reason {:?}, error {:?}",
        a.record.reason, a.record.meta.error
    );
}

#[test]
fn a_101_without_upgrade_is_refused() {
    let server = raw_answer_server(
        |accept| {
            answer(
                "HTTP/1.1 101 Switching Protocols",
                None,
                Some("Upgrade"),
                accept,
                "",
            )
            .into_bytes()
        },
        false,
    );
    // RFC 6455 section 4.1, the client's check 2.
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .status(101)
        .error_mentions("upgrade")
        .ended_early(2000);
}

#[test]
fn a_101_to_h2c_is_refused() {
    let server = raw_answer_server(
        |accept| {
            answer(
                "HTTP/1.1 101 Switching Protocols",
                Some("h2c"),
                Some("Upgrade"),
                accept,
                "",
            )
            .into_bytes()
        },
        false,
    );
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .status(101)
        .error_mentions("upgrade")
        .ended_early(2000);
}

#[test]
fn a_101_to_h2c_and_websocket_at_once_is_refused() {
    // RFC 6455 section 4.1, check 2: "If the response lacks an |Upgrade|
    // header field or the |Upgrade| header field contains a value that is
    // not an ASCII case-insensitive match for the value "websocket", the
    // client MUST _Fail the WebSocket Connection_". Unlike Connection
    // (check 3: "contains a token"), Upgrade is an exact value: a switch to
    // two protocols at once is no WebSocket answer.
    let server = raw_answer_server(
        |accept| {
            answer(
                "HTTP/1.1 101 Switching Protocols",
                Some("h2c, websocket"),
                Some("Upgrade"),
                accept,
                "",
            )
            .into_bytes()
        },
        true,
    );
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .status(101)
        .error_mentions("upgrade")
        .ended_early(2000);
}

#[test]
fn a_101_with_two_accept_headers_is_refused() {
    // Both carry the right value; together they are "X, X", which is not
    // the value RFC 6455 section 4.1 (check 4) asks for.
    let server = raw_answer_server(
        |accept| {
            answer(
                "HTTP/1.1 101 Switching Protocols",
                Some("websocket"),
                Some("Upgrade"),
                accept,
                &format!("Sec-WebSocket-Accept: {accept}\r\n"),
            )
            .into_bytes()
        },
        true,
    );
    attack(&server.url(), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .status(101)
        .error_mentions("more than one Sec-WebSocket-Accept")
        .ended_early(2000);
}

#[test]
fn connection_keep_alive_upgrade_opens_and_round_trips() {
    // RFC 6455 section 4.1, check 3: Connection must *contain* the token.
    let server = raw_answer_server(
        |accept| {
            answer(
                "HTTP/1.1 101 Switching Protocols",
                Some("websocket"),
                Some("keep-alive, Upgrade"),
                accept,
                "",
            )
            .into_bytes()
        },
        true,
    );
    let a = attack(&server.url(), 2000, &round_trip("hello", "hello"));
    a.reason(None);
    assert!(a.record.value.is_some());
    assert_eq!(a.record.meta.close_clean, Some(true), "{:#?}", a.record);
}

#[test]
fn early_hints_and_100_continue_before_the_101_are_read_past() {
    // RFC 9110 section 15.2: a client reads past 1xx answers to the final
    // one; a CDN may send 103 Early Hints before the 101. Sent in one write
    // with the 101, so the probe meets all three heads in one read.
    let server = raw_answer_server(
        |accept| {
            let mut bytes = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            bytes.extend(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n");
            bytes.extend(good_101(accept).into_bytes());
            bytes
        },
        true,
    );
    let a = attack(&server.url(), 2000, &round_trip("hello", "hello"));
    a.reason(None).status(101);
    assert!(a.record.value.is_some(), "{:#?}", a.record);
}

#[test]
fn endless_early_hints_hit_the_head_limit() {
    // A 64 KiB cap on the answer's head that a stream of 1xx answers could
    // slip past would let a server keep the probe reading until its timeout.
    let server = spawn_server(|mut stream, tx| {
        if read_upgrade(&mut stream, tx).is_none() {
            return;
        }
        flood(
            &mut stream,
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
        );
    });
    attack(&server.url(), 5000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("upgrade")
        .error_mentions("head passes")
        .ended_early(5000);
}

#[test]
fn greeting_in_the_same_write_as_the_101_is_skipped_then_reply_matches() {
    // The 101 and a text greeting arrive in one TCP segment; the bytes past
    // the head are the first frame, not part of the HTTP answer.
    let server = spawn_server(|mut stream, tx| {
        let Some(accept) = read_upgrade(&mut stream, tx) else {
            return;
        };
        let mut bytes = good_101(&accept).into_bytes();
        bytes.extend(frame(true, 0x1, b"{\"hello\":\"welcome\"}"));
        if stream.write_all(&bytes).is_err() {
            return;
        }
        let mut ws = WebSocket::from_raw_socket(stream, Role::Server, None);
        serve_messages(&mut ws, tx, |ws, _| {
            let _ = ws.send(Message::text("{\"op\":\"pong\"}"));
        });
    });
    let a = attack(
        &server.url(),
        2000,
        &round_trip("{\"op\":\"ping\"}", "pong"),
    );
    a.reason(None);
    assert!(a.record.value.is_some());
    assert_eq!(
        a.record.meta.skipped_messages,
        Some(1),
        "the greeting is a non-matching candidate (SPEC, Measurement): {:#?}",
        a.record
    );
    assert_eq!(server.text(), "{\"op\":\"ping\"}");
}

// ---------------------------------------------------------------------------
// Frames after the upgrade: protocol violations are ws_reply_mismatch
// (README, "Decisions"), found at once
// ---------------------------------------------------------------------------

/// A round trip against `server` must end at once with ws_reply_mismatch and
/// an error; the probe's Close (if any) says which violation.
fn assert_violation(server: &Server, close_codes: &[u16]) -> Attacked {
    let a = attack(&server.url(), 2000, &round_trip("ping", "pong"));
    a.reason(Some("ws_reply_mismatch"))
        .has_error()
        .ended_early(2000);
    assert_eq!(a.record.value, None);
    assert_no_normal_close(server, close_codes);
    a
}

#[test]
fn masked_frame_from_the_server_is_a_violation() {
    let server = after_message_server(masked_frame(0x1, b"pong"));
    assert_violation(&server, &[1002]);
}

#[test]
fn frame_with_rsv_bits_is_a_violation() {
    let mut bytes = frame(true, 0x1, b"pong");
    bytes[0] |= 0x70;
    let server = after_message_server(bytes);
    assert_violation(&server, &[1002]);
}

#[test]
fn reserved_data_opcode_is_a_violation() {
    let server = after_message_server(frame(true, 0x3, b"pong"));
    assert_violation(&server, &[1002]);
}

#[test]
fn reserved_control_opcode_is_a_violation() {
    let server = after_message_server(frame(true, 0xB, b"pong"));
    assert_violation(&server, &[1002]);
}

#[test]
fn fragmented_control_frame_is_a_violation() {
    let server = after_message_server(frame(false, 0x9, b"ping?"));
    assert_violation(&server, &[1002]);
}

#[test]
fn ping_with_200_byte_payload_is_a_violation() {
    let server = after_message_server(frame(true, 0x9, &[b'p'; 200]));
    assert_violation(&server, &[1002]);
}

#[test]
fn text_with_invalid_utf8_is_a_violation() {
    let server = after_message_server(frame(true, 0x1, b"pong \xff\xfe"));
    let a = assert_violation(&server, &[1007, 1002]);
    a.error_mentions("utf-8");
}

#[test]
fn continuation_without_a_start_is_a_violation() {
    let server = after_message_server(frame(true, 0x0, b"pong"));
    assert_violation(&server, &[1002]);
}

#[test]
fn frame_length_with_the_top_bit_set_is_refused_at_once() {
    // RFC 6455 section 5.2: the most significant bit of a 64-bit length
    // MUST be 0. 2^63 + 4 bytes announced, 4 sent.
    let mut bytes = vec![0x82, 127];
    bytes.extend_from_slice(&((1u64 << 63) + 4).to_be_bytes());
    bytes.extend_from_slice(b"pong");
    let server = after_message_server(bytes);
    // `attack` has checked that nothing near the announced size was kept.
    assert_violation(&server, &[1002, 1009]);
}

#[test]
fn endless_pings_without_a_reply_end_at_the_deadline() {
    // Pings as fast as loopback takes them, never a data message, never
    // reading the Pongs.
    let server = flood_after_message_server(frame(true, 0x9, b"x").repeat(8192));
    let a = attack(&server.url(), 1000, &round_trip("ping", "pong"));
    let reason = a.record.reason.as_deref();
    assert!(
        matches!(reason, Some("ws_reply_timeout") | Some("ws_reply_mismatch")),
        "pings are no reply: {:#?}",
        a.record
    );
    assert_eq!(a.record.value, None);
    assert_eq!(a.record.meta.skipped_messages, Some(0), "{:#?}", a.record);
    assert_eq!(
        a.record.meta.close_clean,
        Some(false),
        "the server never answered the Close: {:#?}",
        a.record
    );
    let total = a.record.timings().total_ms.unwrap_or(0.0);
    assert!(
        total >= 900.0,
        "the run waits to its deadline: total_ms {total}"
    );
}

#[test]
fn endless_non_matching_messages_end_as_mismatch_at_the_deadline() {
    let nope = format!("{{\"op\":\"nope\",\"pad\":\"{}\"}}", "n".repeat(500));
    let server = flood_after_message_server(frame(true, 0x1, nope.as_bytes()).repeat(64));
    let a = attack(&server.url(), 1000, &round_trip("ping", "pong"));
    a.reason(Some("ws_reply_mismatch")).has_error();
    let skipped = a.record.meta.skipped_messages.unwrap_or(0);
    assert!(skipped > 0, "{:#?}", a.record);
    let last = a.record.meta.last_reply.as_deref().unwrap_or("");
    assert!(
        last.starts_with("{\"op\":\"nope\"") && last.len() <= 256,
        "meta.last_reply is the last reply cut to 256 bytes: {last:?}"
    );
}

#[test]
fn endless_empty_continuation_frames_end_at_the_deadline() {
    // A message that never ends: a first fragment, then empty continuation
    // frames forever. Nothing grows, so only the deadline can end it; a
    // message never completed is no reply (ws_reply_timeout), though
    // ws_reply_mismatch would be defensible too.
    let server = raw_after_message_server(|stream, _| {
        if stream.write_all(&frame(false, 0x1, b"po")).is_ok() {
            flood(stream, &frame(false, 0x0, b"").repeat(8192));
        }
    });
    let a = attack(&server.url(), 1000, &round_trip("ping", "pong"));
    let reason = a.record.reason.as_deref();
    assert!(
        matches!(reason, Some("ws_reply_timeout") | Some("ws_reply_mismatch")),
        "{:#?}",
        a.record
    );
}

#[test]
fn reply_in_a_thousand_one_byte_fragments_is_reassembled() {
    let reply = "p".repeat(996) + "pong";
    let mut bytes = Vec::new();
    for (i, b) in reply.bytes().enumerate() {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        bytes.extend(frame(i + 1 == reply.len(), opcode, &[b]));
    }
    let server = after_message_server(bytes);
    let a = attack(&server.url(), 2000, &round_trip("ping", "pong"));
    a.reason(None);
    assert_eq!(a.record.meta.skipped_messages, Some(0));
}

// ---------------------------------------------------------------------------
// max_message_bytes (1024 here)
// ---------------------------------------------------------------------------

#[test]
fn reply_of_exactly_max_message_bytes_is_read() {
    let reply = "x".repeat(1020) + "pong";
    let server = after_message_server(frame(true, 0x1, reply.as_bytes()));
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--max-message-bytes", "1024"]);
    let a = attack(&server.url(), 2000, &args);
    a.reason(None);
    assert!(a.record.value.is_some());
}

#[test]
fn reply_one_byte_over_max_message_bytes_is_refused_with_1009() {
    let reply = "x".repeat(1021) + "pong";
    let server = after_message_server(frame(true, 0x1, reply.as_bytes()));
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--max-message-bytes", "1024"]);
    let a = attack(&server.url(), 2000, &args);
    a.reason(Some("ws_reply_mismatch"))
        .error_mentions("max_message_bytes")
        .ended_early(2000);
    assert_eq!(probe_close(&server), Some(Some(1009)));
}

#[test]
fn fragmented_reply_over_max_message_bytes_is_refused_with_1009() {
    // Three fragments of 500 bytes: each fits, the message (1500) does not.
    let part = [b'x'; 500];
    let mut bytes = frame(false, 0x1, &part);
    bytes.extend(frame(false, 0x0, &part));
    bytes.extend(frame(true, 0x0, &part));
    let server = after_message_server(bytes);
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--max-message-bytes", "1024"]);
    let a = attack(&server.url(), 2000, &args);
    a.reason(Some("ws_reply_mismatch"))
        .error_mentions("max_message_bytes")
        .ended_early(2000);
    assert_eq!(probe_close(&server), Some(Some(1009)));
}

#[test]
fn endless_fragments_of_one_message_are_refused_past_max_message_bytes() {
    // Small fragments forever, never FIN: the message passes the limit
    // after 1 MiB (the default) and must not be buffered beyond it.
    let server = raw_after_message_server(|stream, _| {
        if stream.write_all(&frame(false, 0x2, &[1; 1000])).is_ok() {
            flood(stream, &frame(false, 0x0, &[2; 1000]).repeat(64));
        }
    });
    let a = attack(&server.url(), 2000, &round_trip("ping", "pong"));
    a.reason(Some("ws_reply_mismatch"))
        .error_mentions("max_message_bytes")
        .ended_early(2000);
}

/// The contract for a refused reply whose server answers our Close: a
/// mismatch, the reply counted as skipped, our 1009, and a clean close.
fn assert_refused_then_closed_cleanly(server: &Server, timeout_ms: u64) {
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--max-message-bytes", "1024"]);
    let a = attack(&server.url(), timeout_ms, &args);
    a.reason(Some("ws_reply_mismatch"))
        .error_mentions("max_message_bytes")
        .ended_early(timeout_ms);
    assert_eq!(a.record.meta.skipped_messages, Some(1), "{:#?}", a.record);
    assert_eq!(probe_close(server), Some(Some(1009)));
    assert_eq!(a.record.meta.close_clean, Some(true), "{:#?}", a.record);
}

#[test]
fn oversized_reply_then_a_prompt_close_answer_is_a_clean_close() {
    // 256 KiB, more than the socket buffers hold: the server's Close is
    // behind the rest of the payload the probe did not store.
    let reply = vec![b'x'; 256 * 1024];
    let server = after_message_server(frame(true, 0x1, &reply));
    assert_refused_then_closed_cleanly(&server, 2000);
}

#[test]
fn oversized_fragmented_reply_then_a_prompt_close_answer_is_a_clean_close() {
    let part = [b'x'; 500];
    let mut bytes = frame(false, 0x1, &part);
    for _ in 0..200 {
        bytes.extend(frame(false, 0x0, &part));
    }
    bytes.extend(frame(true, 0x0, &part));
    let server = after_message_server(bytes);
    assert_refused_then_closed_cleanly(&server, 2000);
}

#[test]
fn oversized_reply_trickled_forever_is_an_unclean_close_within_its_budget() {
    // 1 MiB announced, then a byte every 10 ms: the rest never comes, nor
    // does a Close. `attack` checks the run ends within the close's budget.
    let server = raw_after_message_server(|stream, _| {
        let mut header = vec![0x81, 127];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        if stream.write_all(&header).is_err() {
            return;
        }
        while stream.write_all(b"x").is_ok() {
            thread::sleep(Duration::from_millis(10));
        }
    });
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--max-message-bytes", "1024"]);
    let a = attack(&server.url(), 2000, &args);
    a.reason(Some("ws_reply_mismatch"))
        .error_mentions("max_message_bytes")
        .ended_early(2000);
    assert_eq!(a.record.meta.skipped_messages, Some(1), "{:#?}", a.record);
    assert_eq!(a.record.meta.close_clean, Some(false), "{:#?}", a.record);
}

// ---------------------------------------------------------------------------
// The close
// ---------------------------------------------------------------------------

/// Upgrades, then reads raw bytes (never answering a Close) until the probe
/// ends TCP. Reports the probe's Close when the first bytes are one.
fn never_answers_close_server() -> Server {
    spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        let stream = ws.get_mut();
        let mut buf = [0u8; 4096];
        let mut reported = false;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            if !reported && buf[0] == 0x88 {
                reported = true;
                let _ = tx.send(Event::ClientClose {
                    code: None,
                    reason: String::new(),
                });
            }
        }
        let _ = tx.send(Event::EndedWithoutClose);
    })
}

#[test]
fn server_that_never_answers_our_close_costs_at_most_a_second() {
    let server = never_answers_close_server();
    let started = Instant::now();
    let a = attack(&server.url(), 2000, &["--interpretation", HS]);
    a.reason(None);
    assert_eq!(
        a.record.meta.close_clean,
        Some(false),
        "no Close came back: {:#?}",
        a.record
    );
    // The open takes milliseconds; the close may add at most 1000 ms.
    let open = Duration::from_secs_f64(a.record.timings().total_ms.unwrap_or(0.0) / 1000.0);
    assert!(
        started.elapsed() < open + CLOSE_AND_SLACK,
        "the close took {:?} after a {open:?} measurement",
        started.elapsed()
    );
    server.wait_for("the probe's Close", |e| {
        matches!(e, Event::ClientClose { .. }).then_some(())
    });
}

#[test]
fn server_that_floods_messages_instead_of_answering_our_close_is_bounded() {
    // Never answers the Close; sends text messages as fast as it can.
    let server = spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        flood(ws.get_mut(), &frame(true, 0x1, &[b'f'; 1000]).repeat(64));
        let _ = tx.send(Event::EndedWithoutClose);
    });
    let a = attack(&server.url(), 1000, &["--interpretation", HS]);
    a.reason(None);
    assert_eq!(a.record.meta.close_clean, Some(false), "{:#?}", a.record);
}

#[test]
fn server_that_answers_our_close_then_streams_forever_is_bounded() {
    let server = spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        loop {
            match ws.read() {
                Ok(Message::Close(_)) => {
                    let _ = tx.send(Event::ClientClose {
                        code: Some(1000),
                        reason: String::new(),
                    });
                    // Our Close goes out, then garbage forever.
                    let _ = ws.flush();
                    flood(ws.get_mut(), &[0x5a; 64 * 1024]);
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let a = attack(&server.url(), 1000, &["--interpretation", HS]);
    a.reason(None);
    assert_eq!(
        a.record.meta.close_clean,
        Some(true),
        "the server's Close arrived: {:#?}",
        a.record
    );
}

#[test]
fn server_that_answers_our_close_but_keeps_tcp_open_costs_at_most_a_second() {
    let server = spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        loop {
            match ws.read() {
                Ok(Message::Close(_)) => {
                    // Our Close, written raw so that tungstenite does not end
                    // the connection; then TCP stays open until the probe
                    // ends it.
                    let stream = ws.get_mut();
                    let _ = stream.write_all(&raw_close(&close_payload(1000, b"")));
                    drain(stream, tx);
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let a = attack(&server.url(), 1000, &["--interpretation", HS]);
    a.reason(None);
    assert_eq!(a.record.meta.close_clean, Some(true), "{:#?}", a.record);
}

/// Upgrades, reads the probe's message, sends a Close frame with the raw
/// `payload` instead of a reply, then answers the probe's frames.
fn close_instead_of_reply_server(payload: Vec<u8>) -> Server {
    after_message_server(raw_close(&payload))
}

/// A Close carrying a code that must never be on the wire, before the
/// reply: the server closed (ws_closed_early), at once, and the record must
/// not put words in its mouth. SPEC: `meta.close_code`/`close_reason` are
/// the server's. tungstenite replaces an invalid code by 1002 with the
/// reason "Protocol violation" before wsprobe sees it; reported as the
/// server's, that sends the operator after a protocol error the server
/// never named. Acceptable: the code as sent, or `meta.error` saying what
/// the server sent (its code, or that the code was invalid); never the
/// made-up reason.
fn assert_closed_with_invalid_code(code: u16) {
    let server = close_instead_of_reply_server(close_payload(code, b"bye"));
    let a = attack(&server.url(), 2000, &round_trip("ping", "pong"));
    a.reason(Some("ws_closed_early")).ended_early(2000);
    let error = a.record.meta.error.clone().unwrap_or_default();
    assert!(
        a.record.meta.close_code == Some(code)
            || error.contains(&code.to_string())
            || error.to_ascii_lowercase().contains("invalid"),
        "the server sent Close {code} \"bye\"; the record says close_code {:?}, \
         close_reason {:?}, error {error:?}",
        a.record.meta.close_code,
        a.record.meta.close_reason
    );
    assert_ne!(
        a.record.meta.close_reason.as_deref(),
        Some("Protocol violation"),
        "close_reason is the server's reason (\"bye\"), not one made up: {:#?}",
        a.record
    );
}

#[test]
fn close_with_code_1005_on_the_wire_is_reported_as_sent() {
    // RFC 6455 section 7.4.1: 1005 MUST NOT be set in a Close frame.
    assert_closed_with_invalid_code(1005);
}

#[test]
fn close_with_code_999_is_reported_as_sent() {
    // RFC 6455 section 7.4.2: 0-999 are not used.
    assert_closed_with_invalid_code(999);
}

/// A malformed Close before the reply: the server closed, badly. Either
/// ws_closed_early or ws_reply_mismatch (README: a reply that breaks the
/// protocol) fits; either way at once, and `meta.error` must say it was a
/// Close, so that the record explains what happened.
fn assert_malformed_close(payload: Vec<u8>) {
    let server = close_instead_of_reply_server(payload);
    let a = attack(&server.url(), 2000, &round_trip("ping", "pong"));
    let reason = a.record.reason.as_deref();
    assert!(
        matches!(reason, Some("ws_closed_early") | Some("ws_reply_mismatch")),
        "{:#?}",
        a.record
    );
    a.ended_early(2000).error_mentions("close");
}

#[test]
fn close_with_a_one_byte_payload_is_explained() {
    assert_malformed_close(vec![0x03]);
}

#[test]
fn close_with_an_invalid_utf8_reason_is_explained() {
    assert_malformed_close(close_payload(1000, b"bye \xff"));
}

// ---------------------------------------------------------------------------
// TLS (wss://)
// ---------------------------------------------------------------------------

fn wss_url(server: &Server) -> String {
    format!("wss://127.0.0.1:{}/socket", server.port)
}

#[test]
fn tls_garbage_is_an_open_failure_in_tls() {
    let server = spawn_server(|mut stream, tx| {
        let mut hello = [0u8; 512];
        if stream.read(&mut hello).is_err() {
            return;
        }
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 13 + 1) as u8).collect();
        if stream.write_all(&garbage).is_ok() {
            drain(&mut stream, tx);
        }
    });
    let a = attack(&wss_url(&server), 2000, &["--interpretation", HS]);
    a.reason(Some("ws_open_failed"))
        .phase("tls")
        .has_error()
        .ended_early(2000);
    assert_eq!(a.record.meta.tls_verified, Some(true));
}

#[test]
fn plain_http_on_the_tls_port_is_an_open_failure_in_tls() {
    let server = spawn_server(|mut stream, tx| {
        let mut hello = [0u8; 512];
        if stream.read(&mut hello).is_err() {
            return;
        }
        let answer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
                      Content-Length: 11\r\nConnection: close\r\n\r\nbad request";
        if stream.write_all(answer.as_bytes()).is_ok() {
            drain(&mut stream, tx);
        }
    });
    attack(&wss_url(&server), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("tls")
        .has_error()
        .ended_early(2000);
}

#[test]
fn tls_stall_after_tcp_times_out_in_tls() {
    let server = silent_after_tcp_server();
    let a = attack(&wss_url(&server), 1000, &["--interpretation", HS]);
    a.reason(Some("ws_handshake_timeout")).phase("tls");
    assert_eq!(a.record.value, None);
}

#[test]
fn tls_handshake_message_announcing_16_mb_is_refused() {
    // A ServerHello whose handshake header announces 2^24 - 1 bytes, sent
    // as full-size TLS records for as long as the probe reads.
    let server = spawn_server(|mut stream, tx| {
        let mut hello = [0u8; 512];
        if stream.read(&mut hello).is_err() {
            return;
        }
        let mut first = vec![0x16, 0x03, 0x03, 0x40, 0x00, 0x02, 0xff, 0xff, 0xff];
        first.resize(5 + 0x4000, 0x42);
        if stream.write_all(&first).is_err() {
            return;
        }
        let mut more = vec![0x16, 0x03, 0x03, 0x40, 0x00];
        more.resize(5 + 0x4000, 0x42);
        flood(&mut stream, &more);
        let _ = tx.send(Event::EndedWithoutClose);
    });
    attack(&wss_url(&server), 2000, &["--interpretation", HS])
        .reason(Some("ws_open_failed"))
        .phase("tls")
        .has_error()
        .ended_early(2000);
}

/// A TLS server (rustls, the test CA's `good` leaf) that completes the
/// handshake, then runs `then` on the TLS stream.
fn tls_server<F>(material: &TlsMaterial, then: F) -> Server
where
    F: Fn(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>, &Sender<Event>)
        + Send
        + Sync
        + 'static,
{
    let (cert, key) = &material.good;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("read cert")
        .collect::<Result<_, _>>()
        .expect("parse cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("read key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let config = Arc::new(config);
    spawn_server(move |mut tcp, tx| {
        let Ok(mut conn) = rustls::ServerConnection::new(Arc::clone(&config)) else {
            return;
        };
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                let _ = tx.send(Event::EndedWithoutClose);
                return;
            }
        }
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        then(&mut tls, tx);
    })
}

#[test]
fn tls_completes_then_upgrade_stalls_times_out_in_upgrade() {
    let material = TlsMaterial::generate();
    let server = tls_server(&material, |tls, tx| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(Event::EndedWithoutClose);
    });
    let ca = material.ca_pem.to_str().expect("utf-8 path");
    let a = attack(
        &wss_url(&server),
        1000,
        &["--interpretation", HS, "--ca-file", ca],
    );
    a.reason(Some("ws_handshake_timeout")).phase("upgrade");
    assert!(
        a.record.meta.tls_version.is_some(),
        "TLS completed: {:#?}",
        a.record
    );
}

#[test]
fn tls_close_notify_instead_of_a_reply_is_closed_early() {
    // Opens, reads the probe's message, then ends TLS (close_notify) but
    // keeps TCP open: no Close frame ever came, so 1006.
    let material = TlsMaterial::generate();
    let server = tls_server(&material, |tls, tx| {
        let Some(head) = read_request_head(tls) else {
            return;
        };
        let accept = accept_for_head(&head, tx);
        if tls.write_all(good_101(&accept).as_bytes()).is_err() {
            return;
        }
        let mut frame_start = [0u8; 2];
        if tls.read_exact(&mut frame_start).is_err() {
            return;
        }
        tls.conn.send_close_notify();
        while tls.conn.wants_write() {
            if tls.conn.write_tls(&mut tls.sock).is_err() {
                return;
            }
        }
        drain(&mut tls.sock, tx);
    });
    let ca = material.ca_pem.to_str().expect("utf-8 path");
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--ca-file", ca]);
    let a = attack(&wss_url(&server), 2000, &args);
    a.reason(Some("ws_closed_early")).ended_early(2000);
    assert_eq!(a.record.meta.close_code, Some(1006), "{:#?}", a.record);
    assert!(a.record.meta.tls_version.is_some());
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

#[test]
fn ipv6_literal_url_reaches_a_server_on_loopback_v6() {
    let listener = match TcpListener::bind("[::1]:0") {
        Ok(listener) => listener,
        Err(e) => {
            skip_or_fail(&format!("no IPv6 on lo ({e})"));
            return;
        }
    };
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            thread::spawn(move || {
                let Some(mut ws) = ws_accept(stream, &tx, |_, _| {}) else {
                    return;
                };
                serve_messages(&mut ws, &tx, |ws, m| {
                    let _ = ws.send(m.clone());
                });
            });
        }
    });
    let url = format!("ws://[::1]:{port}/v6");
    let a = attack(&url, 2000, &round_trip("six", "six"));
    a.reason(None);
    assert_eq!(
        a.record.meta.remote_addr.as_deref(),
        Some(format!("[::1]:{port}").as_str())
    );
    assert_eq!(
        a.record.timings().dns_ms,
        None,
        "an IP literal is not resolved"
    );
    let headers = loop {
        match rx.recv_timeout(EVENT_WAIT) {
            Ok(Event::Request { headers, .. }) => break headers,
            Ok(_) => continue,
            Err(_) => panic!("the v6 server saw no request"),
        }
    };
    assert_eq!(
        header(&headers, "host"),
        Some(format!("[::1]:{port}").as_str()),
        "RFC 6455 section 4.1 / RFC 3986: an IPv6 host is bracketed in Host"
    );
}

#[test]
fn localhost_name_falls_back_to_v4_when_v6_is_refused() {
    // The server listens on 127.0.0.1 only; `localhost` may also resolve to
    // ::1, where the connect is refused and Happy Eyeballs moves on at once.
    let server = echo_server();
    let url = format!("ws://localhost:{}/socket", server.port);
    let a = attack(&url, 2000, &round_trip("name", "name"));
    a.reason(None);
    assert_eq!(
        a.record.meta.remote_addr.as_deref(),
        Some(server.addr().as_str())
    );
}

// ---------------------------------------------------------------------------
// More: CPU-heavy answers, redirects, several runs
// ---------------------------------------------------------------------------

#[test]
fn endless_header_value_one_byte_per_write_is_bounded() {
    // No sleep: one byte per write (TCP_NODELAY), so the probe may see many
    // tiny reads, each one re-parsing the head so far.
    let server = spawn_server(|mut stream, tx| {
        if read_upgrade(&mut stream, tx).is_none() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let head = b"HTTP/1.1 101 Switching Protocols\r\nX-Filler: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
        }
    });
    let a = attack(&server.url(), 1000, &["--interpretation", HS]);
    let reason = a.record.reason.as_deref();
    assert!(
        matches!(
            reason,
            Some("ws_open_failed") | Some("ws_handshake_timeout")
        ),
        "{:#?}",
        a.record
    );
    a.phase("upgrade");
}

#[test]
fn long_expectation_against_large_non_matching_replies_keeps_the_deadline() {
    // A 4 KiB expect_message and 1 MiB replies that match all but its last
    // byte everywhere: a naive substring search costs 4 G comparisons per
    // reply, CPU time no socket timeout can cut.
    let expect: &'static str = Box::leak(("a".repeat(4095) + "b").into_boxed_str());
    let reply = frame(true, 0x1, &vec![b'a'; 1024 * 1024 - 16]);
    let server = flood_after_message_server(reply);
    let a = attack(&server.url(), 1000, &round_trip("ping", expect));
    a.reason(Some("ws_reply_mismatch"));
    let total = a.record.timings().total_ms.unwrap_or(f64::MAX);
    assert!(
        total <= 1000.0 + 250.0,
        "the measurement must end by the deadline: total_ms {total}"
    );
}

/// A 302 whose `Location` holds the password "hunter2": the record's
/// `meta.location` is `redacted`, and the password is nowhere in it.
fn assert_redirect_redacted(location: &str, redacted: &str) {
    let server = http_status_server("302 Found", format!("Location: {location}\r\n"));
    let a = attack(&server.url(), 2000, &["--interpretation", HS]);
    a.reason(Some("ws_open_failed")).phase("upgrade");
    assert_eq!(a.record.meta.http_status, Some(302));
    assert!(
        !a.run.stdout.contains("hunter2"),
        "a password from the server's Location reached the record:\n{}",
        a.run.stdout
    );
    assert_eq!(a.record.meta.location.as_deref(), Some(redacted));
}

#[test]
fn redirect_to_a_scheme_relative_url_with_credentials_is_redacted() {
    // RFC 3986 section 4.2: `//user:pass@host/path` is a network-path
    // reference, a valid Location. SPEC, "The record": userinfo is written
    // as REDACTED@, in meta.location likewise.
    assert_redirect_redacted(
        "//bob:hunter2@cdn.example/socket?room=1",
        "//REDACTED@cdn.example/socket?room=1",
    );
}

#[test]
fn redirect_with_a_second_scheme_separator_keeps_the_userinfo_redacted() {
    // Found by fuzzing (fuzz/fuzz_targets/url_redaction.rs): the `://`
    // after the authority was taken for the scheme's, and the password
    // before it reached meta.location.
    assert_redirect_redacted(
        "//bob:hunter2@cdn.example://socket",
        "//REDACTED@cdn.example://socket",
    );
}

#[test]
fn redirect_with_a_token_in_the_fragment_is_redacted() {
    // The contract names query parameters; an OAuth-style implicit redirect
    // puts `access_token` in the fragment instead. Contract silent on the
    // fragment; an operator expects "secrets never reach a record" to hold
    // for it too.
    let server = http_status_server(
        "302 Found",
        "Location: https://sso.example/cb#access_token=s3cr3tvalue&state=x\r\n".to_owned(),
    );
    let a = attack(&server.url(), 2000, &["--interpretation", HS]);
    a.reason(Some("ws_open_failed"));
    assert!(
        !a.run.stdout.contains("s3cr3tvalue"),
        "a token from the server's Location reached the record:\n{}",
        a.run.stdout
    );
}

#[test]
fn ping_between_fragments_is_answered_and_the_reply_matches() {
    // RFC 6455 section 5.4: control frames may be injected between the
    // fragments of a message.
    let mut bytes = frame(false, 0x1, b"po");
    bytes.extend(frame(true, 0x9, b"mid"));
    bytes.extend(frame(true, 0x0, b"ng"));
    let server = after_message_server(bytes);
    let a = attack(&server.url(), 2000, &round_trip("ping", "pong"));
    a.reason(None);
    assert_eq!(a.record.meta.skipped_messages, Some(0));
    let pong = server.wait_for("the probe's Pong", |e| match e {
        Event::Pong(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(pong, b"mid");
}

#[test]
fn every_run_of_a_count_gets_its_record_whatever_the_server_does() {
    // Connection k gets behaviour k: garbage, a masked frame, TCP dropped,
    // a Close with code 999, then a good echo. No record may go missing.
    let index = Arc::new(AtomicU64::new(0));
    let server = spawn_server(move |stream, tx| {
        let k = index.fetch_add(1, Ordering::SeqCst);
        let mut stream = stream;
        if k == 0 {
            if read_upgrade(&mut stream, tx).is_some()
                && stream.write_all(&[0xde, 0xad, 0xbe, 0xef]).is_ok()
            {
                drain(&mut stream, tx);
            }
            return;
        }
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        if !first_text(&mut ws, tx) {
            return;
        }
        let bytes = match k {
            1 => masked_frame(0x1, b"pong"),
            2 => return,
            3 => raw_close(&close_payload(999, b"")),
            _ => frame(true, 0x1, b"pong"),
        };
        if ws.get_mut().write_all(&bytes).is_ok() {
            serve_messages(&mut ws, tx, |_, _| {});
        }
    });
    let url = server.url();
    let mut args = vec![url.as_str(), "--timeout-ms", "1000"];
    args.extend(round_trip("ping", "pong"));
    args.extend(["--count", "5", "--interval-ms", "0"]);
    let run = probe(&args);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let reasons: Vec<Option<String>> = run.records().into_iter().map(|r| r.reason).collect();
    let expected = [
        Some("ws_open_failed"),
        Some("ws_reply_mismatch"),
        Some("ws_closed_early"),
        Some("ws_closed_early"),
        None,
    ];
    assert_eq!(
        reasons,
        expected.map(|r| r.map(str::to_owned)).to_vec(),
        "stdout:\n{}",
        run.stdout
    );
    assert_eq!(run.code, 1);
}

#[test]
fn tls_close_notify_instead_of_server_hello_is_bounded() {
    // A plaintext close_notify alert as the first answer, TCP left open.
    // rustls deliberately ignores an unauthenticated close_notify, so the
    // handshake waits on; the contract is silent. Either a prompt
    // ws_open_failed or ws_handshake_timeout at the deadline, in tls.
    let server = spawn_server(|mut stream, tx| {
        let mut hello = [0u8; 512];
        if stream.read(&mut hello).is_err() {
            return;
        }
        if stream
            .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00])
            .is_ok()
        {
            drain(&mut stream, tx);
        }
    });
    let a = attack(&wss_url(&server), 1000, &["--interpretation", HS]);
    let reason = a.record.reason.as_deref();
    assert!(
        matches!(
            reason,
            Some("ws_open_failed") | Some("ws_handshake_timeout")
        ),
        "{:#?}",
        a.record
    );
    a.phase("tls");
}

#[test]
fn tls_warning_alert_flood_during_the_handshake_is_bounded() {
    // Warning alerts (user_canceled) forever instead of a ServerHello.
    let server = spawn_server(|mut stream, tx| {
        let mut hello = [0u8; 512];
        if stream.read(&mut hello).is_err() {
            return;
        }
        flood(
            &mut stream,
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x5a].repeat(4096),
        );
        let _ = tx.send(Event::EndedWithoutClose);
    });
    let a = attack(&wss_url(&server), 1000, &["--interpretation", HS]);
    let reason = a.record.reason.as_deref();
    assert!(
        matches!(
            reason,
            Some("ws_open_failed") | Some("ws_handshake_timeout")
        ),
        "{:#?}",
        a.record
    );
    a.phase("tls");
}

#[test]
fn tls_key_update_flood_instead_of_a_reply_is_bounded() {
    // After the open, TLS 1.3 KeyUpdate requests as fast as they go.
    let material = TlsMaterial::generate();
    let server = tls_server(&material, |tls, tx| {
        let Some(head) = read_request_head(tls) else {
            return;
        };
        let accept = accept_for_head(&head, tx);
        if tls.write_all(good_101(&accept).as_bytes()).is_err() {
            return;
        }
        let mut frame_start = [0u8; 2];
        if tls.read_exact(&mut frame_start).is_err() {
            return;
        }
        loop {
            if tls.conn.refresh_traffic_keys().is_err() {
                break;
            }
            if tls.conn.write_tls(&mut tls.sock).is_err() {
                break;
            }
        }
        let _ = tx.send(Event::EndedWithoutClose);
    });
    let ca = material.ca_pem.to_str().expect("utf-8 path");
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--ca-file", ca]);
    let a = attack(&wss_url(&server), 1000, &args);
    assert_eq!(a.record.meta.tls_version.as_deref(), Some("TLSv1.3"));
    let reason = a.record.reason.as_deref();
    assert!(
        matches!(
            reason,
            Some("ws_reply_mismatch") | Some("ws_closed_early") | Some("ws_reply_timeout")
        ),
        "{:#?}",
        a.record
    );
}

#[test]
fn tls_fatal_alert_instead_of_a_reply_is_closed_early() {
    // The server sends a fatal TLS alert (internal_error) after the open: it
    // ended the connection, without a WebSocket Close.
    let material = TlsMaterial::generate();
    let server = tls_server(&material, |tls, tx| {
        let Some(head) = read_request_head(tls) else {
            return;
        };
        let accept = accept_for_head(&head, tx);
        if tls.write_all(good_101(&accept).as_bytes()).is_err() {
            return;
        }
        let mut frame_start = [0u8; 2];
        if tls.read_exact(&mut frame_start).is_err() {
            return;
        }
        // A fatal alert is rustls's answer to a peer error: feed it bytes
        // that are not TLS, and let it send its alert.
        let _ = tls.conn.read_tls(&mut &b"\x17\x03\x03\x00\x01\x00"[..]);
        let _ = tls.conn.process_new_packets();
        while tls.conn.wants_write() {
            if tls.conn.write_tls(&mut tls.sock).is_err() {
                return;
            }
        }
        drain(&mut tls.sock, tx);
    });
    let ca = material.ca_pem.to_str().expect("utf-8 path");
    let mut args = round_trip("ping", "pong").to_vec();
    args.extend(["--ca-file", ca]);
    let a = attack(&wss_url(&server), 2000, &args);
    a.reason(Some("ws_closed_early"))
        .ended_early(2000)
        .has_error();
}

/// Runs `once` with a 16 MiB `send_message` against `url`, whose server
/// answers the upgrade and then reads nothing. 16 MiB is more than
/// loopback's send and receive buffers hold together, so the write stalls
/// once they are full; the wait for room must end at the deadline like any
/// other (a socket send timeout ran 1.7 s late). Checks the record and
/// returns how long the whole run took.
fn large_send_to_a_non_reader(url: &str, ca_file: Option<&str>) -> Duration {
    let dir = TempDir::new("hostile-no-reader");
    let timeout_ms = 2000;
    let mut probe = serde_json::json!({
        "name": "big",
        "url": url,
        "interpretation": "round_trip_latency",
        "send_message": "x".repeat(16 << 20),
        "expect_message": "never",
        "timeout_ms": timeout_ms
    });
    if let Some(ca_file) = ca_file {
        probe["tls"] = serde_json::json!({ "ca_file": ca_file });
    }
    let config = serde_json::json!({ "probes": [probe] });
    let path = dir.write("config.json", &config.to_string());
    let run = run(&["once", "-c", path.to_str().unwrap()]);
    let record = run.record();
    assert_eq!(
        record.reason.as_deref(),
        Some("ws_reply_timeout"),
        "{record:#?}"
    );
    assert!(
        record
            .meta
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not reading")),
        "{record:#?}"
    );
    // A half-written frame leaves no room for a Close.
    assert_eq!(record.meta.close_clean, Some(false), "{record:#?}");
    let total = record.timings().total_ms.unwrap_or(f64::MAX);
    assert!(
        total < timeout_ms as f64 + 50.0,
        "total_ms {total} passes timeout_ms {timeout_ms}: {record:#?}"
    );
    run.elapsed
        .saturating_sub(Duration::from_millis(timeout_ms))
}

/// How long a stuck run may take past its timeout: start-up with a 16 MiB
/// config and the teardown, but not the 1 s close wait, which a stuck
/// connection skips.
const STUCK_TEARDOWN: Duration = Duration::from_millis(700);

#[test]
fn a_server_that_reads_nothing_cannot_hold_a_large_send_past_the_deadline() {
    let server = spawn_server(|mut stream, tx| {
        let Some(accept) = read_upgrade(&mut stream, tx) else {
            return;
        };
        if stream.write_all(good_101(&accept).as_bytes()).is_err() {
            return;
        }
        // Reads nothing, and keeps the connection until the test is over.
        thread::sleep(Duration::from_secs(10));
    });
    let over = large_send_to_a_non_reader(&server.url(), None);
    assert!(
        over < STUCK_TEARDOWN,
        "the run ended {over:?} after its timeout"
    );
}

#[test]
fn a_tls_server_that_reads_nothing_cannot_hold_a_large_send_past_the_deadline() {
    let material = TlsMaterial::generate();
    let server = tls_server(&material, |tls, tx| {
        let Some(head) = read_request_head(tls) else {
            return;
        };
        let accept = accept_for_head(&head, tx);
        if tls.write_all(good_101(&accept).as_bytes()).is_err() {
            return;
        }
        thread::sleep(Duration::from_secs(10));
    });
    let ca = material.ca_pem.to_str().expect("utf-8 path");
    let over = large_send_to_a_non_reader(&wss_url(&server), Some(ca));
    // No close_notify either: it would queue behind the half-sent frame
    // and wait out the close's second.
    assert!(
        over < STUCK_TEARDOWN,
        "the run ended {over:?} after its timeout"
    );
}
