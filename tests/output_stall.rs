//! Output never stalls probing (issue 12, item 2): a child agent writes
//! records into a pipe the test stops reading. Its queue fills, lines are
//! dropped and counted (logged once, not once per line), probing and the
//! Prometheus file go on, records flow again once the test reads, and
//! SIGTERM still ends the agent within a second with no partial line.
//!
//! The pipe is made small (one page) so that it fills within seconds;
//! the agent's drop log line is the readiness signal that the stall is on.

mod promsupport;
mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use promsupport::*;
use support::*;

/// SPEC.md: on SIGTERM the agent must stop within one second.
const STOP_WITHIN: Duration = Duration::from_secs(1);

/// Enough fast-failing probes (a closed port) to fill the writer's
/// 1024-line queue within a few seconds at one run per second each.
const PROBES: usize = 250;

const DROP_LINE: &str = "wsprobe: the output is not keeping up: ";

/// A pipe of one page: (read end, write end for the child's stdout).
fn small_pipe() -> (File, Stdio) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that nothing else owns yet.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just made and are owned here only.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; the kernel rounds up to a page.
    let rc = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096) };
    assert!(rc > 0, "F_SETPIPE_SZ: {}", std::io::Error::last_os_error());
    (read, Stdio::from(write))
}

/// Starts the agent on a stalled pipe and waits until it says it drops.
fn stalled_agent(dir: &TempDir) -> (Agent, File, PathBuf) {
    let down = format!("ws://127.0.0.1:{}/", free_port());
    let probes: Vec<_> = (0..PROBES)
        .map(|i| json!({"name": format!("p{i}"), "url": down, "interval_ms": 1000, "timeout_ms": 500}))
        .collect();
    let prom = dir.join("wsprobe.prom");
    let config = json!({
        "output": {"ndjson": "-", "prometheus_textfile": prom},
        "probes": probes,
    });
    let cfg = dir.write("wsprobe.json", &config.to_string());
    let (read, write) = small_pipe();
    let mut agent = Agent::start(&cfg, write);
    agent.wait_log(0, "saying it drops records", |l| l.starts_with(DROP_LINE));
    (agent, read, prom)
}

/// The samples of the `.prom` file (it is replaced whole, never torn).
fn file_samples(path: &PathBuf) -> Vec<Sample> {
    samples(&std::fs::read_to_string(path).unwrap_or_default())
}

fn total_runs(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "wsprobe_probe_runs_total")
        .map(|s| s.value)
        .sum()
}

#[test]
fn a_stalled_reader_drops_counted_records_while_probing_and_metrics_go_on() {
    let dir = TempDir::new("wsprobe-stall");
    let (mut agent, read, prom) = stalled_agent(&dir);

    // Probing goes on and the file stays fresh while the pipe is full.
    let before = poll("drops in the .prom file", READY_WAIT, || {
        let samples = file_samples(&prom);
        value_of(&samples, "wsprobe_records_dropped_total", &[])
            .filter(|n| *n > 0.0)
            .map(|_| total_runs(&samples))
    });
    poll("more runs in the .prom file", READY_WAIT, || {
        (total_runs(&file_samples(&prom)) >= before + PROBES as f64).then_some(())
    });

    // Reading again: records of runs that started after now arrive.
    let resumed = now_millis();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(read).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("records flow again once the pipe is read");
        let record = parse_record(&line);
        if parse_ts_millis(&record.ts).is_some_and(|ts| ts >= resumed) {
            break;
        }
    }

    agent.signal(libc::SIGTERM);
    let status = agent.child.wait().expect("wait");
    let log = agent.rest_of_log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(
        log.matches(DROP_LINE).count(),
        1,
        "the drops are logged at most once a minute:\n{log}"
    );
    assert!(log.contains("record(s) were dropped in all"), "{log}");
    assert_accounted(&log);
}

/// The stop's account is there, and every record handed over is written
/// or dropped.
fn assert_accounted(log: &str) {
    assert!(
        log.contains("wsprobe: ticks: "),
        "no account at the stop:\n{log}"
    );
    assert!(!log.contains("unaccounted"), "{log}");
}

#[test]
fn sigterm_ends_an_agent_with_a_stalled_reader_within_a_second_without_a_partial_line() {
    let dir = TempDir::new("wsprobe-stall");
    let (mut agent, mut read, _prom) = stalled_agent(&dir);

    let sent = Instant::now();
    agent.signal(libc::SIGTERM);
    let status = agent.child.wait().expect("wait");
    let took = sent.elapsed();
    let log = agent.rest_of_log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took < STOP_WITHIN, "took {took:?} to stop:\n{log}");

    // What the pipe holds is whole lines, each a record.
    let mut rest = Vec::new();
    read.read_to_end(&mut rest).expect("read the pipe");
    let rest = String::from_utf8(rest).expect("utf-8");
    assert!(
        rest.is_empty() || rest.ends_with('\n'),
        "a partial line: {rest:?}"
    );
    for line in rest.lines() {
        parse_record(line);
    }

    // The queued lines it could not hand over are counted in the total.
    let logged = |prefix: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no line {prefix:?}:\n{log}"))
    };
    let first = logged(DROP_LINE);
    let in_all = log
        .lines()
        .find(|l| l.ends_with("record(s) were dropped in all"))
        .and_then(|l| l.trim_start_matches("wsprobe: ").split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no total of drops:\n{log}"));
    assert!(
        in_all >= first + 1000,
        "{in_all} dropped in all; the 1024 queued lines must be among them:\n{log}"
    );
    assert_accounted(&log);
}
