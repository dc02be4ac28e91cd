//! Shared helpers for the integration tests: prerequisites (`skip_or_fail`),
//! temp dirs, running the real `wsprobe` binary, parsing its records into
//! typed structs (the wire contract of SPEC.md, "The record"), and small
//! WebSocket test servers, each bound to 127.0.0.1:0 and reporting what it
//! observed over a channel.
//!
//! Every test file includes this module, and each uses only part of it.
//! `pysupport` (the Python server, TLS material) and `netsupport` (network
//! namespaces) build on it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// The binary under test.
pub const WSPROBE: &str = env!("CARGO_BIN_EXE_wsprobe");

/// How long a test waits for a server event before it calls the run a
/// failure. A bound, not a synchronisation: events normally arrive in
/// microseconds.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

/// A run of the binary that takes longer than this is killed (a hung probe
/// must fail the test, not hang the suite).
const WATCHDOG: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------
// Prerequisites and temp files
// ---------------------------------------------------------------------------

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Under CI a missing prerequisite fails the test; elsewhere it is skipped
/// with the reason printed. Returns normally only when not in CI.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("CI=true and a test prerequisite is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// `PREFIX-PID-N-NANOS`: unique within this process and, in practice,
/// across processes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory of its own under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` here and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Waits (at most `within`) for a line of a process's log, from index
/// `from` on, that `pick` accepts: `log` holds the lines read so far and is
/// topped up from `lines` (a reader thread's channel). `exited` describes
/// the process when `lines` ends first.
pub fn wait_line(
    lines: &Receiver<String>,
    log: &mut Vec<String>,
    (from, what, within): (usize, &str, Duration),
    pick: impl Fn(&str) -> bool,
    exited: impl FnOnce() -> String,
) -> String {
    if let Some(line) = log.iter().skip(from).find(|l| pick(l)) {
        return line.clone();
    }
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                log.push(line.clone());
                if pick(&line) {
                    return line;
                }
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "no stderr line {what} within {within:?}; stderr:\n{}",
                log.join("\n")
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "stderr ended (the agent exited: {}) before a line {what}; stderr:\n{}",
                exited(),
                log.join("\n")
            ),
        }
    }
}

/// A helper process (a test server) ended on drop, even after a panic: its
/// stdin is closed (the servers' signal to stop), then it is killed and
/// reaped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// The record (SPEC.md, "The record")
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub ts: String,
    pub probe: String,
    pub url: String,
    pub interpretation: String,
    /// Always present on the wire (checked on the raw JSON by
    /// `raw_record_shape`); `null` exactly when the run has no data.
    pub value: Option<f64>,
    pub reason: Option<String>,
    pub health: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub meta: Meta,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Meta {
    pub remote_addr: Option<String>,
    pub http_status: Option<u16>,
    pub location: Option<String>,
    pub proxy: Option<String>,
    pub proxy_status: Option<u16>,
    pub timings: Option<Timings>,
    pub tls_version: Option<String>,
    pub tls_verified: Option<bool>,
    pub subprotocol: Option<String>,
    pub skipped_messages: Option<u64>,
    pub last_reply: Option<String>,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    pub close_clean: Option<bool>,
    pub phase: Option<String>,
    pub step: Option<String>,
    pub samples: Option<Samples>,
    pub error: Option<String>,
    pub clock_unsynced: Option<bool>,
    pub connect_attempts: Option<u32>,
}

/// `meta.samples` (issue 13).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    pub sent: u32,
    pub received: u32,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub mdev_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Timings {
    pub dns_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    pub proxy_ms: Option<f64>,
    pub tls_ms: Option<f64>,
    pub upgrade_ms: Option<f64>,
    pub open_ms: Option<f64>,
    pub prelude_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub total_ms: Option<f64>,
}

impl Timings {
    /// Every timing with its wire name.
    pub fn all(&self) -> [(&'static str, Option<f64>); 9] {
        [
            ("dns_ms", self.dns_ms),
            ("connect_ms", self.connect_ms),
            ("proxy_ms", self.proxy_ms),
            ("tls_ms", self.tls_ms),
            ("upgrade_ms", self.upgrade_ms),
            ("open_ms", self.open_ms),
            ("prelude_ms", self.prelude_ms),
            ("rtt_ms", self.rtt_ms),
            ("total_ms", self.total_ms),
        ]
    }

    /// The timing with wire name `name` (panics on a name that is none).
    pub fn get(&self, name: &str) -> Option<f64> {
        match self.all().into_iter().find(|(n, _)| *n == name) {
            Some((_, value)) => value,
            None => panic!("no timing is called {name:?}"),
        }
    }
}

impl Record {
    pub fn timings(&self) -> Timings {
        self.meta.timings.clone().unwrap_or_default()
    }
}

/// Parses one stdout line into a `Record`, panicking with the raw line.
pub fn parse_record(line: &str) -> Record {
    match serde_json::from_str::<Record>(line) {
        Ok(record) => record,
        Err(err) => panic!("stdout line is not a valid record ({err}):\n{line}"),
    }
}

/// True when `line` looks like a record (a JSON object with the record's
/// identifying keys): used to check that stderr never carries records.
pub fn looks_like_record(line: &str) -> bool {
    match serde_json::from_str::<Value>(line.trim()) {
        Ok(Value::Object(map)) => map.contains_key("probe") || map.contains_key("interpretation"),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// The binary, not started yet.
pub fn wsprobe() -> Command {
    Command::new(WSPROBE)
}

/// Everything one invocation of the binary produced. Stdout is parsed only
/// on request: as typed records (`records`, `record`, `by_probe`), or as
/// raw JSON (`raw_records`, `raw_record`) where a test checks which keys
/// are present. Either way every stdout line must be one record: records
/// and diagnostics never mix (SPEC "Command line").
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
    pub elapsed: Duration,
}

impl Run {
    /// Every stdout line as a record (panics with the raw line otherwise).
    pub fn records(&self) -> Vec<Record> {
        self.stdout.lines().map(parse_record).collect()
    }

    /// Every stdout line as a raw JSON object.
    pub fn raw_records(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not JSON ({e}):\n{l}\nstderr:\n{}",
                        self.stderr
                    )
                });
                assert!(v.is_object(), "stdout line is not a JSON object: {l:?}");
                v
            })
            .collect()
    }

    /// The only record; fails the test unless there is exactly one.
    pub fn record(&self) -> Record {
        let mut records = self.records();
        self.assert_one(records.len(), "");
        records.remove(0)
    }

    /// The only record as raw JSON; fails the test unless there is exactly one.
    pub fn raw_record(&self) -> Value {
        let mut records = self.raw_records();
        self.assert_one(records.len(), "");
        records.remove(0)
    }

    /// The one record of probe `name`.
    pub fn by_probe(&self, name: &str) -> Record {
        let mut found: Vec<Record> = self
            .records()
            .into_iter()
            .filter(|r| r.probe == name)
            .collect();
        self.assert_one(found.len(), &format!(" of probe {name:?}"));
        found.remove(0)
    }

    fn assert_one(&self, found: usize, what: &str) {
        assert_eq!(
            found, 1,
            "expected exactly one record{what}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }

    pub fn assert_stderr_has_no_records(&self) {
        for line in self.stderr.lines() {
            assert!(
                !looks_like_record(line),
                "a record line went to stderr: {line}\nstderr:\n{}",
                self.stderr
            );
        }
    }
}

/// Runs a prepared command (the binary with its arguments and environment,
/// or `ip netns exec NS wsprobe ...`) with stdin closed, calling `on_spawn`
/// with the child's pid as soon as it has started. A child still running
/// after `WATCHDOG` is killed and the test fails.
pub fn run_command_with(mut cmd: Command, on_spawn: impl FnOnce(u32)) -> Run {
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    on_spawn(pid);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = done_rx.recv_timeout(WATCHDOG) {
            // The child has not been reaped yet (the waiter is still
            // blocked in wait), so the pid is still ours.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let output = child.wait_with_output().expect("wait for wsprobe");
    let elapsed = started.elapsed();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let run = Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code().unwrap_or(-1),
        elapsed,
    };
    assert!(
        elapsed < WATCHDOG,
        "{cmd:?} hung and was killed after {elapsed:?}\nstderr:\n{}",
        run.stderr
    );
    run
}

/// Runs a prepared command (see `run_command_with`).
pub fn run_command(cmd: Command) -> Run {
    run_command_with(cmd, |_| {})
}

/// Runs `wsprobe ARGS...`, calling `on_spawn` with the child's pid.
pub fn run_with(args: &[&str], on_spawn: impl FnOnce(u32)) -> Run {
    let mut cmd = wsprobe();
    cmd.args(args);
    run_command_with(cmd, on_spawn)
}

/// Runs `wsprobe ARGS...`.
pub fn run(args: &[&str]) -> Run {
    run_with(args, |_| {})
}

/// Runs `wsprobe probe ARGS...` and checks that stderr holds no record.
pub fn probe(args: &[&str]) -> Run {
    probe_with(args, |_| {})
}

pub fn probe_with(args: &[&str], on_spawn: impl FnOnce(u32)) -> Run {
    let mut full = vec!["probe"];
    full.extend_from_slice(args);
    let run = run_with(&full, on_spawn);
    run.assert_stderr_has_no_records();
    run
}

/// Runs a probe that must produce exactly one record; returns it with the run.
pub fn probe_one(args: &[&str]) -> (Record, Run) {
    let run = probe(args);
    (run.record(), run)
}

/// The contract's exit code for a finished `probe` run (SPEC.md, "Command
/// line": 0 success, 1 when a record has a non-null reason).
pub fn assert_exit_matches(records: &[Record], run: &Run) {
    let expected = if records.iter().any(|r| r.reason.is_some()) {
        1
    } else {
        0
    };
    assert_eq!(
        run.code, expected,
        "exit code; records: {records:#?}\nstderr:\n{}",
        run.stderr
    );
}

/// Asserts the reason, with the whole record and stderr in the message.
pub fn assert_reason(record: &Record, run: &Run, reason: Option<&str>) {
    assert_eq!(
        record.reason.as_deref(),
        reason,
        "reason; record: {record:#?}\nstderr:\n{}",
        run.stderr
    );
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------
// Test servers
// ---------------------------------------------------------------------------

/// What a test server observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A TCP connection was accepted.
    Accepted,
    /// The opening handshake's request line target and headers (names
    /// lower-cased).
    Request {
        path: String,
        headers: Vec<(String, String)>,
    },
    Text(String),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// The client's Close frame (code `None` when the frame had none).
    ClientClose {
        code: Option<u16>,
        reason: String,
    },
    /// The connection ended (EOF or error) without a client Close frame.
    EndedWithoutClose,
    /// The probe process's peak resident set (VmHWM, kB) read while it was
    /// still connected; `None` when it could not be read.
    ProbeVmHwmKb(Option<u64>),
}

pub struct Server {
    pub port: u16,
    events: Receiver<Event>,
}

impl Server {
    /// `ws://127.0.0.1:PORT/socket`
    pub fn url(&self) -> String {
        self.url_path("/socket")
    }

    pub fn url_path(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits (at most `EVENT_WAIT`) for the first event `pick` accepts,
    /// discarding the ones before it.
    pub fn wait_for<T>(&self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + EVENT_WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                    seen.push(event);
                }
                Err(_) => panic!("the server never observed {what}; it saw {seen:?}"),
            }
        }
    }

    /// The next client Close frame: (code, reason).
    pub fn client_close(&self) -> (Option<u16>, String) {
        self.wait_for("a Close frame from the probe", |e| match e {
            Event::ClientClose { code, reason } => Some((*code, reason.clone())),
            Event::EndedWithoutClose => {
                panic!("the connection ended without a Close frame from the probe")
            }
            _ => None,
        })
    }

    /// Every event up to and including the probe's next Close frame; panics
    /// if the connection ends without one.
    pub fn until_client_close(&self) -> Vec<Event> {
        let mut events = Vec::new();
        self.wait_for("a Close frame from the probe", |e| {
            events.push(e.clone());
            match e {
                Event::ClientClose { .. } => Some(()),
                Event::EndedWithoutClose => {
                    panic!("the connection ended without a Close frame from the probe: {events:?}")
                }
                _ => None,
            }
        });
        events
    }

    /// The next opening handshake request: (path, headers).
    pub fn request(&self) -> (String, Vec<(String, String)>) {
        self.wait_for("an upgrade request", |e| match e {
            Event::Request { path, headers } => Some((path.clone(), headers.clone())),
            _ => None,
        })
    }

    /// The next text message the probe sent.
    pub fn text(&self) -> String {
        self.wait_for("a text message", |e| match e {
            Event::Text(t) => Some(t.clone()),
            _ => None,
        })
    }

    /// Every event already delivered, without waiting.
    pub fn drain(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Binds 127.0.0.1:0 and runs `handler` on a thread per accepted
/// connection, for as long as the test process lives.
pub fn spawn_server<F>(handler: F) -> Server
where
    F: Fn(TcpStream, &Sender<Event>) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            let handler = Arc::clone(&handler);
            thread::spawn(move || {
                let _ = tx.send(Event::Accepted);
                handler(stream, &tx);
            });
        }
    });
    Server { port, events: rx }
}

/// Accepts the upgrade with tungstenite, reporting the request; `respond`
/// may add response headers (or delay) and returns nothing.
// The callback's signature is tungstenite's (`Callback`), large Err and all.
#[allow(clippy::result_large_err)]
pub fn ws_accept(
    stream: TcpStream,
    tx: &Sender<Event>,
    respond: impl FnOnce(&Request, &mut Response),
) -> Option<WebSocket<TcpStream>> {
    let tx2 = tx.clone();
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let _ = tx2.send(Event::Request { path, headers });
        respond(req, &mut resp);
        Ok(resp)
    };
    tungstenite::accept_hdr(stream, callback).ok()
}

/// Picks the first offered subprotocol, as a well-behaved server does
/// (tungstenite's client refuses a 101 without one when some were offered).
pub fn choose_first_protocol(req: &Request, resp: &mut Response) {
    if let Some(offer) = req.headers().get("sec-websocket-protocol") {
        let offer = offer.to_str().unwrap_or_default();
        if let Some(first) = offer.split(',').map(str::trim).find(|p| !p.is_empty()) {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(first).expect("token"),
            );
        }
    }
}

/// Reads messages until the connection ends, reporting each one; answers
/// pings (tungstenite does) and the client's Close. `on_data` sees each
/// data message and may answer it.
pub fn serve_messages(
    ws: &mut WebSocket<TcpStream>,
    tx: &Sender<Event>,
    mut on_data: impl FnMut(&mut WebSocket<TcpStream>, &Message),
) {
    loop {
        match ws.read() {
            Ok(message) => match &message {
                Message::Text(t) => {
                    let _ = tx.send(Event::Text(t.as_str().to_owned()));
                    on_data(ws, &message);
                }
                Message::Binary(b) => {
                    let _ = tx.send(Event::Binary(b.to_vec()));
                    on_data(ws, &message);
                }
                Message::Pong(p) => {
                    let _ = tx.send(Event::Pong(p.to_vec()));
                }
                Message::Ping(_) | Message::Frame(_) => {
                    let _ = ws.flush();
                }
                Message::Close(frame) => {
                    let _ = tx.send(client_close_event(frame.as_ref()));
                    // Sends our Close in reply (queued by tungstenite).
                    let _ = ws.flush();
                }
            },
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return
            }
            Err(_) => {
                let _ = tx.send(Event::EndedWithoutClose);
                return;
            }
        }
    }
}

/// The event for the client's Close frame (code `None` when it had none).
fn client_close_event(frame: Option<&CloseFrame>) -> Event {
    match frame {
        Some(f) => Event::ClientClose {
            code: Some(u16::from(f.code)),
            reason: f.reason.as_str().to_owned(),
        },
        None => Event::ClientClose {
            code: None,
            reason: String::new(),
        },
    }
}

/// Reads the probe's first message and reports it; false (the handler
/// should give up) when it is not text.
fn read_first_text(ws: &mut WebSocket<TcpStream>, tx: &Sender<Event>) -> bool {
    match ws.read() {
        Ok(Message::Text(t)) => {
            let _ = tx.send(Event::Text(t.as_str().to_owned()));
            true
        }
        _ => false,
    }
}

/// Echo: every text or binary message goes back unchanged. Offers the first
/// requested subprotocol.
pub fn echo_server() -> Server {
    spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, choose_first_protocol) else {
            return;
        };
        serve_messages(&mut ws, tx, |ws, m| {
            let _ = ws.send(m.clone());
        });
    })
}

/// Echo, but the 101 answer is held back by `delay` (a slow upgrade).
pub fn slow_upgrade_server(delay: Duration) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| thread::sleep(delay)) else {
            return;
        };
        serve_messages(&mut ws, tx, |ws, m| {
            let _ = ws.send(m.clone());
        });
    })
}

/// Echo, but each reply is held back by `delay` (a slow backend).
pub fn slow_echo_server(delay: Duration) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        serve_messages(&mut ws, tx, |ws, m| {
            thread::sleep(delay);
            let _ = ws.send(m.clone());
        });
    })
}

/// Accepts a subprotocol the client did not offer.
pub fn wrong_protocol_server(protocol: &'static str) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, move |_, resp| {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        }) else {
            return;
        };
        serve_messages(&mut ws, tx, |_, _| {});
    })
}

/// Accepts TCP, reads whatever comes, never answers.
pub fn silent_after_tcp_server() -> Server {
    spawn_server(drain_until_eof)
}

/// Completes the upgrade, then never sends a data message (it still answers
/// the client's Close, as the protocol requires).
pub fn silent_after_upgrade_server() -> Server {
    spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        serve_messages(&mut ws, tx, |_, _| {});
    })
}

/// Reads an HTTP request head (up to the blank line) from any stream, TLS
/// included; returns it as text.
pub fn read_request_head(stream: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn parse_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (path, headers)
}

/// Reads the request head, reports it, and returns the correct
/// `Sec-WebSocket-Accept` for it.
fn raw_upgrade_request(stream: &mut TcpStream, tx: &Sender<Event>) -> Option<String> {
    let head = read_request_head(stream)?;
    let (path, headers) = parse_head(&head);
    let key = header(&headers, "sec-websocket-key")
        .unwrap_or_default()
        .to_owned();
    let _ = tx.send(Event::Request { path, headers });
    Some(derive_accept_key(key.as_bytes()))
}

fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// A correct 101 answer whose Connection header lists a second token
/// (`keep-alive, Upgrade`), as some proxies write it; RFC 6455 section 4.1
/// asks only that the list contain "Upgrade". Then echoes.
pub fn keep_alive_upgrade_server() -> Server {
    spawn_server(|mut stream, tx| {
        let Some(accept) = raw_upgrade_request(&mut stream, tx) else {
            return;
        };
        let answer = switching_protocols(&accept)
            .replace("Connection: Upgrade", "Connection: keep-alive, Upgrade");
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
        let mut ws = WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None);
        serve_messages(&mut ws, tx, |ws, message| {
            let _ = ws.send(message.clone());
        });
    })
}

/// A correct 101 answer, written one byte every 100 ms.
pub fn trickle_101_server() -> Server {
    spawn_server(|mut stream, tx| {
        let Some(accept) = raw_upgrade_request(&mut stream, tx) else {
            return;
        };
        for byte in switching_protocols(&accept).bytes() {
            if stream.write_all(&[byte]).is_err() {
                let _ = tx.send(Event::EndedWithoutClose);
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        // Completed: the probe waited 13 s.
        let mut ws = WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None);
        serve_messages(&mut ws, tx, |_, _| {});
    })
}

/// A 101 answer whose Sec-WebSocket-Accept is wrong.
pub fn wrong_accept_server() -> Server {
    spawn_server(|mut stream, tx| {
        let Some(_) = raw_upgrade_request(&mut stream, tx) else {
            return;
        };
        let bogus = derive_accept_key(b"not the key the client sent");
        let _ = stream.write_all(switching_protocols(&bogus).as_bytes());
        drain_until_eof(stream, tx);
    })
}

/// A plain HTTP answer with `status` (e.g. "401 Unauthorized") and extra
/// header lines (each ending in CRLF).
pub fn http_status_server(status: &'static str, extra_headers: String) -> Server {
    spawn_server(move |mut stream, tx| {
        let Some(_) = raw_upgrade_request(&mut stream, tx) else {
            return;
        };
        let body = "go away\n";
        let response = format!(
            "HTTP/1.1 {status}\r\n{extra_headers}Content-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
        drain_until_eof(stream, tx);
    })
}

/// Reads until the peer closes (so our close is never an RST).
fn drain_until_eof(mut stream: TcpStream, tx: &Sender<Event>) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = tx.send(Event::EndedWithoutClose);
}

/// Upgrades, reads the probe's message, then closes instead of replying:
/// with `Some((code, reason))`, or with a Close frame without a body.
pub fn close_before_reply_server(close: Option<(u16, &'static str)>) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        let mut closed = false;
        serve_messages(&mut ws, tx, |ws, _| {
            if !closed {
                closed = true;
                let _ = ws.close(close.map(|(code, reason)| CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                }));
                let _ = ws.flush();
            }
        });
    })
}

/// Upgrades, reads the probe's message, then drops the TCP connection
/// without a Close frame.
pub fn drop_before_reply_server() -> Server {
    spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        read_first_text(&mut ws, tx);
        let _ = ws.get_mut().shutdown(Shutdown::Both);
    })
}

/// Sends `greeting` right after the upgrade; then answers each message with
/// `reply` (if any).
pub fn greeting_server(greeting: &'static str, reply: Option<&'static str>) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        let _ = ws.send(Message::text(greeting));
        serve_messages(&mut ws, tx, |ws, _| {
            if let Some(reply) = reply {
                let _ = ws.send(Message::text(reply));
            }
        });
    })
}

/// Answers each message with every one of `replies`, in order.
pub fn replies_server(replies: Vec<String>) -> Server {
    let replies = Arc::new(replies);
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        let replies = Arc::clone(&replies);
        serve_messages(&mut ws, tx, move |ws, _| {
            for reply in replies.iter() {
                let _ = ws.send(Message::text(reply.clone()));
            }
        });
    })
}

/// Answers each message with a binary message holding `payload`.
pub fn binary_reply_server(payload: &'static [u8]) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        serve_messages(&mut ws, tx, |ws, _| {
            let _ = ws.send(Message::binary(payload.to_vec()));
        });
    })
}

/// One unmasked server frame (RFC 6455 section 5.2).
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Answers each message with a text message split over raw frames: a first
/// text frame and continuation frames, one per part.
pub fn fragmented_reply_server(parts: &'static [&'static str]) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        serve_messages(&mut ws, tx, |ws, _| {
            let mut bytes = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                let opcode = if i == 0 { 0x1 } else { 0x0 };
                bytes.extend(frame(i + 1 == parts.len(), opcode, part.as_bytes()));
            }
            let _ = ws.get_mut().write_all(&bytes);
        });
    })
}

/// After the probe's message: sends a Ping with `ping_payload`, waits for
/// the Pong (reported as `Event::Pong`), and only then replies `reply`.
pub fn ping_first_server(ping_payload: &'static [u8], reply: &'static str) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        // The first message: ping, wait for the pong, reply.
        if !read_first_text(&mut ws, tx) {
            return;
        }
        if ws
            .send(Message::Ping(ping_payload.to_vec().into()))
            .is_err()
        {
            return;
        }
        loop {
            match ws.read() {
                Ok(Message::Pong(p)) => {
                    let _ = tx.send(Event::Pong(p.to_vec()));
                    break;
                }
                Ok(Message::Close(frame)) => {
                    let _ = tx.send(client_close_event(frame.as_ref()));
                    let _ = ws.flush();
                    return;
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = tx.send(Event::EndedWithoutClose);
                    return;
                }
            }
        }
        let _ = ws.send(Message::text(reply));
        serve_messages(&mut ws, tx, |_, _| {});
    })
}

/// After the probe's message: a binary frame header announcing 2^40 bytes,
/// followed by 64 KiB of payload. When the probe's Close arrives, reports
/// the probe's VmHWM (pid from `probe_pid`, 0 if unknown) and drops the
/// connection.
pub fn huge_frame_server(probe_pid: Arc<AtomicU32>) -> Server {
    spawn_server(move |stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        if !read_first_text(&mut ws, tx) {
            return;
        }
        let mut bytes = vec![0x82, 127];
        bytes.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let _ = ws.get_mut().write_all(&bytes);
        let _ = ws.get_mut().write_all(&vec![b'a'; 64 * 1024]);
        loop {
            match ws.read() {
                Ok(Message::Close(frame)) => {
                    let hwm = vm_hwm_kb(probe_pid.load(Ordering::SeqCst));
                    let _ = tx.send(Event::ProbeVmHwmKb(hwm));
                    let _ = tx.send(client_close_event(frame.as_ref()));
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = tx.send(Event::EndedWithoutClose);
                    break;
                }
            }
        }
        let _ = ws.get_mut().shutdown(Shutdown::Both);
    })
}

/// Peak resident set of a live process, in kB (None for pid 0, a process
/// that has gone, or a zombie).
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------
// Record checks shared by several tests
// ---------------------------------------------------------------------------

/// True when `v` has at most 3 decimals (microsecond resolution in ms).
pub fn has_at_most_3_decimals(v: f64) -> bool {
    ((v * 1000.0).round() - v * 1000.0).abs() < 1e-6
}

/// Milliseconds since the Unix epoch for an RFC 3339 UTC timestamp with
/// exactly three fractional digits (`YYYY-MM-DDTHH:MM:SS.mmmZ`); None if
/// `ts` is not in that form.
pub fn parse_ts_millis(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    for (i, c) in seps {
        if b[i] != c {
            return None;
        }
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = &ts[from..to];
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}
