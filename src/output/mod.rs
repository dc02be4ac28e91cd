//! Where a run's outcome goes once the probe is done with it: NDJSON
//! records (`ndjson`, on the one writer thread), and the Prometheus
//! metrics state (`metrics`), published as a `.prom` file (`textfile`)
//! and on `/metrics` (`http`).
//!
//! A probe thread never waits for any of them: the metrics state is
//! updated under a short lock, the line is offered to the writer's queue
//! with `try_send`, and the textfile thread is nudged the same way.

pub mod http;
pub mod metrics;
pub mod ndjson;
pub mod textfile;

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::{Sender, TrySendError};

use crate::outcome::Outcome;
use crate::record::Record;
use crate::spec::ProbeSpec;

use self::metrics::Metrics;

/// What every probe thread holds to hand over its outcomes.
#[derive(Clone)]
pub struct Feed {
    /// The NDJSON writer's queue, bounded: offered, never waited on.
    pub lines: Sender<String>,
    pub metrics: Arc<Metrics>,
    /// Wakes the textfile thread; a full slot means a rewrite is due anyway.
    pub changed: Sender<()>,
    /// False once the agent stops: no line is handed over after that, so
    /// the account at the stop is exact. Held for reading while a line is
    /// offered.
    pub open: Arc<RwLock<bool>>,
}

impl Feed {
    /// Hands one outcome to every output without blocking. Returns false
    /// when the writer is gone (the agent is stopping). A bug in making
    /// the record ends neither the probe nor the account: it is a record
    /// handed over and counted as dropped.
    pub fn deliver(&self, spec: &ProbeSpec, outcome: &Outcome) -> bool {
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        if !*open {
            return false;
        }
        let made = panic::catch_unwind(AssertUnwindSafe(|| {
            self.metrics.observe(spec, outcome);
            Record::new(spec, outcome).to_line()
        }));
        let _ = self.changed.try_send(());
        match made.map(|line| self.lines.try_send(line)) {
            Ok(Ok(())) => {}
            Ok(Err(TrySendError::Full(_))) => {
                self.metrics.drops.add(1, "the output is not keeping up");
            }
            Ok(Err(TrySendError::Disconnected(_))) => return false,
            Err(_) => {
                self.metrics
                    .drops
                    .add(1, "internal error while making a record");
            }
        }
        self.metrics.tally.handed_over();
        true
    }
}
