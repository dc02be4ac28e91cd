//! Network paths, in network namespaces joined by veth pairs (root only):
//! Happy Eyeballs with IPv6 black-holed, `ip_version`, `bind_interface`,
//! `source_ip` and `fwmark`. Each test builds its own hosts and links.
//!
//! Not root: skipped with a printed reason, except under `CI=true`.

mod netsupport;
mod pysupport;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use netsupport::{first_line, link, namespaces_available, Netns};
use pysupport::python;
use support::{parse_record, Process, Record, WSPROBE};

/// In a namespace of its own every port is free: no need for port 0.
const PORT: u16 = 8080;

/// Runs `wsprobe probe ARGS` in `ns` and returns its one record.
fn probe_in(ns: &Netns, args: &[&str]) -> Record {
    ns.probe(args).record()
}

/// One namespace whose loopback serves `dual.test` on ::1 and 127.0.0.1,
/// plus `v4.test` and `v6.test` with one family each.
fn dual_stack_host() -> Option<(Netns, Process)> {
    if !namespaces_available() {
        return None;
    }
    let python = python()?;
    let ns = Netns::new("he");
    ns.hosts(
        "127.0.0.1 localhost\n::1 dual.test\n127.0.0.1 dual.test\n127.0.0.1 v4.test\n::1 v6.test\n",
    );
    let server = ns.peer_server(&python, PORT, &["::1", "127.0.0.1"]);
    Some((ns, server))
}

fn timings_ms(record: &Record) -> (f64, f64) {
    let t = record.timings();
    (
        t.connect_ms.expect("connect_ms"),
        t.open_ms.expect("open_ms"),
    )
}

#[test]
fn ipv6_black_holed_falls_back_to_ipv4_after_the_attempt_delay() {
    let Some((ns, _server)) = dual_stack_host() else {
        return;
    };
    ns.drop_port("meta nfproto ipv6", "tcp", PORT);
    let url = format!("ws://dual.test:{PORT}/");

    // Two runs 2 s apart: between them, no connect may be left pending.
    let mut child = ns
        .command(WSPROBE)
        .args(["probe", &url, "--count", "2", "--interval-ms", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run wsprobe");
    let (line, _rest) = first_line(&mut child);
    let leftovers = ns.syn_sent();
    let _ = child.kill();
    let _ = child.wait();

    let record = parse_record(&line);
    assert_eq!(record.reason, None, "{line}");
    assert_eq!(record.meta.remote_addr.as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(record.meta.connect_attempts, Some(2), "{line}");
    let (connect_ms, _) = timings_ms(&record);
    assert!(
        (250.0..450.0).contains(&connect_ms),
        "IPv4 should win one Connection Attempt Delay (250 ms) in: {connect_ms} ms"
    );
    assert!(leftovers.is_empty(), "pending connects left: {leftovers:?}");
}

#[test]
fn a_deadline_shorter_than_the_attempt_delay_still_holds() {
    let Some((ns, _server)) = dual_stack_host() else {
        return;
    };
    ns.drop_port("meta nfproto ipv6", "tcp", PORT);
    let url = format!("ws://dual.test:{PORT}/");
    let started = Instant::now();
    let record = probe_in(&ns, &[&url, "--timeout-ms", "200"]);
    let took = started.elapsed();
    assert_eq!(record.reason.as_deref(), Some("ws_handshake_timeout"));
    assert_eq!(record.meta.phase.as_deref(), Some("connect"));
    assert_eq!(record.meta.connect_attempts, Some(1));
    assert!(took < Duration::from_millis(1000), "took {took:?}");
}

#[test]
fn ip_version_picks_the_family_or_says_there_is_none() {
    let Some((ns, _server)) = dual_stack_host() else {
        return;
    };
    let v6 = format!("ws://v6.test:{PORT}/");
    let v4 = format!("ws://v4.test:{PORT}/");

    let record = probe_in(&ns, &[&v6, "-6"]);
    assert_eq!(record.reason, None);
    assert_eq!(record.meta.remote_addr.as_deref(), Some("[::1]:8080"));
    let record = probe_in(&ns, &[&v4, "-4"]);
    assert_eq!(record.meta.remote_addr.as_deref(), Some("127.0.0.1:8080"));
    let record = probe_in(&ns, &[&v6]);
    assert_eq!(record.reason, None, "any family reaches an IPv6-only name");

    for (url, flag, family) in [(&v6, "-4", "IPv4"), (&v4, "-6", "IPv6")] {
        let record = probe_in(&ns, &[url, flag]);
        assert_eq!(record.reason.as_deref(), Some("ws_open_failed"));
        let error = record.meta.error.clone().unwrap_or_default();
        assert!(error.contains(&format!("no {family} address")), "{error}");
    }
    let record = probe_in(&ns, &[&format!("ws://dual.test:{PORT}/"), "-6"]);
    assert_eq!(record.meta.remote_addr.as_deref(), Some("[::1]:8080"));
}

/// A client and a server host joined by two links, `a` and `b`; the server
/// answers on 10.99.0.1, reachable over either (the `b` route has a higher
/// metric, so unbound traffic takes `a`).
struct TwoLinks {
    client: Netns,
    server: Netns,
    _process: Process,
}

fn two_links() -> Option<TwoLinks> {
    if !namespaces_available() {
        return None;
    }
    let python = python()?;
    let client = Netns::new("c");
    let server = Netns::new("s");
    link(&client, "wa", "10.1.0.2/24", &server, "sa", "10.1.0.1/24");
    link(&client, "wb", "10.2.0.2/24", &server, "sb", "10.2.0.1/24");
    server.ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"]);
    client.ip(&[
        "route",
        "add",
        "10.99.0.1/32",
        "via",
        "10.1.0.1",
        "dev",
        "wa",
    ]);
    client.ip(&[
        "route",
        "add",
        "10.99.0.1/32",
        "via",
        "10.2.0.1",
        "dev",
        "wb",
        "metric",
        "100",
    ]);
    let process = server.peer_server(&python, PORT, &["10.99.0.1"]);
    Some(TwoLinks {
        client,
        server,
        _process: process,
    })
}

const SERVER_URL: &str = "ws://10.99.0.1:8080/";

/// A round trip from `client` to the server with `flags` added: sends "x"
/// and expects `expect` (the server answers "<client ip> x").
fn send_x(client: &Netns, flags: &[&str], expect: &str) -> Record {
    let mut args = vec![
        SERVER_URL,
        "--interpretation",
        "round_trip_latency",
        "--send",
        "x",
        "--expect",
        expect,
    ];
    args.extend_from_slice(flags);
    probe_in(client, &args)
}

#[test]
fn bind_interface_chooses_the_link() {
    let Some(net) = two_links() else {
        return;
    };
    net.server.drop_port("iifname \"sb\"", "tcp", PORT);

    let good = send_x(&net.client, &["--interface", "wa"], "10.1.0.2 x");
    assert_eq!(good.reason, None, "{:?}", good.meta.error);

    let bad = probe_in(
        &net.client,
        &[SERVER_URL, "--interface", "wb", "--timeout-ms", "800"],
    );
    assert_eq!(bad.reason.as_deref(), Some("ws_handshake_timeout"));
    assert_eq!(bad.meta.phase.as_deref(), Some("connect"));

    let missing = probe_in(&net.client, &[SERVER_URL, "--interface", "nosuch0"]);
    assert_eq!(missing.reason.as_deref(), Some("ws_open_failed"));
    let error = missing.meta.error.clone().unwrap_or_default();
    assert!(error.contains("bind_interface nosuch0"), "{error}");
}

#[test]
fn source_ip_is_the_address_the_server_sees() {
    let Some(net) = two_links() else {
        return;
    };
    net.client.ip(&["addr", "add", "10.1.0.3/24", "dev", "wa"]);
    let record = send_x(&net.client, &["--source-ip", "10.1.0.3"], "10.1.0.3 x");
    assert_eq!(record.reason, None, "{:?}", record.meta.last_reply);

    let unbound = send_x(&net.client, &["--timeout-ms", "500"], "10.1.0.3 x");
    assert_eq!(unbound.reason.as_deref(), Some("ws_reply_mismatch"));
    assert_eq!(unbound.meta.last_reply.as_deref(), Some("10.1.0.2 x"));
}

#[test]
fn fwmark_follows_a_policy_routing_rule() {
    let Some(net) = two_links() else {
        return;
    };
    net.client
        .ip(&["rule", "add", "fwmark", "0x2", "table", "200"]);
    net.client.ip(&[
        "route",
        "add",
        "10.99.0.1/32",
        "via",
        "10.2.0.1",
        "dev",
        "wb",
        "table",
        "200",
    ]);

    let marked = send_x(&net.client, &["--fwmark", "0x2"], "x");
    assert_eq!(marked.reason, None, "{:?}", marked.meta.error);
    assert_eq!(marked.meta.last_reply, None);
    let marked = send_x(&net.client, &["--fwmark", "2"], "10.2.0.2 x");
    assert_eq!(
        marked.reason, None,
        "marked traffic should leave over link b"
    );

    let unmarked = send_x(&net.client, &[], "10.1.0.2 x");
    assert_eq!(
        unmarked.reason, None,
        "unmarked traffic should leave over link a"
    );
}
