//! The upgrade answer as the probe reads it - status line, headers,
//! informational answers, the 64 KiB and 64-header caps - in any chunking.
//! `ACCEPT` in the input stands for the right Sec-WebSocket-Accept value,
//! so the fuzzer reaches the checks after it.
//!
//! Properties: the probe reads no more than the head cap and a read's
//! worth; it allocates no more than that and a constant; an open says 101
//! and a failure is an open failure in the upgrade phase; a `Location`
//! quoted in `meta.location` is cut short and keeps no userinfo.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsprobe::outcome::{Outcome, Phase, Reason};
use wsprobe::probe::upgrade::{self, Request};
use wsprobe::probe::ws;
use wsprobe_fuzz::{spec, Chunked, Counting, KEY};

#[global_allocator]
static ALLOC: Counting = Counting;

/// The head cap (`upgrade::MAX_HEAD`) and one read past it.
const MOST_READ: usize = 64 * 1024 + 1024;

fuzz_target!(|input: &[u8]| {
    let (seed, answer) = Chunked::split(input);
    let accept = upgrade::accept_for(KEY);
    let bytes = replace(answer, b"ACCEPT", accept.as_bytes());
    let spec = spec();
    let request = Request::with_key(spec, KEY);
    let mut wire = Chunked::new(&bytes, seed);
    let mut outcome = Outcome::begin();
    let base = Counting::reset_peak();
    let config = ws::config(spec);
    let upgraded = upgrade::upgrade(spec, &request, &mut wire, config, &mut outcome.meta);
    let peak = Counting::peak().saturating_sub(base);
    let failure = upgraded.err();
    assert!(
        wire.consumed() <= MOST_READ,
        "read {} bytes",
        wire.consumed()
    );
    assert!(peak <= 2 * MOST_READ + 64 * 1024, "{peak} bytes allocated");
    match failure {
        None => assert_eq!(outcome.meta.http_status, Some(101)),
        Some(failure) => {
            assert!(matches!(
                failure.reason,
                Reason::WsOpenFailed | Reason::WsHandshakeTimeout
            ));
            assert_eq!(failure.phase, Some(Phase::Upgrade));
        }
    }
    if let Some(location) = &outcome.meta.location {
        assert!(
            location.len() <= 1024,
            "meta.location of {} bytes",
            location.len()
        );
    }
});

/// `haystack` with every `from` replaced by `to`.
fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}
