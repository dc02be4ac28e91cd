//! RFC 6455 framing, server side: a streaming decoder for masked client
//! frames and the encoder for the unmasked frames the server sends.
//!
//! The decoder holds at most one frame header (14 bytes), one control
//! payload (125 bytes) and the message being reassembled, which never
//! passes `max_message` bytes: a frame whose announced length would take
//! the message past it fails the connection with 1009 before a byte of its
//! payload is stored.

/// Why the connection fails: the Close code and a short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub code: u16,
    pub reason: &'static str,
}

/// RFC 6455 7.4.1 close codes the reflector sends.
pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const TOO_BIG: u16 = 1009;

const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// RFC 6455 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL: usize = 125;

fn protocol(reason: &'static str) -> Fail {
    Fail {
        code: PROTOCOL_ERROR,
        reason,
    }
}

/// What a complete frame or message means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole data message; text is already checked to be UTF-8.
    Message {
        opcode: u8,
        payload: Vec<u8>,
    },
    Ping(Control),
    Pong,
    /// The peer's Close: its code (if any) and reason, already checked.
    Close(Option<u16>, Control),
}

/// A control frame's payload, kept inline: no allocation per ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    len: u8,
    bytes: [u8; MAX_CONTROL],
}

impl Control {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The frame whose payload is being read.
struct Frame {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    remaining: usize,
    /// Payload bytes already unmasked (the mask index).
    done: usize,
}

pub struct Decoder {
    max_message: usize,
    header: [u8; 14],
    header_len: usize,
    frame: Option<Frame>,
    /// The data message being reassembled: its opcode and bytes so far.
    message: Option<(u8, Vec<u8>)>,
    control: Control,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            header: [0; 14],
            header_len: 0,
            frame: None,
            message: None,
            control: Control {
                len: 0,
                bytes: [0; MAX_CONTROL],
            },
        }
    }

    /// Consumes bytes from the front of `input` until one event is
    /// complete (`Some`) or the input is used up (`None`).
    pub fn next(&mut self, input: &mut &[u8]) -> Result<Option<Event>, Fail> {
        loop {
            if self.frame.is_none() && !self.read_header(input)? {
                return Ok(None);
            }
            // invariant: read_header returned true, so a frame is set.
            let Some(frame) = self.frame.as_mut() else {
                return Ok(None);
            };
            let take = frame.remaining.min(input.len());
            let (chunk, rest) = input.split_at(take);
            *input = rest;
            let start = frame.done;
            let target: &mut [u8] = if frame.opcode & 0x8 != 0 {
                let at = usize::from(self.control.len);
                self.control.len += take as u8; // at most 125 in all
                &mut self.control.bytes[at..at + take]
            } else {
                // invariant: a data frame always has a message (read_header).
                let Some((_, buf)) = self.message.as_mut() else {
                    return Err(protocol("continuation without a message"));
                };
                let at = buf.len();
                buf.extend_from_slice(chunk);
                &mut buf[at..]
            };
            if frame.opcode & 0x8 != 0 {
                target.copy_from_slice(chunk);
            }
            for (i, byte) in target.iter_mut().enumerate() {
                *byte ^= frame.mask[(start + i) % 4];
            }
            frame.done += take;
            frame.remaining -= take;
            if frame.remaining > 0 {
                return Ok(None);
            }
            let (opcode, fin) = (frame.opcode, frame.fin);
            self.frame = None;
            if let Some(event) = self.finish_frame(opcode, fin)? {
                return Ok(Some(event));
            }
        }
    }

    /// Reads header bytes; true once a whole header is in and checked.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<bool, Fail> {
        loop {
            let need = header_len(&self.header[..self.header_len]);
            if self.header_len == need {
                break;
            }
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(false);
            };
            self.header[self.header_len] = byte;
            self.header_len += 1;
            *input = rest;
        }
        let h = &self.header[..self.header_len];
        self.header_len = 0;
        let (fin, rsv, opcode) = (h[0] & 0x80 != 0, h[0] & 0x70, h[0] & 0x0F);
        if rsv != 0 {
            return Err(protocol("reserved bits set without an extension"));
        }
        if h[1] & 0x80 == 0 {
            return Err(protocol("client frames must be masked"));
        }
        let (len, mask_at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut be = [0; 8];
                be.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(protocol("frame length has its top bit set"));
        }
        let mut mask = [0; 4];
        mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        match opcode {
            CLOSE | PING | PONG => {
                if !fin {
                    return Err(protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL as u64 {
                    return Err(protocol("control frame longer than 125 bytes"));
                }
                self.control.len = 0;
            }
            TEXT | BINARY | CONTINUATION => {
                let so_far = match (&self.message, opcode) {
                    (None, CONTINUATION) => return Err(protocol("continuation without a message")),
                    (Some(_), TEXT | BINARY) => {
                        return Err(protocol("new message before the last one ended"))
                    }
                    (Some((_, buf)), _) => buf.len() as u64,
                    (None, _) => 0,
                };
                if so_far.saturating_add(len) > self.max_message as u64 {
                    return Err(Fail {
                        code: TOO_BIG,
                        reason: "message too big",
                    });
                }
                // Room for the whole frame now, growing by doubling but
                // never past max_message: the buffer's capacity is bounded
                // as well as its length. Below max_message, so a usize.
                let need = (so_far + len) as usize;
                let (_, buf) = self.message.get_or_insert_with(|| (opcode, Vec::new()));
                if need > buf.capacity() {
                    let target = need.max((buf.capacity() * 2).min(self.max_message));
                    buf.reserve_exact(target - buf.len());
                }
            }
            _ => return Err(protocol("unknown opcode")),
        }
        self.frame = Some(Frame {
            opcode,
            fin,
            mask,
            remaining: len as usize,
            done: 0,
        });
        Ok(true)
    }

    fn finish_frame(&mut self, opcode: u8, fin: bool) -> Result<Option<Event>, Fail> {
        match opcode {
            PING => Ok(Some(Event::Ping(self.control.clone()))),
            PONG => Ok(Some(Event::Pong)),
            CLOSE => {
                let body = self.control.as_bytes();
                let code = match body {
                    [] => None,
                    [_] => return Err(protocol("close payload of one byte")),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        if !valid_close_code(code) {
                            return Err(protocol("invalid close code"));
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err(Fail {
                                code: INVALID_DATA,
                                reason: "close reason is not UTF-8",
                            });
                        }
                        Some(code)
                    }
                };
                Ok(Some(Event::Close(code, self.control.clone())))
            }
            _ if !fin => Ok(None),
            _ => {
                let Some((opcode, payload)) = self.message.take() else {
                    return Err(protocol("continuation without a message"));
                };
                if opcode == TEXT && std::str::from_utf8(&payload).is_err() {
                    return Err(Fail {
                        code: INVALID_DATA,
                        reason: "text message is not UTF-8",
                    });
                }
                Ok(Some(Event::Message { opcode, payload }))
            }
        }
    }
}

/// How long the header starting with `h` is (2 until its length byte is in).
fn header_len(h: &[u8]) -> usize {
    match h.get(1).map(|b| b & 0x7F) {
        None => 2,
        Some(126) => 8,
        Some(127) => 14,
        Some(_) => 6,
    }
}

/// RFC 6455 7.4 and the IANA registry: codes a peer may send in a Close
/// frame (1012 to 1014 were registered after the RFC).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends one unmasked, final server frame.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a Close frame with a code and a reason (at most 123 bytes).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut body = [0u8; MAX_CONTROL];
    body[..2].copy_from_slice(&code.to_be_bytes());
    let reason = &reason.as_bytes()[..reason.len().min(MAX_CONTROL - 2)];
    body[2..2 + reason.len()].copy_from_slice(reason);
    encode(out, CLOSE, &body[..2 + reason.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn events(max: usize, bytes: &[u8], step: usize) -> Result<Vec<Event>, Fail> {
        let mut decoder = Decoder::new(max);
        let mut found = Vec::new();
        for chunk in bytes.chunks(step) {
            let mut input = chunk;
            while let Some(event) = decoder.next(&mut input)? {
                found.push(event);
            }
            assert!(input.is_empty());
        }
        Ok(found)
    }

    #[test]
    fn fragments_and_interleaved_ping_reassemble_byte_by_byte() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut bytes = client(BINARY, &payload[..7]);
        bytes.extend(client(0x80 | PING, b"p"));
        bytes.extend(client(CONTINUATION, &payload[7..200]));
        bytes.extend(client(0x80 | CONTINUATION, &payload[200..]));
        for step in [1, 5, bytes.len()] {
            let found = events(1000, &bytes, step).unwrap();
            assert!(matches!(&found[0], Event::Ping(c) if c.as_bytes() == b"p"));
            assert_eq!(
                found[1],
                Event::Message {
                    opcode: BINARY,
                    payload: payload.clone()
                }
            );
        }
    }

    #[test]
    fn violations_fail_with_their_codes() {
        let code = |bytes: &[u8]| events(100, bytes, 3).unwrap_err().code;
        let mut unmasked = client(0x80 | TEXT, b"hi");
        unmasked[1] &= 0x7F;
        assert_eq!(code(&unmasked), PROTOCOL_ERROR);
        assert_eq!(code(&client(0x80 | TEXT, &[0xFF, 0xFE])), INVALID_DATA);
        assert_eq!(code(&client(0x80 | 0x3, b"")), PROTOCOL_ERROR);
        assert_eq!(code(&client(0xC0 | TEXT, b"x")), PROTOCOL_ERROR);
        assert_eq!(code(&client(0x80 | CONTINUATION, b"x")), PROTOCOL_ERROR);
        assert_eq!(code(&client(PING, b"x")), PROTOCOL_ERROR);
        assert_eq!(code(&client(0x80 | CLOSE, &[0x03, 0xED])), PROTOCOL_ERROR);
        assert_eq!(code(&client(0x80 | BINARY, &[0; 101])), TOO_BIG);
        // 2^40 announced: refused from the header alone.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(code(&huge), TOO_BIG);
    }

    #[test]
    fn reassembly_capacity_stays_within_the_limit() {
        let mut decoder = Decoder::new(1000);
        for _ in 0..999 {
            let mut input = &client(if decoder.message.is_none() { BINARY } else { 0 }, b"x")[..];
            assert_eq!(decoder.next(&mut input), Ok(None));
            let (_, buf) = decoder.message.as_ref().unwrap();
            assert!(buf.capacity() <= 1000, "{}", buf.capacity());
        }
    }

    #[test]
    fn close_carries_its_code() {
        let found = events(100, &client(0x80 | CLOSE, &[0x03, 0xE8, b'o', b'k']), 1).unwrap();
        assert!(matches!(&found[0], Event::Close(Some(1000), c) if c.as_bytes() == b"\x03\xe8ok"));
        // Registered with IANA since RFC 6455 (service restart, try again
        // later, bad gateway): Node's ws and Python's websockets send them.
        for code in [1012u16, 1013, 1014] {
            let found = events(100, &client(0x80 | CLOSE, &code.to_be_bytes()), 1).unwrap();
            assert!(matches!(&found[0], Event::Close(Some(c), _) if *c == code));
        }
        for code in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let fail = events(100, &client(0x80 | CLOSE, &code.to_be_bytes()), 1).unwrap_err();
            assert_eq!(fail.code, PROTOCOL_ERROR, "{code}");
        }
    }

    #[test]
    fn encoder_picks_the_length_form() {
        for (len, header) in [(125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            encode(&mut out, BINARY, &vec![7; len]);
            assert_eq!(out.len(), header + len, "{len}");
        }
    }
}
