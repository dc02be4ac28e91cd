//! One client connection of the reflector: its socket (plain or TLS), its
//! state (handshake, open, draining) and its bounded buffers.
//!
//! Memory per connection is capped: the request head at `MAX_HEAD` plus one
//! read; the message being reassembled at `--max-message-bytes`; the output
//! at one read's echoes plus one message, because nothing more is read
//! while output waits for a slow reader (backpressure onto TCP).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::time::{Duration, Instant};

use memchr::memmem;
use mio::net::TcpStream;

use super::frame::{self, Decoder, Event};
use super::handshake::{self, Answer, Policy};
use super::limits::Rejection;
use super::tls::{self, Session};

/// The whole opening (TLS and upgrade) must be done within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// After its Close (or a refusal) the server reads and drops what the
/// client still sends, so that the kernel does not answer it with a reset
/// that could destroy the Close in flight; then it lets go.
const LINGER: Duration = Duration::from_secs(1);

/// Reads handled per readiness event before other connections get a turn.
const READS_PER_TURN: usize = 16;

/// An output buffer emptied is given back when it grew past this.
const KEEP_OUT_CAPACITY: usize = 4096;

/// Fixed for every connection of one run.
pub struct Settings {
    pub policy: Policy,
    pub max_message: usize,
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    /// Our last bytes (a Close or an HTTP answer) queued; reading to drop.
    Draining,
}

/// What the event loop does with the connection after a turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next readiness event or deadline.
    Wait,
    /// More to read: turn again before polling (fairness budget used up).
    Again,
    /// Closed: drop it.
    Gone,
}

pub struct Conn {
    stream: TcpStream,
    tls: Option<Session>,
    pub peer: IpAddr,
    state: State,
    head: Vec<u8>,
    decoder: Option<Decoder>,
    out: Vec<u8>,
    /// close_notify queued (TLS) and the write side shut, in that order.
    notified: bool,
    shut: bool,
    /// When the current state times out (handshake, idle or linger).
    pub deadline: Instant,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: IpAddr,
        tls: Option<&tls::Config>,
        now: Instant,
    ) -> Option<Self> {
        let tls = match tls {
            Some(config) => Some(Session::new(config).ok()?),
            None => None,
        };
        Some(Conn {
            stream,
            tls,
            peer,
            state: State::Handshake,
            head: Vec::new(),
            decoder: None,
            out: Vec::new(),
            notified: false,
            shut: false,
            deadline: now + HANDSHAKE_TIMEOUT,
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads, answers and writes until the socket would block, the
    /// connection ends, or its turn is over. A rejection made on the way is
    /// returned for counting.
    pub fn drive(
        &mut self,
        scratch: &mut [u8],
        settings: &Settings,
        now: Instant,
    ) -> (Next, Option<Rejection>) {
        let mut rejected = None;
        for _ in 0..READS_PER_TURN {
            match self.settle() {
                Ok(true) => {}
                Ok(false) => return (Next::Wait, rejected),
                Err(_) => return (Next::Gone, rejected),
            }
            match self.read(scratch) {
                Ok(0) => return (Next::Gone, rejected),
                Ok(n) => {
                    if let Some(kind) = self.on_bytes(&scratch[..n], settings, now) {
                        rejected = Some(kind);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let next = match self.settle() {
                        Ok(_) => Next::Wait,
                        Err(_) => Next::Gone,
                    };
                    return (next, rejected);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let tls_failed = self.state == State::Handshake
                        && e.kind() == io::ErrorKind::InvalidData
                        && self.tls.is_some();
                    return (
                        Next::Gone,
                        rejected.or(tls_failed.then_some(Rejection::Tls)),
                    );
                }
            }
        }
        (Next::Again, rejected)
    }

    /// The deadline passed: a handshake too slow, a silence too long, or
    /// the linger over.
    pub fn expire(&mut self, now: Instant) -> (Next, Option<Rejection>) {
        match self.state {
            State::Handshake => (Next::Gone, Some(Rejection::HandshakeTimeout)),
            State::Open => {
                self.fail(frame::NORMAL, "idle timeout", now);
                (Next::Again, Some(Rejection::IdleTimeout))
            }
            State::Draining => (Next::Gone, None),
        }
    }

    /// The server stops: Close 1001 to an open connection; a handshake in
    /// progress is just dropped.
    pub fn going_away(&mut self, now: Instant) -> Next {
        match self.state {
            State::Handshake => Next::Gone,
            State::Open => {
                self.fail(frame::GOING_AWAY, "server shutting down", now);
                Next::Again
            }
            State::Draining => Next::Wait,
        }
    }

    fn on_bytes(&mut self, data: &[u8], settings: &Settings, now: Instant) -> Option<Rejection> {
        match self.state {
            State::Handshake => {
                // Parse on the first bytes (garbage is refused at once),
                // then only once the head can have ended or is full: a
                // head trickled a byte at a time is not parsed again for
                // every byte.
                let seen = self.head.len();
                self.head.extend_from_slice(data);
                let window = &self.head[seen.saturating_sub(3)..];
                let may_have_ended = memmem::find(window, b"\n\r\n").is_some()
                    || memmem::find(window, b"\n\n").is_some();
                if seen > 0 && !may_have_ended && self.head.len() < handshake::MAX_HEAD {
                    return None;
                }
                match handshake::answer(&self.head, &settings.policy) {
                    Answer::Incomplete => None,
                    Answer::Refuse { response, kind } => {
                        self.out.extend_from_slice(response.as_bytes());
                        self.drain(now);
                        kind
                    }
                    Answer::Upgrade { response, used } => {
                        self.out.extend_from_slice(response.as_bytes());
                        self.state = State::Open;
                        self.deadline = now + settings.idle;
                        self.decoder = Some(Decoder::new(settings.max_message));
                        let head = std::mem::take(&mut self.head);
                        self.on_frames(&head[used..], now)
                    }
                }
            }
            State::Open => {
                self.deadline = now + settings.idle;
                self.on_frames(data, now)
            }
            State::Draining => None,
        }
    }

    fn on_frames(&mut self, mut input: &[u8], now: Instant) -> Option<Rejection> {
        let mut decoder = self.decoder.take()?;
        let mut rejected = None;
        while self.state == State::Open {
            match decoder.next(&mut input) {
                Ok(None) => break,
                Ok(Some(Event::Message { opcode, payload })) => {
                    frame::encode(&mut self.out, opcode, &payload);
                }
                Ok(Some(Event::Ping(body))) => {
                    frame::encode(&mut self.out, frame::PONG, body.as_bytes());
                }
                Ok(Some(Event::Pong)) => {}
                Ok(Some(Event::Close(_, body))) => {
                    // RFC 6455 5.5.1: answer with the code it sent.
                    frame::encode(&mut self.out, frame::CLOSE, body.as_bytes());
                    self.drain(now);
                }
                Err(fail) => {
                    self.fail(fail.code, fail.reason, now);
                    rejected = Some(if fail.code == frame::TOO_BIG {
                        Rejection::MessageTooBig
                    } else {
                        Rejection::ProtocolError
                    });
                }
            }
        }
        if self.state == State::Open {
            self.decoder = Some(decoder);
        }
        rejected
    }

    fn fail(&mut self, code: u16, reason: &str, now: Instant) {
        frame::encode_close(&mut self.out, code, reason);
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        self.state = State::Draining;
        self.decoder = None;
        self.head = Vec::new();
        self.deadline = now + LINGER;
    }

    /// Plaintext from the client; `WouldBlock` when there is none yet.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.as_mut() {
            Some(tls) => tls.read(&mut self.stream, buf),
            None => self.stream.read(buf),
        }
    }

    /// Writes what is queued; true when all of it is out (and, draining,
    /// the write side shut after it).
    fn settle(&mut self) -> io::Result<bool> {
        if !self.flush()? {
            return Ok(false);
        }
        if self.state == State::Draining && !self.shut {
            if let Some(tls) = self.tls.as_mut().filter(|_| !self.notified) {
                tls.send_close_notify();
                self.notified = true;
                if !self.flush()? {
                    return Ok(false);
                }
            }
            // Best effort: the peer may be gone already.
            let _ = self.stream.shutdown(Shutdown::Write);
            self.shut = true;
        }
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<bool> {
        loop {
            match self.tls.as_mut() {
                None => {
                    if self.out.is_empty() {
                        break;
                    }
                    match self.stream.write(&self.out) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            self.out.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(tls) => {
                    // rustls takes what fits its buffer limit.
                    let taken = match self.out.is_empty() {
                        true => 0,
                        false => tls.write(&self.out)?,
                    };
                    self.out.drain(..taken);
                    if !tls.wants_write() {
                        if self.out.is_empty() {
                            break;
                        }
                        if taken == 0 {
                            return Ok(false);
                        }
                        continue;
                    }
                    match tls.write_tls(&mut self.stream) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = Vec::new();
        }
        Ok(true)
    }
}
