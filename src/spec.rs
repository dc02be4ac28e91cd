//! `ProbeSpec` and its parts: one probe, typed and already valid.
//!
//! Nothing here parses JSON; `config` builds these values and refuses
//! anything that would not fit, so the probe never re-checks a field.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::exchange::{Exchange, RoundTripScope};
use crate::exchange::{Session, Step};

/// What the record's `value` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpretation {
    HandshakeLatency,
    RoundTripLatency,
    ConnectionSuccess,
}

impl Interpretation {
    pub const ALL: [Interpretation; 3] = [
        Interpretation::HandshakeLatency,
        Interpretation::RoundTripLatency,
        Interpretation::ConnectionSuccess,
    ];

    pub fn wire_name(self) -> &'static str {
        match self {
            Interpretation::HandshakeLatency => "handshake_latency",
            Interpretation::RoundTripLatency => "round_trip_latency",
            Interpretation::ConnectionSuccess => "connection_success",
        }
    }

    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.wire_name() == name)
    }
}

/// Health thresholds in milliseconds (`healthy_below <= unhealthy_above`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub healthy_below: f64,
    pub unhealthy_above: f64,
}

impl Default for Thresholds {
    /// The seed's threshold idea for both latency interpretations.
    fn default() -> Self {
        Thresholds {
            healthy_below: 200.0,
            unhealthy_above: 1000.0,
        }
    }
}

/// The URL, parsed once at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub secure: bool,
    /// Host as written, without IPv6 brackets.
    pub host: String,
    /// Set when the host is an IP literal: resolution is skipped.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// Path and query, never empty (at least `/`).
    pub path_and_query: String,
    /// `user:password` from the URL, sent as HTTP Basic credentials.
    pub userinfo: Option<String>,
}

impl Target {
    /// The authority for the `Host` header and the request URI.
    pub fn authority(&self) -> String {
        let host = match self.ip {
            Some(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        let default_port = if self.secure { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `host:port` with the port always written, as a CONNECT request's
    /// target and `Host` carry it (RFC 9110 section 9.3.6).
    pub fn connect_authority(&self) -> String {
        match self.ip {
            Some(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The URL as sent in the request (no userinfo).
    pub fn request_url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

/// An HTTP proxy the probe opens a CONNECT tunnel through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host as written, without IPv6 brackets, lower case.
    pub host: String,
    /// Set when the host is an IP literal: resolution is skipped.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// `user:password` as written (percent-encoded), sent as
    /// `Proxy-Authorization: Basic`. A secret: never shown.
    pub userinfo: Option<String>,
}

impl Proxy {
    /// The proxy as records show it: `http://[REDACTED@]host:port`.
    pub fn display(&self) -> String {
        let credentials = if self.userinfo.is_some() {
            "REDACTED@"
        } else {
            ""
        };
        match self.ip {
            Some(IpAddr::V6(_)) => format!("http://{credentials}[{}]:{}", self.host, self.port),
            _ => format!("http://{credentials}{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for Proxy {
    /// The redacted form: a spec printed for debugging shows no password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// Which address family a probe may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IpVersion {
    /// Both, raced with Happy Eyeballs (RFC 8305), IPv6 first.
    #[default]
    Any,
    V4,
    V6,
}

impl IpVersion {
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            IpVersion::Any => true,
            IpVersion::V4 => ip.is_ipv4(),
            IpVersion::V6 => ip.is_ipv6(),
        }
    }
}

/// How the probe's packets leave the box: family, interface, source, mark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub ip_version: IpVersion,
    /// SO_BINDTODEVICE: the interface name (at most 15 bytes).
    pub bind_interface: Option<String>,
    /// Bound before connect; only addresses of its family are tried.
    pub source_ip: Option<IpAddr>,
    /// SO_MARK, for policy routing (`ip rule add fwmark ...`).
    pub fwmark: Option<u32>,
}

/// The `tls` options, and the rustls client built from them at load time.
#[derive(Clone)]
pub struct TlsSetup {
    pub options: TlsOptions,
    /// The certificates read from `ca_file`, so that a reload notices a
    /// CA file replaced under the same path.
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub client: Arc<rustls::ClientConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

impl PartialEq for TlsSetup {
    /// Two setups are the same when their options and CA certificates are:
    /// the client is derived from them.
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options && self.ca_certs == other.ca_certs
    }
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.options.fmt(f)
    }
}

/// One configured probe, valid by construction.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    pub name: String,
    /// The URL with secrets redacted, as written into every record.
    pub display_url: String,
    pub target: Target,
    pub interpretation: Interpretation,
    pub timeout: Duration,
    pub interval: Duration,
    /// Present exactly when `interpretation` is round-trip.
    pub exchange: Option<Exchange>,
    /// Steps after the open, before the measured exchange (any
    /// interpretation); `${NAME}` already expanded.
    pub prelude: Vec<Step>,
    /// A preset's keepalive answers and goodbye.
    pub session: Option<Session>,
    pub protocols: Vec<String>,
    /// Extra handshake headers, in file order; values are secret.
    pub headers: Vec<(String, String)>,
    /// Top-level, default and probe labels, merged.
    pub labels: BTreeMap<String, String>,
    pub max_message_bytes: usize,
    pub route: Route,
    /// The HTTP CONNECT proxy the run goes through; `None` is a direct
    /// connection (also for `"env"` with no variable set, or `no_proxy`).
    pub proxy: Option<Proxy>,
    /// `None` on `connection_success`, whose health is fixed.
    pub thresholds: Option<Thresholds>,
    /// Present exactly on `wss://` probes.
    pub tls: Option<TlsSetup>,
}
