//! argv -> command; the only place that decides exit codes.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::select;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use wsprobe::cli::{self, AdHoc, Command};
use wsprobe::config::{self, Config, ConfigError};
use wsprobe::outcome::Outcome;
use wsprobe::output::ndjson::Sink;
use wsprobe::record::Record;
use wsprobe::schedule::PROBE_STACK;
use wsprobe::{human, once, probe, reflect, say, schedule};

/// Success, or every record without a reason.
const EXIT_OK: u8 = 0;
/// `once`/`probe` ran and at least one record has a reason.
const EXIT_PROBE_FAILED: u8 = 1;
/// Usage or config error: nothing was started.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1).collect()) {
        Ok(command) => command,
        Err(cli::UsageError(message)) => {
            say!("{message}");
            say!("run 'wsprobe --help' for usage");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    ExitCode::from(match command {
        Command::Help => {
            // `wsprobe --help | head` must not panic on the closed pipe.
            let _ = std::io::stdout().write_all(cli::USAGE.as_bytes());
            EXIT_OK
        }
        Command::Version => {
            let version = format!("wsprobe {}\n", env!("CARGO_PKG_VERSION"));
            let _ = std::io::stdout().write_all(version.as_bytes());
            EXIT_OK
        }
        Command::Check { config } => match load(&config) {
            Some(loaded) => {
                say!(
                    "{}: valid, {} probe(s)",
                    config.display(),
                    loaded.probes.len()
                );
                EXIT_OK
            }
            None => EXIT_USAGE,
        },
        Command::Once { config, names } => {
            let Some(loaded) = load(&config) else {
                return ExitCode::from(EXIT_USAGE);
            };
            once_command(loaded, &names)
        }
        Command::Probe(adhoc) => probe_command(adhoc),
        Command::Reflect(options) => match reflect::run(options) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                say!("{e}");
                EXIT_USAGE
            }
        },
        Command::Run { config } => {
            let signals = match schedule::Signals::install() {
                Ok(signals) => signals,
                Err(e) => {
                    say!("cannot install signal handlers: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let Some(loaded) = load(&config) else {
                return ExitCode::from(EXIT_USAGE);
            };
            match schedule::run(&config, loaded, signals) {
                schedule::Exit::Signalled => EXIT_OK,
                schedule::Exit::StdoutClosed(e) => {
                    say!("stdout is closed ({e}); nobody reads the records, stopping");
                    EXIT_PROBE_FAILED
                }
                schedule::Exit::Failed(e) => {
                    say!("{e}");
                    EXIT_USAGE
                }
            }
        }
    })
}

/// Loads a config, printing every problem and every warning on stderr.
fn load(path: &std::path::Path) -> Option<Config> {
    match config::load_file(path, &config::process_env) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                say!("{}: warning: {warning}", path.display());
            }
            Some(loaded)
        }
        Err(errors) => {
            report_config_errors(&path.display().to_string(), &errors);
            None
        }
    }
}

/// Prints every config problem, each prefixed with where it comes from:
/// the file, or nothing for the flags of `wsprobe probe`.
fn report_config_errors(source: &str, errors: &[ConfigError]) {
    let prefix = if source.is_empty() {
        String::new()
    } else {
        format!("{source}: ")
    };
    for error in errors {
        say!("{prefix}{error}");
    }
    say!("{prefix}{} problem(s); nothing was started", errors.len());
}

fn once_command(loaded: Config, names: &[String]) -> u8 {
    let mut probes = loaded.probes;
    if !names.is_empty() {
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !probes.iter().any(|p| &p.name == *n))
            .collect();
        if !unknown.is_empty() {
            for name in unknown {
                say!("no probe named {name:?} in the config");
            }
            return EXIT_USAGE;
        }
        probes.retain(|p| names.contains(&p.name));
    }
    // `once` is for reading records: with `"ndjson": null` they go to stdout.
    let output = match loaded.output {
        config::Output::Discard => config::Output::Stdout,
        output => output,
    };
    let mut sink = Sink::open(&output);
    if let Err(e) = sink.reopen() {
        say!("cannot open {}: {e}", sink.describe());
        return EXIT_USAGE;
    }
    match once::run_all(probes, &mut sink) {
        Ok(any_failed) => exit_for(any_failed),
        Err(_) => EXIT_PROBE_FAILED,
    }
}

fn probe_command(adhoc: AdHoc) -> u8 {
    let loaded = match config::ad_hoc_probe(&adhoc.fields, &config::process_env) {
        Ok(loaded) => loaded,
        Err(errors) => {
            report_config_errors("", &errors);
            return EXIT_USAGE;
        }
    };
    for warning in &loaded.warnings {
        say!("warning: {warning}");
    }
    let Some(spec) = loaded.probes.into_iter().next() else {
        return EXIT_USAGE;
    };
    let spec = Arc::new(spec);
    let mut sink = Sink::open(&config::Output::Stdout);
    let mut summary = human::Summary::default();
    let mut any_failed = false;

    // Like ping, the readable form prints its summary on Ctrl-C; the JSON
    // form keeps the default (records already written are complete lines).
    let (interrupt_tx, interrupt_rx) = crossbeam_channel::bounded(1);
    if adhoc.human {
        if let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) {
            // Without this thread Ctrl-C just ends the process, as usual.
            let _ = thread::Builder::new()
                .name("signals".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    if signals.forever().next().is_some() {
                        let _ = interrupt_tx.send(());
                    }
                });
        }
        if sink
            .write_line(&format!("{}\n", human::header(&spec)))
            .is_err()
        {
            return EXIT_OK;
        }
    }

    let (outcome_tx, outcome_rx) = crossbeam_channel::bounded::<(u64, Outcome)>(0);
    let worker_spec = spec.clone();
    let spawned = thread::Builder::new()
        .name("probe".into())
        .stack_size(PROBE_STACK)
        .spawn(move || {
            let first = Instant::now();
            for seq in 1..=adhoc.count {
                // Fixed rate: run k starts at first + (k - 1) x interval.
                let offset = u32::try_from(seq - 1).unwrap_or(u32::MAX);
                let due = first + adhoc.interval.saturating_mul(offset);
                thread::sleep(due.saturating_duration_since(Instant::now()));
                let outcome = probe::run_guarded(&worker_spec);
                if outcome_tx.send((seq, outcome)).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        say!("cannot start the probe thread: {e}");
        return EXIT_PROBE_FAILED;
    }

    loop {
        select! {
            recv(outcome_rx) -> done => {
                let Ok((seq, outcome)) = done else { break };
                any_failed |= outcome.reason.is_some();
                let line = if adhoc.human {
                    summary.add(&spec, &outcome);
                    format!("{}\n", human::line(seq, &spec, &outcome))
                } else {
                    Record::new(&spec, &outcome).to_line()
                };
                match sink.write_line(&line) {
                    Ok(Ok(())) => {}
                    // A closed pipe (`| head`): nobody reads on, stop quietly.
                    Err(_) => return exit_for(any_failed),
                    // Anything else (a full disk, a closed descriptor) loses
                    // the record: say so, and stop.
                    Ok(Err(e)) => {
                        say!("cannot write a record to {}: {e}", sink.describe());
                        return EXIT_PROBE_FAILED;
                    }
                }
            },
            // The run in flight is abandoned, as the agent does; the exit
            // code speaks of the records written.
            recv(interrupt_rx) -> _ => break,
        }
    }
    if adhoc.human {
        let _ = sink.write_line(&format!("{}\n", summary.render(&spec)));
    }
    exit_for(any_failed)
}

fn exit_for(any_failed: bool) -> u8 {
    if any_failed {
        EXIT_PROBE_FAILED
    } else {
        EXIT_OK
    }
}
