//! The `proxy` field: an `http://` proxy URL, or `"env"` and the rules by
//! which the environment names one (`https_proxy`, `http_proxy`,
//! `no_proxy`), decided when the config loads.
//!
//! Errors never quote a proxy URL: its userinfo is a password.

use std::net::IpAddr;

use super::url::{host_and_port, Problem};
use super::Env;
use crate::spec::{Proxy, Target};

/// The port of an `http://` proxy URL that names none (curl's and squid's).
pub const DEFAULT_PROXY_PORT: u16 = 3128;

/// What a probe's `proxy` field says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyChoice {
    /// `"env"`: the environment decides, for each probe's scheme and host.
    Env,
    Given(Proxy),
}

/// Parses `http://[user:pass@]host[:port][/]`. `scheme_optional` lets a
/// value from the environment leave out `http://`, as curl allows.
pub fn parse_proxy_url(raw: &str, scheme_optional: bool) -> Result<Proxy, Problem> {
    let plain = |m: &str| (m.to_owned(), None);
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(plain("must not contain spaces or control characters"));
    }
    let rest = match raw.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            // Only a scheme from this list is named back: whatever else
            // stands before "://" may hold an expanded ${SECRET}.
            let known = ["https", "socks4", "socks4a", "socks5", "socks5h"]
                .into_iter()
                .find(|k| scheme.eq_ignore_ascii_case(k));
            let (what, hint) = match known {
                Some("https") => (
                    "has the scheme https://".to_owned(),
                    "TLS to the proxy is not supported; the tunnel carries TLS to the target",
                ),
                Some(socks) => (
                    format!("has the scheme {socks}://"),
                    "SOCKS proxies are not supported",
                ),
                None => (
                    "has a scheme other than http://".to_owned(),
                    "write http://host:port",
                ),
            };
            return Err((
                format!("{what}; only http:// proxies (HTTP CONNECT) are supported"),
                Some(hint.to_owned()),
            ));
        }
        None if scheme_optional => raw,
        None => {
            return Err((
                "must be \"env\" or an http:// URL".to_owned(),
                Some("write http://[user:password@]host[:port]".to_owned()),
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(plain(
            "must be http://host:port alone, without a path or query",
        ));
    }
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (host, ip, port) = host_and_port(host_port, DEFAULT_PROXY_PORT)?;
    // RFC 7617 section 2: user-id ":" password; a URL with a user alone
    // sends an empty password, as curl does.
    let userinfo = userinfo.map(|u| match u.contains(':') {
        true => u.to_owned(),
        false => format!("{u}:"),
    });
    Ok(Proxy {
        host,
        ip,
        port,
        userinfo,
    })
}

/// The proxy settings the environment holds, read once per config load.
pub struct EnvProxies {
    /// For `wss://`: `https_proxy`, else `HTTPS_PROXY`; with the name of
    /// the variable it came from.
    https: Option<(&'static str, String)>,
    /// For `ws://`: `http_proxy` only. `HTTP_PROXY` is not read: a CGI
    /// program's environment carries a request's `Proxy:` header under
    /// that name ("httpoxy"), which is why curl ignores it too.
    http: Option<(&'static str, String)>,
    no_proxy: NoProxy,
}

impl EnvProxies {
    pub fn read(env: Env) -> Self {
        // The first of the names that is set and not empty.
        let first = |names: &[&'static str]| {
            names.iter().find_map(|&name| {
                env(name)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .map(|v| (name, v))
            })
        };
        EnvProxies {
            https: first(&["https_proxy", "HTTPS_PROXY"]),
            http: first(&["http_proxy"]),
            no_proxy: NoProxy::parse(
                &first(&["no_proxy", "NO_PROXY"])
                    .map(|(_, v)| v)
                    .unwrap_or_default(),
            ),
        }
    }

    /// The variable that would name `target`'s proxy, if one is set.
    pub fn variable_for(&self, target: &Target) -> Option<&'static str> {
        self.source(target).map(|(name, _)| *name)
    }

    fn source(&self, target: &Target) -> Option<&(&'static str, String)> {
        match target.secure {
            true => self.https.as_ref(),
            false => self.http.as_ref(),
        }
    }

    /// The proxy for `target`: `None` when no variable is set for its
    /// scheme (a direct connection, as curl makes) or `no_proxy` lists
    /// its host. A value that is no usable proxy URL is an error naming
    /// the variable, never quoting it.
    pub fn proxy_for(&self, target: &Target) -> Result<Option<Proxy>, Problem> {
        let Some((name, value)) = self.source(target) else {
            return Ok(None);
        };
        if self.no_proxy.matches(&target.host, target.ip) {
            return Ok(None);
        }
        parse_proxy_url(value, true)
            .map(Some)
            .map_err(|(message, hint)| (format!("\"env\": {name} {message}"), hint))
    }
}

/// A `no_proxy` list: the hosts that are reached directly.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// `*`: every host.
    All,
    /// A name (lower case, no leading or trailing dot): the host itself
    /// and every name under it.
    Domain(String),
    /// An IP address, or a network in CIDR notation: compared with IP
    /// literal hosts only (names are not resolved for this).
    Network(IpAddr, u8),
}

impl NoProxy {
    /// Entries are separated by commas (and blanks, as curl allows);
    /// anything that is neither `*`, an address, a network nor a name
    /// (say, `host:8080`) matches nothing.
    pub fn parse(list: &str) -> Self {
        let entries = list
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|e| !e.is_empty())
            .filter_map(Entry::parse)
            .collect();
        NoProxy { entries }
    }

    /// Whether `host` (as the URL writes it, lower case; `ip` when it is
    /// an IP literal) is reached directly.
    pub fn matches(&self, host: &str, ip: Option<IpAddr>) -> bool {
        let name = host.strip_suffix('.').unwrap_or(host);
        self.entries.iter().any(|entry| match (entry, ip) {
            (Entry::All, _) => true,
            (Entry::Network(network, bits), Some(ip)) => in_network(ip, *network, *bits),
            (Entry::Domain(domain), None) => {
                name == domain
                    || name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
            _ => false,
        })
    }
}

impl Entry {
    fn parse(raw: &str) -> Option<Entry> {
        if raw == "*" {
            return Some(Entry::All);
        }
        let (address, bits) = match raw.split_once('/') {
            Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
            None => (raw, None),
        };
        let unbracketed = address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(address);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            let full = if ip.is_ipv4() { 32 } else { 128 };
            let bits = bits.unwrap_or(full);
            return (bits <= full).then_some(Entry::Network(ip, bits));
        }
        if bits.is_some() {
            return None;
        }
        // `.example.com` and `*.example.com` say what `example.com` says.
        let name = raw
            .strip_prefix("*.")
            .or(raw.strip_prefix('.'))
            .unwrap_or(raw);
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let is_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        is_name.then_some(Entry::Domain(name))
    }
}

/// Whether `ip` lies in `network/bits`; families never mix.
fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    let prefix = |a: u128, b: u128, width: u32| {
        let shift = width - u32::from(bits);
        // A shift by the full width (bits 0) leaves nothing to compare.
        a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
    };
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            prefix(u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix(u128::from(a), u128::from(b), 128),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        super::super::parse_url(url).unwrap()
    }

    fn no_proxy(list: &str, host: &str) -> bool {
        let ip = host.trim_matches(['[', ']']).parse().ok();
        NoProxy::parse(list).matches(host.trim_matches(['[', ']']), ip)
    }

    #[test]
    fn proxy_urls_parse_with_the_default_port_and_userinfo() {
        let p = parse_proxy_url("http://proxy.corp", false).unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.userinfo),
            ("proxy.corp", 3128, None)
        );
        let p = parse_proxy_url("HTTP://u%40x:p%3Aw@Proxy.Corp:8080/", false).unwrap();
        assert_eq!(p.host, "proxy.corp");
        assert_eq!(p.port, 8080);
        assert_eq!(p.userinfo.as_deref(), Some("u%40x:p%3Aw"));
        assert_eq!(p.display(), "http://REDACTED@proxy.corp:8080");
        let p = parse_proxy_url("http://alice@[::1]:3129", false).unwrap();
        assert_eq!(p.ip, Some("::1".parse().unwrap()));
        assert_eq!(p.userinfo.as_deref(), Some("alice:"));
        assert_eq!(p.display(), "http://REDACTED@[::1]:3129");
        assert_eq!(format!("{p:?}"), "http://REDACTED@[::1]:3129");
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_quoting_them() {
        for bad in [
            "socks5://h:1080",
            "https://h:3128",
            "h:3128",
            "http://",
            "http://h:99999",
            "http://h:0",
            "http://h/path",
            "http://h?x",
            "http://u:p@h/p#f",
            "http://a..b",
            "http://[::1",
            "http://h :80",
        ] {
            match parse_proxy_url(bad, false) {
                Ok(p) => panic!("{bad} was accepted as {p:?}"),
                Err((message, _)) => assert!(!message.contains(bad), "{message}"),
            }
        }
        let (message, hint) = parse_proxy_url("socks5://secret@h", false).unwrap_err();
        assert!(message.contains("socks5://"), "{message}");
        assert!(!message.contains("secret"));
        assert!(hint.unwrap().contains("SOCKS"));
        assert_eq!(parse_proxy_url("h:8080", true).unwrap().port, 8080);
    }

    #[test]
    fn no_proxy_matches_hosts_and_domain_suffixes_as_curl_does() {
        let list = "localhost, .internal.example,corp.example  *.lan,";
        for direct in [
            "localhost",
            "internal.example",
            "a.internal.example",
            "corp.example",
            "x.y.corp.example",
            "corp.example.",
            "printer.lan",
            // As curl reads a leading dot: ".lan" says what "lan" says.
            "lan",
        ] {
            assert!(no_proxy(list, direct), "{direct} should be direct");
        }
        for proxied in ["notcorp.example", "example", "localhost.lan.x", "xlan"] {
            assert!(!no_proxy(list, proxied), "{proxied} should be proxied");
        }
        assert!(no_proxy("CORP.Example", "corp.example"));
        assert!(no_proxy("*", "anything.example"));
        assert!(no_proxy("a.example,*", "b.example"));
        assert!(!no_proxy("", "a.example"));
        assert!(!no_proxy("a.example:8080", "a.example"));
    }

    #[test]
    fn no_proxy_matches_addresses_and_networks_for_ip_literals_only() {
        assert!(no_proxy("127.0.0.1", "127.0.0.1"));
        assert!(no_proxy("10.0.0.0/8", "10.20.30.40"));
        assert!(!no_proxy("10.0.0.0/8", "11.0.0.1"));
        assert!(no_proxy("0.0.0.0/0", "192.0.2.1"));
        assert!(no_proxy("::1", "[::1]"));
        assert!(no_proxy("[fd00::]/8", "[fdab::1]"));
        assert!(!no_proxy("fd00::/8", "[fe80::1]"));
        assert!(!no_proxy("127.0.0.0/8", "[::1]"));
        assert!(!no_proxy("10.0.0.0/33,10.0.0.0/x", "10.0.0.1"));
        // Names are not resolved: an address entry never matches a name.
        assert!(!no_proxy("127.0.0.1", "localhost"));
    }

    #[test]
    fn env_takes_https_proxy_for_wss_and_lower_case_http_proxy_for_ws() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let env = vars(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("HTTP_PROXY", "http://cgi-header:80"),
            ("no_proxy", "direct.example"),
        ]);
        let proxies = EnvProxies::read(&env);
        let wss = proxies.proxy_for(&target("wss://a.example/")).unwrap();
        assert_eq!(wss.map(|p| p.host), Some("upper".into()));
        // HTTP_PROXY (upper case) is never read.
        assert_eq!(proxies.proxy_for(&target("ws://a.example/")), Ok(None));
        assert_eq!(
            proxies.proxy_for(&target("wss://direct.example/")),
            Ok(None)
        );

        let env = vars(&[
            ("https_proxy", "lower:8080"),
            ("HTTPS_PROXY", "http://upper:3128"),
            ("http_proxy", "socks5://u:pw@h"),
            ("no_proxy", ""),
            ("NO_PROXY", "*"),
        ]);
        let proxies = EnvProxies::read(&env);
        // An empty no_proxy gives way to NO_PROXY, here "*": all direct.
        assert_eq!(proxies.proxy_for(&target("wss://a.example/")), Ok(None));
        let env = vars(&[
            ("https_proxy", "lower:8080"),
            ("http_proxy", "socks5://u:pw@h"),
        ]);
        let proxies = EnvProxies::read(&env);
        let wss = proxies
            .proxy_for(&target("wss://a.example/"))
            .unwrap()
            .unwrap();
        assert_eq!((wss.host.as_str(), wss.port), ("lower", 8080));
        let (message, _) = proxies.proxy_for(&target("ws://a.example/")).unwrap_err();
        assert!(
            message.contains("http_proxy") && !message.contains("pw"),
            "{message}"
        );
    }
}
