//! The agent under load: the real binary, `wsprobe run -c GENERATED.json`,
//! against an in-process server on 127.0.0.1, with its records read from a
//! pipe and counted per probe, and its CPU, memory, threads and file
//! descriptors read from /proc every two seconds.
//!
//! ```text
//! cargo bench --bench agent_load -- SCENARIO...     (or WSPROBE_LOAD_SCENARIO=...)
//!
//!   soak         200 ws:// round-trip probes, interval 1000 ms, 60 s: fds,
//!                threads and RSS at 10 s and at the end (same fds and
//!                threads, RSS growth < 5 %)
//!   scale-ws     1000 ws:// round-trip probes, interval 1000 ms, 60 s: CPU
//!                (% of one core, 10 s to the end), peak and final RSS,
//!                missed runs (<= 30 %, <= 48 MB, none missed)
//!   scale-wss    1000 wss:// handshake probes (tls.ca_file = the bench CA),
//!                otherwise as scale-ws
//!   idle         10 wss:// round-trip probes, interval 60000 ms: RSS at 10 s,
//!                when each has run once (<= 3 MB, musl build)
//!   waiting-wss  1000 wss:// round-trip probes against a server that
//!                completes TLS and the upgrade but never replies (timeout
//!                30000 ms): RSS while all 1000 connections are open
//!                (<= 45 MB, musl build), total and per probe
//!   cpu          `wsprobe probe URL --count N --interval-ms 0`: CPU of the
//!                whole process per run, ws:// round trip (2000 runs) and
//!                wss:// handshake (1000 runs), from wait4's rusage
//!   all          soak, scale-ws, scale-wss, idle (the default)
//! ```
//!
//! Environment: `WSPROBE_BIN` the binary (default: the `wsprobe` that
//! `cargo bench` builds with the bench profile, which inherits release and
//! writes target/release/wsprobe); `WSPROBE_LOAD_SECS` the length of soak
//! and scale runs (default 60; the baseline is taken at 10 s, or half the
//! run if shorter); `WSPROBE_LOAD_PROBES` the probe count of any scenario;
//! `WSPROBE_LOAD_RUNS` the run count of `cpu`.
//!
//! Only the agent's PID is measured: the servers' threads (one per
//! connection) are in this process, not in the figures. Figures are
//! reported beside their targets, never asserted; each scenario also prints
//! a `result:` line of key=value pairs for scripts (scripts/footprint.sh).
//! "MB" in targets is 1024 KiB, as /proc reports KiB.
//!
//! Memory is also broken down from /proc/PID/smaps: the resident part of
//! the probe threads' stacks, other anonymous memory (heap, malloc arenas),
//! and file-backed pages. Stacks are recognised by size (anonymous
//! read-write mappings of `PROBE_STACK` to `PROBE_STACK` + 16 KiB), so the
//! count is approximate: a stack the kernel merged with a neighbouring
//! mapping is missed, and a malloc mapping of that size is taken for one.
//!
//! Missed runs: every run of a probe starts on its fixed grid (first start +
//! k x interval), so a gap of n intervals between two records' `ts` means
//! n - 1 missed runs, and so does a grid point more than 500 ms before the
//! stop with no record after it. "Expected" is records + missed. "Start
//! lag" is how far a record's `ts` sits from the probe's grid (the first
//! record defines it).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{LoadStats, Reply};
use wsprobe::schedule::PROBE_STACK;

const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const BASELINE_AT: Duration = Duration::from_secs(10);
const DEFAULT_SECS: u64 = 60;
/// A grid point this close to the stop may still be running: not missed.
const STOP_GRACE_MS: i64 = 500;

const SOAK_RSS_GROWTH_PCT: f64 = 5.0;
const SCALE_CPU_PCT: f64 = 30.0;
const SCALE_RSS_KB: u64 = 48 * 1024;
const IDLE_RSS_KB: u64 = 3 * 1024;
const WAITING_RSS_KB: u64 = 45 * 1024;

const ALL: [&str; 4] = ["soak", "scale-ws", "scale-wss", "idle"];
const KNOWN: [&str; 7] = [
    "soak",
    "scale-ws",
    "scale-wss",
    "idle",
    "waiting-wss",
    "cpu",
    "all",
];

fn main() {
    // `cargo bench` passes `--bench`; everything else not starting with `-`
    // names a scenario.
    let mut chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if chosen.is_empty() {
        if let Ok(list) = std::env::var("WSPROBE_LOAD_SCENARIO") {
            chosen = list
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
    }
    if chosen.is_empty() {
        chosen.push("all".into());
    }
    for name in &chosen {
        assert!(
            KNOWN.contains(&name.as_str()),
            "unknown scenario {name:?}; expected one of {}",
            KNOWN.join(", ")
        );
    }
    let chosen: Vec<&str> = chosen
        .iter()
        .flat_map(|name| match name.as_str() {
            "all" => ALL.to_vec(),
            other => vec![other],
        })
        .collect();

    let bench = Bench::new();
    println!(
        "agent_load: {} ({}, {} bytes)",
        bench.bin.display(),
        bench.libc,
        std::fs::metadata(&bench.bin).map(|m| m.len()).unwrap_or(0)
    );
    for scenario in chosen {
        match scenario {
            "soak" => bench.soak(),
            "scale-ws" => bench.scale(false),
            "scale-wss" => bench.scale(true),
            "idle" => bench.idle(),
            "waiting-wss" => bench.waiting_wss(),
            "cpu" => bench.cpu(),
            _ => unreachable!("checked above"),
        }
    }
}

struct Bench {
    bin: PathBuf,
    libc: &'static str,
    pki: support::TestPki,
    secs: u64,
    probes: Option<usize>,
}

impl Bench {
    fn new() -> Self {
        let bin = std::env::var_os("WSPROBE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wsprobe")));
        let bytes = std::fs::read(&bin)
            .unwrap_or_else(|e| panic!("cannot read the binary {}: {e}", bin.display()));
        // A dynamically linked glibc binary names its loader.
        let libc = if bytes.windows(8).any(|w| w == b"ld-linux") {
            "glibc, dynamic"
        } else {
            "static"
        };
        Bench {
            bin,
            libc,
            pki: support::TestPki::new("bench-load"),
            secs: env_number("WSPROBE_LOAD_SECS").unwrap_or(DEFAULT_SECS),
            probes: env_number("WSPROBE_LOAD_PROBES").map(|n| n as usize),
        }
    }

    fn probes(&self, default: usize) -> usize {
        self.probes.unwrap_or(default)
    }

    fn baseline_at(&self) -> Duration {
        BASELINE_AT.min(Duration::from_secs(self.secs) / 2)
    }

    fn write_config(&self, tag: &str, probes: Vec<Value>) -> PathBuf {
        let path = self.pki.dir.join(format!("{tag}.json"));
        let config = json!({ "output": { "ndjson": "-" }, "probes": probes });
        std::fs::write(&path, config.to_string()).expect("write the config");
        path
    }

    fn ca(&self) -> String {
        self.pki
            .ca_file()
            .to_str()
            .expect("UTF-8 temp path")
            .to_owned()
    }

    fn soak(&self) {
        let n = self.probes(200);
        let (addr, _stats) = support::load_server(None, Reply::Echo);
        let probes = (0..n).map(|i| ws_round_trip(i, addr, 1000, 1000)).collect();
        let config = self.write_config("soak", probes);
        println!(
            "\nsoak: {n} ws:// round_trip_latency probes, interval 1000 ms, {} s",
            self.secs
        );
        let agent = Agent::start(&self.bin, &config);
        let watch = agent.watch(self.secs, self.baseline_at());
        let memory = Breakdown::read(agent.pid);
        let stopped = agent.stop();
        let (base, end) = (&watch.base, &watch.end);
        let max_fds = watch.samples.iter().map(|s| s.fds).max().unwrap_or(0);
        for (label, s) in [("baseline", base), ("end", end)] {
            println!(
                "  {label:8} at {:4.1} s: fds {} (settled), threads {}, RSS {} KB",
                s.at.as_secs_f64(),
                s.fds,
                s.threads,
                s.rss_kb
            );
        }
        let growth = pct_change(base.rss_kb, end.rss_kb);
        println!(
            "  fds     {} -> {} (max seen in samples {max_fds})  target same  {}",
            base.fds,
            end.fds,
            verdict(base.fds == end.fds)
        );
        println!(
            "  threads {} -> {}  target same  {}",
            base.threads,
            end.threads,
            verdict(base.threads == end.threads)
        );
        println!(
            "  RSS     {} -> {} KB: {growth:+.1} %  target < {SOAK_RSS_GROWTH_PCT} %  {}",
            base.rss_kb,
            end.rss_kb,
            verdict(growth < SOAK_RSS_GROWTH_PCT)
        );
        memory.iter().for_each(Breakdown::print);
        let runs = stopped.runs(n, 1000);
        runs.print();
        stopped.print_exit();
        println!(
            "result: soak probes={n} base_fds={} end_fds={} base_threads={} end_threads={} \
             base_rss_kb={} end_rss_kb={} rss_growth_pct={growth:.2} missed={} failed={}",
            base.fds,
            end.fds,
            base.threads,
            end.threads,
            base.rss_kb,
            end.rss_kb,
            runs.missed,
            runs.failed
        );
    }

    fn scale(&self, tls: bool) {
        let n = self.probes(1000);
        let name = if tls { "scale-wss" } else { "scale-ws" };
        let (addr, stats) = if tls {
            support::load_server(Some(self.pki.server.clone()), Reply::Echo)
        } else {
            support::load_server(None, Reply::Echo)
        };
        let probes = (0..n)
            .map(|i| {
                if tls {
                    json!({
                        "name": probe_name(i), "url": format!("wss://{addr}/"),
                        "interpretation": "handshake_latency",
                        "interval_ms": 1000, "timeout_ms": 1000,
                        "tls": { "ca_file": self.ca() },
                    })
                } else {
                    ws_round_trip(i, addr, 1000, 1000)
                }
            })
            .collect();
        let config = self.write_config(name, probes);
        println!(
            "\n{name}: {n} {} probes, interval 1000 ms, {} s",
            if tls {
                "wss:// handshake_latency"
            } else {
                "ws:// round_trip_latency"
            },
            self.secs
        );
        let agent = Agent::start(&self.bin, &config);
        let watch = agent.watch(self.secs, self.baseline_at());
        let memory = Breakdown::read(agent.pid);
        let stopped = agent.stop();
        let (base, end) = (&watch.base, &watch.end);
        let cpu = end.cpu.saturating_sub(base.cpu).as_secs_f64();
        let wall = end.at.saturating_sub(base.at).as_secs_f64();
        let cpu_pct = 100.0 * cpu / wall;
        let sampled_peak = watch.samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
        println!(
            "  CPU     {cpu_pct:.1} % of one core ({cpu:.2} s CPU over {wall:.1} s, from {:.0} s \
             to the end)  target <= {SCALE_CPU_PCT} %  {}",
            base.at.as_secs_f64(),
            verdict(cpu_pct <= SCALE_CPU_PCT)
        );
        println!(
            "  RSS     peak {} KB (VmHWM; sampled peak {sampled_peak} KB), final {} KB  \
             target <= {SCALE_RSS_KB} KB (glibc build)  {}",
            end.hwm_kb,
            end.rss_kb,
            verdict(end.hwm_kb <= SCALE_RSS_KB)
        );
        println!(
            "  threads {}, fds {} (settled) at the end",
            end.threads, end.fds
        );
        memory.iter().for_each(Breakdown::print);
        let runs = stopped.runs(n, 1000);
        runs.print();
        println!("  target no missed run  {}", verdict(runs.missed == 0));
        print_server(&stats);
        stopped.print_exit();
        println!(
            "result: {name} probes={n} cpu_pct={cpu_pct:.2} peak_rss_kb={} final_rss_kb={} \
             records={} expected={} missed={} failed={}",
            end.hwm_kb, end.rss_kb, runs.records, runs.expected, runs.missed, runs.failed
        );
    }

    /// `n` wss:// round-trip probes against `addr` at a 60 s interval,
    /// trusting the bench's test CA.
    fn wss_round_trips(&self, n: usize, addr: std::net::SocketAddr, timeout_ms: u64) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let mut probe = ws_round_trip(i, addr, 60_000, timeout_ms);
                probe["url"] = json!(format!("wss://{addr}/"));
                probe["tls"] = json!({ "ca_file": self.ca() });
                probe
            })
            .collect()
    }

    fn idle(&self) {
        let n = self.probes(10);
        let (addr, _stats) = support::load_server(Some(self.pki.server.clone()), Reply::Echo);
        let probes = self.wss_round_trips(n, addr, 5000);
        let config = self.write_config("idle", probes);
        println!(
            "\nidle: {n} wss:// round_trip_latency probes, interval 60000 ms: RSS at 10 s \
             (each probe has run once, within the first 5 s)"
        );
        let agent = Agent::start(&self.bin, &config);
        let watch = agent.watch(10, BASELINE_AT);
        let memory = Breakdown::read(agent.pid);
        let stopped = agent.stop();
        let end = &watch.end;
        println!(
            "  RSS     {} KB at {:.1} s (VmHWM {} KB), threads {}, fds {}  \
             target <= {IDLE_RSS_KB} KB (musl build)  {}",
            end.rss_kb,
            end.at.as_secs_f64(),
            end.hwm_kb,
            end.threads,
            end.fds,
            verdict(end.rss_kb <= IDLE_RSS_KB)
        );
        memory.iter().for_each(Breakdown::print);
        let tally = &stopped.tally;
        println!(
            "  runs    {} records, {} failed{}",
            tally.lines,
            tally.failed(),
            tally.reason_list()
        );
        stopped.print_exit();
        println!(
            "result: idle probes={n} rss_kb={} hwm_kb={} records={} failed={}",
            end.rss_kb,
            end.hwm_kb,
            tally.lines,
            tally.failed()
        );
    }

    fn waiting_wss(&self) {
        let n = self.probes(1000);
        let (addr, stats) = support::load_server(Some(self.pki.server.clone()), Reply::Silent);
        let probes = self.wss_round_trips(n, addr, 30000);
        let config = self.write_config("waiting", probes);
        println!(
            "\nwaiting-wss: {n} wss:// round_trip_latency probes (timeout 30000 ms) against a \
             server that never replies: RSS with every connection open"
        );
        let agent = Agent::start(&self.bin, &config);
        // First runs start within 5 s; the earliest times out at 30 s.
        let give_up = Duration::from_secs(25);
        while stats.open.load(Ordering::Relaxed) < n && agent.started.elapsed() < give_up {
            thread::sleep(Duration::from_millis(100));
        }
        let held_at = agent.started.elapsed();
        thread::sleep(Duration::from_secs(1));
        let mut samples = Vec::new();
        for _ in 0..3 {
            samples.push(agent.sample(true));
            thread::sleep(Duration::from_millis(500));
        }
        let held = stats.open.load(Ordering::Relaxed);
        let memory = Breakdown::read(agent.pid);
        let stopped = agent.stop();
        let top = samples
            .iter()
            .max_by_key(|s| s.rss_kb)
            .expect("three samples");
        let per_probe = top.rss_kb as f64 / n as f64;
        println!(
            "  held    {held} of {n} connections open at the server ({} after {:.1} s)",
            if held >= n { "all" } else { "NOT all" },
            held_at.as_secs_f64()
        );
        println!(
            "  RSS     {} KB total (max of 3 samples; VmHWM {} KB), {per_probe:.1} KB per probe; \
             threads {}, fds {}  target <= {WAITING_RSS_KB} KB (musl build)  {}",
            top.rss_kb,
            top.hwm_kb,
            top.threads,
            top.fds,
            verdict(top.rss_kb <= WAITING_RSS_KB && held >= n)
        );
        memory.iter().for_each(Breakdown::print);
        print_server(&stats);
        stopped.print_exit();
        println!(
            "result: waiting-wss probes={n} held={held} rss_kb={} per_probe_kb={per_probe:.1} \
             threads={} fds={}",
            top.rss_kb, top.threads, top.fds
        );
    }

    fn cpu(&self) {
        let ws_runs = env_number("WSPROBE_LOAD_RUNS").unwrap_or(2000);
        let wss_runs = env_number("WSPROBE_LOAD_RUNS").unwrap_or(1000);
        let (ws_addr, _) = support::load_server(None, Reply::Echo);
        let (wss_addr, _) = support::load_server(Some(self.pki.server.clone()), Reply::Echo);
        println!(
            "\ncpu: `wsprobe probe URL --count N --interval-ms 0`, CPU (user + system) of the \
             whole process per run, start-up and record output included"
        );
        let ws = self.probe_cpu(
            &[
                format!("ws://{ws_addr}/"),
                "--interpretation".into(),
                "round_trip_latency".into(),
                "--send".into(),
                "hi".into(),
            ],
            ws_runs,
        );
        let wss = self.probe_cpu(
            &[
                format!("wss://{wss_addr}/"),
                "--interpretation".into(),
                "handshake_latency".into(),
                "--ca-file".into(),
                self.ca(),
            ],
            wss_runs,
        );
        println!(
            "  ws://  round_trip_latency  CPU/run {:7.1} us  ({ws_runs} runs)",
            ws
        );
        println!(
            "  wss:// handshake_latency   CPU/run {:7.1} us  ({wss_runs} runs)",
            wss
        );
        println!("result: cpu ws_us={ws:.1} wss_us={wss:.1} ws_runs={ws_runs} wss_runs={wss_runs}");
    }

    /// Runs `wsprobe probe ARGS --count runs --interval-ms 0` and returns
    /// its CPU per run in microseconds.
    fn probe_cpu(&self, args: &[String], runs: u64) -> f64 {
        let mut child = Command::new(&self.bin)
            .arg("probe")
            .args(args)
            .args(["--timeout-ms", "5000", "--count"])
            .arg(runs.to_string())
            .args(["--interval-ms", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let reader = read_records(child.stdout.take().expect("piped stdout"), tally.clone());
        let (status, usage) = wait_rusage(&mut child);
        reader.join().expect("record reader");
        let tally = tally.lock().expect("tally");
        assert!(
            tally.lines == runs && tally.failed() == 0,
            "`wsprobe probe {}`: {} records of {runs}, {} failed{} (exit status {status})",
            args[0],
            tally.lines,
            tally.failed(),
            tally.reason_list()
        );
        (usage.user + usage.system).as_secs_f64() * 1e6 / runs as f64
    }
}

fn probe_name(i: usize) -> String {
    format!("p{i:04}")
}

fn ws_round_trip(i: usize, addr: std::net::SocketAddr, interval: u64, timeout: u64) -> Value {
    json!({
        "name": probe_name(i), "url": format!("ws://{addr}/"),
        "interpretation": "round_trip_latency", "send_message": "hi",
        "interval_ms": interval, "timeout_ms": timeout,
    })
}

fn print_server(stats: &LoadStats) {
    println!(
        "  server  {} accepted, {} upgraded, {} TLS/upgrade failures, {} not served (no thread)",
        stats.accepted.load(Ordering::Relaxed),
        stats.upgraded.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.spawn_failed.load(Ordering::Relaxed)
    );
}

// --- the agent process ------------------------------------------------------

struct Agent {
    child: Child,
    pid: u32,
    started: Instant,
    tally: Arc<Mutex<Tally>>,
    reader: Option<JoinHandle<()>>,
    logger: Option<JoinHandle<()>>,
    stopped: bool,
}

/// One reading of /proc for the agent.
#[derive(Clone, Copy)]
struct Sample {
    /// Since the agent started.
    at: Duration,
    /// utime + stime of the whole process (exited threads included).
    cpu: Duration,
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
    fds: u64,
}

struct Watch {
    samples: Vec<Sample>,
    base: Sample,
    end: Sample,
}

struct Stopped {
    tally: Tally,
    status: ExitStatus,
    shutdown: Duration,
    /// Wall clock at SIGTERM, in ms since the epoch.
    stop_ms: i64,
}

impl Agent {
    fn start(bin: &Path, config: &Path) -> Agent {
        let mut child = Command::new(bin)
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let started = Instant::now();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let reader = read_records(child.stdout.take().expect("piped stdout"), tally.clone());
        let stderr = child.stderr.take().expect("piped stderr");
        let logger = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let cut: String = line.chars().take(150).collect();
                let more = if cut.len() < line.len() { " ..." } else { "" };
                eprintln!("    [agent] {cut}{more}");
            }
        });
        Agent {
            pid: child.id(),
            child,
            started,
            tally,
            reader: Some(reader),
            logger: Some(logger),
            stopped: false,
        }
    }

    /// Samples every `SAMPLE_EVERY`, and at `baseline`, until `secs`.
    fn watch(&self, secs: u64, baseline: Duration) -> Watch {
        let end = Duration::from_secs(secs);
        let mut times: Vec<Duration> = (1..)
            .map(|k| SAMPLE_EVERY * k)
            .take_while(|t| *t < end)
            .collect();
        times.extend([baseline, end]);
        times.sort_unstable();
        times.dedup();
        let mut samples = Vec::new();
        let mut base = None;
        for at in times {
            if let Some(wait) = at.checked_sub(self.started.elapsed()) {
                thread::sleep(wait);
            }
            let settle = at == baseline || at == end;
            let sample = self.sample(settle);
            if at == baseline {
                base = Some(sample);
            }
            if at.as_secs() % 10 == 0 || settle {
                let records = self.tally.lock().expect("tally").lines;
                println!(
                    "  t={:4.1} s  RSS {:6} KB  threads {:5}  fds {:5}  CPU {:6.2} s  records {records}",
                    sample.at.as_secs_f64(),
                    sample.rss_kb,
                    sample.threads,
                    sample.fds,
                    sample.cpu.as_secs_f64()
                );
            }
            samples.push(sample);
        }
        Watch {
            base: base.expect("a baseline sample"),
            end: *samples.last().expect("an end sample"),
            samples,
        }
    }

    /// Reads /proc/PID. `settle`: the fd count is the least of five reads
    /// 20 ms apart, so a probe connection open at that instant is not
    /// taken for a leak.
    fn sample(&self, settle: bool) -> Sample {
        let proc_dir = PathBuf::from(format!("/proc/{}", self.pid));
        let at = self.started.elapsed();
        let stat = std::fs::read_to_string(proc_dir.join("stat")).expect("read /proc/PID/stat");
        // Fields after the command name, which is in parentheses: state is
        // field 3, utime 14 and stime 15 (proc(5)).
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<u64> = after
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields[10] + fields[11];
        let status =
            std::fs::read_to_string(proc_dir.join("status")).expect("read /proc/PID/status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        let count_fds = || {
            std::fs::read_dir(proc_dir.join("fd"))
                .expect("read /proc/PID/fd")
                .count() as u64
        };
        let mut fds = count_fds();
        if settle {
            for _ in 0..4 {
                thread::sleep(Duration::from_millis(20));
                fds = fds.min(count_fds());
            }
        }
        Sample {
            at,
            cpu: Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks()),
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            threads: field("Threads:"),
            fds,
        }
    }

    /// SIGTERM, then waits (at most 5 s) for the exit and the last record.
    fn stop(mut self) -> Stopped {
        let stop_ms = now_ms();
        let signalled = Instant::now();
        // SAFETY: kill(2) with a PID we started and have not reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                break status;
            }
            if signalled.elapsed() > Duration::from_secs(5) {
                eprintln!("agent_load: the agent did not stop within 5 s of SIGTERM; killed");
                let _ = self.child.kill();
                break self.child.wait().expect("wait for the agent");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let shutdown = signalled.elapsed();
        self.stopped = true;
        if let Some(reader) = self.reader.take() {
            reader.join().expect("record reader");
        }
        if let Some(logger) = self.logger.take() {
            let _ = logger.join();
        }
        let tally = std::mem::take(&mut *self.tally.lock().expect("tally"));
        Stopped {
            tally,
            status,
            shutdown,
            stop_ms,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Stopped {
    fn print_exit(&self) {
        println!(
            "  stop    SIGTERM -> exit in {:.0} ms, {}",
            self.shutdown.as_secs_f64() * 1e3,
            self.status
        );
    }

    /// Records against the fixed-rate grid of `n` probes named p0000...
    fn runs(&self, n: usize, interval_ms: i64) -> Runs {
        let mut runs = Runs {
            records: self.tally.lines,
            failed: self.tally.failed(),
            reasons: self.tally.reason_list(),
            ..Runs::default()
        };
        let last_due = self.stop_ms - STOP_GRACE_MS;
        for i in 0..n {
            let Some(starts) = self.tally.starts.get(&probe_name(i)) else {
                runs.never_ran += 1;
                continue;
            };
            let mut starts = starts.clone();
            starts.sort_unstable();
            let first = starts[0];
            for pair in starts.windows(2) {
                let intervals = ((pair[1] - pair[0]) as f64 / interval_ms as f64).round() as i64;
                runs.missed += (intervals - 1).max(0) as u64;
            }
            let last = *starts.last().expect("not empty");
            if last_due > last {
                runs.missed += ((last_due - last) / interval_ms) as u64;
            }
            for t in &starts {
                let k = ((t - first) as f64 / interval_ms as f64).round() as i64;
                runs.max_lag_ms = runs.max_lag_ms.max((t - first - k * interval_ms).abs());
            }
        }
        runs.expected = runs.records + runs.missed;
        runs.values = percentiles(&self.tally.values);
        runs
    }
}

#[derive(Default)]
struct Runs {
    records: u64,
    expected: u64,
    missed: u64,
    never_ran: usize,
    failed: u64,
    reasons: String,
    max_lag_ms: i64,
    values: String,
}

impl Runs {
    fn print(&self) {
        println!(
            "  runs    {} records, {} expected, {} missed, {} failed{}; start lag max {} ms{}",
            self.records,
            self.expected,
            self.missed,
            self.failed,
            self.reasons,
            self.max_lag_ms,
            if self.never_ran > 0 {
                format!("; {} probe(s) NEVER RAN", self.never_ran)
            } else {
                String::new()
            }
        );
        println!("  values  {}", self.values);
    }
}

/// Where the agent's resident memory is, from /proc/PID/smaps.
struct Breakdown {
    /// Anonymous read-write mappings of a probe thread's stack size
    /// (`PROBE_STACK`, up to 16 KiB more for the thread's TLS and
    /// descriptor): how many, and their resident total.
    stacks: u64,
    stacks_kb: u64,
    /// Other anonymous memory: the heap, malloc arenas, other stacks.
    anon_kb: u64,
    /// File-backed: the binary and shared libraries.
    file_kb: u64,
}

impl Breakdown {
    fn read(pid: u32) -> Option<Breakdown> {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
        let stack = PROBE_STACK as u64 / 1024;
        let mut out = Breakdown {
            stacks: 0,
            stacks_kb: 0,
            anon_kb: 0,
            file_kb: 0,
        };
        // (size in KiB, a probe stack?, file-backed?) of the current mapping.
        let mut current = (0, false, false);
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if let Some((from, to)) = first.split_once('-') {
                let (Ok(from), Ok(to)) =
                    (u64::from_str_radix(from, 16), u64::from_str_radix(to, 16))
                else {
                    continue;
                };
                let size = (to - from) / 1024;
                let perms = words.next().unwrap_or("");
                let path = words.nth(3).unwrap_or("");
                let anon = path.is_empty();
                let is_stack = anon && perms == "rw-p" && (stack..=stack + 16).contains(&size);
                if is_stack {
                    out.stacks += 1;
                }
                current = (size, is_stack, !anon && !path.starts_with('['));
            } else if first == "Rss:" {
                let kb: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                match current {
                    (_, true, _) => out.stacks_kb += kb,
                    (_, _, true) => out.file_kb += kb,
                    _ => out.anon_kb += kb,
                }
            }
        }
        Some(out)
    }

    fn print(&self) {
        let b = self;
        println!(
            "  memory  ~{} probe-thread stacks ({} KiB each) {} KB resident ({:.1} KB each); \
             other anonymous (heap, malloc arenas) {} KB; file-backed {} KB",
            b.stacks,
            PROBE_STACK / 1024,
            b.stacks_kb,
            b.stacks_kb as f64 / b.stacks.max(1) as f64,
            b.anon_kb,
            b.file_kb
        );
    }
}

// --- records ------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    lines: u64,
    unparsed: u64,
    /// Each probe's run starts (`ts`), ms since the epoch.
    starts: HashMap<String, Vec<i64>>,
    values: Vec<f64>,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn failed(&self) -> u64 {
        self.reasons.values().sum::<u64>() + self.unparsed
    }

    fn reason_list(&self) -> String {
        if self.reasons.is_empty() && self.unparsed == 0 {
            return String::new();
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{reason} x{n}"))
            .collect();
        if self.unparsed > 0 {
            parts.push(format!("unparsed lines x{}", self.unparsed));
        }
        format!(" ({})", parts.join(", "))
    }

    fn add(&mut self, line: &str) {
        self.lines += 1;
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            self.unparsed += 1;
            return;
        };
        let (Some(probe), Some(ts)) = (
            record["probe"].as_str(),
            record["ts"].as_str().and_then(parse_ts),
        ) else {
            self.unparsed += 1;
            return;
        };
        self.starts.entry(probe.to_owned()).or_default().push(ts);
        if let Some(value) = record["value"].as_f64() {
            self.values.push(value);
        }
        if let Some(reason) = record["reason"].as_str() {
            *self.reasons.entry(reason.to_owned()).or_default() += 1;
        }
    }
}

fn read_records(
    stdout: impl std::io::Read + Send + 'static,
    tally: Arc<Mutex<Tally>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            tally.lock().expect("tally").add(&line);
        }
    })
}

/// `2026-11-25T07:40:29.123Z` -> ms since the epoch.
fn parse_ts(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() != 24 || b[10] != b'T' || b[23] != b'Z' {
        return None;
    }
    let n = |from: usize, to: usize| ts.get(from..to)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss, ms) = (n(11, 13)?, n(14, 16)?, n(17, 19)?, n(20, 23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

fn percentiles(values: &[f64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: usize| sorted[(sorted.len() * p).div_ceil(100).max(1) - 1];
    format!(
        "median {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} values)",
        rank(50),
        rank(99),
        sorted[sorted.len() - 1],
        sorted.len()
    )
}

// --- small things -------------------------------------------------------------

struct Usage {
    user: Duration,
    system: Duration,
}

/// Reaps `child` with wait4(2), which also returns its resource usage.
fn wait_rusage(child: &mut Child) -> (ExitStatus, Usage) {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own unreaped child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
    let time = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    (
        ExitStatus::from_raw(status),
        Usage {
            user: time(usage.ru_utime),
            system: time(usage.ru_stime),
        },
    )
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}={value:?}: expected a positive integer")),
    )
}

fn pct_change(from: u64, to: u64) -> f64 {
    100.0 * (to as f64 - from as f64) / from.max(1) as f64
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
