//! One probe: its own fields, the defaults that fit it, and the rules that
//! tie fields together.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::words::is_probe_name;
use super::{
    parse_url, Fields, Loader, DEFAULT_INTERVAL_MS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT_MS,
    PROBE_FIELDS,
};
use crate::redact;
use crate::spec::{
    Exchange, Interpretation, IpVersion, ProbeSpec, RoundTripScope, Route, Target, Thresholds,
    TlsOptions,
};

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
}
