//! What the benchmarks share: in-process `ws://` and `wss://` echo servers
//! bound to 127.0.0.1:0, a test CA made with rcgen, and probe specs built
//! through the same validation as `wsprobe probe`.
//!
//! The servers run on threads of their own (one per connection), so a
//! benchmark that measures its own thread's CPU does not count theirs.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::Value;
use tungstenite::WebSocket;
use wsprobe::spec::ProbeSpec;

/// A test CA and a `127.0.0.1` leaf signed by it (P-256, as rcgen makes
/// by default), with the CA's PEM written to a directory of our own for
/// `tls.ca_file`. The directory goes when this is dropped.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub server: Arc<ServerConfig>,
}

impl TestPki {
    pub fn new(tag: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wsprobe bench CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");

        let dir = Self::dir_for(tag, std::process::id());
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write ca.pem");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                // The leaf alone: the client holds the CA, as with a
                // private CA in the field.
                vec![leaf_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("server certificate");
        TestPki {
            dir,
            ca_file,
            server: Arc::new(server),
        }
    }

    /// The directory the process `pid` uses for `tag`: a parent can remove
    /// it after a child that died without running its destructors.
    pub fn dir_for(tag: &str, pid: u32) -> PathBuf {
        std::env::temp_dir().join(format!("wsprobe-{tag}-{pid}"))
    }

    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `ws://` echo server; returns its address.
pub fn ws_echo_server() -> SocketAddr {
    serve(|tcp| {
        if let Ok(ws) = tungstenite::accept(tcp) {
            echo(ws);
        }
    })
}

/// A `wss://` echo server with this TLS configuration; returns its address.
pub fn wss_echo_server(config: Arc<ServerConfig>) -> SocketAddr {
    serve(move |tcp| {
        let Ok(conn) = ServerConnection::new(config.clone()) else {
            return;
        };
        if let Ok(ws) = tungstenite::accept(StreamOwned::new(conn, tcp)) {
            echo(ws);
        }
    })
}

/// Accepts on 127.0.0.1:0 forever, one thread (normal stack) per connection.
fn serve(handle: impl Fn(TcpStream) + Clone + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    thread::Builder::new()
        .name("bench-accept".into())
        .spawn(move || {
            for tcp in listener.incoming().flatten() {
                // As the agent does: no Nagle delay on either side.
                let _ = tcp.set_nodelay(true);
                let handle = handle.clone();
                let _ = thread::Builder::new()
                    .name("bench-conn".into())
                    .spawn(move || handle(tcp));
            }
        })
        .expect("spawn accept thread");
    addr
}

/// Sends every text or binary message back. Reading on after the client's
/// Close flushes tungstenite's queued Close reply, so the probe's clean
/// close does not wait.
fn echo<S: Read + Write>(mut ws: WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(message) if message.is_text() || message.is_binary() => {
                if ws.send(message).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// One validated probe from `wsprobe probe`-style fields (a JSON object).
pub fn spec(fields: Value) -> ProbeSpec {
    let Value::Object(fields) = fields else {
        panic!("probe fields must be a JSON object, got {fields}");
    };
    match wsprobe::config::ad_hoc_probe(&fields, &wsprobe::config::process_env) {
        Ok(mut config) => config.probes.remove(0),
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("invalid bench probe: {}", errors.join("; "));
        }
    }
}

/// A `ws://` round-trip probe against `addr`.
pub fn ws_round_trip(addr: SocketAddr) -> ProbeSpec {
    spec(serde_json::json!({
        "url": format!("ws://{addr}/"),
        "interpretation": "round_trip_latency",
        "send_message": "hi",
        "timeout_ms": 5000,
    }))
}

/// A `wss://` handshake probe against `addr`, trusting `ca_file`.
pub fn wss_handshake(addr: SocketAddr, ca_file: &Path) -> ProbeSpec {
    spec(serde_json::json!({
        "url": format!("wss://{addr}/"),
        "interpretation": "handshake_latency",
        "timeout_ms": 5000,
        "tls": { "ca_file": ca_file.to_str().expect("UTF-8 temp path") },
    }))
}

/// "release" or "debug", from the build the benchmark runs in.
pub fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
