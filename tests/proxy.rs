//! Through real HTTP CONNECT proxies (docs/proxy.md): tinyproxy and squid
//! from Debian, each started here on 127.0.0.1 with a config written at
//! test time, in front of the Python `websockets` server (ws:// and
//! wss://): the tunnel, Basic auth accepted and refused, a port the proxy
//! forbids, a target that is down, and the timings; then small fakes for
//! what no real proxy does on purpose (silence, bytes past the 2xx).
//!
//! Prerequisites: `tinyproxy` (PATH, /usr/bin or `WSPROBE_TEST_TINYPROXY`),
//! `squid` (PATH, /usr/sbin or `WSPROBE_TEST_SQUID`) with its
//! `basic_ncsa_auth` helper, and `openssl`, all installed by
//! `.ci/install-proxy.sh`. Missing, a test prints why and passes, except
//! under `CI=true`, where it fails.

mod pysupport;
mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use pysupport::{start_tls_server, PyServer, TlsMaterial, WRONG_NAME};
use support::{
    free_port, probe, read_request_head, silent_after_tcp_server, skip_or_fail, Process, Record,
    Run, TempDir,
};

/// How long a proxy may take to become ready before the test fails.
const READY_WAIT: Duration = Duration::from_secs(20);

const USER: &str = "netops";
/// Never printed by wsprobe: `assert_no_password` checks every run.
const PASSWORD: &str = "pr0xyPass-4Kd9";
const NCSA_AUTH: &str = "/usr/lib/squid/basic_ncsa_auth";

// ---------------------------------------------------------------------------
// The proxies
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Tinyproxy,
    Squid,
}

/// What a proxy is started with.
#[derive(Default)]
struct Setup {
    /// Basic credentials the proxy requires, `USER` and `PASSWORD`.
    auth: bool,
    /// The only ports CONNECT may reach; every other is refused (403).
    ports: Vec<u16>,
}

/// A proxy in the foreground with its own temp dir (config, pid file,
/// logs); killed on drop, then its dir removed.
struct Proxy {
    process: Process,
    dir: TempDir,
    port: u16,
    kind: Kind,
}

fn binary(kind: Kind) -> Option<PathBuf> {
    let (name, variable, fallback) = match kind {
        Kind::Tinyproxy => ("tinyproxy", "WSPROBE_TEST_TINYPROXY", "/usr/bin/tinyproxy"),
        Kind::Squid => ("squid", "WSPROBE_TEST_SQUID", "/usr/sbin/squid"),
    };
    let candidates: Vec<PathBuf> = match std::env::var_os(variable) {
        Some(explicit) => vec![PathBuf::from(explicit)],
        None => {
            let mut found: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
                .unwrap_or_default();
            found.push(PathBuf::from(fallback));
            found
        }
    };
    let found = candidates.into_iter().find(|c| c.is_file());
    let helper_missing = kind == Kind::Squid && !Path::new(NCSA_AUTH).is_file();
    if found.is_none() || helper_missing {
        skip_or_fail(&format!(
            "no {name} (or its {NCSA_AUTH}); run .ci/install-proxy.sh or set {variable}"
        ));
        return None;
    }
    found
}

impl Proxy {
    /// Starts the proxy on a free 127.0.0.1 port and waits until it has
    /// written its pid file and accepts TCP. `None` means skipped.
    fn start(kind: Kind, setup: &Setup) -> Option<Proxy> {
        let binary = binary(kind)?;
        // A port taken between free_port and the proxy's bind makes the
        // proxy exit at once; then another is tried.
        for _attempt in 0..5 {
            let dir = TempDir::new("wsprobe-proxy");
            // squid, started as root, drops to its own user (Debian's
            // `proxy`) before it writes its logs.
            set_mode(&dir.path, 0o777);
            let port = free_port();
            let (config, args) = match kind {
                Kind::Tinyproxy => (
                    dir.write("tinyproxy.conf", &tinyproxy_conf(&dir, port, setup)),
                    vec!["-d", "-c"],
                ),
                Kind::Squid => (
                    dir.write("squid.conf", &squid_conf(&dir, port, setup)?),
                    vec!["-N", "-f"],
                ),
            };
            let stderr = File::create(dir.join("stderr")).expect("create the proxy's stderr");
            let child = Command::new(&binary)
                .args(&args)
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
            let mut proxy = Proxy {
                process: Process(child),
                dir,
                port,
                kind,
            };
            match proxy.wait_ready() {
                Ok(()) => return Some(proxy),
                Err(log) if log.contains("in use") => continue,
                Err(log) => panic!("{kind:?} did not start:\n{log}"),
            }
        }
        panic!("{kind:?} found no free port in 5 attempts");
    }

    /// The pid file holding the child's pid (so the port is the proxy's,
    /// not a process that took it meanwhile) and a TCP connect accepted.
    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Some(status) = self.process.0.try_wait().expect("try_wait") {
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            let pid_written = std::fs::read_to_string(self.dir.join("pid"))
                .is_ok_and(|p| p.trim() == self.process.0.id().to_string());
            if pid_written && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} accepted no connection on {addr} within {READY_WAIT:?}\n{}",
                    self.kind,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `http://[USER:PASSWORD@]127.0.0.1:PORT`, or with `credentials`.
    fn url(&self, credentials: Option<&str>) -> String {
        match credentials {
            Some(c) => format!("http://{c}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The record's `meta.proxy` for `url(credentials)`.
    fn shown(&self, credentials: bool) -> String {
        let at = if credentials { "REDACTED@" } else { "" };
        format!("http://{at}127.0.0.1:{}", self.port)
    }

    /// Config, stderr and logs, for failure messages.
    fn log(&self) -> String {
        let mut out = String::new();
        for name in [
            "tinyproxy.conf",
            "squid.conf",
            "stderr",
            "proxy.log",
            "access.log",
        ] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name)) {
                out.push_str(&format!("--- {name} ---\n{text}"));
            }
        }
        out
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn tinyproxy_conf(dir: &TempDir, port: u16, setup: &Setup) -> String {
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 32\n\
         LogLevel Info\nLogFile \"{}\"\nPidFile \"{}\"\n",
        dir.join("proxy.log").display(),
        dir.join("pid").display()
    );
    if setup.auth {
        conf.push_str(&format!("BasicAuth {USER} {PASSWORD}\n"));
    }
    // With no ConnectPort line, tinyproxy allows every port.
    for port in &setup.ports {
        conf.push_str(&format!("ConnectPort {port}\n"));
    }
    conf
}

/// squid's config; `None` when the htpasswd file cannot be made (skipped).
fn squid_conf(dir: &TempDir, port: u16, setup: &Setup) -> Option<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut conf = format!(
        "http_port 127.0.0.1:{port}\npid_filename {}\ncache_log {}\n\
         access_log stdio:{}\ncache_store_log none\ncache deny all\ncache_mem 4 MB\n\
         coredump_dir {}\nnetdb_filename none\npinger_enable off\n\
         visible_hostname wsprobe-test\nshutdown_lifetime 0 seconds\n\
         acl CONNECT method CONNECT\n",
        path("pid"),
        path("proxy.log"),
        path("access.log"),
        dir.path.display()
    );
    // The default config allows CONNECT to 443 only; the tests' targets
    // listen on free ports.
    if !setup.ports.is_empty() {
        let ports: Vec<String> = setup.ports.iter().map(u16::to_string).collect();
        conf.push_str(&format!(
            "acl test_ports port {}\nhttp_access deny CONNECT !test_ports\n",
            ports.join(" ")
        ));
    }
    if setup.auth {
        let htpasswd = dir.write("htpasswd", &format!("{USER}:{}\n", apr1(PASSWORD)?));
        set_mode(&htpasswd, 0o644);
        conf.push_str(&format!(
            "auth_param basic program {NCSA_AUTH} {}\n\
             auth_param basic children 1 startup=1 idle=1\n\
             auth_param basic realm wsprobe-test\n\
             acl authed proxy_auth REQUIRED\nhttp_access allow CONNECT authed\n",
            htpasswd.display()
        ));
    } else {
        conf.push_str("http_access allow CONNECT\n");
    }
    conf.push_str("http_access deny all\n");
    Some(conf)
}

/// An Apache MD5 password hash, as `htpasswd` writes it.
fn apr1(password: &str) -> Option<String> {
    let output = Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output();
    match output {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        _ => {
            skip_or_fail("no openssl to hash the squid password (apt-get install openssl)");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Record checks
// ---------------------------------------------------------------------------

fn ms(rec: &Record, key: &str) -> f64 {
    rec.timings()
        .get(key)
        .unwrap_or_else(|| panic!("meta.timings.{key} must be a number: {rec:#?}"))
}

/// The proxy's password (and its Basic encoding) appears nowhere.
fn assert_no_password(run: &Run) {
    for secret in [PASSWORD.to_owned(), basic(&format!("{USER}:{PASSWORD}"))] {
        assert!(
            !run.stdout.contains(&secret) && !run.stderr.contains(&secret),
            "the proxy password is printed: {run:#?}"
        );
    }
}

fn basic(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A run that opened through `proxy`: 101 from the target, the proxy's
/// address and URL in the record, and a CONNECT exchange that was timed.
fn assert_opened_through(run: &Run, proxy: &Proxy, credentials: bool) -> Record {
    let rec = run.record();
    let why = || format!("record: {rec:#?}\nstderr:\n{}\n{}", run.stderr, proxy.log());
    assert_eq!(rec.reason, None, "{}", why());
    assert_eq!(run.code, 0, "{}", why());
    assert_eq!(rec.meta.http_status, Some(101), "{}", why());
    assert_eq!(
        rec.meta.proxy.as_deref(),
        Some(&*proxy.shown(credentials)),
        "{}",
        why()
    );
    assert_eq!(rec.meta.proxy_status, None, "{}", why());
    assert_eq!(
        rec.meta.remote_addr,
        Some(format!("127.0.0.1:{}", proxy.port)),
        "remote_addr is the proxy's; {}",
        why()
    );
    assert!(ms(&rec, "proxy_ms") > 0.0, "{}", why());
    assert_eq!(rec.meta.close_clean, Some(true), "{}", why());
    assert_no_password(run);
    rec
}

/// A CONNECT the proxy refused with `status`.
fn assert_refused(run: &Run, proxy: &Proxy, status: u16) -> Record {
    let rec = run.record();
    let why = || format!("record: {rec:#?}\nstderr:\n{}\n{}", run.stderr, proxy.log());
    assert_eq!(rec.reason.as_deref(), Some("ws_open_failed"), "{}", why());
    assert_eq!(run.code, 1, "{}", why());
    assert_eq!(rec.meta.phase.as_deref(), Some("proxy"), "{}", why());
    assert_eq!(rec.meta.proxy_status, Some(status), "{}", why());
    assert_eq!(
        rec.meta.http_status,
        None,
        "the target never answered; {}",
        why()
    );
    let error = rec.meta.error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!(" {status} ")) && error.contains("HTTP/1."),
        "the status line is in meta.error; {}",
        why()
    );
    assert!(ms(&rec, "proxy_ms") > 0.0, "{}", why());
    assert!(rec.timings().upgrade_ms.is_none(), "{}", why());
    assert_no_password(run);
    rec
}

// ---------------------------------------------------------------------------
// Through tinyproxy and squid
// ---------------------------------------------------------------------------

/// ws:// and wss:// (verified against the test CA, by the target's name)
/// through `kind`, handshake and round trip.
fn ws_and_wss_through(kind: Kind) {
    let tls = TlsMaterial::generate();
    let Some(plain) = PyServer::start(&[]) else {
        return;
    };
    let Some(secure) = start_tls_server(&tls.good, &[]) else {
        return;
    };
    let Some(proxy) = Proxy::start(kind, &Setup::default()) else {
        return;
    };
    let url = proxy.url(None);

    let run = probe(&[&plain.ws_url("/"), "--proxy", &url, "--timeout-ms", "5000"]);
    let rec = assert_opened_through(&run, &proxy, false);
    assert!(rec.timings().tls_ms.is_none(), "{rec:#?}");

    let ca = tls.ca_pem.to_str().expect("utf-8 path");
    let wss = format!("wss://localhost:{}/", secure.port);
    let run = probe(&[
        &wss,
        "--proxy",
        &url,
        "--ca-file",
        ca,
        "--interpretation",
        "round_trip_latency",
        "--send",
        "through the tunnel",
        "--expect",
        "through the tunnel",
        "--timeout-ms",
        "5000",
    ]);
    let rec = assert_opened_through(&run, &proxy, false);
    assert_eq!(rec.meta.tls_verified, Some(true), "{rec:#?}");
    assert!(
        ms(&rec, "tls_ms") > 0.0 && ms(&rec, "rtt_ms") > 0.0,
        "{rec:#?}"
    );
}

#[test]
fn tinyproxy_carries_ws_and_wss() {
    ws_and_wss_through(Kind::Tinyproxy);
}

#[test]
fn squid_carries_ws_and_wss() {
    ws_and_wss_through(Kind::Squid);
}

/// Right credentials open; wrong ones get `wrong_status`, none 407.
fn basic_auth_through(kind: Kind, wrong_status: u16) {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let setup = Setup {
        auth: true,
        ..Setup::default()
    };
    let Some(proxy) = Proxy::start(kind, &setup) else {
        return;
    };
    let target = server.ws_url("/");

    let good = proxy.url(Some(&format!("{USER}:{PASSWORD}")));
    let run = probe(&[&target, "--proxy", &good, "--timeout-ms", "5000"]);
    assert_opened_through(&run, &proxy, true);
    let run = probe(&[&target, "--proxy", &good, "--human"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_no_password(&run);

    let wrong = proxy.url(Some(&format!("{USER}:not-{PASSWORD}")));
    let run = probe(&[&target, "--proxy", &wrong, "--timeout-ms", "5000"]);
    assert_refused(&run, &proxy, wrong_status);
    assert!(!run.stdout.contains("not-"), "{}", run.stdout);

    let run = probe(&[&target, "--proxy", &proxy.url(None), "--timeout-ms", "5000"]);
    assert_refused(&run, &proxy, 407);
}

#[test]
fn tinyproxy_basic_auth_is_accepted_and_wrong_credentials_get_401() {
    // tinyproxy answers wrong credentials with 401, none with 407.
    basic_auth_through(Kind::Tinyproxy, 401);
}

#[test]
fn squid_basic_auth_is_accepted_and_wrong_credentials_get_407() {
    basic_auth_through(Kind::Squid, 407);
}

/// A port outside the proxy's list gets 403; an allowed port with nothing
/// listening gets `down_status`.
fn refusals_of(kind: Kind, down_status: u16) {
    let Some(server) = PyServer::start(&[]) else {
        return;
    };
    let down = free_port();
    let setup = Setup {
        ports: vec![down],
        ..Setup::default()
    };
    let Some(proxy) = Proxy::start(kind, &setup) else {
        return;
    };
    let url = proxy.url(None);
    let run = probe(&[&server.ws_url("/"), "--proxy", &url, "--timeout-ms", "5000"]);
    assert_refused(&run, &proxy, 403);
    let run = probe(&[&format!("ws://127.0.0.1:{down}/"), "--proxy", &url]);
    assert_refused(&run, &proxy, down_status);
}

#[test]
fn tinyproxy_refuses_a_forbidden_port_with_403_and_a_dead_target_with_500() {
    refusals_of(Kind::Tinyproxy, 500);
}

#[test]
fn squid_refuses_a_forbidden_port_with_403_and_a_dead_target_with_503() {
    refusals_of(Kind::Squid, 503);
}

#[test]
fn timings_through_a_proxy_add_up_to_the_open() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.good, &[]) else {
        return;
    };
    let Some(proxy) = Proxy::start(Kind::Tinyproxy, &Setup::default()) else {
        return;
    };
    // The proxy by name: dns_ms is its resolution (the target's name is
    // the proxy's to resolve).
    let url = format!("http://localhost:{}", proxy.port);
    let run = probe(&[
        &format!("wss://127.0.0.1:{}/", server.port),
        "--proxy",
        &url,
        "--ca-file",
        tls.ca_pem.to_str().expect("utf-8 path"),
        "--timeout-ms",
        "5000",
    ]);
    let rec = run.record();
    assert_eq!(rec.reason, None, "{rec:#?}\n{}", proxy.log());
    assert_eq!(rec.meta.proxy.as_deref(), Some(&*url));
    let phases: f64 = ["dns_ms", "connect_ms", "proxy_ms", "tls_ms", "upgrade_ms"]
        .iter()
        .map(|phase| ms(&rec, phase))
        .sum();
    let open = ms(&rec, "open_ms");
    // Rounded to the microsecond each; the gaps between phases are CPU only.
    assert!(
        phases <= open + 0.005,
        "phases {phases} > open {open}: {rec:#?}"
    );
    assert!(
        open - phases < 25.0,
        "phases {phases} leave most of open {open}: {rec:#?}"
    );
    assert!((rec.value.unwrap() - open).abs() < 0.002, "{rec:#?}");
}

#[test]
fn the_target_name_is_verified_through_the_tunnel_not_the_proxy_name() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.wrong_name, &[]) else {
        return;
    };
    let Some(proxy) = Proxy::start(Kind::Tinyproxy, &Setup::default()) else {
        return;
    };
    let url = format!("wss://127.0.0.1:{}/", server.port);
    let ca = tls.ca_pem.to_str().expect("utf-8 path");
    let via = proxy.url(None);
    let run = probe(&[&url, "--proxy", &via, "--ca-file", ca]);
    let rec = run.record();
    assert_eq!(rec.reason.as_deref(), Some("ws_open_failed"), "{rec:#?}");
    assert_eq!(rec.meta.phase.as_deref(), Some("tls"), "{rec:#?}");
    assert!(
        ms(&rec, "proxy_ms") > 0.0,
        "the tunnel opened first: {rec:#?}"
    );
    // The name the certificate holds, sent in SNI and checked: it opens.
    let run = probe(&[
        &url,
        "--proxy",
        &via,
        "--ca-file",
        ca,
        "--server-name",
        WRONG_NAME,
    ]);
    assert_opened_through(&run, &proxy, false);
}

#[test]
fn env_takes_the_proxy_from_https_proxy_and_honours_no_proxy() {
    let tls = TlsMaterial::generate();
    let Some(server) = start_tls_server(&tls.good, &[]) else {
        return;
    };
    let Some(proxy) = Proxy::start(Kind::Tinyproxy, &Setup::default()) else {
        return;
    };
    let url = format!("wss://localhost:{}/", server.port);
    let ca = tls.ca_pem.to_str().expect("utf-8 path");
    let with_env = |vars: &[(&str, &str)]| {
        let mut command = support::wsprobe();
        command.args(["probe", &url, "--proxy", "env", "--ca-file", ca]);
        for name in [
            "https_proxy",
            "HTTPS_PROXY",
            "http_proxy",
            "no_proxy",
            "NO_PROXY",
        ] {
            command.env_remove(name);
        }
        command.envs(vars.iter().copied());
        support::run_command(command)
    };
    let proxy_url = format!("{USER}:{PASSWORD}@127.0.0.1:{}", proxy.port);
    let run = with_env(&[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "example.com")]);
    assert_opened_through(&run, &proxy, true);

    let run = with_env(&[("HTTPS_PROXY", &proxy_url), ("no_proxy", ".localhost")]);
    let rec = run.record();
    assert_eq!(rec.reason, None, "{rec:#?}");
    assert_eq!(rec.meta.proxy, None, "no_proxy lists localhost: {rec:#?}");
    assert!(rec.timings().proxy_ms.is_none(), "{rec:#?}");

    let run = with_env(&[("http_proxy", &proxy_url)]);
    assert_eq!(
        run.record().meta.proxy,
        None,
        "http_proxy is for ws:// only"
    );
    assert!(
        run.stderr
            .contains("neither https_proxy nor HTTPS_PROXY is set"),
        "{run:#?}"
    );
    assert_no_password(&run);
}

// ---------------------------------------------------------------------------
// What no real proxy does on purpose
// ---------------------------------------------------------------------------

#[test]
fn a_proxy_that_says_nothing_is_a_handshake_timeout_in_phase_proxy() {
    let server = silent_after_tcp_server();
    let via = format!("http://127.0.0.1:{}", server.port);
    let run = probe(&["ws://192.0.2.1/", "--proxy", &via, "--timeout-ms", "400"]);
    let rec = run.record();
    assert_eq!(
        rec.reason.as_deref(),
        Some("ws_handshake_timeout"),
        "{rec:#?}"
    );
    assert_eq!(rec.meta.phase.as_deref(), Some("proxy"), "{rec:#?}");
    let waited = ms(&rec, "proxy_ms");
    assert!((300.0..1500.0).contains(&waited), "{rec:#?}");
    assert_eq!(rec.meta.proxy_status, None);
}

#[test]
fn a_proxy_that_is_not_there_fails_the_connect_and_says_it_was_the_proxy() {
    let via = format!("http://127.0.0.1:{}", free_port());
    let run = probe(&["ws://192.0.2.1/", "--proxy", &via]);
    let rec = run.record();
    assert_eq!(rec.reason.as_deref(), Some("ws_open_failed"), "{rec:#?}");
    assert_eq!(rec.meta.phase.as_deref(), Some("connect"), "{rec:#?}");
    assert_eq!(rec.meta.proxy.as_deref(), Some(&*via));
    let error = rec.meta.error.clone().unwrap_or_default();
    assert!(error.starts_with("to the proxy: "), "{error}");
    assert!(rec.timings().proxy_ms.is_none());
}

/// A fake proxy: reads the CONNECT head, hands it over, answers `answer`,
/// then holds the connection until the client is done.
fn fake_proxy(answer: &'static [u8]) -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let head = read_request_head(&mut stream).unwrap_or_default();
        let _ = tx.send(head);
        let _ = stream.write_all(answer);
        let _ = stream.read_to_end(&mut Vec::new());
    });
    (port, rx)
}

#[test]
fn the_connect_request_names_the_target_and_carries_decoded_credentials() {
    let (port, heads) = fake_proxy(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
    let via = format!("http://al%40ice:p%3Ass@127.0.0.1:{port}");
    let run = probe(&["wss://stream.example:8443/x?y", "--proxy", &via]);
    let head = heads
        .recv_timeout(Duration::from_secs(5))
        .expect("a CONNECT");
    assert!(
        head.starts_with("CONNECT stream.example:8443 HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nhost: stream.example:8443\r\n"),
        "{head}"
    );
    let credentials = format!("proxy-authorization: basic {}\r\n", basic("al@ice:p:ss"));
    assert!(lower.contains(&credentials.to_ascii_lowercase()), "{head}");
    let rec = run.record();
    assert_eq!(rec.meta.proxy_status, Some(407), "{rec:#?}");
    assert_eq!(
        rec.meta.proxy.as_deref(),
        Some(&*format!("http://REDACTED@127.0.0.1:{port}"))
    );
    assert!(!run.stdout.contains("p%3Ass") && !run.stderr.contains("p%3Ass"));
}

#[test]
fn bytes_past_the_2xx_before_the_client_spoke_fail_the_tunnel() {
    let (port, _heads) = fake_proxy(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 101 ");
    let via = format!("http://127.0.0.1:{port}");
    let run = probe(&["ws://192.0.2.1/", "--proxy", &via]);
    let rec = run.record();
    assert_eq!(rec.reason.as_deref(), Some("ws_open_failed"), "{rec:#?}");
    assert_eq!(rec.meta.phase.as_deref(), Some("proxy"), "{rec:#?}");
    assert_eq!(rec.meta.proxy_status, None, "{rec:#?}");
    assert!(rec.meta.error.unwrap_or_default().contains("past its 2xx"));
}
