//! CPU of the Prometheus outputs with 100 probes: one scrape of `/metrics`
//! (the listener thread's own CPU, read from its `/proc/self/task/TID/
//! schedstat`, so the client is not in the figure), the exposition's
//! rendering alone, and one atomic rewrite of the `.prom` file.
//!
//! `cargo bench --bench metrics`; `WSPROBE_BENCH_N` changes the number of
//! measured scrapes and rewrites (default 2000 each, after 100 warm-ups).
//! The figures are reported beside their targets, never asserted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsprobe::config;
use wsprobe::outcome::{Outcome, Reason};
use wsprobe::output::http::Listener;
use wsprobe::output::metrics::Metrics;
use wsprobe::output::textfile;

const PROBES: usize = 100;
const WARM_UP: usize = 100;
const DEFAULT_N: usize = 2000;
/// Targets: under 1 ms of CPU each.
const SCRAPE_CPU_US: f64 = 1000.0;
const REWRITE_CPU_US: f64 = 1000.0;

fn main() {
    let n = std::env::var("WSPROBE_BENCH_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_N);
    let metrics = Arc::new(metrics_with_runs());
    let mut text = String::new();
    metrics.render(&mut text);
    println!(
        "{PROBES} probes, two labels each: {} lines, {} bytes per exposition",
        text.lines().count(),
        text.len()
    );

    let render = cpu_per(n, || {
        text.clear();
        metrics.render(&mut text);
    });
    println!("render only:          {render:7.1} us CPU each");

    let dir = std::env::temp_dir().join(format!("wsprobe-bench-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("wsprobe.prom");
    let rewrite = cpu_per(n, || {
        text.clear();
        metrics.render(&mut text);
        textfile::replace(&path, text.as_bytes()).expect("rewrite");
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!("textfile rewrite:     {rewrite:7.1} us CPU each (target < {REWRITE_CPU_US:.0})");

    let listener = Listener::start("127.0.0.1:0", metrics.clone()).expect("listen");
    let addr = listener.local;
    let scrape = || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
            .expect("request");
        let mut body = Vec::new();
        stream.read_to_end(&mut body).expect("answer");
        assert!(body.starts_with(b"HTTP/1.1 200 OK"));
    };
    for _ in 0..WARM_UP {
        scrape();
    }
    let tid = thread_named("wsprobe-http").expect("the listener thread");
    let before = task_cpu(&tid);
    for _ in 0..n {
        scrape();
    }
    let per_scrape = (task_cpu(&tid) - before).as_secs_f64() * 1e6 / n as f64;
    println!(
        "/metrics scrape:      {per_scrape:7.1} us CPU each, listener thread (target < {SCRAPE_CPU_US:.0})"
    );
}

/// 100 probes (two labels each, half of them wss://) after some runs of
/// every kind, as the agent holds them.
fn metrics_with_runs() -> Metrics {
    let probes: Vec<String> = (0..PROBES)
        .map(|i| {
            let scheme = if i % 2 == 0 { "ws" } else { "wss" };
            format!(
                r#"{{"name": "probe-{i}", "url": "{scheme}://edge-{i}.example.net/socket",
                    "labels": {{"site": "site-{}", "tier": "edge"}}}}"#,
                i % 7
            )
        })
        .collect();
    let text = format!(r#"{{"probes": [{}]}}"#, probes.join(","));
    let loaded = config::load_str(&text, &|_| None).expect("bench config");
    let metrics = Metrics::new(&loaded.probes);
    for (i, spec) in loaded.probes.iter().enumerate() {
        for run in 0..20u64 {
            let mut outcome = Outcome::begin();
            let ms = Duration::from_micros(500 + 997 * (run * 13 + i as u64) % 40_000);
            outcome.timings.dns = Some(ms / 10);
            outcome.timings.connect = Some(ms / 5);
            outcome.timings.upgrade = Some(ms / 3);
            outcome.timings.open = Some(ms);
            outcome.timings.total = Some(ms);
            outcome.opened = run % 5 != 0;
            if run % 5 == 0 {
                outcome.reason = Some(Reason::ALL[(run as usize / 5) % Reason::ALL.len()]);
            }
            if spec.target.secure {
                outcome.timings.tls = Some(ms / 4);
                outcome.meta.cert_not_after = Some(1_900_000_000);
            }
            metrics.observe(spec, &outcome);
        }
    }
    metrics
}

/// Average CPU of `f` on this thread over `n` calls, after warm-up.
fn cpu_per(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..WARM_UP {
        f();
    }
    let start = task_cpu("thread-self");
    let wall = Instant::now();
    for _ in 0..n {
        f();
    }
    let cpu = task_cpu("thread-self") - start;
    assert!(wall.elapsed() >= cpu / 2, "clock sanity");
    cpu.as_secs_f64() * 1e6 / n as f64
}

/// The id (as /proc writes it) of this process's thread named `name`.
fn thread_named(name: &str) -> Option<String> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let task = task.ok()?;
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim() == name).then(|| task.file_name().to_string_lossy().into_owned())
    })
}

/// CPU a task has used: the first field of its schedstat (ns).
/// `"thread-self"` is the calling thread; yielding first brings its
/// figure up to date.
fn task_cpu(task: &str) -> Duration {
    std::thread::yield_now();
    let path = if task == "thread-self" {
        "/proc/thread-self/schedstat".to_owned()
    } else {
        format!("/proc/self/task/{task}/schedstat")
    };
    let text = std::fs::read_to_string(&path).expect("read schedstat (Linux only)");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat's first field");
    Duration::from_nanos(ns)
}
