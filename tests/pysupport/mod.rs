//! Shared by the tests that need more than the Rust test servers: the
//! third-party Python `websockets` server (`tests/py/ws_server.py`), TLS
//! test material made at test time with rcgen, and a runner for the real
//! `wsprobe` binary that parses each stdout line as a record.
//!
//! Skipping: when the venv's Python is missing the tests that need it print
//! why and pass, except under `CI=true`, where a missing Python is a
//! failure (CI installs it in `.ci/run`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;

pub const WSPROBE: &str = env!("CARGO_BIN_EXE_wsprobe");
const SERVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ws_server.py");
const DEFAULT_PYTHON: &str = "/opt/wsprobe-test/bin/python";
/// How long a started binary may run before the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

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

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// The Python server
// ---------------------------------------------------------------------------

/// A running `tests/py/ws_server.py`; killed (and its stdin closed) on drop.
pub struct PyServer {
    child: Child,
    pub port: u16,
}

impl PyServer {
    /// Starts the server with extra argv (`--subprotocol chat`, ...) and
    /// waits for its readiness line. `None` means skipped (printed why).
    pub fn start(args: &[&str]) -> Option<PyServer> {
        let python = std::env::var("WSPROBE_TEST_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.into());
        if !Path::new(&python).exists() {
            skip_or_fail(&format!(
                "no Python for the third-party server at {python} \
                 (set WSPROBE_TEST_PYTHON or run the install part of .ci/run)"
            ));
            return None;
        }
        let mut child = Command::new(&python)
            .arg(SERVER_SCRIPT)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {python} {SERVER_SCRIPT}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = PyServer { child, port: 0 };
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the Python server's port: {e}"),
            Err(_) => panic!("the Python server printed no port within 30 s"),
        };
        server.port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the Python server's first line is not a port: {line:?} (see its stderr above)")
        });
        Some(server)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn wss_url(&self, path: &str) -> String {
        format!("wss://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------

/// A test CA and leaves signed by it, as PEM files in a temp dir.
pub struct TlsMaterial {
    pub dir: TempDir,
    pub ca_pem: PathBuf,
    /// Valid now, for `localhost` and `127.0.0.1`.
    pub good: (PathBuf, PathBuf),
    /// Valid now, only for `wrong.example`.
    pub wrong_name: (PathBuf, PathBuf),
    /// For `localhost` and `127.0.0.1`, expired in 2001.
    pub expired: (PathBuf, PathBuf),
}

pub const WRONG_NAME: &str = "wrong.example";

impl TlsMaterial {
    pub fn generate() -> TlsMaterial {
        let dir = TempDir::new("wsprobe-tls");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wsprobe test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.not_before = date_time_ymd(2000, 1, 1);
        ca_params.not_after = date_time_ymd(4000, 1, 1);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let ca_pem = dir.write("ca.pem", &ca_cert.pem());
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |file: &str, names: &[&str], expired: bool| -> (PathBuf, PathBuf) {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names.clone()).expect("leaf params");
            params
                .distinguished_name
                .push(DnType::CommonName, &names[0]);
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            if expired {
                params.not_before = date_time_ymd(2000, 1, 1);
                params.not_after = date_time_ymd(2001, 1, 1);
            } else {
                params.not_before = date_time_ymd(2000, 1, 1);
                params.not_after = date_time_ymd(3999, 1, 1);
            }
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            (
                dir.write(&format!("{file}.pem"), &cert.pem()),
                dir.write(&format!("{file}.key"), &key.serialize_pem()),
            )
        };
        let good = leaf("good", &["localhost", "127.0.0.1"], false);
        let wrong_name = leaf("wrong-name", &[WRONG_NAME], false);
        let expired = leaf("expired", &["localhost", "127.0.0.1"], true);

        TlsMaterial {
            dir,
            ca_pem,
            good,
            wrong_name,
            expired,
        }
    }
}

/// Starts a TLS Python server presenting `leaf` (cert, key), plus `extra` argv.
pub fn start_tls_server(leaf: &(PathBuf, PathBuf), extra: &[&str]) -> Option<PyServer> {
    let cert = leaf.0.to_str().expect("utf-8 path");
    let key = leaf.1.to_str().expect("utf-8 path");
    let mut args = vec!["--tls", cert, key];
    args.extend_from_slice(extra);
    PyServer::start(&args)
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub records: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
    pub elapsed: Duration,
}

impl Run {
    /// The only record; fails the test unless there is exactly one.
    pub fn record(&self) -> &Value {
        assert_eq!(
            self.records.len(),
            1,
            "expected exactly one record\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.records[0]
    }

    pub fn by_probe(&self, name: &str) -> &Value {
        let found: Vec<&Value> = self.records.iter().filter(|r| r["probe"] == name).collect();
        assert_eq!(
            found.len(),
            1,
            "expected one record of probe {name:?}\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        found[0]
    }
}

/// Runs `wsprobe ARGS`.
pub fn wsprobe(args: &[&str]) -> Run {
    let mut cmd = Command::new(WSPROBE);
    cmd.args(args);
    run_command(cmd)
}

/// Runs `wsprobe ARGS` whose stdout is not records (`--human`, `--help`):
/// `records` stays empty.
pub fn wsprobe_text(args: &[&str]) -> Run {
    let mut cmd = Command::new(WSPROBE);
    cmd.args(args);
    run_raw(cmd)
}

/// Runs a prepared command (the binary, or `ip netns exec NS binary ...`)
/// with closed stdin, killing it after `RUN_LIMIT`. Every stdout line must
/// be a JSON object: records and diagnostics never mix (SPEC "Command line").
pub fn run_command(cmd: Command) -> Run {
    let mut run = run_raw(cmd);
    run.records = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "stdout line is not JSON ({e}): {l:?}\nstderr: {}",
                    run.stderr
                )
            });
            assert!(v.is_object(), "stdout line is not a JSON object: {l:?}");
            v
        })
        .collect();
    run
}

/// Runs a prepared command, killing it after `RUN_LIMIT`; parses nothing.
pub fn run_raw(mut cmd: Command) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {RUN_LIMIT:?}; killed");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    Run {
        records: Vec::new(),
        stdout,
        stderr,
        code: status.code().unwrap_or(-1),
        elapsed,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `meta.error` of a record, lower-cased ("" when absent).
pub fn meta_error(record: &Value) -> String {
    record["meta"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
}
