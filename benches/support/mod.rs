//! What the benchmarks share: in-process `ws://` and `wss://` echo servers
//! bound to 127.0.0.1:0, a test CA made with rcgen, and probe specs built
//! through the same validation as `wsprobe probe`; for the fidelity bench,
//! a raw TCP echo server and a delaying TCP relay (`DelayRelay`).
//!
//! The servers run on threads of their own (one per connection), so a
//! benchmark that measures its own thread's CPU does not count theirs.
//! [`load_server`] is the variant for many connections a second (the agent
//! load and footprint benchmarks), with a silent mode that holds
//! connections open.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;
use wsprobe::spec::ProbeSpec;

/// A test CA and a `127.0.0.1` leaf signed by it (P-256, as rcgen makes
/// by default), with the CA's PEM written to a directory of our own for
/// `tls.ca_file`. The directory goes when this is dropped.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    /// The chain the server sends and its key, as PEM files, for a server
    /// in another process (`wsprobe reflect`).
    pub chain_file: PathBuf,
    pub key_file: PathBuf,
    pub server: Arc<ServerConfig>,
}

impl TestPki {
    /// A private CA: the server sends its leaf alone, and the client
    /// holds the CA.
    pub fn new(tag: &str) -> Self {
        let (root_cert, root) = Self::ca("wsprobe bench CA", &rcgen::PKCS_ECDSA_P256_SHA256, None);
        let (leaf_cert, leaf_key) = Self::leaf(&root);
        Self::serving(tag, &root_cert, vec![leaf_cert], leaf_key)
    }

    /// The shape of a public CA's ECDSA chain, such as Let's Encrypt's
    /// (ISRG Root X2, intermediate E5 to E9): a P-384 root and a P-384
    /// intermediate; the server sends its P-256 leaf and the
    /// intermediate. The client checks two P-384 signatures on the chain.
    pub fn public_like(tag: &str) -> Self {
        let p384 = &rcgen::PKCS_ECDSA_P384_SHA384;
        let (root_cert, root) = Self::ca("wsprobe bench root", p384, None);
        let (intermediate_cert, intermediate) =
            Self::ca("wsprobe bench intermediate", p384, Some(&root));
        let (leaf_cert, leaf_key) = Self::leaf(&intermediate);
        Self::serving(
            tag,
            &root_cert,
            vec![leaf_cert, intermediate_cert],
            leaf_key,
        )
    }

    /// A CA certificate, self-signed or signed by `parent`, and its issuer.
    fn ca(
        name: &str,
        algorithm: &'static rcgen::SignatureAlgorithm,
        parent: Option<&Issuer<'static, KeyPair>>,
    ) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(algorithm).expect("CA key");
        let cert = match parent {
            Some(parent) => params.signed_by(&key, parent),
            None => params.self_signed(&key),
        }
        .expect("CA certificate");
        (cert, Issuer::new(params, key))
    }

    /// A P-256 leaf for `127.0.0.1`, signed by `issuer`.
    fn leaf(issuer: &Issuer<'static, KeyPair>) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, issuer).expect("leaf certificate");
        (cert, key)
    }

    /// Writes the root for `tls.ca_file` and makes the server's config,
    /// which sends `chain`.
    fn serving(
        tag: &str,
        root: &rcgen::Certificate,
        chain: Vec<rcgen::Certificate>,
        leaf_key: KeyPair,
    ) -> Self {
        let dir = Self::dir_for(tag, std::process::id());
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, root.pem()).expect("write ca.pem");
        let chain_file = dir.join("chain.pem");
        let chain_pem: String = chain.iter().map(|cert| cert.pem()).collect();
        std::fs::write(&chain_file, chain_pem).expect("write chain.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&key_file, leaf_key.serialize_pem()).expect("write key.pem");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                chain.iter().map(|cert| cert.der().clone()).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("server certificate");
        TestPki {
            dir,
            ca_file,
            chain_file,
            key_file,
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

/// A raw TCP echo server (no WebSocket): every byte read is written back.
/// The bare baseline beside the probe in the fidelity bench.
pub fn tcp_echo_server() -> SocketAddr {
    serve(|mut tcp| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tcp.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// A TCP relay on 127.0.0.1:0 that forwards to `target` with a fixed
/// one-way delay in each direction: a delay line for a kernel without
/// netem.
///
/// Per connection, each direction has a reader thread and a writer thread
/// joined by a channel. They are made before the connection is accepted,
/// and the relay serves one connection at a time, the next accepted once
/// the last has ended both ways (the bench's runs are sequential). Made at
/// accept, the four threads took the CPUs from the probe just as it was
/// opening: its first turn, from its start to its ClientHello reaching
/// the relay, took 0.32-0.36 ms instead of 0.11.
///
/// The reader stamps each chunk with the time the kernel received it
/// (`SO_TIMESTAMPNS`, falling back to the time of the read), so the
/// reader's own wake-up latency does not add to the delay;
/// the writer sleeps (timer slack 1 ns) until `arrival + delay`, spins the
/// last `spin` of it, and writes. Chunks keep their order; an end of
/// stream is forwarded as a half-close when its time comes.
///
/// What the relay cannot delay: the TCP handshake between the client and
/// the relay, which the kernel completes before `accept` returns. The
/// relay connects to `target` as soon as it accepts (locally, in
/// microseconds), so a connect through it costs no delay at all.
pub struct DelayRelay {
    pub addr: SocketAddr,
    stats: Arc<RelayStats>,
}

/// What the relay saw since the last `DelayRelay::take_samples`.
#[derive(Debug, Default)]
pub struct RelaySamples {
    /// Per chunk written: when the writer woke to write it, minus when it
    /// was due. This adds to the one-way delay on every pass.
    pub lateness: Vec<Duration>,
    /// Per kernel-stamped chunk: when the reader got it, minus when the
    /// kernel received it. The stamp keeps this out of the delay.
    pub reader_lag: Vec<Duration>,
    /// Chunks read without a kernel timestamp (the read time was used).
    pub unstamped: u64,
}

/// One chunk's pass through the relay: when the kernel received it and
/// when the relay wrote it on. Between one pass written and the next one
/// back received, the endpoint it went to was at work.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    /// Client to server.
    pub upstream: bool,
    pub arrived: Instant,
    pub written: Instant,
}

#[derive(Default)]
struct RelayStats {
    samples: Mutex<RelaySamples>,
    passes: Mutex<Vec<Pass>>,
}

/// `SO_TIMESTAMPNS` (and `SCM_TIMESTAMPNS`) on Linux where `timespec` is
/// 64-bit (x86_64, aarch64); elsewhere the stamp is ignored by its size.
const SO_TIMESTAMPNS: libc::c_int = 35;

impl DelayRelay {
    /// Starts the relay; `spin` is how much of each wait is a busy loop
    /// (zero: sleep only).
    pub fn start(target: SocketAddr, delay: Duration, spin: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay on 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay local addr");
        enable_rx_timestamps(listener.as_raw_fd());
        let stats = Arc::new(RelayStats::default());
        let shared = stats.clone();
        thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || {
                let link = Link {
                    delay,
                    spin,
                    stats: shared.clone(),
                };
                // One connection at a time, its threads made before it is
                // accepted (see the type's doc).
                loop {
                    let up = link.prepare(true);
                    let down = link.prepare(false);
                    let Ok((client, _)) = listener.accept() else {
                        continue;
                    };
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    for tcp in [&client, &server] {
                        let _ = tcp.set_nodelay(true);
                        enable_rx_timestamps(tcp.as_raw_fd());
                    }
                    up.start(&client, &server);
                    down.start(&server, &client);
                    up.join();
                    down.join();
                }
            })
            .expect("spawn relay accept thread");
        DelayRelay { addr, stats }
    }

    /// The samples so far; the relay starts afresh.
    pub fn take_samples(&self) -> RelaySamples {
        std::mem::take(&mut *self.stats.samples.lock().unwrap())
    }

    /// The passes so far, in the order they arrived; the list starts afresh.
    pub fn take_passes(&self) -> Vec<Pass> {
        let mut passes = std::mem::take(&mut *self.stats.passes.lock().unwrap());
        passes.sort_by_key(|pass| pass.arrived);
        passes
    }
}

#[derive(Clone)]
struct Link {
    delay: Duration,
    spin: Duration,
    stats: Arc<RelayStats>,
}

enum Chunk {
    Data(Vec<u8>),
    End,
}

/// One direction's reader and writer threads, made before the connection
/// they will serve exists, each waiting for its sockets.
struct Pump {
    reader_gate: mpsc::Sender<TcpStream>,
    writer_gate: mpsc::Sender<(TcpStream, TcpStream)>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Pump {
    /// Hands the threads their sockets: they relay from `from` to `to`.
    fn start(&self, from: &TcpStream, to: &TcpStream) {
        let clone = |tcp: &TcpStream| tcp.try_clone().expect("clone relay socket");
        let _ = self.reader_gate.send(clone(from));
        let _ = self.writer_gate.send((clone(to), clone(from)));
    }

    /// Waits for both threads: for a started pump, until its direction
    /// has carried its end of stream; an unstarted one ends at once.
    fn join(self) {
        drop(self.reader_gate);
        drop(self.writer_gate);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

impl Link {
    /// One direction (`upstream`: client to server): a reader thread and a
    /// writer thread, started by `Pump::start`.
    fn prepare(&self, upstream: bool) -> Pump {
        let name = if upstream { "relay-up" } else { "relay-down" };
        let (tx, rx) = mpsc::channel::<(Instant, Chunk)>();
        let (reader_gate, reader_rx) = mpsc::channel::<TcpStream>();
        let (writer_gate, writer_rx) = mpsc::channel::<(TcpStream, TcpStream)>();
        let stats = self.stats.clone();
        let delay = self.delay;
        let mut threads = Vec::new();
        threads.push(
            thread::Builder::new()
                .name(format!("{name}-read"))
                .spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    let Ok(reader) = reader_rx.recv() else { return };
                    loop {
                        let (chunk, arrived) = match recv_stamped(&reader, &mut buf) {
                            Ok((0, _)) | Err(_) => (Chunk::End, Instant::now()),
                            Ok((n, stamp)) => {
                                let read_at = Instant::now();
                                let arrived = match stamp {
                                    Some(arrived) => {
                                        let lag = read_at.saturating_duration_since(arrived);
                                        stats.samples.lock().unwrap().reader_lag.push(lag);
                                        arrived
                                    }
                                    None => {
                                        stats.samples.lock().unwrap().unstamped += 1;
                                        read_at
                                    }
                                };
                                (Chunk::Data(buf[..n].to_vec()), arrived)
                            }
                        };
                        let end = matches!(chunk, Chunk::End);
                        if tx.send((arrived + delay, chunk)).is_err() || end {
                            return;
                        }
                    }
                })
                .expect("spawn relay reader"),
        );

        let link = self.clone();
        threads.push(
            thread::Builder::new()
                .name(format!("{name}-write"))
                .spawn(move || {
                    let Ok((mut out, source)) = writer_rx.recv() else {
                        return;
                    };
                    // Precise wake-ups: the default slack lets a sleep run
                    // 50 us long.
                    // SAFETY: prctl(PR_SET_TIMERSLACK) only sets this thread's
                    // timer slack; no pointers are passed.
                    unsafe {
                        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
                    }
                    for (due, chunk) in rx {
                        link.wait_until(due);
                        let written = Instant::now();
                        let late = written.saturating_duration_since(due);
                        let failed = match chunk {
                            Chunk::Data(bytes) => {
                                let pass = Pass {
                                    upstream,
                                    arrived: due - link.delay,
                                    written,
                                };
                                link.stats.passes.lock().unwrap().push(pass);
                                out.write_all(&bytes).is_err()
                            }
                            Chunk::End => {
                                let _ = out.shutdown(Shutdown::Write);
                                false
                            }
                        };
                        link.stats.samples.lock().unwrap().lateness.push(late);
                        if failed {
                            // Tear both sides down so every thread of this
                            // connection sees the end.
                            let _ = out.shutdown(Shutdown::Both);
                            let _ = source.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                })
                .expect("spawn relay writer"),
        );
        Pump {
            reader_gate,
            writer_gate,
            threads,
        }
    }

    fn wait_until(&self, due: Instant) {
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            let left = due - now;
            if left > self.spin {
                thread::sleep(left - self.spin);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

fn enable_rx_timestamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt with a pointer to a live c_int and its
    // size; failure only means reads carry no stamp.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `read`, plus the time the kernel received the data (for TCP, that of
/// the last segment the read consumed) as an `Instant`, when it says.
fn recv_stamped(tcp: &TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<Instant>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s, for cmsghdr's alignment.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: msg points at iov (over buf) and control, all live and
        // sized as declared, for the duration of the call.
        let n = unsafe { libc::recvmsg(tcp.as_raw_fd(), &mut msg, 0) };
        if n >= 0 {
            break n as usize;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    let now_mono = Instant::now();
    let now_real = SystemTime::now();
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within msg_controllen as the kernel
    // set it; the data is read unaligned and only when its length is that
    // of a timespec.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let size = std::mem::size_of::<libc::timespec>() as libc::c_uint;
            if header.cmsg_level == libc::SOL_SOCKET
                && header.cmsg_type == SO_TIMESTAMPNS
                && header.cmsg_len as usize == libc::CMSG_LEN(size) as usize
            {
                stamp = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::timespec>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // The stamp is wall-clock time: carry its age over to the monotonic
    // clock. An implausible age (clock stepped) falls back to now.
    let arrived = stamp.and_then(|ts| {
        let at = UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        let age = now_real.duration_since(at).ok()?;
        (age < Duration::from_secs(1)).then(|| now_mono - age)
    });
    Ok((n, arrived))
}

// The load server's own imports, kept with it.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How a [`load_server`] answers once the WebSocket is open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Every text or binary message back, as [`ws_echo_server`] does.
    Echo,
    /// Nothing: messages are read and dropped, so a round-trip probe waits
    /// with its connection open until its timeout. The close handshake is
    /// still answered.
    Silent,
}

/// What a [`load_server`] has seen; read while it runs.
#[derive(Default)]
pub struct LoadStats {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// Connections that reached an open WebSocket (TLS and upgrade done).
    pub upgraded: AtomicU64,
    /// Open WebSockets right now.
    pub open: AtomicUsize,
    /// Connections dropped because no thread could be started for them.
    pub spawn_failed: AtomicU64,
    /// TLS or upgrade failures.
    pub failed: AtomicU64,
}

/// A `ws://` (`tls` None) or `wss://` server for load benchmarks: a listen
/// backlog of 4096, one thread per connection with a 256 KiB stack, and a
/// 4 KiB WebSocket read buffer (tungstenite's 128 KiB default, zero-filled
/// per connection, would cost the bench process more than the agent).
///
/// At the end of a connection it answers the client's Close and then
/// closes TCP first (after a TLS close_notify), as the agent expects:
/// TIME_WAIT lands on this side.
pub fn load_server(tls: Option<Arc<ServerConfig>>, reply: Reply) -> (SocketAddr, Arc<LoadStats>) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    socket.listen(4096).expect("listen");
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().expect("local addr");
    let stats = Arc::new(LoadStats::default());
    let shared = stats.clone();
    thread::Builder::new()
        .name("load-accept".into())
        .spawn(move || {
            for tcp in listener.incoming().flatten() {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = tcp.set_nodelay(true);
                let (tls, stats) = (tls.clone(), shared.clone());
                let spawned = thread::Builder::new()
                    .name("load-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || load_connection(tcp, tls, reply, &stats));
                if spawned.is_err() {
                    shared.spawn_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .expect("spawn accept thread");
    (addr, stats)
}

fn load_connection(
    tcp: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    reply: Reply,
    stats: &LoadStats,
) {
    let config = Some(WebSocketConfig::default().read_buffer_size(4096));
    match tls {
        None => match tungstenite::accept_with_config(tcp, config) {
            Ok(ws) => serve_open(ws, reply, stats, |_| {}),
            Err(_) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        },
        Some(tls) => {
            let Ok(conn) = ServerConnection::new(tls) else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            match tungstenite::accept_with_config(StreamOwned::new(conn, tcp), config) {
                Ok(ws) => serve_open(ws, reply, stats, |stream| {
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }),
                Err(_) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Serves one open WebSocket until the client's Close has been answered
/// (tungstenite then ends a server's reads), then `finish`es the stream and
/// drops it, which closes TCP.
fn serve_open<S: Read + Write>(
    mut ws: WebSocket<S>,
    reply: Reply,
    stats: &LoadStats,
    finish: impl FnOnce(&mut S),
) {
    stats.upgraded.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    loop {
        match ws.read() {
            Ok(message) if message.is_text() || message.is_binary() => {
                if reply == Reply::Echo && ws.send(message).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
    finish(ws.get_mut());
}

/// CPU time this thread has used: the first field of its schedstat (ns).
///
/// The kernel brings the running thread's figure up to date only at a tick
/// or a context switch; yielding first forces that update, so the reading
/// is exact to the microsecond rather than to a tick.
pub fn thread_cpu() -> Duration {
    thread::yield_now();
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("read /proc/thread-self/schedstat (Linux only)");
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("unexpected schedstat contents: {text:?}"));
    Duration::from_nanos(ns)
}

/// `outcome`, or a panic naming its reason: a benchmark stops at the first
/// failed probe.
pub fn succeeded(outcome: wsprobe::outcome::Outcome) -> wsprobe::outcome::Outcome {
    if let Some(reason) = outcome.reason {
        panic!(
            "probe failed: {} ({})",
            reason.wire_name(),
            outcome.meta.error.as_deref().unwrap_or("no detail")
        );
    }
    outcome
}
