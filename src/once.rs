//! `wsprobe once`: every (or every named) probe once, concurrently.

use std::thread;

use crate::output::ndjson::{Sink, StdoutClosed};
use crate::probe;
use crate::record::Record;
use crate::say;
use crate::schedule::PROBE_STACK;
use crate::spec::ProbeSpec;

/// Runs the probes and writes each record as it completes. Returns whether
/// any record has a reason.
pub fn run_all(probes: Vec<ProbeSpec>, sink: &mut Sink) -> Result<bool, StdoutClosed> {
    let (tx, rx) = crossbeam_channel::unbounded::<(String, bool)>();
    let mut spawn_failed = false;
    for spec in probes {
        let tx = tx.clone();
        let name = spec.name.clone();
        let spawned = thread::Builder::new()
            .name(name.clone())
            .stack_size(PROBE_STACK)
            .spawn(move || {
                let outcome = probe::run_guarded(&spec);
                let line = Record::new(&spec, &outcome).to_line();
                let _ = tx.send((line, outcome.reason.is_some()));
            });
        // The others run on: their records are not lost for this one.
        if let Err(e) = spawned {
            say!("cannot start a thread for probe {name:?}: {e}");
            spawn_failed = true;
        }
    }
    drop(tx);
    let mut any_failed = spawn_failed;
    for (line, failed) in rx {
        any_failed |= failed;
        if let Err(e) = sink.write_line(&line)? {
            say!("cannot write a record to {}: {e}", sink.describe());
            any_failed = true;
        }
    }
    Ok(any_failed)
}
