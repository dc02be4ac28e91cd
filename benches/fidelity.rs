//! Measurement fidelity: how far the probe's figures sit above the
//! physical floor of a path with a known one-way delay.
//!
//! `cargo bench --bench fidelity`. This kernel has no netem, so the path
//! is a user-space delay line (`support::DelayRelay`): a TCP relay on
//! 127.0.0.1 that forwards each direction D late (default 10 ms,
//! `WSPROBE_FIDELITY_DELAY_MS`). Each measured run (default 50,
//! `WSPROBE_BENCH_N`) follows a few warm-up runs; the kinds of run are
//! interleaved, and each waits for the previous connection's teardown to
//! leave the relay, so a tail of one does not fall into the next.
//!
//! The floor through this relay is not the floor of a real path.
//! Over a real path with one-way delay D a `ws://` open costs 2 RTT = 4D
//! (TCP handshake, upgrade), a `wss://` open with TLS 1.3 3 RTT = 6D (TCP,
//! TLS 1-RTT, upgrade) and a round trip 1 RTT = 2D. A user-space relay
//! cannot delay the TCP handshake: the probe's SYN is answered by the
//! relay's kernel before `accept` returns, at loopback speed, and the relay
//! connects to the server right after accepting (loopback again), long
//! before the first bytes are due there. Delaying SYN/SYN-ACK takes
//! something below the socket API (netem, NFQUEUE, a TUN device or eBPF,
//! all needing privileges this bench does not assume); holding back
//! `accept` does not help, since a full backlog makes the client resend its
//! SYN after a second, not after D. So only what crosses the relay as data
//! counts:
//!
//! - `ws://` open: connect (local) + upgrade request and 101 = 1 RTT = 2D;
//! - `wss://` open, TLS 1.3: ClientHello, then the server's flight (Hello to
//!   Finished) = 1 RTT; the client's Finished and the upgrade request go
//!   together (in one write), then the 101 (behind the session tickets)
//!   = 1 RTT; 4D in all;
//! - `ws://` round trip: the message and its echo = 1 RTT = 2D.
//!
//! The excess over that floor is what the bench reports, against targets
//! of 0.5 ms for an open and 0.2 ms for a round trip (for the median).
//! Not all of it is the probe's, so the bench also says who spent it. The
//! relay records each chunk's pass: when the kernel received it
//! (`SO_TIMESTAMPNS`, so the relay reader's own wake-up is kept out) and
//! when the relay wrote it on. The passes of a measured span form flights,
//! runs of chunks in one direction. The time until a flight's last chunk
//! reaches the relay is its sender's, the hold until it is written on,
//! beyond D, is the relay's, and the time after the last flight is its
//! receiver's. So the excess splits into:
//!
//! - the relay's share: its writer's lateness (timer slack 1 ns, the last
//!   `WSPROBE_RELAY_SPIN_US` of each wait spun);
//! - the server's share: its wake-up and its work, TLS included, which the
//!   floor counts as instant. The test servers serve one connection at a
//!   time on a long-lived thread, not a fresh thread per connection;
//! - the client's share, the probe's own: its work before its first bytes
//!   leave (socket, a local connect and a write: the TLS ClientHello, the
//!   upgrade request and the connect's poll are made before the run's
//!   clock starts), its work between a flight
//!   delivered and its answer, and its reading of the last flight. The
//!   targets are checked against this share, and against the whole
//!   excess.
//!
//! Each side's share includes its wake-up after sitting idle and the
//! loopback hop to it. For what that alone costs on this machine, a bare
//! TCP client does the same through the same relay to a raw echo server:
//! connect + one exchange (the shape of a `ws://` open) and one more
//! exchange on that connection (the shape of a round trip). Every relayed
//! run starts after the same idle pause, as a probe in the agent does:
//! on a shared VM an idle spell of a few milliseconds leaves the caches
//! cold, and that is part of every share.
//!
//! curl is the yardstick the targets were set against. When it is
//! installed, it sends the same upgrade through the same relay to the same
//! server; its open is `time_starttransfer`, the first byte of the 101
//! (wsprobe's open ends later: 101 read and checked). Its own share is
//! its excess less the server's and the relay's shares.
//!
//! The `ws://` open and round trip come from the same round-trip probe
//! run; its open is measured exactly as a handshake probe's. The CPU
//! each thread spent is printed, with the time the probe's thread spent
//! runnable but waiting for a CPU (wake-ups included), and a last line
//! gives the probe's figures straight over loopback, for comparison.
//!
//! `WSPROBE_FIDELITY_QOS=1` holds `/dev/cpu_dma_latency` at 0 for the
//! bench's length (root only), as latency benchmarks such as cyclictest
//! do: idle CPUs then poll instead of halting, which on a VM takes a
//! halted virtual CPU's wake-up out of every share.
//! `WSPROBE_FIDELITY_PIN=1` runs the servers, the relay and all their
//! threads on one CPU and the probe's thread (and curl) on another, as
//! when the server is another machine: the probe then never waits for a
//! CPU behind the bench's own threads. The default measures the machine
//! as it is.
//!
//! Figures are reported, never asserted; only a failed run stops the bench.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tungstenite::WebSocket;

use support::{succeeded, DelayRelay, Pass, RelaySamples};
use wsprobe::probe;

const WARM_UP: usize = 5;
const DEFAULT_RUNS: usize = 50;
const DEFAULT_DELAY_MS: f64 = 10.0;
const DEFAULT_SPIN_US: u64 = 100;

/// Targets: excess over the floor, milliseconds, for the median.
const OPEN_EXCESS_MS: f64 = 0.5;
const RTT_EXCESS_MS: f64 = 0.2;

/// Size of the bare TCP client's messages (a `ws://` upgrade request is
/// some 200 bytes, a small frame a few dozen).
const PING_BYTES: usize = 64;

fn main() {
    let runs = env_number("WSPROBE_BENCH_N", DEFAULT_RUNS as f64) as usize;
    let delay =
        Duration::from_secs_f64(env_number("WSPROBE_FIDELITY_DELAY_MS", DEFAULT_DELAY_MS) / 1e3);
    let spin =
        Duration::from_micros(env_number("WSPROBE_RELAY_SPIN_US", DEFAULT_SPIN_US as f64) as u64);
    assert!(
        runs > 0 && !delay.is_zero(),
        "need at least one run and a delay"
    );
    let d = ms(delay);
    // Long enough for a closed connection's FIN to cross the relay both
    // ways and its threads to end.
    let settle = delay * 3;

    let qos = env_number("WSPROBE_FIDELITY_QOS", 0.0) > 0.0;
    let _shallow_idle = qos.then(hold_shallow_idle);
    // Threads take their creator's CPUs: the helpers are made on the
    // second CPU, then this thread, the probe's, moves to the first.
    let pinned = (env_number("WSPROBE_FIDELITY_PIN", 0.0) > 0.0)
        .then(two_cpus)
        .flatten();
    if let Some((_, helpers)) = pinned {
        pin_to(helpers);
    }

    let pki = support::TestPki::new("bench-fidelity");
    // The relayed servers time their own CPU; the direct ones are the
    // shared plain servers.
    let (ws_timed, ws_server_cpu) = timed_echo_server(None);
    let (wss_timed, wss_server_cpu) = timed_echo_server(Some(pki.server.clone()));
    let ws_server = support::ws_echo_server();
    let wss_server = support::wss_echo_server(pki.server.clone());
    let tcp_server = support::tcp_echo_server();
    let relays = [
        DelayRelay::start(tcp_server, delay, spin),
        DelayRelay::start(ws_timed, delay, spin),
        DelayRelay::start(wss_timed, delay, spin),
    ];
    let [tcp_relay, ws_relay, wss_relay] = &relays;
    let ws = support::ws_round_trip(ws_relay.addr);
    let wss = support::wss_handshake(wss_relay.addr, pki.ca_file());
    let ws_direct = support::ws_round_trip(ws_server);
    let wss_direct = support::wss_handshake(wss_server, pki.ca_file());

    let curl = Curl::find(wss_relay.addr, pki.ca_file());
    if let Some((probe, _)) = pinned {
        pin_to(probe);
    }

    let mut relayed = Series::default();
    let mut direct = Series::default();
    for run in 0..WARM_UP + runs {
        let mut into = Series::default();
        // Every relayed run starts after the same idle pause, as a probe
        // does in the agent: after an idle spell the first code to run
        // meets cold caches.
        thread::sleep(settle);
        let tcp = tcp_exchanges(tcp_relay.addr);
        thread::sleep(settle);
        let passes = tcp_relay.take_passes();
        into.tcp_first.push(ms(tcp.first_end - tcp.start));
        into.tcp_again.push(ms(tcp.again_end - tcp.again_start));
        into.tcp_first_split
            .push(Split::of(tcp.start, tcp.first_end, &passes, delay));
        into.tcp_again_split
            .push(Split::of(tcp.again_start, tcp.again_end, &passes, delay));

        let (cpu, waited) = (thread_cpu(), run_delay());
        let outcome = succeeded(probe::run(&ws));
        // The wait first: thread_cpu's yield could add to it.
        into.ws_waited.push(ms(run_delay() - waited));
        into.ws_cpu.push(ms(thread_cpu() - cpu));
        thread::sleep(settle);
        let passes = ws_relay.take_passes();
        let open = duration(outcome.timings.open);
        let rtt = duration(outcome.timings.rtt);
        // A successful round trip's total ends when the reply arrived.
        let arrived = outcome.started + duration(outcome.timings.total);
        into.ws_open.push(ms(open));
        into.ws_rtt.push(ms(rtt));
        into.ws_open_split.push(Split::of(
            outcome.started,
            outcome.started + open,
            &passes,
            delay,
        ));
        into.ws_rtt_split
            .push(Split::of(arrived - rtt, arrived, &passes, delay));

        let (cpu, waited) = (thread_cpu(), run_delay());
        let outcome = succeeded(probe::run(&wss));
        // The wait first: thread_cpu's yield could add to it.
        into.wss_waited.push(ms(run_delay() - waited));
        into.wss_cpu.push(ms(thread_cpu() - cpu));
        assert_eq!(
            outcome.meta.tls_version,
            Some("TLSv1.3"),
            "the wss:// floor assumes TLS 1.3"
        );
        thread::sleep(settle);
        let passes = wss_relay.take_passes();
        let open = duration(outcome.timings.open);
        into.wss_open.push(ms(open));
        into.wss_open_split.push(Split::of(
            outcome.started,
            outcome.started + open,
            &passes,
            delay,
        ));

        if let Some(curl) = &curl {
            let open = curl.open();
            thread::sleep(settle);
            // Its open is the first four flights (Hello; the server's
            // flight; Finished and request; tickets and 101). Its own
            // share is what is left of its excess once the server's and
            // the relay's are known.
            let passes = wss_relay.take_passes();
            let opening = first_flights(&passes, 4);
            if let (Some(first), Some(last)) = (opening.first(), opening.last()) {
                let mut split = Split::of(first.arrived, last.written, opening, delay);
                split.client = ms(open) - 4.0 * d - split.server - split.relay;
                into.curl_open.push(ms(open));
                into.curl_open_split.push(split);
            }
        }

        let mut context = Series::default();
        let tcp = tcp_exchanges(tcp_server);
        context.tcp_first.push(ms(tcp.first_end - tcp.start));
        context.tcp_again.push(ms(tcp.again_end - tcp.again_start));
        let outcome = succeeded(probe::run(&ws_direct));
        context.ws_open.push(timing(outcome.timings.open));
        context.ws_rtt.push(timing(outcome.timings.rtt));
        context
            .wss_open
            .push(timing(succeeded(probe::run(&wss_direct)).timings.open));

        if run + 1 == WARM_UP {
            for relay in &relays {
                relay.take_samples();
            }
            ws_server_cpu.lock().unwrap().clear();
            wss_server_cpu.lock().unwrap().clear();
        } else if run >= WARM_UP {
            relayed.append(into);
            direct.append(context);
        }
    }
    let mut samples = RelaySamples::default();
    for relay in &relays {
        let taken = relay.take_samples();
        samples.lateness.extend(taken.lateness);
        samples.reader_lag.extend(taken.reader_lag);
        samples.unstamped += taken.unstamped;
    }

    // Excess over each floor, in ms.
    let over = |values: &[f64], floor: f64| Stats::of(values.iter().map(|v| v - floor));
    let tcp_first = over(&relayed.tcp_first, 2.0 * d);
    let tcp_again = over(&relayed.tcp_again, 2.0 * d);
    let ws_open = over(&relayed.ws_open, 2.0 * d);
    let wss_open = over(&relayed.wss_open, 4.0 * d);
    let ws_rtt = over(&relayed.ws_rtt, 2.0 * d);

    println!(
        "fidelity ({} build): one-way delay D = {d:.3} ms through a user-space TCP relay; \
         {runs} runs of each after {WARM_UP} warm-up runs, interleaved",
        support::build_kind()
    );
    println!(
        "  floors through the relay: ws:// open 2D = {:.3} ms, wss:// open (TLS 1.3) 4D = {:.3} ms, \
         ws:// round trip 2D = {:.3} ms",
        2.0 * d,
        4.0 * d,
        2.0 * d
    );
    println!(
        "  (a real path: 4D, 6D, 2D; the probe-to-relay TCP handshake is local and cannot be \
         delayed from user space)"
    );
    println!(
        "  idle CPUs: {}",
        if qos {
            "kept polling (WSPROBE_FIDELITY_QOS=1: /dev/cpu_dma_latency held at 0)"
        } else {
            "as the machine has them (WSPROBE_FIDELITY_QOS=1 keeps them polling)"
        }
    );
    match pinned {
        Some((probe, helpers)) => println!(
            "  CPUs: the probe and curl on CPU {probe}, the servers and the relay on CPU {helpers} \
             (WSPROBE_FIDELITY_PIN=1)"
        ),
        None => println!(
            "  CPUs: shared by the probe, the servers and the relay (WSPROBE_FIDELITY_PIN=1 \
             gives the probe one of its own)"
        ),
    }
    let late = Stats::of(samples.lateness.iter().map(|&l| ms(l)));
    let lag = Stats::of(samples.reader_lag.iter().map(|&l| ms(l)));
    println!(
        "  relay writer lateness per pass  median {:.3} ms  p95 {:.3} ms  ({} chunks; \
         spin {} us); reader lag kept out by kernel stamps  median {:.3} ms  p95 {:.3} ms  \
         ({} chunks unstamped)",
        late.median,
        late.p95,
        samples.lateness.len(),
        spin.as_micros(),
        lag.median,
        lag.p95,
        samples.unstamped
    );
    println!(
        "  {:<30} {:>10}  {:>7} {:>7}  {:>7} {:>7}  {:>7} {:>7}  target for the client's share",
        "(ms)", "raw median", "excess", "p95", "server", "relay", "client", "p95",
    );
    let rows = [
        (
            "bare TCP connect + exchange",
            &relayed.tcp_first,
            &tcp_first,
            &relayed.tcp_first_split,
            None,
        ),
        (
            "bare TCP exchange",
            &relayed.tcp_again,
            &tcp_again,
            &relayed.tcp_again_split,
            None,
        ),
        (
            "ws:// open",
            &relayed.ws_open,
            &ws_open,
            &relayed.ws_open_split,
            Some(OPEN_EXCESS_MS),
        ),
        (
            "wss:// open (TLS 1.3)",
            &relayed.wss_open,
            &wss_open,
            &relayed.wss_open_split,
            Some(OPEN_EXCESS_MS),
        ),
        (
            "ws:// round trip",
            &relayed.ws_rtt,
            &ws_rtt,
            &relayed.ws_rtt_split,
            Some(RTT_EXCESS_MS),
        ),
    ];
    for (what, raw, excess, splits, target) in rows {
        row(what, raw, excess, splits, target);
    }
    if curl.is_some() {
        let curl_open = over(&relayed.curl_open, 4.0 * d);
        row(
            "curl wss:// open (to 1st byte)",
            &relayed.curl_open,
            &curl_open,
            &relayed.curl_open_split,
            None,
        );
    } else {
        println!("  (curl not found: no curl row)");
    }
    print_turns("wss:// open", &relayed.wss_open_split);
    println!(
        "  excess = raw - floor = client + server + relay, medians of each (which need not add \
         up). From the relay's kernel receive stamps and write times: the client's share runs \
         from its start to its first bytes reaching the relay, from each delivery to it to its \
         answer reaching the relay, and from the last delivery to its measured end; the \
         server's likewise; the relay's is each hold beyond D. A share includes the wake-up \
         of the side it names and the loopback hop to it: see the bare TCP rows for what \
         that alone costs here."
    );
    let median = |values: &[f64]| Stats::of(values.iter().copied()).median;
    println!(
        "  CPU, medians: probe thread per run (close included) ws:// {:.3} ms, wss:// {:.3} ms; \
         server thread from accept to its 101 ws:// {:.3} ms, wss:// {:.3} ms",
        median(&relayed.ws_cpu),
        median(&relayed.wss_cpu),
        median(&ws_server_cpu.lock().unwrap()),
        median(&wss_server_cpu.lock().unwrap()),
    );
    println!(
        "  probe thread runnable but waiting for a CPU per run (its wake-ups included; \
         schedstat run_delay), medians: ws:// {:.3} ms, wss:// {:.3} ms",
        median(&relayed.ws_waited),
        median(&relayed.wss_waited),
    );
    println!(
        "  direct on loopback (no relay), medians: ws:// open {:.3} ms, wss:// open {:.3} ms, \
         round trip {:.3} ms; bare TCP connect + exchange {:.3} ms, exchange {:.3} ms",
        median(&direct.ws_open),
        median(&direct.wss_open),
        median(&direct.ws_rtt),
        median(&direct.tcp_first),
        median(&direct.tcp_again)
    );
}

/// One table row: raw median; excess median and p95; the server's and the
/// relay's shares (medians); the client's share, median and p95, against
/// the target if the row has one.
fn row(what: &str, raw: &[f64], excess: &Stats, splits: &[Split], target: Option<f64>) {
    let raw_median = Stats::of(raw.iter().copied()).median;
    let client = Stats::of(splits.iter().map(|s| s.client));
    let server = Stats::of(splits.iter().map(|s| s.server)).median;
    let relay = Stats::of(splits.iter().map(|s| s.relay)).median;
    let goal = match target {
        Some(target) => format!(
            "<= {target:.1} {}  (whole excess: {})",
            verdict(client.median <= target),
            verdict(excess.median <= target)
        ),
        None => String::new(),
    };
    println!(
        "  {what:<30} {raw_median:>10.3}  {:>7.3} {:>7.3}  {server:>7.3} {relay:>7.3}  \
         {:>7.3} {:>7.3}  {goal}",
        excess.median, excess.p95, client.median, client.p95,
    );
}

/// The medians of each turn of a row's runs, when every run took the
/// same turns: where in the exchange each side's share was spent.
fn print_turns(what: &str, splits: &[Split]) {
    let Some(first) = splits.first() else {
        return;
    };
    let same_shape = splits.iter().all(|split| {
        split.turns.len() == first.turns.len()
            && split
                .turns
                .iter()
                .zip(&first.turns)
                .all(|(a, b)| a.0 == b.0)
    });
    if !same_shape {
        println!("  {what}: the runs took different turns; no per-turn medians");
        return;
    }
    let turns: Vec<String> = (0..first.turns.len())
        .map(|i| {
            let median = Stats::of(splits.iter().map(|split| split.turns[i].1)).median;
            let side = if first.turns[i].0 { "client" } else { "server" };
            format!("{side} {median:.3}")
        })
        .collect();
    println!(
        "  {what}, each turn's median in order (up to each flight reaching the relay, then \
         the tail): {}",
        turns.join(", ")
    );
}

/// Who spent a measured span that crossed the relay, in ms: the client,
/// the server or the relay (its hold beyond D). The passes in the span
/// form flights, runs of chunks in one direction; the time up to a
/// flight's last chunk reaching the relay is its sender's, the hold until
/// that chunk is written on is the relay's, and the time after the last
/// flight is its receiver's.
#[derive(Default, Clone)]
struct Split {
    client: f64,
    server: f64,
    relay: f64,
    /// Each side's turns in order, as (the client's?, ms): the time up to
    /// each flight reaching the relay, then the tail after the last.
    turns: Vec<(bool, f64)>,
}

impl Split {
    fn of(from: Instant, to: Instant, passes: &[Pass], delay: Duration) -> Split {
        let inside: Vec<Pass> = passes
            .iter()
            .filter(|pass| pass.written > from && pass.written <= to)
            .copied()
            .collect();
        let mut split = Split::default();
        let mut cursor = from;
        let mut receiver_is_server = false;
        for flight in inside.chunk_by(|a, b| a.upstream == b.upstream) {
            let last = flight[flight.len() - 1];
            let sending = ms(last.arrived.saturating_duration_since(cursor));
            if last.upstream {
                split.client += sending;
            } else {
                split.server += sending;
            }
            split.turns.push((last.upstream, sending));
            split.relay += ms(last.written.saturating_duration_since(last.arrived)) - ms(delay);
            cursor = last.written;
            receiver_is_server = last.upstream;
        }
        let tail = ms(to.saturating_duration_since(cursor));
        if receiver_is_server {
            split.server += tail;
        } else {
            split.client += tail;
        }
        split.turns.push((!receiver_is_server, tail));
        split
    }
}

/// The passes of the first `count` flights.
fn first_flights(passes: &[Pass], count: usize) -> &[Pass] {
    let end = passes
        .chunk_by(|a, b| a.upstream == b.upstream)
        .take(count)
        .map(<[Pass]>::len)
        .sum();
    &passes[..end]
}

/// The figures of the measured runs, in ms.
#[derive(Default)]
struct Series {
    tcp_first: Vec<f64>,
    tcp_again: Vec<f64>,
    ws_open: Vec<f64>,
    ws_rtt: Vec<f64>,
    wss_open: Vec<f64>,
    curl_open: Vec<f64>,
    tcp_first_split: Vec<Split>,
    tcp_again_split: Vec<Split>,
    ws_open_split: Vec<Split>,
    ws_rtt_split: Vec<Split>,
    wss_open_split: Vec<Split>,
    curl_open_split: Vec<Split>,
    /// CPU of the probing thread per run.
    ws_cpu: Vec<f64>,
    wss_cpu: Vec<f64>,
    /// Time the probing thread was runnable but not running, per run.
    ws_waited: Vec<f64>,
    wss_waited: Vec<f64>,
}

impl Series {
    fn append(&mut self, other: Series) {
        self.tcp_first.extend(other.tcp_first);
        self.tcp_again.extend(other.tcp_again);
        self.ws_open.extend(other.ws_open);
        self.ws_rtt.extend(other.ws_rtt);
        self.wss_open.extend(other.wss_open);
        self.curl_open.extend(other.curl_open);
        self.tcp_first_split.extend(other.tcp_first_split);
        self.tcp_again_split.extend(other.tcp_again_split);
        self.ws_open_split.extend(other.ws_open_split);
        self.ws_rtt_split.extend(other.ws_rtt_split);
        self.wss_open_split.extend(other.wss_open_split);
        self.curl_open_split.extend(other.curl_open_split);
        self.ws_cpu.extend(other.ws_cpu);
        self.wss_cpu.extend(other.wss_cpu);
        self.ws_waited.extend(other.ws_waited);
        self.wss_waited.extend(other.wss_waited);
    }
}

/// The instants of a bare TCP client's two exchanges.
struct TcpExchanges {
    start: Instant,
    first_end: Instant,
    again_start: Instant,
    again_end: Instant,
}

/// A bare TCP client: from before connect to the first echo, then one
/// more exchange on the same socket.
fn tcp_exchanges(addr: SocketAddr) -> TcpExchanges {
    let message = [0x5a_u8; PING_BYTES];
    let mut reply = [0u8; PING_BYTES];
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).expect("connect to the TCP echo path");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    tcp.write_all(&message).expect("write ping");
    tcp.read_exact(&mut reply).expect("read echo");
    let first_end = Instant::now();
    let again_start = Instant::now();
    tcp.write_all(&message).expect("write ping");
    tcp.read_exact(&mut reply).expect("read echo");
    TcpExchanges {
        start,
        first_end,
        again_start,
        again_end: Instant::now(),
    }
}

/// curl through the same relay, as the yardstick the targets were set
/// against: a WebSocket upgrade request over HTTPS, its open taken as
/// `time_starttransfer` (the 101's first byte; wsprobe's open ends later,
/// when the 101 has been read and checked).
struct Curl {
    url: String,
    ca_file: std::path::PathBuf,
}

impl Curl {
    /// None when there is no curl to run.
    fn find(addr: SocketAddr, ca_file: &std::path::Path) -> Option<Curl> {
        let found = std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        found.then(|| Curl {
            url: format!("https://{addr}/"),
            ca_file: ca_file.to_owned(),
        })
    }

    fn open(&self) -> Duration {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--http1.1", "--max-time", "0.5"])
            .arg("--cacert")
            .arg(&self.ca_file)
            .args([
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "-w",
                "%{http_code} %{time_starttransfer}",
            ])
            .arg(&self.url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace();
        assert_eq!(fields.next(), Some("101"), "curl got no 101: {text:?}");
        let seconds = fields
            .next()
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("unexpected curl output: {text:?}"));
        Duration::from_secs_f64(seconds)
    }
}

/// A `ws://` (`tls` None) or `wss://` echo server that records, per
/// connection, the CPU its thread spent from accept until the upgrade was
/// answered (TLS included): the server's share of the open, which the
/// floor counts as zero.
fn timed_echo_server(tls: Option<Arc<ServerConfig>>) -> (SocketAddr, Arc<Mutex<Vec<f64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let samples = Arc::new(Mutex::new(Vec::new()));
    let shared = samples.clone();
    // One connection at a time on one long-lived thread, as the bench's
    // runs are sequential: a thread made per connection would meet the
    // first bytes with a fresh stack and heap, and the floor counts the
    // server as instant. A connection left hanging is given up on.
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let _ = tcp.set_nodelay(true);
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
            let start = thread_cpu();
            let record = || shared.lock().unwrap().push(ms(thread_cpu() - start));
            match &tls {
                None => {
                    if let Ok(ws) = tungstenite::accept(tcp) {
                        record();
                        echo(ws);
                    }
                }
                Some(config) => {
                    let Ok(conn) = ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    if let Ok(ws) = tungstenite::accept(StreamOwned::new(conn, tcp)) {
                        record();
                        echo(ws);
                    }
                }
            }
        }
    });
    (addr, samples)
}

/// As the shared echo servers do: every text or binary message back.
fn echo<S: Read + Write>(mut ws: WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(message) if message.is_text() || message.is_binary() => {
                if ws.send(message).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// CPU time this thread has used (schedstat's first field, ns), after a
/// yield that brings the kernel's count up to date.
fn thread_cpu() -> Duration {
    thread::yield_now();
    schedstat(0)
}

/// Time this thread has spent runnable but not running (schedstat's
/// second field): waiting behind other threads, and each wake-up's way
/// from the event to a CPU.
fn run_delay() -> Duration {
    schedstat(1)
}

fn schedstat(field: usize) -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("read /proc/thread-self/schedstat (Linux only)");
    let ns = text
        .split_whitespace()
        .nth(field)
        .and_then(|field| field.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("unexpected schedstat contents: {text:?}"));
    Duration::from_nanos(ns)
}

/// Asks the kernel for idle states of no exit latency (PM QoS), for as long
/// as the file stays open.
fn hold_shallow_idle() -> std::fs::File {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .expect("WSPROBE_FIDELITY_QOS=1: open /dev/cpu_dma_latency (root only)");
    file.write_all(&0_i32.to_ne_bytes())
        .expect("write 0 to /dev/cpu_dma_latency");
    file
}

/// The first two CPUs this process may run on, or None (with a note) when
/// it may run on fewer.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set for the kernel to
    // fill; CPU_ISSET reads inside it.
    let allowed: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            panic!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    };
    match allowed.as_slice() {
        [first, second, ..] => Some((*first, *second)),
        _ => {
            println!("  WSPROBE_FIDELITY_PIN=1 needs two CPUs; running unpinned");
            None
        }
    }
}

/// Moves the calling thread to `cpu` alone.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // inside it, and the kernel only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

fn timing(value: Option<Duration>) -> f64 {
    ms(duration(value))
}

fn duration(value: Option<Duration>) -> Duration {
    value.expect("a successful run has this timing")
}

/// Median and p95 (nearest rank), ms.
struct Stats {
    median: f64,
    p95: f64,
}

impl Stats {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.collect();
        if values.is_empty() {
            return Stats {
                median: f64::NAN,
                p95: f64::NAN,
            };
        }
        values.sort_unstable_by(f64::total_cmp);
        let rank = |p: usize| values[(values.len() * p).div_ceil(100).max(1) - 1];
        Stats {
            median: rank(50),
            p95: rank(95),
        }
    }
}

fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .unwrap_or_else(|| panic!("{name}={text:?}: expected a non-negative number")),
        Err(_) => default,
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
