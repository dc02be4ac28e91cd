//! One probe run: `run(&ProbeSpec) -> Outcome`, phase by phase: dns,
//! connect, proxy (the CONNECT tunnel, with a proxy only), tls (`wss://`
//! only), upgrade. With a proxy, dns and connect are the proxy's; TLS and
//! the upgrade still go to the target, end to end through the tunnel.
//!
//! Every phase takes the same `Deadline` (the probe's `timeout_ms`), so the
//! whole run, resolution included, ends by it. The close afterwards has a
//! deadline of its own and is not part of the measured value.

pub mod connect;
pub mod converse;
pub mod deadline;
pub mod gate;
mod head;
pub mod proxy;
pub mod resolve;
pub mod stack;
pub mod tls;
pub mod upgrade;
pub mod validity;
mod verify;
pub mod wire;
pub mod ws;

use std::io;
use std::time::Instant;

use rustls::ClientConnection;

use self::deadline::{Deadline, DeadlineStream};
use self::ws::Transport;
use crate::outcome::{Failure, Outcome, Phase};
use crate::spec::ProbeSpec;

/// When a run must be over.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The end of the measured part: `timeout_ms` after the run's start,
    /// or, in the agent, after the tick it was scheduled for.
    pub deadline: Instant,
    /// When the close afterwards must be over too (the agent's next tick),
    /// if sooner than its own second.
    pub close_by: Option<Instant>,
}

impl Window {
    /// A one-off run from now: `timeout_ms`, then a full close.
    pub fn from_now(spec: &ProbeSpec) -> Self {
        Window {
            deadline: Instant::now() + spec.timeout,
            close_by: None,
        }
    }
}

/// Runs the probe once. Never panics on anything a server does; a failure
/// is part of the outcome.
pub fn run(spec: &ProbeSpec) -> Outcome {
    run_in(spec, Window::from_now(spec))
}

/// `run` within `window`.
pub fn run_in(spec: &ProbeSpec, window: Window) -> Outcome {
    let prepared = Prepared::new(spec);
    let mut outcome = Outcome::begin();
    let deadline = Deadline::at(window.deadline);
    let ran = run_phases(spec, &deadline, window.close_by, prepared, &mut outcome);
    if let Err(failure) = ran {
        outcome.fail(failure);
    }
    outcome
}

/// What a run makes before its clock starts. None of it depends on what
/// the network says, so its CPU is the probe's, not the path's: made
/// after the connect it would add to every open, made during the SYN's
/// wait to opens on paths shorter than it. A failure to make a part is
/// reported in the phase that needs it, with that phase's timings.
struct Prepared {
    /// The poll the connects race in: a file descriptor, closed once the
    /// upgrade is answered, so a probe waiting for a reply holds one, not
    /// two.
    racer: io::Result<connect::Racer>,
    /// The TLS client with its ClientHello written, key share included.
    tls_client: Option<Result<Box<ClientConnection>, Failure>>,
    /// The upgrade request, with its key and the answer it must get.
    request: Result<upgrade::Request, Failure>,
    /// The CONNECT request, when the run goes through a proxy.
    tunnel: Option<proxy::Request>,
}

impl Prepared {
    fn new(spec: &ProbeSpec) -> Self {
        Prepared {
            racer: connect::Racer::new(),
            tls_client: spec
                .tls
                .as_ref()
                .map(|setup| tls::client(setup, &spec.target.host)),
            request: upgrade::Request::new(spec),
            tunnel: spec
                .proxy
                .as_ref()
                .map(|proxy| proxy::Request::new(&spec.target, proxy)),
        }
    }
}

fn run_phases(
    spec: &ProbeSpec,
    deadline: &Deadline,
    close_by: Option<Instant>,
    prepared: Prepared,
    out: &mut Outcome,
) -> Result<(), Failure> {
    let Prepared {
        mut racer,
        tls_client,
        request,
        tunnel,
    } = prepared;
    let start = out.started;
    let since = |from: Instant| Instant::now().saturating_duration_since(from);
    let finish = |out: &mut Outcome, result| {
        out.timings.total = Some(since(start));
        result
    };

    // The first hop: the proxy when there is one. A failure on the way
    // to it says so, in the dns or connect phase.
    let (host, ip, port) = match &spec.proxy {
        Some(proxy) => (&proxy.host, proxy.ip, proxy.port),
        None => (&spec.target.host, spec.target.ip, spec.target.port),
    };
    let to_first_hop = |mut failure: Failure| {
        if spec.proxy.is_some() {
            failure.error = format!("to the proxy: {}", failure.error);
        }
        failure
    };
    let addrs = match ip {
        Some(ip) => resolve::literal(ip, port),
        None => {
            let addrs = resolve::resolve(host, port, deadline);
            out.timings.dns = Some(since(start));
            match addrs {
                Ok(addrs) => addrs,
                Err(failure) => return finish(out, Err(to_first_hop(failure))),
            }
        }
    };
    let addrs = connect::usable_addresses(&addrs, &spec.route);
    if addrs.is_empty() {
        let failure = connect::no_usable_address(host, &spec.route);
        return finish(out, Err(to_first_hop(failure)));
    }

    let mark = Instant::now();
    let tcp = match &mut racer {
        Ok(racer) => connect::connect(racer, &addrs, &spec.route, deadline, &mut out.meta),
        Err(error) => Err(connect::poll_failure(error)),
    };
    out.timings.connect = Some(since(mark));
    let mut stream = match tcp {
        Ok(tcp) => DeadlineStream::new(tcp, *deadline),
        Err(failure) => return finish(out, Err(to_first_hop(failure))),
    };

    if let Some(tunnel) = &tunnel {
        let mark = Instant::now();
        let opened = proxy::tunnel(tunnel, &mut stream, &mut out.meta);
        out.timings.proxy = Some(since(mark));
        if let Err(failure) = opened {
            return finish(out, Err(failure));
        }
    }

    let transport = match (&spec.tls, spec.target.secure) {
        (None, false) => Transport::Plain(stream),
        // Never plaintext for a wss:// URL, whatever built the spec.
        (None, true) => {
            let failure = Failure::open_failed(
                Phase::Tls,
                "internal error: a wss:// probe without a TLS setup",
            );
            return finish(out, Err(failure));
        }
        (Some(setup), _) => {
            let mark = Instant::now();
            out.meta.tls_verified = Some(!setup.options.insecure_skip_verify);
            let client = tls_client.unwrap_or_else(|| tls::client(setup, &spec.target.host));
            let done = client.and_then(|client| tls::handshake(client, stream));
            out.timings.tls = Some(since(mark));
            match done {
                Ok(tls_stream) => {
                    out.meta.tls_version = tls::version_name(&tls_stream);
                    out.meta.cert_not_after = tls::earliest_not_after(&tls_stream);
                    Transport::Tls(Box::new(tls_stream))
                }
                Err(failure) => return finish(out, Err(failure)),
            }
        }
    };

    let mark = Instant::now();
    let upgraded = match request {
        Ok(request) => upgrade::upgrade(spec, &request, transport, ws::config(spec), &mut out.meta),
        Err(failure) => Err(failure),
    };
    out.timings.upgrade = Some(since(mark));
    drop(racer);
    let mut socket = match upgraded {
        Ok(socket) => socket,
        Err(failure) => return finish(out, Err(failure)),
    };
    // The last read may have returned just after the deadline: too late.
    if deadline.has_passed() {
        out.timings.total = Some(since(start));
        out.meta.close_clean =
            ws::close(socket, ws::Ending::Close(ws::CloseCode::Normal), close_by);
        return Err(Failure::handshake_timeout(Phase::Upgrade));
    }
    out.opened = true;
    out.timings.open = Some(since(start));
    if spec.tls.is_some() && (spec.exchange.is_some() || !spec.prelude.is_empty()) {
        // The wait for the reply can be long and is shallow; the TLS
        // handshake's deep stack pages need not stay resident through it.
        stack::release_unused();
    }

    let talked = converse::converse(&mut socket, spec, deadline, out);
    if let Some(arrived) = talked.last_reply {
        out.timings.total = Some(arrived.saturating_duration_since(start));
    }
    let (result, ending) = (talked.result, talked.ending);
    if out.timings.total.is_none() {
        out.timings.total = Some(since(start));
    }
    out.meta.close_clean = ws::close(socket, ending, close_by);
    result
}

/// `text`, cut at a character boundary to at most `max` bytes: a server's
/// words quoted in a record keep the record a short line.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `run`, with a panic turned into a failed outcome: a bug met by one
/// probe must not take the agent, or the other probes, down.
pub fn run_guarded(spec: &ProbeSpec) -> Outcome {
    run_guarded_in(spec, Window::from_now(spec))
}

/// `run_guarded` within `window`.
pub fn run_guarded_in(spec: &ProbeSpec, window: Window) -> Outcome {
    guarded(|| run_in(spec, window))
}

fn guarded(run: impl FnOnce() -> Outcome) -> Outcome {
    let started = Outcome::begin();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let mut outcome = started;
            outcome.fail(Failure::new(
                crate::outcome::Reason::WsOpenFailed,
                None,
                format!("internal error: the probe panicked: {detail}"),
            ));
            outcome.timings.total = Some(outcome.started.elapsed());
            outcome
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;

    #[test]
    fn a_panicking_run_becomes_an_open_failure_naming_an_internal_error() {
        let outcome = guarded(|| panic!("boom"));
        assert_eq!(outcome.reason, Some(Reason::WsOpenFailed));
        let error = outcome.meta.error.unwrap_or_default();
        assert!(
            error.starts_with("internal error") && error.contains("boom"),
            "{error}"
        );
        assert!(!outcome.opened);
    }
}
