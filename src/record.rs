//! The wire record: one JSON object per run, health, and the value.
//!
//! These types exist only to be serialised; the logic that fills them reads
//! an `Outcome` and its `ProbeSpec` and nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::clock;
use crate::exchange::samples::SampleStats;
use crate::outcome::{Outcome, Timings};
use crate::spec::{Interpretation, ProbeSpec};

#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub ts: String,
    pub probe: &'a str,
    pub url: &'a str,
    pub interpretation: &'static str,
    pub value: Option<WireValue>,
    pub reason: Option<&'static str>,
    pub health: &'static str,
    pub labels: &'a BTreeMap<String, String>,
    pub meta: WireMeta<'a>,
}

/// Milliseconds for the latencies; a plain 1 or 0 for `connection_success`.
#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WireValue {
    Millis(f64),
    Opened(u8),
}

#[derive(Debug, Serialize)]
pub struct WireMeta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'a str>,
    /// The proxy the run went through, its userinfo `REDACTED@`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_status: Option<u16>,
    pub timings: WireTimings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subprotocol: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_clean: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<WireSamples>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_unsynced: Option<bool>,
}

/// Milliseconds, 3 decimals; only the phases that ran.
#[derive(Debug, Default, Serialize)]
pub struct WireTimings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prelude_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
}

/// `meta.samples`: how many went and came back, and their spread.
#[derive(Debug, Serialize)]
pub struct WireSamples {
    pub sent: u32,
    pub received: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdev_ms: Option<f64>,
}

impl From<&SampleStats> for WireSamples {
    fn from(stats: &SampleStats) -> Self {
        let spread = stats.spread.as_ref();
        WireSamples {
            sent: stats.sent,
            received: stats.received,
            min_ms: spread.map(|s| millis(s.min)),
            max_ms: spread.map(|s| millis(s.max)),
            mean_ms: spread.map(|s| millis(s.mean)),
            mdev_ms: spread.map(|s| millis(s.mdev)),
        }
    }
}

impl From<&Timings> for WireTimings {
    fn from(t: &Timings) -> Self {
        WireTimings {
            dns_ms: t.dns.map(millis),
            connect_ms: t.connect.map(millis),
            proxy_ms: t.proxy.map(millis),
            tls_ms: t.tls.map(millis),
            upgrade_ms: t.upgrade.map(millis),
            open_ms: t.open.map(millis),
            prelude_ms: t.prelude.map(millis),
            rtt_ms: t.rtt.map(millis),
            total_ms: t.total.map(millis),
        }
    }
}

/// Milliseconds with microsecond resolution, as the contract writes them.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The record's `value`: `None` exactly when the run has no data.
pub fn value(spec: &ProbeSpec, outcome: &Outcome) -> Option<f64> {
    match spec.interpretation {
        // With a prelude, the socket is a success only once it completed.
        Interpretation::ConnectionSuccess => Some(if outcome.opened && outcome.reason.is_none() {
            1.0
        } else {
            0.0
        }),
        _ if outcome.reason.is_some() => None,
        Interpretation::HandshakeLatency => outcome.timings.open.map(millis),
        Interpretation::RoundTripLatency => {
            let scope = spec.exchange.as_ref().map(|x| x.scope);
            match scope {
                Some(crate::spec::RoundTripScope::OpenAndMessage) => {
                    outcome.timings.total.map(millis)
                }
                _ => outcome.timings.rtt.map(millis),
            }
        }
    }
}

/// `healthy`, `degraded`, `unhealthy`, or `unknown` without data.
pub fn health(spec: &ProbeSpec, value: Option<f64>) -> &'static str {
    let Some(value) = value else {
        return "unknown";
    };
    match spec.thresholds {
        // connection_success: healthy over 0, unhealthy under 1.
        None if value > 0.0 => "healthy",
        None => "unhealthy",
        Some(t) if value < t.healthy_below => "healthy",
        Some(t) if value > t.unhealthy_above => "unhealthy",
        Some(_) => "degraded",
    }
}

impl<'a> Record<'a> {
    pub fn new(spec: &'a ProbeSpec, outcome: &'a Outcome) -> Self {
        let value = value(spec, outcome);
        let meta = &outcome.meta;
        Record {
            ts: clock::rfc3339_millis(outcome.started_at),
            probe: &spec.name,
            url: &spec.display_url,
            interpretation: spec.interpretation.wire_name(),
            value: value.map(|v| match spec.interpretation {
                Interpretation::ConnectionSuccess => WireValue::Opened(u8::from(v > 0.0)),
                _ => WireValue::Millis(v),
            }),
            reason: outcome.reason.map(|r| r.wire_name()),
            health: health(spec, value),
            labels: &spec.labels,
            meta: WireMeta {
                remote_addr: meta.remote_addr.as_deref(),
                connect_attempts: meta.connect_attempts,
                http_status: meta.http_status,
                location: meta.location.as_deref(),
                proxy: spec.proxy.as_ref().map(|p| p.display()),
                proxy_status: meta.proxy_status,
                timings: WireTimings::from(&outcome.timings),
                tls_version: meta.tls_version,
                tls_verified: meta.tls_verified,
                subprotocol: meta.subprotocol.as_deref(),
                skipped_messages: meta.skipped_messages,
                last_reply: meta.last_reply.as_deref(),
                close_code: meta.close_code,
                close_reason: meta.close_reason.as_deref(),
                close_clean: meta.close_clean,
                phase: meta.phase.map(|p| p.wire_name()),
                step: meta.step.as_deref(),
                samples: meta.samples.as_ref().map(WireSamples::from),
                error: meta.error.as_deref(),
                clock_unsynced: clock::is_unsynced(outcome.started_at).then_some(true),
            },
        }
    }

    /// One line of JSON, newline included, ready for a single write.
    pub fn to_line(&self) -> String {
        // Serialising plain strings, numbers and maps cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"probe\":{:?},\"error\":\"record: {e}\"}}", self.probe)
        });
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_keep_three_decimals() {
        assert_eq!(millis(Duration::from_nanos(12_345_678)), 12.346);
        assert_eq!(millis(Duration::from_micros(42_000)), 42.0);
        assert_eq!(millis(Duration::from_nanos(1_499)), 0.001);
    }
}
