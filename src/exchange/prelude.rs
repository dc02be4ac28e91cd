//! The prelude: steps run in order after the open and before the measured
//! exchange, under the run's deadline (a GraphQL `connection_init`, an
//! MQTT CONNECT).

use super::{Expect, Message};

/// A prelude has at most this many steps.
pub const MAX_STEPS: usize = 16;

/// One step: a message to send, a reply to await, or both in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub send: Option<Message>,
    pub expect: Option<Expect>,
}

/// How records and config errors name step `index` (from 0).
pub fn step_name(index: usize) -> String {
    format!("prelude[{index}]")
}
