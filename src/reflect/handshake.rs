//! The server's side of the opening handshake (RFC 6455 4.2): one request
//! head in, one answer out. Any path upgrades; `GET /health` answers `ok`
//! for load balancers; anything else gets a plain 4xx and the close.

use std::borrow::Cow;

use ring::digest::{digest, Digest, SHA256};

use super::limits::Rejection;
use crate::probe::upgrade::accept_for;

/// A request head longer than this is refused (431): nginx's default
/// header buffer, ample for a browser's upgrade with cookies.
pub const MAX_HEAD: usize = 8 * 1024;

/// More header lines than this is refused (431), as the probe caps answers.
const MAX_HEADERS: usize = 64;

/// What the reflector accepts from a client, fixed at start.
pub struct Policy {
    /// Subprotocols it may select, from `--protocol`.
    pub protocols: Vec<String>,
    /// SHA-256 of the bearer token clients must send, from `--token-env`.
    pub token: Option<Digest>,
}

impl Policy {
    pub fn new(protocols: Vec<String>, token: Option<&str>) -> Self {
        Policy {
            protocols,
            token: token.map(|t| digest(&SHA256, t.as_bytes())),
        }
    }
}

/// The answer to a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// No end of head yet (and still under `MAX_HEAD`).
    Incomplete,
    /// 101: the socket is a WebSocket; `used` bytes were the head.
    Upgrade { response: String, used: usize },
    /// An HTTP answer after which the connection closes; `None` for the
    /// health check, which is no rejection.
    Refuse {
        response: String,
        kind: Option<Rejection>,
    },
}

pub fn answer(head: &[u8], policy: &Policy) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let used = match request.parse(head) {
        Ok(httparse::Status::Complete(used)) if used <= MAX_HEAD => used,
        Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => return Answer::Incomplete,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return refuse(
                "431 Request Header Fields Too Large",
                "",
                Rejection::HeadTooLarge,
            )
        }
        Err(_) => return refuse("400 Bad Request", "", Rejection::NotWebSocket),
    };
    let headers: &[httparse::Header] = request.headers;
    let has_token = |name: &'static str, token: &str| {
        values(headers, name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let path = request.path.unwrap_or("");
    let is_get = request.method == Some("GET");
    let is_upgrade = has_token("Upgrade", "websocket") && has_token("Connection", "upgrade");
    if !is_upgrade {
        if is_get && path.split('?').next() == Some("/health") {
            return plain("200 OK", "", "ok");
        }
        return refuse("400 Bad Request", "", Rejection::NotWebSocket);
    }
    let keys: Vec<_> = values(headers, "Sec-WebSocket-Key").collect();
    let key = match keys.as_slice() {
        [key] if key.trim().len() == 24 => key.trim().to_owned(),
        _ => return refuse("400 Bad Request", "", Rejection::NotWebSocket),
    };
    if !is_get {
        return refuse("400 Bad Request", "", Rejection::NotWebSocket);
    }
    if !values(headers, "Sec-WebSocket-Version").any(|v| v.trim() == "13") {
        return refuse(
            "426 Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            Rejection::NotWebSocket,
        );
    }
    if let Some(expected) = &policy.token {
        let sent = values(headers, "Authorization").find_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("Bearer")
                .then(|| digest(&SHA256, token.trim().as_bytes()))
        });
        // Digests of equal length, compared without an early exit: the
        // time taken says nothing about the token.
        let matches = sent.is_some_and(|sent| same(sent.as_ref(), expected.as_ref()));
        if !matches {
            return refuse(
                "401 Unauthorized",
                "WWW-Authenticate: Bearer\r\n",
                Rejection::Unauthorized,
            );
        }
    }
    let offered: Vec<String> = values(headers, "Sec-WebSocket-Protocol")
        .flat_map(|v| {
            v.split(',')
                .map(|p| p.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let chosen = offered.iter().find(|p| policy.protocols.contains(p));
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_for(&key)
    );
    if let Some(protocol) = chosen {
        response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    response.push_str("\r\n");
    Answer::Upgrade { response, used }
}

/// Every value of the header `name`, in order.
fn values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(h.value))
}

/// Equal slices, in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y))) == 0
}

fn refuse(status: &str, headers: &str, kind: Rejection) -> Answer {
    let body = status.split_once(' ').map_or(status, |(_, text)| text);
    match plain(status, headers, &format!("{}\n", body.to_ascii_lowercase())) {
        Answer::Refuse { response, .. } => Answer::Refuse {
            response,
            kind: Some(kind),
        },
        other => other,
    }
}

fn plain(status: &str, headers: &str, body: &str) -> Answer {
    Answer::Refuse {
        response: format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n{headers}\r\n{body}",
            body.len()
        ),
        kind: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /any/path?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n";

    fn ask(extra: &str, policy: &Policy) -> Answer {
        answer(format!("{UPGRADE}{extra}\r\n").as_bytes(), policy)
    }

    fn status(answer: &Answer) -> &str {
        match answer {
            Answer::Upgrade { response, .. } | Answer::Refuse { response, .. } => &response[9..12],
            Answer::Incomplete => "incomplete",
        }
    }

    #[test]
    fn upgrade_on_any_path_with_the_rfc_accept() {
        let open = Policy::new(vec![], None);
        let Answer::Upgrade { response, used } = ask("", &open) else {
            panic!("not upgraded");
        };
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!response.contains("Sec-WebSocket-Protocol"));
        assert_eq!(used, UPGRADE.len() + 2);
    }

    #[test]
    fn subprotocol_only_from_the_list() {
        let policy = Policy::new(vec!["b".into(), "c".into()], None);
        let a = ask(
            "Sec-WebSocket-Protocol: a, c\r\nSec-WebSocket-Protocol: b\r\n",
            &policy,
        );
        assert!(
            matches!(a, Answer::Upgrade { response, .. } if response.contains("Protocol: c\r\n"))
        );
        let a = ask("Sec-WebSocket-Protocol: x\r\n", &policy);
        assert!(
            matches!(a, Answer::Upgrade { response, .. } if !response.contains("Sec-WebSocket-Protocol"))
        );
    }

    #[test]
    fn token_is_required_when_set() {
        let policy = Policy::new(vec![], Some("s3cret"));
        assert_eq!(status(&ask("", &policy)), "401");
        assert_eq!(
            status(&ask("Authorization: Bearer nope\r\n", &policy)),
            "401"
        );
        assert_eq!(
            status(&ask("Authorization: Basic s3cret\r\n", &policy)),
            "401"
        );
        assert_eq!(
            status(&ask("Authorization: Bearer s3cret\r\n", &policy)),
            "101"
        );
    }

    #[test]
    fn not_websocket_requests_get_plain_answers() {
        let open = Policy::new(vec![], None);
        let get = |head: &str| answer(head.as_bytes(), &open);
        assert_eq!(
            status(&get("GET /health HTTP/1.1\r\nHost: h\r\n\r\n")),
            "200"
        );
        assert!(
            matches!(get("GET /health HTTP/1.1\r\n\r\n"), Answer::Refuse { response, kind: None } if response.ends_with("\r\n\r\nok"))
        );
        assert_eq!(status(&get("GET / HTTP/1.1\r\n\r\n")), "400");
        assert_eq!(status(&get("\x16\x03\x01\x02\x00garbage\r\n\r\n")), "400");
        assert_eq!(get("GET / HTTP/1.1\r\nHost: h\r\n"), Answer::Incomplete);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(&get(&long)), "431");
        // Whole, but over the cap: one read can bring in 16 KiB at once.
        let whole = ask(&format!("X: {}\r\n", "a".repeat(MAX_HEAD)), &open);
        assert_eq!(status(&whole), "431");
        let old = UPGRADE.replace("Version: 13", "Version: 8");
        assert_eq!(status(&get(&format!("{old}\r\n"))), "426");
    }
}
