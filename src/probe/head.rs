//! Reading an HTTP answer's head, bounded: the proxy's answer to CONNECT
//! and the server's answer to the upgrade are read the same way.

use std::io::{self, Read};

use crate::outcome::{Failure, Phase};

/// A larger answer head is refused: a hostile peer gets no more memory.
pub const MAX_HEAD: usize = 64 * 1024;

/// More header lines than this is no WebSocket server or proxy we want to
/// talk to.
pub const MAX_HEADERS: usize = 64;

/// What the start of the bytes read so far holds, short of a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not yet a whole head.
    Incomplete,
    /// An informational answer (a 1xx, such as `103 Early Hints`) of this
    /// many bytes. HTTP clients read past them to the final answer (RFC
    /// 9110, section 15.2), and so does the probe.
    Interim(usize),
    /// The final answer, checked and good, whose head is this many bytes.
    Final(usize),
}

/// Whose answer is read, in the words its failures use.
pub struct Exchange {
    pub phase: Phase,
    /// `the upgrade answer`: what a lost connection was waiting for.
    pub answer: &'static str,
    /// Said when the peer closes before its answer ends.
    pub closed: &'static str,
}

/// Reads until `check` finds a final answer at the start of the bytes
/// read; returns the bytes read past its head. Every byte before the
/// final head's end, informational answers included, counts against
/// `MAX_HEAD`.
pub fn read_answer(
    stream: &mut impl Read,
    exchange: &Exchange,
    mut check: impl FnMut(&[u8]) -> Result<Answer, Failure>,
) -> Result<Vec<u8>, Failure> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut read = 0;
    loop {
        let n = stream.read(&mut chunk).map_err(|e| {
            io_failure(
                exchange.phase,
                e,
                &format!("waiting for {}", exchange.answer),
            )
        })?;
        if n == 0 {
            return Err(Failure::open_failed(exchange.phase, exchange.closed));
        }
        head.extend_from_slice(&chunk[..n]);
        read += n;
        loop {
            match check(&head)? {
                Answer::Incomplete => break,
                Answer::Interim(len) => {
                    head.drain(..len);
                }
                Answer::Final(len) => return Ok(head.split_off(len)),
            }
        }
        if read > MAX_HEAD {
            return Err(Failure::open_failed(
                exchange.phase,
                format!(
                    "{}: its head passes {MAX_HEAD} bytes without ending",
                    exchange.answer
                ),
            ));
        }
    }
}

/// Parses the head at the start of `buf` into `answer`: its length once
/// it is whole, `None` while it is not.
pub fn parse<'b>(
    buf: &'b [u8],
    answer: &mut httparse::Response<'_, 'b>,
    exchange: &Exchange,
) -> Result<Option<usize>, Failure> {
    let failed = |detail: String| Failure::open_failed(exchange.phase, detail);
    match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(failed(format!(
            "{} has more than {MAX_HEADERS} headers",
            exchange.answer
        ))),
        Err(e) => Err(failed(format!("{} is not HTTP: {e}", exchange.answer))),
    }
}

/// A read or write that failed in `phase`: the deadline's end is the
/// phase's timeout, anything else a lost connection.
pub fn io_failure(phase: Phase, error: io::Error, doing: &str) -> Failure {
    if error.kind() == io::ErrorKind::TimedOut {
        Failure::handshake_timeout(phase)
    } else {
        Failure::open_failed(phase, format!("connection lost {doing}: {error}"))
    }
}

/// The reason phrase of an answer as a record may quote it: printable,
/// at most 64 characters.
pub fn reason_phrase(reason: Option<&str>) -> String {
    reason
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}
