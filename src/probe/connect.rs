//! TCP connect: Happy Eyeballs (RFC 8305) over mio, within the deadline.
//!
//! Addresses are interleaved by family, IPv6 first (section 4). A new
//! non-blocking connect starts every `CONNECTION_ATTEMPT_DELAY` while the
//! earlier ones are still pending, or at once when one fails (section 5);
//! the first to complete wins and the others are closed. The winner is
//! handed back, still non-blocking, for a `DeadlineStream` to wrap.
//!
//! The poll is made before the run's clock starts (`Racer::new`), and the
//! socket is created non-blocking with `TCP_NODELAY` already set: between
//! the clock's start and the SYN there are only the system calls a connect
//! cannot do without.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::deadline::Deadline;
use crate::outcome::{Failure, Meta, Phase};
use crate::spec::{IpVersion, Route};

/// RFC 8305 section 5: the recommended Connection Attempt Delay.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Keeps the addresses the route can use, interleaved IPv6 first.
pub fn usable_addresses(addrs: &[SocketAddr], route: &Route) -> Vec<SocketAddr> {
    let allowed = |a: &&SocketAddr| {
        route.ip_version.allows(a.ip())
            && route
                .source_ip
                .is_none_or(|s| s.is_ipv4() == a.ip().is_ipv4())
    };
    let v6: Vec<SocketAddr> = addrs
        .iter()
        .filter(allowed)
        .filter(|a| a.is_ipv6())
        .copied()
        .collect();
    let v4: Vec<SocketAddr> = addrs
        .iter()
        .filter(allowed)
        .filter(|a| a.is_ipv4())
        .copied()
        .collect();
    let mut ordered = Vec::with_capacity(v6.len() + v4.len());
    for i in 0..v6.len().max(v4.len()) {
        ordered.extend(v6.get(i));
        ordered.extend(v4.get(i));
    }
    ordered
}

/// Explains why `usable_addresses` left nothing.
pub fn no_usable_address(host: &str, route: &Route) -> Failure {
    let what = match (route.ip_version, route.source_ip) {
        (IpVersion::V4, _) => "no IPv4 address (ip_version 4)".to_owned(),
        (IpVersion::V6, _) => "no IPv6 address (ip_version 6)".to_owned(),
        (IpVersion::Any, Some(source)) => {
            format!("no address of the family of source_ip {source}")
        }
        (IpVersion::Any, None) => "no address".to_owned(),
    };
    Failure::open_failed(Phase::Dns, format!("{host} has {what}"))
}

/// One connect in flight.
struct Attempt {
    addr: SocketAddr,
    tcp: TcpStream,
}

/// The poll one run's connects race in.
pub struct Racer {
    poll: Poll,
    events: Events,
}

impl Racer {
    pub fn new() -> io::Result<Self> {
        Ok(Racer {
            poll: Poll::new()?,
            events: Events::with_capacity(8),
        })
    }
}

/// A poll that could not be made (out of file descriptors, most likely)
/// or waited on fails the connect phase.
pub fn poll_failure(error: &io::Error) -> Failure {
    Failure::open_failed(Phase::Connect, format!("poll: {error}"))
}

/// Races connects to `addrs` (already ordered) and returns the winner.
pub fn connect(
    racer: &mut Racer,
    addrs: &[SocketAddr],
    route: &Route,
    deadline: &Deadline,
    meta: &mut Meta,
) -> Result<TcpStream, Failure> {
    let Racer { poll, events } = racer;
    let mut pending: Vec<Option<Attempt>> = Vec::with_capacity(addrs.len());
    let mut next_addr = addrs.iter();
    let mut last_error: Option<String> = None;
    let mut next_start = Instant::now();

    loop {
        // Start the next attempt when it is due, or when nothing is pending.
        let in_flight = pending.iter().flatten().count();
        if Instant::now() >= next_start || in_flight == 0 {
            match next_addr.next() {
                Some(&addr) => {
                    meta.connect_attempts = Some(pending.len() as u32 + 1);
                    // The last address tried, until one wins: a failed
                    // connect is where an operator needs to see it most.
                    meta.remote_addr = Some(addr.to_string());
                    let token = Token(pending.len());
                    match start(addr, route, poll, token) {
                        Ok(tcp) => pending.push(Some(Attempt { addr, tcp })),
                        Err(e) => {
                            last_error = Some(format!("connect to {addr}: {e}"));
                            pending.push(None);
                            // Failed at once: the next one starts at once too.
                            next_start = Instant::now();
                            continue;
                        }
                    }
                    next_start = Instant::now() + CONNECTION_ATTEMPT_DELAY;
                }
                None if in_flight == 0 => {
                    let detail = last_error.unwrap_or_else(|| "no address to connect to".into());
                    return Err(Failure::open_failed(Phase::Connect, detail));
                }
                None => next_start = deadline_instant(deadline),
            }
        }

        let Some(left) = deadline.remaining() else {
            return Err(Failure::handshake_timeout(Phase::Connect));
        };
        let wait = left.min(next_start.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(poll_failure(&e));
            }
        }
        for event in events.iter() {
            let index = event.token().0;
            let Some(attempt) = pending.get_mut(index).and_then(Option::take) else {
                continue;
            };
            match finished(&attempt.tcp) {
                // Left registered: the poll is not waited on again, and
                // its owner closes it once the upgrade is answered.
                Ok(true) => return Ok(won(attempt, meta)),
                // Spurious wake-up: still connecting.
                Ok(false) => pending[index] = Some(attempt),
                Err(e) => {
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&attempt.tcp.as_raw_fd()));
                    last_error = Some(format!("connect to {}: {e}", attempt.addr));
                    // A refused attempt starts the next one at once.
                    next_start = Instant::now();
                }
            }
        }
    }
}

fn deadline_instant(deadline: &Deadline) -> Instant {
    Instant::now() + deadline.remaining().unwrap_or_default()
}

/// Creates the socket with the route's options and starts a non-blocking
/// connect; errors here (no such interface, no permission) are final.
fn start(addr: SocketAddr, route: &Route, poll: &Poll, token: Token) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // Nagle's algorithm would hold the upgrade request behind the TLS
    // handshake's last flight and add a round trip.
    socket.set_tcp_nodelay(true)?;
    if let Some(interface) = &route.bind_interface {
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(|e| annotate(e, &format!("bind_interface {interface}")))?;
    }
    if let Some(mark) = route.fwmark {
        socket
            .set_mark(mark)
            .map_err(|e| annotate(e, &format!("fwmark {mark}")))?;
    }
    if let Some(source) = route.source_ip {
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| annotate(e, &format!("source_ip {source}")))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let tcp: TcpStream = socket.into();
    poll.registry()
        .register(&mut SourceFd(&tcp.as_raw_fd()), token, Interest::WRITABLE)?;
    Ok(tcp)
}

/// Whether a writable socket has connected (mio's documented procedure:
/// `take_error`, then `peer_addr`).
fn finished(tcp: &TcpStream) -> io::Result<bool> {
    if let Some(e) = tcp.take_error()? {
        return Err(e);
    }
    match tcp.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

fn won(attempt: Attempt, meta: &mut Meta) -> TcpStream {
    meta.remote_addr = Some(attempt.addr.to_string());
    attempt.tcp
}

fn annotate(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn families_are_interleaved_ipv6_first() {
        let mixed = addrs(&[
            "1.1.1.1:80",
            "2.2.2.2:80",
            "[::1]:80",
            "[::2]:80",
            "[::3]:80",
        ]);
        assert_eq!(
            usable_addresses(&mixed, &Route::default()),
            addrs(&[
                "[::1]:80",
                "1.1.1.1:80",
                "[::2]:80",
                "2.2.2.2:80",
                "[::3]:80"
            ])
        );
    }

    #[test]
    fn ip_version_and_source_ip_filter_the_family() {
        let mixed = addrs(&["1.1.1.1:80", "[::1]:80"]);
        let v4 = Route {
            ip_version: IpVersion::V4,
            ..Route::default()
        };
        assert_eq!(usable_addresses(&mixed, &v4), addrs(&["1.1.1.1:80"]));
        let source_v6 = Route {
            source_ip: Some("::1".parse().unwrap()),
            ..Route::default()
        };
        assert_eq!(usable_addresses(&mixed, &source_v6), addrs(&["[::1]:80"]));
    }
}
