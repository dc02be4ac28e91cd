//! Name resolution bounded by the run's deadline.
//!
//! `getaddrinfo` has no timeout of its own that we control, so it runs on a
//! short-lived helper thread and the probe waits for it only until the
//! deadline. A helper that outlives its run is not abandoned: the probe's
//! next run waits on the same helper instead of starting another, so a
//! resolver that hangs costs one thread per probe, never one per run.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::thread;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::deadline::Deadline;
use crate::outcome::{Failure, Phase};

/// glibc's resolver (with NSS modules) wants more stack than a probe run.
const RESOLVER_STACK: usize = 256 * 1024;

type Answer = io::Result<Vec<SocketAddr>>;

/// A lookup still running from an earlier run of this thread's probe.
struct Pending {
    host: String,
    port: u16,
    answer: Receiver<Answer>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// The addresses of `host` (the target's, or the proxy's) to try, or the
/// failure that ends the run.
pub fn resolve(host: &str, port: u16, deadline: &Deadline) -> Result<Vec<SocketAddr>, Failure> {
    let answer = match take_pending(host, port) {
        Some(answer) => answer,
        None => start_lookup(host, port)?,
    };
    let waited = match deadline.remaining() {
        Some(left) => answer.recv_timeout(left),
        None => Err(RecvTimeoutError::Timeout),
    };
    match waited {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(Failure::open_failed(
            Phase::Dns,
            format!("{host}: no addresses"),
        )),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(Failure::open_failed(
            Phase::Dns,
            format!("cannot resolve {host}: {e}"),
        )),
        Err(RecvTimeoutError::Timeout) => {
            PENDING.with(|pending| {
                *pending.borrow_mut() = Some(Pending {
                    host: host.to_owned(),
                    port,
                    answer,
                })
            });
            Err(Failure::handshake_timeout(Phase::Dns))
        }
        Err(RecvTimeoutError::Disconnected) => Err(Failure::open_failed(
            Phase::Dns,
            format!("resolver for {host} stopped without an answer"),
        )),
    }
}

fn take_pending(host: &str, port: u16) -> Option<Receiver<Answer>> {
    let pending = PENDING.with(|pending| pending.borrow_mut().take())?;
    (pending.host == host && pending.port == port).then_some(pending.answer)
}

fn start_lookup(host: &str, port: u16) -> Result<Receiver<Answer>, Failure> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let host = host.to_owned();
    thread::Builder::new()
        .name("wsprobe-dns".into())
        .stack_size(RESOLVER_STACK)
        .spawn(move || {
            let answer = (host.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>());
            // Nobody may be waiting any more; then the answer is dropped.
            let _ = tx.send(answer);
        })
        .map_err(|e| Failure::open_failed(Phase::Dns, format!("cannot start resolver: {e}")))?;
    Ok(rx)
}

/// The address of an IP-literal host: no resolution needed.
pub fn literal(ip: IpAddr, port: u16) -> Vec<SocketAddr> {
    vec![SocketAddr::new(ip, port)]
}
