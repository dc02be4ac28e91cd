//! Name resolution bounded by the run's deadline.
//!
//! `getaddrinfo` has no timeout of its own that we control, so it runs on a
//! short-lived helper thread and the probe waits for it only until the
//! deadline. A helper that outlives its run finishes on its own when the
//! system resolver gives up, and its answer is dropped.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::thread;

use crossbeam_channel::RecvTimeoutError;

use super::deadline::Deadline;
use crate::outcome::{Failure, Phase};
use crate::spec::Target;

/// glibc's resolver (with NSS modules) wants more stack than a probe run.
const RESOLVER_STACK: usize = 256 * 1024;

/// The addresses to try, or the failure that ends the run.
pub fn resolve(target: &Target, deadline: &Deadline) -> Result<Vec<SocketAddr>, Failure> {
    let host = target.host.clone();
    let port = target.port;
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::Builder::new()
        .name("wsprobe-dns".into())
        .stack_size(RESOLVER_STACK)
        .spawn(move || {
            let answer = (host.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>());
            // The run may have given up waiting; then nobody listens.
            let _ = tx.send(answer);
        })
        .map_err(|e| Failure::open_failed(Phase::Dns, format!("cannot start resolver: {e}")))?;

    let waited = match deadline.remaining() {
        Some(left) => rx.recv_timeout(left),
        None => Err(RecvTimeoutError::Timeout),
    };
    match waited {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(Failure::open_failed(
            Phase::Dns,
            format!("{}: no addresses", target.host),
        )),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(Failure::open_failed(
            Phase::Dns,
            format!("cannot resolve {}: {e}", target.host),
        )),
        Err(RecvTimeoutError::Timeout) => Err(Failure::handshake_timeout(Phase::Dns)),
        Err(RecvTimeoutError::Disconnected) => Err(Failure::open_failed(
            Phase::Dns,
            format!("resolver for {} stopped without an answer", target.host),
        )),
    }
}

/// The address of an IP-literal host: no resolution needed.
pub fn literal(ip: IpAddr, port: u16) -> Vec<SocketAddr> {
    vec![SocketAddr::new(ip, port)]
}
