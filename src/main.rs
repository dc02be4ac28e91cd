//! argv -> command; the only place that decides exit codes.

use std::process::ExitCode;
use std::time::Instant;

use wsprobe::cli::{self, AdHoc, Command};
use wsprobe::config::{self, Config, ConfigError};
use wsprobe::record::Record;
use wsprobe::writer::Sink;
use wsprobe::{human, once, probe, schedule};

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
            eprintln!("wsprobe: {message}\nRun 'wsprobe --help' for usage.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    ExitCode::from(match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            EXIT_OK
        }
        Command::Version => {
            println!("wsprobe {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Command::Check { config } => match load(&config) {
            Some(loaded) => {
                eprintln!(
                    "wsprobe: {}: valid, {} probe(s)",
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
        Command::Run { config } => {
            let Some(loaded) = load(&config) else {
                return ExitCode::from(EXIT_USAGE);
            };
            match schedule::run(&config, loaded) {
                schedule::Exit::Signalled => EXIT_OK,
                schedule::Exit::StdoutClosed(e) => {
                    eprintln!(
                        "wsprobe: stdout is closed ({e}); nobody reads the records, stopping"
                    );
                    EXIT_PROBE_FAILED
                }
                schedule::Exit::Failed(e) => {
                    eprintln!("wsprobe: {e}");
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
                eprintln!("wsprobe: {}: warning: {warning}", path.display());
            }
            Some(loaded)
        }
        Err(errors) => {
            report_config_errors(&path.display().to_string(), &errors);
            None
        }
    }
}

fn report_config_errors(source: &str, errors: &[ConfigError]) {
    for error in errors {
        eprintln!("wsprobe: {source}: {error}");
    }
    eprintln!(
        "wsprobe: {source}: {} problem(s); nothing was started",
        errors.len()
    );
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
                eprintln!("wsprobe: no probe named {name:?} in the config");
            }
            return EXIT_USAGE;
        }
        probes.retain(|p| names.contains(&p.name));
    }
    let mut sink = Sink::open(&loaded.output);
    if let Err(e) = sink.reopen() {
        eprintln!("wsprobe: cannot open {}: {e}", sink.describe());
        return EXIT_USAGE;
    }
    match once::run_all(probes, &mut sink) {
        Ok(false) => EXIT_OK,
        Ok(true) => EXIT_PROBE_FAILED,
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
        eprintln!("wsprobe: warning: {warning}");
    }
    let Some(spec) = loaded.probes.into_iter().next() else {
        return EXIT_USAGE;
    };
    let mut sink = Sink::open(&config::Output::Stdout);
    let mut summary = human::Summary::default();
    let mut any_failed = false;
    if adhoc.human {
        println!("{}", human::header(&spec));
    }
    let first = Instant::now();
    for seq in 1..=adhoc.count {
        if seq > 1 {
            // Fixed rate: run k starts at first + (k - 1) x interval.
            let due = first + adhoc.interval * (seq - 1) as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let outcome = probe::run_guarded(&spec);
        any_failed |= outcome.reason.is_some();
        let line = if adhoc.human {
            summary.add(&spec, &outcome);
            format!("{}\n", human::line(seq, &spec, &outcome))
        } else {
            Record::new(&spec, &outcome).to_line()
        };
        match sink.write_line(&line) {
            Ok(_) => {}
            Err(_) => return EXIT_PROBE_FAILED,
        }
    }
    if adhoc.human {
        println!("{}", summary.render(&spec));
    }
    if any_failed {
        EXIT_PROBE_FAILED
    } else {
        EXIT_OK
    }
}
