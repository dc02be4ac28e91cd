//! The frame lengths on the way from the socket to tungstenite.
//!
//! tungstenite refuses a frame over `max_message_bytes` from its header, but
//! keeps that header and would buffer the announced length on its next
//! read: nothing after the frame, the server's Close included, could be
//! read any more. The gate reads each frame header before tungstenite does.
//! A frame that would take its message past the limit is refused here,
//! before tungstenite sees a byte of it; its payload, and the rest of its
//! message's fragments, are then dropped as they arrive, never stored.
//! Everything else reaches tungstenite untouched, so the stream after a
//! refused reply can still be read frame by frame.

use std::fmt;
use std::io::{self, Read, Write};

/// Bytes read from the socket at a time, as tungstenite's own read buffer
/// (`ws::READ_BUFFER`).
const CHUNK: usize = 4096;

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A stream that passes frames on to tungstenite and drops those over the
/// limit. Reads hand on whole frame headers only, so a refused frame has
/// given tungstenite none of its bytes.
pub struct Gate<S> {
    inner: S,
    /// Bytes read from `inner` and not yet handed on or dropped, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    max: u64,
    at: At,
    /// Payload bytes so far of the fragmented data message being received.
    message: u64,
    /// The rest of a refused fragmented message is dropped too.
    dropping_message: bool,
}

/// Where in the stream the gate is.
#[derive(Clone, Copy, Debug)]
enum At {
    /// At the start of a frame header.
    Header,
    /// This many bytes of an accepted frame are still to be handed on.
    Pass(u64),
    /// This many bytes of a refused frame are still to be dropped.
    Drop(u64),
}

/// A message over the limit, refused from its frame header. A read returns
/// it as the `io::Error` source once per refused message.
#[derive(Debug)]
pub struct TooLong {
    /// The announced size: the frame's, or the fragments' so far with it.
    pub size: u64,
    pub max: u64,
}

impl TooLong {
    /// The refusal inside an I/O error, as tungstenite passes it on.
    pub fn of(error: &io::Error) -> Option<&TooLong> {
        error.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a reply of {} bytes exceeds max_message_bytes ({})",
            self.size, self.max
        )
    }
}

impl std::error::Error for TooLong {}

/// A parsed frame header: what the gate needs of it.
struct Header {
    fin: bool,
    opcode: u8,
    payload: u64,
    /// The header's own length in bytes.
    len: usize,
}

impl Header {
    /// The header at the start of `bytes`, or `None` if it is not all there.
    fn parse(bytes: &[u8]) -> Option<Header> {
        let (&first, &second) = (bytes.first()?, bytes.get(1)?);
        let (payload, at) = match second & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
            short => (u64::from(short), 2),
        };
        let len = at + if second & 0x80 != 0 { 4 } else { 0 };
        (bytes.len() >= len).then_some(Header {
            fin: first & 0x80 != 0,
            opcode: first & 0x0f,
            payload,
            len,
        })
    }
}

impl<S> Gate<S> {
    /// A gate over `inner` with `tail`, bytes already read past the upgrade
    /// answer, in front of it; messages over `max` bytes are refused.
    pub fn new(inner: S, tail: Vec<u8>, max: usize) -> Self {
        Gate {
            inner,
            buf: tail,
            pos: 0,
            max: max as u64,
            at: At::Header,
            message: 0,
            dropping_message: false,
        }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The stream under the gate; what it had read and not handed on is lost.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Decides on the frame whose header was just read. `Err` refuses it.
    fn judge(&mut self, header: &Header) -> Result<(), TooLong> {
        let whole = (header.len as u64).saturating_add(header.payload);
        let control = header.opcode & 0x08 != 0;
        if !control && header.opcode == 0 && self.dropping_message {
            self.dropping_message = !header.fin;
            self.at = At::Drop(whole);
            return Ok(());
        }
        let size = if control {
            header.payload
        } else if header.opcode == 0 {
            self.message.saturating_add(header.payload)
        } else {
            header.payload
        };
        if size > self.max {
            self.at = At::Drop(whole);
            if !control {
                self.dropping_message = !header.fin;
                self.message = 0;
            }
            return Err(TooLong {
                size,
                max: self.max,
            });
        }
        if !control {
            self.message = if header.fin { 0 } else { size };
        }
        self.at = At::Pass(whole);
        Ok(())
    }
}

impl<S: Read> Gate<S> {
    /// Reads more from `inner` behind what is left. `false` at its end.
    fn fill(&mut self) -> io::Result<bool> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let kept = self.buf.len();
        self.buf.resize(kept + CHUNK, 0);
        let read = self.inner.read(&mut self.buf[kept..]);
        self.buf.truncate(kept + *read.as_ref().unwrap_or(&0));
        Ok(read? > 0)
    }
}

impl<S: Read> Read for Gate<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.at {
                At::Header => match Header::parse(self.available()) {
                    Some(header) => {
                        if let Err(refused) = self.judge(&header) {
                            return Err(io::Error::other(refused));
                        }
                    }
                    None => {
                        debug_assert!(self.available().len() < MAX_HEADER);
                        if !self.fill()? {
                            // The stream ends inside a header: tungstenite
                            // gets what there is and reports the cut.
                            match self.available().len() {
                                0 => return Ok(0),
                                left => self.at = At::Pass(left as u64),
                            }
                        }
                    }
                },
                At::Pass(left) => {
                    if self.available().is_empty() && !self.fill()? {
                        return Ok(0);
                    }
                    let n = self.available().len().min(out.len());
                    let n = usize::try_from(left).map_or(n, |left| left.min(n));
                    out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                    self.pos += n;
                    self.at = advance(left, n, At::Pass);
                    return Ok(n);
                }
                At::Drop(left) => {
                    if self.available().is_empty() && !self.fill()? {
                        return Ok(0);
                    }
                    let n = self.available().len();
                    let n = usize::try_from(left).map_or(n, |left| left.min(n));
                    self.pos += n;
                    self.at = advance(left, n, At::Drop);
                }
            }
        }
    }
}

/// What follows `n` more bytes of a frame that had `left` to go.
fn advance(left: u64, n: usize, within: fn(u64) -> At) -> At {
    match left - n as u64 {
        0 => At::Header,
        rest => within(rest),
    }
}

impl<S: Write> Write for Gate<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend(payload);
        out
    }

    /// Reads the gate to its end, one byte at a time at most `step`.
    fn drain(gate: &mut Gate<&[u8]>, step: usize) -> (Vec<u8>, Vec<u64>) {
        let (mut out, mut refused) = (Vec::new(), Vec::new());
        let mut buf = vec![0u8; step];
        loop {
            match gate.read(&mut buf) {
                Ok(0) => return (out, refused),
                Ok(n) => out.extend(&buf[..n]),
                Err(e) => refused.push(TooLong::of(&e).map(|t| t.size).unwrap_or(u64::MAX)),
            }
        }
    }

    #[test]
    fn frames_within_the_limit_pass_untouched_in_any_read_size() {
        let mut bytes = frame(true, 0x1, &[b'a'; 1024]);
        bytes.extend(frame(true, 0x9, b"ping"));
        bytes.extend(frame(false, 0x2, &[1; 600]));
        bytes.extend(frame(true, 0x0, &[2; 424]));
        for step in [1, 7, 4096] {
            let mut gate = Gate::new(&bytes[5..], bytes[..5].to_vec(), 1024);
            assert_eq!(drain(&mut gate, step), (bytes.clone(), vec![]));
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_and_dropped_and_what_follows_passes() {
        let close = frame(true, 0x8, &[0x03, 0xe8]);
        let mut bytes = frame(true, 0x1, &[b'x'; 1025]);
        bytes.extend(&close);
        let mut gate = Gate::new(&bytes[..], Vec::new(), 1024);
        assert_eq!(drain(&mut gate, 64), (close, vec![1025]));
    }

    #[test]
    fn the_rest_of_an_oversized_fragmented_message_is_dropped() {
        let ping = frame(true, 0x9, b"p");
        let mut bytes = frame(false, 0x1, &[1; 600]);
        bytes.extend(frame(false, 0x0, &[2; 600]));
        bytes.extend(&ping);
        bytes.extend(frame(true, 0x0, &[3; 10]));
        let text = frame(true, 0x1, b"ok");
        bytes.extend(&text);
        let mut gate = Gate::new(&bytes[..], Vec::new(), 1024);
        let (out, refused) = drain(&mut gate, 4096);
        assert_eq!(refused, vec![1200]);
        let mut expected = frame(false, 0x1, &[1; 600]);
        expected.extend(ping);
        expected.extend(text);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_header_cut_by_the_end_of_the_stream_is_handed_on() {
        let bytes = [0x81, 126, 0x01];
        let mut gate = Gate::new(&bytes[..], Vec::new(), 1024);
        assert_eq!(drain(&mut gate, 16), (bytes.to_vec(), vec![]));
    }
}
