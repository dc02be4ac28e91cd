//! What a run says after the open: the prelude, the measured exchange and
//! its samples, and the presets that fill both in for a known protocol.
//!
//! This layer only says what to send and how to judge a reply; the probe's
//! phases (`probe::converse`) own the socket and the clock.

pub mod message;
pub mod prelude;
pub mod preset;
pub mod samples;

use std::time::Duration;

pub use self::message::Message;
pub use self::prelude::Step;
pub use self::samples::Samples;

/// What a reply must be for a step or a sample to be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Bytes the reply must contain (`${SEQ}` filled in); empty matches any.
    Contains(Vec<u8>),
    /// A preset's judgement of its protocol's reply.
    Reply(preset::Reply),
}

/// A judgement of one incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The awaited reply.
    Match,
    /// Not it (a keepalive, another id): keep waiting.
    Skip,
    /// The server said no; its words go to `meta.error`.
    Refused(String),
}

impl Expect {
    pub fn judge(&self, payload: &[u8], seq: u32) -> Verdict {
        match self {
            Expect::Contains(bytes) => {
                let wanted = message::fill_seq(bytes, seq);
                if memchr::memmem::Finder::new(&wanted).find(payload).is_some() {
                    Verdict::Match
                } else {
                    Verdict::Skip
                }
            }
            Expect::Reply(reply) => reply.judge(payload, seq),
        }
    }
}

/// The round-trip exchange; present exactly on `round_trip_latency` probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub send: Message,
    pub expect: Expect,
    /// Sent, untimed, after each reply (a GraphQL `stop`).
    pub after: Option<Message>,
    pub scope: RoundTripScope,
    pub samples: Samples,
}

/// Where the round-trip value starts counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundTripScope {
    /// From the moment the message was written (the seed's table).
    Message,
    /// From the start of the probe, so the open is included.
    OpenAndMessage,
}

/// The preset's part while the run lasts: keepalives and the goodbye.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub kind: preset::Kind,
    /// Whether the measured exchange ends the protocol's session itself
    /// (STOMP's DISCONNECT with a receipt): then no goodbye follows it.
    pub measured_ends_session: bool,
}

impl Session {
    /// The answer the protocol requires to `payload`, if it is a keepalive.
    pub fn answer(&self, payload: &[u8]) -> Option<Message> {
        self.kind.answer(payload)
    }

    /// The protocol's own goodbye, sent before the Close.
    pub fn goodbye(&self, measured_ran: bool) -> Option<Message> {
        if measured_ran && self.measured_ends_session {
            return None;
        }
        self.kind.goodbye()
    }
}

/// Bounds checked by `config`, here so that the docs and tests share them.
pub const SAMPLES: (u64, u64) = (1, 100);
pub const SAMPLE_TIMEOUT_MS: (u64, u64) = (10, 30_000);
pub const SAMPLE_INTERVAL_MS: (u64, u64) = (0, 30_000);
pub const DEFAULT_SAMPLE_TIMEOUT: Duration = Duration::from_millis(1000);
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
