//! The agent, `wsprobe run`, through the real binary against local test
//! servers (SPEC.md, "The agent (`run`)"; README, "The agent"): the fixed
//! rate, SIGTERM/SIGINT while a run is blocked, SIGHUP reloads (an invalid
//! config, probes added and removed, log rotation), probes that never wait
//! on one another, no lost records, and outputs that fail (a closed stdout
//! pipe, a removed directory, a full disk).
//!
//! Each test starts its own agent with a config in a temp dir of its own,
//! reads stdout and stderr on reader threads, and waits on readiness
//! signals (the start-up log line, a connection reaching a server, a line
//! in a file) rather than sleeping. The first run of each probe comes after
//! a random delay in [0, min(interval, 5 s)), which every wait allows for.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::*;

/// How far the gap between two consecutive runs' `ts` may stray from the
/// probe's interval. Runs start at fixed monotonic ticks (first + k x
/// interval, README), so a gap differs from the interval only by the
/// difference of two thread wake-up latencies plus 1 ms of `ts` truncation;
/// on a shared 2-core machine running other tests those latencies stay
/// well under 50 ms. 100 ms (10 % of a 1 s interval) still catches what
/// matters: a run lost or added (a gap of 2000 or under 1000 - 100 ms), a
/// restarted schedule (a random new phase), and drift (the cadence test
/// holds every upgrade 300 ms, so an agent that waits an interval after
/// each run instead of keeping a fixed rate shows 1300 ms gaps).
const TICK_TOLERANCE_MS: i64 = 100;

/// SPEC.md: on SIGTERM and SIGINT the agent must "stop within one second".
const STOP_WITHIN: Duration = Duration::from_secs(1);

/// Bound on the start-up log line (a debug binary starts in milliseconds).
const START_WAIT: Duration = Duration::from_secs(10);

/// Bound on the first run of a probe whose interval is 5 s or more: the
/// random start delay (< 5 s) plus a margin.
const FIRST_RUN_WAIT: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------
// Config files
// ---------------------------------------------------------------------------

/// Writes `config` to `config.json` in `dir` and returns its path.
fn config_file(dir: &TempDir, config: &Value) -> PathBuf {
    let path = dir.join("config.json");
    write_config(&path, config);
    path
}

fn write_config(path: &Path, config: &Value) {
    let text = serde_json::to_string_pretty(config).expect("serialise config");
    std::fs::write(path, text).expect("write config");
}

/// A `handshake_latency` probe.
fn probe(name: &str, url: &str, interval_ms: u64, timeout_ms: u64) -> Value {
    json!({
        "name": name,
        "url": url,
        "interpretation": "handshake_latency",
        "interval_ms": interval_ms,
        "timeout_ms": timeout_ms,
    })
}

/// A whole config file: `probes`, records to `output` (`-` or a path).
fn config(probes: Vec<Value>, output: &str) -> Value {
    json!({ "output": { "ndjson": output }, "probes": probes })
}

// ---------------------------------------------------------------------------
// Servers that report on a channel of the test's own
// ---------------------------------------------------------------------------

/// Echo (as support's `echo_server`) that also reports the path of every
/// upgrade request: one path per run that reached it.
fn path_echo_server() -> (Server, Receiver<String>) {
    let (paths_tx, paths_rx) = mpsc::channel::<String>();
    let server = spawn_server(move |stream, tx| {
        let paths = paths_tx.clone();
        let Some(mut ws) = ws_accept(stream, tx, move |req, _| {
            let _ = paths.send(req.uri().path().to_owned());
        }) else {
            return;
        };
        serve_messages(&mut ws, tx, |ws, m| {
            let _ = ws.send(m.clone());
        });
    });
    (server, paths_rx)
}

/// Accepts TCP, reads whatever comes and never answers (as support's
/// `silent_after_tcp_server`), reporting each accepted connection at once:
/// when it arrives, a run is in flight and stays blocked until its deadline.
fn silent_server() -> (Server, Receiver<()>) {
    let (accepted_tx, accepted_rx) = mpsc::channel::<()>();
    let server = spawn_server(move |mut stream, _| {
        let _ = accepted_tx.send(());
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    (server, accepted_rx)
}

// ---------------------------------------------------------------------------
// The running agent
// ---------------------------------------------------------------------------

/// What the stdout reader saw.
enum Out {
    /// A complete line, its `\n` removed.
    Line(String),
    /// Bytes after the last `\n` when stdout ended: a partial record.
    Partial(String),
}

/// `wsprobe run -c CONFIG`, killed on drop if still running (a failed
/// test must not leave an agent behind).
struct Agent {
    child: Child,
    /// `None` when the test took stdout itself.
    stdout: Option<Receiver<Out>>,
    stderr: Receiver<String>,
    /// Every stderr line read so far, in order.
    log: Vec<String>,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        Agent::spawn(config, true).0
    }

    /// Starts the agent and hands its stdout pipe to the test.
    fn start_keeping_stdout(config: &Path) -> (Agent, ChildStdout) {
        let (agent, stdout) = Agent::spawn(config, false);
        (agent, stdout.expect("stdout pipe"))
    }

    fn spawn(config: &Path, read_stdout: bool) -> (Agent, Option<ChildStdout>) {
        let mut child = wsprobe()
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsprobe run");
        let stderr = child.stderr.take().expect("stderr pipe");
        let (err_tx, err_rx) = mpsc::channel();
        thread::spawn(move || {
            // Drains stderr to the end even if nobody listens any more.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = err_tx.send(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout pipe");
        let (reader, raw) = if read_stdout {
            (Some(read_stdout_lines(stdout)), None)
        } else {
            (None, Some(stdout))
        };
        let agent = Agent {
            child,
            stdout: reader,
            stderr: err_rx,
            log: Vec::new(),
        };
        (agent, raw)
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) has no memory effects; the pid is our own child,
        // not reaped yet (only `wait_exit` and `drop` reap it).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Reads the stderr lines already delivered; returns them all, joined.
    fn stderr_so_far(&mut self) -> String {
        self.log.extend(self.stderr.try_iter());
        self.log.join("\n")
    }

    /// The number of stderr lines read so far, to look at later ones only.
    fn log_mark(&self) -> usize {
        self.log.len()
    }

    /// Waits (at most `within`) for a stderr line from index `from` on that
    /// `pick` accepts, and returns it.
    fn wait_log(
        &mut self,
        from: usize,
        what: &str,
        within: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> String {
        let child = &mut self.child;
        wait_line(
            &self.stderr,
            &mut self.log,
            (from, what, within),
            pick,
            || format!("{:?}", child.try_wait()),
        )
    }

    /// Waits for the start-up line ("wsprobe: started N probe(s)"), which
    /// the agent logs before it starts the probe threads; returns the wall
    /// clock (ms since the epoch) when it was read.
    fn wait_started(&mut self) -> i64 {
        self.wait_log(0, "announcing the start", START_WAIT, |l| {
            l.starts_with("wsprobe: started ")
        });
        now_millis()
    }

    /// The next record on stdout, or `None` once `deadline` has passed.
    /// Panics on a partial line or if stdout ends (the agent exited).
    fn next_record(&mut self, deadline: Instant) -> Option<Record> {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = self
            .stdout
            .as_ref()
            .expect("stdout is read by the test")
            .recv_timeout(left);
        match got {
            Ok(Out::Line(line)) => Some(parse_record(&line)),
            Ok(Out::Partial(rest)) => panic!(
                "stdout ended with a partial line {rest:?}; stderr:\n{}",
                self.stderr_so_far()
            ),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!(
                "stdout ended: the agent exited ({:?}); stderr:\n{}",
                self.child.try_wait(),
                self.stderr_so_far()
            ),
        }
    }

    /// The records already on stdout, without waiting.
    fn records_now(&mut self) -> Vec<Record> {
        self.records_for(Duration::ZERO)
    }

    /// Every record that arrives within `span`.
    fn records_for(&mut self, span: Duration) -> Vec<Record> {
        let deadline = Instant::now() + span;
        let mut records = Vec::new();
        while let Some(record) = self.next_record(deadline) {
            records.push(record);
        }
        records
    }

    /// Waits (at most `bound`) for the agent to exit; returns its status and
    /// how long it took from the call.
    fn wait_exit(&mut self, bound: Duration) -> (ExitStatus, Duration) {
        let from = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, from.elapsed());
            }
            if from.elapsed() > bound {
                panic!(
                    "the agent still runs {bound:?} later; stderr:\n{}",
                    self.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// After the exit: what was left on stdout and the whole of stderr.
    fn finish(&mut self) -> (Vec<Out>, String) {
        let mut rest = Vec::new();
        if let Some(stdout) = &self.stdout {
            loop {
                match stdout.recv_timeout(EVENT_WAIT) {
                    Ok(out) => rest.push(out),
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => panic!("stdout still open after the exit"),
                }
            }
        }
        while let Ok(line) = self.stderr.recv_timeout(EVENT_WAIT) {
            self.log.push(line);
        }
        (rest, self.log.join("\n"))
    }

    /// Sends `signal` (SIGTERM or SIGINT) and checks the contract: exit 0
    /// within a second, nothing partial on stdout. Returns the records left
    /// on stdout and the whole of stderr.
    fn stop_with(&mut self, signal: libc::c_int) -> (Vec<Record>, String) {
        self.signal(signal);
        let (status, took) = self.wait_exit(Duration::from_secs(5));
        let (rest, stderr) = self.finish();
        assert_eq!(
            status.code(),
            Some(0),
            "exit status after signal {signal}: {status}; stderr:\n{stderr}"
        );
        assert!(
            took < STOP_WITHIN,
            "the agent took {took:?} to stop after signal {signal} (at most {STOP_WITHIN:?}); \
             stderr:\n{stderr}"
        );
        let records = rest
            .into_iter()
            .map(|out| match out {
                Out::Line(line) => parse_record(&line),
                Out::Partial(rest) => {
                    panic!("stdout ended with a partial line {rest:?}; stderr:\n{stderr}")
                }
            })
            .collect();
        (records, stderr)
    }

    fn terminate(&mut self) -> (Vec<Record>, String) {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads stdout as lines on a thread of its own, as a collector would.
fn read_stdout_lines(stdout: ChildStdout) -> Receiver<Out> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut buf = Vec::new();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let out = if buf.last() == Some(&b'\n') {
                        buf.pop();
                        Out::Line(String::from_utf8_lossy(&buf).into_owned())
                    } else {
                        Out::Partial(String::from_utf8_lossy(&buf).into_owned())
                    };
                    let _ = tx.send(out);
                }
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------
// Record and file checks
// ---------------------------------------------------------------------------

fn ts_ms(record: &Record) -> i64 {
    parse_ts_millis(&record.ts)
        .unwrap_or_else(|| panic!("ts {:?} is not RFC 3339 UTC with milliseconds", record.ts))
}

/// The `ts` (ms) of `probe`'s records, in the order they came.
fn times_of(records: &[Record], probe: &str) -> Vec<i64> {
    records
        .iter()
        .filter(|r| r.probe == probe)
        .map(ts_ms)
        .collect()
}

/// (probe, ts) of each record, for failure messages.
fn summary(records: &[Record]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| (r.probe.clone(), r.ts.clone()))
        .collect()
}

/// Every gap between consecutive runs is `interval_ms`, within
/// `TICK_TOLERANCE_MS`: a fixed rate, no run lost, none added.
fn assert_fixed_rate(what: &str, ts: &[i64], interval_ms: i64) {
    let gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .all(|gap| (gap - interval_ms).abs() <= TICK_TOLERANCE_MS),
        "{what}: gaps between runs {gaps:?} ms; expected {interval_ms} ± {TICK_TOLERANCE_MS} \
         each (ts {ts:?})"
    );
}

/// The first run starts within [0, min(interval, 5 s)) of the start-up.
fn assert_first_run_in_spread(what: &str, first_ts: i64, started_ms: i64, spread_ms: i64) {
    let after = first_ts - started_ms;
    assert!(
        (-TICK_TOLERANCE_MS..spread_ms + TICK_TOLERANCE_MS).contains(&after),
        "{what}: first run {after} ms after the start-up line; expected within [0, {spread_ms}) \
         ± {TICK_TOLERANCE_MS}"
    );
}

/// The complete lines of `path` (none when it does not exist).
fn file_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| l.trim_end_matches('\n').to_owned())
        .collect()
}

/// Waits (at most `within`) until `path` holds at least `n` complete lines,
/// checking the file every 20 ms.
fn wait_for_lines(agent: &mut Agent, path: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let lines = file_lines(path);
        if lines.len() >= n {
            return lines;
        }
        if Instant::now() > deadline {
            panic!(
                "{} holds {} line(s), not {n}, after {within:?}; stderr:\n{}",
                path.display(),
                lines.len(),
                agent.stderr_so_far()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The records of a file the agent wrote: complete lines, each a record.
fn file_records(path: &Path) -> Vec<Record> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a partial line:\n{text}",
        path.display()
    );
    text.lines().map(parse_record).collect()
}

// ---------------------------------------------------------------------------
// Cadence
// ---------------------------------------------------------------------------

/// One probe, interval 1 s, for 5 s: 4 to 6 records, evenly spaced, the
/// first within [0, 1 s) of the start (SPEC.md: a random first delay in
/// [0, min(interval, 5 s)), then a fixed rate).
#[test]
fn one_probe_runs_at_a_fixed_rate_after_a_random_start() {
    // Each upgrade takes 300 ms: a fixed rate keeps 1000 ms gaps, an agent
    // that waits an interval after each run shows 1300 ms ones.
    let server = slow_upgrade_server(Duration::from_millis(300));
    let dir = TempDir::new("wsprobe-agent-test-cadence");
    let cfg = config_file(
        &dir,
        &config(vec![probe("steady", &server.url(), 1000, 1000)], "-"),
    );
    let mut agent = Agent::start(&cfg);
    let started = agent.wait_started();
    let records = agent.records_for(Duration::from_secs(5));
    let (_, stderr) = agent.terminate();

    let ts = times_of(&records, "steady");
    assert_eq!(
        ts.len(),
        records.len(),
        "records of an unknown probe: {:?}",
        summary(&records)
    );
    assert!(
        (4..=6).contains(&records.len()),
        "{} records in 5 s at a 1 s interval: {:?}\nstderr:\n{stderr}",
        records.len(),
        summary(&records)
    );
    assert_first_run_in_spread("steady", ts[0], started, 1000);
    assert_fixed_rate("steady", &ts, 1000);
    for record in &records {
        assert_eq!(record.reason, None, "{record:#?}");
    }
}

#[test]
fn a_frozen_agent_resumes_its_rate_without_a_burst_of_missed_runs() {
    // A router frozen for a while (SIGSTOP, then SIGCONT): the ticks it
    // slept through are skipped and counted, not run back to back nor run
    // late (their deadlines passed while the agent slept: a late run
    // would report the agent's own freeze as the endpoint's timeout), and
    // the probe is back on its rate at once.
    let server = echo_server();
    let dir = TempDir::new("wsprobe-agent-test-frozen");
    let cfg = config_file(
        &dir,
        &config(vec![probe("frozen", &server.url(), 1000, 500)], "-"),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    let before = agent.next_record(Instant::now() + Duration::from_secs(5));
    assert!(before.is_some(), "no record before the freeze");
    agent.signal(libc::SIGSTOP);
    // The fault's length, not a synchronisation: three ticks frozen.
    thread::sleep(Duration::from_millis(3000));
    let mut records = vec![before.unwrap()];
    records.extend(agent.records_now());
    let resumed_ms = now_millis();
    agent.signal(libc::SIGCONT);
    let after = agent.records_for(Duration::from_millis(4600));
    records.extend(after.iter().cloned());
    let (rest, stderr) = agent.terminate();
    records.extend(rest);

    let ts = times_of(&after, "frozen");
    assert!(
        (3..=5).contains(&ts.len()),
        "{} records in 4.6 s after the freeze at a 1 s interval: {:?}\nstderr:\n{stderr}",
        ts.len(),
        summary(&after)
    );
    assert_fixed_rate("frozen", &ts[ts.len() - 3..], 1000);
    // A run frozen in flight (started before SIGCONT) may have missed its
    // deadline; every run started after it measures the endpoint.
    for record in after.iter().filter(|r| ts_ms(r) >= resumed_ms) {
        assert_eq!(record.reason, None, "{record:#?}\nstderr:\n{stderr}");
    }
    // The stop accounts for every tick: 2 or 3 skipped while frozen, and
    // every run's record read here.
    let account = stderr
        .lines()
        .find_map(|l| l.strip_prefix("wsprobe: ticks: "))
        .unwrap_or_else(|| panic!("no account of the ticks at the stop:\n{stderr}"));
    let numbers: Vec<u64> = account
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [runs, skipped, written, dropped, cut_short] = numbers[..] else {
        panic!("the account has not five numbers: {account}");
    };
    assert!((2..=3).contains(&skipped), "{account}");
    assert_eq!(written, records.len() as u64, "{account}");
    assert_eq!((dropped, runs), (0, written + cut_short), "{account}");
}

/// An echo server on a port of the test's choosing, until `stop`: it then
/// closes its listener, so connects are refused until another one binds.
struct Restartable {
    stop: mpsc::Sender<()>,
    port: u16,
    done: thread::JoinHandle<()>,
}

impl Restartable {
    fn bind(port: u16) -> Restartable {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let (stop, stopped) = mpsc::channel::<()>();
        let done = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.try_recv().is_ok() {
                    return;
                }
                let Ok(stream) = stream else { continue };
                thread::spawn(move || {
                    let (tx, _rx) = mpsc::channel();
                    if let Some(mut ws) = ws_accept(stream, &tx, choose_first_protocol) {
                        serve_messages(&mut ws, &tx, |ws, m| {
                            let _ = ws.send(m.clone());
                        });
                    }
                });
            }
        });
        Restartable { stop, port, done }
    }

    /// Closes the listener; returns once it is closed.
    fn shut(self) {
        let _ = self.stop.send(());
        // Wakes the accept loop, which sees the stop and drops the listener.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        self.done.join().expect("the accept loop ended");
    }
}

#[test]
fn an_endpoint_that_restarts_is_seen_down_then_up_again() {
    // A server that stops listening and comes back on the same port: the
    // probe reports the refusal while it is down and measures again once
    // it is back, with no restart of the agent. Each step waits for the
    // record that shows it, never for a time.
    let server = Restartable::bind(0);
    let port = server.port;
    let dir = TempDir::new("wsprobe-agent-test-restart");
    let url = format!("ws://127.0.0.1:{port}/socket");
    let mut up = probe("restart", &url, 1000, 500);
    up["interpretation"] = json!("round_trip_latency");
    up["send_message"] = json!("hi");
    up["expect_message"] = json!("hi");
    let cfg = config_file(&dir, &config(vec![up], "-"));
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    let within = || Instant::now() + Duration::from_secs(10);
    let until = |agent: &mut Agent, what: &str, pick: &dyn Fn(&Record) -> bool| -> Record {
        loop {
            let record = agent
                .next_record(within())
                .unwrap_or_else(|| panic!("no record {what} within 10 s"));
            if pick(&record) {
                return record;
            }
        }
    };
    until(&mut agent, "while up", &|r| r.reason.is_none());
    server.shut();
    let down = until(&mut agent, "while down", &|r| r.reason.is_some());
    assert_eq!(down.reason.as_deref(), Some("ws_open_failed"), "{down:#?}");
    assert_eq!(down.meta.phase.as_deref(), Some("connect"), "{down:#?}");
    let back = Restartable::bind(port);
    let again = until(&mut agent, "once back", &|r| r.reason.is_none());
    assert!(again.value.is_some(), "{again:#?}");
    let (_, stderr) = agent.terminate();
    assert!(!stderr.contains("internal error"), "{stderr}");
    back.shut();
}

#[test]
fn a_down_endpoint_with_interval_equal_to_timeout_keeps_its_rate() {
    // interval_ms = timeout_ms, as the contract allows: each run times out
    // and ends just past the next tick. Skipping that tick would halve the
    // records of exactly the endpoint that is down.
    let (silent, _accepted) = silent_server();
    let dir = TempDir::new("wsprobe-agent-test-down-rate");
    let cfg = config_file(
        &dir,
        &config(vec![probe("down", &silent.url(), 1000, 1000)], "-"),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    let records = agent.records_for(Duration::from_millis(6500));
    let (_, stderr) = agent.terminate();

    let ts = times_of(&records, "down");
    for record in &records {
        assert_eq!(
            record.reason.as_deref(),
            Some("ws_handshake_timeout"),
            "{record:#?}"
        );
    }
    // The first run starts within 1 s and ends 1 s later: 5 or 6 records
    // in 6.5 s at the full rate, 3 when every other tick is skipped.
    assert!(
        ts.len() >= 5,
        "{} records in 6.5 s: {:?}\nstderr:\n{stderr}",
        ts.len(),
        summary(&records)
    );
    assert_fixed_rate("down", &ts, 1000);
}

/// The opcodes of the whole client frames (masked, as a client's are) in
/// `bytes`.
fn client_opcodes(bytes: &[u8]) -> Vec<u8> {
    let mut opcodes = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 if at + 4 <= bytes.len() => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                4,
            ),
            127 if at + 10 <= bytes.len() => {
                let mut size = [0u8; 8];
                size.copy_from_slice(&bytes[at + 2..at + 10]);
                (u64::from_be_bytes(size) as usize, 10)
            }
            126 | 127 => break,
            short => (short as usize, 2),
        };
        let end = at + header + 4 + len;
        if end > bytes.len() {
            break;
        }
        opcodes.push(bytes[at] & 0x0f);
        at = end;
    }
    opcodes
}

#[test]
fn the_close_after_a_reply_timeout_gives_way_to_the_next_tick() {
    // Opens, never replies, never answers a Close: the close's own second
    // would push every run past the next tick when interval = timeout.
    // It reads raw bytes, and at the end reports the opcodes of the
    // frames it got: the Close must still be sent, only not waited for.
    let server = spawn_server(|stream, tx| {
        let Some(mut ws) = ws_accept(stream, tx, |_, _| {}) else {
            return;
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = ws.get_mut().read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(Event::Binary(client_opcodes(&got)));
    });
    let dir = TempDir::new("wsprobe-agent-test-close-gives-way");
    let mut mute = probe("mute", &server.url(), 1000, 1000);
    mute["interpretation"] = json!("round_trip_latency");
    mute["send_message"] = json!("ping");
    let cfg = config_file(&dir, &config(vec![mute], "-"));
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    let records = agent.records_for(Duration::from_millis(6500));
    let (_, stderr) = agent.terminate();

    let ended: Vec<Vec<u8>> = server
        .drain()
        .into_iter()
        .filter_map(|event| match event {
            Event::Binary(opcodes) => Some(opcodes),
            _ => None,
        })
        .collect();
    // The run in flight at the SIGTERM is abandoned without a Close.
    let without_close = ended.iter().filter(|ops| !ops.contains(&0x8)).count();
    assert!(
        ended.len() >= 4 && without_close <= 1,
        "opcodes per connection: {ended:?}"
    );

    let ts = times_of(&records, "mute");
    for record in &records {
        assert_eq!(
            record.reason.as_deref(),
            Some("ws_reply_timeout"),
            "{record:#?}"
        );
        assert_eq!(record.meta.close_clean, Some(false), "{record:#?}");
    }
    assert!(
        ts.len() >= 5,
        "{} records in 6.5 s: {:?}\nstderr:\n{stderr}",
        ts.len(),
        summary(&records)
    );
    assert_fixed_rate("mute", &ts, 1000);
}

// ---------------------------------------------------------------------------
// SIGTERM / SIGINT
// ---------------------------------------------------------------------------

/// While "stuck" is blocked on a server that never answers (10 s deadline),
/// `signal` stops the agent: exit 0 within a second, every stdout line a
/// complete record, nothing from the abandoned run, and no completed
/// record of "fine" lost.
fn stops_at_once_while_a_run_is_blocked(signal: libc::c_int, tag: &str) {
    let (silent, accepted) = silent_server();
    let echo = echo_server();
    let dir = TempDir::new(&format!("wsprobe-agent-test-{tag}"));
    let cfg = config_file(
        &dir,
        &config(
            vec![
                probe("stuck", &silent.url(), 10_000, 10_000),
                probe("fine", &echo.url(), 1000, 1000),
            ],
            "-",
        ),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    // The first run of "stuck" starts within 5 s and then hangs in the
    // upgrade for 10 s.
    if accepted.recv_timeout(FIRST_RUN_WAIT).is_err() {
        panic!(
            "\"stuck\" never connected; stderr:\n{}",
            agent.stderr_so_far()
        );
    }
    let mut records = agent.records_now();
    let (rest, stderr) = agent.stop_with(signal);
    records.extend(rest);

    assert!(
        records.iter().all(|r| r.probe != "stuck"),
        "the abandoned run of \"stuck\" wrote a record: {:?}\nstderr:\n{stderr}",
        summary(&records)
    );
    assert_fixed_rate("fine", &times_of(&records, "fine"), 1000);
}

#[test]
fn sigterm_stops_within_a_second_while_a_run_is_blocked() {
    stops_at_once_while_a_run_is_blocked(libc::SIGTERM, "sigterm");
}

#[test]
fn sigint_stops_within_a_second_while_a_run_is_blocked() {
    stops_at_once_while_a_run_is_blocked(libc::SIGINT, "sigint");
}

// ---------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------

/// An invalid config on SIGHUP: every problem is logged (naming the probe
/// and the field), nothing of it is applied (not even its valid parts), and
/// the old probe keeps its schedule.
#[test]
fn sighup_with_an_invalid_config_logs_every_problem_and_keeps_the_old_one() {
    let echo = echo_server();
    let dir = TempDir::new("wsprobe-agent-test-invalid");
    let cfg = config_file(
        &dir,
        &config(vec![probe("keeper", &echo.url(), 1000, 1000)], "-"),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    let first = agent
        .next_record(Instant::now() + EVENT_WAIT)
        .expect("a first record of \"keeper\"");

    // Valid but for "broken": keeper's interval would change and "newbie"
    // would start, if any of it were applied.
    let mut broken = probe("broken", "http://127.0.0.1:1/", 1000, 1000);
    broken["intervall"] = json!(2000);
    write_config(
        &cfg,
        &config(
            vec![
                probe("keeper", &echo.url(), 2000, 1000),
                probe("newbie", &echo.url(), 1000, 1000),
                broken,
            ],
            "-",
        ),
    );
    let mark = agent.log_mark();
    agent.signal(libc::SIGHUP);
    agent.wait_log(
        mark,
        "about the unknown field \"intervall\" of \"broken\"",
        EVENT_WAIT,
        |l| l.contains("broken") && l.contains("intervall"),
    );
    agent.wait_log(
        mark,
        "about the http:// url of \"broken\"",
        EVENT_WAIT,
        |l| l.contains("broken") && l.contains("url"),
    );

    let mut records = vec![first];
    records.extend(agent.records_for(Duration::from_millis(3500)));
    let (rest, stderr) = agent.terminate();
    records.extend(rest);

    assert!(
        records.iter().all(|r| r.probe == "keeper"),
        "a probe of the invalid config ran: {:?}\nstderr:\n{stderr}",
        summary(&records)
    );
    let ts = times_of(&records, "keeper");
    assert!(
        ts.len() >= 4,
        "\"keeper\" stopped after the invalid reload: {ts:?}\nstderr:\n{stderr}"
    );
    assert_fixed_rate("keeper after an invalid reload", &ts, 1000);
}

#[test]
fn a_probe_removed_while_its_run_is_in_flight_writes_no_record() {
    // "leaving" is blocked on a server that never answers (3 s deadline)
    // when a reload removes it: the run ends, and its record must not be
    // written for a probe that is no longer configured.
    let (silent, accepted) = silent_server();
    let echo = echo_server();
    let dir = TempDir::new("wsprobe-agent-test-removed-in-flight");
    let staying = probe("staying", &echo.url(), 1000, 1000);
    let leaving = probe("leaving", &silent.url(), 3000, 3000);
    let cfg = config_file(&dir, &config(vec![staying.clone(), leaving], "-"));
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    if accepted.recv_timeout(FIRST_RUN_WAIT).is_err() {
        panic!(
            "\"leaving\" never connected; stderr:\n{}",
            agent.stderr_so_far()
        );
    }
    write_config(&cfg, &config(vec![staying], "-"));
    agent.signal(libc::SIGHUP);
    // Past the in-flight run's deadline.
    let after = agent.records_for(Duration::from_millis(4000));
    let (_, stderr) = agent.terminate();

    assert!(
        after.iter().all(|r| r.probe != "leaving"),
        "a record of the removed probe: {:?}\nstderr:\n{stderr}",
        summary(&after)
    );
    assert!(
        times_of(&after, "staying").len() >= 3,
        "{:?}\nstderr:\n{stderr}",
        summary(&after)
    );
}

/// A SIGHUP that arrives while the config is still being read (here held
/// up by a CA file that is a FIFO nobody has written yet) is a reload once
/// the agent runs, not the end of the process: the handlers are in place
/// before the config is read.
#[test]
fn sighup_while_the_config_loads_is_a_reload_once_it_runs() {
    let dir = TempDir::new("wsprobe-agent-test-early-hup");
    let fifo = dir.join("ca.pem");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo has no memory effects.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut tls_probe = probe("early", "wss://127.0.0.1:1/", 1000, 1000);
    tls_probe["tls"] = json!({ "ca_file": fifo.to_str().unwrap() });
    let cfg = config_file(&dir, &config(vec![tls_probe], "-"));
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a certificate")
        .cert
        .pem();

    let mut agent = Agent::start(&cfg);
    let mut load = open_for_writing(&fifo, "the config load");
    agent.signal(libc::SIGHUP);
    // An agent the SIGHUP ended has no reader: the write fails, and the
    // wait below says how the agent exited.
    let _ = load.write_all(ca.as_bytes());
    drop(load);
    agent.wait_started();

    let mark = agent.log_mark();
    let mut reload = open_for_writing(&fifo, "the reload the SIGHUP asked for");
    reload.write_all(ca.as_bytes()).expect("feed the reload");
    drop(reload);
    agent.wait_log(mark, "announcing the reload", EVENT_WAIT, |l| {
        l.contains("reload: 1 probe(s)")
    });
    agent.terminate();
}

/// Opens a FIFO for writing, which returns once a reader has it open:
/// then the agent is reading it, inside `during`.
fn open_for_writing(fifo: &Path, during: &str) -> std::fs::File {
    let (tx, rx) = mpsc::channel();
    let path = fifo.to_path_buf();
    thread::spawn(move || {
        let _ = tx.send(std::fs::OpenOptions::new().write(true).open(path));
    });
    rx.recv_timeout(START_WAIT)
        .unwrap_or_else(|_| panic!("the agent did not open the CA file for {during}"))
        .expect("open the FIFO for writing")
}

/// SIGHUP with "arriving" added and "leaving" removed: "arriving" starts,
/// "leaving" stops, and "steady", unchanged,
/// keeps its schedule. Its interval is 6 s and the HUP comes right after
/// one of its runs, so a restart (a new first run within 5 s of the HUP)
/// cannot pass for the next tick, 6 s after the last run.
#[test]
fn sighup_adds_and_removes_probes_and_unchanged_ones_keep_their_schedule() {
    let echo = echo_server();
    let dir = TempDir::new("wsprobe-agent-test-reload");
    let steady = probe("steady", &echo.url_path("/steady"), 6000, 1000);
    let leaving = probe("leaving", &echo.url_path("/leaving"), 1000, 1000);
    let arriving = probe("arriving", &echo.url_path("/arriving"), 1000, 1000);
    let cfg = config_file(&dir, &config(vec![steady.clone(), leaving], "-"));
    let mut agent = Agent::start(&cfg);
    agent.wait_started();

    // Wait for a run of "steady" that comes after "leaving" has run.
    let mut before: Vec<Record> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let last_steady = loop {
        let Some(record) = agent.next_record(deadline) else {
            panic!(
                "no run of \"steady\" after one of \"leaving\": {:?}\nstderr:\n{}",
                summary(&before),
                agent.stderr_so_far()
            );
        };
        let steady_after_leaving =
            record.probe == "steady" && before.iter().any(|r| r.probe == "leaving");
        let ts = ts_ms(&record);
        before.push(record);
        if steady_after_leaving {
            break ts;
        }
    };

    write_config(&cfg, &config(vec![steady, arriving], "-"));
    let hup_ms = now_millis();
    agent.signal(libc::SIGHUP);

    // Until the next run of "steady" (due at last_steady + 6 s), or 1 s
    // past it.
    let wait_ms = (last_steady + 7000 - now_millis()).max(0) as u64;
    let until = Instant::now() + Duration::from_millis(wait_ms);
    let mut after: Vec<Record> = Vec::new();
    while let Some(record) = agent.next_record(until) {
        let done = record.probe == "steady";
        after.push(record);
        if done {
            break;
        }
    }
    let (_, stderr) = agent.terminate();

    let steady_ts = times_of(&after, "steady");
    assert_eq!(
        steady_ts.len(),
        1,
        "\"steady\" after the reload (last run before it at {last_steady}): {:?}\nstderr:\n{stderr}",
        summary(&after)
    );
    let gap = steady_ts[0] - last_steady;
    assert!(
        (gap - 6000).abs() <= TICK_TOLERANCE_MS,
        "\"steady\" ran {gap} ms after its previous run across the reload, not 6000 ± \
         {TICK_TOLERANCE_MS}: its schedule was reset\nstderr:\n{stderr}"
    );

    let leaving_after: Vec<i64> = times_of(&after, "leaving");
    assert!(
        leaving_after.is_empty(),
        "\"leaving\" kept running after the reload (HUP at {hup_ms}): {leaving_after:?}\n\
         stderr:\n{stderr}"
    );

    assert!(
        before.iter().all(|r| r.probe != "arriving"),
        "\"arriving\" ran before the reload"
    );
    let arriving_ts = times_of(&after, "arriving");
    assert!(
        arriving_ts.len() >= 4,
        "\"arriving\" over ~6 s after the reload: {arriving_ts:?}\nstderr:\n{stderr}"
    );
    assert_fixed_rate("arriving", &arriving_ts, 1000);
}

/// logrotate: rename the file, then SIGHUP. New records go to a new file at
/// the configured path, the renamed one stops growing, and between them no
/// record is lost.
#[test]
fn sighup_after_a_rename_reopens_the_output_file_at_its_path() {
    let echo = echo_server();
    let dir = TempDir::new("wsprobe-agent-test-rotate");
    let out = dir.join("records.ndjson");
    let rotated = dir.join("records.ndjson.1");
    let cfg = config_file(
        &dir,
        &config(
            vec![probe("rotated", &echo.url(), 1000, 1000)],
            out.to_str().expect("utf-8 temp path"),
        ),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    wait_for_lines(&mut agent, &out, 1, EVENT_WAIT);

    std::fs::rename(&out, &rotated).expect("rename the output file");
    agent.signal(libc::SIGHUP);
    wait_for_lines(&mut agent, &out, 1, EVENT_WAIT);
    // Lines go to the writer in order, so once the new file has one, the
    // renamed file is complete.
    let frozen = std::fs::read(&rotated).expect("read the renamed file");
    wait_for_lines(&mut agent, &out, 3, EVENT_WAIT);
    let now = std::fs::read(&rotated).expect("read the renamed file");
    assert_eq!(
        String::from_utf8_lossy(&now),
        String::from_utf8_lossy(&frozen),
        "the renamed file still grows after the reload"
    );

    let (stdout_records, stderr) = agent.terminate();
    assert!(
        stdout_records.is_empty(),
        "records went to stdout with a file output: {:?}",
        summary(&stdout_records)
    );
    let old = file_records(&rotated);
    let new = file_records(&out);
    assert!(
        !old.is_empty(),
        "the renamed file is empty\nstderr:\n{stderr}"
    );
    let ts: Vec<i64> = old.iter().chain(&new).map(ts_ms).collect();
    assert_fixed_rate("records across the rotation", &ts, 1000);
}

// ---------------------------------------------------------------------------
// Independence and completeness
// ---------------------------------------------------------------------------

/// "hung" waits 5 s on a server that never answers; "healthy" keeps its
/// 1 s cadence meanwhile (README: probes never wait on one another).
#[test]
fn a_hung_probe_does_not_delay_another() {
    let (silent, accepted) = silent_server();
    let echo = echo_server();
    let dir = TempDir::new("wsprobe-agent-test-independent");
    let cfg = config_file(
        &dir,
        &config(
            vec![
                probe("hung", &silent.url(), 5000, 5000),
                probe("healthy", &echo.url(), 1000, 1000),
            ],
            "-",
        ),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    if accepted.recv_timeout(FIRST_RUN_WAIT).is_err() {
        panic!(
            "\"hung\" never connected; stderr:\n{}",
            agent.stderr_so_far()
        );
    }
    let blocked_from = now_millis();
    let mut records = agent.records_now();
    // "hung" stays blocked for the next 4 s (its deadline is 5 s away).
    let during = agent.records_for(Duration::from_secs(4));
    let (_, stderr) = agent.terminate();

    assert!(
        during.iter().all(|r| r.probe == "healthy"),
        "\"hung\" finished early (the test assumes it blocks 5 s): {:?}",
        summary(&during)
    );
    let while_blocked = times_of(&during, "healthy")
        .into_iter()
        .filter(|&ts| ts >= blocked_from)
        .count();
    assert!(
        while_blocked >= 3,
        "{while_blocked} run(s) of \"healthy\" in the 4 s \"hung\" was blocked: {:?}\n\
         stderr:\n{stderr}",
        summary(&during)
    );
    records.extend(during);
    assert_fixed_rate("healthy", &times_of(&records, "healthy"), 1000);
}

/// 10 probes at 1 s for 11 s: at least 100 runs, each with its record. Per
/// probe, the records form an unbroken 1 s series, and every run the server
/// saw has a record, but for at most one in flight at the SIGTERM.
#[test]
fn a_hundred_runs_lose_no_record() {
    let (echo, served) = path_echo_server();
    let dir = TempDir::new("wsprobe-agent-test-hundred");
    let names: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let probes = names
        .iter()
        .map(|n| probe(n, &echo.url_path(&format!("/{n}")), 1000, 1000))
        .collect();
    let cfg = config_file(&dir, &config(probes, "-"));
    let mut agent = Agent::start(&cfg);
    let started = agent.wait_started();
    let mut records = agent.records_for(Duration::from_secs(11));
    let (rest, stderr) = agent.terminate();
    records.extend(rest);

    let mut runs: HashMap<String, usize> = HashMap::new();
    for path in served.try_iter() {
        *runs
            .entry(path.trim_start_matches('/').to_owned())
            .or_default() += 1;
    }
    assert!(
        records.len() >= 100,
        "{} records from 10 probes over 11 s\nstderr:\n{stderr}",
        records.len()
    );
    let mut first_runs = Vec::new();
    for name in &names {
        let ts = times_of(&records, name);
        // Runs start at d + k s with d < 1 s: k = 0..=9 surely complete
        // within 11 s, k = 10 (and at the edge k = 11) may too.
        assert!(
            (10..=12).contains(&ts.len()),
            "{name}: {} records in 11 s: {ts:?}\nstderr:\n{stderr}",
            ts.len()
        );
        assert_first_run_in_spread(name, ts[0], started, 1000);
        assert_fixed_rate(name, &ts, 1000);
        let seen = runs.get(name).copied().unwrap_or(0);
        assert!(
            seen == ts.len() || seen == ts.len() + 1,
            "{name}: the server saw {seen} run(s), stdout has {} record(s)",
            ts.len()
        );
        first_runs.push(ts[0]);
    }
    for record in &records {
        assert_eq!(record.reason, None, "{record:#?}");
    }
    // Random first delays: 10 probes do not fire in step (10 uniform draws
    // in [0, 1 s) all within 100 ms of each other: p < 1e-8).
    let spread = first_runs.iter().max().unwrap() - first_runs.iter().min().unwrap();
    assert!(
        spread > 100,
        "the first runs of 10 probes all fell within {spread} ms: {first_runs:?}"
    );
}

// ---------------------------------------------------------------------------
// Output failures
// ---------------------------------------------------------------------------

/// stdout is a pipe whose reader goes away after the first record: the
/// agent ends with exit 1 and says why (README: "A closed stdout pipe ends
/// the agent with exit 1 and a message").
#[test]
fn a_closed_stdout_pipe_ends_the_agent_with_exit_1_and_a_message() {
    let echo = echo_server();
    let dir = TempDir::new("wsprobe-agent-test-epipe");
    let cfg = config_file(
        &dir,
        &config(vec![probe("piped", &echo.url(), 1000, 1000)], "-"),
    );
    let (mut agent, stdout) = Agent::start_keeping_stdout(&cfg);
    agent.wait_started();
    let (line_tx, line_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        // The pipe's only read end closes here, before the test goes on.
        drop(reader);
        let _ = line_tx.send(line);
    });
    let Ok(line) = line_rx.recv_timeout(EVENT_WAIT) else {
        panic!("no first record; stderr:\n{}", agent.stderr_so_far());
    };
    assert!(line.ends_with('\n'), "partial first line {line:?}");
    parse_record(line.trim_end_matches('\n'));
    let mark = agent.log_mark();

    // The next record (due within a second) finds the pipe closed.
    let (status, _) = agent.wait_exit(Duration::from_secs(5));
    let (_, stderr) = agent.finish();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status with stdout closed: {status}; stderr:\n{stderr}"
    );
    let said = agent.log[mark..].iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("stdout") && (l.contains("closed") || l.contains("pipe"))
    });
    assert!(
        said,
        "no message about the closed stdout; stderr:\n{stderr}"
    );
}

/// Waits for `n` more runs to reach the server (each within 3 s: a 1 s
/// interval, or the first run's random delay below 1 s, plus a margin).
fn await_runs(agent: &mut Agent, runs: &Receiver<String>, n: usize, when: &str) {
    for k in 1..=n {
        if runs.recv_timeout(Duration::from_secs(3)).is_err() {
            panic!(
                "run {k} {when} never reached the server; stderr:\n{}",
                agent.stderr_so_far()
            );
        }
    }
}

/// The stderr lines from `mark` on that name `output`, the start-up
/// announcement ("records to PATH") aside: at least one (the failure is
/// logged), at most two (the failed open, then the first dropped record).
/// One line per record would make at least four: callers let four runs'
/// records fail first.
fn assert_failure_logged_once(agent: &mut Agent, mark: usize, output: &str) {
    agent.stderr_so_far();
    let about_output: Vec<&String> = agent.log[mark..]
        .iter()
        .filter(|l| l.contains(output) && !l.starts_with("wsprobe: started "))
        .collect();
    assert!(
        !about_output.is_empty(),
        "nothing logged about {output}, which cannot be written; stderr:\n{}",
        agent.log.join("\n")
    );
    assert!(
        about_output.len() <= 2,
        "the write failure is logged per record: {about_output:#?}"
    );
}

/// With a file output, nothing goes to stdout.
fn assert_no_stdout_records(records: &[Record]) {
    assert!(
        records.is_empty(),
        "records went to stdout with a file output: {:?}",
        summary(records)
    );
}

/// The output file's directory is removed and the agent told to reopen
/// (SIGHUP): it keeps probing, logs the failure once rather than per
/// record, writes again once the directory is back (retried at every
/// record), and still exits 0 on SIGTERM.
#[test]
fn a_removed_output_directory_is_logged_once_and_retried() {
    let (echo, runs) = path_echo_server();
    let dir = TempDir::new("wsprobe-agent-test-gone");
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).expect("create logs/");
    let out = logs.join("records.ndjson");
    let out_str = out.to_str().expect("utf-8 temp path").to_owned();
    let cfg = config_file(
        &dir,
        &config(vec![probe("orphan", &echo.url(), 1000, 1000)], &out_str),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    wait_for_lines(&mut agent, &out, 1, EVENT_WAIT);

    std::fs::remove_dir_all(&logs).expect("remove logs/");
    agent.stderr_so_far();
    let mark = agent.log_mark();
    let _ = runs.try_iter().count();
    agent.signal(libc::SIGHUP);
    // Four more runs reach the server: it keeps probing, and at least
    // three records (those of the first three) found no file to go to.
    await_runs(&mut agent, &runs, 4, "after the directory went");
    assert_failure_logged_once(&mut agent, mark, &out_str);

    std::fs::create_dir(&logs).expect("recreate logs/");
    wait_for_lines(&mut agent, &out, 1, EVENT_WAIT);
    let (stdout_records, _) = agent.terminate();
    assert_no_stdout_records(&stdout_records);
    file_records(&out);
}

/// The output file's directory is not there at start-up (a log volume
/// mounted later): the agent starts anyway, keeps probing, logs the failure
/// once, writes as soon as the directory appears, and exits 0 on SIGTERM.
#[test]
fn a_missing_output_directory_at_start_up_is_logged_once_and_retried() {
    let (echo, runs) = path_echo_server();
    let dir = TempDir::new("wsprobe-agent-test-later");
    let logs = dir.join("logs");
    let out = logs.join("records.ndjson");
    let out_str = out.to_str().expect("utf-8 temp path").to_owned();
    let cfg = config_file(
        &dir,
        &config(vec![probe("early", &echo.url(), 1000, 1000)], &out_str),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    await_runs(&mut agent, &runs, 4, "with no output directory");
    assert_failure_logged_once(&mut agent, 0, &out_str);

    std::fs::create_dir(&logs).expect("create logs/");
    wait_for_lines(&mut agent, &out, 1, EVENT_WAIT);
    let (stdout_records, _) = agent.terminate();
    assert_no_stdout_records(&stdout_records);
    file_records(&out);
}

/// A full disk (/dev/full: every write fails with ENOSPC): the agent keeps
/// probing, logs the failure once rather than per record, and exits 0 on
/// SIGTERM.
#[test]
fn a_full_disk_is_logged_once_and_probing_goes_on() {
    let full = "/dev/full";
    assert!(
        Path::new(full).exists(),
        "{full} is needed to simulate a full disk"
    );
    let (echo, runs) = path_echo_server();
    let dir = TempDir::new("wsprobe-agent-test-full");
    let cfg = config_file(
        &dir,
        &config(vec![probe("full", &echo.url(), 1000, 1000)], full),
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_started();
    let mark = agent.log_mark();
    await_runs(&mut agent, &runs, 4, "with the disk full");
    assert_failure_logged_once(&mut agent, mark, full);
    let (stdout_records, _) = agent.terminate();
    assert_no_stdout_records(&stdout_records);
}
