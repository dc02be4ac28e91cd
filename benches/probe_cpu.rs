//! CPU per probe run, and the handshake and round-trip values, against
//! in-process echo servers on 127.0.0.1.
//!
//! `cargo bench --bench probe_cpu`; `WSPROBE_BENCH_N=500` changes the number
//! of measured runs (default 2000 `ws://`, 1000 `wss://`), each after 50
//! warm-up runs. Runs are sequential on the main thread; the CPU counted is
//! that thread's own (`/proc/thread-self/schedstat`), so the servers'
//! threads, which answer on the other core, are not in the figure. The
//! headline is the total over all measured runs divided by their number;
//! the spread over five equal batches shows how steady it was. The
//! figures are reported beside their targets, never asserted; only a probe
//! that fails stops the benchmark. `--profile dev` runs the debug build.
//!
//! The `wss://` rows: a private CA whose server sends its leaf alone, and
//! a chain shaped like a public CA's ECDSA one (P-384 root and
//! intermediate, as Let's Encrypt's). The latter runs twice: with one
//! probe, as the agent runs it, where the chain verified on the first run
//! is remembered; and with a probe made afresh for every run, so every run
//! verifies the chain as a first run does.

mod support;

use std::time::{Duration, Instant};

use wsprobe::outcome::{Outcome, Timings};
use wsprobe::probe;
use wsprobe::spec::ProbeSpec;

use support::thread_cpu;

const WARM_UP: usize = 50;
/// The measured runs are also timed in this many equal batches, to show
/// how much the figure moved while the benchmark ran (other work on the
/// machine disturbs caches and clock speed, if not the count itself).
const BATCHES: usize = 5;
const DEFAULT_WS_RUNS: usize = 2000;
const DEFAULT_WSS_RUNS: usize = 1000;

/// Targets (microseconds of CPU per run; milliseconds for the handshake).
const WS_ROUND_TRIP_CPU_US: f64 = 150.0;
const WSS_HANDSHAKE_CPU_US: f64 = 550.0;
const WS_OPEN_MEDIAN_MS: f64 = 0.3;

fn main() {
    let runs_override = std::env::var("WSPROBE_BENCH_N").ok().map(|n| {
        n.parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("WSPROBE_BENCH_N={n:?}: expected a positive integer"))
    });
    let ws_runs = runs_override.unwrap_or(DEFAULT_WS_RUNS);
    let wss_runs = runs_override.unwrap_or(DEFAULT_WSS_RUNS);

    let pki = support::TestPki::new("bench-cpu");
    let ws = support::ws_round_trip(support::ws_echo_server());
    let wss = support::wss_handshake(support::wss_echo_server(pki.server.clone()), pki.ca_file());

    let public = support::TestPki::public_like("bench-cpu-public");
    let public_server = support::wss_echo_server(public.server.clone());
    let wss_public = support::wss_handshake(public_server, public.ca_file());

    let ws_result = measure(&ws, ws_runs);
    let wss_result = measure(&wss, wss_runs);
    let public_result = measure(&wss_public, wss_runs);
    let public_first = measure_first_runs(
        || support::wss_handshake(public_server, public.ca_file()),
        wss_runs,
    );

    let opens = Summary::of(ws_result.timings.iter().map(|t| t.open));
    let rtts = Summary::of(ws_result.timings.iter().map(|t| t.rtt));
    let wss_opens = Summary::of(wss_result.timings.iter().map(|t| t.open));

    println!(
        "probe_cpu ({} build): sequential runs after {WARM_UP} warm-up runs each; \
         CPU of the probing thread only{}",
        support::build_kind(),
        if cfg!(debug_assertions) {
            " (the targets are for release builds)"
        } else {
            ""
        }
    );
    println!(
        "  ws://  round_trip_latency  CPU/run {:7.1} us  target <= {WS_ROUND_TRIP_CPU_US} us  {}  \
         ({ws_runs} runs, {:.2} s wall; batches {})",
        ws_result.cpu_per_run_us(),
        verdict(ws_result.cpu_per_run_us() <= WS_ROUND_TRIP_CPU_US),
        ws_result.wall.as_secs_f64(),
        ws_result.batch_spread(),
    );
    println!(
        "  wss:// handshake_latency   CPU/run {:7.1} us  target <= {WSS_HANDSHAKE_CPU_US} us  {}  \
         ({wss_runs} runs, {:.2} s wall; batches {})",
        wss_result.cpu_per_run_us(),
        verdict(wss_result.cpu_per_run_us() <= WSS_HANDSHAKE_CPU_US),
        wss_result.wall.as_secs_f64(),
        wss_result.batch_spread(),
    );
    for (what, result) in [
        ("public-CA-like chain", &public_result),
        ("  each a first run", &public_first),
    ] {
        let opens = Summary::of(result.timings.iter().map(|t| t.open));
        println!(
            "  wss:// {what:<20} CPU/run {:7.1} us  open median {:.3} ms  p95 {:.3} ms  \
             ({} runs, {:.2} s wall; batches {})",
            result.cpu_per_run_us(),
            ms(opens.median),
            ms(opens.p95),
            result.timings.len(),
            result.wall.as_secs_f64(),
            result.batch_spread(),
        );
    }
    println!(
        "  ws://  open (handshake)    median {:.3} ms  p95 {:.3} ms  target median < {WS_OPEN_MEDIAN_MS} ms  {}",
        ms(opens.median),
        ms(opens.p95),
        verdict(ms(opens.median) < WS_OPEN_MEDIAN_MS),
    );
    println!(
        "  ws://  rtt                 median {:.3} ms  p95 {:.3} ms",
        ms(rtts.median),
        ms(rtts.p95)
    );
    println!(
        "  wss:// open (handshake)    median {:.3} ms  p95 {:.3} ms",
        ms(wss_opens.median),
        ms(wss_opens.p95)
    );
}

struct Measured {
    cpu: Duration,
    wall: Duration,
    timings: Vec<Timings>,
    /// CPU per run of each batch, in microseconds.
    batches: Vec<f64>,
}

impl Measured {
    fn cpu_per_run_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.timings.len() as f64
    }

    /// `min-max us/run` over the batches.
    fn batch_spread(&self) -> String {
        let min = self.batches.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.batches.iter().copied().fold(0.0, f64::max);
        format!("{min:.0}-{max:.0} us/run")
    }
}

/// Warm-up, then `runs` timed runs; panics on the first failed run. Each
/// outcome is dropped inside the loop, as the agent drops it after writing.
fn measure(spec: &ProbeSpec, runs: usize) -> Measured {
    for _ in 0..WARM_UP {
        succeeded(probe::run(spec));
    }
    let mut timings = Vec::with_capacity(runs);
    let mut batches = Vec::with_capacity(BATCHES);
    let wall = Instant::now();
    let start = thread_cpu();
    let mut batch_start = start;
    for batch in 0..BATCHES {
        // Batch sizes differ by at most one run; an empty one is skipped.
        let size = runs / BATCHES + usize::from(batch < runs % BATCHES);
        for _ in 0..size {
            timings.push(succeeded(probe::run(spec)));
        }
        if size > 0 {
            let now = thread_cpu();
            batches.push((now - batch_start).as_secs_f64() * 1e6 / size as f64);
            batch_start = now;
        }
    }
    Measured {
        cpu: batch_start - start,
        wall: wall.elapsed(),
        timings,
        batches,
    }
}

/// As `measure`, but every run gets a probe of its own from `make`, made
/// outside the counted CPU: what a probe's first run costs.
fn measure_first_runs(make: impl Fn() -> ProbeSpec, runs: usize) -> Measured {
    for _ in 0..WARM_UP {
        succeeded(probe::run(&make()));
    }
    let mut timings = Vec::with_capacity(runs);
    let mut batches = Vec::with_capacity(BATCHES);
    let mut cpu = Duration::ZERO;
    let wall = Instant::now();
    for batch in 0..BATCHES {
        let size = runs / BATCHES + usize::from(batch < runs % BATCHES);
        let mut batch_cpu = Duration::ZERO;
        for _ in 0..size {
            let spec = make();
            let start = thread_cpu();
            let outcome = probe::run(&spec);
            batch_cpu += thread_cpu() - start;
            timings.push(succeeded(outcome));
        }
        if size > 0 {
            batches.push(batch_cpu.as_secs_f64() * 1e6 / size as f64);
            cpu += batch_cpu;
        }
    }
    Measured {
        cpu,
        wall: wall.elapsed(),
        timings,
        batches,
    }
}

fn succeeded(outcome: Outcome) -> Timings {
    if let Some(reason) = outcome.reason {
        panic!(
            "probe failed: {} ({})",
            reason.wire_name(),
            outcome.meta.error.as_deref().unwrap_or("no detail")
        );
    }
    outcome.timings
}

struct Summary {
    median: Duration,
    p95: Duration,
}

impl Summary {
    fn of(values: impl Iterator<Item = Option<Duration>>) -> Self {
        let mut values: Vec<Duration> = values
            .map(|v| v.expect("a successful run has this timing"))
            .collect();
        assert!(!values.is_empty(), "no runs to summarise");
        values.sort_unstable();
        // Nearest-rank percentiles.
        let rank = |p: usize| values[(values.len() * p).div_ceil(100).max(1) - 1];
        Summary {
            median: rank(50),
            p95: rank(95),
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
