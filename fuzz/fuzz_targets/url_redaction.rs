//! The URL parser and the redaction of URLs and `meta.location`.
//!
//! The input is cut into the parts of a URL (scheme, user, password, host,
//! path, query and fragment parameters); the password and the values of
//! secret-named parameters are marked, a marker between every two of
//! their characters, and the marker appears nowhere else. Property: no
//! marker - so no two characters of a secret in a row - survives in
//! `redact::url`'s output, in `meta.location` as the probe fills it from a
//! redirect, in the parser's errors, or in a probe's display URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsprobe::config;
use wsprobe::outcome::Outcome;
use wsprobe::probe::upgrade::{self, Request};
use wsprobe::probe::ws;
use wsprobe::redact;
use wsprobe_fuzz::{spec, Chunked, KEY};

const MARK: char = '\u{24c8}';

/// Names of query parameters the redaction treats as secret, in the shapes
/// seen in the wild.
const SECRET_NAMES: [&str; 6] = [
    "token",
    "api_key",
    "Password",
    "X-Amz-Signature",
    "sessionid",
    "jwt",
];

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input).replace(MARK, "");
    let mut parts = text.split('\u{0}');
    let mut next = || parts.next().unwrap_or("").to_owned();
    let scheme = ["ws", "wss", "WSS", "http", "https", ""][next().len() % 6];
    // The parts keep away from the delimiters that would move them to
    // another part of the URL: a password with a '/' is a path.
    let user = keep(&next(), "@/?#:");
    let password = marked(&keep(&next(), "@/?#"));
    let host = keep(&next(), "@/?#");
    let path = keep(&next(), "?#");
    let mut url = String::new();
    if !scheme.is_empty() {
        url.push_str(scheme);
        url.push(':');
    }
    url.push_str(&format!("//{user}:{password}@{host}/{path}"));
    for (i, separator) in ['?', '#'].into_iter().enumerate() {
        let plain = keep(&next(), "&#=");
        let secret = marked(&keep(&next(), "&#"));
        let name = SECRET_NAMES[(plain.len() + i) % SECRET_NAMES.len()];
        url.push_str(&format!("{separator}{plain}&{name}={secret}&x={plain}"));
    }

    let redacted = redact::url(&url);
    assert!(!redacted.contains(MARK), "{url:?} -> {redacted:?}");
    // Redaction keeps the URL's shape: the secrets' places say REDACTED.
    assert!(redacted.contains(redact::REDACTED));

    match config::url::parse_url(&url) {
        Ok(target) => assert!(!format!("{target:?}").is_empty()),
        Err((message, hint)) => {
            assert!(!message.contains(MARK), "{message}");
            assert!(!hint.unwrap_or_default().contains(MARK));
        }
    }
    let json = format!(
        r#"{{"probes": [{{"name": "u", "url": {}}}]}}"#,
        serde_json_string(&url)
    );
    match config::load_str(&json, &|_| None) {
        Ok(config) => {
            for probe in config.probes {
                assert!(!probe.display_url.contains(MARK), "{}", probe.display_url);
            }
        }
        Err(problems) => {
            for problem in problems {
                assert!(!problem.to_string().contains(MARK), "{problem}");
            }
        }
    }

    // meta.location, as the probe fills it from a redirect answer.
    let spec = spec();
    let answer = format!("HTTP/1.1 302 Found\r\nLocation: {url}\r\n\r\n");
    let mut wire = Chunked::new(answer.as_bytes(), 0);
    let mut outcome = Outcome::begin();
    let request = Request::with_key(spec, KEY);
    let upgraded = upgrade::upgrade(
        spec,
        &request,
        &mut wire,
        ws::config(spec),
        &mut outcome.meta,
    );
    if let Err(failure) = upgraded {
        assert!(!failure.error.contains(MARK), "{}", failure.error);
    }
    if let Some(location) = &outcome.meta.location {
        assert!(!location.contains(MARK), "{location}");
    }
});

/// `text` without any of `banned` nor control characters or spaces.
fn keep(text: &str, banned: &str) -> String {
    text.chars()
        .filter(|c| !banned.contains(*c) && !c.is_control() && !c.is_whitespace())
        .collect()
}

/// `secret` with a marker before, between and after its characters.
fn marked(secret: &str) -> String {
    let mut out = String::from(MARK);
    for c in secret.chars() {
        out.push(c);
        out.push(MARK);
    }
    out
}

/// `text` as a JSON string literal.
fn serde_json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
