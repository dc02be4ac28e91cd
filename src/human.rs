//! `wsprobe probe --human`: a line per run and a summary, like ping.

use crate::outcome::Outcome;
use crate::record;
use crate::spec::{Interpretation, ProbeSpec};

/// The first line, before any run.
pub fn header(spec: &ProbeSpec) -> String {
    let via = spec
        .proxy
        .as_ref()
        .map(|proxy| format!(", via proxy {}", proxy.display()))
        .unwrap_or_default();
    format!(
        "WSPROBE {} ({}, timeout {} ms{via})",
        spec.display_url,
        spec.interpretation.wire_name(),
        spec.timeout.as_millis()
    )
}

/// One run: its value and health, or its reason and detail.
pub fn line(seq: u64, spec: &ProbeSpec, outcome: &Outcome) -> String {
    let value = record::value(spec, outcome);
    let health = record::health(spec, value);
    let addr = outcome.meta.remote_addr.as_deref().unwrap_or("-");
    // The address is the proxy's: the probe never learns the target's.
    let addr = match spec.proxy {
        Some(_) => format!("proxy {addr}"),
        None => addr.to_owned(),
    };
    let mut line = match (outcome.reason, value) {
        (None, Some(v)) if spec.interpretation == Interpretation::ConnectionSuccess => {
            format!("run {seq}: open ({v}) {health} from {addr}")
        }
        (None, Some(v)) => format!("run {seq}: {v:.3} ms {health} from {addr}"),
        (reason, _) => {
            let reason = reason.map_or("no data", |r| r.wire_name());
            let phase = outcome
                .meta
                .phase
                .map(|p| format!(" in {}", p.wire_name()))
                .unwrap_or_default();
            let detail = outcome.meta.error.as_deref().unwrap_or("");
            format!("run {seq}: {reason}{phase}: {detail}")
        }
    };
    if let Some(open) = outcome.timings.open {
        if spec.interpretation == Interpretation::RoundTripLatency {
            line.push_str(&format!(" (open {:.3} ms)", record::millis(open)));
        }
    }
    if let Some(step) = &outcome.meta.step {
        line.push_str(&format!(" [in {step}]"));
    }
    if let Some(samples) = &outcome.meta.samples {
        line.push_str(&format!(
            "\n  samples: {} sent, {} received",
            samples.sent, samples.received
        ));
        if let Some(s) = &samples.spread {
            let ms = |d| record::millis(d);
            line.push_str(&format!(
                ", median {:.3} ms, min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
                ms(s.median),
                ms(s.min),
                ms(s.mean),
                ms(s.max),
                ms(s.mdev)
            ));
        }
    }
    line
}

/// Collects values across runs for the closing summary.
#[derive(Default)]
pub struct Summary {
    runs: u64,
    failed: u64,
    values: Vec<f64>,
}

impl Summary {
    pub fn add(&mut self, spec: &ProbeSpec, outcome: &Outcome) {
        self.runs += 1;
        if outcome.reason.is_some() {
            self.failed += 1;
        } else if spec.interpretation != Interpretation::ConnectionSuccess {
            if let Some(v) = record::value(spec, outcome) {
                self.values.push(v);
            }
        }
    }

    pub fn render(&self, spec: &ProbeSpec) -> String {
        let ok = self.runs - self.failed;
        let percent = self.failed as f64 * 100.0 / self.runs.max(1) as f64;
        let mut out = format!(
            "--- {} ---\n{} runs, {ok} ok, {} failed ({percent:.0}% failed)",
            spec.display_url, self.runs, self.failed
        );
        if !self.values.is_empty() {
            let n = self.values.len() as f64;
            let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = self
                .values
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let avg = self.values.iter().sum::<f64>() / n;
            let mdev = (self.values.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / n).sqrt();
            out.push_str(&format!(
                "\nmin/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            ));
        }
        out
    }
}
