//! One probe run: `run(&ProbeSpec) -> Outcome`, phase by phase.
//!
//! Every phase takes the same `Deadline` (the probe's `timeout_ms`), so the
//! whole run, resolution included, ends by it. The close afterwards has a
//! deadline of its own and is not part of the measured value.

pub mod connect;
pub mod deadline;
pub mod gate;
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
    } = prepared;
    let start = out.started;
    let since = |from: Instant| Instant::now().saturating_duration_since(from);
    let finish = |out: &mut Outcome, result| {
        out.timings.total = Some(since(start));
        result
    };

    let addrs = match spec.target.ip {
        Some(ip) => resolve::literal(ip, spec.target.port),
        None => {
            let addrs = resolve::resolve(&spec.target, deadline);
            out.timings.dns = Some(since(start));
            match addrs {
                Ok(addrs) => addrs,
                Err(failure) => return finish(out, Err(failure)),
            }
        }
    };
    let addrs = connect::usable_addresses(&addrs, &spec.route);
    if addrs.is_empty() {
        let failure = connect::no_usable_address(&spec.target.host, &spec.route);
        return finish(out, Err(failure));
    }

    let mark = Instant::now();
    let tcp = match &mut racer {
        Ok(racer) => connect::connect(racer, &addrs, &spec.route, deadline, &mut out.meta),
        Err(error) => Err(connect::poll_failure(error)),
    };
    out.timings.connect = Some(since(mark));
    let stream = match tcp {
        Ok(tcp) => DeadlineStream::new(tcp, *deadline),
        Err(failure) => return finish(out, Err(failure)),
    };

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
    if spec.tls.is_some() && spec.exchange.is_some() {
        // The wait for the reply can be long and is shallow; the TLS
        // handshake's deep stack pages need not stay resident through it.
        stack::release_unused();
    }

    let (result, ending) = match &spec.exchange {
        None => (Ok(()), ws::Ending::Close(ws::CloseCode::Normal)),
        Some(exchange) => match ws::exchange(&mut socket, exchange, out) {
            // A reply read just after the deadline did not come in time.
            Ok((_, arrived)) if deadline.missed_by(arrived) => {
                let failure = match out.meta.skipped_messages {
                    Some(skipped) if skipped > 0 => ws::mismatch(skipped),
                    _ => ws::no_reply(),
                };
                (Err(failure), ws::Ending::Close(ws::CloseCode::Normal))
            }
            Ok((sent, arrived)) => {
                out.timings.rtt = Some(arrived.saturating_duration_since(sent));
                out.timings.total = Some(arrived.saturating_duration_since(start));
                (Ok(()), ws::Ending::Close(ws::CloseCode::Normal))
            }
            Err((failure, ending)) => (Err(failure), ending),
        },
    };
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
