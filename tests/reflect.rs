//! `wsprobe reflect`, the real binary: third-party clients (Python
//! `websockets`, Node `ws`) and `wsprobe probe` echo through it over ws://
//! and wss://, and every defence is attacked with raw bytes.
//!
//! The reflector binds port 0 and prints "listening on ADDR" on stderr;
//! tests read that line rather than sleep. Missing Python or Node: skipped
//! with the reason printed, a failure under `CI=true`.

mod pysupport;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use pysupport::{python, TlsMaterial};
use serde_json::Value;
use socket2::{Domain, Socket, Type};
use support::{probe, skip_or_fail, Process, Record, EVENT_WAIT, WSPROBE};

const PY_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/reflect_client.py");
const NODE_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/reflect_client.js"
);
/// Built with server-side TLS (the default feature `reflect-tls`).
const TLS: bool = cfg!(feature = "reflect-tls");
const DEFAULT_NODE_MODULES: &str = "/opt/wsprobe-node/node_modules";

// ---------------------------------------------------------------------------
// The reflector under test
// ---------------------------------------------------------------------------

/// A running `wsprobe reflect`; killed on drop.
struct Reflector {
    process: Process,
    addrs: Vec<SocketAddr>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Reflector {
    /// Starts `wsprobe reflect ARGS` (with `--listen 127.0.0.1:0` unless
    /// ARGS has a --listen) and waits for one "listening on" line per
    /// --listen.
    fn start(args: &[&str]) -> Reflector {
        Self::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Reflector {
        let mut argv = vec!["reflect"];
        if !args.contains(&"--listen") {
            argv.extend(["--listen", "127.0.0.1:0"]);
        }
        argv.extend(args);
        let listens = argv.iter().filter(|a| **a == "--listen").count();
        let mut child = Command::new(WSPROBE)
            .args(&argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsprobe reflect");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut reflector = Reflector {
            process: Process(child),
            addrs: Vec::new(),
            stderr: rx,
            seen: Vec::new(),
        };
        while reflector.addrs.len() < listens {
            let line = reflector.wait_line("listening on");
            let addr = line
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"));
            reflector.addrs.push(addr);
        }
        reflector
    }

    /// Serving wss:// with the material's good certificate (for
    /// `localhost` and 127.0.0.1).
    fn start_tls(tls: &TlsMaterial) -> Reflector {
        let (cert, key) = (tls.good.0.to_str().unwrap(), tls.good.1.to_str().unwrap());
        Self::start(&["--tls-cert", cert, "--tls-key", key])
    }

    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/echo", self.addr())
    }

    /// The next stderr line containing `needle` (within `EVENT_WAIT`).
    fn wait_line(&mut self, needle: &str) -> String {
        let until = Instant::now() + EVENT_WAIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no stderr line with {needle:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn child(&mut self) -> &mut Child {
        &mut self.process.0
    }

    fn signal(&mut self, signal: &str) {
        let pid = self.child().id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Starts `wsprobe reflect ARGS` expecting a start-up failure: exit code
/// and stderr.
fn start_fails(args: &[&str]) -> (i32, String) {
    let out = Command::new(WSPROBE)
        .arg("reflect")
        .args(args)
        .stdin(Stdio::null())
        .env_remove("WSPROBE_TEST_UNSET")
        .output()
        .expect("run wsprobe reflect");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// A raw client, for the attacks
// ---------------------------------------------------------------------------

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to reflect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Connects from `source` (any 127.0.0.0/8 address on Linux).
fn connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let source: SocketAddr = format!("{source}:0").parse().expect("source");
    socket.bind(&source.into()).expect("bind source");
    socket.connect(&addr.into()).expect("connect from source");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Sends an upgrade request with `extra` header lines; returns the answer's
/// head (status line first).
fn upgrade_with(stream: &mut TcpStream, extra: &str) -> String {
    let request = format!(
        "GET /any/path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send upgrade");
    read_head(stream)
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn opened(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    let head = upgrade_with(&mut stream, "");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream
}

/// A client frame, masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0xA1, 0xB2, 0xC3, 0xD4];
    let bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads one server frame: (first byte, payload). Server frames are
/// unmasked.
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    stream.read_exact(&mut h).expect("frame header");
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).expect("length");
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).expect("length");
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).expect("payload");
    (h[0], payload)
}

/// Reads frames until a Close; its code.
fn close_code(stream: &mut TcpStream) -> u16 {
    loop {
        let (first, payload) = read_frame(stream);
        if first & 0x0F == 0x8 {
            assert!(payload.len() >= 2, "a Close with a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// True once the server has closed the TCP connection (EOF or reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn echo_once(stream: &mut TcpStream, text: &str) {
    stream
        .write_all(&frame(0x81, text.as_bytes(), true))
        .expect("send text");
    assert_eq!(read_frame(stream), (0x81, text.as_bytes().to_vec()));
}

// ---------------------------------------------------------------------------
// Third-party clients
// ---------------------------------------------------------------------------

fn py_client(url: &str, extra: &[&str]) -> Option<Value> {
    let python = python()?;
    let out = Command::new(python)
        .arg(PY_CLIENT)
        .arg(url)
        .args(extra)
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "Python client said {stdout:?} ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
}

fn node_client(url: &str, ca: Option<&Path>) -> Option<Value> {
    let modules =
        std::env::var("WSPROBE_TEST_NODE_MODULES").unwrap_or_else(|_| DEFAULT_NODE_MODULES.into());
    if !Path::new(&modules).join("ws/package.json").is_file() {
        skip_or_fail(&format!(
            "no Node.js ws package in {modules} (run the install part of .ci/run)"
        ));
        return None;
    }
    let mut cmd = Command::new("node");
    cmd.arg(NODE_CLIENT).arg(url).env("NODE_PATH", &modules);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = cmd.output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "Node client said {stdout:?} ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
}

fn assert_echoed(result: &Value) {
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["close_code"], 1000, "{result}");
}

#[test]
fn python_websockets_echoes_over_ws_and_wss() {
    let plain = Reflector::start(&[]);
    let Some(result) = py_client(&plain.url("ws"), &[]) else {
        return;
    };
    assert_echoed(&result);
    assert_eq!(result["protocol"], Value::Null, "no subprotocol by default");
    if !TLS {
        return;
    }

    let tls = TlsMaterial::generate();
    let secure = Reflector::start_tls(&tls);
    let url = secure.url("wss");
    let result = py_client(&url, &["--ca", tls.ca_pem.to_str().unwrap()]).unwrap();
    assert_echoed(&result);
}

#[test]
fn python_websockets_gets_a_listed_subprotocol_only() {
    let reflector = Reflector::start(&["--protocol", "echo.v2", "--protocol", "other"]);
    let Some(result) = py_client(
        &reflector.url("ws"),
        &["--protocol", "nope", "--protocol", "echo.v2"],
    ) else {
        return;
    };
    assert_echoed(&result);
    assert_eq!(result["protocol"], "echo.v2");
}

#[test]
fn node_ws_echoes_over_ws_and_wss() {
    let plain = Reflector::start(&[]);
    let Some(result) = node_client(&plain.url("ws"), None) else {
        return;
    };
    assert_echoed(&result);
    if !TLS {
        return;
    }

    let tls = TlsMaterial::generate();
    let secure = Reflector::start_tls(&tls);
    let url = secure.url("wss");
    assert_echoed(&node_client(&url, Some(&tls.ca_pem)).unwrap());
}

// ---------------------------------------------------------------------------
// wsprobe probe against it
// ---------------------------------------------------------------------------

fn probe_ok(args: &[&str]) -> Record {
    let run = probe(args);
    let record = run.record();
    assert_eq!(record.reason, None, "{record:#?}\n{}", run.stderr);
    assert_eq!(record.meta.http_status, Some(101));
    record
}

#[test]
fn wsprobe_probe_all_three_interpretations_over_ws_and_wss() {
    let tls = TlsMaterial::generate();
    let ca = tls.ca_pem.to_str().unwrap();
    let plain = Reflector::start(&[]);
    let secure = match TLS {
        true => Reflector::start_tls(&tls),
        false => Reflector::start(&[]),
    };
    let mut urls = vec![(plain.url("ws"), vec![])];
    if TLS {
        urls.push((secure.url("wss"), vec!["--ca-file", ca]));
    }
    for (url, extra) in urls {
        for interpretation in [
            "handshake_latency",
            "round_trip_latency",
            "connection_success",
        ] {
            let mut args = vec![url.as_str(), "--interpretation", interpretation];
            args.extend(&extra);
            if interpretation == "round_trip_latency" {
                args.extend(["--send", "marco", "--expect", "marco"]);
            }
            let record = probe_ok(&args);
            assert_eq!(record.interpretation, interpretation);
        }
    }
}

#[test]
fn dual_stack_listener_serves_both_families() {
    let reflector = Reflector::start(&["--listen", "[::]:0"]);
    let port = reflector.addr().port();
    for host in ["127.0.0.1", "[::1]"] {
        let url = format!("ws://{host}:{port}/");
        probe_ok(&[
            &url,
            "--interpretation",
            "round_trip_latency",
            "--send",
            "x",
        ]);
    }
}

// ---------------------------------------------------------------------------
// Plain HTTP, frames and the protocol rules
// ---------------------------------------------------------------------------

#[test]
fn health_is_ok_and_other_requests_get_a_plain_400() {
    let reflector = Reflector::start(&[]);
    let mut stream = connect(reflector.addr());
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

    let mut stream = connect(reflector.addr());
    stream
        .write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert!(closed_by_server(&mut stream));
}

#[test]
fn garbage_bytes_get_a_400_and_the_close() {
    let mut reflector = Reflector::start(&[]);
    let mut stream = connect(reflector.addr());
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    stream.write_all(&garbage).expect("send garbage");
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head:?}");
    assert!(closed_by_server(&mut stream));
    reflector.wait_line("rejected not_websocket");
    // Garbage after the upgrade: an unknown opcode fails with 1002.
    let mut stream = opened(reflector.addr());
    stream.write_all(&frame(0x83, b"??", true)).expect("send");
    assert_eq!(close_code(&mut stream), 1002);
}

#[test]
fn unmasked_frame_is_closed_with_1002() {
    let mut reflector = Reflector::start(&[]);
    let mut stream = opened(reflector.addr());
    stream
        .write_all(&frame(0x81, b"naked", false))
        .expect("send");
    assert_eq!(close_code(&mut stream), 1002);
    assert!(closed_by_server(&mut stream));
    reflector.wait_line("rejected protocol_error");
}

#[test]
fn invalid_utf8_text_is_closed_with_1007_and_ping_is_answered() {
    let reflector = Reflector::start(&[]);
    let mut stream = opened(reflector.addr());
    stream.write_all(&frame(0x89, b"hb", true)).expect("ping");
    assert_eq!(read_frame(&mut stream), (0x8A, b"hb".to_vec()));
    stream
        .write_all(&frame(0x81, &[0xC3, 0x28], true))
        .expect("send");
    assert_eq!(close_code(&mut stream), 1007);
}

#[test]
fn client_close_is_answered_with_its_code() {
    let reflector = Reflector::start(&[]);
    let mut stream = opened(reflector.addr());
    let mut body = 4000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    stream.write_all(&frame(0x88, &body, true)).expect("close");
    assert_eq!(read_frame(&mut stream), (0x88, body));
    assert!(closed_by_server(&mut stream));
}

// ---------------------------------------------------------------------------
// Defences
// ---------------------------------------------------------------------------

#[test]
fn slow_request_head_is_cut_at_five_seconds() {
    let mut reflector = Reflector::start(&[]);
    let mut stream = connect(reflector.addr());
    let started = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\n").expect("send");
    // One header byte every 200 ms: never a whole head.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut cut = false;
    while !cut && started.elapsed() < Duration::from_secs(9) {
        let mut buf = [0u8; 16];
        cut = match stream.read(&mut buf) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        cut |= stream.write_all(b"X").is_err();
    }
    let elapsed = started.elapsed();
    assert!(cut, "a trickled head was still open after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(4500),
        "cut early: {elapsed:?}"
    );
    reflector.wait_line("rejected handshake_timeout");
}

#[test]
fn head_sent_a_byte_at_a_time_still_upgrades() {
    let reflector = Reflector::start(&[]);
    let mut stream = connect(reflector.addr());
    stream.set_nodelay(true).expect("nodelay");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    for byte in request.as_bytes() {
        stream.write_all(&[*byte]).expect("send a byte");
        thread::sleep(Duration::from_micros(200));
    }
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    echo_once(&mut stream, "trickled");
}

#[test]
fn oversized_head_gets_431() {
    let reflector = Reflector::start(&[]);
    let mut stream = connect(reflector.addr());
    let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(9000));
    let _ = stream.write_all(big.as_bytes());
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
}

#[test]
fn a_2_pow_40_frame_is_refused_with_1009_from_its_header() {
    let mut reflector = Reflector::start(&[]);
    let mut stream = opened(reflector.addr());
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    stream.write_all(&header).expect("send header");
    stream
        .write_all(&[0u8; 4096])
        .expect("send a little payload");
    assert_eq!(close_code(&mut stream), 1009);
    reflector.wait_line("rejected message_too_big");
}

#[test]
fn oversized_message_gets_1009_even_in_fragments() {
    let reflector = Reflector::start(&["--max-message-bytes", "1000"]);
    let mut stream = opened(reflector.addr());
    let at_limit = vec![b'a'; 1000];
    stream
        .write_all(&frame(0x82, &at_limit, true))
        .expect("send");
    assert_eq!(read_frame(&mut stream), (0x82, at_limit));
    stream
        .write_all(&frame(0x02, &[1u8; 600], true))
        .expect("first fragment");
    stream
        .write_all(&frame(0x80, &[2u8; 600], true))
        .expect("last fragment");
    assert_eq!(close_code(&mut stream), 1009);
}

#[test]
fn idle_connection_is_closed() {
    let mut reflector = Reflector::start(&["--idle-timeout-ms", "300"]);
    let mut stream = opened(reflector.addr());
    let started = Instant::now();
    assert_eq!(close_code(&mut stream), 1000);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(closed_by_server(&mut stream));
    reflector.wait_line("rejected idle_timeout");
}

#[test]
fn above_max_connections_new_ones_are_closed_and_old_ones_kept() {
    let mut reflector = Reflector::start(&["--max-connections", "2"]);
    let mut first = opened(reflector.addr());
    let mut second = opened(reflector.addr());
    let mut third = connect(reflector.addr());
    assert!(closed_by_server(&mut third), "the third was kept");
    reflector.wait_line("rejected max_connections");
    echo_once(&mut first, "still here");
    echo_once(&mut second, "me too");
    drop(first);
    // A slot freed is a slot for the next client (once the server saw it).
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let mut next = connect(reflector.addr());
        let head = upgrade_with(&mut next, "");
        if head.starts_with("HTTP/1.1 101 ") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot after a close");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn per_address_limit_leaves_other_sources_alone() {
    let mut reflector = Reflector::start(&["--max-per-address", "2"]);
    let addr = reflector.addr();
    let _a = opened(addr);
    let _b = opened(addr);
    let mut refused = connect(addr);
    assert!(closed_by_server(&mut refused));
    reflector.wait_line("rejected max_per_address");
    let mut other = connect_from(addr, "127.0.0.2");
    let head = upgrade_with(&mut other, "");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    echo_once(&mut other, "from another address");
}

#[test]
fn token_is_required_and_never_taken_from_argv() {
    let mut reflector = Reflector::start_with_env(
        &["--token-env", "REFLECT_TEST_TOKEN"],
        &[("REFLECT_TEST_TOKEN", "s3cret-token")],
    );
    for (header, status) in [
        ("", "401"),
        ("Authorization: Bearer wrong\r\n", "401"),
        ("Authorization: Bearer s3cret-token\r\n", "101"),
    ] {
        let mut stream = connect(reflector.addr());
        let head = upgrade_with(&mut stream, header);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{header:?}: {head}"
        );
    }
    reflector.wait_line("rejected unauthorized");
    let url = reflector.url("ws");
    probe_ok(&[&url, "--header", "Authorization: Bearer s3cret-token"]);
    let refused = probe(&[&url]).record();
    assert_eq!(refused.meta.http_status, Some(401));
    if let Some(result) = py_client(&url, &["--token", "s3cret-token"]) {
        assert_echoed(&result);
    }

    let (code, stderr) = start_fails(&["--listen", "127.0.0.1:0", "--token", "x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--token-env"), "{stderr}");
    let (code, stderr) = start_fails(&[
        "--listen",
        "127.0.0.1:0",
        "--token-env",
        "WSPROBE_TEST_UNSET",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("WSPROBE_TEST_UNSET"), "{stderr}");
}

// ---------------------------------------------------------------------------
// TLS files and signals
// ---------------------------------------------------------------------------

#[cfg(feature = "reflect-tls")]
#[test]
fn bad_tls_file_at_start_is_exit_2_naming_it() {
    let tls = TlsMaterial::generate();
    let junk = tls.dir.write("junk.pem", "not a certificate\n");
    let (cert, key) = (tls.good.0.to_str().unwrap(), tls.good.1.to_str().unwrap());
    let junk = junk.to_str().unwrap();
    for (c, k, named) in [
        (junk, key, "--tls-cert"),
        (cert, junk, "--tls-key"),
        ("/nonexistent/cert.pem", key, "--tls-cert"),
    ] {
        let (code, stderr) =
            start_fails(&["--listen", "127.0.0.1:0", "--tls-cert", c, "--tls-key", k]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}

#[cfg(feature = "reflect-tls")]
#[test]
fn garbage_on_a_tls_listener_is_a_counted_tls_failure() {
    let tls = TlsMaterial::generate();
    let mut reflector = Reflector::start_tls(&tls);
    let mut stream = connect(reflector.addr());
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send plain HTTP to TLS");
    assert!(closed_by_server(&mut stream));
    reflector.wait_line("rejected tls_failed");
}

#[cfg(feature = "reflect-tls")]
#[test]
fn sighup_serves_a_new_certificate_and_keeps_the_old_on_a_bad_file() {
    let tls = TlsMaterial::generate();
    let cert = tls.dir.join("served.pem");
    let key = tls.dir.join("served.key");
    std::fs::copy(&tls.good.0, &cert).expect("copy cert");
    std::fs::copy(&tls.good.1, &key).expect("copy key");
    let mut reflector = Reflector::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = reflector.url("wss");
    let ca = tls.ca_pem.to_str().unwrap();
    let as_wrong_name = [
        url.as_str(),
        "--ca-file",
        ca,
        "--server-name",
        "wrong.example",
    ];
    probe_ok(&[&url, "--ca-file", ca]);
    let before = probe(&as_wrong_name).record();
    assert!(
        before.reason.is_some(),
        "the first certificate is not for wrong.example"
    );

    std::fs::copy(&tls.wrong_name.0, &cert).expect("copy cert");
    std::fs::copy(&tls.wrong_name.1, &key).expect("copy key");
    reflector.signal("-HUP");
    reflector.wait_line("reloaded");
    probe_ok(&as_wrong_name);

    std::fs::write(&cert, "garbage\n").expect("spoil cert");
    reflector.signal("-HUP");
    reflector.wait_line("keeping the certificate in use");
    probe_ok(&as_wrong_name);
}

#[test]
fn sigterm_sends_1001_and_exits_0_within_a_second() {
    let mut reflector = Reflector::start(&[]);
    let mut raw = opened(reflector.addr());
    let py = python().map(|python| {
        let mut child = Command::new(python)
            .arg(PY_CLIENT)
            .arg(reflector.url("ws"))
            .arg("--wait-close")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python client");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let open = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(open.contains("\"open\""), "{open}");
        (Process(child), lines)
    });
    let started = Instant::now();
    reflector.signal("-TERM");
    assert_eq!(close_code(&mut raw), 1001);
    raw.shutdown(Shutdown::Both).ok();
    let status = loop {
        if let Some(status) = reflector.child().try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still running");
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "exit took {:?}",
        started.elapsed()
    );
    if let Some((_process, mut lines)) = py {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(line.contains("\"close_code\": 1001"), "{line}");
    }
}
