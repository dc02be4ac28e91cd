//! The smallest thread stack on which one probe run completes: a `wss://`
//! handshake and a `ws://` round trip, each against an in-process server.
//!
//! `cargo bench --bench stack` measures the release build and
//! `cargo bench --bench stack --profile dev` the debug build. For the static
//! musl build that routers run (clang and rust-lld, as scripts/build-arm.sh):
//! `CC_x86_64_unknown_linux_musl=clang
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
//! cargo bench --bench stack --target x86_64-unknown-linux-musl`.
//!
//! A stack overflow cannot be caught in-process (Rust's guard-page handler
//! aborts), so each try is a child process: this benchmark re-executes
//! itself with `WSPROBE_STACK_TRY=BYTES`, `WSPROBE_STACK_SCHEME=ws|wss` and
//! `WSPROBE_STACK_BODY=run|agent`. The child starts its own echo server on
//! normal-sized threads, builds the probe on its main thread (as the agent
//! loads its config), then spawns one thread with exactly that `stack_size`
//! running either `probe::run` alone (`run`) or what the agent's probe
//! thread does per run (`agent`: `probe::run_guarded`, then the record
//! line), and exits 0 if the run succeeded. Killed by a signal (SIGSEGV or
//! SIGABRT) means the stack was too small. The parent bisects between 8 KiB
//! and 1 MiB to 1 KiB. The probe URL is an IP literal, so no resolver
//! thread (which has a stack of its own) takes part.
//!
//! The figure is the value to pass to `thread::Builder::stack_size`, not
//! the depth the code reaches: glibc carves the thread's static TLS and its
//! descriptor out of that same mapping.

mod support;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use wsprobe::probe;
use wsprobe::record::Record;
use wsprobe::schedule::PROBE_STACK;

const TRY_VAR: &str = "WSPROBE_STACK_TRY";
const SCHEME_VAR: &str = "WSPROBE_STACK_SCHEME";
const BODY_VAR: &str = "WSPROBE_STACK_BODY";
const PKI_TAG: &str = "bench-stack";

const LOW: usize = 8 * 1024;
const HIGH: usize = 1024 * 1024;
const STEP: usize = 1024;

/// Extra runs at the figure found, to catch a run that needed more stack
/// than the bisection's single try at that size.
const CONFIRM_RUNS: usize = 3;

/// A child that has not exited by then is killed and the benchmark fails.
const CHILD_WATCHDOG: Duration = Duration::from_secs(30);

fn main() {
    match std::env::var(TRY_VAR) {
        Ok(bytes) => {
            let bytes = bytes
                .parse()
                .unwrap_or_else(|_| panic!("{TRY_VAR}={bytes:?}: expected a byte count"));
            let scheme = std::env::var(SCHEME_VAR).unwrap_or_else(|_| "wss".into());
            let body = std::env::var(BODY_VAR).unwrap_or_else(|_| "run".into());
            std::process::exit(child(bytes, &scheme, &body));
        }
        Err(_) => parent(),
    }
}

fn parent() {
    println!(
        "stack ({} build): smallest probe-thread stack_size for one successful run, \
         bisected between {} KiB and {} KiB to {} KiB",
        support::build_kind(),
        LOW / 1024,
        HIGH / 1024,
        STEP / 1024
    );
    for body in ["run", "agent"] {
        for scheme in ["wss", "ws"] {
            let (bytes, tries) = smallest_stack(scheme, body);
            let figure = if bytes <= LOW {
                format!("<= {} KiB (the platform minimum applies)", LOW / 1024)
            } else {
                format!("{:3} KiB ({bytes} bytes)", bytes / 1024)
            };
            let what = match scheme {
                "wss" => "wss:// handshake_latency",
                _ => "ws://  round_trip_latency",
            };
            let how = match body {
                "run" => "probe::run",
                _ => "run_guarded + record line",
            };
            println!("  {what:<25}  {how:<25}  {figure}  [{tries} child runs]");
        }
    }
    println!("  the agent's PROBE_STACK is {} KiB", PROBE_STACK / 1024);
}

/// The smallest passing size, and how many children it took to find it.
fn smallest_stack(scheme: &str, body: &str) -> (usize, usize) {
    let mut tries = 0;
    let mut attempt = |bytes: usize| {
        tries += 1;
        runs_on(scheme, body, bytes)
    };
    assert!(
        attempt(HIGH),
        "a {scheme}:// {body} run did not complete even on a {} KiB stack",
        HIGH / 1024
    );
    let mut good = HIGH;
    if attempt(LOW) {
        good = LOW;
    } else {
        let mut bad = LOW;
        while good - bad > STEP {
            let mid = (bad + good) / 2 / STEP * STEP;
            if attempt(mid) {
                good = mid;
            } else {
                bad = mid;
            }
        }
    }
    while !(0..CONFIRM_RUNS).all(|_| attempt(good)) {
        good += STEP;
    }
    (good, tries)
}

/// Runs one child on a `bytes` stack: true if its run completed, false if a
/// signal killed it. Anything else (a failed probe, a hung child) is a
/// broken benchmark, not a measurement, and panics.
fn runs_on(scheme: &str, body: &str, bytes: usize) -> bool {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .env(TRY_VAR, bytes.to_string())
        .env(SCHEME_VAR, scheme)
        .env(BODY_VAR, body)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a child of this benchmark");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > CHILD_WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the {scheme}:// {body} child on {bytes} bytes hung; killed it");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().unwrap_or_default();
    // A child killed by a signal ran no destructors: remove its CA file.
    let _ = std::fs::remove_dir_all(support::TestPki::dir_for(PKI_TAG, child.id()));
    match (status.code(), status.signal()) {
        (Some(0), _) => true,
        (_, Some(signal)) if is_overflow_signal(signal) => false,
        _ => panic!("the {scheme}:// {body} child on {bytes} bytes ended with {status}:\n{stderr}"),
    }
}

/// SIGSEGV or SIGBUS (the guard page), or SIGABRT (Rust's overflow handler).
fn is_overflow_signal(signal: i32) -> bool {
    const SIGABRT: i32 = 6;
    const SIGBUS: i32 = 7;
    const SIGSEGV: i32 = 11;
    matches!(signal, SIGABRT | SIGBUS | SIGSEGV)
}

/// One run on a thread with a `bytes` stack; the exit code for `main`.
fn child(bytes: usize, scheme: &str, body: &str) -> i32 {
    let pki = support::TestPki::new(PKI_TAG);
    let spec = match scheme {
        "wss" => {
            support::wss_handshake(support::wss_echo_server(pki.server.clone()), pki.ca_file())
        }
        "ws" => support::ws_round_trip(support::ws_echo_server()),
        other => panic!("{SCHEME_VAR}={other:?}: expected ws or wss"),
    };
    let agent = match body {
        "run" => false,
        "agent" => true,
        other => panic!("{BODY_VAR}={other:?}: expected run or agent"),
    };
    let probe_thread = thread::Builder::new()
        .name("probe".into())
        .stack_size(bytes)
        .spawn(move || {
            let outcome = if agent {
                probe::run_guarded(&spec)
            } else {
                probe::run(&spec)
            };
            // The line is what the agent would write; in `run` mode it is
            // made only for a failure, off the measured path.
            if agent || outcome.reason.is_some() {
                (
                    outcome.reason.is_none(),
                    Record::new(&spec, &outcome).to_line(),
                )
            } else {
                (true, String::new())
            }
        })
        .expect("spawn the probe thread");
    match probe_thread.join() {
        Ok((true, _)) => 0,
        Ok((false, line)) => {
            eprintln!("the probe failed: {line}");
            1
        }
        Err(_) => {
            eprintln!("the probe thread panicked");
            1
        }
    }
}
