//! Each field of a probe (or of `defaults`), checked on its own.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::proxy::{parse_proxy_url, ProxyChoice};
use super::words::{expand_env, is_label_name, is_reserved_label, is_token, suggest};
use super::{
    ConfigError, Fields, Loader, INTERVAL_MS, MAX_MESSAGE_BYTES, THRESHOLD_FIELDS, TIMEOUT_MS,
    TLS_FIELDS,
};
use crate::exchange;
use crate::spec::{Interpretation, IpVersion, RoundTripScope};

impl Loader<'_> {
    /// Parses the fields present in `object`, each checked on its own.
    pub(super) fn fields(&mut self, place: &str, object: &Map<String, Value>) -> Fields {
        let mut f = Fields::default();
        for (key, value) in object {
            let field = key.as_str();
            match field {
                "interpretation" => {
                    f.interpretation = self.choice(
                        place,
                        field,
                        value,
                        Interpretation::from_wire,
                        "handshake_latency, round_trip_latency or connection_success",
                    );
                }
                "timeout_ms" => f.timeout_ms = self.ranged(place, field, value, TIMEOUT_MS),
                "interval_ms" => f.interval_ms = self.ranged(place, field, value, INTERVAL_MS),
                "max_message_bytes" => {
                    f.max_message_bytes = self.ranged(place, field, value, MAX_MESSAGE_BYTES)
                }
                "ping_mode" => {
                    f.ping_mode_message = self.choice(
                        place,
                        field,
                        value,
                        |s| match s {
                            "message" => Some(true),
                            "none" => Some(false),
                            _ => None,
                        },
                        "none or message",
                    );
                }
                "round_trip_scope" => {
                    f.round_trip_scope = self.choice(
                        place,
                        field,
                        value,
                        |s| match s {
                            "message" => Some(RoundTripScope::Message),
                            "open_and_message" => Some(RoundTripScope::OpenAndMessage),
                            _ => None,
                        },
                        "message or open_and_message",
                    );
                }
                "send_message" => f.send_message = self.message(place, field, value, false),
                "expect_message" => f.expect_message = self.message(place, field, value, false),
                "samples" => f.samples = self.ranged(place, field, value, exchange::SAMPLES),
                "sample_timeout_ms" => {
                    f.sample_timeout_ms = self.ranged(place, field, value, exchange::SAMPLE_TIMEOUT_MS)
                }
                "sample_interval_ms" => {
                    f.sample_interval_ms =
                        self.ranged(place, field, value, exchange::SAMPLE_INTERVAL_MS)
                }
                "protocols" => f.protocols = self.protocols(place, value),
                "headers" => f.headers = self.headers(place, value),
                "labels" => f.labels = self.labels(place, field, value),
                "thresholds" => {
                    f.thresholds_set = true;
                    self.thresholds(place, value, &mut f);
                }
                "tls" => {
                    f.tls_set = true;
                    self.tls_fields(place, value, &mut f);
                }
                "ip_version" => {
                    f.ip_version = match value {
                        Value::String(s) if s == "any" => Some(IpVersion::Any),
                        Value::String(s) if s == "4" => Some(IpVersion::V4),
                        Value::String(s) if s == "6" => Some(IpVersion::V6),
                        Value::Number(n) if n.as_u64() == Some(4) => Some(IpVersion::V4),
                        Value::Number(n) if n.as_u64() == Some(6) => Some(IpVersion::V6),
                        _ => {
                            self.error(place, field, format!("must be \"any\", 4 or 6 (got {value})"));
                            None
                        }
                    }
                }
                "bind_interface" => {
                    f.bind_interface = self.string(place, field, value).filter(|name| {
                        let valid = (1..=15).contains(&name.len())
                            && name != "."
                            && name != ".."
                            && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
                        if !valid {
                            self.error(place, field, format!("{name:?} is not an interface name (1 to 15 bytes, no '/', ':' or spaces)"));
                        }
                        valid
                    })
                }
                "source_ip" => {
                    f.source_ip = match value.as_str().map(str::parse::<IpAddr>) {
                        Some(Ok(ip)) => Some(ip),
                        _ => {
                            self.error(place, field, format!("must be an IPv4 or IPv6 address (got {value})"));
                            None
                        }
                    }
                }
                "fwmark" => {
                    let parsed = match value {
                        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                        Value::String(s) => s
                            .strip_prefix("0x")
                            .and_then(|hex| u32::from_str_radix(hex, 16).ok()),
                        _ => None,
                    };
                    if parsed.is_none() {
                        self.error(place, field, format!("must be a 32-bit mark, a number or \"0x...\" (got {value})"));
                    }
                    f.fwmark = parsed;
                }
                "proxy" => {
                    // A URL inside an array or object is a password all the
                    // same: only its type is said.
                    let container = match value {
                        Value::Array(_) => Some("an array"),
                        Value::Object(_) => Some("an object"),
                        _ => None,
                    };
                    f.proxy = match container {
                        Some(kind) => {
                            self.error(place, field, format!("must be a string (got {kind})"));
                            None
                        }
                        None => self
                            .string(place, field, value)
                            .and_then(|raw| self.proxy(place, &raw)),
                    };
                }
                _ => {} // name and url are the probe's; unknown keys reported apart
            }
        }
        f
    }

    pub(super) fn ranged(
        &mut self,
        place: &str,
        field: &str,
        value: &Value,
        (low, high): (u64, u64),
    ) -> Option<u64> {
        match value.as_u64() {
            Some(n) if (low..=high).contains(&n) => Some(n),
            Some(n) => {
                self.error(
                    place,
                    field,
                    format!("must be from {low} to {high} (got {n})"),
                );
                None
            }
            None => {
                self.error(
                    place,
                    field,
                    format!("must be a whole number from {low} to {high} (got {value})"),
                );
                None
            }
        }
    }

    pub(super) fn choice<T>(
        &mut self,
        place: &str,
        field: &str,
        value: &Value,
        parse: impl Fn(&str) -> Option<T>,
        allowed: &str,
    ) -> Option<T> {
        let parsed = value.as_str().and_then(&parse);
        if parsed.is_none() {
            let hint = value.as_str().and_then(|s| {
                let options: Vec<&str> = allowed
                    .split([',', ' '])
                    .filter(|w| !w.is_empty() && *w != "or")
                    .collect();
                suggest(s, &options).map(|s| format!("did you mean \"{s}\"?"))
            });
            self.error_with_hint(
                place,
                field,
                format!("must be one of {allowed} (got {value})"),
                hint,
            );
        }
        parsed
    }

    pub(super) fn string(&mut self, place: &str, field: &str, value: &Value) -> Option<String> {
        match value.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.error(place, field, format!("must be a string (got {value})"));
                None
            }
        }
    }

    pub(super) fn protocols(&mut self, place: &str, value: &Value) -> Option<Vec<String>> {
        let field = "protocols";
        let Some(items) = value.as_array() else {
            self.error(place, field, "must be an array of subprotocol names");
            return None;
        };
        let mut protocols: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{i}]");
            match item.as_str() {
                Some(p) if !is_token(p) => self.error(
                    place,
                    &item_field,
                    format!(
                        "{p:?} is not a valid token (letters, digits and !#$%&'*+-.^_`|~ only)"
                    ),
                ),
                Some(p) if protocols.iter().any(|q| q == p) => {
                    self.error(place, &item_field, format!("{p:?} is offered twice"))
                }
                Some(p) => protocols.push(p.to_owned()),
                None => self.error(place, &item_field, "must be a string"),
            }
        }
        Some(protocols)
    }

    pub(super) fn headers(&mut self, place: &str, value: &Value) -> Option<Vec<(String, String)>> {
        let Some(object) = value.as_object() else {
            self.error(
                place,
                "headers",
                "must be an object of header names and values",
            );
            return None;
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, value) in object {
            let field = format!("headers.{name}");
            let lower = name.to_ascii_lowercase();
            if !is_token(name) {
                self.error(place, &field, "is not a valid header name");
                continue;
            }
            if matches!(lower.as_str(), "host" | "connection" | "upgrade")
                || lower.starts_with("sec-websocket-")
            {
                let hint = if lower == "sec-websocket-protocol" {
                    "offer subprotocols with \"protocols\""
                } else {
                    "the handshake sets it itself"
                };
                self.error_with_hint(place, &field, "cannot be set", Some(hint.to_owned()));
                continue;
            }
            if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                self.error(place, &field, "is set twice (header names ignore case)");
                continue;
            }
            let Some(raw) = value.as_str() else {
                self.error(place, &field, "must be a string");
                continue;
            };
            let Some(expanded) = self.substitute(place, &field, raw) else {
                continue;
            };
            if expanded.contains(['\r', '\n', '\0']) {
                self.error(
                    place,
                    &field,
                    "value contains CR, LF or NUL (values are never shown)",
                );
                continue;
            }
            if !expanded
                .bytes()
                .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
            {
                self.error(
                    place,
                    &field,
                    "value has characters a header cannot carry: non-ASCII or control \
                     (values are never shown)",
                );
                continue;
            }
            headers.push((name.clone(), expanded));
        }
        Some(headers)
    }

    pub(super) fn labels(
        &mut self,
        place: &str,
        field: &str,
        value: &Value,
    ) -> Option<BTreeMap<String, String>> {
        let Some(object) = value.as_object() else {
            self.error(
                place,
                field,
                "must be an object of label names and string values",
            );
            return None;
        };
        let mut labels = BTreeMap::new();
        for (name, value) in object {
            let label_field = format!("{field}.{name}");
            if !is_label_name(name) {
                self.error(
                    place,
                    &label_field,
                    "label names are letters, digits and _, not starting with a digit",
                );
                continue;
            }
            if is_reserved_label(name) {
                self.error_with_hint(
                    place,
                    &label_field,
                    "clashes with a label of the Prometheus metrics",
                    Some(
                        "probe, phase, reason, health, le and names starting \"__\" are taken"
                            .to_owned(),
                    ),
                );
                continue;
            }
            match value.as_str() {
                Some(v) => {
                    labels.insert(name.clone(), v.to_owned());
                }
                None => self.error(
                    place,
                    &label_field,
                    format!("must be a string (got {value})"),
                ),
            }
        }
        Some(labels)
    }

    pub(super) fn thresholds(&mut self, place: &str, value: &Value, f: &mut Fields) {
        let Some(object) = value.as_object() else {
            self.error(
                place,
                "thresholds",
                "must be an object like {\"healthy_below\": 200, \"unhealthy_above\": 1000}",
            );
            return;
        };
        self.unknown_keys(place, "thresholds.", object, &THRESHOLD_FIELDS);
        for (key, slot) in [
            ("healthy_below", &mut f.healthy_below),
            ("unhealthy_above", &mut f.unhealthy_above),
        ] {
            if let Some(v) = object.get(key) {
                match v.as_f64() {
                    Some(ms) if ms >= 0.0 => *slot = Some(ms),
                    _ => self.errors.push(ConfigError {
                        place: place.to_owned(),
                        field: format!("thresholds.{key}"),
                        message: format!("must be a number of milliseconds, 0 or more (got {v})"),
                        hint: None,
                    }),
                }
            }
        }
    }

    pub(super) fn tls_fields(&mut self, place: &str, value: &Value, f: &mut Fields) {
        let Some(object) = value.as_object() else {
            self.error(
                place,
                "tls",
                "must be an object with ca_file, server_name or insecure_skip_verify",
            );
            return;
        };
        self.unknown_keys(place, "tls.", object, &TLS_FIELDS);
        if let Some(v) = object.get("ca_file") {
            f.tls_ca_file = self.string(place, "tls.ca_file", v);
        }
        if let Some(v) = object.get("server_name") {
            f.tls_server_name = self.string(place, "tls.server_name", v);
            if let Some(name) = &f.tls_server_name {
                if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                    self.error(
                        place,
                        "tls.server_name",
                        format!("{name:?} is not a valid DNS name or IP address"),
                    );
                }
            }
        }
        if let Some(v) = object.get("insecure_skip_verify") {
            match v.as_bool() {
                Some(b) => f.tls_insecure = Some(b),
                None => self.error(
                    place,
                    "tls.insecure_skip_verify",
                    format!("must be true or false (got {v})"),
                ),
            }
        }
    }

    /// `"env"`, or an `http://` proxy URL after `${NAME}` expansion.
    fn proxy(&mut self, place: &str, raw: &str) -> Option<ProxyChoice> {
        if raw == "env" {
            return Some(ProxyChoice::Env);
        }
        let expanded = self.substitute(place, "proxy", raw)?;
        match parse_proxy_url(&expanded, false) {
            Ok(proxy) => Some(ProxyChoice::Given(proxy)),
            Err((message, hint)) => {
                self.error_with_hint(place, "proxy", message, hint);
                None
            }
        }
    }

    /// Replaces `${NAME}` with the environment variable NAME.
    pub(super) fn substitute(&mut self, place: &str, field: &str, raw: &str) -> Option<String> {
        match expand_env(raw, self.env) {
            Ok(s) => Some(s),
            Err(message) => {
                self.error(place, field, message);
                None
            }
        }
    }
}
