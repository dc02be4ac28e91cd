//! `wsprobe reflect`: a WebSocket echo endpoint for the far end of a path.
//!
//! One thread and one mio poll: listeners, every connection, and the
//! signals (through self-pipes) are sources of the same loop. Deadlines
//! (handshake, idle, linger) are kept per connection; the loop sleeps
//! until the earliest one, so an idle reflector does not wake at all.

mod conn;
mod frame;
mod handshake;
mod limits;
mod tls;

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use socket2::{Domain, Socket, Type};

use conn::{Conn, Next, Settings};
use handshake::Policy;
use limits::{PerAddress, Rejection, Rejections};

use crate::say;

/// Defaults of the flags, also shown in the usage text.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_MAX_PER_ADDRESS: u32 = 16;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65536;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// On SIGTERM/SIGINT, open connections get this long to take their Close.
const STOP_GRACE: Duration = Duration::from_millis(800);

/// After accept(2) fails (no file descriptors left), try again this soon.
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// One read's worth, shared by every connection (the loop is one thread).
const SCRATCH: usize = 16 * 1024;

/// Listen backlog: room for a burst of connects while the loop is busy.
const BACKLOG: i32 = 1024;

const STOP: Token = Token(usize::MAX);
const HUP: Token = Token(usize::MAX - 1);
/// Listener `i` is `Token(LISTENERS - i)`; connections count from 0.
const LISTENERS: usize = usize::MAX - 2;

/// `wsprobe reflect`'s flags, checked for range by `cli`.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub listen: Vec<String>,
    pub protocols: Vec<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub token_env: Option<String>,
    pub max_connections: usize,
    pub max_per_address: u32,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
}

/// Runs until SIGTERM or SIGINT. An error is a start-up problem (a bad
/// file, an address that cannot be bound): nothing was served.
pub fn run(options: Options) -> Result<(), String> {
    let mut reflector = Reflector::start(options)?;
    reflector
        .serve()
        .map_err(|e| format!("reflect: poll failed: {e}"))
}

struct Reflector {
    options: Options,
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// Read ends of the self-pipes the signal handlers write to.
    stop_pipe: UnixStream,
    hup_pipe: UnixStream,
    tls: Option<tls::Config>,
    settings: Settings,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    per_address: PerAddress,
    rejections: Rejections,
    /// Connections whose turn ran out: driven again before sleeping.
    again: Vec<usize>,
    /// No deadline of any connection is earlier than this.
    next_due: Option<Instant>,
    retry_accept: Option<Instant>,
    stopping: Option<Instant>,
}

impl Reflector {
    fn start(options: Options) -> Result<Self, String> {
        let token = match &options.token_env {
            Some(name) => match std::env::var(name) {
                Ok(token) if !token.trim().is_empty() => Some(token.trim().to_owned()),
                _ => {
                    return Err(format!(
                        "--token-env {name}: the variable is unset or empty"
                    ))
                }
            },
            None => None,
        };
        let tls = match &options.tls {
            Some((cert, key)) => Some(tls::load(cert, key)?),
            None => None,
        };
        let poll = Poll::new().map_err(|e| format!("reflect: cannot create a poll: {e}"))?;
        let mut listeners = Vec::new();
        for text in &options.listen {
            for addr in resolve(text)? {
                let mut listener = bind(addr).map_err(|e| format!("--listen {text}: {e}"))?;
                let token = Token(LISTENERS - listeners.len());
                poll.registry()
                    .register(&mut listener, token, Interest::READABLE)
                    .map_err(|e| format!("--listen {text}: {e}"))?;
                let local = listener.local_addr().map_or(addr, |a| a);
                let both = if local.ip().is_unspecified() && local.is_ipv6() {
                    " and IPv4"
                } else {
                    ""
                };
                let scheme = if tls.is_some() { "wss" } else { "ws" };
                say!("reflect: listening on {local} ({scheme}://{both})");
                listeners.push(listener);
            }
        }
        let stop_pipe = signal_pipe(&poll, STOP, &[SIGTERM, SIGINT])?;
        let hup_pipe = signal_pipe(&poll, HUP, &[SIGHUP])?;
        let settings = Settings {
            policy: Policy::new(options.protocols.clone(), token.as_deref()),
            max_message: options.max_message_bytes,
            idle: options.idle_timeout,
        };
        Ok(Reflector {
            per_address: PerAddress::new(options.max_per_address),
            options,
            poll,
            listeners,
            stop_pipe,
            hup_pipe,
            tls,
            settings,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            rejections: Rejections::default(),
            again: Vec::new(),
            next_due: None,
            retry_accept: None,
            stopping: None,
        })
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; SCRATCH];
        loop {
            let now = Instant::now();
            if let Some(stop_at) = self.stopping {
                if self.live == 0 || now >= stop_at {
                    say!("reflect: stopped");
                    return Ok(());
                }
            }
            let wake = [self.next_due, self.retry_accept, self.stopping]
                .into_iter()
                .flatten()
                .min();
            let timeout = if self.again.is_empty() {
                // A millisecond late rather than a spin of early wakes.
                wake.map(|at| at.saturating_duration_since(now) + Duration::from_millis(1))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    STOP => self.stop(now),
                    HUP => self.reload(),
                    Token(t) if t > LISTENERS - self.listeners.len() && t <= LISTENERS => {
                        self.accept(LISTENERS - t, now);
                    }
                    Token(index) => self.drive(index, &mut scratch, now),
                }
            }
            for index in std::mem::take(&mut self.again) {
                self.drive(index, &mut scratch, now);
            }
            if self.retry_accept.is_some_and(|at| now >= at) {
                self.retry_accept = None;
                for index in 0..self.listeners.len() {
                    self.accept(index, now);
                }
            }
            if self.next_due.is_some_and(|at| now >= at) {
                self.expire(&mut scratch, now);
            }
        }
    }

    fn accept(&mut self, index: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let (stream, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_resources(&e) => {
                    // The connection waits in the backlog; accepting again
                    // at once would fail the same way: try again soon.
                    self.reject(Rejection::AcceptFailed, None, now);
                    self.retry_accept = Some(now + ACCEPT_RETRY);
                    return;
                }
                // One connection that went wrong (ECONNABORTED, ...): next.
                Err(_) => {
                    self.reject(Rejection::AcceptFailed, None, now);
                    continue;
                }
            };
            let peer = addr.ip().to_canonical();
            // Dropping the stream closes it at once: existing connections
            // are untouched and nothing is read from the newcomer.
            if self.live >= self.options.max_connections {
                self.reject(Rejection::MaxConnections, Some(peer), now);
                continue;
            }
            if !self.per_address.admit(peer) {
                self.reject(Rejection::PerAddress, Some(peer), now);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let mut conn = match Conn::new(stream, peer, self.tls.as_ref(), now) {
                Some(conn) => conn,
                None => {
                    self.per_address.release(peer);
                    self.reject(Rejection::Tls, Some(peer), now);
                    continue;
                }
            };
            let slot = self.free.pop().unwrap_or(self.conns.len());
            let registered = self.poll.registry().register(
                conn.stream(),
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            );
            if registered.is_err() {
                self.per_address.release(peer);
                self.free.push(slot);
                continue;
            }
            self.due(conn.deadline);
            if slot == self.conns.len() {
                self.conns.push(Some(conn));
            } else {
                self.conns[slot] = Some(conn);
            }
            self.live += 1;
        }
    }

    fn drive(&mut self, index: usize, scratch: &mut [u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let (next, rejected) = conn.drive(scratch, &self.settings, now);
        let (peer, deadline) = (conn.peer, conn.deadline);
        if let Some(kind) = rejected {
            self.reject(kind, Some(peer), now);
        }
        self.after(index, next, deadline);
    }

    /// Acts on what a connection's turn said.
    fn after(&mut self, index: usize, next: Next, deadline: Instant) {
        match next {
            Next::Wait => self.due(deadline),
            Next::Again => {
                self.due(deadline);
                self.again.push(index);
            }
            Next::Gone => self.remove(index),
        }
    }

    fn remove(&mut self, index: usize) {
        let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(conn.stream());
        self.per_address.release(conn.peer);
        self.free.push(index);
        self.live -= 1;
    }

    /// Every connection whose deadline passed moves on; the earliest
    /// deadline left becomes the next wake.
    fn expire(&mut self, scratch: &mut [u8], now: Instant) {
        self.next_due = None;
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            if conn.deadline > now {
                let deadline = conn.deadline;
                self.due(deadline);
                continue;
            }
            let (next, rejected) = conn.expire(now);
            let (peer, deadline) = (conn.peer, conn.deadline);
            if let Some(kind) = rejected {
                self.reject(kind, Some(peer), now);
            }
            self.after(index, next, deadline);
        }
        if let Some(at) = self.rejections.flush(now) {
            self.due(at);
        }
        // Connections that expired into a Close are written out now.
        for index in std::mem::take(&mut self.again) {
            self.drive(index, scratch, now);
        }
    }

    fn reject(&mut self, kind: Rejection, peer: Option<IpAddr>, now: Instant) {
        self.rejections.count(kind, peer, now);
        if let Some(at) = self.rejections.flush(now) {
            self.due(at);
        }
    }

    fn due(&mut self, at: Instant) {
        self.next_due = Some(self.next_due.map_or(at, |due| due.min(at)));
    }

    fn stop(&mut self, now: Instant) {
        drain_pipe(&mut self.stop_pipe);
        if self.stopping.is_some() {
            return;
        }
        say!(
            "reflect: stopping on a signal; Close 1001 to {} connection(s)",
            self.live
        );
        self.stopping = Some(now + STOP_GRACE);
        for mut listener in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        for index in 0..self.conns.len() {
            if let Some(conn) = self.conns[index].as_mut() {
                let next = conn.going_away(now);
                let deadline = conn.deadline;
                self.after(index, next, deadline);
            }
        }
    }

    fn reload(&mut self) {
        drain_pipe(&mut self.hup_pipe);
        let Some((cert, key)) = &self.options.tls else {
            say!("reflect: SIGHUP: no --tls-cert to reload");
            return;
        };
        match tls::load(cert, key) {
            Ok(config) => {
                self.tls = Some(config);
                say!(
                    "reflect: SIGHUP: reloaded {}; new connections use it",
                    cert.display()
                );
            }
            Err(e) => say!("reflect: SIGHUP: {e}; keeping the certificate in use"),
        }
    }
}

/// accept(2) failures that last until something is freed.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// `host:port` to addresses; a name may stand for several.
fn resolve(text: &str) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("--listen {text}: {e} (want host:port, [::]:port for both families)"))?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("--listen {text}: no address"));
    }
    Ok(addrs)
}

/// A non-blocking listener; `[::]` also takes IPv4 where the system lets
/// it (IPV6_V6ONLY off, whatever `net.ipv6.bindv6only` says).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Not allowed everywhere: then it serves IPv6 only.
        let _ = socket.set_only_v6(false);
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A self-pipe the given signals write to, registered under `token`.
fn signal_pipe(poll: &Poll, token: Token, signals: &[i32]) -> Result<UnixStream, String> {
    let fail = |e: io::Error| format!("reflect: cannot install signal handlers: {e}");
    let (read, write) = UnixStream::pair().map_err(fail)?;
    read.set_nonblocking(true).map_err(fail)?;
    for &signal in signals {
        let write = write.try_clone().map_err(fail)?;
        signal_hook::low_level::pipe::register(signal, write).map_err(fail)?;
    }
    poll.registry()
        .register(&mut SourceFd(&read.as_raw_fd()), token, Interest::READABLE)
        .map_err(fail)?;
    Ok(read)
}

fn drain_pipe(pipe: &mut UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {}
}
