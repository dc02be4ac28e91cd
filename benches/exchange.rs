//! Figures for issue 13 (samples and presets), beside their targets:
//!
//! 1. CPU per additional sample on one `ws://` socket: runs of 21 samples
//!    against runs of 1, back to back (`sample_interval_ms` 0), against
//!    the in-process echo server; (CPU(21) - CPU(1)) / 20. Target <= 25 us.
//! 2. The value of a `samples: 20` run (its median) against a one-sample
//!    run's, each the median over the runs. Target: within 0.05 ms.
//! 3. Memory per sample: the peak of the probing thread's live heap during
//!    one run of 100 samples against one of 2 (a counting allocator that
//!    counts only the probing thread). Target: no growth.
//! 4. Each preset's exchange against the same probe with the preset's
//!    judge replaced by a plain substring of the awaited reply and no
//!    keepalive answering: the same bytes on the same real server, so the
//!    difference is the probe's own overhead (node servers, aiosignalr and
//!    anvil, started as `tests/presets.rs` starts them; mosquitto is not
//!    in this bench). Median rtt over interleaved runs. Target <= 0.1 ms.
//!    Needs the servers of `.ci/install-proto.sh` (each row skipped, said
//!    so, without its server).
//!
//! `cargo bench --bench exchange`; `WSPROBE_BENCH_N` sets the runs per row
//! (default 300). Nothing is asserted; a failed probe stops the bench.

#[path = "support/proto.rs"]
mod proto;
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wsprobe::exchange::Expect;
use wsprobe::probe;
use wsprobe::spec::ProbeSpec;

use support::{succeeded, thread_cpu};

const WARM_UP: usize = 30;
const CPU_PER_SAMPLE_US: f64 = 25.0;
const MEDIAN_WITHIN_MS: f64 = 0.05;
const PRESET_OVERHEAD_MS: f64 = 0.1;
const SERVERS_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/presets/servers.js");
const PROTO: &str = "/opt/wsprobe-proto";
const READY_WAIT: Duration = Duration::from_secs(20);

fn main() {
    let runs = std::env::var("WSPROBE_BENCH_N")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(300);
    let echo = support::ws_echo_server();
    println!(
        "exchange ({} build): {runs} runs per row after {WARM_UP} warm-up runs",
        support::build_kind()
    );

    // 1. CPU per additional sample.
    let one = sampled(echo, 1);
    let many = sampled(echo, 21);
    let cpu_one = cpu_per_run(&one, runs);
    let cpu_many = cpu_per_run(&many, runs);
    let per_sample = (cpu_many - cpu_one) / 20.0;
    println!(
        "  CPU per additional sample  {per_sample:6.1} us  target <= {CPU_PER_SAMPLE_US} us  {}  \
         (1 sample {cpu_one:.1} us/run, 21 samples {cpu_many:.1} us/run)",
        verdict(per_sample <= CPU_PER_SAMPLE_US)
    );

    // 2. The median of 20 samples against a single sample's value.
    let twenty = sampled(echo, 20);
    let (single, of_twenty) = paired_medians(&one, &twenty, runs);
    let gap = (of_twenty - single).abs();
    println!(
        "  samples: 20 median        {of_twenty:.4} ms vs 1 sample {single:.4} ms: gap {gap:.4} ms  \
         target <= {MEDIAN_WITHIN_MS} ms  {}",
        verdict(gap <= MEDIAN_WITHIN_MS)
    );

    // 3. Heap per sample.
    let peak_2 = peak_heap(&sampled(echo, 2));
    let peak_100 = peak_heap(&sampled(echo, 100));
    let growth = (peak_100 as f64 - peak_2 as f64) / 98.0;
    println!(
        "  heap peak per sample       {growth:+.1} bytes  (run of 2: {peak_2} B, of 100: {peak_100} B)  \
         target: no growth  {}",
        verdict(growth <= 8.0)
    );

    // 4. Each preset against the same bytes judged by a plain substring of
    // the reply the preset awaits, so that both wait for the same message.
    type Start = fn() -> Result<Server, String>;
    let rows: [(&str, &str, &[u8], Start); 8] = [
        (
            "/graphql",
            "graphql-transport-ws",
            br#""type":"pong""#,
            || Server::node("graphql-transport-ws"),
        ),
        ("/graphql", "graphql-ws", br#""type":"data""#, || {
            Server::node("graphql-ws")
        }),
        ("/socket.io/", "socket.io", b"40{", || {
            Server::node("socket.io")
        }),
        ("/", "mqtt", &[0xd0, 0x00], || Server::node("aedes")),
        ("/stomp", "stomp", b"RECEIPT", || Server::node("stomp")),
        ("/socket/websocket", "phoenix", b"phx_reply", || {
            Server::node("phoenix")
        }),
        ("/hub", "signalr", b"{}\x1e", Server::signalr),
        ("/", "json-rpc", br#""result""#, Server::anvil),
    ];
    for (path, preset, reply, start) in rows {
        let server = match start() {
            Ok(server) => server,
            Err(missing) => {
                println!("  preset {preset:<21} skipped, {missing} (.ci/install-proto.sh)");
                continue;
            }
        };
        let spec = support::spec(serde_json::json!({
            "url": format!("ws://127.0.0.1:{}{path}", server.port),
            "interpretation": "round_trip_latency",
            "timeout_ms": 5000,
            "preset": preset,
        }));
        let mut plain = spec.clone();
        plain.session = None;
        if let Some(exchange) = plain.exchange.as_mut() {
            exchange.expect = Expect::Contains(reply.to_vec());
        }
        let (with_preset, plain_echo) = paired_medians(&spec, &plain, runs);
        let overhead = with_preset - plain_echo;
        println!(
            "  preset {preset:<21} rtt {with_preset:.4} ms vs same bytes {plain_echo:.4} ms: \
             {overhead:+.4} ms  target <= {PRESET_OVERHEAD_MS} ms  {}",
            verdict(overhead <= PRESET_OVERHEAD_MS)
        );
    }
}

/// A round-trip probe of `count` samples, back to back.
fn sampled(addr: std::net::SocketAddr, count: u32) -> ProbeSpec {
    support::spec(serde_json::json!({
        "url": format!("ws://{addr}/"),
        "interpretation": "round_trip_latency",
        "send_message": "ping ${SEQ}",
        "expect_message": "ping ${SEQ}",
        "timeout_ms": 5000,
        "samples": count,
        "sample_interval_ms": 0,
    }))
}

/// CPU of this thread per run, in microseconds.
fn cpu_per_run(spec: &ProbeSpec, runs: usize) -> f64 {
    for _ in 0..WARM_UP {
        succeeded(probe::run(spec));
    }
    let start = thread_cpu();
    for _ in 0..runs {
        succeeded(probe::run(spec));
    }
    (thread_cpu() - start).as_secs_f64() * 1e6 / runs as f64
}

/// The median value (rtt, ms) of `a` and of `b`, their runs interleaved so
/// that both see the same machine.
fn paired_medians(a: &ProbeSpec, b: &ProbeSpec, runs: usize) -> (f64, f64) {
    for _ in 0..WARM_UP {
        succeeded(probe::run(a));
        succeeded(probe::run(b));
    }
    let rtt = |spec| {
        let outcome = succeeded(probe::run(spec));
        outcome.timings.rtt.expect("a round trip has an rtt")
    };
    let (mut xs, mut ys) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        xs.push(rtt(a));
        ys.push(rtt(b));
    }
    (median_ms(&mut xs), median_ms(&mut ys))
}

fn median_ms(values: &mut [Duration]) -> f64 {
    values.sort_unstable();
    values[values.len() / 2].as_secs_f64() * 1e3
}

/// The probing thread's peak live heap during one run, above its level
/// before the run (the outcome is dropped after the reading).
fn peak_heap(spec: &ProbeSpec) -> usize {
    for _ in 0..5 {
        succeeded(probe::run(spec));
    }
    TRACKED.with(|t| t.set(true));
    LIVE.store(0, Ordering::SeqCst);
    PEAK.store(0, Ordering::SeqCst);
    let outcome = probe::run(spec);
    TRACKED.with(|t| t.set(false));
    succeeded(outcome);
    PEAK.load(Ordering::SeqCst)
}

thread_local! {
    /// Set on the probing thread while a run is measured.
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the live bytes of the tracked thread.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// SAFETY: every call is forwarded to `System` unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKED.with(Cell::get) {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if TRACKED.with(Cell::get) {
            // Frees of memory from before the run may take it below zero.
            let _ = LIVE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(layout.size()))
            });
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A real server of `.ci/install-proto.sh`, started as `tests/presets.rs`
/// starts it (stdin piped: its end, or the kill on drop, stops it).
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    /// `tests/presets/servers.js MODE`, which prints its port.
    fn node(mode: &str) -> Result<Server, String> {
        if !Path::new(PROTO).join("node_modules").is_dir() {
            return Err(format!("{PROTO}/node_modules is missing"));
        }
        let mut cmd = Command::new("node");
        cmd.args([SERVERS_JS, mode, PROTO]);
        Server::start(cmd, |line| line.parse().ok())
    }

    /// aiosignalr in its own venv: `tests/presets/signalr_server.py PORT`,
    /// which prints "ready".
    fn signalr() -> Result<Server, String> {
        let python = proto::signalr_python(Path::new(PROTO));
        if !python.exists() {
            return Err(format!("{} is missing", python.display()));
        }
        let port = free_port();
        Server::start(proto::signalr(&python, port), |line| {
            (line == "ready").then_some(port)
        })
    }

    /// anvil from its npm package, silent; ready once it accepts.
    fn anvil() -> Result<Server, String> {
        let binary = proto::anvil_binary(Path::new(PROTO));
        if !binary.exists() {
            return Err(format!("{} is missing", binary.display()));
        }
        let port = free_port();
        let child = proto::anvil(&binary, port)
            .spawn()
            .map_err(|e| format!("anvil does not start: {e}"))?;
        let server = Server { port, child };
        let until = Instant::now() + READY_WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= until {
                return Err(format!("anvil is not listening on {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Spawns `cmd` and reads its first stdout line, which `port_of` turns
    /// into the port it serves.
    fn start(mut cmd: Command, port_of: impl Fn(&str) -> Option<u16>) -> Result<Server, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{cmd:?} does not start: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        match port_of(line.trim()) {
            Some(port) => Ok(Server { port, child }),
            None => panic!("{cmd:?} said {line:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now, for servers that take it as an argument.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
