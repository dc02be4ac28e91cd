//! wsprobe: a WebSocket probe agent for routers and small appliances.
//!
//! Data flows config -> schedule -> probe -> outcome -> record -> output;
//! `reflect` is the echo endpoint for the far end of a path, on its own.

pub mod cli;
pub mod clock;
pub mod config;
pub mod exchange;
pub mod human;
pub mod messages;
pub mod once;
pub mod outcome;
pub mod output;
pub mod probe;
pub mod record;
pub mod redact;
pub mod reflect;
pub mod schedule;
pub mod spec;
