//! What one probe run found: `Reason`, `Phase`, `Timings`, `Meta`, `Outcome`.
//!
//! Durations stay `Duration` here; `record` turns them into milliseconds.

use std::time::{Duration, Instant, SystemTime};

use crate::exchange::samples::SampleStats;

/// Why a run has no good value. The wire names are the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    WsOpenFailed,
    WsHandshakeTimeout,
    WsReplyTimeout,
    WsClosedEarly,
    WsReplyMismatch,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::WsOpenFailed,
        Reason::WsHandshakeTimeout,
        Reason::WsReplyTimeout,
        Reason::WsClosedEarly,
        Reason::WsReplyMismatch,
    ];

    pub fn wire_name(self) -> &'static str {
        match self {
            Reason::WsOpenFailed => "ws_open_failed",
            Reason::WsHandshakeTimeout => "ws_handshake_timeout",
            Reason::WsReplyTimeout => "ws_reply_timeout",
            Reason::WsClosedEarly => "ws_closed_early",
            Reason::WsReplyMismatch => "ws_reply_mismatch",
        }
    }
}

/// The phases of opening a socket, in order; `meta.phase` names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Dns,
    Connect,
    /// The CONNECT exchange with an HTTP proxy.
    Proxy,
    Tls,
    Upgrade,
}

impl Phase {
    pub fn wire_name(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Proxy => "proxy",
            Phase::Tls => "tls",
            Phase::Upgrade => "upgrade",
        }
    }
}

/// How long each phase took; only phases that ran are set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings {
    pub dns: Option<Duration>,
    pub connect: Option<Duration>,
    /// From writing the CONNECT request to reading the proxy's 2xx.
    pub proxy: Option<Duration>,
    pub tls: Option<Duration>,
    pub upgrade: Option<Duration>,
    /// From the probe's start until the socket was open.
    pub open: Option<Duration>,
    /// The prelude, from its first step to the end of its last.
    pub prelude: Option<Duration>,
    /// From the write of `send_message` to the matching reply (the median
    /// of the samples that got one).
    pub rtt: Option<Duration>,
    /// From the probe's start to the end of the measurement (close excluded).
    pub total: Option<Duration>,
}

/// Everything the record's `meta` may say; `None` keys are left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub remote_addr: Option<String>,
    pub connect_attempts: Option<u32>,
    pub http_status: Option<u16>,
    /// The status of the proxy's answer to CONNECT, when it was no 2xx.
    pub proxy_status: Option<u16>,
    pub location: Option<String>,
    pub tls_version: Option<&'static str>,
    pub tls_verified: Option<bool>,
    pub subprotocol: Option<String>,
    pub skipped_messages: Option<u64>,
    pub last_reply: Option<String>,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    pub close_clean: Option<bool>,
    pub phase: Option<Phase>,
    /// The prelude step a failure happened in (`prelude[2]`).
    pub step: Option<String>,
    /// Present when the probe takes more than one sample.
    pub samples: Option<SampleStats>,
    pub error: Option<String>,
    /// The earliest notAfter (Unix seconds) in the chain the server sent;
    /// for the metrics, not in the record.
    pub cert_not_after: Option<u64>,
}

/// A run that went wrong: the reason, where, and the raw detail.
#[derive(Debug)]
pub struct Failure {
    pub reason: Reason,
    pub phase: Option<Phase>,
    pub error: String,
}

impl Failure {
    pub fn new(reason: Reason, phase: Option<Phase>, error: impl Into<String>) -> Self {
        Failure {
            reason,
            phase,
            error: error.into(),
        }
    }

    pub fn open_failed(phase: Phase, error: impl Into<String>) -> Self {
        Failure::new(Reason::WsOpenFailed, Some(phase), error)
    }

    pub fn handshake_timeout(phase: Phase) -> Self {
        Failure::new(
            Reason::WsHandshakeTimeout,
            Some(phase),
            format!("no answer within the timeout during {}", phase.wire_name()),
        )
    }
}

/// The result of one run, before it becomes a record.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Wall-clock start, for `ts` only; never used for durations.
    pub started_at: SystemTime,
    /// Monotonic start, for durations.
    pub started: Instant,
    /// True once the socket opened (a valid 101 was read).
    pub opened: bool,
    pub reason: Option<Reason>,
    pub timings: Timings,
    pub meta: Meta,
}

impl Outcome {
    pub fn begin() -> Self {
        Outcome {
            started_at: SystemTime::now(),
            started: Instant::now(),
            opened: false,
            reason: None,
            timings: Timings::default(),
            meta: Meta::default(),
        }
    }

    /// Records a failure: the reason, and the phase and detail in `meta`.
    pub fn fail(&mut self, failure: Failure) {
        self.reason = Some(failure.reason);
        self.meta.phase = match failure.reason {
            Reason::WsOpenFailed | Reason::WsHandshakeTimeout => failure.phase,
            _ => None,
        };
        if !failure.error.is_empty() {
            self.meta.error = Some(failure.error);
        }
    }
}
