//! The probe's URL: `ws://` or `wss://`, parsed by hand.

use std::net::{IpAddr, Ipv6Addr};

use crate::spec::Target;

/// Parses a `ws://` or `wss://` URL by hand: the rules are few, and the
/// common parsers drop a fragment silently or accept port 99999. Errors
/// never quote the URL: a password with an unencoded `/` would otherwise
/// show up as "the port".
pub fn parse_url(raw: &str) -> Result<Target, Problem> {
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
    let (host, ip, port) = host_and_port(host_port, default_port)?;
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

/// What is wrong with a URL: a message and maybe a hint, never the URL.
pub(super) type Problem = (String, Option<String>);

/// The host (lower case, IPv6 without brackets), its address when it is an
/// IP literal, and the port of an authority's `host[:port]`.
pub(super) fn host_and_port(
    host_port: &str,
    default_port: u16,
) -> Result<(String, Option<IpAddr>, u16), Problem> {
    let plain = |m: &str| (m.to_owned(), None);
    let (host, ip, port_text) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| plain("has an IPv6 address without its closing ]"))?;
        let v6: Ipv6Addr = inside
            .parse()
            .map_err(|_| plain("has a bracketed host that is not an IPv6 address"))?;
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
            return Err(plain("has a host with characters a host name cannot have"));
        }
        let ip = host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
        if ip.is_none() {
            check_host_name(host).map_err(|m| plain(&m))?;
        }
        (host.to_ascii_lowercase(), ip, port)
    };
    let port = match port_text {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(plain("has a port that is not a number from 1 to 65535")),
        },
    };
    Ok((host, ip, port))
}

/// A host name's labels (RFC 1123 section 2.1, with `_` as resolvers
/// allow it): none empty, none with a `-` at an end, and a last label that
/// is not all digits, so `999.1.1.1` is no name but a bad IPv4 address. One
/// trailing dot (the root) is allowed.
fn check_host_name(host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|label| label.is_empty()) {
        return Err("has a host name with an empty label (\"..\" or a leading dot)".into());
    }
    if labels
        .iter()
        .any(|label| label.starts_with('-') || label.ends_with('-'))
    {
        return Err("has a host name with a label that starts or ends with \"-\"".into());
    }
    if labels.iter().any(|label| label.len() > 63) || name.len() > 253 {
        return Err("has a host name longer than DNS allows (63 per label, 253 in all)".into());
    }
    if labels
        .last()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("has a host that is neither an IPv4 address nor a name".into());
    }
    Ok(())
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
        for name in [
            "example.com.",
            "my_host.lan",
            "1a.example",
            "xn--bcher-kva.example",
        ] {
            let url = format!("ws://{name}/");
            assert!(parse_url(&url).is_ok(), "{url}");
        }
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
            "ws://../",
            "ws://-/",
            "ws://a..b/",
            "ws://-a.example/",
            "ws://a-.example/",
            "ws://999.1.1.1/",
            "ws://1.2.3/",
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
}
