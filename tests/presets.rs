//! Presets, preludes, binary messages and samples (issue 13) through the
//! real binary, against the real servers of each protocol:
//!
//! - npm graphql-ws, subscriptions-transport-ws, socket.io, aedes (+
//!   websocket-stream), stomp-broker-js, @foundry-rs/anvil, run by
//!   `tests/presets/servers.js` (or directly: anvil);
//! - PyPI python-socketio (`tests/presets/socketio_server.py`) and
//!   aiosignalr (`tests/presets/signalr_server.py`);
//! - Debian mosquitto with a websockets listener, configured here;
//! - Phoenix: a FAKE in `servers.js`, written from the protocol (there is
//!   no Phoenix server on npm, PyPI or Debian).
//!
//! Everything is installed by `.ci/install-proto.sh` under
//! /opt/wsprobe-proto (override with `WSPROBE_TEST_PROTO`). Missing, a test
//! prints why and passes, except under `CI=true`, where it fails.

#[path = "../benches/support/proto.rs"]
mod proto;
mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::{free_port, probe, skip_or_fail, Process, Record, Run, TempDir};

const SERVERS_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/presets/servers.js");
const SOCKETIO_PY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/presets/socketio_server.py"
);
const READY_WAIT: Duration = Duration::from_secs(20);
const INTERPRETATIONS: [&str; 3] = [
    "handshake_latency",
    "round_trip_latency",
    "connection_success",
];

fn proto_root() -> PathBuf {
    std::env::var_os("WSPROBE_TEST_PROTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/wsprobe-proto"))
}

/// A running server and the port it listens on.
struct Server {
    port: u16,
    _process: Process,
}

/// Starts `cmd` (stdin piped: its end stops the server) and waits until
/// its first stdout line arrives, which `port_of` turns into the port.
fn start(mut cmd: Command, what: &str, port_of: impl Fn(&str) -> Option<u16>) -> Server {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let process = Process(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(READY_WAIT)
        .unwrap_or_else(|_| panic!("{what} did not become ready"));
    let port = port_of(line.trim()).unwrap_or_else(|| panic!("{what} said {line:?}"));
    Server {
        port,
        _process: process,
    }
}

/// Waits until something accepts TCP connections on `port`.
fn await_listening(port: u16, what: &str) {
    let until = Instant::now() + READY_WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} is not listening on {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A `servers.js` mode, or `None` (skipped) without node or the packages.
fn node(mode: &str, refuse: bool) -> Option<Server> {
    let root = proto_root();
    if !root.join("node_modules").is_dir()
        || Command::new("node").arg("--version").output().is_err()
    {
        skip_or_fail(&format!(
            "node or the npm packages in {} are missing (.ci/install-proto.sh)",
            root.display()
        ));
        return None;
    }
    let mut cmd = Command::new("node");
    cmd.arg(SERVERS_JS).arg(mode).arg(&root);
    if refuse {
        cmd.arg("--refuse");
    }
    Some(start(cmd, mode, |l| l.parse().ok()))
}

fn url(server: &Server, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", server.port)
}

/// `wsprobe probe URL --preset PRESET --interpretation I ARGS...`.
fn run_preset(url: &str, preset: &str, interpretation: &str, args: &[&str]) -> Run {
    let mut full = vec![
        url,
        "--preset",
        preset,
        "--interpretation",
        interpretation,
        "--timeout-ms",
        "5000",
    ];
    full.extend_from_slice(args);
    probe(&full)
}

/// A good record of `interpretation`; `context` names the server.
fn assert_good(run: &Run, interpretation: &str, context: &str) -> Record {
    let rec = run.record();
    let why = || format!("{context}: record {rec:#?}\nstderr:\n{}", run.stderr);
    assert_eq!(rec.reason, None, "{}", why());
    assert_eq!(run.code, 0, "{}", why());
    assert_eq!(rec.interpretation, interpretation, "{}", why());
    let value = rec.value.unwrap_or_else(|| panic!("no value; {}", why()));
    match interpretation {
        "connection_success" => assert_eq!(value, 1.0, "{}", why()),
        _ => assert!(value > 0.0, "{}", why()),
    }
    if interpretation == "round_trip_latency" {
        assert_eq!(rec.timings().rtt_ms, Some(value), "{}", why());
    }
    rec
}

/// A good run in every interpretation; returns the round-trip record.
fn good_everywhere(url: &str, preset: &str, args: &[&str], context: &str) -> Record {
    let mut round_trip = None;
    for interpretation in INTERPRETATIONS {
        let run = run_preset(url, preset, interpretation, args);
        let rec = assert_good(&run, interpretation, context);
        if interpretation == "round_trip_latency" {
            round_trip = Some(rec);
        }
    }
    round_trip.expect("a round-trip run")
}

/// A round-trip run the server refuses, saying `error`.
fn rtt_refused(url: &str, preset: &str, error: &str) -> Record {
    let run = run_preset(url, preset, "round_trip_latency", &[]);
    assert_failed(&run, "ws_reply_mismatch", error)
}

/// A round-trip run with one preset option (`key=value`).
fn with_option(url: &str, preset: &str, option: &str) -> Run {
    run_preset(
        url,
        preset,
        "round_trip_latency",
        &["--preset-option", option],
    )
}

/// A round-trip run of `count` samples, 10 ms apart, all answered.
fn all_samples_back(url: &str, preset: &str, count: u32, args: &[&str], context: &str) {
    let count_text = count.to_string();
    let mut full = vec!["--samples", &count_text, "--sample-interval-ms", "10"];
    full.extend_from_slice(args);
    let run = run_preset(url, preset, "round_trip_latency", &full);
    let rec = assert_good(&run, "round_trip_latency", context);
    let samples = rec.meta.samples.expect("meta.samples");
    assert_eq!(
        (samples.sent, samples.received),
        (count, count),
        "{context}: {samples:?}"
    );
}

/// A failed record with `reason`, whose `meta.error` contains `error`.
fn assert_failed(run: &Run, reason: &str, error: &str) -> Record {
    let rec = run.record();
    let why = || format!("record {rec:#?}\nstderr:\n{}", run.stderr);
    assert_eq!(rec.reason.as_deref(), Some(reason), "{}", why());
    assert_eq!(run.code, 1, "{}", why());
    let said = rec.meta.error.clone().unwrap_or_default();
    assert!(
        said.contains(error),
        "error {said:?} lacks {error:?}; {}",
        why()
    );
    rec
}

// ---------------------------------------------------------------------------
// GraphQL
// ---------------------------------------------------------------------------

#[test]
fn graphql_transport_ws_against_graphql_ws() {
    let Some(server) = node("graphql-transport-ws", false) else {
        return;
    };
    let url = url(&server, "/graphql");
    let rec = good_everywhere(&url, "graphql-transport-ws", &[], "graphql-ws");
    assert_eq!(
        rec.meta.subprotocol.as_deref(),
        Some("graphql-transport-ws")
    );
    assert!(rec.timings().prelude_ms.is_some(), "{rec:#?}");

    all_samples_back(&url, "graphql-transport-ws", 5, &[], "graphql-ws samples");

    // The protocol's commonest failure: no subprotocol offered -> 4406.
    let run = probe(&[
        &url,
        "--interpretation",
        "round_trip_latency",
        "--send",
        r#"{"type":"connection_init"}"#,
    ]);
    let rec = assert_failed(&run, "ws_closed_early", "closed");
    assert_eq!(rec.meta.close_code, Some(4406), "{rec:#?}");
}

#[test]
fn graphql_transport_ws_init_refused_names_the_prelude_step() {
    let Some(server) = node("graphql-transport-ws", true) else {
        return;
    };
    for interpretation in INTERPRETATIONS {
        let run = run_preset(
            &url(&server, "/graphql"),
            "graphql-transport-ws",
            interpretation,
            &[],
        );
        let rec = assert_failed(&run, "ws_closed_early", "closed");
        assert_eq!(rec.meta.close_code, Some(4403), "{rec:#?}");
        assert_eq!(rec.meta.step.as_deref(), Some("prelude[0]"), "{rec:#?}");
        if interpretation == "connection_success" {
            assert_eq!(rec.value, Some(0.0), "the prelude failed: {rec:#?}");
        } else {
            assert_eq!(rec.value, None, "{rec:#?}");
        }
    }
}

#[test]
fn graphql_ws_legacy_against_subscriptions_transport_ws() {
    let Some(server) = node("graphql-ws", false) else {
        return;
    };
    let url = url(&server, "/graphql");
    let rec = good_everywhere(&url, "graphql-ws", &[], "subscriptions-transport-ws");
    assert_eq!(rec.meta.subprotocol.as_deref(), Some("graphql-ws"));
    all_samples_back(&url, "graphql-ws", 4, &[], "legacy samples");
}

#[test]
fn graphql_ws_legacy_connection_error_is_a_mismatch() {
    let Some(server) = node("graphql-ws", true) else {
        return;
    };
    let rec = rtt_refused(&url(&server, "/graphql"), "graphql-ws", "bad token");
    assert_eq!(rec.meta.step.as_deref(), Some("prelude[0]"));
}

// ---------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------

#[test]
fn socket_io_against_node_socket_io() {
    let Some(server) = node("socket.io", false) else {
        return;
    };
    let rec = good_everywhere(&url(&server, "/socket.io/"), "socket.io", &[], "socket.io");
    assert_eq!(rec.meta.subprotocol, None);
}

#[test]
fn socket_io_connect_error_is_a_mismatch() {
    let Some(server) = node("socket.io", true) else {
        return;
    };
    rtt_refused(&url(&server, "/socket.io/"), "socket.io", "Not authorized");
}

#[test]
fn socket_io_keepalive_is_answered_during_the_run() {
    // A fake: it answers the CONNECT only once its ping `2` got its `3`.
    let Some(server) = node("sio-ping-first", false) else {
        return;
    };
    let run = run_preset(
        &url(&server, "/socket.io/"),
        "socket.io",
        "round_trip_latency",
        &[],
    );
    let rec = assert_good(&run, "round_trip_latency", "ping-first fake");
    assert_eq!(
        rec.meta.skipped_messages,
        Some(0),
        "the ping was answered, not skipped"
    );
}

#[test]
fn socket_io_against_python_socketio() {
    let python = Path::new("/opt/wsprobe-test/bin/python");
    if !python.exists() {
        skip_or_fail("/opt/wsprobe-test has no python (.ci/run, .ci/install-proto.sh)");
        return;
    }
    let mut cmd = Command::new(python);
    cmd.arg(SOCKETIO_PY);
    let server = start(cmd, "python-socketio", |l| l.parse().ok());
    good_everywhere(
        &url(&server, "/socket.io/"),
        "socket.io",
        &[],
        "python-socketio",
    );
}

// ---------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------

/// mosquitto with a websockets listener; `anonymous` allows CONNECT
/// without credentials. Its MQTT listener is needed too: a websockets-only
/// config does not start (mosquitto issue #2284).
fn mosquitto(dir: &TempDir, anonymous: bool) -> Option<Server> {
    let binary = Path::new("/usr/sbin/mosquitto");
    if !binary.exists() {
        skip_or_fail("mosquitto is not installed (.ci/install-proto.sh)");
        return None;
    }
    // A port picked free may be taken by the time mosquitto binds it (its
    // websockets listener binds every address): then it exits, and we try
    // again with new ports.
    let mut log = String::new();
    for attempt in 0..3 {
        let (mqtt, ws) = (free_port(), free_port());
        let conf = dir.write(
            "mosquitto.conf",
            &format!(
                "listener {mqtt} 127.0.0.1\nprotocol mqtt\nlistener {ws}\nprotocol websockets\n\
                 socket_domain ipv4\nallow_anonymous {anonymous}\nlog_dest stderr\n"
            ),
        );
        let log_path = dir.join(&format!("mosquitto-{attempt}.log"));
        let log_file = std::fs::File::create(&log_path).expect("create the log");
        let mut cmd = Command::new(binary);
        cmd.arg("-c")
            .arg(conf)
            .stdin(Stdio::piped())
            .stderr(log_file);
        let mut process = Process(cmd.spawn().expect("spawn mosquitto"));
        let until = Instant::now() + READY_WAIT;
        while Instant::now() < until {
            if TcpStream::connect(("127.0.0.1", ws)).is_ok() {
                return Some(Server {
                    port: ws,
                    _process: process,
                });
            }
            if let Ok(Some(_)) = process.0.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        log = std::fs::read_to_string(&log_path).unwrap_or_default();
    }
    panic!("mosquitto did not start:\n{log}");
}

#[test]
fn mqtt_against_mosquitto_both_versions() {
    let dir = TempDir::new("mosquitto");
    let Some(server) = mosquitto(&dir, true) else {
        return;
    };
    let url = url(&server, "/");
    let rec = good_everywhere(&url, "mqtt", &[], "mosquitto");
    assert_eq!(rec.meta.subprotocol.as_deref(), Some("mqtt"));
    good_everywhere(
        &url,
        "mqtt",
        &["--preset-option", "version=5"],
        "mosquitto v5",
    );
    all_samples_back(&url, "mqtt", 5, &[], "mosquitto samples");
}

#[test]
fn mqtt_bad_credentials_are_connack_5() {
    let dir = TempDir::new("mosquitto");
    let Some(server) = mosquitto(&dir, false) else {
        return;
    };
    for interpretation in INTERPRETATIONS {
        let run = run_preset(&url(&server, "/"), "mqtt", interpretation, &[]);
        let rec = assert_failed(
            &run,
            "ws_reply_mismatch",
            "CONNACK refused: 5 (not authorized)",
        );
        assert_eq!(rec.meta.step.as_deref(), Some("prelude[0]"));
    }
}

#[test]
fn mqtt_against_aedes_and_its_refusals() {
    let Some(server) = node("aedes", false) else {
        return;
    };
    let url = url(&server, "/");
    good_everywhere(&url, "mqtt", &[], "aedes");
    // aedes speaks 3.1.1 only: an MQTT 5 CONNECT fails cleanly.
    let run = with_option(&url, "mqtt", "version=5");
    assert_failed(&run, "ws_reply_mismatch", "unacceptable protocol version");
    let Some(refusing) = node("aedes", true) else {
        return;
    };
    let run = run_preset(
        &self::url(&refusing, "/"),
        "mqtt",
        "connection_success",
        &[],
    );
    let rec = assert_failed(&run, "ws_reply_mismatch", "CONNACK refused: 5");
    assert_eq!(rec.value, Some(0.0));
}

// ---------------------------------------------------------------------------
// STOMP, Phoenix, SignalR, JSON-RPC
// ---------------------------------------------------------------------------

#[test]
fn stomp_against_stomp_broker_js() {
    let Some(server) = node("stomp", false) else {
        return;
    };
    let rec = good_everywhere(&url(&server, "/stomp"), "stomp", &[], "stomp-broker-js");
    assert_eq!(rec.meta.subprotocol.as_deref(), Some("v12.stomp"));
}

#[test]
fn stomp_error_frame_is_a_mismatch() {
    let Some(server) = node("stomp", true) else {
        return;
    };
    let url = url(&server, "/stomp");
    let run = with_option(&url, "stomp", "login=wrong");
    let rec = assert_failed(&run, "ws_reply_mismatch", "STOMP ERROR: CONNECTION ERROR");
    assert_eq!(rec.meta.step.as_deref(), Some("prelude[0]"));
    let run = with_option(&url, "stomp", "login=right");
    assert_good(&run, "round_trip_latency", "stomp login");
}

#[test]
fn phoenix_against_a_fake_written_from_the_protocol() {
    let Some(server) = node("phoenix", false) else {
        return;
    };
    let url = url(&server, "/socket/websocket");
    good_everywhere(&url, "phoenix", &[], "phoenix fake");
    all_samples_back(&url, "phoenix", 5, &[], "phoenix samples");
}

#[test]
fn signalr_against_aiosignalr() {
    let python = proto::signalr_python(&proto_root());
    if !python.exists() {
        skip_or_fail("aiosignalr's venv is missing (.ci/install-proto.sh)");
        return;
    }
    let port = free_port();
    let server = start(proto::signalr(&python, port), "aiosignalr", |l| {
        (l == "ready").then_some(port)
    });
    let url = url(&server, "/hub");
    good_everywhere(&url, "signalr", &[], "aiosignalr handshake");
    let invoke = [
        "--preset-option",
        "invoke=echo",
        "--preset-option",
        r#"arguments=["hi"]"#,
    ];
    all_samples_back(&url, "signalr", 4, &invoke, "aiosignalr invoke");
    let run = with_option(&url, "signalr", "invoke=nope");
    assert_failed(&run, "ws_reply_mismatch", "hub error");
}

#[test]
fn json_rpc_against_anvil() {
    let binary = proto::anvil_binary(&proto_root());
    if !binary.exists() {
        skip_or_fail("anvil is missing (.ci/install-proto.sh)");
        return;
    }
    let port = free_port();
    let process = Process(proto::anvil(&binary, port).spawn().expect("spawn anvil"));
    await_listening(port, "anvil");
    let server = Server {
        port,
        _process: process,
    };
    let url = url(&server, "/");
    good_everywhere(&url, "json-rpc", &[], "anvil");
    let method = ["--preset-option", "method=eth_blockNumber"];
    all_samples_back(&url, "json-rpc", 5, &method, "anvil samples");
    let run = with_option(&url, "json-rpc", "method=no_such_method");
    assert_failed(&run, "ws_reply_mismatch", "JSON-RPC error");
}

// ---------------------------------------------------------------------------
// Samples, binary messages and the prelude without a preset
// ---------------------------------------------------------------------------

#[test]
fn samples_against_a_server_that_drops_every_other_reply() {
    let Some(server) = node("drop-odd", false) else {
        return;
    };
    let url = url(&server, "/");
    let mut args = vec![
        url.as_str(),
        "--interpretation",
        "round_trip_latency",
        "--send",
        "ping ${SEQ}",
        "--expect",
        "ping ${SEQ}",
        "--samples",
        "6",
        "--sample-timeout-ms",
        "200",
        "--sample-interval-ms",
        "10",
    ];
    let run = probe(&args);
    let rec = assert_good(&run, "round_trip_latency", "drop-odd");
    let samples = rec.meta.samples.clone().expect("meta.samples");
    assert_eq!((samples.sent, samples.received), (6, 3), "{rec:#?}");
    let (min, max) = (samples.min_ms.unwrap(), samples.max_ms.unwrap());
    let value = rec.value.unwrap();
    assert!(min <= value && value <= max, "{rec:#?}");
    assert!(samples.mean_ms.is_some() && samples.mdev_ms.is_some());

    args.push("--human");
    let run = probe(&args);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let line = "samples: 6 sent, 3 received";
    assert!(run.stdout.contains(line), "{}", run.stdout);
}

#[test]
fn a_late_reply_is_never_taken_for_a_later_sample() {
    // Odd messages are answered 150 ms late, past the 100 ms sample timeout:
    // the late echo of "ping 1" arrives while sample 3 waits (sent at about
    // 120 ms), and ${SEQ} makes it a skipped message, not sample 3's reply.
    let Some(server) = node("late-odd", false) else {
        return;
    };
    let url = url(&server, "/");
    let run = probe(&[
        url.as_str(),
        "--interpretation",
        "round_trip_latency",
        "--send",
        "ping ${SEQ}",
        "--expect",
        "ping ${SEQ}",
        "--samples",
        "4",
        "--sample-timeout-ms",
        "100",
        "--sample-interval-ms",
        "10",
    ]);
    let rec = assert_good(&run, "round_trip_latency", "late-odd");
    let samples = rec.meta.samples.clone().expect("meta.samples");
    assert_eq!((samples.sent, samples.received), (4, 2), "{rec:#?}");
    assert!(rec.meta.skipped_messages >= Some(1), "{rec:#?}");
    assert!(
        samples.max_ms.unwrap() < 100.0,
        "no late reply counted: {rec:#?}"
    );
}

#[test]
fn binary_messages_are_sent_and_matched_as_bytes() {
    let Some(server) = node("echo", false) else {
        return;
    };
    let url = url(&server, "/");
    // send flag, message, expect flag, expectation
    let round_trip = |send: [&str; 2], expect: [&str; 2]| {
        let url = url.as_str();
        let head = [
            url,
            "--interpretation",
            "round_trip_latency",
            "--timeout-ms",
            "300",
        ];
        probe(&[&head[..], &send, &expect].concat())
    };
    let run = round_trip(["--send-hex", "c0 00 ff"], ["--expect-hex", "00ff"]);
    assert_good(&run, "round_trip_latency", "binary echo");
    // Text bytes match a binary reply too, and a mismatch shows hex.
    let run = round_trip(["--send-hex", "6869"], ["--expect", "hi"]);
    assert_good(&run, "round_trip_latency", "text matches binary");
    let run = round_trip(["--send-hex", "c000"], ["--expect-hex", "d000"]);
    let rec = assert_failed(&run, "ws_reply_mismatch", "none matched");
    assert_eq!(rec.meta.last_reply.as_deref(), Some("hex:c000"));
}

#[test]
fn a_prelude_runs_before_the_measured_exchange_in_every_interpretation() {
    let Some(server) = node("echo", false) else {
        return;
    };
    let dir = TempDir::new("prelude");
    for interpretation in INTERPRETATIONS {
        let exchange = if interpretation == "round_trip_latency" {
            r#""send_message": "measured", "expect_message": "measured","#
        } else {
            ""
        };
        let config = format!(
            r#"{{"probes": [
              {{"name": "good", "url": "{url}", "interpretation": "{interpretation}", {exchange}
                "prelude": [{{"send": "hello ${{WSPROBE_TEST_PRELUDE}}", "expect": "hello"}},
                             {{"send": {{"hex": "0102"}}}}, {{"expect": {{"base64": "AQI="}}}}]}},
              {{"name": "bad", "url": "{url}", "interpretation": "{interpretation}", {exchange}
                "timeout_ms": 300,
                "prelude": [{{"send": "one", "expect": "one"}},
                            {{"send": "two", "expect": "three"}}]}}
            ]}}"#,
            url = url(&server, "/"),
        );
        let path = dir.write("prelude.json", &config);
        let mut cmd = support::wsprobe();
        cmd.args(["once", "-c"])
            .arg(&path)
            .env("WSPROBE_TEST_PRELUDE", "s3cret");
        let run = support::run_command(cmd);
        let good = run.by_probe("good");
        assert_eq!(good.reason, None, "{interpretation}: {good:#?}");
        assert!(good.timings().prelude_ms.is_some(), "{good:#?}");
        // The expanded secret went out and came back, but never into a record.
        assert!(!run.stdout.contains("s3cret"), "{}", run.stdout);
        let bad = run.by_probe("bad");
        assert_eq!(bad.reason.as_deref(), Some("ws_reply_mismatch"), "{bad:#?}");
        assert_eq!(bad.meta.step.as_deref(), Some("prelude[1]"), "{bad:#?}");
        assert_eq!(bad.meta.last_reply.as_deref(), Some("two"), "{bad:#?}");
        let expected = (interpretation == "connection_success").then_some(0.0);
        assert_eq!(bad.value, expected, "{bad:#?}");
    }
}
