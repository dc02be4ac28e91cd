//! How the real SignalR and JSON-RPC servers of `.ci/install-proto.sh`
//! are launched, shared by `tests/presets.rs` and `benches/exchange.rs`
//! (each includes this file) so that the bench times the servers the
//! tests check. `root` is the install prefix (/opt/wsprobe-proto).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The anvil binary that npm `@foundry-rs/anvil` ships.
pub fn anvil_binary(root: &Path) -> PathBuf {
    root.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

/// anvil on 127.0.0.1:`port`, silent (ready once it accepts TCP); stdin
/// piped so that its end stops it with the caller.
pub fn anvil(binary: &Path, port: u16) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--silent",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null());
    cmd
}

/// The python of aiosignalr's own venv.
pub fn signalr_python(root: &Path) -> PathBuf {
    root.join("venv/bin/python")
}

/// `tests/presets/signalr_server.py PORT`: a hub at `/hub` with an `echo`
/// method; prints "ready" once listening, exits when stdin ends.
pub fn signalr(python: &Path, port: u16) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/presets/signalr_server.py"
    ))
    .arg(port.to_string());
    cmd
}
