//! `wsprobe reflect` under load, beside the Python `websockets` server's
//! own echo (tests/py/ws_server.py) under the same load, in the same run.
//!
//! ```text
//! cargo bench --bench reflect_load
//!
//!   idle        N idle ws:// connections (default 10,000), opened from
//!               127.0.x.y sources 16 at a time (the default per-address
//!               limit): the server's RSS once all are open
//!               (target for reflect: <= 64 MB)
//!   wss-idle    M idle wss:// connections (default 1,000; TLS 1.3, P-256
//!               leaf, rustls client): reflect's RSS once all are open
//!               (reflect only)
//!   round-trip  1,000 ws:// connections, each sending one text message a
//!               second for S seconds (default 20) and reading its echo:
//!               the server's CPU over the window, % of one core, and its
//!               RSS (target for reflect: <= 10 %)
//! ```
//!
//! Environment: `WSPROBE_BIN` (default: the binary cargo builds for the
//! bench, target/release/wsprobe), `WSPROBE_TEST_PYTHON` (default
//! /opt/wsprobe-test/bin/python; the Python side is skipped without it),
//! `REFLECT_IDLE` (N), `REFLECT_TLS_IDLE` (M), `REFLECT_SECS` (S). RLIMIT_NOFILE is raised for this
//! process and so for the servers it starts. Figures are reported, never
//! asserted; "MB" is 1024 KiB as /proc reports KiB. The client is this
//! process (one thread, blocking sockets): its own CPU is not counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use socket2::{Domain, Socket, Type};

mod support;

const PY_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ws_server.py");

fn main() {
    let idle: usize = env_or("REFLECT_IDLE", 10_000);
    let secs: u64 = env_or("REFLECT_SECS", 20);
    let clients = 1000;
    let limit = raise_nofile(2 * idle as u64 + 1000);
    println!("RLIMIT_NOFILE {limit}");
    let bin = std::env::var("WSPROBE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsprobe").into());
    let python = std::env::var("WSPROBE_TEST_PYTHON")
        .unwrap_or_else(|_| "/opt/wsprobe-test/bin/python".into());
    let has_python = std::path::Path::new(&python).exists();
    let max = (idle + 100).to_string();

    println!("\n== idle: {idle} open ws:// connections ==");
    let mut servers = vec![Server::reflect(&bin, &max, &[])];
    if has_python {
        servers.push(Server::python(&python));
    } else {
        println!("(no Python at {python}: its side skipped)");
    }
    for server in &mut servers {
        let before = server.rss_kb();
        let started = Instant::now();
        let conns = open_many(server.addr, idle);
        let opened = started.elapsed();
        thread::sleep(Duration::from_secs(1));
        println!(
            "{:<18} {} open in {:.1} s; RSS {:.1} MB (at start {:.1} MB), peak {:.1} MB",
            server.name,
            conns.len(),
            opened.as_secs_f64(),
            mb(server.rss_kb()),
            mb(before),
            mb(server.hwm_kb()),
        );
        drop(conns);
        server.restart_if_python(&python);
    }
    println!("target: reflect <= 64 MB with {idle} connections");

    let tls_idle: usize = env_or("REFLECT_TLS_IDLE", 1000);
    println!("\n== wss-idle: {tls_idle} open wss:// connections ==");
    let pki = support::TestPki::new("reflect-load");
    let cert = pki.chain_file.to_str().expect("utf-8 path");
    let key = pki.key_file.to_str().expect("utf-8 path");
    let secure = Server::reflect(&bin, &max, &["--tls-cert", cert, "--tls-key", key]);
    let before = secure.rss_kb();
    let client = client_config(&pki.ca_file);
    let conns: Vec<_> = (0..tls_idle)
        .map(|i| open_tls(secure.addr, i, &client))
        .collect();
    thread::sleep(Duration::from_secs(1));
    println!(
        "{:<18} {} open; RSS {:.1} MB (at start {:.1} MB), {:.1} KB per connection",
        secure.name,
        conns.len(),
        mb(secure.rss_kb()),
        mb(before),
        (secure.rss_kb() - before) as f64 / conns.len().max(1) as f64,
    );
    drop(conns);
    drop(secure);

    println!("\n== round-trip: {clients} clients, one message a second each, {secs} s ==");
    for server in &mut servers {
        let mut conns = open_many(server.addr, clients);
        let cpu_before = server.cpu_ticks();
        let started = Instant::now();
        let mut rtts = Vec::new();
        let mut failed = 0;
        let total = secs as usize * clients;
        for i in 0..total {
            let due = started + Duration::from_micros(i as u64 * 1_000_000 / clients as u64);
            thread::sleep(due.saturating_duration_since(Instant::now()));
            let conn = &mut conns[i % clients];
            let message = format!("message {i}");
            let sent = Instant::now();
            if round_trip(conn, message.as_bytes()) {
                rtts.push(sent.elapsed());
            } else {
                failed += 1;
            }
        }
        let window = started.elapsed().as_secs_f64();
        let cpu = (server.cpu_ticks() - cpu_before) as f64 / clk_tck() / window * 100.0;
        rtts.sort();
        let median = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
        let p99 = rtts.get(rtts.len() * 99 / 100).copied().unwrap_or_default();
        println!(
            "{:<18} CPU {cpu:.1} % of one core; RSS {:.1} MB, peak {:.1} MB; \
             {} echoes, {failed} failed; RTT median {:.0} us, p99 {:.0} us",
            server.name,
            mb(server.rss_kb()),
            mb(server.hwm_kb()),
            rtts.len(),
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
        );
    }
    println!("target: reflect <= 10 % of one core");
}

struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn reflect(bin: &str, max: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args([
                "reflect",
                "--listen",
                "127.0.0.1:0",
                "--max-connections",
                max,
            ])
            .args(["--idle-timeout-ms", "600000"])
            .args(extra)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsprobe reflect");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Keep draining: rejection lines must never block the server.
        thread::spawn(move || lines.for_each(drop));
        Server {
            name: "wsprobe reflect",
            child,
            addr,
        }
    }

    fn python(python: &str) -> Server {
        let mut child = Command::new(python)
            .arg(PY_SERVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("port line");
        let port: u16 = line.trim().parse().expect("a port");
        Server {
            name: "python websockets",
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The Python server is slow to let go of 10,000 connections: a fresh
    /// one for the next load keeps the figures apart. reflect lets go at
    /// once and keeps running, as it would in service.
    fn restart_if_python(&mut self, python: &str) {
        if self.name.starts_with("python") {
            let _ = self.child.kill();
            let _ = self.child.wait();
            *self = Server::python(python);
        }
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn rss_kb(&self) -> u64 {
        self.status_kb("VmRSS:")
    }

    fn hwm_kb(&self) -> u64 {
        self.status_kb("VmHWM:")
    }

    /// utime + stime of the whole process, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` upgraded connections, 16 from each source address 127.0.x.y.
fn open_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut stream = tcp_from_source(addr, i);
            upgrade(&mut stream, i);
            stream
        })
        .collect()
}

/// Connection `i`'s TCP connection: 16 per source address 127.0.x.y.
fn tcp_from_source(addr: SocketAddr, i: usize) -> TcpStream {
    let source = i / 16;
    let ip = [127, 0, 1 + (source / 250) as u8, 1 + (source % 250) as u8];
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((ip, 0)).into())
        .expect("bind source");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

fn upgrade(stream: &mut (impl Read + Write), i: usize) {
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("upgrade answer");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "connection {i} refused");
}

fn client_config(ca_file: &std::path::Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An upgraded wss:// connection (the TLS handshake happens on the
/// upgrade's first write).
fn open_tls(
    addr: SocketAddr,
    i: usize,
    config: &Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let tls = ClientConnection::new(config.clone(), name).expect("client connection");
    let mut stream = StreamOwned::new(tls, tcp_from_source(addr, i));
    upgrade(&mut stream, i);
    stream
}

/// Sends a masked text frame and reads frames until its echo (answering
/// the Python server's keepalive pings). False on any failure.
fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> bool {
    if send(stream, 0x81, payload).is_err() {
        return false;
    }
    loop {
        let mut h = [0u8; 2];
        if stream.read_exact(&mut h).is_err() {
            return false;
        }
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                if stream.read_exact(&mut b).is_err() {
                    return false;
                }
                usize::from(u16::from_be_bytes(b))
            }
            n => usize::from(n),
        };
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).is_err() {
            return false;
        }
        match h[0] & 0x0F {
            0x1 => return body == payload,
            0x9 => {
                let _ = send(stream, 0x8A, &body);
            }
            _ => {}
        }
    }
}

fn send(stream: &mut TcpStream, first: u8, payload: &[u8]) -> std::io::Result<()> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame)
}

fn raise_nofile(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a plain struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.max(limit.rlim_cur),
                rlim_max: want.max(limit.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
