//! Shared by the tests of the outputs (`prometheus.rs`, `output_stall.rs`):
//! an agent whose stderr is read on a thread and whose `/metrics` address
//! is read from its log, a minimal HTTP/1.1 client, the text exposition
//! parsed into samples, and the Debian tools found or skipped.
//! Builds on `support` (a test file that includes this includes it too).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{skip_or_fail, wait_line, wsprobe};

/// Bound on waits for something the agent or a tool announces.
pub const READY_WAIT: Duration = Duration::from_secs(20);

/// A Debian tool at its install path, or None (skipped, or a failure
/// under CI=true: `.ci/install-prometheus.sh` installs them).
pub fn tool(path: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    if path.exists() {
        Some(path)
    } else {
        skip_or_fail(&format!(
            "{} is missing (run .ci/install-prometheus.sh)",
            path.display()
        ));
        None
    }
}

/// `wsprobe run -c CONFIG`, killed on drop if still running.
pub struct Agent {
    pub child: Child,
    stderr: Receiver<String>,
    pub log: Vec<String>,
}

impl Agent {
    /// Starts the agent with stdout going to `stdout`.
    pub fn start(config: &Path, stdout: Stdio) -> Agent {
        let mut child = wsprobe()
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsprobe run");
        let stderr = child.stderr.take().expect("stderr pipe");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Agent {
            child,
            stderr: rx,
            log: Vec::new(),
        }
    }

    /// Waits for a stderr line from index `from` on that `pick` accepts.
    pub fn wait_log(&mut self, from: usize, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let child = &mut self.child;
        wait_line(
            &self.stderr,
            &mut self.log,
            (from, what, READY_WAIT),
            pick,
            || format!("{:?}", child.try_wait()),
        )
    }

    /// The `/metrics` address announced from stderr line `from` on.
    pub fn metrics_addr(&mut self, from: usize) -> String {
        let line = self.wait_log(from, "announcing /metrics", |l| {
            l.starts_with("wsprobe: metrics at http://")
        });
        line.trim_start_matches("wsprobe: metrics at http://")
            .trim_end_matches("/metrics")
            .to_owned()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Every stderr line until the agent's stderr ends (it exited).
    pub fn rest_of_log(&mut self) -> String {
        while let Ok(line) = self.stderr.recv_timeout(READY_WAIT) {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer: status code, head (lower-cased names) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is to `addr` and reads the answer to its end.
pub fn exchange(addr: &str, request: &[u8]) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(READY_WAIT))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// `GET path` on `addr`.
pub fn get(addr: &str, path: &str) -> std::io::Result<Answer> {
    // HTTP/1.0: answers come whole, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    exchange(addr, request.as_bytes())
}

/// Polls `check` every 50 ms until it returns Some, for at most `bound`:
/// waiting for an outside process (a server coming up, a scrape landing)
/// that announces itself no other way.
pub fn poll<T>(what: &str, bound: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// One sample of the text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of an exposition. Panics on a sample line with anything
/// after its value (a timestamp) or that does not parse.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(
            !name.contains(' ') && !labels.contains("} "),
            "a sample with a timestamp or stray field: {line:?}"
        );
        let mut map = BTreeMap::new();
        for pair in split_labels(labels) {
            let (k, v) = pair.split_once('=').expect("label=value");
            map.insert(k.to_owned(), v.trim_matches('"').to_owned());
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels: map,
            value,
        });
    }
    out
}

/// `a="x",b="y"` split at the commas outside quotes.
fn split_labels(labels: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        parts.push(&labels[start..]);
    }
    parts
}

/// The value of `name` whose labels include every pair of `with`.
pub fn value_of(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}
