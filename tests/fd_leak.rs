//! No socket outlives its run: 200 runs in one process, across success and
//! every early exit, leave no client socket open. In a file of its own, so
//! no other test shares the process's descriptor table.

mod support;

use std::collections::HashSet;

use serde_json::{json, Map, Value};
use wsprobe::config::{ad_hoc_probe, process_env};
use wsprobe::spec::ProbeSpec;

fn spec(fields: Value) -> ProbeSpec {
    let Value::Object(fields) = fields else {
        panic!("fields must be an object");
    };
    let fields: Map<String, Value> = fields;
    match ad_hoc_probe(&fields, &process_env) {
        Ok(config) => config.probes.into_iter().next().expect("one probe"),
        Err(errors) => panic!("bad probe fields: {errors:?}"),
    }
}

/// Socket inodes this process holds open.
fn open_socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Inodes of TCP sockets whose remote port is `port` (the client side of
/// connections to a test server on that port).
fn client_sockets_to(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if remote_port == Some(port) {
                if let Some(inode) = fields.get(9).and_then(|i| i.parse().ok()) {
                    inodes.insert(inode);
                }
            }
        }
    }
    inodes
}

fn port_of(url: &str) -> u16 {
    let authority = url.trim_start_matches("ws://");
    let port = authority.split(['/', ':']).nth(1).expect("port in url");
    port.parse().expect("numeric port")
}

#[test]
fn two_hundred_runs_leave_no_socket_open() {
    let echo = support::echo_server();
    let drop_server = support::drop_before_reply_server();
    let closer = support::close_before_reply_server(Some((4001, "bye")));
    let silent = support::silent_after_upgrade_server();
    let refused = format!("ws://127.0.0.1:{}/", support::free_port());

    let plans: Vec<(ProbeSpec, usize)> = vec![
        (spec(json!({"url": echo.url()})), 60),
        (
            spec(
                json!({"url": echo.url(), "interpretation": "round_trip_latency",
                        "send_message": "hi", "expect_message": "hi"}),
            ),
            60,
        ),
        (
            spec(json!({"url": echo.url(), "interpretation": "connection_success"})),
            30,
        ),
        (
            spec(
                json!({"url": drop_server.url(), "interpretation": "round_trip_latency",
                        "send_message": "hi"}),
            ),
            20,
        ),
        (
            spec(
                json!({"url": closer.url(), "interpretation": "round_trip_latency",
                        "send_message": "hi"}),
            ),
            20,
        ),
        (spec(json!({"url": refused})), 5),
        (
            spec(
                json!({"url": silent.url(), "interpretation": "round_trip_latency",
                        "send_message": "hi", "timeout_ms": 100}),
            ),
            5,
        ),
    ];
    assert_eq!(plans.iter().map(|(_, n)| n).sum::<usize>(), 200);

    let before = open_socket_inodes();
    let mut failures = 0;
    for (spec, runs) in &plans {
        for _ in 0..*runs {
            let outcome = wsprobe::probe::run(spec);
            failures += usize::from(outcome.reason.is_some());
        }
    }
    // Every server-side failure plan failed, every echo plan succeeded.
    assert_eq!(failures, 20 + 20 + 5 + 5);

    let ports: Vec<u16> = [&echo, &drop_server, &closer, &silent]
        .iter()
        .map(|s| port_of(&s.url()))
        .chain([port_of(&refused)])
        .collect();
    let held = open_socket_inodes();
    for port in ports {
        let leaked: Vec<u64> = client_sockets_to(port)
            .intersection(&held)
            .copied()
            .filter(|inode| !before.contains(inode))
            .collect();
        assert!(
            leaked.is_empty(),
            "client sockets to port {port} still open after the runs: {leaked:?}"
        );
    }
}
