//! `wsprobe run`: one thread per probe at a fixed rate, the outputs'
//! threads, and the signals that stop or reload them.
//!
//! ```text
//! probe threads --(bounded queue, try_send)--> writer thread --> NDJSON
//!    |   ^      \--> metrics state <-- textfile thread, /metrics thread
//!    |   | stop (dropped sender)                    | stdout closed
//! main thread <--(control channel)-- signal thread  v
//! ```
//!
//! A probe thread never waits for an output: a line the writer's queue
//! cannot take is dropped and counted, and the metrics go on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender};
use ring::rand::{SecureRandom, SystemRandom};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::{self, Config, Output, Prometheus};
use crate::output::http::Listener;
use crate::output::metrics::{Account, Metrics};
use crate::output::ndjson::{self, Sink, Writing};
use crate::output::{textfile, Feed};
use crate::probe;
use crate::say;
use crate::spec::ProbeSpec;

/// Stack for a probe thread. The deepest run, a `wss://` handshake plus
/// the record, was measured to need 33 KiB in a release build (27 KiB with
/// musl) and 71 KiB in a debug build (`cargo bench --bench stack`); 256 KiB
/// leaves a wide margin. Only touched pages count towards RSS, so the
/// margin costs address space, not memory.
pub const PROBE_STACK: usize = 256 * 1024;

/// The first run starts at a random point in [0, min(interval, this)).
const MAX_START_SPREAD: Duration = Duration::from_secs(5);

/// How late a run may start and still count for its tick (`catch_up`).
/// It keeps its tick's deadline, so it has at most this much less time.
pub const TICK_GRACE: Duration = Duration::from_millis(20);

/// Lines waiting for the writer; past this, new lines are dropped.
const LINE_QUEUE: usize = 1024;

/// After SIGTERM the writer gets this long to flush what is queued.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(800);

/// How `run` ended, for `main` to turn into an exit code.
pub enum Exit {
    /// SIGTERM or SIGINT: every completed record was flushed.
    Signalled,
    /// stdout was closed: nobody reads the records any more.
    StdoutClosed(String),
    /// Something the agent needs could not be set up.
    Failed(String),
}

enum Control {
    Stop(&'static str),
    Reload,
    StdoutClosed(String),
}

/// A running probe thread. Nothing is ever sent on `_stop`: dropping it
/// (with the `Worker`) wakes the thread, which then ends.
struct Worker {
    spec: Arc<ProbeSpec>,
    _stop: Sender<()>,
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment this is made. The
/// agent makes it before it reads its config: a signal sent while a large
/// config loads (a service manager's reload right after a start) is
/// queued and handled once the agent runs, instead of ending the process.
pub struct Signals(signal_hook::iterator::Signals);

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map(Signals)
    }
}

/// Runs the agent until a signal stops it.
pub fn run(config_path: &Path, config: Config, signals: Signals) -> Exit {
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    if let Err(e) = forward_signals(signals, control_tx.clone()) {
        return Exit::Failed(format!("cannot start the signal thread: {e}"));
    }
    let metrics = Arc::new(Metrics::new(&config.probes));
    let mut listener = match &config.prometheus.listen {
        Some(addr) => match Listener::start(addr, metrics.clone()) {
            Ok(listener) => Some(listener),
            Err(e) => {
                return Exit::Failed(format!(
                    "output.prometheus_listen: cannot listen on {addr}: {e}"
                ))
            }
        },
        None => None,
    };
    let (changed_tx, changed_rx) = crossbeam_channel::bounded(1);
    let (textfile_tx, textfile_rx) = crossbeam_channel::unbounded();
    if let Err(e) = textfile::spawn(
        config.prometheus.textfile.clone(),
        metrics.clone(),
        changed_rx,
        textfile_rx,
    ) {
        return Exit::Failed(format!("cannot start the textfile thread: {e}"));
    }

    let mut sink = Sink::open(&config.output);
    // A directory that appears later (a log volume mounted after boot) must
    // not keep the agent from probing: it retries at each record.
    if let Err(e) = sink.reopen() {
        log(&format!(
            "cannot open {}: {e}; will retry at each record",
            sink.describe()
        ));
    }
    let (line_tx, line_rx) = crossbeam_channel::bounded(LINE_QUEUE);
    // Kept to count, at the stop, the lines a stuck writer never took.
    let queued = line_rx.clone();
    let (writer_stop_tx, writer_stop_rx) = crossbeam_channel::bounded(1);
    let (reopen_tx, reopen_rx) = crossbeam_channel::unbounded();
    // The writer drops `writer_done_tx` when it returns: that is the signal.
    let (writer_done_tx, writer_done_rx) = crossbeam_channel::bounded::<()>(0);
    let writing = Arc::new(Writing::default());
    let (writer_metrics, writer_state) = (metrics.clone(), writing.clone());
    let spawned = thread::Builder::new()
        .name("wsprobe-writer".into())
        .spawn(move || {
            let _done = writer_done_tx;
            let inputs = ndjson::Inputs {
                lines: line_rx,
                reopen: reopen_rx,
                stop: writer_stop_rx,
            };
            let written = ndjson::write_lines(sink, inputs, &writer_metrics.drops, &writer_state);
            if let Err(closed) = written {
                let _ = control_tx.send(Control::StdoutClosed(closed.0.to_string()));
            }
        });
    if let Err(e) = spawned {
        return Exit::Failed(format!("cannot start the writer thread: {e}"));
    }

    log(&format!(
        "started {} probe(s): {}; records to {}",
        config.probes.len(),
        names(&config.probes),
        describe_output(&config.output)
    ));
    let feed = Feed {
        lines: line_tx,
        metrics: metrics.clone(),
        changed: changed_tx,
        open: Arc::new(RwLock::new(true)),
    };
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut output = config.output.clone();
    let mut prometheus = config.prometheus.clone();
    apply(&mut workers, config.probes, &feed);

    let exit = loop {
        let control = select! {
            recv(control_rx) -> control => control,
            // The writer only returns on its own when stdout closed, and
            // says so first; anything else is a bug, and probing on with
            // nobody writing would lose every record.
            recv(writer_done_rx) -> _ => match control_rx.try_recv() {
                Ok(Control::StdoutClosed(e)) => break Exit::StdoutClosed(e),
                _ => break Exit::Failed("the writer thread stopped".into()),
            },
        };
        match control {
            Ok(Control::Stop(signal)) => {
                log(&format!("{signal}: stopping"));
                break Exit::Signalled;
            }
            Ok(Control::StdoutClosed(e)) => break Exit::StdoutClosed(e),
            Ok(Control::Reload) => {
                let reloaded = reload(config_path, &mut workers, &mut output, &feed);
                let Some(config) = reloaded else { continue };
                // Reopen even when unchanged: logrotate has moved the file away.
                let _ = reopen_tx.send(output.clone());
                // The file is rewritten at once for the new set of probes.
                if config.textfile != prometheus.textfile {
                    let _ = textfile_tx.send(textfile::Control::Path(config.textfile.clone()));
                } else {
                    let _ = feed.changed.try_send(());
                }
                listener = relisten(listener, config.listen.as_deref(), &metrics);
                prometheus = config;
            }
            Err(_) => break Exit::Failed("the signal thread stopped".into()),
        }
    };

    // In-flight runs are abandoned: their threads are not waited for, and
    // what they send after this is never written. Completed lines are,
    // unless the writer is stuck (nobody reads the pipe): those are
    // counted as dropped, never written in part.
    drop(workers);
    // Waits for any line being offered; none is handed over after this.
    *feed.open.write().unwrap_or_else(PoisonError::into_inner) = false;
    drop(listener);
    let _ = textfile_tx.send(textfile::Control::Stop);
    let _ = writer_stop_tx.send(());
    if writer_done_rx.recv_timeout(SHUTDOWN_FLUSH).is_err() {
        let stuck =
            queued.try_iter().count() as u64 + u64::from(writing.busy.load(Ordering::Acquire));
        if stuck > 0 {
            metrics.drops.add(stuck, "stopping with the output stalled");
        }
    }
    let dropped = metrics.drops.count();
    if dropped > 0 {
        log(&format!("{dropped} record(s) were dropped in all"));
    }
    let written = writing.written.load(Ordering::Relaxed);
    let discarded = writing.discarded.load(Ordering::Relaxed);
    log(&account(
        metrics.tally.account(),
        written,
        discarded,
        dropped,
    ));
    exit
}

/// The stop's account of every tick: a run or a skip; and of every run:
/// a record written (counted by the writer), dropped, discarded (`"ndjson":
/// null`), or a run cut short by the stop or a reload (its record never
/// made). A soak checks these against what it read; a record handed over
/// and then none of those would be a bug, and is said so.
fn account(tally: Account, written: u64, discarded: u64, dropped: u64) -> String {
    let cut_short = tally.runs.saturating_sub(tally.handed_over);
    let mut line = format!(
        "ticks: {} run, {} skipped; records: {written} written, {dropped} dropped, {cut_short} cut short by the stop or a reload",
        tally.runs, tally.skipped
    );
    if discarded > 0 {
        line += &format!(", {discarded} discarded (ndjson is null)");
    }
    let lost = i128::from(tally.handed_over)
        - i128::from(written)
        - i128::from(discarded)
        - i128::from(dropped);
    if lost != 0 {
        line += &format!(", {lost} unaccounted for (a bug: please report it)");
    }
    line
}

/// Rebinds the `/metrics` listener when a reload changed its address
/// (or removed it). The old one is closed first, as the new address may
/// share its port; one that cannot be bound is logged, and there is no
/// listener until a reload brings a good one.
fn relisten(
    listener: Option<Listener>,
    wanted: Option<&str>,
    metrics: &Arc<Metrics>,
) -> Option<Listener> {
    if listener.as_ref().map(|l| l.configured.as_str()) == wanted {
        return listener;
    }
    let Some(addr) = wanted else {
        log("reload: no /metrics listener any more");
        return None;
    };
    // The old one goes first: the new address may share its port.
    drop(listener);
    match Listener::start(addr, metrics.clone()) {
        Ok(listener) => Some(listener),
        Err(e) => {
            log(&format!(
                "reload: output.prometheus_listen: cannot listen on {addr}: {e}"
            ));
            None
        }
    }
}

fn forward_signals(Signals(mut signals): Signals, control: Sender<Control>) -> std::io::Result<()> {
    thread::Builder::new()
        .name("wsprobe-signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for signal in signals.forever() {
                let event = match signal {
                    SIGHUP => Control::Reload,
                    SIGINT => Control::Stop("SIGINT"),
                    _ => Control::Stop("SIGTERM"),
                };
                if control.send(event).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// SIGHUP: re-read the config; keep the old one if the new one is invalid.
/// Returns the new Prometheus outputs, for the caller to apply.
fn reload(
    path: &Path,
    workers: &mut HashMap<String, Worker>,
    output: &mut Output,
    feed: &Feed,
) -> Option<Prometheus> {
    let config = match config::load_file(path, &config::process_env) {
        Ok(config) => config,
        Err(errors) => {
            feed.metrics.count_reload(false);
            for error in &errors {
                log(&format!("reload: {}: {error}", path.display()));
            }
            log(&format!(
                "reload: {} problem(s); still running the previous config",
                errors.len()
            ));
            return None;
        }
    };
    feed.metrics.count_reload(true);
    feed.metrics.set_probes(&config.probes);
    for warning in &config.warnings {
        log(&format!("reload: warning: {warning}"));
    }
    let (started, stopped, restarted) = apply(workers, config.probes, feed);
    if config.output != *output {
        log(&format!(
            "reload: records now go to {}",
            describe_output(&config.output)
        ));
        *output = config.output.clone();
    }
    log(&format!(
        "reload: {} probe(s); {started} started, {stopped} stopped, {restarted} restarted",
        workers.len()
    ));
    Some(config.prometheus)
}

/// Makes `workers` run exactly `probes`: unchanged probes keep their thread
/// and schedule, changed ones restart, new ones start, removed ones stop.
fn apply(
    workers: &mut HashMap<String, Worker>,
    probes: Vec<ProbeSpec>,
    feed: &Feed,
) -> (usize, usize, usize) {
    let (mut started, mut restarted) = (0, 0);
    let wanted: Vec<String> = probes.iter().map(|p| p.name.clone()).collect();
    let before = workers.len();
    workers.retain(|name, _| wanted.contains(name));
    let stopped = before - workers.len();
    for spec in probes {
        match workers.get(&spec.name) {
            Some(worker) if *worker.spec == spec => continue,
            Some(_) => restarted += 1,
            None => started += 1,
        }
        let spec = Arc::new(spec);
        match start_worker(spec.clone(), feed.clone()) {
            Ok(stop) => {
                workers.insert(spec.name.clone(), Worker { spec, _stop: stop });
            }
            Err(e) => log(&format!("cannot start probe {:?}: {e}", spec.name)),
        }
    }
    (started, stopped, restarted)
}

fn start_worker(spec: Arc<ProbeSpec>, feed: Feed) -> std::io::Result<Sender<()>> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    thread::Builder::new()
        .name(spec.name.clone())
        .stack_size(PROBE_STACK)
        .spawn(move || probe_loop(&spec, &stop_rx, &feed))?;
    Ok(stop_tx)
}

/// One probe's life: a random first start, then runs at a fixed rate.
fn probe_loop(spec: &ProbeSpec, stop: &Receiver<()>, feed: &Feed) {
    let spread = spec.interval.min(MAX_START_SPREAD);
    let mut next = Instant::now() + random_below(spread, &spec.name);
    loop {
        // The stop sender is dropped, never used: a disconnect is the signal.
        match stop.recv_deadline(next) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        // Woken long past the tick (the agent was frozen by SIGSTOP, or
        // starved, or the last run overran): that tick's deadline is gone,
        // and its run would report as the endpoint's a timeout that was
        // the agent's. It is skipped and counted instead.
        let (due, skipped) = catch_up(next, spec.interval, Instant::now());
        if skipped > 0 {
            // A reload may have replaced this probe while it slept.
            if let Err(crossbeam_channel::TryRecvError::Disconnected) = stop.try_recv() {
                return;
            }
            feed.metrics.count_skipped(spec, skipped);
            next = due;
            continue;
        }
        // The deadline counts from the tick, not from the start: a run
        // that starts a little late (see `catch_up`) does not push the
        // next one later still. Its close gives way to the next tick.
        let window = probe::Window {
            deadline: next + spec.timeout,
            close_by: Some(next + spec.interval),
        };
        feed.metrics.tally.run_started();
        let outcome = probe::run_guarded_in(spec, window);
        // Removed or changed by a reload while it ran: the record belongs
        // to a probe that is no longer configured.
        if let Err(crossbeam_channel::TryRecvError::Disconnected) = stop.try_recv() {
            return;
        }
        if !feed.deliver(spec, &outcome) {
            return;
        }
        // Sleeping until the next tick needs none of the run's deep stack.
        probe::stack::release_unused();
        next += spec.interval;
    }
}

/// Where a probe stands when it wakes for `tick`, at a fixed rate: the
/// tick itself if it passed by less than `TICK_GRACE`, else the first
/// tick still ahead and how many were skipped. Runs never stack up and
/// never drift. The grace matters: with `interval_ms` equal to
/// `timeout_ms` a run that times out ends just past the next tick, and
/// skipping that one would halve the records of an endpoint that is down.
pub fn catch_up(tick: Instant, interval: Duration, now: Instant) -> (Instant, u64) {
    if tick + TICK_GRACE > now {
        return (tick, 0);
    }
    let every = interval.as_nanos().max(1);
    let behind = now.duration_since(tick).as_nanos();
    let missed = u64::try_from(behind / every + 1).unwrap_or(u64::MAX);
    // The first tick after `now`, found from `now`: no multiplication
    // that could overflow, however long the agent was frozen.
    let to_next = u64::try_from(every - behind % every).unwrap_or(u64::MAX);
    (now + Duration::from_nanos(to_next), missed)
}

/// A random duration in [0, max). From the system's random source: routers
/// that boot to the same 1970 clock with the same PIDs must still spread
/// out; the clock is only the fallback.
fn random_below(max: Duration, salt: &str) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 8];
    let r = match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => clock_seed(salt),
    };
    Duration::from_nanos(r % max.as_nanos().max(1) as u64)
}

fn clock_seed(salt: &str) -> u64 {
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()).rotate_left(32);
    for byte in salt.bytes() {
        x = (x ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    // xorshift64* scrambles the mixed seed.
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn names(probes: &[ProbeSpec]) -> String {
    probes
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_output(output: &Output) -> String {
    match output {
        Output::Stdout => "stdout".into(),
        Output::File(path) => path.display().to_string(),
        Output::Discard => "nowhere (ndjson is null)".into(),
    }
}

/// Agent log lines go to stderr, never to the records' output.
fn log(message: &str) {
    say!("{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_not_yet_passed_is_kept() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let tick = t0 + second;
        assert_eq!(
            catch_up(tick, second, t0 + Duration::from_millis(300)),
            (tick, 0)
        );
    }

    #[test]
    fn missed_ticks_are_skipped_and_counted_instead_of_stacking() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let tick = t0 + second;
        // Frozen from before the tick until 3.5 s: ticks 1, 2 and 3 are gone.
        let late = t0 + Duration::from_millis(3500);
        assert_eq!(catch_up(tick, second, late), (t0 + 4 * second, 3));
        let past_grace = tick + TICK_GRACE;
        assert_eq!(catch_up(tick, second, past_grace), (t0 + 2 * second, 1));
    }

    #[test]
    fn a_tick_passed_by_less_than_the_grace_still_runs() {
        // interval_ms = timeout_ms: a timed-out run ends just past the tick.
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let just_past = t0 + second + Duration::from_millis(2);
        assert_eq!(catch_up(t0 + second, second, just_past), (t0 + second, 0));
    }

    #[test]
    fn random_start_stays_below_its_bound() {
        let bound = Duration::from_millis(5000);
        for salt in ["a", "b", "probe-17"] {
            assert!(random_below(bound, salt) < bound);
        }
        assert_eq!(random_below(Duration::ZERO, "a"), Duration::ZERO);
    }
}
