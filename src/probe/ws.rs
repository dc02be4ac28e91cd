//! The WebSocket part of a run after the upgrade: send, await the reply, close.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use tungstenite::error::{CapacityError, ProtocolError};
pub use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Error, Message, WebSocket};

use super::clip;
use super::deadline::{Deadline, DeadlineStream};
use super::gate::{Gate, TooLong};
use super::tls::TlsStream;
use super::wire::Wire;
use crate::exchange::Verdict;
use crate::outcome::{Failure, Meta, Outcome, Reason};
use crate::spec::ProbeSpec;

/// How long the server gets to answer our Close, after the measurement.
pub const CLOSE_WAIT: Duration = Duration::from_millis(1000);

/// The least time the close keeps when it must end by the agent's next
/// tick: enough to write our Close frame and close_notify, well inside
/// the tick's grace (`schedule::TICK_GRACE`).
pub const CLOSE_FLOOR: Duration = Duration::from_millis(5);

/// `meta.last_reply` is cut to this many bytes.
const LAST_REPLY_MAX: usize = 256;

/// Read buffer per connection. tungstenite's 128 KiB default, zero-filled
/// for every connection, would dominate the memory of a thousand probes.
const READ_BUFFER: usize = 4096;

/// The byte stream under the WebSocket: plain TCP or TLS, both deadline-bound.
pub enum Transport {
    Plain(DeadlineStream),
    Tls(Box<TlsStream>),
}

impl Transport {
    pub(crate) fn tcp(&mut self) -> &mut DeadlineStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &mut tls.sock,
        }
    }

    /// Writes all of `bytes`. Over TLS they are queued behind whatever the
    /// handshake left unsent (TLS 1.3: the client's Finished) and leave
    /// with it in one write, as a browser sends its first request.
    pub fn send_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let tls = match self {
            Transport::Plain(tcp) => return tcp.write_all(bytes),
            Transport::Tls(tls) => tls,
        };
        while !bytes.is_empty() {
            // Takes what rustls's send buffer has room for.
            let taken = tls.conn.writer().write(bytes)?;
            if taken == 0 && !tls.conn.wants_write() {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[taken..];
            while tls.conn.wants_write() {
                tls.conn.write_tls(&mut tls.sock)?;
            }
        }
        Ok(())
    }

    /// TLS close_notify (best effort), then the TCP shutdown.
    pub(super) fn shutdown(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.conn.send_close_notify();
            while tls.conn.wants_write() {
                if tls.conn.write_tls(&mut tls.sock).is_err() {
                    break;
                }
            }
        }
        self.tcp().shutdown();
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

/// The framing limits for this probe: a reply over `max_message_bytes` is
/// refused from its frame header, before anything is allocated for it.
pub fn config(spec: &ProbeSpec) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(spec.max_message_bytes))
        .max_frame_size(Some(spec.max_message_bytes))
}

/// How the exchange ended, for the close that follows.
pub enum Ending {
    /// We start the close handshake with this code.
    Close(CloseCode),
    /// The server sent its Close; ours goes out as the reply.
    ServerClosed,
    /// The server broke the protocol: our Close goes out, but nothing more
    /// is parsed. tungstenite keeps the bad frame and would try to read it
    /// again, so only raw bytes are drained after this. (An oversized
    /// reply is no such case: the `Gate` refused it before tungstenite saw
    /// it, and drops it while the close reads on.)
    Abort(CloseCode),
    /// The TCP connection is gone; nothing to say on it.
    Gone,
    /// A frame is half written and the server reads nothing: no Close can
    /// follow it. The connection is dropped; not a clean close.
    Stuck,
}

/// Sends `message` as a text or binary frame; returns when it was written.
pub fn send<S: Read + Write>(
    ws: &mut WebSocket<S>,
    message: &crate::exchange::Message,
    meta: &mut Meta,
) -> Result<Instant, (Failure, Ending)> {
    let frame = match message {
        crate::exchange::Message::Text(text) => Message::text(text.as_str()),
        crate::exchange::Message::Binary(bytes) => Message::binary(bytes.clone()),
    };
    match ws.send(frame) {
        // The contract's moment: the message has been written. The reply
        // is stamped after its read, so it cannot come out earlier.
        Ok(()) => Ok(Instant::now()),
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
            let failure = Failure::new(
                Reason::WsReplyTimeout,
                None,
                "the message could not be written within the timeout: the server is not \
                 reading it (or not fast enough)",
            );
            Err((failure, Ending::Stuck))
        }
        Err(e) => Err(read_failure(e, 0, meta)),
    }
}

/// Waits for the first message `judge` accepts. Keepalives that `answer`
/// knows are answered; every other message is skipped (counted in
/// `meta.skipped_messages`, shown in `meta.last_reply`).
///
/// Returns the instant the accepted reply arrived.
pub fn await_reply<S: Read + Write>(
    ws: &mut WebSocket<S>,
    judge: impl Fn(&[u8]) -> Verdict,
    answer: impl Fn(&[u8]) -> Option<crate::exchange::Message>,
    outcome: &mut Outcome,
) -> Result<Instant, (Failure, Ending)> {
    // Skipped while awaiting this reply: a timeout after some says mismatch.
    let mut skipped = 0u64;
    let mut total_skipped = *outcome.meta.skipped_messages.get_or_insert(0);
    loop {
        let message = match ws.read() {
            Ok(message) => message,
            Err(e) => return Err(read_failure(e, skipped, &mut outcome.meta)),
        };
        let arrived = Instant::now();
        let payload: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            Message::Ping(_) => {
                // The queued Pong only leaves on the next write or flush.
                if let Err(e) = ws.flush() {
                    return Err(read_failure(e, skipped, &mut outcome.meta));
                }
                continue;
            }
            Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(frame) => {
                let mut detail = "the server closed the connection before the reply";
                let (code, reason) = match frame {
                    // tungstenite puts this in place of a code RFC 6455
                    // section 7.4 does not allow (999, 1005 on the wire...):
                    // the reason is its own words, not the server's.
                    Some(frame) if is_substituted(frame) => {
                        detail = "the server closed the connection before the reply, with \
                                  an invalid close code (RFC 6455 section 7.4; reported \
                                  as 1002) or with 1002 \"Protocol violation\"";
                        (1002, None)
                    }
                    Some(frame) => (u16::from(frame.code), Some(frame.reason.to_string())),
                    None => (1005, None),
                };
                outcome.meta.close_code = Some(code);
                outcome.meta.close_reason = reason.filter(|r| !r.is_empty());
                let failure = Failure::new(Reason::WsClosedEarly, None, detail);
                return Err((failure, Ending::ServerClosed));
            }
        };
        match judge(payload) {
            Verdict::Match => return Ok(arrived),
            Verdict::Refused(error) => {
                outcome.meta.last_reply = Some(show_reply(&message));
                let failure = Failure::new(Reason::WsReplyMismatch, None, error);
                return Err((failure, Ending::Close(CloseCode::Normal)));
            }
            Verdict::Skip => {}
        }
        if let Some(reply) = answer(payload) {
            send(ws, &reply, &mut outcome.meta)?;
            continue;
        }
        skipped += 1;
        total_skipped += 1;
        outcome.meta.skipped_messages = Some(total_skipped);
        outcome.meta.last_reply = Some(show_reply(&message));
    }
}

/// The deadline passed after `skipped` replies, none of them a match.
pub fn mismatch(skipped: u64) -> Failure {
    Failure::new(
        Reason::WsReplyMismatch,
        None,
        format!("{skipped} replies arrived, none matched expect_message"),
    )
}

/// The deadline passed without any reply.
pub fn no_reply() -> Failure {
    Failure::new(Reason::WsReplyTimeout, None, "no reply within the timeout")
}

/// Maps a read or write error during the exchange to the contract's reason.
fn read_failure(error: Error, skipped: u64, meta: &mut Meta) -> (Failure, Ending) {
    let gone = |meta: &mut Meta, detail: String| {
        meta.close_code = Some(1006);
        (
            Failure::new(Reason::WsClosedEarly, None, detail),
            Ending::Gone,
        )
    };
    match error {
        Error::Io(e) if TooLong::of(&e).is_some() => {
            // A reply that was not read did not match either (the count
            // runs over the whole run: prelude steps and samples too).
            meta.skipped_messages = Some(meta.skipped_messages.unwrap_or(0) + 1);
            let detail = TooLong::of(&e).map(|t| format!("{t}; not read"));
            (
                Failure::new(Reason::WsReplyMismatch, None, detail.unwrap_or_default()),
                Ending::Close(CloseCode::Size),
            )
        }
        Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            let failure = if skipped > 0 {
                mismatch(skipped)
            } else {
                no_reply()
            };
            (failure, Ending::Close(CloseCode::Normal))
        }
        Error::Io(e) => gone(meta, format!("connection lost: {e}")),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | Error::ConnectionClosed
        | Error::AlreadyClosed => gone(
            meta,
            "the server ended the TCP connection without a Close frame".to_owned(),
        ),
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            meta.skipped_messages = Some(meta.skipped_messages.unwrap_or(0) + 1);
            (
                Failure::new(
                    Reason::WsReplyMismatch,
                    None,
                    format!(
                        "a reply of {size} bytes exceeds max_message_bytes ({max_size}); not read"
                    ),
                ),
                Ending::Abort(CloseCode::Size),
            )
        }
        Error::Utf8(_) => (
            Failure::new(
                Reason::WsReplyMismatch,
                None,
                "a text message, or the reason in a close frame, is not valid UTF-8",
            ),
            Ending::Abort(CloseCode::Invalid),
        ),
        other => (
            Failure::new(
                Reason::WsReplyMismatch,
                None,
                format!("invalid reply: {other}"),
            ),
            Ending::Abort(CloseCode::Protocol),
        ),
    }
}

/// Closes the connection and says whether the server's Close arrived in time.
///
/// The close has its own deadline after the measured interval, so it never
/// changes the value. After the Close handshake the server is given the rest
/// of that time to end TCP first (RFC 6455 section 7.1.1), which keeps the
/// TIME_WAIT state on its side rather than on the router's. `close_by`, if
/// given, cuts that second short: the agent's next run does not wait. It
/// never leaves less than `CLOSE_FLOOR`, so our Close frame and TLS
/// close_notify still go out. The rest of a reply the gate refused is
/// dropped on the way to the server's Close, within the same time.
pub fn close<S: Wire>(
    mut ws: WebSocket<Gate<S>>,
    ending: Ending,
    close_by: Option<Instant>,
) -> Option<bool> {
    let now = Instant::now();
    let end = now + CLOSE_WAIT;
    let end = close_by.map_or(end, |by| by.clamp(now + CLOSE_FLOOR, end));
    let deadline = Deadline::at(end);
    ws.get_mut().get_mut().set_deadline(deadline);
    let clean = match ending {
        Ending::Gone => None,
        Ending::Stuck => {
            // Not even a TLS close_notify: it would queue behind the frame.
            // A reset, not a FIN, so the kernel drops the unsent bytes now
            // rather than keep them for a peer that reads nothing.
            ws.get_mut().get_mut().reset();
            return Some(false);
        }
        Ending::ServerClosed => {
            let _ = ws.flush();
            Some(true)
        }
        Ending::Close(code) => {
            let frame = CloseFrame {
                code,
                reason: "".into(),
            };
            Some(ws.close(Some(frame)).is_ok() && await_close(&mut ws))
        }
        Ending::Abort(code) => {
            let frame = CloseFrame {
                code,
                reason: "".into(),
            };
            let _ = ws.close(Some(frame));
            // The server's Close cannot be told apart from the rest of the
            // stream any more: drain it raw, and do not call it clean.
            Some(false)
        }
    };
    let mut transport = ws.into_inner().into_inner();
    if clean.is_some() {
        await_eof(&mut transport);
    }
    transport.shutdown();
    clean
}

fn await_close<S: Read + Write>(ws: &mut WebSocket<S>) -> bool {
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(Error::ConnectionClosed) => return true,
            Ok(_) => continue,
            // Another oversized message: the gate drops it too.
            Err(Error::Io(e)) if TooLong::of(&e).is_some() => continue,
            Err(_) => return false,
        }
    }
}

/// Reads (and drops) until the server ends the connection or time is up.
fn await_eof(transport: &mut impl Read) {
    let mut scratch = [0u8; 512];
    let mut budget = 64 * 1024;
    while budget > 0 {
        match transport.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => budget -= n.min(budget),
        }
    }
}

/// Whether tungstenite replaced the server's Close (see `exchange`).
fn is_substituted(frame: &CloseFrame) -> bool {
    frame.code == CloseCode::Protocol && frame.reason.as_str() == "Protocol violation"
}

/// A reply as `meta.last_reply` shows it: text cut at a character boundary,
/// binary as `hex:` and hex digits, at most `LAST_REPLY_MAX` bytes either way.
fn show_reply(message: &Message) -> String {
    match message {
        Message::Text(text) => clip(text.as_str(), LAST_REPLY_MAX),
        Message::Binary(bytes) => {
            let shown = &bytes[..bytes.len().min((LAST_REPLY_MAX - 4) / 2)];
            let mut out = String::with_capacity(4 + shown.len() * 2);
            out.push_str("hex:");
            for byte in shown {
                out.push_str(&format!("{byte:02x}"));
            }
            out
        }
        _ => String::new(),
    }
}

/// Standard base64 with padding: the handshake key, its accept value and
/// HTTP Basic credentials from the URL.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn a_substituted_close_is_told_from_a_real_one() {
        let substituted = CloseFrame {
            code: CloseCode::Protocol,
            reason: "Protocol violation".into(),
        };
        assert!(is_substituted(&substituted));
        let real = CloseFrame {
            code: CloseCode::Protocol,
            reason: "bad frame".into(),
        };
        assert!(!is_substituted(&real));
    }

    #[test]
    fn last_reply_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let shown = show_reply(&Message::text(long));
        assert!(shown.len() <= LAST_REPLY_MAX);
        assert_eq!(shown.len(), 256);
        let binary = show_reply(&Message::binary(vec![0xabu8; 1000]));
        assert!(binary.starts_with("hex:abab"));
        assert!(binary.len() <= LAST_REPLY_MAX);
    }
}
