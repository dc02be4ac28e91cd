//! JSON -> validated `ProbeSpec`s, or every problem found.
//!
//! The file is read into a `serde_json::Value` and walked by hand, so that
//! one pass collects every error (serde's derive stops at the first) and
//! each error names the probe and the field it is about.
//!
//! `fields` checks each field on its own, `probe` merges a probe with the
//! defaults and applies the rules that tie fields together, `url` parses
//! the URL, `proxy` the proxy and the environment's proxy rules,
//! `exchange` the messages, prelude, samples and presets, and `words`
//! holds the small text rules (names, tokens, `${NAME}`, "did you mean").

mod exchange;
mod fields;
mod json;
mod probe;
mod proxy;
pub mod url;
mod words;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use self::proxy::{EnvProxies, ProxyChoice};
use crate::exchange::Message;
use crate::probe::tls::TlsFactory;
use crate::spec::{Interpretation, IpVersion, ProbeSpec, RoundTripScope};

/// JSON text to a `Value` (a repeated key refused): the one JSON parser in
/// the binary, which the presets also read replies with.
pub use self::json::parse as parse_json;
pub use self::url::parse_url;
pub use self::words::{expand_env, suggest};

/// `$schema` names the JSON Schema for editors (config.schema.json); the
/// loader checks only that it is a string.
pub const TOP_LEVEL_FIELDS: [&str; 5] = ["$schema", "labels", "defaults", "output", "probes"];
pub const OUTPUT_FIELDS: [&str; 3] = ["ndjson", "prometheus_textfile", "prometheus_listen"];
pub const PROBE_FIELDS: [&str; 25] = [
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
    "proxy",
    "prelude",
    "preset",
    "samples",
    "sample_timeout_ms",
    "sample_interval_ms",
];
/// Probe fields that only a probe sets, never `defaults`.
pub const PROBE_ONLY_FIELDS: [&str; 4] = ["name", "url", "prelude", "preset"];
pub const THRESHOLD_FIELDS: [&str; 2] = ["healthy_below", "unhealthy_above"];
pub const TLS_FIELDS: [&str; 3] = ["ca_file", "server_name", "insecure_skip_verify"];

/// Every object the loader reads, by the name its errors use, with the keys
/// it knows there (`defaults` knows the probe's fields but those only a
/// probe sets). tests/schema.rs holds config.schema.json to this list: a list
/// added here belongs here too.
pub fn known_fields() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("top level", TOP_LEVEL_FIELDS.to_vec()),
        ("output", OUTPUT_FIELDS.to_vec()),
        ("defaults", default_fields()),
        ("probe", PROBE_FIELDS.to_vec()),
        ("thresholds", THRESHOLD_FIELDS.to_vec()),
        ("tls", TLS_FIELDS.to_vec()),
    ]
}

/// The fields `defaults` may set: every probe field but those only a probe sets.
fn default_fields() -> Vec<&'static str> {
    PROBE_FIELDS
        .iter()
        .copied()
        .filter(|f| !PROBE_ONLY_FIELDS.contains(f))
        .collect()
}

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
    /// The Prometheus outputs; both off unless configured.
    pub prometheus: Prometheus,
    /// Things that are allowed but deserve a word (insecure TLS).
    pub warnings: Vec<String>,
}

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
    /// `"ndjson": null`, or no `ndjson` beside a Prometheus output.
    Discard,
}

/// `output.prometheus_textfile` and `output.prometheus_listen`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prometheus {
    /// A path ending in `.prom`, rewritten atomically.
    pub textfile: Option<PathBuf>,
    /// `host:port` for the `/metrics` listener (port 0 picks a free one).
    pub listen: Option<String>,
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

/// A config file larger than this is refused before it is parsed, so that
/// `-c /dev/zero` or a runaway file cannot take all memory. It is the
/// largest message a probe may read (`max_message_bytes`): a
/// `send_message` may be as large.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// Loads and validates a config file.
pub fn load_file(path: &Path, env: Env) -> Result<Config, Vec<ConfigError>> {
    let text = read_text(path).map_err(|(message, hint)| {
        // The caller names the file; the place says what of it is wrong.
        vec![ConfigError {
            place: "the file".to_owned(),
            field: String::new(),
            message,
            hint,
        }]
    })?;
    load_str(&text, env)
}

/// The file's text, or what is wrong with it and maybe a hint.
fn read_text(path: &Path) -> Result<String, (String, Option<String>)> {
    let unreadable = |e: std::io::Error| (format!("cannot be read: {e}"), None);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err((
            format!("is larger than {} MiB", MAX_CONFIG_BYTES >> 20),
            Some("a thousand probes fit in well under 1 MiB".to_owned()),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        (
            "is not UTF-8 text".to_owned(),
            Some("save it as UTF-8".to_owned()),
        )
    })
}

/// Validates a config given as text.
pub fn load_str(text: &str, env: Env) -> Result<Config, Vec<ConfigError>> {
    // A byte order mark (editors on Windows write one) is ignored, as RFC
    // 8259 section 8.1 allows.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root = json::parse(text).map_err(|e| {
        let (message, hint) = if json::is_duplicate_key(&e) {
            (json::message(&e), Some("keep one of them".to_owned()))
        } else {
            (format!("invalid JSON: {e}"), None)
        };
        vec![ConfigError {
            place: format!("line {} column {}", e.line(), e.column()),
            field: String::new(),
            message,
            hint,
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
        prometheus: Prometheus::default(),
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
    send_message: Option<Message>,
    expect_message: Option<Message>,
    samples: Option<u64>,
    sample_timeout_ms: Option<u64>,
    sample_interval_ms: Option<u64>,
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
    proxy: Option<ProxyChoice>,
}

struct Loader<'a> {
    env: Env<'a>,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    tls: TlsFactory,
    /// Read at the first `"env"` proxy, once for every probe.
    env_proxies: Option<EnvProxies>,
    /// What was said about them already, once being enough: the
    /// variables whose value is wrong, the schemes that have none.
    env_proxy_said: Vec<&'static str>,
}

impl<'a> Loader<'a> {
    fn new(env: Env<'a>) -> Self {
        Loader {
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
            tls: TlsFactory::default(),
            env_proxies: None,
            env_proxy_said: Vec::new(),
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
            prometheus: Prometheus::default(),
            warnings: Vec::new(),
        };
        let place = "top level";
        let Some(root) = root.as_object() else {
            self.error(place, "", "the config must be a JSON object");
            return config;
        };
        self.unknown_keys(place, "", root, &TOP_LEVEL_FIELDS);
        if let Some(schema) = root.get("$schema").filter(|v| !v.is_string()) {
            self.error(
                place,
                "$schema",
                format!("must be a string naming the schema (got {schema})"),
            );
        }

        let top_labels = match root.get("labels") {
            Some(value) => self.labels(place, "labels", value).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        if let Some(output) = root.get("output") {
            (config.output, config.prometheus) = self.output(output);
        }
        let defaults = match root.get("defaults") {
            Some(Value::Object(object)) => {
                for forbidden in PROBE_ONLY_FIELDS {
                    if object.contains_key(forbidden) {
                        self.error(
                            "defaults",
                            forbidden,
                            "cannot be set in defaults; every probe sets its own",
                        );
                    }
                }
                let known = default_fields();
                let unknown: Map<String, Value> = object
                    .iter()
                    .filter(|(k, _)| !PROBE_ONLY_FIELDS.contains(&k.as_str()))
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
        // Checked once, here, whether or not a wss:// probe takes it: a
        // wrong path in defaults is a mistake even before it is used.
        if let Some(path) = &defaults.tls_ca_file {
            self.check_ca_file("defaults", path);
        }

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

    /// `ndjson` omitted means stdout, as before the Prometheus outputs,
    /// unless one of those is configured: then records are only written
    /// when `ndjson` asks for them.
    fn output(&mut self, value: &Value) -> (Output, Prometheus) {
        let place = "output";
        let Some(object) = value.as_object() else {
            self.error(place, "", "must be an object like {\"ndjson\": \"-\"}");
            return (Output::Stdout, Prometheus::default());
        };
        self.unknown_keys(place, "", object, &OUTPUT_FIELDS);
        let prometheus = Prometheus {
            textfile: self.prometheus_textfile(object.get("prometheus_textfile")),
            listen: self.prometheus_listen(object.get("prometheus_listen")),
        };
        let ndjson = match object.get("ndjson") {
            None if prometheus != Prometheus::default() => Output::Discard,
            None => Output::Stdout,
            Some(Value::Null) => Output::Discard,
            Some(Value::String(s)) if s == "-" => Output::Stdout,
            Some(Value::String(s)) if !s.is_empty() => Output::File(PathBuf::from(s)),
            Some(_) => {
                self.error(
                    place,
                    "ndjson",
                    "must be \"-\" (stdout), a file path, or null (no records)",
                );
                Output::Stdout
            }
        };
        (ndjson, prometheus)
    }

    fn prometheus_textfile(&mut self, value: Option<&Value>) -> Option<PathBuf> {
        let (place, field) = ("output", "prometheus_textfile");
        match value? {
            Value::Null => None,
            Value::String(s) if s.ends_with(".prom") && s.len() > ".prom".len() => {
                let path = PathBuf::from(s);
                if path
                    .file_name()
                    .is_none_or(|n| n.to_string_lossy().starts_with('.'))
                {
                    self.error_with_hint(
                        place,
                        field,
                        "must name a file that is not hidden",
                        Some("like /var/lib/prometheus/node-exporter/wsprobe.prom".into()),
                    );
                    return None;
                }
                Some(path)
            }
            _ => {
                self.error_with_hint(
                    place,
                    field,
                    "must be a file path ending in .prom",
                    Some("node_exporter's textfile collector reads only *.prom".into()),
                );
                None
            }
        }
    }

    fn prometheus_listen(&mut self, value: Option<&Value>) -> Option<String> {
        let (place, field) = ("output", "prometheus_listen");
        let hint = || Some("like \"127.0.0.1:9464\" or \"[::]:9464\"".to_owned());
        match value? {
            Value::Null => None,
            Value::String(s) => match listen_parts(s) {
                Some(_) => Some(s.clone()),
                None => {
                    self.error_with_hint(place, field, "must be \"host:port\"", hint());
                    None
                }
            },
            _ => {
                self.error_with_hint(place, field, "must be a string \"host:port\"", hint());
                None
            }
        }
    }
}

/// `host:port` split into its host (brackets removed) and port, when both
/// are there and the port is a number up to 65535 (0 picks a free port).
pub fn listen_parts(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|_| !port.starts_with('+'))?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)))
    .then_some((host, port))
}
