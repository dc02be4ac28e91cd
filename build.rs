//! Embeds the build time, so the agent can tell a wall clock that has not
//! been set yet (a router without a battery-backed clock) from a real one.
//! `SOURCE_DATE_EPOCH` wins, for reproducible builds.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=WSPROBE_BUILD_EPOCH={epoch}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}
