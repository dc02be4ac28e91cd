//! The Prometheus metrics state: what the last runs found, updated from
//! each outcome, and rendered in the text exposition format (0.0.4).
//!
//! Names follow Prometheus's rules: base unit seconds, `_total` counters,
//! a `# HELP` and `# TYPE` for every family, and no sample timestamps
//! (node_exporter's textfile collector skips a file that has one). Every
//! counter's label set exists from the start at 0, so `rate()` works
//! from the first scrapes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use crate::outcome::{Outcome, Reason, Timings};
use crate::record;
use crate::spec::{Interpretation, ProbeSpec};

use super::ndjson::Drops;

/// Label names the metrics themselves use; a probe's own labels may not
/// take them (nor any name starting `__`, which Prometheus reserves).
pub const RESERVED_LABELS: [&str; 5] = ["probe", "phase", "reason", "health", "le"];

/// Histogram bucket bounds in seconds: 1 ms to 30 s, roughly 1-2.5-5.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `BUCKETS` as the `le` label writes them, then `+Inf`: formatted once.
const BUCKET_LABELS: [&str; 15] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10", "30", "+Inf",
];

/// The `health` label's values, in the record's words.
const HEALTH: [&str; 4] = ["healthy", "degraded", "unhealthy", "unknown"];

/// `reason="none"` for good runs, then every reason code.
const RUN_REASONS: usize = Reason::ALL.len() + 1;

/// The phases of `meta.timings`, named as there without `_ms`.
const PHASES: [&str; 9] = [
    "dns", "connect", "proxy", "tls", "upgrade", "open", "prelude", "rtt", "total",
];

/// A metric family. Its name, type and HELP text live here and nowhere
/// else; `ALL` is the order of the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Success,
    Value,
    Phase,
    Runs,
    TicksSkipped,
    Health,
    Latency,
    LastRun,
    Interval,
    UnhealthyAbove,
    CertNotAfter,
    SamplesSent,
    SamplesReceived,
    Jitter,
    BuildInfo,
    Reloads,
    Dropped,
}

impl Family {
    pub const ALL: [Family; 17] = [
        Family::Success,
        Family::Value,
        Family::Phase,
        Family::Runs,
        Family::TicksSkipped,
        Family::Health,
        Family::Latency,
        Family::LastRun,
        Family::Interval,
        Family::UnhealthyAbove,
        Family::CertNotAfter,
        Family::SamplesSent,
        Family::SamplesReceived,
        Family::Jitter,
        Family::BuildInfo,
        Family::Reloads,
        Family::Dropped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Success => "wsprobe_probe_success",
            Family::Value => "wsprobe_probe_value_seconds",
            Family::Phase => "wsprobe_probe_phase_seconds",
            Family::Runs => "wsprobe_probe_runs_total",
            Family::TicksSkipped => "wsprobe_probe_ticks_skipped_total",
            Family::Health => "wsprobe_probe_health",
            Family::Latency => "wsprobe_probe_latency_seconds",
            Family::LastRun => "wsprobe_probe_last_run_timestamp_seconds",
            Family::Interval => "wsprobe_probe_interval_seconds",
            Family::UnhealthyAbove => "wsprobe_probe_unhealthy_above_seconds",
            Family::CertNotAfter => "wsprobe_probe_tls_cert_not_after_timestamp_seconds",
            Family::SamplesSent => "wsprobe_probe_samples_sent_total",
            Family::SamplesReceived => "wsprobe_probe_samples_received_total",
            Family::Jitter => "wsprobe_probe_jitter_seconds",
            Family::BuildInfo => "wsprobe_build_info",
            Family::Reloads => "wsprobe_config_reloads_total",
            Family::Dropped => "wsprobe_records_dropped_total",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Family::Runs
            | Family::TicksSkipped
            | Family::SamplesSent
            | Family::SamplesReceived
            | Family::Reloads
            | Family::Dropped => "counter",
            Family::Latency => "histogram",
            _ => "gauge",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Family::Success => {
                "1 if the probe's last run had no reason, 0 otherwise."
            }
            Family::Value => {
                "The last run's latency (the record's value), in seconds; absent for connection_success and runs without data."
            }
            Family::Phase => {
                "Duration of each phase of the last run (meta.timings), in seconds."
            }
            Family::Runs => {
                "Runs since the agent started, by reason code (none for a good run)."
            }
            Family::TicksSkipped => {
                "Ticks with no run since the agent started: the probe woke too late for them (the agent was frozen or starved of CPU, or the run before overran)."
            }
            Family::Health => {
                "The last run's health as a state set: 1 for the current state, 0 for the others."
            }
            Family::Latency => {
                "The latency of every run since the agent started (the record's value), in seconds."
            }
            Family::LastRun => {
                "When the last run started (its record's ts), in Unix seconds."
            }
            Family::Interval => {
                "The probe's interval_ms, in seconds."
            }
            Family::UnhealthyAbove => {
                "The probe's thresholds.unhealthy_above, in seconds; latency probes only."
            }
            Family::CertNotAfter => {
                "The earliest notAfter in the chain the server sent on the last wss:// run that reached TLS, in Unix seconds."
            }
            Family::SamplesSent => {
                "Measured exchanges sent since the agent started, for probes that take several samples per run."
            }
            Family::SamplesReceived => {
                "Measured exchanges answered since the agent started, for probes that take several samples per run."
            }
            Family::Jitter => {
                "The mean deviation (mdev, as ping prints it) of the last run's samples, in seconds; absent when no sample was answered."
            }
            Family::BuildInfo => {
                "The wsprobe version, as a label; always 1."
            }
            Family::Reloads => {
                "Configuration reloads (SIGHUP) since the agent started, by result."
            }
            Family::Dropped => {
                "NDJSON records dropped since the agent started: not queued because the output did not keep up, or not written."
            }
        }
    }
}

/// The metrics of every configured probe, and the agent's own.
pub struct Metrics {
    state: Mutex<State>,
    /// Records the NDJSON output dropped; also read by the agent's logs.
    pub drops: Drops,
    /// Every tick and run since the start, for the account at the stop.
    pub tally: Tally,
}

/// Agent-wide counts that, with `drops`, account for every tick: each is
/// a run or a skip, and each run's record is handed to the output (then
/// written or dropped) or cut short by the stop or a reload. Kept apart
/// from the per-probe series, which a reload may start again from zero.
#[derive(Default)]
pub struct Tally {
    runs: AtomicU64,
    skipped: AtomicU64,
    handed_over: AtomicU64,
}

/// A snapshot of `Tally`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub runs: u64,
    pub skipped: u64,
    pub handed_over: u64,
}

impl Tally {
    pub fn run_started(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn handed_over(&self) {
        self.handed_over.fetch_add(1, Ordering::Relaxed);
    }

    pub fn account(&self) -> Account {
        Account {
            runs: self.runs.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            handed_over: self.handed_over.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct State {
    /// In the config's order, which the exposition keeps. Found by name
    /// with a linear search: a few hundred short compares per run cost
    /// less than a map's code costs the router's flash.
    probes: Vec<ProbeMetrics>,
    reloads_ok: u64,
    reloads_error: u64,
}

struct ProbeMetrics {
    name: String,
    /// `probe="NAME",k="v"...`, escaped once.
    labels: String,
    /// Everything of the spec the series depend on; another spec restarts
    /// them from zero.
    interpretation: Interpretation,
    interval: Duration,
    unhealthy_above_ms: Option<f64>,
    /// Indexed by `reason_index`.
    runs: [u64; RUN_REASONS],
    skipped: u64,
    /// Index into `HEALTH`.
    health: usize,
    last: Option<LastRun>,
    histogram: Histogram,
    cert_not_after: Option<u64>,
    /// Set for a probe that takes several samples per run: only those have
    /// the samples' series.
    samples: Option<SampleCounts>,
}

#[derive(Default)]
struct SampleCounts {
    sent: u64,
    received: u64,
    /// The last run's mdev; `None` before a run with an answered sample.
    jitter: Option<Duration>,
}

struct LastRun {
    success: bool,
    value: Option<Duration>,
    phases: [Option<Duration>; PHASES.len()],
    /// Since the epoch, to the millisecond, as the record's `ts`.
    started_unix: Duration,
}

#[derive(Default)]
struct Histogram {
    /// Not cumulative: `counts[i]` runs fell in (BUCKETS[i-1], BUCKETS[i]];
    /// the last slot holds those above the largest bound.
    counts: [u64; BUCKETS.len() + 1],
    sum: Duration,
    count: u64,
}

impl Metrics {
    pub fn new(probes: &[ProbeSpec]) -> Metrics {
        let metrics = Metrics {
            state: Mutex::default(),
            drops: Drops::default(),
            tally: Tally::default(),
        };
        metrics.set_probes(probes);
        metrics
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain counters: consistent after any panic of an updater.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the series follow a (re)loaded config: a removed probe's
    /// series go away, a changed probe's start again, unchanged ones keep
    /// their counters.
    pub fn set_probes(&self, probes: &[ProbeSpec]) {
        let mut state = self.state();
        let mut old = std::mem::take(&mut state.probes);
        for spec in probes {
            let fresh = ProbeMetrics::new(spec);
            let kept = old
                .iter()
                .position(|m| m.name == spec.name)
                .map(|i| old.swap_remove(i))
                .filter(|m| m.same_series(&fresh));
            state.probes.push(kept.unwrap_or(fresh));
        }
    }

    pub fn count_reload(&self, ok: bool) {
        let mut state = self.state();
        if ok {
            state.reloads_ok += 1;
        } else {
            state.reloads_error += 1;
        }
    }

    /// Counts ticks a probe skipped because its thread woke too late.
    pub fn count_skipped(&self, spec: &ProbeSpec, ticks: u64) {
        self.tally.skipped.fetch_add(ticks, Ordering::Relaxed);
        let mut state = self.state();
        if let Some(probe) = state.probes.iter_mut().find(|p| p.name == spec.name) {
            probe.skipped += ticks;
        }
    }

    /// Takes one run's outcome. A probe no longer configured is ignored.
    pub fn observe(&self, spec: &ProbeSpec, outcome: &Outcome) {
        let value_ms = record::value(spec, outcome);
        let health = record::health(spec, value_ms);
        let mut state = self.state();
        let Some(probe) = state.probes.iter_mut().find(|p| p.name == spec.name) else {
            return;
        };
        probe.runs[reason_index(outcome.reason)] += 1;
        probe.health = HEALTH.iter().position(|h| *h == health).unwrap_or(3);
        let latency = probe.interpretation != Interpretation::ConnectionSuccess;
        let value = value_ms.filter(|_| latency).map(from_millis);
        if let Some(value) = value {
            probe.histogram.observe(value);
        }
        if outcome.meta.cert_not_after.is_some() {
            probe.cert_not_after = outcome.meta.cert_not_after;
        }
        if let (Some(counts), Some(stats)) = (&mut probe.samples, &outcome.meta.samples) {
            counts.sent += u64::from(stats.sent);
            counts.received += u64::from(stats.received);
            counts.jitter = stats.spread.map(|s| s.mdev);
        }
        probe.last = Some(LastRun {
            success: outcome.reason.is_none(),
            value,
            phases: phases(&outcome.timings),
            started_unix: outcome
                .started_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d - Duration::from_nanos(u64::from(d.subsec_nanos() % 1_000_000)))
                .unwrap_or_default(),
        });
    }

    /// The whole exposition, appended to `out`.
    pub fn render(&self, out: &mut String) {
        let state = self.state();
        let probes = &state.probes;
        // Writing to a String cannot fail; the results are ignored.
        for family in Family::ALL {
            let name = family.name();
            let _ = write!(
                out,
                "# HELP {name} {}\n# TYPE {name} {}\n",
                family.help(),
                family.kind()
            );
            match family {
                Family::Success => {
                    for p in probes {
                        if let Some(last) = &p.last {
                            sample(out, name, &p.labels, None, u8::from(last.success));
                        }
                    }
                }
                Family::Value => {
                    for p in probes {
                        if let Some(v) = p.last.as_ref().and_then(|l| l.value) {
                            sample(out, name, &p.labels, None, Seconds(v));
                        }
                    }
                }
                Family::Phase => {
                    for p in probes {
                        let Some(last) = &p.last else { continue };
                        for (phase, took) in PHASES.iter().zip(last.phases) {
                            if let Some(took) = took {
                                let extra = Some(("phase", *phase));
                                sample(out, name, &p.labels, extra, Seconds(took));
                            }
                        }
                    }
                }
                Family::Runs => {
                    for p in probes {
                        for (i, runs) in p.runs.iter().enumerate() {
                            let extra = Some(("reason", reason_name(i)));
                            sample(out, name, &p.labels, extra, runs);
                        }
                    }
                }
                Family::TicksSkipped => {
                    for p in probes {
                        sample(out, name, &p.labels, None, p.skipped);
                    }
                }
                Family::Health => {
                    for p in probes {
                        for (i, health) in HEALTH.iter().enumerate() {
                            let extra = Some(("health", *health));
                            sample(out, name, &p.labels, extra, u8::from(i == p.health));
                        }
                    }
                }
                Family::Latency => {
                    for p in probes {
                        if p.interpretation != Interpretation::ConnectionSuccess {
                            p.histogram.render(out, name, &p.labels);
                        }
                    }
                }
                Family::LastRun => {
                    for p in probes {
                        if let Some(last) = &p.last {
                            sample(out, name, &p.labels, None, Seconds(last.started_unix));
                        }
                    }
                }
                Family::Interval => {
                    for p in probes {
                        sample(out, name, &p.labels, None, Seconds(p.interval));
                    }
                }
                Family::UnhealthyAbove => {
                    for p in probes {
                        if let Some(ms) = p.unhealthy_above_ms {
                            sample(out, name, &p.labels, None, Seconds(from_millis(ms)));
                        }
                    }
                }
                Family::CertNotAfter => {
                    for p in probes {
                        if let Some(t) = p.cert_not_after {
                            sample(out, name, &p.labels, None, t);
                        }
                    }
                }
                Family::SamplesSent | Family::SamplesReceived => {
                    for p in probes {
                        if let Some(counts) = &p.samples {
                            let n = if family == Family::SamplesSent {
                                counts.sent
                            } else {
                                counts.received
                            };
                            sample(out, name, &p.labels, None, n);
                        }
                    }
                }
                Family::Jitter => {
                    for p in probes {
                        if let Some(jitter) = p.samples.as_ref().and_then(|c| c.jitter) {
                            sample(out, name, &p.labels, None, Seconds(jitter));
                        }
                    }
                }
                Family::BuildInfo => {
                    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
                    sample(out, name, &version, None, 1u64);
                }
                Family::Reloads => {
                    sample(out, name, "result=\"ok\"", None, state.reloads_ok);
                    sample(out, name, "result=\"error\"", None, state.reloads_error);
                }
                Family::Dropped => {
                    let _ = writeln!(out, "{name} {}", self.drops.count());
                }
            }
        }
    }
}

impl ProbeMetrics {
    fn new(spec: &ProbeSpec) -> ProbeMetrics {
        let mut labels = String::new();
        push_label(&mut labels, "probe", &spec.name);
        for (key, value) in &spec.labels {
            labels.push(',');
            push_label(&mut labels, key, value);
        }
        ProbeMetrics {
            name: spec.name.clone(),
            labels,
            interpretation: spec.interpretation,
            interval: spec.interval,
            unhealthy_above_ms: spec.thresholds.map(|t| t.unhealthy_above),
            runs: [0; RUN_REASONS],
            skipped: 0,
            health: 3,
            last: None,
            histogram: Histogram::default(),
            cert_not_after: None,
            samples: spec
                .exchange
                .as_ref()
                .filter(|e| e.samples.count > 1)
                .map(|_| SampleCounts::default()),
        }
    }

    fn same_series(&self, other: &ProbeMetrics) -> bool {
        self.labels == other.labels
            && self.samples.is_some() == other.samples.is_some()
            && self.interpretation == other.interpretation
            && self.interval == other.interval
            && self.unhealthy_above_ms == other.unhealthy_above_ms
    }
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (le, count) in BUCKET_LABELS.iter().zip(self.counts) {
            cumulative += count;
            out.push_str(name);
            sample(out, "_bucket", labels, Some(("le", le)), cumulative);
        }
        out.push_str(name);
        sample(out, "_sum", labels, None, Seconds(self.sum));
        out.push_str(name);
        sample(out, "_count", labels, None, self.count);
    }
}

/// A sample's value: a count or a duration; one type so that `sample`
/// is compiled once.
enum Number {
    Count(u64),
    Seconds(Duration),
}

impl From<u64> for Number {
    fn from(n: u64) -> Number {
        Number::Count(n)
    }
}

impl From<&u64> for Number {
    fn from(n: &u64) -> Number {
        Number::Count(*n)
    }
}

impl From<u8> for Number {
    fn from(n: u8) -> Number {
        Number::Count(u64::from(n))
    }
}

impl From<Seconds> for Number {
    fn from(s: Seconds) -> Number {
        Number::Seconds(s.0)
    }
}

/// A duration in seconds, written with integer arithmetic only: exact to
/// the nanosecond, and half the cost of formatting an `f64` (the scrape
/// writes thousands).
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs())?;
        let (mut nanos, mut width) = (self.0.subsec_nanos(), 9);
        if nanos == 0 {
            return Ok(());
        }
        while nanos % 10 == 0 {
            nanos /= 10;
            width -= 1;
        }
        write!(f, ".{nanos:0width$}")
    }
}

/// Milliseconds as the record writes them (to the microsecond) to a
/// `Duration`.
fn from_millis(ms: f64) -> Duration {
    Duration::from_nanos((ms * 1e6).round() as u64)
}

fn phases(t: &Timings) -> [Option<Duration>; PHASES.len()] {
    [
        t.dns, t.connect, t.proxy, t.tls, t.upgrade, t.open, t.prelude, t.rtt, t.total,
    ]
}

fn reason_index(reason: Option<Reason>) -> usize {
    match reason {
        None => 0,
        Some(reason) => 1 + Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0),
    }
}

fn reason_name(index: usize) -> &'static str {
    match index.checked_sub(1) {
        None => "none",
        Some(i) => Reason::ALL[i].wire_name(),
    }
}

/// One sample line: `name{labels,key="value"} value`.
fn sample(
    out: &mut String,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: impl Into<Number>,
) {
    write_sample(out, name, labels, extra, value.into());
}

/// `sample`'s body, compiled once for every type of value. Built piece by
/// piece: a scrape writes thousands of lines, and `write!` of the whole
/// line costs twice as much.
fn write_sample(
    out: &mut String,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: Number,
) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if let Some((key, label)) = extra {
        out.push(',');
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(label);
        out.push('"');
    }
    out.push_str("} ");
    let _ = match value {
        Number::Count(n) => write!(out, "{n}"),
        Number::Seconds(d) => write!(out, "{}", Seconds(d)),
    };
    out.push('\n');
}

/// `key="value"`, the value escaped as the text format requires.
fn push_label(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ProbeSpec {
        let text = format!(r#"{{"probes": [{json}]}}"#);
        let mut loaded = crate::config::load_str(&text, &|_| None).expect("config");
        loaded.probes.remove(0)
    }

    #[test]
    fn seconds_are_written_exactly_without_trailing_zeros() {
        let cases = [
            (Duration::ZERO, "0"),
            (Duration::from_millis(42), "0.042"),
            (Duration::from_nanos(1_000_000_001), "1.000000001"),
            (Duration::from_millis(1_796_248_369_828), "1796248369.828"),
            (from_millis(0.5), "0.0005"),
        ];
        for (duration, text) in cases {
            assert_eq!(Seconds(duration).to_string(), text);
        }
    }

    #[test]
    fn bucket_labels_are_the_bounds_as_written() {
        for (bound, label) in BUCKETS.iter().zip(BUCKET_LABELS) {
            assert_eq!(bound.to_string(), label);
        }
        assert_eq!(BUCKET_LABELS[BUCKETS.len()], "+Inf");
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_start_at_zero() {
        let probe = spec(
            r#"{"name": "edge", "url": "ws://127.0.0.1:9/", "labels": {"note": "a \"b\" \\ c\nd"}}"#,
        );
        let metrics = Metrics::new(std::slice::from_ref(&probe));
        let mut text = String::new();
        metrics.render(&mut text);
        for family in Family::ALL {
            let name = family.name();
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {}\n", family.kind())));
        }
        let labels = r#"probe="edge",note="a \"b\" \\ c\nd""#;
        for reason in ["none", "ws_open_failed", "ws_reply_mismatch"] {
            let line = format!("wsprobe_probe_runs_total{{{labels},reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(text.contains(&format!(
            "wsprobe_probe_health{{{labels},health=\"unknown\"}} 1\n"
        )));
        // Nothing about a run before the first one.
        assert!(!text.contains("wsprobe_probe_success{"));
    }

    #[test]
    fn a_run_sets_the_gauges_and_lands_in_one_bucket() {
        let probe = spec(r#"{"name": "edge", "url": "ws://127.0.0.1:9/"}"#);
        let metrics = Metrics::new(std::slice::from_ref(&probe));
        let mut outcome = Outcome::begin();
        outcome.opened = true;
        outcome.timings.open = Some(Duration::from_millis(42));
        outcome.timings.connect = Some(Duration::from_millis(2));
        metrics.observe(&probe, &outcome);
        let mut text = String::new();
        metrics.render(&mut text);
        let l = r#"probe="edge""#;
        for line in [
            format!("wsprobe_probe_success{{{l}}} 1\n"),
            format!("wsprobe_probe_value_seconds{{{l}}} 0.042\n"),
            format!("wsprobe_probe_phase_seconds{{{l},phase=\"connect\"}} 0.002\n"),
            format!("wsprobe_probe_latency_seconds_bucket{{{l},le=\"0.025\"}} 0\n"),
            format!("wsprobe_probe_latency_seconds_bucket{{{l},le=\"0.05\"}} 1\n"),
            format!("wsprobe_probe_latency_seconds_bucket{{{l},le=\"+Inf\"}} 1\n"),
            format!("wsprobe_probe_health{{{l},health=\"healthy\"}} 1\n"),
        ] {
            assert!(text.contains(&line), "{line}\n{text}");
        }
        // A reload without the probe removes its series.
        metrics.set_probes(&[]);
        text.clear();
        metrics.render(&mut text);
        assert!(!text.contains("probe=\"edge\""), "{text}");
    }

    #[test]
    fn a_probe_with_samples_counts_them_and_shows_its_jitter() {
        use crate::exchange::samples::{SampleStats, Spread};
        let sampled = spec(
            r#"{"name": "many", "url": "ws://127.0.0.1:9/", "interpretation": "round_trip_latency",
                "send_message": "ping", "samples": 5}"#,
        );
        let single = spec(r#"{"name": "one", "url": "ws://127.0.0.1:9/"}"#);
        let metrics = Metrics::new(&[sampled.clone(), single]);
        let mut text = String::new();
        metrics.render(&mut text);
        // Initialised at zero for the sampling probe only, before any run.
        assert!(
            text.contains("wsprobe_probe_samples_sent_total{probe=\"many\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("wsprobe_probe_samples_received_total{probe=\"many\"} 0\n"));
        assert!(!text.contains("wsprobe_probe_samples_sent_total{probe=\"one\"}"));
        assert!(!text.contains("wsprobe_probe_jitter_seconds{"));

        let ms = Duration::from_millis;
        let mut outcome = Outcome::begin();
        outcome.opened = true;
        outcome.timings.prelude = Some(ms(3));
        outcome.timings.rtt = Some(ms(10));
        outcome.meta.samples = Some(SampleStats {
            sent: 5,
            received: 3,
            spread: Some(Spread {
                median: ms(10),
                min: ms(8),
                max: ms(14),
                mean: ms(11),
                mdev: ms(2),
            }),
        });
        metrics.observe(&sampled, &outcome);
        metrics.observe(&sampled, &outcome);
        text.clear();
        metrics.render(&mut text);
        let l = r#"probe="many""#;
        for line in [
            format!("wsprobe_probe_samples_sent_total{{{l}}} 10\n"),
            format!("wsprobe_probe_samples_received_total{{{l}}} 6\n"),
            format!("wsprobe_probe_jitter_seconds{{{l}}} 0.002\n"),
            format!("wsprobe_probe_phase_seconds{{{l},phase=\"prelude\"}} 0.003\n"),
        ] {
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }
}
