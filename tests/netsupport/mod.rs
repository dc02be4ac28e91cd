//! Network namespaces for the root-only tests: a namespace per test host,
//! veth links between them, addresses, routes, nftables drops, per-namespace
//! `hosts` and `resolv.conf`, and commands (the binary under test among
//! them, through `support`'s runner) run inside. Everything is removed on
//! drop, even after a panic.
//!
//! Not root: the tests skip with a printed reason, except under `CI=true`
//! (CI runs as root), where they fail instead.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use crate::support::{run_command, skip_or_fail, unique_name, Process, Run, WSPROBE};

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(1).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// True when namespaces can be made here; otherwise prints why (or fails
/// under CI) and the test returns early.
pub fn namespaces_available() -> bool {
    if !is_root() {
        skip_or_fail("network namespace tests need root");
        return false;
    }
    for tool in ["ip", "nft", "ss"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip_or_fail(&format!("`{tool}` not found (packages iproute2, nftables)"));
            return false;
        }
    }
    true
}

/// Runs a command and panics with its stderr when it fails.
pub fn must(command: &mut Command) -> Output {
    let output = command.output().expect("start command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub struct Netns {
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    /// A namespace with `lo` up and an empty nftables input chain.
    pub fn new(tag: &str) -> Netns {
        // Interface-free names stay short enough for `ip netns`.
        let name = unique_name(&format!("wsp{tag}"));
        let ns = Netns {
            etc: PathBuf::from("/etc/netns").join(&name),
            name,
        };
        must(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.ip(&["link", "set", "lo", "up"]);
        ns.nft(&["add table inet t"]);
        ns.nft(&["add chain inet t input { type filter hook input priority 0; policy accept; }"]);
        ns
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) {
        must(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// `nft RULE` inside the namespace (one rule as one string).
    pub fn nft(&self, rule: &[&str]) {
        must(self.command("nft").args(rule));
    }

    /// Drops incoming `proto` (`tcp` or `udp`) to `port` matching `extra`
    /// (e.g. `meta nfproto ipv6`; `""` for every packet).
    pub fn drop_port(&self, extra: &str, proto: &str, port: u16) {
        self.nft(&[&format!(
            "add rule inet t input {extra} {proto} dport {port} drop"
        )]);
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `wsprobe probe ARGS...` inside the namespace, as `support::probe`
    /// runs it outside: watchdog, and no record on stderr.
    pub fn probe(&self, args: &[&str]) -> Run {
        let mut command = self.command(WSPROBE);
        command.arg("probe").args(args);
        let run = run_command(command);
        run.assert_stderr_has_no_records();
        run
    }

    /// `/etc/netns/NS/hosts`, which `ip netns exec` puts over /etc/hosts.
    pub fn hosts(&self, contents: &str) {
        self.etc_file("hosts", contents);
    }

    /// `/etc/netns/NS/resolv.conf`, which `ip netns exec` puts over
    /// /etc/resolv.conf.
    pub fn resolv_conf(&self, contents: &str) {
        self.etc_file("resolv.conf", contents);
    }

    fn etc_file(&self, name: &str, contents: &str) {
        std::fs::create_dir_all(&self.etc).expect("create /etc/netns dir");
        std::fs::write(self.etc.join(name), contents)
            .unwrap_or_else(|e| panic!("write /etc/netns/.../{name}: {e}"));
    }

    /// Starts the peer-reporting WebSocket server on `port` at each address
    /// and waits for its readiness line.
    pub fn peer_server(&self, python: &str, port: u16, listen: &[&str]) -> Process {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/peer_server.py");
        let mut command = self.command(python);
        command.arg(script).arg("--port").arg(port.to_string());
        for addr in listen {
            command.arg("--listen").arg(addr);
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start peer_server.py");
        // Ended on drop from here on, even if the readiness check fails.
        let mut server = Process(child);
        let (ready, _rest) = first_line(&mut server.0);
        assert_eq!(ready.trim(), "ready", "peer_server.py did not start");
        server
    }

    /// TCP sockets in the namespace in state SYN-SENT (`ss` lines).
    pub fn syn_sent(&self) -> Vec<String> {
        let out = must(self.command("ss").args(["-Htn", "state", "syn-sent"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// A veth pair from `a` (interface `a_if`, address `a_cidr`) to `b`.
pub fn link(a: &Netns, a_if: &str, a_cidr: &str, b: &Netns, b_if: &str, b_cidr: &str) {
    must(Command::new("ip").args([
        "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]));
    a.ip(&["addr", "add", a_cidr, "dev", a_if]);
    b.ip(&["addr", "add", b_cidr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// The first stdout line of a running command, and the command itself.
pub fn first_line(child: &mut Child) -> (String, BufReader<ChildStdout>) {
    let mut reader = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    (line, reader)
}
