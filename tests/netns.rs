//! Deadlines where the network stalls, in a private network namespace (root
//! only): a TCP connect whose SYN is dropped, and a resolver that never
//! answers. SPEC "Measurement" (the deadline covers resolution and connect)
//! and "Reason codes" (`ws_handshake_timeout` with `meta.phase`).
//!
//! Not root: skipped with a message, except under `CI=true` (CI is root).

mod pysupport;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use pysupport::{run_command, skip_or_fail, unique_name, Run, WSPROBE};

/// A network namespace with `lo` up and an nftables input chain; deleted
/// (with its `/etc/netns` files) on drop.
struct Netns {
    name: String,
    etc: PathBuf,
}

impl Netns {
    /// `None`: not root or no `ip`/`nft`, and not in CI (skipped).
    fn create(tag: &str) -> Option<Netns> {
        if !is_root() {
            skip_or_fail("network namespace tests need root");
            return None;
        }
        for tool in ["ip", "nft"] {
            if !tool_exists(tool) {
                skip_or_fail(&format!("`{tool}` not found (packages iproute2, nftables)"));
                return None;
            }
        }
        // Short: names end up in /run/netns and in interface-free paths only,
        // but keep them readable in `ip netns list` if a run is interrupted.
        let name = unique_name(&format!("wsp-{tag}"));
        let ns = Netns {
            etc: Path::new("/etc/netns").join(&name),
            name,
        };
        ip(&["netns", "add", &ns.name]);
        // From here on Drop cleans up, even if a later step panics.
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns.nft(&["add", "table", "inet", "wsprobe_test"]);
        ns.nft(&[
            "add",
            "chain",
            "inet",
            "wsprobe_test",
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ]);
        Some(ns)
    }

    fn nft(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.name, "nft"];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Drops every packet to `proto` port `port` arriving in the namespace.
    fn drop_port(&self, proto: &str, port: u16) {
        self.nft(&[
            "add",
            "rule",
            "inet",
            "wsprobe_test",
            "input",
            proto,
            "dport",
            &port.to_string(),
            "drop",
        ]);
    }

    /// The namespace's own resolv.conf (`ip netns exec` bind-mounts it).
    fn resolv_conf(&self, contents: &str) {
        std::fs::create_dir_all(&self.etc).expect("create /etc/netns/NAME");
        std::fs::write(self.etc.join("resolv.conf"), contents).expect("write resolv.conf");
    }

    fn wsprobe(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, WSPROBE]).args(args);
        run_command(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tool_exists(tool: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|dir| Path::new(dir).join(tool).exists())
}

/// Effective uid 0, read from /proc/self/status (no libc needed).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

fn assert_handshake_timeout(run: &Run, phase: &str) -> Value {
    let rec = run.record().clone();
    assert_eq!(
        rec["reason"], "ws_handshake_timeout",
        "{rec}\nstderr: {}",
        run.stderr
    );
    assert_eq!(rec["meta"]["phase"], phase, "{rec}");
    assert_eq!(run.code, 1, "{run:#?}");
    rec
}

#[test]
fn black_holed_connect_times_out_in_connect_phase() {
    let Some(ns) = Netns::create("bh") else {
        return;
    };
    let port = 9;
    let url = format!("ws://127.0.0.1:{port}/");

    // Control: without the rule the closed port is refused at once.
    let run = ns.wsprobe(&["probe", &url, "--timeout-ms", "500"]);
    assert_eq!(run.record()["reason"], "ws_open_failed", "{run:#?}");

    ns.drop_port("tcp", port);
    let run = ns.wsprobe(&["probe", &url, "--timeout-ms", "500"]);
    let rec = assert_handshake_timeout(&run, "connect");
    assert_eq!(rec["value"], Value::Null, "{rec}");
    assert_eq!(rec["health"], "unknown", "{rec}");
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
    let run = ns.wsprobe(&[
        "probe",
        &url,
        "--timeout-ms",
        "500",
        "--interpretation",
        "connection_success",
    ]);
    let rec = assert_handshake_timeout(&run, "connect");
    assert_eq!(rec["value"], 0.0, "{rec}");
    assert_eq!(rec["health"], "unhealthy", "{rec}");
}

#[test]
fn silent_resolver_times_out_in_dns_phase() {
    let Some(ns) = Netns::create("dns") else {
        return;
    };
    // glibc would wait 5 s per query (10 s seen for A + AAAA) on its own.
    ns.resolv_conf("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n");
    ns.drop_port("udp", 53);
    ns.drop_port("tcp", 53);

    let run = ns.wsprobe(&["probe", "ws://wsprobe-test.example/", "--timeout-ms", "800"]);
    let rec = assert_handshake_timeout(&run, "dns");
    assert_eq!(rec["value"], Value::Null, "{rec}");
    assert!(
        rec["meta"]["timings"].get("connect_ms").is_none(),
        "connect never ran: {rec}"
    );
    assert!(
        run.elapsed < Duration::from_secs(2),
        "a stuck resolver held the process for {:?} past an 800 ms deadline",
        run.elapsed
    );
}
