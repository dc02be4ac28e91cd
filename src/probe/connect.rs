//! TCP connect to the resolved addresses in turn, within the deadline.

use std::io;
use std::net::{SocketAddr, TcpStream};

use super::deadline::Deadline;
use crate::outcome::{Failure, Meta, Phase};

/// Connects to the first address that answers, with `TCP_NODELAY` set.
///
/// Nagle's algorithm would otherwise hold the upgrade request behind the TLS
/// handshake's last flight and add a round trip to every `wss://` open.
pub fn connect(
    addrs: &[SocketAddr],
    deadline: &Deadline,
    meta: &mut Meta,
) -> Result<TcpStream, Failure> {
    let mut last_error: Option<(SocketAddr, io::Error)> = None;
    let mut attempts = 0;
    for &addr in addrs {
        let Some(left) = deadline.remaining() else {
            break;
        };
        attempts += 1;
        meta.connect_attempts = Some(attempts);
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => {
                meta.remote_addr = Some(addr.to_string());
                tcp.set_nodelay(true).map_err(|e| {
                    Failure::open_failed(Phase::Connect, format!("TCP_NODELAY: {e}"))
                })?;
                return Ok(tcp);
            }
            Err(e) => last_error = Some((addr, e)),
        }
    }
    match last_error {
        _ if deadline.has_passed() => Err(Failure::handshake_timeout(Phase::Connect)),
        Some((addr, e)) if e.kind() == io::ErrorKind::TimedOut => {
            meta.remote_addr = Some(addr.to_string());
            Err(Failure::handshake_timeout(Phase::Connect))
        }
        Some((addr, e)) => {
            meta.remote_addr = Some(addr.to_string());
            Err(Failure::open_failed(
                Phase::Connect,
                format!("connect to {addr}: {e}"),
            ))
        }
        None => Err(Failure::handshake_timeout(Phase::Connect)),
    }
}
