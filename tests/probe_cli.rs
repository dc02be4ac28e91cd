//! `wsprobe probe` as a command: the record's wire form (SPEC.md, "The
//! record"), exit codes, `--count`, `--human`, usage errors and redaction.

mod support;

use std::net::TcpListener;

use support::*;

const RT: &str = "round_trip_latency";
const CS: &str = "connection_success";

/// One success and one failure record, each with the run that made it.
fn success_and_failure() -> Vec<(Record, Run)> {
    let server = echo_server();
    let ok = probe_one(&[
        &server.url(),
        "--interpretation",
        RT,
        "--send",
        "ping",
        "--timeout-ms",
        "2000",
    ]);
    let port = free_port();
    let failed = probe_one(&[&format!("ws://127.0.0.1:{port}/"), "--timeout-ms", "2000"]);
    assert!(ok.0.reason.is_none(), "{:#?}\n{}", ok.0, ok.1.stderr);
    assert!(failed.0.reason.is_some(), "{:#?}", failed.0);
    vec![ok, failed]
}

#[test]
fn value_and_timings_have_at_most_3_decimals() {
    for (r, _) in success_and_failure() {
        if let Some(v) = r.value {
            assert!(has_at_most_3_decimals(v), "value {v}");
        }
        for (name, v) in r.timings().all() {
            if let Some(v) = v {
                assert!(has_at_most_3_decimals(v), "{name} {v}");
                assert!(v >= 0.0, "{name} {v}");
            }
        }
    }
}

#[test]
fn ts_is_rfc3339_utc_with_milliseconds_at_the_run_start() {
    let before = now_millis();
    let runs = success_and_failure();
    let after = now_millis();
    for (r, _) in runs {
        let ts = parse_ts_millis(&r.ts)
            .unwrap_or_else(|| panic!("ts {:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ", r.ts));
        assert_eq!(
            r.meta.clock_unsynced, None,
            "this machine's clock is set: {r:#?}"
        );
        // Millisecond truncation may put ts up to 1 ms before `before`.
        assert!(
            ts >= before - 1 && ts <= after,
            "ts {} is not within this run ({before}..{after})",
            r.ts
        );
    }
}

#[test]
fn raw_record_shape() {
    for (_, run) in success_and_failure() {
        for raw in run.raw_records() {
            let obj = raw.as_object().expect("a record is a JSON object");
            for key in ["value", "reason"] {
                assert!(obj.contains_key(key), "`{key}` is always present: {raw}");
            }
            assert!(
                obj.get("labels").is_some_and(|l| l.is_object()),
                "labels is an object: {raw}"
            );
            for (key, v) in obj {
                if key != "value" && key != "reason" {
                    assert!(!v.is_null(), "`{key}` is null: {raw}");
                }
            }
            let meta = obj
                .get("meta")
                .and_then(|m| m.as_object())
                .expect("meta object");
            assert!(
                !contains_null(&serde_json::Value::Object(meta.clone())),
                "meta has no null placeholders: {raw}"
            );
        }
    }
}

fn contains_null(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.iter().any(contains_null),
        serde_json::Value::Object(o) => o.values().any(contains_null),
        _ => false,
    }
}

#[test]
fn count_3_back_to_back_gives_3_records() {
    let server = echo_server();
    let url = server.url();
    let run = probe(&[
        &url,
        "--count",
        "3",
        "--interval-ms",
        "0",
        "--timeout-ms",
        "2000",
    ]);
    let records = run.records();
    assert_eq!(
        records.len(),
        3,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    for r in &records {
        assert_eq!(r.reason, None, "{r:#?}");
        assert_eq!(r.probe, "probe");
        assert!(r.value.is_some());
    }
    let ts: Vec<i64> = records
        .iter()
        .map(|r| parse_ts_millis(&r.ts).expect("ts"))
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "ts in run order: {ts:?}"
    );
    for _ in 0..3 {
        let (code, _) = server.client_close();
        assert_eq!(code, Some(1000));
    }
}

#[test]
fn count_with_failures_exits_1_with_every_record() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let run = probe(&[
        &url,
        "--count",
        "2",
        "--interval-ms",
        "0",
        "--interpretation",
        CS,
    ]);
    let records = run.records();
    assert_eq!(records.len(), 2, "stdout:\n{}", run.stdout);
    assert_exit_matches(&records, &run);
    assert_eq!(run.code, 1);
    for r in &records {
        assert_eq!(r.reason.as_deref(), Some("ws_open_failed"));
        assert_eq!(r.value, Some(0.0));
    }
}

#[test]
fn human_prints_readable_lines_and_a_summary() {
    let server = echo_server();
    let url = server.url();
    let run = probe(&[
        &url,
        "--human",
        "--count",
        "2",
        "--interval-ms",
        "0",
        "--timeout-ms",
        "2000",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.len() >= 3,
        "one line per run and a summary:\n{}",
        run.stdout
    );
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "--human prints readable lines, not JSON: {line}"
        );
    }
}

#[test]
fn human_failure_names_the_reason_and_exits_1() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let run = probe(&[&url, "--human", "--timeout-ms", "2000"]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("ws_open_failed"),
        "the readable line names the reason:\n{}",
        run.stdout
    );
}

#[test]
fn usage_errors_exit_2_start_nothing_and_print_no_record() {
    // Every URL points at a listener that must never see a connection.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/socket");
    let fragment = format!("ws://127.0.0.1:{port}/socket#frag");
    let http = format!("http://127.0.0.1:{port}/socket");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("unknown flag", vec![&url, "--bogus"]),
        ("no URL", vec![]),
        (
            "unknown interpretation",
            vec![&url, "--interpretation", "nope"],
        ),
        ("timeout below 100", vec![&url, "--timeout-ms", "50"]),
        ("timeout above 30000", vec![&url, "--timeout-ms", "30001"]),
        ("timeout not a number", vec![&url, "--timeout-ms", "soon"]),
        (
            "round trip without send",
            vec![&url, "--interpretation", RT],
        ),
        ("send on handshake_latency", vec![&url, "--send", "x"]),
        (
            "expect on connection_success",
            vec![&url, "--interpretation", CS, "--expect", "x"],
        ),
        ("http scheme", vec![&http]),
        ("URL with a fragment", vec![&fragment]),
        ("port out of range", vec!["ws://127.0.0.1:99999/"]),
        (
            "handshake header",
            vec![&url, "--header", "Sec-WebSocket-Key: abc"],
        ),
        ("Host header", vec![&url, "--header", "Host: example.com"]),
        (
            "header without colon",
            vec![&url, "--header", "NoColonHere"],
        ),
        (
            "header name not a token",
            vec![&url, "--header", "Bad Name: x"],
        ),
        (
            "duplicate protocol",
            vec![&url, "--protocol", "chat", "--protocol", "chat"],
        ),
        ("protocol not a token", vec![&url, "--protocol", "a b"]),
        ("tls option on ws://", vec![&url, "--insecure"]),
    ];
    let mut failures = Vec::new();
    for (what, args) in &cases {
        let mut args = args.clone();
        // A wrongly started probe then fails in 1 s, not the default 10 s.
        if !args.is_empty() && !args.contains(&"--timeout-ms") {
            args.extend(["--timeout-ms", "1000"]);
        }
        let run = probe(&args);
        if run.code != 2 || !run.stdout.is_empty() || run.stderr.trim().is_empty() {
            failures.push(format!(
                "{what}: {args:?} -> exit {}, stdout {:?}, stderr {:?}",
                run.code, run.stdout, run.stderr
            ));
        }
    }
    let contacted = listener.accept().is_ok();
    assert!(
        failures.is_empty(),
        "usage errors mishandled:\n{}",
        failures.join("\n")
    );
    assert!(!contacted, "a usage error still connected to the endpoint");
}

#[test]
fn unknown_flag_exits_2_with_nothing_on_stdout() {
    let run = run(&["probe", "ws://127.0.0.1:1/", "--no-such-flag"]);
    assert_eq!(run.code, 2, "stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout: {:?}", run.stdout);
    assert!(
        !run.stderr.trim().is_empty(),
        "the problem is explained on stderr"
    );
}

#[test]
fn refused_header_value_is_never_written() {
    let run = probe(&[
        "ws://127.0.0.1:1/",
        "--header",
        "Connection: topsecretvalue77",
    ]);
    assert_eq!(run.code, 2, "stderr:\n{}", run.stderr);
    assert!(
        !run.stderr.contains("topsecretvalue77") && !run.stdout.contains("topsecretvalue77"),
        "header values are never written:\n{}",
        run.stderr
    );
}

#[test]
fn authorization_header_is_sent_but_never_written() {
    let server = http_status_server("401 Unauthorized", String::new());
    let url = server.url();
    let (r, run) = probe_one(&[
        &url,
        "--header",
        "Authorization: Bearer hdrsecret42",
        "--timeout-ms",
        "2000",
    ]);
    assert_eq!(r.reason.as_deref(), Some("ws_open_failed"));
    let (_, headers) = server.request();
    assert_eq!(
        header(&headers, "authorization"),
        Some("Bearer hdrsecret42")
    );
    assert!(
        !run.stdout.contains("hdrsecret42") && !run.stderr.contains("hdrsecret42"),
        "a header value reached the output:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn url_secrets_are_redacted_in_the_record() {
    let server = echo_server();
    let url = format!(
        "ws://alice:hunter2pw@127.0.0.1:{}/socket?access_token=tok123secret&room=5&Sig=sig456",
        server.port
    );
    let (r, run) = probe_one(&[&url, "--timeout-ms", "2000"]);
    assert_eq!(r.reason, None, "{r:#?}\n{}", run.stderr);
    assert_eq!(
        r.url,
        format!(
            "ws://REDACTED@127.0.0.1:{}/socket?access_token=REDACTED&room=5&Sig=REDACTED",
            server.port
        )
    );
    for secret in ["hunter2pw", "tok123secret", "sig456"] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{secret} reached the output"
        );
    }
    let (path, _) = server.request();
    assert_eq!(
        path, "/socket?access_token=tok123secret&room=5&Sig=sig456",
        "the real query is still sent"
    );
}

#[test]
fn probe_records_carry_the_probe_fields() {
    let server = echo_server();
    let url = server.url();
    let run = probe(&[&url, "--interpretation", CS, "--timeout-ms", "2000"]);
    let records = run.records();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.probe, "probe", "the ad-hoc probe's name is `probe`");
    assert_eq!(r.url, url);
    assert_eq!(r.interpretation, CS);
    assert!(r.labels.is_empty(), "no labels were set: {r:#?}");
}

#[test]
fn human_prints_its_summary_when_interrupted() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let server = echo_server();
    let mut child = wsprobe()
        .args([
            "probe",
            &server.url(),
            "--count",
            "1000",
            "--interval-ms",
            "100",
            "--human",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wsprobe");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    // The header, then two runs: only then interrupt, as a person would.
    while lines.len() < 3 {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).expect("read") > 0, "{lines:?}");
        lines.push(line);
    }
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read the rest");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "every run so far succeeded: {rest}");
    assert!(
        rest.contains(" runs, ") && rest.contains("0 failed"),
        "{rest}"
    );
    assert!(rest.contains("min/avg/max/mdev"), "{rest}");
}

#[test]
fn a_record_that_cannot_be_written_is_reported_and_fails_the_run() {
    use std::process::Stdio;

    // A full disk, not a closed pipe: the record is lost, and that must be
    // said and seen in the exit code even though the probe succeeded.
    let server = echo_server();
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return skip_or_fail("no /dev/full to write to");
    };
    let output = wsprobe()
        .args(["probe", &server.url(), "--timeout-ms", "2000"])
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .expect("run wsprobe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write a record"), "{stderr}");
}

#[test]
fn a_reader_that_stops_early_ends_it_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let server = echo_server();
    for args in [
        vec!["--help"],
        vec![
            "probe",
            &server.url(),
            "--count",
            "50",
            "--interval-ms",
            "0",
        ],
        vec![
            "probe",
            &server.url(),
            "--count",
            "50",
            "--interval-ms",
            "0",
            "--human",
        ],
    ] {
        let mut child = wsprobe()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsprobe");
        // Like `| head -1`: one line, then the pipe is closed.
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read a line");
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{args:?}: {:?} {stderr}",
            output.status
        );
    }
}

#[test]
fn connection_success_is_a_plain_1_or_0() {
    let server = echo_server();
    let refused = format!("ws://127.0.0.1:{}/", free_port());
    for (url, expected) in [(server.url(), 1u64), (refused, 0)] {
        let run = probe(&[&url, "--interpretation", CS, "--timeout-ms", "2000"]);
        let raw = run.raw_records();
        assert_eq!(raw.len(), 1, "{}", run.stdout);
        assert_eq!(raw[0]["value"].as_u64(), Some(expected), "{}", run.stdout);
    }
}
