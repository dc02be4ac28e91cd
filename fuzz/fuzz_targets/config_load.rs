//! The config loader from raw bytes: the JSON parser, then every rule.
//!
//! Properties: a config either loads, with probes that keep the spec's
//! invariants, or yields at least one problem, each saying where (a place)
//! and what (a message); loading is deterministic; a secret from the
//! environment (`${WSPROBE_FUZZ_SECRET}`) never shows in a problem nor in
//! a probe's display URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsprobe::config;
use wsprobe::spec::Interpretation;

/// `${WSPROBE_FUZZ_SECRET}` expands to this; it must never be quoted.
const SECRET: &str = "s3cr3t-fuzz-value";

fn env(name: &str) -> Option<String> {
    (name == "WSPROBE_FUZZ_SECRET").then(|| SECRET.to_owned())
}

fuzz_target!(|bytes: &[u8]| {
    // The file reader refuses what is not UTF-8, with a problem of its own.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    // The secret is what `${WSPROBE_FUZZ_SECRET}` brings in; written out
    // in the text, it is no secret of the environment's.
    let watch_secret = !text.contains(SECRET);
    let loaded = config::load_str(text, &env);
    match &loaded {
        Ok(config) => {
            assert!(!config.probes.is_empty(), "a config without probes loaded");
            for probe in &config.probes {
                assert!(!probe.name.is_empty());
                assert_eq!(
                    probe.exchange.is_some(),
                    probe.interpretation == Interpretation::RoundTripLatency,
                    "{}: an exchange exactly on round-trip probes",
                    probe.name
                );
                assert_eq!(probe.tls.is_some(), probe.target.secure, "{}", probe.name);
                assert!((1024..=64 << 20).contains(&probe.max_message_bytes));
                assert!(probe.timeout <= probe.interval, "{}", probe.name);
                assert!(
                    !(watch_secret && probe.display_url.contains(SECRET)),
                    "{}: a secret in display_url",
                    probe.name
                );
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a word");
            for problem in problems {
                assert!(!problem.place.is_empty(), "{problem:?}");
                assert!(!problem.message.is_empty(), "{problem:?}");
                assert!(
                    !(watch_secret && problem.to_string().contains(SECRET)),
                    "{problem}"
                );
            }
        }
    }
    let again = config::load_str(text, &env);
    match (&loaded, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a.probes, b.probes),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("loading the same text twice gave different verdicts"),
    }
});
