//! Deadlines where the network stalls, in a private network namespace (root
//! only): a TCP connect whose SYN is dropped, and a resolver that never
//! answers. SPEC "Measurement" (the deadline covers resolution and connect)
//! and "Reason codes" (`ws_handshake_timeout` with `meta.phase`).
//!
//! Not root: skipped with a message, except under `CI=true` (CI is root).

mod netsupport;
mod support;

use std::time::Duration;

use netsupport::{namespaces_available, Netns};
use support::{Record, Run};

/// A namespace of its own; `None`: not root or no `ip`/`nft`/`ss`, and not
/// in CI (skipped).
fn namespace(tag: &str) -> Option<Netns> {
    namespaces_available().then(|| Netns::new(tag))
}

fn assert_handshake_timeout(run: &Run, phase: &str) -> Record {
    let rec = run.record();
    assert_eq!(
        rec.reason.as_deref(),
        Some("ws_handshake_timeout"),
        "{rec:#?}\nstderr: {}",
        run.stderr
    );
    assert_eq!(rec.meta.phase.as_deref(), Some(phase), "{rec:#?}");
    assert_eq!(run.code, 1, "{run:#?}");
    rec
}

#[test]
fn black_holed_connect_times_out_in_connect_phase() {
    let Some(ns) = namespace("bh") else {
        return;
    };
    let port = 9;
    let url = format!("ws://127.0.0.1:{port}/");

    // Control: without the rule the closed port is refused at once.
    let run = ns.probe(&[&url, "--timeout-ms", "500"]);
    assert_eq!(
        run.record().reason.as_deref(),
        Some("ws_open_failed"),
        "{run:#?}"
    );

    ns.drop_port("", "tcp", port);
    let run = ns.probe(&[&url, "--timeout-ms", "500"]);
    let rec = assert_handshake_timeout(&run, "connect");
    assert_eq!(rec.value, None, "{rec:#?}");
    assert_eq!(rec.health, "unknown", "{rec:#?}");
    assert!(
        run.elapsed >= Duration::from_millis(450),
        "gave up before the deadline: {:?}",
        run.elapsed
    );
    assert!(
        run.elapsed < Duration::from_millis(2500),
        "the 500 ms deadline held the process for {:?}",
        run.elapsed
    );

    // connection_success reports 0, never no data.
    let run = ns.probe(&[
        &url,
        "--timeout-ms",
        "500",
        "--interpretation",
        "connection_success",
    ]);
    let rec = assert_handshake_timeout(&run, "connect");
    assert_eq!(rec.value, Some(0.0), "{rec:#?}");
    assert_eq!(rec.health, "unhealthy", "{rec:#?}");
}

#[test]
fn silent_resolver_times_out_in_dns_phase() {
    let Some(ns) = namespace("dns") else {
        return;
    };
    // glibc would wait 5 s per query (10 s seen for A + AAAA) on its own.
    ns.resolv_conf("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n");
    ns.drop_port("", "udp", 53);
    ns.drop_port("", "tcp", 53);

    let run = ns.probe(&["ws://wsprobe-test.example/", "--timeout-ms", "800"]);
    let rec = assert_handshake_timeout(&run, "dns");
    assert_eq!(rec.value, None, "{rec:#?}");
    // On the raw record: the key must be absent, not null.
    let raw = run.raw_record();
    assert!(
        raw["meta"]["timings"].get("connect_ms").is_none(),
        "connect never ran: {raw}"
    );
    assert!(
        run.elapsed < Duration::from_secs(2),
        "a stuck resolver held the process for {:?} past an 800 ms deadline",
        run.elapsed
    );
}

#[test]
fn a_hung_resolver_costs_one_thread_not_one_per_run() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let Some(ns) = namespace("dns2") else {
        return;
    };
    ns.resolv_conf("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n");
    ns.drop_port("", "udp", 53);
    ns.drop_port("", "tcp", 53);

    // Five runs 300 ms apart, each given up after 200 ms: the lookup of the
    // first is still running (glibc waits 5 s) when the later ones start.
    let mut child = ns
        .command(support::WSPROBE)
        .args(["probe", "ws://wsprobe-test.example/", "--count", "5"])
        .args(["--interval-ms", "300", "--timeout-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wsprobe");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut most = 0;
    for _ in 0..4 {
        let line = lines.next().expect("a record").expect("read");
        assert!(line.contains("\"phase\":\"dns\""), "{line}");
        let resolvers = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("tasks")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "wsprobe-dns")
            .count();
        most = most.max(resolvers);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(most, 1, "resolver threads should not pile up run after run");
}
