//! JSON -> validated `ProbeSpec`s, or every problem found.
//!
//! The file is read into a `serde_json::Value` and walked by hand, so that
//! one pass collects every error (serde's derive stops at the first) and
//! each error names the probe and the field it is about.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::probe::tls::TlsFactory;
use crate::redact;
use crate::spec::{
    Exchange, Interpretation, IpVersion, ProbeSpec, RoundTripScope, Route, Target, Thresholds,
    TlsOptions,
};

const TOP_LEVEL_FIELDS: [&str; 4] = ["labels", "defaults", "output", "probes"];
const OUTPUT_FIELDS: [&str; 1] = ["ndjson"];
const PROBE_FIELDS: [&str; 19] = [
    "name",
    "url",
    "interpretation",
    "timeout_ms",
    "interval_ms",
    "ping_mode",
    "send_message",
    "expect_message",
    "protocols",
    "headers",
    "labels",
    "round_trip_scope",
    "max_message_bytes",
    "thresholds",
    "tls",
    "ip_version",
    "bind_interface",
    "source_ip",
    "fwmark",
];
const THRESHOLD_FIELDS: [&str; 2] = ["healthy_below", "unhealthy_above"];
const TLS_FIELDS: [&str; 3] = ["ca_file", "server_name", "insecure_skip_verify"];

const TIMEOUT_MS: (u64, u64) = (100, 30_000);
const INTERVAL_MS: (u64, u64) = (1000, 86_400_000);
const MAX_MESSAGE_BYTES: (u64, u64) = (1024, 67_108_864);
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_INTERVAL_MS: u64 = 60_000;
const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1_048_576;

/// The name the ad-hoc `wsprobe probe` run goes by.
pub const AD_HOC_NAME: &str = "probe";

/// A loaded, valid configuration.
#[derive(Debug)]
pub struct Config {
    pub probes: Vec<ProbeSpec>,
    pub output: Output,
    /// Things that are allowed but deserve a word (insecure TLS).
    pub warnings: Vec<String>,
}

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

/// One problem in the file: where it is, what is wrong, and maybe a hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// `probe "name"`, `probes[3]`, `defaults`, `output`, or `top level`.
    pub place: String,
    /// The field, dotted for nested ones (`tls.ca_file`); may be empty.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.place)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Reads environment variables for `${NAME}`; tests pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for `Env`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads and validates a config file.
pub fn load_file(path: &Path, env: Env) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            place: path.display().to_string(),
            field: String::new(),
            message: format!("cannot read: {e}"),
            hint: None,
        }]
    })?;
    load_str(&text, env)
}

/// Validates a config given as text.
pub fn load_str(text: &str, env: Env) -> Result<Config, Vec<ConfigError>> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        vec![ConfigError {
            place: format!("line {} column {}", e.line(), e.column()),
            field: String::new(),
            message: format!("invalid JSON: {e}"),
            hint: None,
        }]
    })?;
    let mut loader = Loader::new(env);
    let config = loader.config(&root);
    loader.finish(config)
}

/// Builds the ad-hoc probe of `wsprobe probe` from a JSON object of probe
/// fields (the flags), with the same rules as the file, except that the
/// interval is the command's business.
pub fn ad_hoc_probe(fields: &Map<String, Value>, env: Env) -> Result<Config, Vec<ConfigError>> {
    let mut loader = Loader::new(env);
    let mut object = fields.clone();
    object.insert("name".into(), Value::String(AD_HOC_NAME.into()));
    let probe = loader.probe(
        &Value::Object(object),
        0,
        &Fields::default(),
        &BTreeMap::new(),
        None,
    );
    let config = Config {
        probes: probe.into_iter().collect(),
        output: Output::Stdout,
        warnings: Vec::new(),
    };
    loader.finish(config)
}

/// The fields a probe or `defaults` may set, parsed but not yet merged.
#[derive(Clone, Default)]
struct Fields {
    interpretation: Option<Interpretation>,
    timeout_ms: Option<u64>,
    interval_ms: Option<u64>,
    /// `true` for `message`, `false` for `none`.
    ping_mode_message: Option<bool>,
    send_message: Option<String>,
    expect_message: Option<String>,
    protocols: Option<Vec<String>>,
    headers: Option<Vec<(String, String)>>,
    labels: Option<BTreeMap<String, String>>,
    round_trip_scope: Option<RoundTripScope>,
    max_message_bytes: Option<u64>,
    healthy_below: Option<f64>,
    unhealthy_above: Option<f64>,
    /// Whether `thresholds` was written at all (it may be `{}`).
    thresholds_set: bool,
    tls_ca_file: Option<String>,
    tls_server_name: Option<String>,
    tls_insecure: Option<bool>,
    tls_set: bool,
    ip_version: Option<IpVersion>,
    bind_interface: Option<String>,
    source_ip: Option<IpAddr>,
    fwmark: Option<u32>,
}

struct Loader<'a> {
    env: Env<'a>,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    tls: TlsFactory,
}

impl<'a> Loader<'a> {
    fn new(env: Env<'a>) -> Self {
        Loader {
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
            tls: TlsFactory::default(),
        }
    }

    fn finish(self, mut config: Config) -> Result<Config, Vec<ConfigError>> {
        if self.errors.is_empty() {
            config.warnings = self.warnings;
            Ok(config)
        } else {
            Err(self.errors)
        }
    }

    fn error(&mut self, place: &str, field: &str, message: impl Into<String>) {
        self.error_with_hint(place, field, message, None);
    }

    fn error_with_hint(
        &mut self,
        place: &str,
        field: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.errors.push(ConfigError {
            place: place.to_owned(),
            field: field.to_owned(),
            message: message.into(),
            hint,
        });
    }

    /// Refuses keys that are not in `known`, suggesting the nearest one.
    fn unknown_keys(
        &mut self,
        place: &str,
        prefix: &str,
        object: &Map<String, Value>,
        known: &[&str],
    ) {
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                let hint = suggest(key, known).map(|s| format!("did you mean \"{s}\"?"));
                self.error_with_hint(place, &format!("{prefix}{key}"), "unknown field", hint);
            }
        }
    }

    fn config(&mut self, root: &Value) -> Config {
        let mut config = Config {
            probes: Vec::new(),
            output: Output::Stdout,
            warnings: Vec::new(),
        };
        let place = "top level";
        let Some(root) = root.as_object() else {
            self.error(place, "", "the config must be a JSON object");
            return config;
        };
        self.unknown_keys(place, "", root, &TOP_LEVEL_FIELDS);

        let top_labels = match root.get("labels") {
            Some(value) => self.labels(place, "labels", value).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        if let Some(output) = root.get("output") {
            config.output = self.output(output);
        }
        let defaults = match root.get("defaults") {
            Some(Value::Object(object)) => {
                for forbidden in ["name", "url"] {
                    if object.contains_key(forbidden) {
                        self.error(
                            "defaults",
                            forbidden,
                            "cannot be set in defaults; every probe sets its own",
                        );
                    }
                }
                let known: Vec<&str> = PROBE_FIELDS
                    .iter()
                    .copied()
                    .filter(|f| *f != "name" && *f != "url")
                    .collect();
                let unknown: Map<String, Value> = object
                    .iter()
                    .filter(|(k, _)| k.as_str() != "name" && k.as_str() != "url")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                self.unknown_keys("defaults", "", &unknown, &known);
                self.fields("defaults", object)
            }
            Some(_) => {
                self.error("defaults", "", "must be an object of probe fields");
                Fields::default()
            }
            None => Fields::default(),
        };

        match root.get("probes") {
            Some(Value::Array(probes)) if probes.is_empty() => {
                self.error(
                    place,
                    "probes",
                    "is empty; a config needs at least one probe",
                );
            }
            Some(Value::Array(probes)) => {
                let mut seen = HashSet::new();
                for (index, value) in probes.iter().enumerate() {
                    let spec = self.probe(value, index, &defaults, &top_labels, Some(&mut seen));
                    config.probes.extend(spec);
                }
            }
            Some(_) => self.error(place, "probes", "must be an array of probe objects"),
            None => self.error(
                place,
                "probes",
                "is missing; a config needs at least one probe",
            ),
        }
        config
    }

    fn output(&mut self, value: &Value) -> Output {
        let place = "output";
        let Some(object) = value.as_object() else {
            self.error(place, "", "must be an object like {\"ndjson\": \"-\"}");
            return Output::Stdout;
        };
        self.unknown_keys(place, "", object, &OUTPUT_FIELDS);
        match object.get("ndjson") {
            None => Output::Stdout,
            Some(Value::String(s)) if s == "-" => Output::Stdout,
            Some(Value::String(s)) if !s.is_empty() => Output::File(PathBuf::from(s)),
            Some(_) => {
                self.error(place, "ndjson", "must be \"-\" (stdout) or a file path");
                Output::Stdout
            }
        }
    }

    /// Parses the fields present in `object`, each checked on its own.
    fn fields(&mut self, place: &str, object: &Map<String, Value>) -> Fields {
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
                "send_message" => f.send_message = self.string(place, field, value),
                "expect_message" => f.expect_message = self.string(place, field, value),
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
                _ => {} // name and url are the probe's; unknown keys reported apart
            }
        }
        f
    }

    fn ranged(
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

    fn choice<T>(
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

    fn string(&mut self, place: &str, field: &str, value: &Value) -> Option<String> {
        match value.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.error(place, field, format!("must be a string (got {value})"));
                None
            }
        }
    }

    fn protocols(&mut self, place: &str, value: &Value) -> Option<Vec<String>> {
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

    fn headers(&mut self, place: &str, value: &Value) -> Option<Vec<(String, String)>> {
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

    fn labels(
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

    fn thresholds(&mut self, place: &str, value: &Value, f: &mut Fields) {
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

    fn tls_fields(&mut self, place: &str, value: &Value, f: &mut Fields) {
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

    /// Replaces `${NAME}` with the environment variable NAME.
    fn substitute(&mut self, place: &str, field: &str, raw: &str) -> Option<String> {
        match expand_env(raw, self.env) {
            Ok(s) => Some(s),
            Err(message) => {
                self.error(place, field, message);
                None
            }
        }
    }

    /// One probe: its own fields, then the defaults that fit, then the rules
    /// that tie fields together.
    fn probe(
        &mut self,
        value: &Value,
        index: usize,
        defaults: &Fields,
        top_labels: &BTreeMap<String, String>,
        // Names seen so far; `None` for the ad-hoc probe, which also has no
        // interval of its own to check.
        seen: Option<&mut HashSet<String>>,
    ) -> Option<ProbeSpec> {
        let check_interval = seen.is_some();
        let Some(object) = value.as_object() else {
            self.error(&format!("probes[{index}]"), "", "must be an object");
            return None;
        };
        let errors_before = self.errors.len();
        let name = match object.get("name") {
            Some(Value::String(n)) if is_probe_name(n) => Some(n.clone()),
            Some(other) => {
                self.error(
                    &format!("probes[{index}]"),
                    "name",
                    format!("must be 1 to 64 of A-Z a-z 0-9 _ . - (got {other})"),
                );
                None
            }
            None => {
                self.error(
                    &format!("probes[{index}]"),
                    "name",
                    "is missing; every probe needs a name",
                );
                None
            }
        };
        let duplicate = match (&name, seen) {
            (Some(n), Some(seen)) => !seen.insert(n.clone()),
            _ => false,
        };
        if let (true, Some(n)) = (duplicate, &name) {
            self.error(
                &format!("probes[{index}]"),
                "name",
                format!("\"{n}\" is used by an earlier probe; names must be unique"),
            );
        }
        // A duplicate name would not say which of the two probes is meant.
        let place = match &name {
            Some(n) if !duplicate => format!("probe \"{n}\""),
            _ => format!("probes[{index}]"),
        };
        self.unknown_keys(&place, "", object, &PROBE_FIELDS);
        let own = self.fields(&place, object);

        let url = match object.get("url") {
            Some(Value::String(raw)) => self.url(&place, raw),
            Some(other) => {
                self.error(
                    &place,
                    "url",
                    format!("must be a string like \"wss://host/path\" (got {other})"),
                );
                None
            }
            None => {
                self.error(
                    &place,
                    "url",
                    "is missing; every probe needs a ws:// or wss:// URL",
                );
                None
            }
        };

        let interpretation = own
            .interpretation
            .or(defaults.interpretation)
            .unwrap_or(Interpretation::HandshakeLatency);
        let round_trip = interpretation == Interpretation::RoundTripLatency;
        // Taken from the scheme as written, so that the TLS fields are still
        // checked when some other part of the URL is wrong.
        let secure = match object.get("url") {
            Some(Value::String(raw)) => Some(
                raw.get(..6)
                    .is_some_and(|s| s.eq_ignore_ascii_case("wss://")),
            ),
            _ => None,
        };

        // Fields that only fit some probes: an error when set on the probe,
        // silently not applied when they come from defaults.
        let only_round_trip = "only round_trip_latency probes take it";
        if !round_trip {
            for (set, field) in [
                (own.send_message.is_some(), "send_message"),
                (own.expect_message.is_some(), "expect_message"),
                (own.round_trip_scope.is_some(), "round_trip_scope"),
            ] {
                if set {
                    self.error(&place, field, only_round_trip);
                }
            }
        }
        let ping_mode_message = own
            .ping_mode_message
            .or(defaults.ping_mode_message.filter(|m| *m == round_trip))
            .unwrap_or(round_trip);
        match (round_trip, ping_mode_message) {
            (true, false) => self.error(
                &place,
                "ping_mode",
                "round_trip_latency needs ping_mode \"message\" (it sends send_message)",
            ),
            (false, true) => self.error(
                &place,
                "ping_mode",
                format!(
                    "\"message\" is only for round_trip_latency, not {}",
                    interpretation.wire_name()
                ),
            ),
            _ => {}
        }
        let exchange = if round_trip {
            let send = own
                .send_message
                .clone()
                .or_else(|| defaults.send_message.clone());
            if send.is_none() && !object.contains_key("send_message") {
                self.error(&place, "send_message", "is required for round_trip_latency");
            }
            send.map(|send| Exchange {
                send,
                expect: own
                    .expect_message
                    .clone()
                    .or_else(|| defaults.expect_message.clone())
                    .unwrap_or_default()
                    .into_bytes(),
                scope: own
                    .round_trip_scope
                    .or(defaults.round_trip_scope)
                    .unwrap_or(RoundTripScope::Message),
            })
        } else {
            None
        };

        let thresholds = if interpretation == Interpretation::ConnectionSuccess {
            if own.thresholds_set {
                self.error(
                    &place,
                    "thresholds",
                    "connection_success has fixed health (1 healthy, 0 unhealthy)",
                );
            }
            None
        } else {
            let seed = Thresholds::default();
            let t = Thresholds {
                healthy_below: own
                    .healthy_below
                    .or(defaults.healthy_below)
                    .unwrap_or(seed.healthy_below),
                unhealthy_above: own
                    .unhealthy_above
                    .or(defaults.unhealthy_above)
                    .unwrap_or(seed.unhealthy_above),
            };
            if t.healthy_below > t.unhealthy_above {
                self.error(&place, "thresholds", format!(
                    "healthy_below ({}) is above unhealthy_above ({}); a value left out takes the default 200/1000",
                    t.healthy_below, t.unhealthy_above
                ));
            }
            Some(t)
        };

        let timeout_ms = own
            .timeout_ms
            .or(defaults.timeout_ms)
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let interval_ms = own
            .interval_ms
            .or(defaults.interval_ms)
            .unwrap_or(DEFAULT_INTERVAL_MS);
        if check_interval && interval_ms < timeout_ms {
            self.error(&place, "interval_ms", format!("({interval_ms}) must be at least timeout_ms ({timeout_ms}), so runs cannot overlap"));
        }

        let tls = match secure {
            Some(false) if own.tls_set => {
                self.error(&place, "tls", "only wss:// probes take it");
                None
            }
            Some(true) => {
                let options = TlsOptions {
                    ca_file: own
                        .tls_ca_file
                        .clone()
                        .or_else(|| defaults.tls_ca_file.clone()),
                    server_name: own
                        .tls_server_name
                        .clone()
                        .or_else(|| defaults.tls_server_name.clone()),
                    insecure_skip_verify: own
                        .tls_insecure
                        .or(defaults.tls_insecure)
                        .unwrap_or(false),
                };
                if options.insecure_skip_verify {
                    self.warnings.push(format!("{place}: tls.insecure_skip_verify is on: certificates are not checked (records say meta.tls_verified: false)"));
                }
                match self.tls.setup(&options) {
                    Ok(setup) => Some(setup),
                    Err(message) => {
                        self.error(&place, "tls.ca_file", message);
                        None
                    }
                }
            }
            _ => None,
        };

        let route = Route {
            ip_version: own.ip_version.or(defaults.ip_version).unwrap_or_default(),
            bind_interface: own
                .bind_interface
                .clone()
                .or_else(|| defaults.bind_interface.clone()),
            source_ip: own.source_ip.or(defaults.source_ip),
            fwmark: own.fwmark.or(defaults.fwmark),
        };
        let literal = url.as_ref().and_then(|(t, _)| t.ip);
        for (ip, field) in [(route.source_ip, "source_ip"), (literal, "url")] {
            if let Some(ip) = ip {
                if !route.ip_version.allows(ip) {
                    self.error(
                        &place,
                        field,
                        format!(
                            "{ip} does not fit ip_version {}",
                            match route.ip_version {
                                IpVersion::V4 => "4",
                                IpVersion::V6 => "6",
                                IpVersion::Any => "any",
                            }
                        ),
                    );
                }
            }
        }
        if let (Some(source), Some(target)) = (route.source_ip, literal) {
            if source.is_ipv4() != target.is_ipv4() {
                self.error(
                    &place,
                    "source_ip",
                    format!("{source} and the URL's address {target} are of different families"),
                );
            }
        }

        let mut labels = top_labels.clone();
        labels.extend(defaults.labels.clone().unwrap_or_default());
        labels.extend(own.labels.clone().unwrap_or_default());

        let mut headers = defaults.headers.clone().unwrap_or_default();
        for (name, value) in own.headers.clone().unwrap_or_default() {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            headers.push((name, value));
        }

        if self.errors.len() > errors_before {
            return None;
        }
        let (target, display_url) = url?;
        Some(ProbeSpec {
            name: name?,
            display_url,
            target,
            interpretation,
            timeout: Duration::from_millis(timeout_ms),
            interval: Duration::from_millis(interval_ms),
            exchange,
            protocols: own
                .protocols
                .clone()
                .or_else(|| defaults.protocols.clone())
                .unwrap_or_default(),
            headers,
            labels,
            route,
            max_message_bytes: own
                .max_message_bytes
                .or(defaults.max_message_bytes)
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES) as usize,
            thresholds,
            tls,
        })
    }

    /// The target and the URL as records show it (as written, redacted:
    /// `${NAME}` stays unexpanded, so a substituted secret never shows).
    fn url(&mut self, place: &str, raw: &str) -> Option<(Target, String)> {
        let expanded = self.substitute(place, "url", raw)?;
        match parse_url(&expanded) {
            Ok(target) => Some((target, redact::url(raw))),
            Err((message, hint)) => {
                self.error_with_hint(place, "url", message, hint);
                None
            }
        }
    }
}

/// Parses a `ws://` or `wss://` URL by hand: the rules are few, and the
/// common parsers drop a fragment silently or accept port 99999.
pub fn parse_url(raw: &str) -> Result<Target, (String, Option<String>)> {
    let plain = |m: &str| (m.to_owned(), None);
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(plain("must not contain spaces or control characters"));
    }
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| plain("must start with ws:// or wss://"))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "ws" => false,
        "wss" => true,
        "http" | "https" => {
            return Err((
                format!("must start with ws:// or wss://, not {scheme}://"),
                Some(format!(
                    "use {}:// for the same endpoint",
                    if scheme.len() == 5 { "wss" } else { "ws" }
                )),
            ))
        }
        _ => return Err(plain("must start with ws:// or wss://")),
    };
    if rest.contains('#') {
        return Err(plain("must not have a #fragment (RFC 6455 section 3)"));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => (Some(authority[..at].to_owned()), &authority[at + 1..]),
        None => (None, authority),
    };
    let default_port = if secure { 443 } else { 80 };
    let (host, ip, port_text) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| plain("has an IPv6 address without its closing ]"))?;
        let v6: Ipv6Addr = inside
            .parse()
            .map_err(|_| plain(&format!("[{inside}] is not an IPv6 address")))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| plain("has text after the IPv6 address"))?,
            ),
        };
        (inside.to_owned(), Some(IpAddr::V6(v6)), port)
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        };
        if host.is_empty() {
            return Err(plain("has no host"));
        }
        if !host.is_ascii() {
            return Err((
                "has a non-ASCII host".into(),
                Some("write it in its punycode (xn--) form".into()),
            ));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(plain(&format!(
                "host {host:?} has characters a host name cannot have"
            )));
        }
        let ip = host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
        (host.to_ascii_lowercase(), ip, port)
    };
    let port = match port_text {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(plain(&format!(
                    "port {p:?} must be a number from 1 to 65535"
                )))
            }
        },
    };
    let path_and_query = match path_and_query {
        "" => "/".to_owned(),
        q if q.starts_with('?') => format!("/{q}"),
        p => p.to_owned(),
    };
    let target = Target {
        secure,
        host,
        ip,
        port,
        path_and_query,
        userinfo,
    };
    // The request line carries the path and query as they are.
    if !target.path_and_query.is_ascii() {
        return Err((
            "has non-ASCII characters in its path or query".into(),
            Some("percent-encode them".into()),
        ));
    }
    Ok(target)
}

/// Expands every `${NAME}`; an unset variable is an error.
pub fn expand_env(raw: &str, env: Env) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or("has \"${\" without a closing \"}\"")?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("${{{name}}} is not a valid variable name"));
        }
        let value = env(name).ok_or_else(|| {
            format!("environment variable {name} is not set (used as ${{{name}}})")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_probe_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// An HTTP token (RFC 9110 section 5.6.2): header names and subprotocols.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// The known name closest to `given`, if one is close enough to be a typo.
pub fn suggest<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    let squash = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let given_squashed = squash(given);
    known
        .iter()
        .map(|k| {
            let d = edit_distance(&given_squashed, &squash(k));
            let prefix = given.len() >= 4 && (k.starts_with(given) || given.starts_with(k));
            (if prefix { d.min(1) } else { d }, *k)
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets() {
        let t = parse_url("wss://user:pw@Example.com:8443/a/b?x=1").unwrap();
        assert!(t.secure);
        assert_eq!(t.host, "example.com");
        assert_eq!(t.port, 8443);
        assert_eq!(t.path_and_query, "/a/b?x=1");
        assert_eq!(t.userinfo.as_deref(), Some("user:pw"));
        let t = parse_url("ws://[::1]:9000").unwrap();
        assert_eq!(t.ip, Some("::1".parse().unwrap()));
        assert_eq!(t.request_url(), "ws://[::1]:9000/");
        let t = parse_url("ws://10.0.0.1?q").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (80, "/?q"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "http://h/",
            "ws://h/#frag",
            "ws://h:99999/",
            "ws://h:0/",
            "ws://:80/",
            "ws:///x",
            "ws://h /",
            "wss://[::1/",
            "ftp://h/",
            "ws://h:+80/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn env_substitution_requires_set_variables() {
        let env = |n: &str| (n == "TOKEN").then(|| "abc".to_owned());
        assert_eq!(expand_env("Bearer ${TOKEN}", &env).unwrap(), "Bearer abc");
        assert!(expand_env("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING"));
        assert!(expand_env("${TOKEN", &env).is_err());
    }

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(suggest("timeout", &PROBE_FIELDS), Some("timeout_ms"));
        assert_eq!(suggest("tiemout_ms", &PROBE_FIELDS), Some("timeout_ms"));
        assert_eq!(suggest("Protocols", &PROBE_FIELDS), Some("protocols"));
        assert_eq!(suggest("colour", &PROBE_FIELDS), None);
    }
}
