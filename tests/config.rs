//! The config file (SPEC.md, "Configuration file (JSON)"): every invalid
//! fixture in `tests/fixtures/config/` against the exact lines
//! `wsprobe check` prints for it, the valid fixtures, and the merge rules
//! (defaults applied only where they fit) through the library.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsprobe::config::{self, Config, ConfigError};
use wsprobe::exchange::{Expect, Message};
use wsprobe::spec::{Interpretation, ProbeSpec, RoundTripScope, Thresholds};

use support::{run_command, Run, TempDir};

const FIXTURES: &str = "tests/fixtures/config";

/// Never set by the tests: `${WSPROBE_TEST_UNSET}` must fail to load.
const UNSET_VAR: &str = "WSPROBE_TEST_UNSET";
const TOKEN_VAR: &str = "WSPROBE_TEST_TOKEN";
const TOKEN: &str = "s3cret-t0ken";

/// The problems of `invalid-many-problems.json`, five probes and three
/// sections deep: `check` must list every one.
const MANY_PROBLEMS: &[&str] = &[
    r#"output: format: unknown field"#,
    r#"defaults: tiemout_ms: unknown field (did you mean "timeout_ms"?)"#,
    r#"defaults: interval_ms: must be from 1000 to 86400000 (got 500)"#,
    r#"probes[1]: timeout_ms: must be from 100 to 30000 (got 50)"#,
    r#"probes[1]: name: "stream-open" is used by an earlier probe; names must be unique"#,
    r#"probes[2]: name: is missing; every probe needs a name"#,
    r#"probes[2]: url: must not have a #fragment (RFC 6455 section 3)"#,
    r#"probes[2]: send_message: is required for round_trip_latency"#,
    r#"probe "stream-rtt": headers.Host: cannot be set (the handshake sets it itself)"#,
    r#"probe "stream-rtt": labels.floor: must be a string (got 2)"#,
    r#"probe "stream-rtt": ping_mode: round_trip_latency needs ping_mode "message" (it sends send_message)"#,
    r#"probe "stream-up": thresholds: connection_success has fixed health (1 healthy, 0 unhealthy)"#,
    r#"probe "stream-up": tls: only wss:// probes take it"#,
];

/// Every invalid fixture and every problem `check` must print for it (each
/// line after the `wsprobe: FILE: ` prefix), no more and no fewer.
const INVALID: &[(&str, &[&str])] = &[
    // name
    (
        "invalid-name-missing.json",
        &[r#"probes[0]: name: is missing; every probe needs a name"#],
    ),
    (
        "invalid-name-bad-characters.json",
        &[r#"probes[0]: name: must be 1 to 64 of A-Z a-z 0-9 _ . - (got "edge probe!")"#],
    ),
    (
        "invalid-name-too-long.json",
        &[concat!(
            r#"probes[0]: name: must be 1 to 64 of A-Z a-z 0-9 _ . - (got ""#,
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            r#"")"#
        )],
    ),
    (
        "invalid-name-duplicate.json",
        &[r#"probes[1]: name: "edge" is used by an earlier probe; names must be unique"#],
    ),
    (
        // A probe with another problem still takes part in the uniqueness rule.
        "invalid-name-duplicate-with-other-error.json",
        &[
            r#"probe "edge": timeout_ms: must be from 100 to 30000 (got 50)"#,
            r#"probes[1]: name: "edge" is used by an earlier probe; names must be unique"#,
        ],
    ),
    // url
    (
        "invalid-url-missing.json",
        &[r#"probe "edge": url: is missing; every probe needs a ws:// or wss:// URL"#],
    ),
    (
        "invalid-url-not-ws.json",
        &[
            r#"probe "edge": url: must start with ws:// or wss://, not https:// (use wss:// for the same endpoint)"#,
        ],
    ),
    (
        "invalid-url-fragment.json",
        &[r#"probe "edge": url: must not have a #fragment (RFC 6455 section 3)"#],
    ),
    (
        "invalid-url-bad-port.json",
        &[r#"probe "edge": url: has a port that is not a number from 1 to 65535"#],
    ),
    (
        "invalid-url-no-host.json",
        &[r#"probe "edge": url: has no host"#],
    ),
    // interpretation, timeout_ms, interval_ms
    (
        "invalid-interpretation-unknown.json",
        &[
            r#"probe "edge": interpretation: must be one of handshake_latency, round_trip_latency or connection_success (got "round_trip") (did you mean "round_trip_latency"?)"#,
        ],
    ),
    (
        "invalid-timeout-out-of-range.json",
        &[r#"probe "edge": timeout_ms: must be from 100 to 30000 (got 50)"#],
    ),
    (
        "invalid-timeout-not-a-number.json",
        &[r#"probe "edge": timeout_ms: must be a whole number from 100 to 30000 (got "10s")"#],
    ),
    (
        "invalid-interval-out-of-range.json",
        &[r#"probe "edge": interval_ms: must be from 1000 to 86400000 (got 90000000)"#],
    ),
    (
        "invalid-interval-below-timeout.json",
        &[
            r#"probe "edge": interval_ms: (5000) must be at least timeout_ms (10000), so runs cannot overlap"#,
        ],
    ),
    // ping_mode and the round-trip fields
    (
        "invalid-ping-mode-none-on-round-trip.json",
        &[
            r#"probe "edge": ping_mode: round_trip_latency needs ping_mode "message" (it sends send_message)"#,
        ],
    ),
    (
        "invalid-ping-mode-message-on-handshake.json",
        &[
            r#"probe "edge": ping_mode: "message" is only for round_trip_latency, not handshake_latency"#,
        ],
    ),
    (
        "invalid-send-message-missing.json",
        &[r#"probe "edge": send_message: is required for round_trip_latency"#],
    ),
    (
        "invalid-round-trip-fields-on-handshake.json",
        &[
            r#"probe "edge": send_message: only round_trip_latency probes take it"#,
            r#"probe "edge": expect_message: only round_trip_latency probes take it"#,
            r#"probe "edge": round_trip_scope: only round_trip_latency probes take it"#,
        ],
    ),
    (
        "invalid-round-trip-fields-on-connection-success.json",
        &[
            r#"probe "edge": send_message: only round_trip_latency probes take it"#,
            r#"probe "edge": expect_message: only round_trip_latency probes take it"#,
            r#"probe "edge": round_trip_scope: only round_trip_latency probes take it"#,
        ],
    ),
    // protocols
    (
        "invalid-protocols-not-tokens.json",
        &[
            r#"probe "edge": protocols[1]: "chat v2" is not a valid token (letters, digits and !#$%&'*+-.^_`|~ only)"#,
            r#"probe "edge": protocols[2]: "" is not a valid token (letters, digits and !#$%&'*+-.^_`|~ only)"#,
        ],
    ),
    (
        "invalid-protocols-duplicate.json",
        &[r#"probe "edge": protocols[2]: "mqtt" is offered twice"#],
    ),
    // headers
    (
        "invalid-headers-bad-name.json",
        &[r#"probe "edge": headers.X Team: is not a valid header name"#],
    ),
    (
        // A Cookie value is secret even in an error (SPEC.md, "The record").
        "invalid-headers-crlf-value.json",
        &[
            r#"probe "edge": headers.Cookie: value contains CR, LF or NUL (values are never shown)"#,
            r#"probe "edge": headers.X-Nul: value contains CR, LF or NUL (values are never shown)"#,
            r#"probe "edge": headers.X-Site: value contains CR, LF or NUL (values are never shown)"#,
            r#"probe "edge": headers.X-Team: value contains CR, LF or NUL (values are never shown)"#,
        ],
    ),
    (
        "invalid-headers-host.json",
        &[r#"probe "edge": headers.Host: cannot be set (the handshake sets it itself)"#],
    ),
    (
        "invalid-headers-connection.json",
        &[r#"probe "edge": headers.Connection: cannot be set (the handshake sets it itself)"#],
    ),
    (
        "invalid-headers-upgrade.json",
        &[r#"probe "edge": headers.Upgrade: cannot be set (the handshake sets it itself)"#],
    ),
    (
        "invalid-headers-sec-websocket-key.json",
        &[
            r#"probe "edge": headers.Sec-WebSocket-Key: cannot be set (the handshake sets it itself)"#,
        ],
    ),
    (
        "invalid-headers-sec-websocket-protocol.json",
        &[
            r#"probe "edge": headers.Sec-WebSocket-Protocol: cannot be set (offer subprotocols with "protocols")"#,
        ],
    ),
    // labels, max_message_bytes
    (
        "invalid-labels-not-strings.json",
        &[
            r#"top level: labels.rack: must be a string (got 7)"#,
            r#"probe "edge": labels.floor: must be a string (got 2)"#,
            r#"probe "edge": labels.primary: must be a string (got true)"#,
        ],
    ),
    (
        "invalid-max-message-bytes-out-of-range.json",
        &[r#"probe "edge": max_message_bytes: must be from 1024 to 67108864 (got 512)"#],
    ),
    // thresholds
    (
        "invalid-thresholds-reversed.json",
        &[
            r#"probe "edge": thresholds: healthy_below (500) is above unhealthy_above (300); a value left out takes the default 200/1000"#,
        ],
    ),
    (
        "invalid-thresholds-default-stands-in.json",
        &[
            r#"probe "edge": thresholds: healthy_below (1500) is above unhealthy_above (1000); a value left out takes the default 200/1000"#,
        ],
    ),
    (
        "invalid-thresholds-default-stands-in-low.json",
        &[
            r#"probe "edge": thresholds: healthy_below (200) is above unhealthy_above (150); a value left out takes the default 200/1000"#,
        ],
    ),
    (
        "invalid-thresholds-on-connection-success.json",
        &[
            r#"probe "edge": thresholds: connection_success has fixed health (1 healthy, 0 unhealthy)"#,
        ],
    ),
    // tls
    (
        "invalid-tls-on-ws.json",
        &[r#"probe "edge": tls: only wss:// probes take it"#],
    ),
    (
        "invalid-tls-ca-file-missing.json",
        &[
            r#"probe "edge": tls.ca_file: cannot read /nonexistent/wsprobe-test-ca.pem: I/O error: No such file or directory (os error 2)"#,
        ],
    ),
    (
        // "ca_file must exist ... when the config loads", whatever else is set.
        "invalid-tls-ca-file-missing-with-insecure.json",
        &[
            r#"probe "edge": tls.ca_file: cannot read /nonexistent/wsprobe-test-ca.pem: I/O error: No such file or directory (os error 2)"#,
        ],
    ),
    (
        // The URL is plainly wss://; its fragment must not hide the ca_file.
        "invalid-tls-ca-file-missing-with-bad-url.json",
        &[
            r#"probe "edge": url: must not have a #fragment (RFC 6455 section 3)"#,
            r#"probe "edge": tls.ca_file: cannot read /nonexistent/wsprobe-test-ca.pem: I/O error: No such file or directory (os error 2)"#,
        ],
    ),
    (
        "invalid-tls-ca-file-not-pem.json",
        &[r#"probe "edge": tls.ca_file: /dev/null holds no PEM certificate"#],
    ),
    (
        "invalid-tls-unknown-key.json",
        &[
            r#"probe "edge": tls.insecure_skip_verfy: unknown field (did you mean "insecure_skip_verify"?)"#,
        ],
    ),
    // unknown fields at every level
    (
        "invalid-unknown-top-level.json",
        &[r#"top level: lables: unknown field (did you mean "labels"?)"#],
    ),
    (
        "invalid-unknown-in-defaults.json",
        &[
            r#"defaults: colour: unknown field"#,
            r#"defaults: intervall_ms: unknown field (did you mean "interval_ms"?)"#,
        ],
    ),
    (
        "invalid-unknown-in-probe.json",
        &[
            r#"probe "edge": colour: unknown field"#,
            r#"probe "edge": timeout: unknown field (did you mean "timeout_ms"?)"#,
        ],
    ),
    (
        "invalid-unknown-in-thresholds.json",
        &[
            r#"probe "edge": thresholds.healthy_bellow: unknown field (did you mean "healthy_below"?)"#,
        ],
    ),
    (
        "invalid-labels-reserved.json",
        &[
            r#"top level: labels.__name__: clashes with a label of the Prometheus metrics (probe, phase, reason, health, le and names starting "__" are taken)"#,
            r#"defaults: labels.le: clashes with a label of the Prometheus metrics (probe, phase, reason, health, le and names starting "__" are taken)"#,
            r#"probe "edge": labels.health: clashes with a label of the Prometheus metrics (probe, phase, reason, health, le and names starting "__" are taken)"#,
            r#"probe "edge": labels.phase: clashes with a label of the Prometheus metrics (probe, phase, reason, health, le and names starting "__" are taken)"#,
            r#"probe "edge": labels.probe: clashes with a label of the Prometheus metrics (probe, phase, reason, health, le and names starting "__" are taken)"#,
            r#"probe "edge": labels.reason: clashes with a label of the Prometheus metrics (probe, phase, reason, health, le and names starting "__" are taken)"#,
        ],
    ),
    (
        "invalid-output-prometheus.json",
        &[
            r#"output: prometheus_textfile: must be a file path ending in .prom (node_exporter's textfile collector reads only *.prom)"#,
            r#"output: prometheus_listen: must be "host:port" (like "127.0.0.1:9464" or "[::]:9464")"#,
            r#"output: ndjson: must be "-" (stdout), a file path, or null (no records)"#,
        ],
    ),
    (
        "invalid-unknown-in-output.json",
        &[r#"output: ndjsn: unknown field (did you mean "ndjson"?)"#],
    ),
    // defaults, ${VAR}, probes, syntax
    (
        "invalid-defaults-name-url.json",
        &[
            r#"defaults: name: cannot be set in defaults; every probe sets its own"#,
            r#"defaults: url: cannot be set in defaults; every probe sets its own"#,
        ],
    ),
    (
        "invalid-env-unset-url.json",
        &[
            r#"probe "edge": url: environment variable WSPROBE_TEST_UNSET is not set (used as ${WSPROBE_TEST_UNSET})"#,
        ],
    ),
    (
        "invalid-env-unset-header.json",
        &[
            r#"probe "edge": headers.Authorization: environment variable WSPROBE_TEST_UNSET is not set (used as ${WSPROBE_TEST_UNSET})"#,
        ],
    ),
    (
        "invalid-probes-empty.json",
        &[r#"top level: probes: is empty; a config needs at least one probe"#],
    ),
    (
        "invalid-json-syntax.json",
        &[r#"line 4 column 5: invalid JSON: expected `,` or `]` at line 4 column 5"#],
    ),
    (
        // serde_json would keep the second silently.
        "invalid-json-duplicate-key.json",
        &[r#"line 5 column 11: the key "url" is written twice in one object (keep one of them)"#],
    ),
    // proxy
    (
        "invalid-proxy-socks5.json",
        &[
            r#"probe "edge": proxy: has the scheme socks5://; only http:// proxies (HTTP CONNECT) are supported (SOCKS proxies are not supported)"#,
        ],
    ),
    (
        "invalid-proxy-https.json",
        &[
            r#"probe "edge": proxy: has the scheme https://; only http:// proxies (HTTP CONNECT) are supported (TLS to the proxy is not supported; the tunnel carries TLS to the target)"#,
        ],
    ),
    (
        "invalid-proxy-no-scheme.json",
        &[
            r#"probe "edge": proxy: must be "env" or an http:// URL (write http://[user:password@]host[:port])"#,
        ],
    ),
    (
        "invalid-proxy-path.json",
        &[r#"probe "edge": proxy: must be http://host:port alone, without a path or query"#],
    ),
    (
        "invalid-proxy-bad-port-in-defaults.json",
        &[r#"defaults: proxy: has a port that is not a number from 1 to 65535"#],
    ),
    (
        "invalid-proxy-not-a-string.json",
        &[r#"probe "edge": proxy: must be a string (got 3128)"#],
    ),
    (
        "invalid-proxy-env-unset.json",
        &[
            r#"probe "edge": proxy: environment variable WSPROBE_TEST_UNSET is not set (used as ${WSPROBE_TEST_UNSET})"#,
        ],
    ),
    (
        "invalid-proxy-ip-version.json",
        &[r#"probe "edge": proxy: 2001:db8::3128 does not fit ip_version 4"#],
    ),
    ("invalid-many-problems.json", MANY_PROBLEMS),
    // messages, prelude, samples, presets (issue 13)
    (
        "invalid-message-bad-hex.json",
        &[
            r#"probe "mqtt-ping": expect_message: base64 "0A=A" has a character outside the standard alphabet ('=')"#,
            r#"probe "mqtt-ping": send_message: hex "c0 0g" has a character that is not a hex digit ("0g")"#,
        ],
    ),
    (
        "invalid-message-not-a-message.json",
        &[
            r#"probe "edge": expect_message: must be a string (text) or {"hex": ...} / {"base64": ...} (binary) (got 42)"#,
            r#"probe "edge": send_message: a binary message has exactly one key, "hex" or "base64""#,
        ],
    ),
    (
        "invalid-prelude-bad-steps.json",
        &[
            r#"probe "edge": prelude[1]: must be an object with "send", "expect" or both"#,
            r#"probe "edge": prelude[2].sned: unknown field (did you mean "send"?)"#,
            r#"probe "edge": prelude[3].send: hex "abc" has an odd number of digits (3)"#,
            r#"probe "edge": prelude[4].send: environment variable WSPROBE_TEST_UNSET is not set (used as ${WSPROBE_TEST_UNSET})"#,
        ],
    ),
    (
        "invalid-prelude-in-defaults.json",
        &[
            r#"defaults: prelude: cannot be set in defaults; every probe sets its own"#,
            r#"defaults: preset: cannot be set in defaults; every probe sets its own"#,
        ],
    ),
    (
        "invalid-prelude-too-many-steps.json",
        &[r#"probe "edge": prelude: has 17 steps; at most 16"#],
    ),
    (
        "invalid-preset-conflicts.json",
        &[
            r#"probe "gql": protocols: cannot be set beside preset "graphql-transport-ws", which sets its subprotocols"#,
            r#"probe "gql": prelude: cannot be set beside preset "graphql-transport-ws", which sets its prelude"#,
            r#"probe "gql": send_message: cannot be set beside preset "graphql-transport-ws", which sets the measured message"#,
            r#"probe "gql": expect_message: cannot be set beside preset "graphql-transport-ws", which sets the measured reply"#,
        ],
    ),
    (
        "invalid-preset-options.json",
        &[
            r#"probe "broker": preset.qos: unknown option; mqtt takes version, client_id, username, password"#,
            r#"probe "broker": preset.version: must be 4 (MQTT 3.1.1) or 5 (got 3)"#,
            r#"probe "broker": preset.password: environment variable WSPROBE_TEST_UNSET is not set (used as ${WSPROBE_TEST_UNSET})"#,
            r#"probe "rpc": preset.params: must be a JSON array or object (got a string)"#,
        ],
    ),
    (
        "invalid-preset-samples.json",
        &[
            r#"probe "sio": samples: preset "socket.io" takes one sample per run: a namespace is connected once per socket"#,
            r#"probe "hub": samples: preset "signalr" takes one sample per run: the handshake happens once per connection; set the invoke option to time a hub method instead"#,
            r#"probe "queue": samples: preset "stomp" takes one sample per run: the measured DISCONNECT receipt ends the STOMP session"#,
        ],
    ),
    (
        "invalid-preset-unknown.json",
        &[
            r#"probe "edge": preset: unknown preset "mqt"; presets (options): graphql-transport-ws (payload); graphql-ws (payload, query); socket.io (namespace); mqtt (version, client_id, username, password); stomp (host, login, passcode); phoenix; signalr (invoke, arguments); json-rpc (method, params) (did you mean "mqtt"?)"#,
            r#"probe "nameless": preset.name: is missing: the preset's name, a string"#,
        ],
    ),
    (
        "invalid-samples-do-not-fit.json",
        &[
            r#"probe "edge": samples: (11 - 1) x sample_interval_ms (500) = 5000 ms must be below timeout_ms (5000)"#,
            r#"probe "open-too": samples: above 1 needs round_trip_scope "message": the open is paid once"#,
        ],
    ),
    (
        "invalid-samples-not-round-trip.json",
        &[
            r#"probe "edge": samples: only round_trip_latency probes take it"#,
            r#"probe "edge": sample_interval_ms: only round_trip_latency probes take it"#,
        ],
    ),
    (
        "invalid-samples-out-of-range.json",
        &[
            r#"probe "edge": sample_timeout_ms: must be from 10 to 30000 (got 5)"#,
            r#"probe "edge": samples: must be from 1 to 100 (got 101)"#,
        ],
    ),
];

// ---------------------------------------------------------------------------
// Through the binary
// ---------------------------------------------------------------------------

/// Runs the real binary from the crate root, with the test variables
/// controlled: `WSPROBE_TEST_UNSET` never set, the token only when given.
fn wsprobe(args: &[&str], token: Option<&str>) -> Run {
    let mut command = support::wsprobe();
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove(UNSET_VAR)
        .env_remove(TOKEN_VAR);
    if let Some(token) = token {
        command.env(TOKEN_VAR, token);
    }
    run_command(command)
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// What is wrong with `check`'s answer on an invalid config, if anything:
/// exit 2, an empty stdout, each expected line exactly, and a problem count
/// that says no other problem was reported.
fn check_problems(path: &str, run: &Run, expected: &[&str]) -> Vec<String> {
    let stderr = &run.stderr;
    let lines: Vec<&str> = stderr.lines().collect();
    let mut wrong = Vec::new();
    if run.code != 2 {
        wrong.push(format!("exit status {}, want 2", run.code));
    }
    if !run.stdout.is_empty() {
        wrong.push(format!("stdout is not empty: {:?}", run.stdout));
    }
    for message in expected {
        let line = format!("wsprobe: {path}: {message}");
        if !lines.contains(&line.as_str()) {
            wrong.push(format!("missing line: {line}"));
        }
    }
    let count = format!(
        "wsprobe: {path}: {} problem(s); nothing was started",
        expected.len()
    );
    if !lines.contains(&count.as_str()) {
        wrong.push(format!("missing line: {count}"));
    }
    if !wrong.is_empty() {
        wrong.push(format!("stderr was:\n{stderr}"));
    }
    wrong
}

#[test]
fn every_invalid_fixture_prints_its_exact_problems() {
    let mut failures = Vec::new();
    for (name, expected) in INVALID {
        let path = fixture(name);
        let run = wsprobe(&["check", "-c", &path], None);
        let wrong = check_problems(&path, &run, expected);
        if !wrong.is_empty() {
            failures.push(format!("{name}:\n  {}", wrong.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures wrong:\n\n{}",
        failures.len(),
        INVALID.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_fixture_on_disk_is_in_the_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("read the fixture directory")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("invalid-") && name.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = INVALID.iter().map(|(n, _)| n.to_string()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
    for (name, expected) in INVALID {
        assert!(!expected.is_empty(), "{name} expects no problem");
    }
}

#[test]
fn check_lists_every_problem_of_a_config_with_many() {
    let path = fixture("invalid-many-problems.json");
    let run = wsprobe(&["check", "-c", &path], None);
    let wrong = check_problems(&path, &run, MANY_PROBLEMS);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_valid_config_checks_clean() {
    let path = fixture("valid-minimal.json");
    let run = wsprobe(&["check", "-c", &path], None);
    let stderr = &run.stderr;
    assert_eq!(run.code, 0, "{stderr}");
    assert!(run.stdout.is_empty());
    assert_eq!(*stderr, format!("wsprobe: {path}: valid, 1 probe(s)\n"));
}

#[test]
fn insecure_skip_verify_is_valid_but_warns() {
    let path = fixture("valid-insecure-skip-verify.json");
    let run = wsprobe(&["check", "-c", &path], None);
    let stderr = &run.stderr;
    assert_eq!(run.code, 0, "{stderr}");
    assert!(run.stdout.is_empty());
    let warning = format!(
        "wsprobe: {path}: warning: probe \"lab-stream\": tls.insecure_skip_verify is on: \
         certificates are not checked (records say meta.tls_verified: false)"
    );
    assert!(stderr.lines().any(|l| l == warning), "{stderr}");
    assert!(stderr.contains("valid, 1 probe(s)"), "{stderr}");
}

#[test]
fn once_with_an_unknown_probe_name_exits_2() {
    let path = fixture("valid-minimal.json");
    let run = wsprobe(&["once", "-c", &path, "-p", "nosuchprobe"], None);
    let stderr = &run.stderr;
    assert_eq!(run.code, 2, "{stderr}");
    assert!(run.stdout.is_empty(), "a probe ran");
    assert!(
        stderr.contains("\"nosuchprobe\""),
        "the error must name the probe: {stderr}"
    );
}

#[test]
fn a_missing_config_file_exits_2() {
    let run = wsprobe(&["check", "-c", "tests/fixtures/config/no-such.json"], None);
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty());
    let stderr = &run.stderr;
    assert!(
        stderr.contains("tests/fixtures/config/no-such.json"),
        "{stderr}"
    );
}

#[test]
fn the_all_fields_config_checks_clean_with_its_token_set() {
    let dir = TempDir::new("wsprobe-config-test");
    let path = all_fields_config(&dir);
    let path_text = path.display().to_string();

    let run = wsprobe(&["check", "-c", &path_text], Some(TOKEN));
    let stderr = &run.stderr;
    assert_eq!(run.code, 0, "{stderr}");
    assert!(run.stdout.is_empty());
    assert_eq!(
        *stderr,
        format!("wsprobe: {path_text}: valid, 3 probe(s)\n")
    );

    // Without the variable, both places that use it are named.
    let run = wsprobe(&["check", "-c", &path_text], None);
    let wrong = check_problems(
        &path_text,
        &run,
        &[
            r#"defaults: headers.Authorization: environment variable WSPROBE_TEST_TOKEN is not set (used as ${WSPROBE_TEST_TOKEN})"#,
            r#"probe "stream-open": url: environment variable WSPROBE_TEST_TOKEN is not set (used as ${WSPROBE_TEST_TOKEN})"#,
        ],
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------
// Through the library: the merged ProbeSpec
// ---------------------------------------------------------------------------

fn no_env(_: &str) -> Option<String> {
    None
}

fn token_env(name: &str) -> Option<String> {
    (name == TOKEN_VAR).then(|| TOKEN.to_owned())
}

fn load(text: &str) -> Config {
    match config::load_str(text, &no_env) {
        Ok(config) => config,
        Err(errors) => panic!("config refused:\n{}", lines(&errors)),
    }
}

fn load_errors(text: &str) -> Vec<String> {
    match config::load_str(text, &no_env) {
        Ok(config) => panic!("config accepted: {:#?}", config.probes),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The problems `load_file` reports for the file at `path`, as printed.
fn file_errors(path: &Path) -> Vec<String> {
    match config::load_file(path, &no_env) {
        Ok(config) => panic!("{} accepted: {:#?}", path.display(), config.probes),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}\n"))
        .collect::<String>()
}

fn probe<'c>(config: &'c Config, name: &str) -> &'c ProbeSpec {
    config
        .probes
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no probe {name}"))
}

fn header<'s>(spec: &'s ProbeSpec, name: &str) -> Option<&'s str> {
    let mut found = spec
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name));
    let value = found.next().map(|(_, v)| v.as_str());
    assert!(
        found.next().is_none(),
        "{name} sent twice: {:?}",
        spec.headers
    );
    value
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_all_fields_config_merges_into_the_expected_specs() {
    let dir = TempDir::new("wsprobe-config-test");
    let path = all_fields_config(&dir);
    let config = match config::load_file(&path, &token_env) {
        Ok(config) => config,
        Err(errors) => panic!("config refused:\n{}", lines(&errors)),
    };
    assert_eq!(config.output, config::Output::Stdout);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let names: Vec<&str> = config.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["stream-open", "stream-rtt", "stream-up"]);

    let open = probe(&config, "stream-open");
    assert_eq!(open.interpretation, Interpretation::HandshakeLatency);
    assert!(open.target.secure);
    assert_eq!(open.target.port, 8443);
    assert_eq!(open.target.path_and_query, format!("/socket?token={TOKEN}"));
    assert!(
        !open.display_url.contains(TOKEN),
        "the substituted token shows: {}",
        open.display_url
    );
    assert_eq!(open.timeout, Duration::from_millis(10_000));
    assert_eq!(open.interval, Duration::from_millis(60_000));
    assert_eq!(open.exchange, None);
    assert_eq!(open.protocols, ["graphql-transport-ws", "graphql-ws"]);
    // Defaults' headers with the probe's on top, by case-insensitive name.
    assert_eq!(open.headers.len(), 3, "{:?}", open.headers);
    assert_eq!(header(open, "authorization"), Some("Bearer s3cret-t0ken"));
    assert_eq!(header(open, "X-Team"), Some("edge"));
    assert_eq!(header(open, "x-device"), Some("r17"));
    assert_eq!(
        open.labels,
        map(&[
            ("site", "branch-17"),
            ("tier", "probe-tier"),
            ("region", "eu")
        ])
    );
    assert_eq!(open.max_message_bytes, 1024);
    // unhealthy_above left out on the probe: the defaults' value stands.
    assert_eq!(
        open.thresholds,
        Some(Thresholds {
            healthy_below: 150.0,
            unhealthy_above: 800.0
        })
    );
    let tls = &open.tls.as_ref().expect("tls on wss://").options;
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(dir.join("ca.pem").to_str().unwrap())
    );
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));
    assert!(!tls.insecure_skip_verify);

    let rtt = probe(&config, "stream-rtt");
    assert_eq!(rtt.interpretation, Interpretation::RoundTripLatency);
    let exchange = rtt.exchange.as_ref().expect("round-trip exchange");
    assert_eq!(exchange.send, Message::Text(r#"{"op":"ping"}"#.into()));
    assert_eq!(
        exchange.expect,
        Expect::Contains(br#""op":"pong""#.to_vec())
    );
    assert_eq!(exchange.scope, RoundTripScope::OpenAndMessage);
    assert_eq!(rtt.timeout, Duration::from_millis(5_000));
    assert_eq!(rtt.interval, Duration::from_millis(30_000));
    assert_eq!(rtt.protocols, ["v1.probe"]);
    assert_eq!(rtt.headers.len(), 2, "{:?}", rtt.headers);
    assert_eq!(header(rtt, "Authorization"), Some("Bearer s3cret-t0ken"));
    assert_eq!(header(rtt, "X-Team"), Some("netops"));
    assert_eq!(
        rtt.labels,
        map(&[
            ("site", "branch-17"),
            ("tier", "default-tier"),
            ("region", "eu")
        ])
    );
    assert_eq!(rtt.max_message_bytes, 65536);
    assert_eq!(
        rtt.thresholds,
        Some(Thresholds {
            healthy_below: 50.0,
            unhealthy_above: 500.0
        })
    );
    assert_eq!(rtt.tls, None, "defaults.tls applied to ws://");

    let up = probe(&config, "stream-up");
    assert_eq!(up.interpretation, Interpretation::ConnectionSuccess);
    assert_eq!(up.target.ip, Some("::1".parse().unwrap()));
    assert_eq!(up.timeout, Duration::from_millis(2_000));
    assert_eq!(up.interval, Duration::from_millis(10_000));
    assert_eq!(up.exchange, None);
    assert_eq!(
        up.thresholds, None,
        "defaults.thresholds on connection_success"
    );
    assert_eq!(up.tls, None);
    assert_eq!(
        up.labels,
        map(&[
            ("site", "branch-17"),
            ("tier", "default-tier"),
            ("region", "eu"),
            ("check", "liveness")
        ])
    );
}

#[test]
fn defaults_apply_only_to_the_probes_they_fit() {
    // Every field here fits some probe and not others; none is an error.
    let config = load(
        r#"{
          "defaults": {
            "send_message": "ping", "expect_message": "pong",
            "round_trip_scope": "open_and_message", "ping_mode": "message",
            "thresholds": {"healthy_below": 10, "unhealthy_above": 20},
            "tls": {"server_name": "stream.example.com", "insecure_skip_verify": true}
          },
          "probes": [
            {"name": "open", "url": "ws://192.0.2.1/"},
            {"name": "up", "url": "ws://192.0.2.1/", "interpretation": "connection_success"},
            {"name": "rtt", "url": "wss://192.0.2.1/", "interpretation": "round_trip_latency"}
          ]
        }"#,
    );
    let open = probe(&config, "open");
    assert_eq!(open.exchange, None);
    assert_eq!(open.tls, None);
    assert_eq!(
        open.thresholds,
        Some(Thresholds {
            healthy_below: 10.0,
            unhealthy_above: 20.0
        })
    );
    let up = probe(&config, "up");
    assert_eq!((&up.exchange, up.thresholds, &up.tls), (&None, None, &None));
    let rtt = probe(&config, "rtt");
    let exchange = rtt.exchange.as_ref().expect("exchange from defaults");
    assert_eq!(exchange.send, Message::Text("ping".into()));
    assert_eq!(exchange.expect, Expect::Contains(b"pong".to_vec()));
    assert_eq!(exchange.scope, RoundTripScope::OpenAndMessage);
    let tls = &rtt.tls.as_ref().expect("defaults.tls on wss://").options;
    assert_eq!(tls.server_name.as_deref(), Some("stream.example.com"));
    assert!(tls.insecure_skip_verify);
    // The one wss:// probe got insecure_skip_verify from defaults: one warning.
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains("probe \"rtt\""),
        "{:?}",
        config.warnings
    );
}

#[test]
fn defaults_ping_mode_none_is_not_applied_to_round_trip() {
    let config = load(
        r#"{
          "defaults": {"ping_mode": "none"},
          "probes": [{"name": "rtt", "url": "ws://192.0.2.1/",
                      "interpretation": "round_trip_latency", "send_message": "x"}]
        }"#,
    );
    let rtt = probe(&config, "rtt");
    assert_eq!(
        rtt.exchange.as_ref().unwrap().scope,
        RoundTripScope::Message
    );
    assert_eq!(
        rtt.exchange.as_ref().unwrap().expect,
        Expect::Contains(Vec::new())
    );
}

#[test]
fn the_contract_defaults_fill_what_nothing_sets() {
    let config = load(r#"{"probes": [{"name": "bare", "url": "wss://192.0.2.1/x"}]}"#);
    let bare = probe(&config, "bare");
    assert_eq!(bare.interpretation, Interpretation::HandshakeLatency);
    assert_eq!(bare.timeout, Duration::from_millis(10_000));
    assert_eq!(bare.interval, Duration::from_millis(60_000));
    assert_eq!(bare.max_message_bytes, 1_048_576);
    assert_eq!(bare.thresholds, Some(Thresholds::default()));
    assert_eq!(
        Thresholds::default(),
        Thresholds {
            healthy_below: 200.0,
            unhealthy_above: 1000.0
        }
    );
    assert!(bare.protocols.is_empty() && bare.headers.is_empty() && bare.labels.is_empty());
    let tls = &bare
        .tls
        .as_ref()
        .expect("every wss:// probe has TLS")
        .options;
    assert_eq!(*tls, Default::default());
    assert_eq!(config.output, config::Output::Stdout);
}

#[test]
fn labels_merge_top_level_then_defaults_then_probe() {
    let config = load(
        r#"{
          "labels": {"a": "top", "b": "top", "c": "top"},
          "defaults": {"labels": {"b": "defaults", "c": "defaults"}},
          "probes": [
            {"name": "p", "url": "ws://192.0.2.1/", "labels": {"c": "probe", "d": "probe"}},
            {"name": "q", "url": "ws://192.0.2.1/"}
          ]
        }"#,
    );
    assert_eq!(
        probe(&config, "p").labels,
        map(&[
            ("a", "top"),
            ("b", "defaults"),
            ("c", "probe"),
            ("d", "probe")
        ])
    );
    assert_eq!(
        probe(&config, "q").labels,
        map(&[("a", "top"), ("b", "defaults"), ("c", "defaults")])
    );
}

#[test]
fn headers_merge_by_case_insensitive_name() {
    let config = load(
        r#"{
          "defaults": {"headers": {"X-Team": "netops", "Origin": "https://ops.example.com"}},
          "probes": [
            {"name": "p", "url": "ws://192.0.2.1/", "headers": {"x-team": "edge", "X-Device": "r17"}},
            {"name": "q", "url": "ws://192.0.2.1/", "headers": {"ORIGIN": "https://q.example.com"}}
          ]
        }"#,
    );
    let p = probe(&config, "p");
    assert_eq!(p.headers.len(), 3, "{:?}", p.headers);
    assert_eq!(header(p, "X-TEAM"), Some("edge"));
    assert_eq!(header(p, "origin"), Some("https://ops.example.com"));
    assert_eq!(header(p, "x-device"), Some("r17"));
    let q = probe(&config, "q");
    assert_eq!(q.headers.len(), 2, "{:?}", q.headers);
    assert_eq!(header(q, "Origin"), Some("https://q.example.com"));
    assert_eq!(header(q, "x-team"), Some("netops"));
}

#[test]
fn a_header_value_is_substituted_and_the_url_keeps_the_placeholder() {
    let text = r#"{"probes": [{"name": "p",
        "url": "wss://192.0.2.1/s?access_token=${WSPROBE_TEST_TOKEN}",
        "headers": {"Authorization": "Bearer ${WSPROBE_TEST_TOKEN}"}}]}"#;
    let config = match config::load_str(text, &token_env) {
        Ok(config) => config,
        Err(errors) => panic!("config refused:\n{}", lines(&errors)),
    };
    let p = probe(&config, "p");
    assert_eq!(header(p, "Authorization"), Some("Bearer s3cret-t0ken"));
    assert_eq!(p.target.path_and_query, "/s?access_token=s3cret-t0ken");
    assert!(!p.display_url.contains(TOKEN), "{}", p.display_url);
}

#[test]
fn a_wss_scheme_that_comes_from_a_variable_gets_tls() {
    // The scheme is read from the URL as expanded: a `${VAR}` that holds a
    // wss:// URL must never be probed, headers and all, in plain text.
    let env = |name: &str| match name {
        "WSPROBE_TEST_URL" => Some("wss://192.0.2.1/feed".to_owned()),
        "WSPROBE_TEST_SCHEME" => Some("wss".to_owned()),
        _ => None,
    };
    let text = r#"{"probes": [
        {"name": "whole", "url": "${WSPROBE_TEST_URL}"},
        {"name": "scheme", "url": "${WSPROBE_TEST_SCHEME}://192.0.2.1/",
         "tls": {"insecure_skip_verify": true}}]}"#;
    let config = match config::load_str(text, &env) {
        Ok(config) => config,
        Err(errors) => panic!("config refused:\n{}", lines(&errors)),
    };
    for name in ["whole", "scheme"] {
        let p = probe(&config, name);
        assert!(p.target.secure, "{name}");
        assert!(p.tls.is_some(), "{name}: a wss:// probe without TLS");
    }
    assert!(
        probe(&config, "scheme")
            .tls
            .as_ref()
            .unwrap()
            .options
            .insecure_skip_verify
    );
}

#[test]
fn an_invalid_variable_name_is_refused_without_quoting_it() {
    // Found by fuzzing (fuzz/fuzz_targets/url_redaction.rs): the text
    // between "${" and "}" was quoted, and in a URL's query or a header
    // value it can be a secret.
    let text = r#"{"probes": [{"name": "p",
        "url": "ws://h.example/?a=${&token=hunter2&b=}",
        "headers": {"Authorization": "Bearer ${sk-live 4242}"}}]}"#;
    let errors = load_errors(text);
    let invalid = r#"has a "${...}" whose name is not a variable name (letters, digits and _)"#;
    assert_eq!(
        errors,
        [
            format!(r#"probe "p": headers.Authorization: {invalid}"#),
            format!(r#"probe "p": url: {invalid}"#),
        ]
    );
    for error in &errors {
        assert!(
            !error.contains("hunter2") && !error.contains("4242"),
            "{error}"
        );
    }
}

#[test]
fn a_proxy_scheme_made_of_a_secret_is_not_quoted() {
    // Found by fuzzing (fuzz/fuzz_targets/config_load.rs): the proxy's
    // error quoted whatever stood before "://", ${VAR} expanded and all.
    let text = r#"{"probes": [{"name": "p", "url": "ws://192.0.2.10/",
        "proxy": "]]${PROXY_SECRET}@h]]http://proxy.example:3128"}]}"#;
    let errors = load_with_env(text, &[("PROXY_SECRET", "hunter2")]).expect_err("refused");
    assert_eq!(
        errors,
        [
            r#"probe "p": proxy: has a scheme other than http://; only http:// proxies (HTTP CONNECT) are supported (write http://host:port)"#
        ]
    );
    for error in &errors {
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn preset_options_made_of_a_secret_are_not_quoted() {
    // Found in review: an option of the wrong kind was printed whole,
    // ${VAR} expanded (the graphql payload is where auth goes).
    let text = r#"{"probes": [
        {"name": "gql", "url": "ws://192.0.2.10/", "interpretation": "round_trip_latency",
         "preset": {"name": "graphql-transport-ws", "payload": "${OPTION_SECRET}"}},
        {"name": "sio", "url": "ws://192.0.2.10/", "interpretation": "round_trip_latency",
         "preset": {"name": "socket.io", "namespace": "${OPTION_SECRET}"}},
        {"name": "rpc", "url": "ws://192.0.2.10/", "interpretation": "round_trip_latency",
         "preset": {"name": "json-rpc", "params": "${OPTION_SECRET}"}},
        {"name": "hub", "url": "ws://192.0.2.10/", "interpretation": "round_trip_latency",
         "preset": {"name": "signalr", "invoke": "Echo", "arguments": {"t": "${OPTION_SECRET}"}}}]}"#;
    let errors = load_with_env(text, &[("OPTION_SECRET", "hunter2")]).expect_err("refused");
    assert_eq!(
        errors,
        [
            r#"probe "gql": preset.payload: must be a JSON object (got a string)"#,
            r#"probe "sio": preset.namespace: must start with '/' and have no ','"#,
            r#"probe "rpc": preset.params: must be a JSON array or object (got a string)"#,
            r#"probe "hub": preset.arguments: must be a JSON array (got an object)"#,
        ]
    );
    for error in &errors {
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn ca_file_without_an_end_is_refused_without_reading_it_all() {
    // Read whole, /dev/zero would take all memory before any PEM rule ran.
    let text = r#"{"probes": [{"name": "p", "url": "wss://192.0.2.1/",
        "tls": {"ca_file": "/dev/zero"}}]}"#;
    assert_eq!(
        load_errors(text),
        [r#"probe "p": tls.ca_file: /dev/zero is larger than 4 MiB, too large for a CA file"#]
    );
}

#[test]
fn ca_file_with_a_pem_block_that_is_not_a_certificate_is_refused() {
    let dir = TempDir::new("wsprobe-config-test");
    let key = rcgen::KeyPair::generate().expect("key");
    let key_file = dir.write("key.pem", &key.serialize_pem());
    let text = format!(
        r#"{{"probes": [{{"name": "p", "url": "wss://192.0.2.1/", "tls": {{"ca_file": {}}}}}]}}"#,
        serde_json::to_string(key_file.to_str().unwrap()).unwrap()
    );
    assert_eq!(
        load_errors(&text),
        [format!(
            "probe \"p\": tls.ca_file: {} holds no PEM certificate",
            key_file.display()
        )]
    );
}

#[test]
fn interval_from_defaults_is_checked_against_each_probe_timeout() {
    let errors = load_errors(
        r#"{
          "defaults": {"interval_ms": 5000},
          "probes": [
            {"name": "fast", "url": "ws://192.0.2.1/", "timeout_ms": 2000},
            {"name": "slow", "url": "ws://192.0.2.1/", "timeout_ms": 8000}
          ]
        }"#,
    );
    assert_eq!(
        errors,
        [
            r#"probe "slow": interval_ms: (5000) must be at least timeout_ms (8000), so runs cannot overlap"#
        ]
    );
}

// ---------------------------------------------------------------------------
// Test files
// ---------------------------------------------------------------------------

/// Writes a fresh CA certificate to `ca.pem` in `dir` and
/// `valid-all-fields.json` with its `@CA_FILE@` placeholder replaced by that
/// certificate's path (`${VAR}` is only substituted in `url` and header
/// values); returns the config's path.
fn all_fields_config(dir: &TempDir) -> PathBuf {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("CA key");
    let ca = params.self_signed(&key).expect("CA certificate");
    let ca_file = dir.write("ca.pem", &ca.pem());

    let template_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURES)
        .join("valid-all-fields.json");
    let template = std::fs::read_to_string(template_path).expect("read template");
    assert!(template.contains("\"@CA_FILE@\""));
    let ca_json = serde_json::to_string(ca_file.to_str().unwrap()).unwrap();
    let config = template.replace("\"@CA_FILE@\"", &ca_json);
    dir.write("valid-all-fields.json", &config)
}

#[test]
fn a_ca_file_replaced_under_the_same_path_changes_the_probe() {
    // SIGHUP restarts a probe only when its spec changed: a rotated CA file
    // (same path, new certificate) must count as a change.
    let dir = TempDir::new("wsprobe-config-ca-rotation");
    let new_ca = || {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("CA key");
        params.self_signed(&key).expect("CA certificate").pem()
    };
    let ca_file = dir.write("ca.pem", &new_ca());
    let text = format!(
        r#"{{"probes":[{{"name":"edge","url":"wss://127.0.0.1:9/","tls":{{"ca_file":{}}}}}]}}"#,
        serde_json::to_string(ca_file.to_str().unwrap()).unwrap()
    );
    let before = load(&text);
    assert_eq!(before.probes, load(&text).probes, "same file, same probe");
    dir.write("ca.pem", &new_ca());
    assert_ne!(
        before.probes,
        load(&text).probes,
        "a new CA is a changed probe"
    );
}

#[test]
fn a_field_reported_wrong_brings_no_follow_on_errors() {
    // The wrong timeout_ms is not compared with interval_ms as if it were
    // the default; a typo in interpretation does not make send_message
    // and expect_message out of place.
    for (text, only) in [
        (
            r#"{"probes": [{"name": "p", "url": "ws://192.0.2.1/",
                "interval_ms": 1000, "timeout_ms": 50000}]}"#,
            "timeout_ms",
        ),
        (
            r#"{"defaults": {"timeout_ms": "soon"},
                "probes": [{"name": "p", "url": "ws://192.0.2.1/", "interval_ms": 1000}]}"#,
            "timeout_ms",
        ),
        (
            r#"{"probes": [{"name": "p", "url": "ws://192.0.2.1/",
                "interpretation": "round_trip", "send_message": "ping",
                "expect_message": "pong"}]}"#,
            "interpretation",
        ),
    ] {
        let errors = load_errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains(only), "{errors:#?}");
    }
}

#[test]
fn a_wrong_ca_file_in_defaults_is_reported_once_at_defaults() {
    // Whether the probes are ws:// only (the file is not used yet) or
    // several wss:// ones (each would take it): one error, at defaults.
    for probes in [
        r#"[{"name": "a", "url": "ws://192.0.2.1/"}]"#,
        r#"[{"name": "a", "url": "wss://192.0.2.1/"}, {"name": "b", "url": "wss://192.0.2.2/"}]"#,
    ] {
        let text = format!(
            r#"{{"defaults": {{"tls": {{"ca_file": "/nonexistent/wsprobe-ca.pem"}}}},
                "probes": {probes}}}"#
        );
        let errors = load_errors(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("defaults: tls.ca_file"),
            "{errors:#?}"
        );
    }
}

#[test]
fn a_byte_order_mark_is_ignored_and_a_file_that_is_not_utf8_is_named_so() {
    let with_bom = "\u{feff}{\"probes\": [{\"name\": \"p\", \"url\": \"ws://192.0.2.1/\"}]}";
    assert_eq!(load(with_bom).probes.len(), 1);

    let dir = TempDir::new("wsprobe-config-test");
    let path = dir.join("latin1.json");
    std::fs::write(&path, b"{\"probes\": [{\"name\": \"\xe9\"}]}").expect("write");
    assert_eq!(
        file_errors(&path),
        ["the file: is not UTF-8 text (save it as UTF-8)"]
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_it_is_parsed() {
    let dir = TempDir::new("wsprobe-config-test");
    let path = dir.join("huge.json");
    let limit = usize::try_from(config::MAX_CONFIG_BYTES).unwrap();
    let mut text = String::from("{\"probes\": [{\"name\": \"p\", \"url\": \"ws://192.0.2.1/\"}]}");
    // Valid JSON at the limit: whitespace is allowed after the value.
    text.push_str(&" ".repeat(limit - text.len()));
    std::fs::write(&path, &text).expect("write");
    assert!(
        config::load_file(&path, &no_env).is_ok(),
        "refused at the limit"
    );

    // One byte more; a sparse file, as its content is never read.
    std::fs::File::create(&path)
        .and_then(|file| file.set_len(config::MAX_CONFIG_BYTES + 1))
        .expect("write");
    assert_eq!(
        file_errors(&path),
        ["the file: is larger than 64 MiB (a thousand probes fit in well under 1 MiB)"]
    );
}

#[test]
fn an_endless_file_is_refused_not_read_forever() {
    assert_eq!(
        file_errors(Path::new("/dev/zero")),
        ["the file: is larger than 64 MiB (a thousand probes fit in well under 1 MiB)"]
    );
}

#[test]
fn a_probe_without_a_url_still_has_its_ca_file_checked() {
    // Missing, and from a variable that is not set: either way nothing
    // says whether TLS applies, and the CA file is checked all the same.
    for url in ["", r#""url": "${WSPROBE_TEST_UNSET}", "#] {
        let errors = load_errors(&format!(
            r#"{{"probes": [{{"name": "p", {url}"tls": {{"ca_file": "/nonexistent/ca.pem"}}}}]}}"#
        ));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        let has = |prefix: &str| errors.iter().any(|e| e.starts_with(prefix));
        assert!(has("probe \"p\": url:"), "{errors:#?}");
        assert!(has("probe \"p\": tls.ca_file:"), "{errors:#?}");
    }
}

#[test]
fn a_field_reported_wrong_does_not_hide_the_problems_of_others() {
    // Only the rules tied to the wrong value are spared; a probe that sets
    // its own value is checked in full whatever defaults got wrong.
    for (text, count) in [
        (
            r#"{"defaults": {"interpretation": "bogus"},
                "probes": [{"name": "p", "url": "ws://192.0.2.1/",
                  "interpretation": "round_trip_latency",
                  "thresholds": {"healthy_below": 500, "unhealthy_above": 100}}]}"#,
            3,
        ),
        (
            r#"{"defaults": {"timeout_ms": 5},
                "probes": [{"name": "p", "url": "ws://192.0.2.1/",
                  "timeout_ms": 20000, "interval_ms": 5000}]}"#,
            2,
        ),
        (
            r#"{"probes": [{"name": "p", "url": "ws://192.0.2.1/",
                "interpretation": "handshake",
                "thresholds": {"healthy_below": 500, "unhealthy_above": 100}}]}"#,
            2,
        ),
    ] {
        let errors = load_errors(text);
        assert_eq!(errors.len(), count, "{errors:#?}");
    }
}

// ---------------------------------------------------------------------------
// proxy: the field, defaults, and "env" (docs/proxy.md)
// ---------------------------------------------------------------------------

/// `load_str` with `vars` as the whole environment.
fn load_with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    let env = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    config::load_str(text, &env).map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

fn proxy_of(config: &Config, name: &str) -> Option<String> {
    probe(config, name).proxy.as_ref().map(|p| format!("{p:?}"))
}

#[test]
fn a_proxy_in_defaults_applies_to_every_probe_unless_it_sets_its_own() {
    let config = load(
        r#"{
          "defaults": {"proxy": "http://netops:pw@proxy.corp.example"},
          "probes": [
            {"name": "a", "url": "ws://192.0.2.1/"},
            {"name": "b", "url": "wss://stream.example.com/", "proxy": "http://10.0.0.1:8080/"}
          ]
        }"#,
    );
    // The port defaults to 3128; userinfo is kept for the request only.
    let a = probe(&config, "a")
        .proxy
        .as_ref()
        .expect("the defaults' proxy");
    assert_eq!((a.host.as_str(), a.port), ("proxy.corp.example", 3128));
    assert_eq!(a.userinfo.as_deref(), Some("netops:pw"));
    assert_eq!(
        proxy_of(&config, "a").as_deref(),
        Some("http://REDACTED@proxy.corp.example:3128")
    );
    assert_eq!(
        proxy_of(&config, "b").as_deref(),
        Some("http://10.0.0.1:8080")
    );
}

#[test]
fn a_proxy_url_expands_variables_and_the_route_applies_to_the_proxy() {
    let text = r#"{"probes": [{"name": "p", "url": "ws://[2001:db8::1]/",
        "ip_version": 4, "proxy": "http://${WSPROBE_TEST_TOKEN}@10.0.0.1"}]}"#;
    let config = match config::load_str(text, &token_env) {
        Ok(config) => config,
        Err(errors) => panic!("config refused:\n{}", lines(&errors)),
    };
    let proxy = probe(&config, "p").proxy.as_ref().expect("a proxy");
    // A user alone gets an empty password (RFC 7617: user-id ":" password).
    assert_eq!(proxy.userinfo.as_deref(), Some(&*format!("{TOKEN}:")));
    // The URL's IPv6 address is the proxy's business, not ip_version 4's.
    assert_eq!(proxy.ip, Some("10.0.0.1".parse().unwrap()));
}

const ENV_PROBES: &str = r#"{
  "defaults": {"proxy": "env"},
  "probes": [
    {"name": "secure", "url": "wss://stream.example.com/"},
    {"name": "plain", "url": "ws://stream.example.com/"},
    {"name": "inside", "url": "wss://db.internal.example/"},
    {"name": "by-address", "url": "ws://10.1.2.3/"}
  ]
}"#;

#[test]
fn env_takes_https_proxy_for_wss_and_only_lower_case_http_proxy_for_ws() {
    let config = load_with_env(
        ENV_PROBES,
        &[
            ("HTTPS_PROXY", "http://u:pw@secure-proxy:8443"),
            ("HTTP_PROXY", "http://from-a-cgi-header:80"),
            ("NO_PROXY", ".internal.example, 10.0.0.0/8"),
        ],
    )
    .unwrap();
    assert_eq!(
        proxy_of(&config, "secure").as_deref(),
        Some("http://REDACTED@secure-proxy:8443")
    );
    assert_eq!(proxy_of(&config, "plain"), None, "HTTP_PROXY is never read");
    assert_eq!(proxy_of(&config, "inside"), None, "no_proxy lists it");
    assert_eq!(
        config.warnings,
        [r#"proxy is "env" but http_proxy is not set: ws:// probes connect directly"#]
    );

    let config = load_with_env(
        ENV_PROBES,
        &[
            ("https_proxy", "lower:3129"),
            ("HTTPS_PROXY", "http://upper:3128"),
            ("http_proxy", "http://plain-proxy"),
        ],
    )
    .unwrap();
    assert_eq!(
        proxy_of(&config, "secure").as_deref(),
        Some("http://lower:3129")
    );
    assert_eq!(
        proxy_of(&config, "inside").as_deref(),
        Some("http://lower:3129")
    );
    assert_eq!(
        proxy_of(&config, "plain").as_deref(),
        Some("http://plain-proxy:3128")
    );
    assert_eq!(
        proxy_of(&config, "by-address").as_deref(),
        Some("http://plain-proxy:3128")
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let config = load_with_env(ENV_PROBES, &[("http_proxy", "p"), ("no_proxy", "*")]).unwrap();
    assert_eq!(
        proxy_of(&config, "plain"),
        None,
        "no_proxy=* reaches everything directly"
    );
}

#[test]
fn a_bad_proxy_variable_is_one_error_naming_it_without_its_value() {
    let errors = load_with_env(
        ENV_PROBES,
        &[
            ("https_proxy", "socks5://u:hunter2@proxy:1080"),
            ("http_proxy", "http://p"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        errors,
        [
            r#"probe "secure": proxy: "env": https_proxy has the scheme socks5://; only http:// proxies (HTTP CONNECT) are supported (SOCKS proxies are not supported)"#
        ]
    );
    // "env" is not read where the field is not set: no error, no warning.
    let config = load_with_env(
        r#"{"probes": [{"name": "p", "url": "wss://h.example/"}]}"#,
        &[("https_proxy", "socks5://u:hunter2@proxy:1080")],
    )
    .unwrap();
    assert_eq!(proxy_of(&config, "p"), None);
    assert!(config.warnings.is_empty());
}

#[test]
fn prometheus_outputs_alone_write_no_records_and_ndjson_null_writes_none() {
    let text = std::fs::read_to_string(fixture("valid-output-prometheus-only.json"))
        .expect("read fixture");
    let config = load(&text);
    assert_eq!(config.output, config::Output::Discard);
    assert_eq!(
        config.prometheus.textfile.as_deref(),
        Some(Path::new("/var/prometheus/wsprobe.prom"))
    );
    assert_eq!(config.prometheus.listen.as_deref(), Some("[::1]:9464"));

    let probes = r#"[{"name": "a", "url": "ws://127.0.0.1:9/"}]"#;
    let null = load(&format!(
        r#"{{"output": {{"ndjson": null}}, "probes": {probes}}}"#
    ));
    assert_eq!(null.output, config::Output::Discard);
    let empty = load(&format!(r#"{{"output": {{}}, "probes": {probes}}}"#));
    assert_eq!(empty.output, config::Output::Stdout);
    assert_eq!(empty.prometheus, config::Prometheus::default());
}

#[test]
fn a_proxy_of_the_wrong_type_is_refused_without_quoting_its_url() {
    let errors = load_errors(
        r#"{"probes": [
          {"name": "a", "url": "ws://h.example/", "proxy": ["http://u:hunter2@p:3128"]},
          {"name": "b", "url": "ws://h.example/", "proxy": {"url": "http://u:hunter2@p"}}
        ]}"#,
    );
    assert_eq!(
        errors,
        [
            r#"probe "a": proxy: must be a string (got an array)"#,
            r#"probe "b": proxy: must be a string (got an object)"#,
        ]
    );
}
