//! The Prometheus outputs against the real tools from Debian 12:
//! `promtool check metrics` on the `.prom` file and on `/metrics`,
//! node_exporter's textfile collector reading the file, a Prometheus
//! server scraping `/metrics` every second and answering queries (and
//! every panel query of dist/grafana/wsprobe.json and every alert of
//! dist/prometheus/wsprobe-alerts.yml), `/metrics` under hostile
//! clients, and a reload that changes the probes and the address.
//!
//! The tools are started by the tests on 127.0.0.1 with flags or configs
//! written here, never as services. Without them a test is skipped with
//! the reason printed, except under CI=true, where it fails.

mod promsupport;
mod pysupport;
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use promsupport::*;
use pysupport::{start_tls_server, TlsMaterial};
use support::*;

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/grafana/wsprobe.json");
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dist/prometheus/wsprobe-alerts.yml"
);

/// Writes a config for `probes` with these outputs; returns its path.
fn config(dir: &TempDir, output: Value, probes: Value) -> std::path::PathBuf {
    let config = json!({
        "labels": {"site": "lab"},
        "defaults": {"timeout_ms": 1000},
        "output": output,
        "probes": probes,
    });
    dir.write("wsprobe.json", &config.to_string())
}

/// `promtool check metrics` on `text`; panics with its output unless 0.
fn promtool_check_metrics(promtool: &Path, text: &str, what: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}\n{}{}\n--- input:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The file once it holds a run of `probe` (rewritten at most once a second).
fn wait_for_run_in_file(path: &Path, probe: &str) -> String {
    poll(
        &format!("a run of {probe} in {}", path.display()),
        READY_WAIT,
        || {
            let text = std::fs::read_to_string(path).ok()?;
            value_of(
                &samples(&text),
                "wsprobe_probe_success",
                &[("probe", probe)],
            )
            .map(|_| text)
        },
    )
}

#[test]
fn the_textfile_and_metrics_pass_promtool_and_node_exporter_reads_the_file() {
    let (Some(promtool), Some(node_exporter)) = (tool(PROMTOOL), tool(NODE_EXPORTER)) else {
        return;
    };
    let server = echo_server();
    let dir = TempDir::new("wsprobe-prom");
    let prom = dir.join("wsprobe.prom");
    let cfg = config(
        &dir,
        json!({"ndjson": null, "prometheus_textfile": prom, "prometheus_listen": "127.0.0.1:0"}),
        json!([
            {"name": "echo", "url": server.url(), "interpretation": "round_trip_latency",
             "send_message": "ping", "interval_ms": 1000, "labels": {"path": "a \"quoted\" \\ one"}},
            {"name": "down", "url": format!("ws://127.0.0.1:{}/", free_port()),
             "interval_ms": 1000, "timeout_ms": 500},
        ]),
    );
    let mut agent = Agent::start(&cfg, Stdio::null());
    let addr = agent.metrics_addr(0);
    let text = wait_for_run_in_file(&prom, "echo");
    promtool_check_metrics(&promtool, &text, "the .prom file");

    // Readable by others, and nothing else in the directory that a
    // collector reading *.prom could take for a file.
    let mode = std::fs::metadata(&prom).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "mode of {}", prom.display());
    for entry in std::fs::read_dir(&dir.path).expect("read dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        assert!(
            name == "wsprobe.prom" || !name.ends_with(".prom"),
            "stray file {name}"
        );
    }

    let answer = get(&addr, "/metrics").expect("GET /metrics");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    promtool_check_metrics(&promtool, &answer.body, "/metrics");
    let scraped = samples(&answer.body);
    assert_eq!(
        value_of(&scraped, "wsprobe_probe_success", &[("probe", "echo")]),
        Some(1.0)
    );
    // Every reason's counter exists from the start, for rate().
    for reason in [
        "none",
        "ws_open_failed",
        "ws_handshake_timeout",
        "ws_reply_timeout",
        "ws_closed_early",
        "ws_reply_mismatch",
    ] {
        let with = [("probe", "echo"), ("reason", reason), ("site", "lab")];
        assert!(
            value_of(&scraped, "wsprobe_probe_runs_total", &with).is_some(),
            "no runs_total for reason {reason}:\n{}",
            answer.body
        );
    }

    // node_exporter 1.5 with only its textfile collector, on our directory.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _exporter = Process(
        Command::new(node_exporter)
            .arg(format!("--web.listen-address={listen}"))
            .arg(format!(
                "--collector.textfile.directory={}",
                dir.path.display()
            ))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node_exporter"),
    );
    let body = poll("node_exporter's /metrics", READY_WAIT, || {
        let answer = get(&listen, "/metrics").ok()?;
        (answer.status == 200 && answer.body.contains("wsprobe_")).then_some(answer.body)
    });
    let exported = samples(&body);
    assert_eq!(
        value_of(&exported, "node_textfile_scrape_error", &[]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        value_of(
            &exported,
            "wsprobe_probe_success",
            &[("probe", "echo"), ("site", "lab")]
        ),
        Some(1.0),
        "{body}"
    );
    assert!(
        value_of(
            &exported,
            "wsprobe_probe_latency_seconds_count",
            &[("probe", "echo")]
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );
}

/// A Prometheus server on 127.0.0.1, scraping `target` every second and
/// evaluating the alert rules, killed on drop.
struct PrometheusServer {
    _process: Process,
    _dir: TempDir,
    addr: String,
}

impl PrometheusServer {
    fn start(binary: &Path, target: &str) -> PrometheusServer {
        let dir = TempDir::new("wsprobe-prometheus");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {ALERTS}\n\
             scrape_configs:\n  - job_name: wsprobe\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config = dir.write("prometheus.yml", &config);
        let addr = format!("127.0.0.1:{}", free_port());
        let process = Process(
            Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prometheus"),
        );
        poll("Prometheus ready", READY_WAIT, || {
            get(&addr, "/-/ready").ok().filter(|a| a.status == 200)
        });
        PrometheusServer {
            _process: process,
            _dir: dir,
            addr,
        }
    }

    /// `/api/v1/query`: the result vector, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let answer = get(&self.addr, &path).map_err(|e| e.to_string())?;
        let body: Value =
            serde_json::from_str(&answer.body).map_err(|e| format!("{e}: {}", answer.body))?;
        if body["status"] != "success" {
            return Err(format!("{expr}: {}", answer.body));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The results of `expr` once there are any.
    fn query_nonempty(&self, expr: &str) -> Vec<Value> {
        poll(&format!("a result for {expr}"), READY_WAIT, || {
            self.query(expr).ok().filter(|r| !r.is_empty())
        })
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn number(result: &Value) -> f64 {
    result["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A panel query as Grafana would send it, its variables filled in.
fn grafana_expr(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        .replace("$probe", ".*")
}

/// Each `expr:` of the rules file with its alert's name.
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(ALERTS).expect("read the alerts");
    let mut alerts = Vec::new();
    let mut name = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = n.to_owned();
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            alerts.push((name.clone(), expr.to_owned()));
        }
    }
    alerts
}

#[test]
fn prometheus_scrapes_the_agent_and_the_dashboard_and_alerts_find_data() {
    let (Some(prometheus), Some(promtool)) = (tool(PROMETHEUS), tool(PROMTOOL)) else {
        return;
    };
    let tls = TlsMaterial::generate();
    // Expires in a week: the certificate alert must fire.
    let leaf = tls.leaf_expiring_in("week", 7 * 86_400);
    let Some(tls_server) = start_tls_server(&leaf, &[]) else {
        return;
    };
    let echo = echo_server();
    let dir = TempDir::new("wsprobe-prom");
    let cfg = config(
        &dir,
        json!({"ndjson": null, "prometheus_listen": "127.0.0.1:0"}),
        json!([
            // Every run is above its 0 ms threshold: the latency alert fires.
            {"name": "echo", "url": echo.url(), "interpretation": "round_trip_latency",
             "send_message": "ping", "interval_ms": 1000,
             "thresholds": {"healthy_below": 0, "unhealthy_above": 0}},
            {"name": "down", "url": format!("ws://127.0.0.1:{}/", free_port()),
             "interval_ms": 1000, "timeout_ms": 500},
            {"name": "tls", "url": tls_server.wss_url("/"), "interval_ms": 1000,
             "tls": {"ca_file": tls.ca_pem}},
        ]),
    );
    let mut agent = Agent::start(&cfg, Stdio::null());
    let target = agent.metrics_addr(0);
    let server = PrometheusServer::start(&prometheus, &target);

    // Enough scrapes of runs for rate() and the quantiles.
    server.query_nonempty("count_over_time(wsprobe_probe_success{probe=\"echo\"}[1m]) >= 4");

    let success = server.query_nonempty("wsprobe_probe_success");
    let of = |probe: &str| {
        success
            .iter()
            .find(|r| r["metric"]["probe"] == probe)
            .map(number)
    };
    assert_eq!(of("echo"), Some(1.0), "{success:?}");
    assert_eq!(of("down"), Some(0.0), "{success:?}");
    assert_eq!(of("tls"), Some(1.0), "{success:?}");

    let by_reason = server
        .query_nonempty("sum by (reason) (rate(wsprobe_probe_runs_total{probe=\"down\"}[30s]))");
    let failing = by_reason
        .iter()
        .find(|r| r["metric"]["reason"] == "ws_open_failed")
        .map(number);
    assert!(failing.is_some_and(|r| r > 0.0), "{by_reason:?}");
    assert_eq!(by_reason.len(), 6, "one series per reason: {by_reason:?}");

    let median = server.query_nonempty(
        "histogram_quantile(0.5, sum by (le) (rate(wsprobe_probe_latency_seconds_bucket{probe=\"echo\"}[30s])))",
    );
    let median = number(&median[0]);
    assert!(
        median > 0.0 && median <= 0.1,
        "median round trip {median} s"
    );

    // Every panel of the dashboard has data.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 5);
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = grafana_expr(target["expr"].as_str().expect("expr"));
            let result = server.query(&expr);
            assert!(
                result.as_ref().is_ok_and(|r| !r.is_empty()),
                "panel {:?}: {expr}: {result:?}",
                panel["title"]
            );
        }
    }

    // Every alert is valid; those this setup provokes fire, and the
    // others' measured side has data.
    let check = Command::new(&promtool)
        .args(["check", "rules", ALERTS])
        .output()
        .expect("promtool check rules");
    assert!(check.status.success(), "{check:?}");
    let alerts = alert_exprs();
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    for (name, expr) in alerts {
        let firing = matches!(
            name.as_str(),
            "WsprobeProbeDown" | "WsprobeLatencyHigh" | "WsprobeCertificateExpiringSoon"
        );
        let expr = if firing {
            expr
        } else {
            let (measured, _) = expr.split_once(" > ").expect("a comparison");
            measured.to_owned()
        };
        let result = server.query(&expr);
        assert!(
            result.as_ref().is_ok_and(|r| !r.is_empty()),
            "alert {name}: {expr}: {result:?}"
        );
    }
    // The certificate's notAfter is the week-long leaf's (within a minute).
    let days = number(
        &server.query_nonempty(
            "(wsprobe_probe_tls_cert_not_after_timestamp_seconds - time()) / 86400",
        )[0],
    );
    assert!((6.99..=7.0).contains(&days), "{days} days left");
}

#[test]
fn hostile_clients_do_not_stop_metrics_or_probing() {
    let server = echo_server();
    let dir = TempDir::new("wsprobe-prom");
    let cfg = config(
        &dir,
        json!({"ndjson": null, "prometheus_listen": "127.0.0.1:0"}),
        json!([{"name": "echo", "url": server.url(), "interval_ms": 1000}]),
    );
    let mut agent = Agent::start(&cfg, Stdio::null());
    let addr = agent.metrics_addr(0);
    let runs = |addr: &str| {
        let answer = get(addr, "/metrics").expect("GET /metrics");
        assert_eq!(answer.status, 200, "{answer:?}");
        value_of(
            &samples(&answer.body),
            "wsprobe_probe_runs_total",
            &[("reason", "none")],
        )
        .expect("runs_total")
    };
    let first = poll("a first run", READY_WAIT, || {
        Some(runs(&addr)).filter(|n| *n >= 1.0)
    });

    // A client that connects and says nothing holds the endpoint for its
    // request deadline at most; the next scrape is answered after it.
    let _silent = TcpStream::connect(&addr).expect("connect");
    let oversized = exchange(&addr, &vec![b'A'; 64 * 1024]).expect("oversized");
    assert_eq!(oversized.status, 431, "{oversized:?}");
    let garbage = exchange(&addr, b"\x16\x03\x01\x02\x00\x01\xff\xfe\r\n\r\n").expect("garbage");
    assert_eq!(garbage.status, 400, "{garbage:?}");
    let post = exchange(&addr, b"POST /metrics HTTP/1.1\r\n\r\n").expect("post");
    assert_eq!(post.status, 405, "{post:?}");
    let other = get(&addr, "/other").expect("GET /other");
    assert_eq!(other.status, 404, "{other:?}");
    let root = get(&addr, "/").expect("GET /");
    assert!(
        root.status == 200 && root.body.contains("/metrics"),
        "{root:?}"
    );

    // Probing went on meanwhile, and the scrape still works.
    poll("runs after the hostile clients", READY_WAIT, || {
        Some(runs(&addr)).filter(|n| *n >= first + 2.0)
    });
}

#[test]
fn a_reload_rewrites_the_file_for_the_new_probes_and_rebinds_a_changed_address() {
    let server = echo_server();
    let dir = TempDir::new("wsprobe-prom");
    let prom = dir.join("wsprobe.prom");
    let probes = json!([
        {"name": "a", "url": server.url(), "interval_ms": 1000},
        {"name": "b", "url": server.url(), "interval_ms": 1000},
    ]);
    let cfg = config(
        &dir,
        json!({"ndjson": null, "prometheus_textfile": prom, "prometheus_listen": "127.0.0.1:0"}),
        probes,
    );
    let mut agent = Agent::start(&cfg, Stdio::null());
    let old_addr = agent.metrics_addr(0);
    wait_for_run_in_file(&prom, "b");

    let mark = agent.log.len();
    config(
        &dir,
        json!({"ndjson": null, "prometheus_textfile": prom, "prometheus_listen": "localhost:0"}),
        json!([{"name": "a", "url": server.url(), "interval_ms": 1000}]),
    );
    agent.signal(libc::SIGHUP);
    let new_addr = agent.metrics_addr(mark);
    agent.wait_log(mark, "reporting the reload", |l| {
        l.starts_with("wsprobe: reload: 1 probe(s)")
    });

    let text = poll("b gone from the file", READY_WAIT, || {
        let text = std::fs::read_to_string(&prom).ok()?;
        (!text.contains("probe=\"b\"")).then_some(text)
    });
    assert!(text.contains("probe=\"a\""), "{text}");
    let scraped = samples(&get(&new_addr, "/metrics").expect("new address").body);
    assert_eq!(
        value_of(
            &scraped,
            "wsprobe_config_reloads_total",
            &[("result", "ok")]
        ),
        Some(1.0)
    );
    assert!(value_of(&scraped, "wsprobe_probe_runs_total", &[("probe", "b")]).is_none());
    // The old listener closes once its thread has seen the stop.
    poll("the old address closed", READY_WAIT, || {
        TcpStream::connect(&old_addr).is_err().then_some(())
    });
}

#[test]
fn an_address_that_cannot_be_bound_at_start_stops_the_agent_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = TempDir::new("wsprobe-prom");
    let cfg = config(
        &dir,
        json!({"prometheus_listen": addr}),
        json!([{"name": "a", "url": "ws://127.0.0.1:9/", "interval_ms": 1000}]),
    );
    let out = wsprobe()
        .args(["run", "-c"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run wsprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "output.prometheus_listen: cannot listen on {addr}"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
