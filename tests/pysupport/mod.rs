//! Shared by the tests that need more than the Rust test servers: the
//! third-party Python `websockets` server (`tests/py/ws_server.py`) and TLS
//! test material made at test time with rcgen. Running the binary, temp
//! dirs and skipping are `support`'s: a test file that includes this module
//! includes `support` too.
//!
//! Skipping: when the venv's Python is missing the tests that need it print
//! why and pass, except under `CI=true`, where a missing Python is a
//! failure (CI installs it in `.ci/run`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::support::{skip_or_fail, Process, TempDir};

const SERVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ws_server.py");
const DEFAULT_PYTHON: &str = "/opt/wsprobe-test/bin/python";

/// The venv's Python (with `websockets`): `WSPROBE_TEST_PYTHON` or the CI
/// venv. `None` means skipped (printed why; a failure under CI).
pub fn python() -> Option<String> {
    let python = std::env::var("WSPROBE_TEST_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.into());
    if Path::new(&python).exists() {
        Some(python)
    } else {
        skip_or_fail(&format!(
            "no Python with websockets at {python} \
             (set WSPROBE_TEST_PYTHON or run the install part of .ci/run)"
        ));
        None
    }
}

// ---------------------------------------------------------------------------
// The Python server
// ---------------------------------------------------------------------------

/// A running `tests/py/ws_server.py`; killed (and its stdin closed) on drop.
pub struct PyServer {
    _process: Process,
    pub port: u16,
}

impl PyServer {
    /// Starts the server with extra argv (`--subprotocol chat`, ...) and
    /// waits for its readiness line. `None` means skipped (printed why).
    pub fn start(args: &[&str]) -> Option<PyServer> {
        let python = python()?;
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
        let mut server = PyServer {
            _process: Process(child),
            port: 0,
        };
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
    issuer: Issuer<'static, KeyPair>,
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

        let until_3999 = since_epoch(3999, 1, 1);
        let names = ["localhost", "127.0.0.1"];
        let mut material = TlsMaterial {
            dir,
            ca_pem,
            good: Default::default(),
            wrong_name: Default::default(),
            expired: Default::default(),
            issuer,
        };
        material.good = material.leaf("good", &names, until_3999);
        material.wrong_name = material.leaf("wrong-name", &[WRONG_NAME], until_3999);
        material.expired = material.leaf("expired", &names, since_epoch(2001, 1, 1));
        material
    }

    /// A leaf for `localhost` and `127.0.0.1`, valid from 2000 until
    /// `seconds` from now.
    pub fn leaf_expiring_in(&self, file: &str, seconds: u64) -> (PathBuf, PathBuf) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        self.leaf(
            file,
            &["localhost", "127.0.0.1"],
            now + Duration::from_secs(seconds),
        )
    }

    /// A leaf for `names`, valid from 2000 until `not_after` (since the
    /// Unix epoch), written as `file`.pem and `file`.key.
    fn leaf(&self, file: &str, names: &[&str], not_after: Duration) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(1970, 1, 1) + not_after;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (
            self.dir.write(&format!("{file}.pem"), &cert.pem()),
            self.dir.write(&format!("{file}.key"), &key.serialize_pem()),
        )
    }
}

/// Midnight UTC of a date, as time since the Unix epoch.
fn since_epoch(year: i32, month: u8, day: u8) -> Duration {
    let seconds = date_time_ymd(year, month, day).unix_timestamp();
    Duration::from_secs(u64::try_from(seconds).expect("a date after 1970"))
}

/// Starts a TLS Python server presenting `leaf` (cert, key), plus `extra` argv.
pub fn start_tls_server(leaf: &(PathBuf, PathBuf), extra: &[&str]) -> Option<PyServer> {
    let cert = leaf.0.to_str().expect("utf-8 path");
    let key = leaf.1.to_str().expect("utf-8 path");
    let mut args = vec!["--tls", cert, key];
    args.extend_from_slice(extra);
    PyServer::start(&args)
}
