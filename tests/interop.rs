//! The real binary against third-party software deployed the way operators
//! deploy WebSocket endpoints:
//!
//! - nginx as a TLS-terminating reverse proxy (`tests/interop/nginx.conf.template`)
//!   in front of the Python `websockets` echo server, plus nginx's own
//!   refusals (403), redirects (301) and a dead backend (502);
//! - Node's `ws` package (`tests/interop/ws_server.js`), a second
//!   independent server implementation: echo, greeting, subprotocols,
//!   binary replies and permessage-deflate enabled but not offered.
//!
//! Everything listens on 127.0.0.1 only. Prerequisites: `nginx` (PATH,
//! /usr/sbin or `WSPROBE_TEST_NGINX`), `node` (or `WSPROBE_TEST_NODE`) and
//! the `ws` package in `WSPROBE_TEST_NODE_MODULES` (default
//! /opt/wsprobe-node/node_modules), all installed by `.ci/run`. Missing, a
//! test prints why and passes, except under `CI=true`, where it fails.

mod pysupport;
mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use pysupport::{PyServer, TlsMaterial};
use serde_json::Value;
use support::{free_port, probe, skip_or_fail, Process, Record, Run, TempDir, EVENT_WAIT};

const NGINX_TEMPLATE: &str = include_str!("interop/nginx.conf.template");
const NODE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/ws_server.js");
const DEFAULT_NODE_MODULES: &str = "/opt/wsprobe-node/node_modules";

/// How long a helper server may take to become ready before the test fails.
const READY_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Record checks
// ---------------------------------------------------------------------------

/// A successful record of `interpretation` (SPEC "The record"); `context`
/// (a server's log) is added to every failure message.
fn assert_success(run: &Run, interpretation: &str, context: &str) -> Record {
    let rec = run.record();
    let why = || {
        format!(
            "record: {rec:#?}\nwsprobe stderr:\n{}\n{context}",
            run.stderr
        )
    };
    assert_eq!(rec.reason, None, "reason; {}", why());
    assert_eq!(run.code, 0, "exit code of a successful probe; {}", why());
    assert_eq!(rec.interpretation, interpretation, "{}", why());
    assert_eq!(rec.meta.http_status, Some(101), "{}", why());
    let value = rec.value.unwrap_or_else(|| panic!("no value; {}", why()));
    assert!(value > 0.0, "a latency is positive; {}", why());
    assert_eq!(
        rec.meta.close_clean,
        Some(true),
        "the server answered our Close; {}",
        why()
    );
    rec
}

/// A failed open (SPEC "Reason codes", `ws_open_failed`).
fn assert_open_failed(run: &Run, context: &str) -> Record {
    let rec = run.record();
    let why = || {
        format!(
            "record: {rec:#?}\nwsprobe stderr:\n{}\n{context}",
            run.stderr
        )
    };
    assert_eq!(
        rec.reason.as_deref(),
        Some("ws_open_failed"),
        "reason; {}",
        why()
    );
    assert_eq!(rec.value, None, "handshake_latency has no data; {}", why());
    assert_eq!(rec.health, "unknown", "{}", why());
    assert_eq!(run.code, 1, "a record with a reason exits 1; {}", why());
    assert!(
        rec.meta.error.as_deref().is_some_and(|e| !e.is_empty()),
        "meta.error holds the detail; {}",
        why()
    );
    rec
}

fn ms(rec: &Record, key: &str) -> f64 {
    rec.timings()
        .get(key)
        .unwrap_or_else(|| panic!("meta.timings.{key} must be a number: {rec:#?}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

/// The nginx binary, or `None` (skipped, printed why; a failure under CI).
fn nginx_binary() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("WSPROBE_TEST_NGINX") {
        Some(explicit) => vec![PathBuf::from(explicit)],
        None => {
            let mut found: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
                .unwrap_or_default();
            found.push(PathBuf::from("/usr/sbin/nginx"));
            found
        }
    };
    let found = candidates.into_iter().find(|c| {
        c.is_file()
            && Command::new(c)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        skip_or_fail(
            "no runnable nginx (apt-get install nginx, set WSPROBE_TEST_NGINX, \
             or run the install part of .ci/run)",
        );
    }
    found
}

/// What goes into the template.
struct NginxConf<'a> {
    /// Certificate chain and key, PEM.
    leaf: &'a (PathBuf, PathBuf),
    /// The plain ws:// backend `location /` proxies to.
    backend_port: u16,
    /// nginx's `ssl_protocols` value.
    ssl_protocols: &'a str,
}

/// nginx in the foreground, with its own prefix (config, pid file, logs);
/// killed on drop, then its prefix removed.
struct Nginx {
    process: Process,
    prefix: TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx on a free 127.0.0.1 port and waits until it accepts TCP
    /// connections. `None` means skipped (printed why).
    fn start(conf: &NginxConf) -> Option<Nginx> {
        let binary = nginx_binary()?;
        // Picking a free port and handing it to nginx is racy: another
        // process may take it in between. nginx then exits at once saying
        // so, and we try another.
        for _attempt in 0..5 {
            let prefix = TempDir::new("wsprobe-nginx");
            let port = free_port();
            let config = prefix.write("nginx.conf", &render(conf, port));
            let stderr_path = prefix.join("nginx.stderr");
            let stderr = File::create(&stderr_path).expect("create nginx stderr file");
            let child = Command::new(&binary)
                .arg("-p")
                .arg(&prefix.path)
                .arg("-c")
                .arg(&config)
                .arg("-e")
                .arg("stderr")
                .arg("-g")
                .arg("daemon off;")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
            let mut nginx = Nginx {
                process: Process(child),
                prefix,
                port,
            };
            match nginx.wait_ready() {
                Ok(()) => return Some(nginx),
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("nginx did not start:\n{log}"),
            }
        }
        panic!("nginx found no free port in 5 attempts");
    }

    /// Polls (bounded) for nginx's pid file holding its pid (written after
    /// it has bound its port, so the port is nginx's and not a process that
    /// took it meanwhile) and a TCP connect being accepted: the readiness
    /// signal. Err(log) when nginx exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Some(status) = self.process.0.try_wait().expect("try_wait nginx") {
                return Err(format!("nginx exited with {status}\n{}", self.log()));
            }
            let pid_written = std::fs::read_to_string(self.prefix.join("nginx.pid"))
                .is_ok_and(|p| p.trim() == self.process.0.id().to_string());
            if pid_written && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "nginx accepted no connection on {addr} within {READY_WAIT:?}\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("wss://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's config, error log and access log, for failure messages.
    fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.prefix.join(name)).unwrap_or_default();
        format!(
            "--- nginx.conf ---\n{}--- nginx stderr ---\n{}--- access.log ---\n{}",
            read("nginx.conf"),
            read("nginx.stderr"),
            read("access.log")
        )
    }
}

fn render(conf: &NginxConf, port: u16) -> String {
    // As root (CI), nginx would otherwise look up its compiled-in user.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;"
    } else {
        ""
    };
    let out = NGINX_TEMPLATE
        .replace("{{USER}}", user)
        .replace("{{PORT}}", &port.to_string())
        .replace("{{CERT}}", path_str(&conf.leaf.0))
        .replace("{{KEY}}", path_str(&conf.leaf.1))
        .replace("{{SSL_PROTOCOLS}}", conf.ssl_protocols)
        .replace("{{BACKEND_PORT}}", &conf.backend_port.to_string());
    assert!(!out.contains("{{"), "unfilled placeholder in:\n{out}");
    out
}

/// The Python echo server behind nginx (TLS on nginx, plain ws:// behind).
/// `None` means skipped.
fn nginx_with_backend(tls: &TlsMaterial, ssl_protocols: &str) -> Option<(Nginx, PyServer)> {
    nginx_binary()?;
    let backend = PyServer::start(&[])?;
    let nginx = Nginx::start(&NginxConf {
        leaf: &tls.good,
        backend_port: backend.port,
        ssl_protocols,
    })?;
    Some((nginx, backend))
}

/// `wsprobe probe URL --ca-file CA --timeout-ms 5000 EXTRA...`
fn probe_wss(url: &str, tls: &TlsMaterial, extra: &[&str]) -> Run {
    let mut args = vec![
        url,
        "--ca-file",
        path_str(&tls.ca_pem),
        "--timeout-ms",
        "5000",
    ];
    args.extend_from_slice(extra);
    probe(&args)
}

/// TLS facts every wss:// record that reached TLS carries.
fn assert_tls(rec: &Record, version: &str, context: &str) {
    assert_eq!(
        rec.meta.tls_version.as_deref(),
        Some(version),
        "{rec:#?}\n{context}"
    );
    assert_eq!(rec.meta.tls_verified, Some(true), "{rec:#?}\n{context}");
    assert!(ms(rec, "tls_ms") > 0.0, "{rec:#?}");
}

#[test]
fn nginx_wss_handshake_latency() {
    let tls = TlsMaterial::generate();
    let Some((nginx, _backend)) = nginx_with_backend(&tls, "TLSv1.2 TLSv1.3") else {
        return;
    };
    let url = nginx.url("/socket");
    let run = probe_wss(&url, &tls, &["--interpretation", "handshake_latency"]);
    let log = nginx.log();
    let rec = assert_success(&run, "handshake_latency", &log);
    assert_tls(&rec, "TLSv1.3", &log);
    assert_eq!(rec.url, url, "{rec:#?}");
    assert_eq!(
        rec.meta.remote_addr,
        Some(format!("127.0.0.1:{}", nginx.port)),
        "the probe talked to nginx: {rec:#?}"
    );
    assert!(
        (rec.value.unwrap() - ms(&rec, "open_ms")).abs() < 0.002,
        "handshake value is the open time: {rec:#?}"
    );
    assert!(
        ms(&rec, "upgrade_ms") > 0.0,
        "the upgrade went through to the backend: {rec:#?}"
    );
}

#[test]
fn nginx_wss_round_trip_latency() {
    let tls = TlsMaterial::generate();
    let Some((nginx, _backend)) = nginx_with_backend(&tls, "TLSv1.2 TLSv1.3") else {
        return;
    };
    let run = probe_wss(
        &nginx.url("/socket"),
        &tls,
        &[
            "--interpretation",
            "round_trip_latency",
            "--send",
            "{\"op\":\"ping\",\"via\":\"nginx\"}",
            "--expect",
            "\"via\":\"nginx\"",
        ],
    );
    let log = nginx.log();
    let rec = assert_success(&run, "round_trip_latency", &log);
    assert_tls(&rec, "TLSv1.3", &log);
    assert!(
        (rec.value.unwrap() - ms(&rec, "rtt_ms")).abs() < 0.002,
        "round_trip_scope message: the value is rtt_ms: {rec:#?}"
    );
    assert_eq!(rec.meta.skipped_messages, Some(0), "{rec:#?}");
}

#[test]
fn nginx_tls12_only_is_reported_as_tls12() {
    let tls = TlsMaterial::generate();
    let Some((nginx, _backend)) = nginx_with_backend(&tls, "TLSv1.2") else {
        return;
    };
    let run = probe_wss(
        &nginx.url("/socket"),
        &tls,
        &[
            "--interpretation",
            "round_trip_latency",
            "--send",
            "tls12",
            "--expect",
            "tls12",
        ],
    );
    let log = nginx.log();
    let rec = assert_success(&run, "round_trip_latency", &log);
    assert_tls(&rec, "TLSv1.2", &log);
}

/// nginx's own answers need no backend: `location /` points at a port
/// nothing listens on.
fn nginx_without_backend(tls: &TlsMaterial) -> Option<Nginx> {
    Nginx::start(&NginxConf {
        leaf: &tls.good,
        backend_port: free_port(),
        ssl_protocols: "TLSv1.2 TLSv1.3",
    })
}

#[test]
fn nginx_403_is_open_failed_with_status() {
    let tls = TlsMaterial::generate();
    let Some(nginx) = nginx_without_backend(&tls) else {
        return;
    };
    let run = probe_wss(&nginx.url("/forbidden"), &tls, &[]);
    let log = nginx.log();
    let rec = assert_open_failed(&run, &log);
    assert_eq!(rec.meta.http_status, Some(403), "{rec:#?}\n{log}");
    assert_eq!(rec.meta.location, None, "{rec:#?}");
    assert_tls(&rec, "TLSv1.3", &log);
}

#[test]
fn nginx_301_is_open_failed_with_location() {
    let tls = TlsMaterial::generate();
    let Some(nginx) = nginx_without_backend(&tls) else {
        return;
    };
    let run = probe_wss(&nginx.url("/moved"), &tls, &[]);
    let log = nginx.log();
    let rec = assert_open_failed(&run, &log);
    assert_eq!(rec.meta.http_status, Some(301), "{rec:#?}\n{log}");
    assert_eq!(
        rec.meta.location.as_deref(),
        Some("https://ws.example.test/socket?v=2"),
        "the redirect is reported, not followed: {rec:#?}\n{log}"
    );
}

#[test]
fn nginx_backend_down_is_open_failed_502() {
    let tls = TlsMaterial::generate();
    let Some(nginx) = nginx_without_backend(&tls) else {
        return;
    };
    let run = probe_wss(
        &nginx.url("/socket"),
        &tls,
        &["--interpretation", "connection_success"],
    );
    let log = nginx.log();
    let rec = run.record();
    assert_eq!(
        rec.reason.as_deref(),
        Some("ws_open_failed"),
        "{rec:#?}\n{log}"
    );
    assert_eq!(rec.value, Some(0.0), "connection_success is 0: {rec:#?}");
    assert_eq!(rec.health, "unhealthy", "{rec:#?}");
    assert_eq!(rec.meta.http_status, Some(502), "{rec:#?}\n{log}");
    assert_eq!(run.code, 1, "{rec:#?}");
    assert_tls(&rec, "TLSv1.3", &log);
}

// ---------------------------------------------------------------------------
// Node.js `ws`
// ---------------------------------------------------------------------------

/// A running `tests/interop/ws_server.js`; killed (stdin closed) on drop.
struct NodeServer {
    _process: Process,
    port: u16,
    /// The JSON event lines the server printed after its port.
    events: Receiver<Value>,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl NodeServer {
    /// Starts the script with `args` and waits for its port line. `None`
    /// means skipped (printed why).
    fn start(args: &[&str]) -> Option<NodeServer> {
        let node = std::env::var("WSPROBE_TEST_NODE").unwrap_or_else(|_| "node".into());
        let modules = std::env::var("WSPROBE_TEST_NODE_MODULES")
            .unwrap_or_else(|_| DEFAULT_NODE_MODULES.into());
        let node_runs = Command::new(&node)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !node_runs {
            skip_or_fail(&format!(
                "`{node} --version` does not run (install Node.js or set WSPROBE_TEST_NODE)"
            ));
            return None;
        }
        if !Path::new(&modules).join("ws/package.json").is_file() {
            skip_or_fail(&format!(
                "no Node.js ws package in {modules} (npm install --prefix /opt/wsprobe-node ws@8.18.3, \
                 set WSPROBE_TEST_NODE_MODULES, or run the install part of .ci/run)"
            ));
            return None;
        }
        let dir = TempDir::new("wsprobe-node");
        let stderr_path = dir.join("node.stderr");
        let stderr = File::create(&stderr_path).expect("create node stderr file");
        let mut child = Command::new(&node)
            .arg(NODE_SCRIPT)
            .args(args)
            .env("NODE_PATH", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {node} {NODE_SCRIPT}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = mpsc::channel();
        let (event_tx, events) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = port_tx.send(lines.next());
            for line in lines.map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Value::String(format!("not JSON ({e}): {line}")));
                if event_tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut server = NodeServer {
            _process: Process(child),
            port: 0,
            events,
            stderr_path,
            _dir: dir,
        };
        let line = match port_rx.recv_timeout(READY_WAIT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => panic!(
                "the Node server ended before its port:\n{}",
                server.stderr()
            ),
            Err(_) => panic!(
                "the Node server printed no port within {READY_WAIT:?}:\n{}",
                server.stderr()
            ),
        };
        server.port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the Node server's first line is not a port: {line:?}\n{}",
                server.stderr()
            )
        });
        Some(server)
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    fn stderr(&self) -> String {
        format!(
            "--- node stderr ---\n{}",
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
        )
    }

    /// The next event (at most `EVENT_WAIT`).
    fn next_event(&self, waiting_for: &str) -> Value {
        match self.events.recv_timeout(EVENT_WAIT) {
            Ok(event) => event,
            Err(_) => panic!(
                "the Node server reported no {waiting_for} within {EVENT_WAIT:?}\n{}",
                self.stderr()
            ),
        }
    }

    /// The one connection the server saw: its open report and the messages
    /// it received; checks that the probe ended it with a Close 1000.
    fn connection(&self) -> (Value, Vec<Value>) {
        let open = self.next_event("open event");
        assert_eq!(open["event"], "open", "{open}\n{}", self.stderr());
        let mut messages = Vec::new();
        loop {
            let event = self.next_event("close event");
            match event["event"].as_str() {
                Some("message") => messages.push(event),
                Some("close") => {
                    assert_eq!(
                        event["code"],
                        1000,
                        "the probe closes with 1000: {event}\n{}",
                        self.stderr()
                    );
                    return (open, messages);
                }
                _ => panic!("unexpected event {event}\n{}", self.stderr()),
            }
        }
    }
}

/// A hand-written opening handshake on 127.0.0.1:`port` with `extra`
/// header lines; returns the answer's head (read with a bounded timeout).
fn raw_upgrade(port: u16, extra: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(EVENT_WAIT))
        .expect("set read timeout");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("write upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "the upgrade answer ended early ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn node_ws_handshake_latency() {
    let Some(server) = NodeServer::start(&[]) else {
        return;
    };
    let url = server.url("/socket");
    let run = probe(&[&url, "--interpretation", "handshake_latency"]);
    let rec = assert_success(&run, "handshake_latency", &server.stderr());
    assert_eq!(rec.url, url, "{rec:#?}");
    assert_eq!(
        rec.meta.remote_addr,
        Some(format!("127.0.0.1:{}", server.port)),
        "{rec:#?}"
    );
    assert_eq!(rec.meta.tls_version, None, "no TLS on ws://: {rec:#?}");
    assert_eq!(rec.meta.subprotocol, None, "{rec:#?}");
    let (open, messages) = server.connection();
    assert_eq!(open["path"], "/socket", "{open}");
    assert!(
        messages.is_empty(),
        "a handshake probe sends nothing: {messages:?}"
    );
    assert_eq!(open["offered_protocols"], Value::Null, "{open}");
}

#[test]
fn node_ws_permessage_deflate_enabled_is_not_selected() {
    // The server would negotiate permessage-deflate; the probe offers no
    // extension, so none may be chosen, and the open and echo succeed.
    let Some(server) = NodeServer::start(&["--deflate"]) else {
        return;
    };
    let payload = "deflate-me ".repeat(40);
    let run = probe(&[
        &server.url("/"),
        "--interpretation",
        "round_trip_latency",
        "--send",
        &payload,
        "--expect",
        &payload,
    ]);
    let rec = assert_success(&run, "round_trip_latency", &server.stderr());
    assert_eq!(rec.meta.skipped_messages, Some(0), "{rec:#?}");
    let (open, messages) = server.connection();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        open["offered_extensions"],
        Value::Null,
        "the probe offers no extension: {open}"
    );
    assert_eq!(open["extensions"], "", "none was selected: {open}");

    // The control: offered permessage-deflate, this server does select it,
    // so the success above is the probe offering none, not a server
    // without compression.
    let answer = raw_upgrade(
        server.port,
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
    assert!(
        answer.lines().any(|l| l
            .to_ascii_lowercase()
            .starts_with("sec-websocket-extensions: permessage-deflate")),
        "the server selects permessage-deflate when offered:\n{answer}"
    );
}

#[test]
fn node_ws_round_trip_skips_greeting() {
    let Some(server) = NodeServer::start(&["--greeting", "{\"op\":\"welcome\"}"]) else {
        return;
    };
    let run = probe(&[
        &server.url("/feed"),
        "--interpretation",
        "round_trip_latency",
        "--send",
        "{\"op\":\"ping\",\"n\":7}",
        "--expect",
        "\"n\":7",
    ]);
    let rec = assert_success(&run, "round_trip_latency", &server.stderr());
    assert_eq!(
        rec.meta.skipped_messages,
        Some(1),
        "the greeting is read after the send and skipped: {rec:#?}"
    );
    assert!(
        (rec.value.unwrap() - ms(&rec, "rtt_ms")).abs() < 0.002,
        "{rec:#?}"
    );
    let (_, messages) = server.connection();
    assert_eq!(messages.len(), 1, "one message sent: {messages:?}");
    assert_eq!(
        messages[0]["data"], "{\"op\":\"ping\",\"n\":7}",
        "{messages:?}"
    );
    assert_eq!(messages[0]["binary"], false, "sent as text: {messages:?}");
}

#[test]
fn node_ws_subprotocol_selected() {
    let Some(server) = NodeServer::start(&["--subprotocol", "chat.v2"]) else {
        return;
    };
    let run = probe(&[
        &server.url("/"),
        "--protocol",
        "chat.v1",
        "--protocol",
        "chat.v2",
    ]);
    let rec = assert_success(&run, "handshake_latency", &server.stderr());
    assert_eq!(rec.meta.subprotocol.as_deref(), Some("chat.v2"), "{rec:#?}");
    let (open, _) = server.connection();
    assert_eq!(open["offered_protocols"], "chat.v1, chat.v2", "{open}");
    assert_eq!(open["protocol"], "chat.v2", "{open}");
}

#[test]
fn node_ws_subprotocol_none_acceptable_is_open_failed() {
    // ws answers 101 without a subprotocol when none offered is supported;
    // the probe asked for one, so the open fails (SPEC "Reason codes").
    let Some(server) = NodeServer::start(&["--subprotocol", "chat.v2"]) else {
        return;
    };
    let run = probe(&[&server.url("/"), "--protocol", "chat.v1"]);
    let rec = assert_open_failed(&run, &server.stderr());
    assert_eq!(rec.meta.http_status, Some(101), "{rec:#?}");
    assert_eq!(rec.meta.subprotocol, None, "{rec:#?}");
}

#[test]
fn node_ws_unoffered_subprotocol_is_open_failed() {
    let Some(server) = NodeServer::start(&["--force-subprotocol", "superchat"]) else {
        return;
    };
    let run = probe(&[&server.url("/"), "--protocol", "chat"]);
    let rec = assert_open_failed(&run, &server.stderr());
    assert_eq!(rec.meta.http_status, Some(101), "{rec:#?}");
    assert!(
        rec.meta
            .error
            .as_deref()
            .unwrap_or("")
            .contains("superchat"),
        "meta.error names what the server chose: {rec:#?}"
    );
}

#[test]
fn node_ws_binary_echo() {
    let Some(server) = NodeServer::start(&["--binary"]) else {
        return;
    };
    let run = probe(&[
        &server.url("/bin"),
        "--interpretation",
        "round_trip_latency",
        "--send",
        "bytes:\u{e9}\u{1f600}",
        "--expect",
        "\u{1f600}",
    ]);
    let rec = assert_success(&run, "round_trip_latency", &server.stderr());
    assert_eq!(
        rec.meta.skipped_messages,
        Some(0),
        "the binary reply matched as bytes: {rec:#?}"
    );
    let (_, messages) = server.connection();
    assert_eq!(messages.len(), 1, "one message sent: {messages:?}");
    assert_eq!(messages[0]["data"], "bytes:\u{e9}\u{1f600}", "{messages:?}");
    assert_eq!(messages[0]["binary"], false, "sent as text: {messages:?}");
    assert_eq!(
        messages[0]["replied_binary"], true,
        "the echo went back as a binary message: {messages:?}"
    );
}
