//! `output.prometheus_listen`: `/metrics` served by one small thread.
//!
//! It serves what the last runs found and never starts a probe. One
//! connection at a time, each with a short deadline for its request and a
//! cap on the request's size, and closed after one answer: a slow or
//! hostile client costs one thread and one buffer, never more, and holds
//! the endpoint for at most `REQUEST_DEADLINE`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::metrics::Metrics;
use crate::say;

/// A request must be complete within this long from its accept.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// The answer must be written within this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Larger request heads are refused (a scraper's is a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;

/// The text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The short answers: errors and the 404.
const PLAIN: &str = "text/plain; charset=utf-8";

/// A bound listener and its thread; dropping it stops the thread.
pub struct Listener {
    /// As configured (`host:port`), to tell whether a reload changed it.
    pub configured: String,
    pub local: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Binds `configured` and starts serving `metrics` on it.
    pub fn start(configured: &str, metrics: Arc<Metrics>) -> io::Result<Listener> {
        let listener = bind(configured)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::Builder::new()
            .name("wsprobe-http".into())
            .stack_size(64 * 1024)
            .spawn(move || serve(&listener, &metrics, &stopped))?;
        say!("metrics at http://{local}/metrics");
        Ok(Listener {
            configured: configured.to_owned(),
            local,
            stop,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocking accept; the thread then sees the flag, drops
        // the socket and ends. An unspecified address is reached through
        // loopback.
        let mut wake = self.local;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
    }
}

/// The first address `host:port` resolves to that can be bound.
fn bind(configured: &str) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "resolves to no address");
    for addr in configured.to_socket_addrs()? {
        match TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn serve(listener: &TcpListener, metrics: &Metrics, stop: &AtomicBool) {
    let mut body = String::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        // A failed accept (a client gone already, out of descriptors) is
        // that client's loss; the next is served.
        let Ok(mut stream) = stream else { continue };
        answer(&mut stream, metrics, &mut body);
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Reads one request and writes one answer; errors end the connection.
fn answer(stream: &mut TcpStream, metrics: &Metrics, body: &mut String) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let head = match read_head(stream, Instant::now() + REQUEST_DEADLINE) {
        Ok(head) => head,
        Err(Refused::TooLarge) => {
            return respond(
                stream,
                "431 Request Header Fields Too Large",
                PLAIN,
                b"request too large\n",
                true,
            )
        }
        Err(Refused::Gone) => return,
    };
    let mut words = head.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let version_ok = words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    if !version_ok {
        return respond(stream, "400 Bad Request", PLAIN, b"bad request\n", true);
    }
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return respond(stream, "405 Method Not Allowed", PLAIN, b"GET only\n", true);
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            body.clear();
            metrics.render(body);
            respond(stream, "200 OK", CONTENT_TYPE, body.as_bytes(), with_body);
        }
        "/" => respond(
            stream,
            "200 OK",
            "text/html; charset=utf-8",
            b"<html><body>wsprobe: metrics at <a href=\"/metrics\">/metrics</a></body></html>\n",
            with_body,
        ),
        _ => respond(
            stream,
            "404 Not Found",
            PLAIN,
            b"not found; try /metrics\n",
            with_body,
        ),
    }
}

enum Refused {
    TooLarge,
    /// Closed, timed out, or not HTTP at all: nothing worth an answer.
    Gone,
}

/// The request line, once the whole head (up to the blank line) is in.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<String, Refused> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refused::Gone);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| Refused::Gone)?;
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Err(Refused::Gone),
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        let end = find(&head, b"\r\n\r\n").or_else(|| find(&head, b"\n\n"));
        if let Some(end) = end {
            let line = head[..end].split(|b| *b == b'\n').next().unwrap_or(&[]);
            let line = String::from_utf8_lossy(line)
                .trim_end_matches('\r')
                .to_owned();
            return Ok(line);
        }
        if head.len() > MAX_REQUEST {
            return Err(Refused::TooLarge);
        }
    }
}

/// A naive search: the head is at most 8 KiB, and memchr's searcher
/// would cost more flash than this costs time.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8], with_body: bool) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if with_body {
        let _ = stream.write_all(body);
    }
}
