//! The phase after the open: the prelude, the measured exchange (once or
//! as several samples), and a preset's goodbye. It owns the socket's
//! deadline while it talks; `exchange` says what to send and how to judge.

use std::time::{Duration, Instant};

use tungstenite::WebSocket;

use super::deadline::Deadline;
use super::gate::Gate;
use super::wire::Wire;
use super::ws::{self, CloseCode, Ending};
use crate::exchange::prelude::step_name;
use crate::exchange::samples::{self, SampleStats};
use crate::exchange::{Exchange, Message, Session};
use crate::outcome::{Failure, Outcome, Reason};
use crate::spec::ProbeSpec;

/// What talking after the open came to.
pub struct Talked {
    pub result: Result<(), Failure>,
    pub ending: Ending,
    /// When the last measured reply arrived (the end of the measurement).
    pub last_reply: Option<Instant>,
}

/// Runs the prelude, then the measured exchange if the probe has one, then
/// the preset's goodbye if the session is still in good order.
pub fn converse<S: Wire>(
    ws: &mut WebSocket<Gate<S>>,
    spec: &ProbeSpec,
    deadline: &Deadline,
    out: &mut Outcome,
) -> Talked {
    let session = spec.session.as_ref();
    if let Err((failure, ending)) = prelude(ws, spec, session, deadline, out) {
        return Talked {
            result: Err(failure),
            ending,
            last_reply: None,
        };
    }
    let talked = match &spec.exchange {
        None => Talked {
            result: Ok(()),
            ending: Ending::Close(CloseCode::Normal),
            last_reply: None,
        },
        Some(exchange) => sampled(ws, exchange, session, deadline, out),
    };
    if let (Some(session), Ending::Close(CloseCode::Normal)) = (session, &talked.ending) {
        if let Some(goodbye) = session.goodbye(spec.exchange.is_some()) {
            // Best effort, after the measurement: a failure here changes
            // nothing that was measured, and the Close follows anyway.
            let _ = ws::send(ws, &goodbye, &mut out.meta);
        }
    }
    talked
}

fn answer(session: Option<&Session>) -> impl Fn(&[u8]) -> Option<Message> + '_ {
    move |payload| session.and_then(|s| s.answer(payload))
}

/// The prelude's steps in order; a failure names its step.
fn prelude<S: Wire>(
    ws: &mut WebSocket<Gate<S>>,
    spec: &ProbeSpec,
    session: Option<&Session>,
    deadline: &Deadline,
    out: &mut Outcome,
) -> Result<(), (Failure, Ending)> {
    if spec.prelude.is_empty() {
        return Ok(());
    }
    let mark = Instant::now();
    for (index, step) in spec.prelude.iter().enumerate() {
        let mut ran = Ok(());
        if let Some(message) = &step.send {
            ran = ws::send(ws, message, &mut out.meta).map(drop);
        }
        if let (Ok(()), Some(expect)) = (&ran, &step.expect) {
            ran = match ws::await_reply(ws, |p| expect.judge(p, 0), answer(session), out) {
                Ok(arrived) if deadline.missed_by(arrived) => Err(late(out)),
                Ok(_) => Ok(()),
                Err(failed) => Err(failed),
            };
        }
        if let Err(failed) = ran {
            out.timings.prelude = Some(mark.elapsed());
            out.meta.step = Some(step_name(index));
            return Err(failed);
        }
    }
    out.timings.prelude = Some(mark.elapsed());
    Ok(())
}

/// A reply read just after the deadline did not come in time.
fn late(out: &Outcome) -> (Failure, Ending) {
    let failure = match out.meta.skipped_messages {
        Some(skipped) if skipped > 0 => ws::mismatch(skipped),
        _ => ws::no_reply(),
    };
    (failure, Ending::Close(CloseCode::Normal))
}

/// Sends sample `seq` and awaits its reply; the `after` message follows.
fn sample<S: Wire>(
    ws: &mut WebSocket<Gate<S>>,
    exchange: &Exchange,
    seq: u32,
    session: Option<&Session>,
    deadline: &Deadline,
    out: &mut Outcome,
) -> Result<(Instant, Instant), (Failure, Ending)> {
    let sent = ws::send(ws, &exchange.send.render(seq), &mut out.meta)?;
    let judge = |payload: &[u8]| exchange.expect.judge(payload, seq);
    let arrived = ws::await_reply(ws, judge, answer(session), out)?;
    if deadline.missed_by(arrived) {
        return Err(late(out));
    }
    if let Some(after) = &exchange.after {
        ws::send(ws, &after.render(seq), &mut out.meta)?;
    }
    Ok((sent, arrived))
}

/// `samples.count` exchanges on the socket (usually one), paced by the
/// interval; with more than one, each is given `samples.timeout` for its
/// reply. The value is the median of the replies that came; with none, the
/// reason is the last sample's.
fn sampled<S: Wire>(
    ws: &mut WebSocket<Gate<S>>,
    exchange: &Exchange,
    session: Option<&Session>,
    deadline: &Deadline,
    out: &mut Outcome,
) -> Talked {
    let plan = exchange.samples;
    // On the stack, at the most samples a probe may take: the heap does
    // not grow with the number of samples.
    let mut rtts = [Duration::ZERO; crate::exchange::SAMPLES.1 as usize];
    let mut received = 0usize;
    let mut sent_count = 0;
    let mut last = None;
    let mut last_failure = None;
    let mut ending = Ending::Close(CloseCode::Normal);
    let mut previous_send: Option<Instant> = None;
    for seq in 1..=plan.count {
        if let Some(previous) = previous_send {
            let next = previous + plan.interval;
            if deadline.missed_by(next) {
                break;
            }
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        // The sample's own deadline, within the run's.
        let sample_end = Instant::now() + plan.timeout;
        let own = match deadline.remaining() {
            Some(left) if plan.count > 1 && Instant::now() + left > sample_end => {
                Deadline::at(sample_end)
            }
            _ => *deadline,
        };
        ws.get_mut().get_mut().set_deadline(own);
        sent_count += 1;
        previous_send = Some(Instant::now());
        let taken = sample(ws, exchange, seq, session, &own, out);
        ws.get_mut().get_mut().set_deadline(*deadline);
        match taken {
            Ok((sent, arrived)) => {
                previous_send = Some(sent);
                if let Some(slot) = rtts.get_mut(received) {
                    *slot = arrived.saturating_duration_since(sent);
                    received += 1;
                }
                last = Some(arrived);
            }
            // A sample that timed out, or that the server refused: the
            // socket is still in order, the next sample may go.
            Err((failure, Ending::Close(CloseCode::Normal))) if !deadline.has_passed() => {
                last_failure = Some(failure);
            }
            Err((failure, end)) => {
                last_failure = Some(failure);
                ending = end;
                break;
            }
        }
    }
    let spread = samples::spread(&mut rtts[..received]);
    if plan.count > 1 {
        out.meta.samples = Some(SampleStats {
            sent: sent_count,
            received: received as u32,
            spread,
        });
    }
    let result = match (spread, last_failure) {
        (Some(spread), _) => {
            out.timings.rtt = Some(spread.median);
            // A failed sample's words are not the run's reason.
            Ok(())
        }
        (None, Some(failure)) => Err(failure),
        (None, None) => Err(Failure::new(
            Reason::WsReplyTimeout,
            None,
            "no sample could be sent before the deadline",
        )),
    };
    Talked {
        result,
        ending,
        last_reply: last,
    }
}
