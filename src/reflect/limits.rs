//! The reflector's defences that span connections: the per-address count
//! of concurrent connections, and the rejection counters, each logged at
//! most once a minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::say;

/// A rejection is logged at once, then at most this often per kind.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Every kind of rejection the reflector counts; wire names in `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `--max-connections` reached: the new TCP connection closed at once.
    MaxConnections,
    /// `--max-per-address` reached for the source address.
    PerAddress,
    /// No complete handshake (TLS and upgrade) within the time allowed.
    HandshakeTimeout,
    /// A request head over the cap (431).
    HeadTooLarge,
    /// Not a WebSocket upgrade, or not HTTP at all (400, 426).
    NotWebSocket,
    /// A missing or wrong bearer token (401).
    Unauthorized,
    /// A TLS handshake that failed.
    Tls,
    /// A message over `--max-message-bytes` (Close 1009).
    MessageTooBig,
    /// A frame breaking RFC 6455 (Close 1002 or 1007).
    ProtocolError,
    /// Silent for `--idle-timeout-ms` (Close 1000).
    IdleTimeout,
    /// accept(2) itself failed (out of file descriptors, ...).
    AcceptFailed,
}

impl Rejection {
    const ALL: [Rejection; 11] = [
        Rejection::MaxConnections,
        Rejection::PerAddress,
        Rejection::HandshakeTimeout,
        Rejection::HeadTooLarge,
        Rejection::NotWebSocket,
        Rejection::Unauthorized,
        Rejection::Tls,
        Rejection::MessageTooBig,
        Rejection::ProtocolError,
        Rejection::IdleTimeout,
        Rejection::AcceptFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rejection::MaxConnections => "max_connections",
            Rejection::PerAddress => "max_per_address",
            Rejection::HandshakeTimeout => "handshake_timeout",
            Rejection::HeadTooLarge => "head_too_large",
            Rejection::NotWebSocket => "not_websocket",
            Rejection::Unauthorized => "unauthorized",
            Rejection::Tls => "tls_failed",
            Rejection::MessageTooBig => "message_too_big",
            Rejection::ProtocolError => "protocol_error",
            Rejection::IdleTimeout => "idle_timeout",
            Rejection::AcceptFailed => "accept_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default, Clone, Copy)]
struct Counter {
    total: u64,
    /// Counted since the last log line of this kind.
    unlogged: u64,
    last_log: Option<Instant>,
    last_peer: Option<IpAddr>,
}

/// Rejection counts; one log line per kind per `LOG_EVERY` at most.
#[derive(Default)]
pub struct Rejections {
    counters: [Counter; Rejection::ALL.len()],
}

impl Rejections {
    pub fn count(&mut self, kind: Rejection, peer: Option<IpAddr>, now: Instant) {
        let counter = &mut self.counters[kind.index()];
        counter.total += 1;
        counter.unlogged += 1;
        counter.last_peer = peer.or(counter.last_peer);
        if counter.last_log.is_none_or(|at| now >= at + LOG_EVERY) {
            log(kind, counter, now);
        }
    }

    /// Logs every kind whose minute is over and that has news; returns
    /// when the next such line is due, if any is pending.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for kind in Rejection::ALL {
            let counter = &mut self.counters[kind.index()];
            let Some(at) = counter.last_log.filter(|_| counter.unlogged > 0) else {
                continue;
            };
            if now >= at + LOG_EVERY {
                log(kind, counter, now);
            } else {
                next = Some(next.map_or(at + LOG_EVERY, |n| n.min(at + LOG_EVERY)));
            }
        }
        next
    }
}

fn log(kind: Rejection, counter: &mut Counter, now: Instant) {
    let peer = counter
        .last_peer
        .map(|p| format!(", last from {p}"))
        .unwrap_or_default();
    say!(
        "reflect: rejected {} ({} since the last line, {} in all{peer})",
        kind.name(),
        counter.unlogged,
        counter.total
    );
    counter.unlogged = 0;
    counter.last_log = Some(now);
}

/// Concurrent connections per source address (IPv4-mapped IPv6 counted as
/// the IPv4 address it is).
pub struct PerAddress {
    limit: u32,
    open: HashMap<IpAddr, u32>,
}

impl PerAddress {
    pub fn new(limit: u32) -> Self {
        PerAddress {
            limit,
            open: HashMap::new(),
        }
    }

    /// Takes a slot for `ip`; false when it already holds `limit`.
    pub fn admit(&mut self, ip: IpAddr) -> bool {
        let open = self.open.entry(ip).or_insert(0);
        if *open >= self.limit {
            return false;
        }
        *open += 1;
        true
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let Some(open) = self.open.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_slots_are_given_back() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut limits = PerAddress::new(2);
        assert!(limits.admit(ip) && limits.admit(ip));
        assert!(!limits.admit(ip));
        assert!(limits.admit("192.0.2.2".parse().unwrap()));
        limits.release(ip);
        assert!(limits.admit(ip));
    }

    #[test]
    fn a_kind_logs_again_only_after_a_minute() {
        let start = Instant::now();
        let mut rejections = Rejections::default();
        rejections.count(Rejection::PerAddress, None, start);
        rejections.count(Rejection::PerAddress, None, start);
        let due = rejections.flush(start + Duration::from_secs(1));
        assert_eq!(due, Some(start + LOG_EVERY));
        assert_eq!(rejections.flush(start + LOG_EVERY), None);
        assert_eq!(rejections.counters[Rejection::PerAddress.index()].total, 2);
    }
}
