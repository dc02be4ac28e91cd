//! The CONNECT hop (RFC 9110 section 9.3.6): after the TCP connect to an
//! HTTP proxy, a tunnel through it to the target, through which TLS and
//! the upgrade then run end to end, as if the target were connected to.
//!
//! Any 2xx opens the tunnel, from HTTP/1.0 (tinyproxy) or 1.1 (squid); any
//! other final answer is the proxy's refusal, with its status kept apart
//! from the target's (`meta.proxy_status`). A proxy must send nothing past
//! its 2xx head before the client has spoken through the tunnel (both TLS
//! and the upgrade begin with the client), so bytes read past it are a
//! failure, not the target's first words.

use std::io::Write;

use super::deadline::DeadlineStream;
use super::head::{self, io_failure, Answer, Exchange, MAX_HEADERS};
use super::upgrade::{basic_credentials, USER_AGENT};
use crate::outcome::{Failure, Meta, Phase};
use crate::spec::{Proxy, Target};

/// The proxy's answer to CONNECT, in the words its failures use.
const CONNECT: Exchange = Exchange {
    phase: Phase::Proxy,
    answer: "the proxy's answer to CONNECT",
    closed: "the proxy closed the connection before answering CONNECT",
};

/// The CONNECT request, made before the run's clock starts.
pub struct Request {
    bytes: String,
}

impl Request {
    pub fn new(target: &Target, proxy: &Proxy) -> Self {
        let authority = target.connect_authority();
        let mut bytes = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        // Sent at once rather than after a 407 challenge, as curl, gorilla
        // and Python's websockets do: Basic is the only scheme offered.
        if let Some(userinfo) = &proxy.userinfo {
            bytes.push_str(&format!(
                "Proxy-Authorization: Basic {}\r\n",
                basic_credentials(userinfo)
            ));
        }
        bytes.push_str(USER_AGENT);
        bytes.push_str("\r\n");
        Request { bytes }
    }
}

/// Sends CONNECT and reads the proxy's answer; on success `stream` is a
/// tunnel to the target, nothing of it read yet.
pub fn tunnel(
    request: &Request,
    stream: &mut DeadlineStream,
    meta: &mut Meta,
) -> Result<(), Failure> {
    stream
        .write_all(request.bytes.as_bytes())
        .map_err(|e| io_failure(Phase::Proxy, e, "sending CONNECT"))?;
    let tail = head::read_answer(stream, &CONNECT, |head| check_answer(head, meta))?;
    if !tail.is_empty() {
        return Err(Failure::open_failed(
            Phase::Proxy,
            format!(
                "the proxy sent {} bytes past its 2xx answer to CONNECT, before anything \
                 went through the tunnel",
                tail.len()
            ),
        ));
    }
    // Opened just too late: still the proxy's timeout, not the next phase's.
    if stream.deadline().has_passed() {
        return Err(Failure::handshake_timeout(Phase::Proxy));
    }
    Ok(())
}

/// Checks the proxy's answer at the start of `buf`: a 2xx opens the
/// tunnel, a 1xx other than 101 is passed over, anything else is a
/// refusal.
fn check_answer(buf: &[u8], meta: &mut Meta) -> Result<Answer, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let Some(head_len) = head::parse(buf, &mut answer, &CONNECT)? else {
        return Ok(Answer::Incomplete);
    };
    let status = answer.code.unwrap_or(0);
    match status {
        // A 101 switches the connection away from HTTP: no tunnel either.
        100..=199 if status != 101 => Ok(Answer::Interim(head_len)),
        200..=299 => Ok(Answer::Final(head_len)),
        _ => {
            meta.proxy_status = Some(status);
            let version = answer.version.unwrap_or(1);
            let line = format!(
                "HTTP/1.{version} {status} {}",
                head::reason_phrase(answer.reason)
            );
            Err(Failure::open_failed(
                Phase::Proxy,
                format!("the proxy refused CONNECT: {}", line.trim_end()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(buf: &[u8]) -> (Result<Answer, String>, Option<u16>) {
        let mut meta = Meta::default();
        let result = check_answer(buf, &mut meta).map_err(|f| f.error);
        (result, meta.proxy_status)
    }

    fn target(url: &str) -> Target {
        crate::config::parse_url(url).unwrap()
    }

    fn proxy(userinfo: Option<&str>) -> Proxy {
        Proxy {
            host: "proxy".into(),
            ip: None,
            port: 3128,
            userinfo: userinfo.map(str::to_owned),
        }
    }

    #[test]
    fn connect_names_host_and_port_and_sends_basic_credentials() {
        let request = Request::new(&target("wss://example.com/x"), &proxy(Some("al%40ce:pw")));
        let text = request.bytes;
        assert!(
            text.starts_with("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"),
            "{text}"
        );
        // "al@ce:pw", decoded before it is encoded.
        assert!(
            text.contains("Proxy-Authorization: Basic YWxAY2U6cHc=\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"));
        let request = Request::new(&target("ws://[::1]/"), &proxy(None));
        assert!(request
            .bytes
            .starts_with("CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n"));
        assert!(!request.bytes.contains("Proxy-Authorization"));
    }

    #[test]
    fn any_2xx_of_http_1_0_or_1_1_opens_the_tunnel() {
        for answer in [
            "HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n",
            "HTTP/1.1 200 Connection established\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ] {
            assert_eq!(
                check(answer.as_bytes()),
                (Ok(Answer::Final(answer.len())), None)
            );
        }
        let interim = "HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(
            check(interim.as_bytes()).0,
            Ok(Answer::Interim(interim.len()))
        );
        assert_eq!(check(b"HTTP/1.1 200 OK\r\n").0, Ok(Answer::Incomplete));
    }

    #[test]
    fn a_refusal_keeps_the_status_and_quotes_the_status_line() {
        let (result, status) = check(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n");
        assert_eq!(status, Some(407));
        let error = result.unwrap_err();
        assert!(
            error.ends_with("HTTP/1.0 407 Proxy Authentication Required"),
            "{error}"
        );
        let (result, status) = check(b"HTTP/1.1 503 \r\n\r\n");
        assert_eq!(status, Some(503));
        assert!(result.unwrap_err().ends_with("HTTP/1.1 503"));
        // Not an interim answer: after a 101 nothing more is HTTP.
        let (result, status) = check(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert_eq!(status, Some(101));
        assert!(result
            .unwrap_err()
            .ends_with("HTTP/1.1 101 Switching Protocols"));
        let (result, status) = check(b"SSH-2.0-OpenSSH_9.2\r\n");
        assert_eq!(status, None);
        assert!(result.unwrap_err().contains("not HTTP"));
    }
}
