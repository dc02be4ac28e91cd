//! The opening handshake, RFC 6455 section 4.1, checked to the letter.
//!
//! wsprobe writes the request and reads the answer itself rather than
//! through tungstenite's client handshake, which refuses a `Connection:
//! keep-alive, Upgrade` answer (RFC 6455 asks for a token, not an exact
//! value) and would page an operator for a server that works in every
//! browser. The framing after the upgrade is tungstenite's.

use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use ring::rand::{SecureRandom, SystemRandom};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

use super::clip;
use super::gate::Gate;
use super::head::{self, io_failure, Answer, Exchange, MAX_HEADERS};
use super::wire::Wire;
use super::ws::base64;
use crate::outcome::{Failure, Meta, Phase};
use crate::redact;
use crate::spec::ProbeSpec;

/// The `User-Agent` header line, unless the probe sets its own.
pub(super) const USER_AGENT: &str =
    concat!("User-Agent: wsprobe/", env!("CARGO_PKG_VERSION"), "\r\n");

/// RFC 6455 section 1.3: appended to the key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A server's words quoted in a record are cut to this many bytes (a
/// `Location`, to eight times as many): a record stays a short line.
const MAX_QUOTED: usize = 128;

/// The upgrade request and the answer it must get. Made before the run's
/// clock starts: the key (a draw from the OS's randomness) and the SHA-1
/// over it depend on nothing the network says.
pub struct Request {
    bytes: String,
    /// What the server must answer in `Sec-WebSocket-Accept`.
    accept: String,
}

impl Request {
    pub fn new(spec: &ProbeSpec) -> Result<Self, Failure> {
        Ok(Request::with_key(spec, &new_key()?))
    }

    /// The request with a given key: tests and the fuzz targets need to
    /// know the answer it must get (`accept_for(key)`).
    pub fn with_key(spec: &ProbeSpec, key: &str) -> Self {
        Request {
            bytes: request(spec, key),
            accept: accept_for(key),
        }
    }
}

/// Sends the upgrade request and checks the answer; on success the socket
/// is open, with any bytes read past the answer handed to the framing.
pub fn upgrade<S: Wire>(
    spec: &ProbeSpec,
    request: &Request,
    mut transport: S,
    config: WebSocketConfig,
    meta: &mut Meta,
) -> Result<WebSocket<Gate<S>>, Failure> {
    transport
        .send_all(request.bytes.as_bytes())
        .map_err(|e| io_failure(Phase::Upgrade, e, "sending the upgrade request"))?;
    let tail = head::read_answer(&mut transport, &UPGRADE, |head| {
        check_answer(head, &request.accept, &spec.protocols, meta)
    })?;
    // The bytes read past the answer go through the gate too.
    let gate = Gate::new(transport, tail, spec.max_message_bytes);
    Ok(WebSocket::from_raw_socket(gate, Role::Client, Some(config)))
}

/// The upgrade answer, in the words its failures use.
const UPGRADE: Exchange = Exchange {
    phase: Phase::Upgrade,
    answer: "the upgrade answer",
    closed: "the server closed the connection before answering the upgrade",
};

fn new_key() -> Result<String, Failure> {
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Failure::open_failed(Phase::Upgrade, "no randomness for the key"))?;
    Ok(base64(&nonce))
}

/// The value the server must answer in `Sec-WebSocket-Accept`.
pub fn accept_for(key: &str) -> String {
    let hash = digest(
        &SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    base64(hash.as_ref())
}

fn request(spec: &ProbeSpec, key: &str) -> String {
    let target = &spec.target;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.path_and_query,
        target.authority()
    );
    if !spec.protocols.is_empty() {
        request.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            spec.protocols.join(", ")
        ));
    }
    let has = |name: &str| {
        spec.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if let (Some(userinfo), false) = (&target.userinfo, has("authorization")) {
        request.push_str(&format!(
            "Authorization: Basic {}\r\n",
            basic_credentials(userinfo)
        ));
    }
    if !has("user-agent") {
        request.push_str(USER_AGENT);
    }
    for (name, value) in &spec.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// The Basic credentials (RFC 7617) a URL's `user:password` stands for.
pub(super) fn basic_credentials(userinfo: &str) -> String {
    base64(&percent_decode(userinfo))
}

/// Userinfo as the URL spells it, `%40` and all, back to its bytes (as
/// browsers and curl do before building Basic credentials).
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Checks the answer at the start of `buf` against the `accept` value it
/// must carry; a failure once it is a complete head and wrong.
fn check_answer(
    buf: &[u8],
    accept: &str,
    offered: &[String],
    meta: &mut Meta,
) -> Result<Answer, Failure> {
    let failed = |detail: String| Failure::open_failed(Phase::Upgrade, detail);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let Some(head_len) = head::parse(buf, &mut answer, &UPGRADE)? else {
        return Ok(Answer::Incomplete);
    };
    let status = answer.code.unwrap_or(0);
    if (100..200).contains(&status) && status != 101 {
        return Ok(Answer::Interim(head_len));
    }
    meta.http_status = Some(status);
    let values = |name: &str| -> Vec<String> {
        answer
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
            .collect()
    };
    let has_token = |name: &str, token: &str| {
        values(name)
            .iter()
            .flat_map(|v| v.split(',').map(str::trim).collect::<Vec<_>>())
            .any(|t| t.eq_ignore_ascii_case(token))
    };

    if status != 101 {
        meta.location = values("location")
            .first()
            .map(|l| clip(&redact::url(l), MAX_QUOTED * 8));
        let reason = head::reason_phrase(answer.reason);
        let detail = format!("server answered HTTP {status} {reason}");
        return Err(failed(format!(
            "{} instead of 101 Switching Protocols",
            detail.trim_end()
        )));
    }
    // Unlike Connection, Upgrade must be exactly "websocket" (section
    // 4.1, check 2): `Upgrade: h2c, websocket` is no WebSocket answer.
    match values("upgrade").as_slice() {
        [one] if one.eq_ignore_ascii_case("websocket") => {}
        other => {
            return Err(failed(format!(
                "the 101 answer's Upgrade is {:?}, not \"websocket\"",
                clip(&other.join(", "), MAX_QUOTED)
            )))
        }
    }
    if !has_token("connection", "upgrade") {
        return Err(failed(
            "the 101 answer lacks \"Connection: Upgrade\"".to_owned(),
        ));
    }
    match values("sec-websocket-accept").as_slice() {
        [answered] if answered == accept => {}
        [] => return Err(failed("the 101 answer has no Sec-WebSocket-Accept".into())),
        [_, _, ..] => {
            return Err(failed(
                "the 101 answer has more than one Sec-WebSocket-Accept".into(),
            ))
        }
        _ => {
            return Err(failed(
                "bad Sec-WebSocket-Accept: the server's answer does not match our key".into(),
            ))
        }
    }
    let extensions: Vec<String> = values("sec-websocket-extensions")
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect();
    if !extensions.is_empty() {
        return Err(failed(format!(
            "the server chose extensions that were not offered: {}",
            clip(&extensions.join(", "), MAX_QUOTED)
        )));
    }
    let chosen = values("sec-websocket-protocol");
    match (chosen.as_slice(), offered.is_empty()) {
        ([], true) => {}
        ([], false) => {
            return Err(failed(format!(
                "subprotocol: the server chose none of those offered ({})",
                offered.join(", ")
            )))
        }
        ([one], false) if offered.contains(one) => meta.subprotocol = Some(one.clone()),
        (chosen, _) => {
            return Err(failed(format!(
                "subprotocol: the server chose {:?}, which was not offered",
                clip(&chosen.join(", "), MAX_QUOTED)
            )))
        }
    }
    Ok(Answer::Final(head_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn answer(extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn check(buf: &[u8], offered: &[&str]) -> Result<Answer, String> {
        let offered: Vec<String> = offered.iter().map(|s| s.to_string()).collect();
        check_answer(buf, &accept_for(KEY), &offered, &mut Meta::default()).map_err(|f| f.error)
    }

    #[test]
    fn userinfo_is_percent_decoded_for_basic_credentials() {
        assert_eq!(percent_decode("u:p%40ss%3a"), b"u:p@ss:");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        // Two hex digits, no sign: from_str_radix alone would take "+1".
        assert_eq!(percent_decode("pw%+1%+f"), b"pw%+1%+f");
    }

    #[test]
    fn informational_answers_are_passed_over_and_leave_no_status() {
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n";
        let mut meta = Meta::default();
        let mut buf = hints.to_vec();
        buf.extend(answer("Connection: Upgrade\r\n"));
        assert_eq!(
            check_answer(&buf, &accept_for(KEY), &[], &mut meta).map_err(|f| f.error),
            Ok(Answer::Interim(hints.len()))
        );
        assert_eq!(meta.http_status, None);
        assert_eq!(
            check(&buf[hints.len()..], &[]),
            Ok(Answer::Final(buf.len() - hints.len()))
        );
    }

    #[test]
    fn the_rfc_example_key_gives_the_rfc_accept() {
        assert_eq!(accept_for(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn connection_is_a_token_list_not_an_exact_value() {
        for connection in ["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade,close"] {
            let buf = answer(&format!("Connection: {connection}\r\n"));
            assert_eq!(
                check(&buf, &[]),
                Ok(Answer::Final(buf.len())),
                "{connection}"
            );
        }
        let buf = answer("Connection: keep-alive\r\n");
        assert!(check(&buf, &[]).unwrap_err().contains("Connection"));
    }

    #[test]
    fn upgrade_must_be_websocket_alone() {
        let with = |upgrade: &str| {
            String::from_utf8_lossy(&answer("Connection: Upgrade\r\n"))
                .replace("Upgrade: websocket", &format!("Upgrade: {upgrade}"))
                .into_bytes()
        };
        assert!(check(&with("h2c, websocket"), &[])
            .unwrap_err()
            .contains("Upgrade"));
        assert!(check(&with("WebSocket"), &[]).is_ok());
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        let buf = answer("Connection: Upgrade\r\n");
        assert_eq!(check(&buf[..buf.len() - 2], &[]), Ok(Answer::Incomplete));
    }

    #[test]
    fn subprotocols_must_be_one_of_those_offered() {
        let with = |p: &str| {
            answer(&format!(
                "Connection: Upgrade\r\nSec-WebSocket-Protocol: {p}\r\n"
            ))
        };
        assert!(check(&with("chat"), &["chat", "superchat"]).is_ok());
        assert!(check(&with("other"), &["chat"]).is_err());
        assert!(check(&with("chat"), &[]).is_err());
        assert!(check(&answer("Connection: Upgrade\r\n"), &["chat"]).is_err());
    }

    #[test]
    fn wrong_accept_and_unoffered_extensions_fail() {
        let bad = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: AAAA\r\n\r\n";
        assert!(check(bad, &[])
            .unwrap_err()
            .contains("Sec-WebSocket-Accept"));
        let ext = answer("Connection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n");
        assert!(check(&ext, &[]).unwrap_err().contains("extensions"));
    }
}
