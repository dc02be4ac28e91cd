//! One probe: its own fields, the defaults that fit it, and the rules that
//! tie fields together.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::proxy::{EnvProxies, ProxyChoice};
use super::words::is_probe_name;
use super::{
    parse_url, Fields, Loader, DEFAULT_INTERVAL_MS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT_MS,
    PROBE_FIELDS,
};
use crate::exchange::preset::{Context, Kind, Plan};
use crate::exchange::{Expect, Samples, Session, DEFAULT_SAMPLE_INTERVAL, DEFAULT_SAMPLE_TIMEOUT};
use crate::redact;
use crate::spec::{
    Exchange, Interpretation, IpVersion, ProbeSpec, Proxy, RoundTripScope, Route, Target,
    Thresholds, TlsOptions, TlsSetup,
};

/// A probe's own fields over the defaults, for the fields that fit it.
struct Merged<'f> {
    own: &'f Fields,
    defaults: &'f Fields,
}

impl Merged<'_> {
    /// The probe's own value for a field, else the default's.
    fn get<T: Clone>(&self, field: impl Fn(&Fields) -> &Option<T>) -> Option<T> {
        field(self.own)
            .clone()
            .or_else(|| field(self.defaults).clone())
    }
}

impl Loader<'_> {
    /// One probe: its own fields, then the defaults that fit, then the rules
    /// that tie fields together.
    pub(super) fn probe(
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
        let (name, place) = self.name(object, index, seen);
        self.unknown_keys(&place, "", object, &PROBE_FIELDS);
        let own = self.fields(&place, object);
        let fields = Merged {
            own: &own,
            defaults,
        };
        let mut url = self.probe_url(&place, object);
        let preset = self.probe_preset(&place, object, &own, name.as_deref(), url.as_mut());
        // One already reported wrong stands in as the likeliest intent, so
        // that the rules tied to it add no errors that are not there (a
        // typo in "round_trip_latency" is no reason to call send_message
        // out of place), and the rules that are not tied to it still run.
        let interpretation = fields.get(|f| &f.interpretation).unwrap_or(
            if self.broken(&place, object, "interpretation") && fields.own.send_message.is_some() {
                Interpretation::RoundTripLatency
            } else {
                Interpretation::HandshakeLatency
            },
        );

        let exchange = self.exchange(&place, object, &fields, interpretation, preset.as_ref());
        let prelude = match (&preset, object.get("prelude")) {
            (Some((_, plan)), _) => Some(plan.prelude.clone()),
            (None, Some(value)) => self.prelude(&place, value),
            (None, None) => Some(Vec::new()),
        };
        let thresholds = self.thresholds_for(&place, &fields, interpretation);
        let timeout_ms = fields.get(|f| &f.timeout_ms).unwrap_or(DEFAULT_TIMEOUT_MS);
        let interval_ms = fields
            .get(|f| &f.interval_ms)
            .unwrap_or(DEFAULT_INTERVAL_MS);
        // A value reported wrong is not compared as if it were the default.
        let timing_broken =
            self.broken(&place, object, "timeout_ms") || self.broken(&place, object, "interval_ms");
        if check_interval && !timing_broken && interval_ms < timeout_ms {
            self.error(
                &place,
                "interval_ms",
                format!(
                    "({interval_ms}) must be at least timeout_ms ({timeout_ms}), so runs \
                     cannot overlap"
                ),
            );
        }
        let secure = url.as_ref().map(|(target, _)| target.secure);
        let tls = self.tls_for(&place, object, &fields, secure);
        let proxy = self.proxy_for(&place, &fields, url.as_ref().map(|(t, _)| t));
        // The route applies to the first hop: the proxy, when there is one.
        let first_hop = match &proxy {
            Some(proxy) => proxy.ip.map(|ip| (ip, "proxy")),
            None => url.as_ref().and_then(|(t, _)| t.ip).map(|ip| (ip, "url")),
        };
        let route = self.route(&place, &fields, first_hop);

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
            prelude: prelude?,
            protocols: match &preset {
                Some((_, plan)) => plan.protocols.clone(),
                None => fields.get(|f| &f.protocols).unwrap_or_default(),
            },
            session: preset.map(|(kind, plan)| Session {
                kind,
                measured_ends_session: plan.measured_ends_session,
            }),
            headers,
            labels,
            route,
            proxy,
            max_message_bytes: fields
                .get(|f| &f.max_message_bytes)
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES) as usize,
            thresholds,
            tls,
        })
    }

    /// The probe's name, and how errors name the probe: by name, or as
    /// `probes[N]` when the name is missing, bad or a duplicate (which would
    /// not say which of the two probes is meant).
    fn name(
        &mut self,
        object: &Map<String, Value>,
        index: usize,
        seen: Option<&mut HashSet<String>>,
    ) -> (Option<String>, String) {
        let by_index = format!("probes[{index}]");
        let name = match object.get("name") {
            Some(Value::String(n)) if is_probe_name(n) => Some(n.clone()),
            Some(other) => {
                self.error(
                    &by_index,
                    "name",
                    format!("must be 1 to 64 of A-Z a-z 0-9 _ . - (got {other})"),
                );
                None
            }
            None => {
                self.error(&by_index, "name", "is missing; every probe needs a name");
                None
            }
        };
        let duplicate = match (&name, seen) {
            (Some(n), Some(seen)) => !seen.insert(n.clone()),
            _ => false,
        };
        match &name {
            Some(n) if duplicate => {
                self.error(
                    &by_index,
                    "name",
                    format!("\"{n}\" is used by an earlier probe; names must be unique"),
                );
                (name, by_index)
            }
            Some(n) => {
                let place = format!("probe \"{n}\"");
                (name, place)
            }
            None => (name, by_index),
        }
    }

    fn probe_url(&mut self, place: &str, object: &Map<String, Value>) -> Option<(Target, String)> {
        match object.get("url") {
            Some(Value::String(raw)) => self.url(place, raw),
            Some(other) => {
                self.error(
                    place,
                    "url",
                    format!("must be a string like \"wss://host/path\" (got {other})"),
                );
                None
            }
            None => {
                self.error(
                    place,
                    "url",
                    "is missing; every probe needs a ws:// or wss:// URL",
                );
                None
            }
        }
    }

    /// The target and the URL as records show it (as written, redacted:
    /// `${NAME}` stays unexpanded, so a substituted secret never shows).
    pub(super) fn url(&mut self, place: &str, raw: &str) -> Option<(Target, String)> {
        let expanded = self.substitute(place, "url", raw)?;
        match parse_url(&expanded) {
            Ok(target) => Some((target, redact::url(raw))),
            Err((message, hint)) => {
                self.error_with_hint(place, "url", message, hint);
                None
            }
        }
    }

    /// The preset, if the probe names one: checked, its conflicts
    /// reported, and the query parameters it needs added to the URL.
    /// `Err` when the probe names one that is wrong.
    fn probe_preset(
        &mut self,
        place: &str,
        object: &Map<String, Value>,
        own: &Fields,
        name: Option<&str>,
        url: Option<&mut (Target, String)>,
    ) -> Option<(Kind, Plan)> {
        let value = object.get("preset")?;
        let host = url
            .as_ref()
            .map(|(t, _)| t.host.clone())
            .unwrap_or_default();
        let context = Context {
            probe: name.unwrap_or(super::AD_HOC_NAME),
            host: &host,
            env: self.env,
        };
        let (kind, plan) = self.preset(place, value, &context)?;
        self.preset_conflicts(place, own, object, kind);
        if let Some((target, _)) = url {
            add_query(&mut target.path_and_query, &plan.query);
        }
        Some((kind, plan))
    }

    /// The round trip's message, expectation, scope and samples;
    /// `ping_mode` is checked here too, as it only says whether there is a
    /// message.
    fn exchange(
        &mut self,
        place: &str,
        object: &Map<String, Value>,
        fields: &Merged,
        interpretation: Interpretation,
        preset: Option<&(Kind, Plan)>,
    ) -> Option<Exchange> {
        let round_trip = interpretation == Interpretation::RoundTripLatency;
        // Set on a probe that is no round trip, these are errors; from
        // defaults they are just not applied.
        if !round_trip {
            for (set, field) in [
                (fields.own.send_message.is_some(), "send_message"),
                (fields.own.expect_message.is_some(), "expect_message"),
                (fields.own.round_trip_scope.is_some(), "round_trip_scope"),
                (fields.own.samples.is_some(), "samples"),
                (fields.own.sample_timeout_ms.is_some(), "sample_timeout_ms"),
                (
                    fields.own.sample_interval_ms.is_some(),
                    "sample_interval_ms",
                ),
            ] {
                if set {
                    self.error(place, field, "only round_trip_latency probes take it");
                }
            }
        }
        let sends_message = fields
            .own
            .ping_mode_message
            .or(fields
                .defaults
                .ping_mode_message
                .filter(|m| *m == round_trip))
            .unwrap_or(round_trip);
        match (round_trip, sends_message) {
            (true, false) => self.error(
                place,
                "ping_mode",
                "round_trip_latency needs ping_mode \"message\" (it sends send_message)",
            ),
            (false, true) => self.error(
                place,
                "ping_mode",
                format!(
                    "\"message\" is only for round_trip_latency, not {}",
                    interpretation.wire_name()
                ),
            ),
            _ => {}
        }
        if !round_trip {
            return None;
        }
        let scope = fields
            .get(|f| &f.round_trip_scope)
            .unwrap_or(RoundTripScope::Message);
        let samples = self.samples(place, object, fields, scope, preset);
        let (send, expect, after) = match preset {
            Some((_, plan)) => (
                Some(plan.send.clone()),
                Expect::Reply(plan.expect),
                plan.after.clone(),
            ),
            // A preset named wrong was reported; it would have set these.
            None if object.contains_key("preset") => return None,
            None => {
                let send = fields.get(|f| &f.send_message);
                // A send_message of the wrong type was reported where it was read.
                if send.is_none() && !object.contains_key("send_message") {
                    self.error(place, "send_message", "is required for round_trip_latency");
                }
                let expect = fields.get(|f| &f.expect_message);
                let expect = expect.map(|m| m.bytes().to_vec()).unwrap_or_default();
                (send, Expect::Contains(expect), None)
            }
        };
        Some(Exchange {
            send: send?,
            expect,
            after,
            scope,
            samples: samples?,
        })
    }

    /// `samples` and its pacing, checked against the timeout and the preset.
    fn samples(
        &mut self,
        place: &str,
        object: &Map<String, Value>,
        fields: &Merged,
        scope: RoundTripScope,
        preset: Option<&(Kind, Plan)>,
    ) -> Option<Samples> {
        let count = fields.get(|f| &f.samples).unwrap_or(1);
        let samples = Samples {
            count: count as u32,
            timeout: fields
                .get(|f| &f.sample_timeout_ms)
                .map_or(DEFAULT_SAMPLE_TIMEOUT, Duration::from_millis),
            interval: fields
                .get(|f| &f.sample_interval_ms)
                .map_or(DEFAULT_SAMPLE_INTERVAL, Duration::from_millis),
        };
        if count <= 1 {
            return Some(samples);
        }
        if let Some((
            kind,
            Plan {
                single: Some(why), ..
            },
        )) = preset
        {
            self.error(
                place,
                "samples",
                format!(
                    "preset \"{}\" takes one sample per run: {why}",
                    kind.wire_name()
                ),
            );
        }
        if scope == RoundTripScope::OpenAndMessage {
            self.error(
                place,
                "samples",
                "above 1 needs round_trip_scope \"message\": the open is paid once",
            );
        }
        let timeout_ms = fields.get(|f| &f.timeout_ms).unwrap_or(DEFAULT_TIMEOUT_MS);
        let spacing = (count - 1) * samples.interval.as_millis() as u64;
        let broken = ["timeout_ms", "sample_interval_ms"]
            .iter()
            .any(|f| self.broken(place, object, f));
        if !broken && spacing >= timeout_ms {
            self.error(
                place,
                "samples",
                format!(
                    "({count} - 1) x sample_interval_ms ({}) = {spacing} ms must be below \
                     timeout_ms ({timeout_ms})",
                    samples.interval.as_millis()
                ),
            );
        }
        Some(samples)
    }

    /// Thresholds side by side: the probe's, the defaults', the seed's.
    fn thresholds_for(
        &mut self,
        place: &str,
        fields: &Merged,
        interpretation: Interpretation,
    ) -> Option<Thresholds> {
        if interpretation == Interpretation::ConnectionSuccess {
            if fields.own.thresholds_set {
                self.error(
                    place,
                    "thresholds",
                    "connection_success has fixed health (1 healthy, 0 unhealthy)",
                );
            }
            return None;
        }
        let seed = Thresholds::default();
        let thresholds = Thresholds {
            healthy_below: fields
                .get(|f| &f.healthy_below)
                .unwrap_or(seed.healthy_below),
            unhealthy_above: fields
                .get(|f| &f.unhealthy_above)
                .unwrap_or(seed.unhealthy_above),
        };
        if thresholds.healthy_below > thresholds.unhealthy_above {
            self.error(
                place,
                "thresholds",
                format!(
                    "healthy_below ({}) is above unhealthy_above ({}); a value left out takes \
                     the default 200/1000",
                    thresholds.healthy_below, thresholds.unhealthy_above
                ),
            );
        }
        Some(thresholds)
    }

    /// With no URL to say whether TLS applies, a CA file of the probe's own
    /// is still read, so that `check` lists that problem too.
    fn check_own_ca_file(&mut self, place: &str, fields: &Merged) {
        if let Some(path) = &fields.own.tls_ca_file {
            self.check_ca_file(place, path);
        }
    }

    /// Reads `path` as a CA file, reporting a problem at `place`.
    pub(super) fn check_ca_file(&mut self, place: &str, path: &str) {
        let options = TlsOptions {
            ca_file: Some(path.to_owned()),
            ..TlsOptions::default()
        };
        if let Err(message) = self.tls.setup(&options) {
            self.error(place, "tls.ca_file", message);
        }
    }

    /// Whether `field` was reported wrong at `place`.
    fn erred(&self, place: &str, field: &str) -> bool {
        self.errors
            .iter()
            .any(|e| e.field == field && e.place == place)
    }

    /// Whether the value this probe takes for `field` was reported wrong:
    /// its own if it sets one, else that of `defaults`.
    fn broken(&self, place: &str, object: &Map<String, Value>, field: &str) -> bool {
        if object.contains_key(field) {
            self.erred(place, field)
        } else {
            self.erred("defaults", field)
        }
    }

    /// The TLS client for a `wss://` probe. `secure` is the scheme of the
    /// URL as expanded (`${URL}` may hold `wss://...`); when the URL did not
    /// parse, the scheme as written stands in, so that the TLS fields are
    /// still checked.
    fn tls_for(
        &mut self,
        place: &str,
        object: &Map<String, Value>,
        fields: &Merged,
        secure: Option<bool>,
    ) -> Option<TlsSetup> {
        let Some(raw_url) = object.get("url").and_then(Value::as_str) else {
            self.check_own_ca_file(place, fields);
            return None;
        };
        let secure = match secure {
            Some(secure) => secure,
            // Whatever a variable would have held is unknown: no verdict
            // on whether tls applies, beyond the URL's own error.
            None if raw_url.contains("${") => {
                self.check_own_ca_file(place, fields);
                return None;
            }
            None => raw_url
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("wss://")),
        };
        if !secure {
            if fields.own.tls_set {
                self.error(place, "tls", "only wss:// probes take it");
            }
            return None;
        }
        let options = TlsOptions {
            ca_file: fields.get(|f| &f.tls_ca_file),
            server_name: fields.get(|f| &f.tls_server_name),
            insecure_skip_verify: fields.get(|f| &f.tls_insecure).unwrap_or(false),
        };
        if options.insecure_skip_verify {
            self.warnings.push(format!(
                "{place}: tls.insecure_skip_verify is on: certificates are not checked \
                 (records say meta.tls_verified: false)"
            ));
        }
        match self.tls.setup(&options) {
            Ok(setup) => Some(setup),
            // Reported once, at defaults.
            Err(_) if fields.own.tls_ca_file.is_none() && self.erred("defaults", "tls.ca_file") => {
                None
            }
            Err(message) => {
                self.error(place, "tls.ca_file", message);
                None
            }
        }
    }

    /// The proxy this probe goes through. `"env"` is decided here, for the
    /// URL's scheme and host; a probe whose URL is wrong has none.
    fn proxy_for(
        &mut self,
        place: &str,
        fields: &Merged,
        target: Option<&Target>,
    ) -> Option<Proxy> {
        let target = match fields.get(|f| &f.proxy)? {
            ProxyChoice::Given(proxy) => return Some(proxy),
            ProxyChoice::Env => target?,
        };
        let env = self.env;
        let proxies = self
            .env_proxies
            .get_or_insert_with(|| EnvProxies::read(env));
        let variable = proxies.variable_for(target);
        match (proxies.proxy_for(target), variable) {
            (Ok(None), None) => {
                let (scheme, unset) = if target.secure {
                    ("wss", "neither https_proxy nor HTTPS_PROXY is set")
                } else {
                    ("ws", "http_proxy is not set")
                };
                // Once for every probe of the scheme, not once each.
                if !self.env_proxy_said.contains(&scheme) {
                    self.env_proxy_said.push(scheme);
                    self.warnings.push(format!(
                        "proxy is \"env\" but {unset}: {scheme}:// probes connect directly"
                    ));
                }
                None
            }
            (Ok(proxy), _) => proxy,
            (Err((message, hint)), Some(variable)) => {
                if !self.env_proxy_said.contains(&variable) {
                    self.env_proxy_said.push(variable);
                    self.error_with_hint(place, "proxy", message, hint);
                }
                None
            }
            // invariant: only a variable's value can be wrong.
            (Err(_), None) => None,
        }
    }

    /// How the probe leaves the box, checked against the address of the
    /// first hop when it is a literal, and the field that gave it.
    fn route(
        &mut self,
        place: &str,
        fields: &Merged,
        first_hop: Option<(IpAddr, &'static str)>,
    ) -> Route {
        let route = Route {
            ip_version: fields.get(|f| &f.ip_version).unwrap_or_default(),
            bind_interface: fields.get(|f| &f.bind_interface),
            source_ip: fields.get(|f| &f.source_ip),
            fwmark: fields.get(|f| &f.fwmark),
        };
        let version = match route.ip_version {
            IpVersion::V4 => "4",
            IpVersion::V6 => "6",
            IpVersion::Any => "any",
        };
        let literal = first_hop.map(|(ip, _)| ip);
        let hop_field = first_hop.map_or("url", |(_, field)| field);
        for (ip, field) in [(route.source_ip, "source_ip"), (literal, hop_field)] {
            if let Some(ip) = ip.filter(|ip| !route.ip_version.allows(*ip)) {
                self.error(
                    place,
                    field,
                    format!("{ip} does not fit ip_version {version}"),
                );
            }
        }
        if let (Some(source), Some(target)) = (route.source_ip, literal) {
            if source.is_ipv4() != target.is_ipv4() {
                self.error(
                    place,
                    "source_ip",
                    format!(
                        "{source} and the {hop_field}'s address {target} are of different families"
                    ),
                );
            }
        }
        route
    }
}

/// Adds each `name=value` whose name the query lacks (a preset's
/// `EIO=4`), keeping what the URL says.
fn add_query(path_and_query: &mut String, params: &[(&str, &str)]) {
    for (name, value) in params {
        let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
        let present = query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name));
        if present {
            continue;
        }
        let separator = if path_and_query.contains('?') {
            if path_and_query.ends_with(['?', '&']) {
                ""
            } else {
                "&"
            }
        } else {
            "?"
        };
        path_and_query.push_str(&format!("{separator}{name}={value}"));
    }
}
