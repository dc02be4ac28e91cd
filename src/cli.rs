//! The command line: subcommands, and the flags of `wsprobe probe`.
//!
//! Parsing happens in two stages, as in ripgrep: here argv becomes a
//! `Command` with raw values; the probe flags become a JSON object of probe
//! fields that `config` validates with exactly the rules of the file.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::reflect;

pub const USAGE: &str = "\
wsprobe: a WebSocket probe agent

usage:
  wsprobe run    [-c FILE]               every probe on its interval, until SIGTERM/SIGINT
  wsprobe check  [-c FILE]               validate the config (exit 0 valid, 2 invalid)
  wsprobe once   [-c FILE] [-p NAME]...  run each (or each named) probe once, print records
  wsprobe probe  URL [flags]             one ad-hoc probe, print the record
  wsprobe reflect --listen ADDR [flags]  a WebSocket echo endpoint, until SIGTERM/SIGINT
  wsprobe --help | --version

FILE defaults to config.json. Records go to stdout, diagnostics to stderr.
Exit codes: 0 success; 1 a record has a reason (once, probe); 2 usage or config error.

probe flags (the config's probe fields):
  --interpretation NAME     handshake_latency (default), round_trip_latency, connection_success
  --timeout-ms N            deadline for the whole run, 100 to 30000 (default 10000)
  --send TEXT               message to send (round_trip_latency only)
  --expect TEXT             substring the reply must contain (default: any reply)
  --send-hex HEX            send these bytes as a binary message instead
  --expect-hex HEX          bytes the reply must contain (text or binary reply)
  --samples N               measured exchanges per run on one socket, 1 to 100
  --sample-timeout-ms N     one sample's wait for its reply (default 1000)
  --sample-interval-ms N    least time between two samples' sends (default 100)
  --preset NAME             speak an application protocol (graphql-transport-ws,
                            graphql-ws, socket.io, mqtt, stomp, phoenix, signalr,
                            json-rpc); see docs/protocols.md
  --preset-option KEY=VAL   a preset option (VAL is JSON, or else a string)
  --round-trip-scope S      message (default) or open_and_message
  --protocol NAME           subprotocol to offer (repeatable)
  --header 'Name: value'    extra handshake header (repeatable)
  --label name=value        label for the record (repeatable)
  --max-message-bytes N     largest reply read into memory (default 1048576)
  --healthy-below MS        health threshold (default 200)
  --unhealthy-above MS      health threshold (default 1000)
  --ca-file PATH            PEM CA bundle instead of the built-in roots (wss://)
  --server-name NAME        name for SNI and the certificate check (wss://)
  --insecure                do not verify the certificate (wss://)
  -4, -6                    use only IPv4 or only IPv6 (default: both, Happy Eyeballs)
  --interface NAME          send through this interface (SO_BINDTODEVICE)
  --source-ip ADDR          bind to this source address before connecting
  --fwmark MARK             mark the packets (SO_MARK), for policy routing
  --proxy URL               through an HTTP proxy: http://[user:pass@]host[:port]
                            (port 3128 by default), or env (https_proxy/http_proxy)
  --count N                 runs (default 1)
  --interval-ms N           between run starts (default 1000; 0 back to back)
  --human                   a readable line per run and a summary, like ping

reflect flags (docs/reflect.md):
  --listen ADDR             host:port to serve (repeatable); [::]:PORT serves both families
  --protocol NAME           subprotocol it may select (repeatable; default none)
  --tls-cert FILE           PEM certificate chain: serve wss:// (with --tls-key; SIGHUP reloads)
  --tls-key FILE            PEM private key
  --token-env NAME          require 'Authorization: Bearer $NAME' (never on the command line)
  --max-connections N       concurrent connections, 1 to 1000000 (default 256)
  --max-per-address N       concurrent connections per source address (default 16)
  --max-message-bytes N     larger messages get Close 1009, 1 to 16777216 (default 65536)
  --idle-timeout-ms N       close silent connections, 100 to 86400000 (default 60000)
";

#[derive(Debug, PartialEq)]
pub enum Command {
    Run { config: PathBuf },
    Check { config: PathBuf },
    Once { config: PathBuf, names: Vec<String> },
    Probe(AdHoc),
    Reflect(reflect::Options),
    Help,
    Version,
}

/// `wsprobe probe`: the probe's fields as JSON, plus how to repeat it.
#[derive(Debug, PartialEq)]
pub struct AdHoc {
    pub fields: Map<String, Value>,
    pub count: u64,
    pub interval: Duration,
    pub human: bool,
}

/// A usage error, shown with a pointer to `--help`.
#[derive(Debug, PartialEq)]
pub struct UsageError(pub String);

pub fn parse(args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut args = Args::new(args)?;
    let Some(command) = args.next() else {
        return Err(UsageError("no command given".into()));
    };
    match command.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "run" | "check" => {
            let mut config = PathBuf::from("config.json");
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "-c" | "--config" => config = PathBuf::from(args.value(&arg)?),
                    "-h" | "--help" => return Ok(Command::Help),
                    _ => return Err(unexpected(&arg)),
                }
            }
            Ok(if command == "run" {
                Command::Run { config }
            } else {
                Command::Check { config }
            })
        }
        "once" => {
            let mut config = PathBuf::from("config.json");
            let mut names = Vec::new();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "-c" | "--config" => config = PathBuf::from(args.value(&arg)?),
                    "-p" | "--probe" => names.push(args.value(&arg)?),
                    "-h" | "--help" => return Ok(Command::Help),
                    _ => return Err(unexpected(&arg)),
                }
            }
            Ok(Command::Once { config, names })
        }
        "probe" => parse_probe(&mut args),
        "reflect" => parse_reflect(&mut args),
        other => Err(UsageError(format!("unknown command {other:?}"))),
    }
}

fn parse_probe(args: &mut Args) -> Result<Command, UsageError> {
    let mut fields = Map::new();
    let mut url = None;
    let mut count = 1;
    let mut interval = Duration::from_millis(1000);
    let mut human = false;
    let mut protocols = Vec::new();
    let mut headers = Map::new();
    let mut labels = Map::new();
    let mut tls = Map::new();
    let mut thresholds = Map::new();
    let mut preset = Map::new();
    while let Some(arg) = args.next() {
        let text = |args: &mut Args| args.value(&arg).map(Value::String);
        match arg.as_str() {
            "--interpretation" => insert(&mut fields, "interpretation", text(args)?),
            "--send" => insert(&mut fields, "send_message", text(args)?),
            "--expect" => insert(&mut fields, "expect_message", text(args)?),
            "--send-hex" => insert(&mut fields, "send_message", hex(text(args)?)),
            "--expect-hex" => insert(&mut fields, "expect_message", hex(text(args)?)),
            "--samples" => insert(&mut fields, "samples", args.number(&arg)?),
            "--sample-timeout-ms" => insert(&mut fields, "sample_timeout_ms", args.number(&arg)?),
            "--sample-interval-ms" => insert(&mut fields, "sample_interval_ms", args.number(&arg)?),
            "--preset" => insert(&mut preset, "name", text(args)?),
            "--preset-option" => {
                let raw = args.value(&arg)?;
                let (name, value) = raw.split_once('=').ok_or_else(|| {
                    UsageError(format!("--preset-option wants key=value, got {raw:?}"))
                })?;
                let value = crate::config::parse_json(value)
                    .unwrap_or_else(|_| Value::String(value.into()));
                preset.insert(name.to_owned(), value);
            }
            "--round-trip-scope" => insert(&mut fields, "round_trip_scope", text(args)?),
            "--timeout-ms" => insert(&mut fields, "timeout_ms", args.number(&arg)?),
            "--max-message-bytes" => insert(&mut fields, "max_message_bytes", args.number(&arg)?),
            "--healthy-below" => insert(&mut thresholds, "healthy_below", args.float(&arg)?),
            "--unhealthy-above" => insert(&mut thresholds, "unhealthy_above", args.float(&arg)?),
            "--protocol" => protocols.push(text(args)?),
            "--header" => {
                let raw = args.value(&arg)?;
                let (name, value) = raw.split_once(':').ok_or_else(|| {
                    // Not quoted: without its colon, a header is all value.
                    UsageError("--header wants 'Name: value' (the colon is missing)".into())
                })?;
                let name = name.trim().to_owned();
                if headers
                    .keys()
                    .any(|n: &String| n.eq_ignore_ascii_case(&name))
                {
                    return Err(UsageError(format!("--header {name} is given twice")));
                }
                headers.insert(name, Value::String(value.trim_start().to_owned()));
            }
            "--label" => {
                let raw = args.value(&arg)?;
                let (name, value) = raw
                    .split_once('=')
                    .ok_or_else(|| UsageError(format!("--label wants name=value, got {raw:?}")))?;
                labels.insert(name.to_owned(), Value::String(value.to_owned()));
            }
            "--ca-file" => insert(&mut tls, "ca_file", text(args)?),
            "--server-name" => insert(&mut tls, "server_name", text(args)?),
            "--insecure" => insert(&mut tls, "insecure_skip_verify", Value::Bool(true)),
            "--count" => match args.number(&arg)?.as_u64() {
                Some(n) if n >= 1 => count = n,
                _ => return Err(UsageError("--count must be 1 or more".into())),
            },
            "--interval-ms" => {
                let ms = args.number(&arg)?.as_u64().unwrap_or(0);
                interval = Duration::from_millis(ms);
            }
            "--human" => human = true,
            "-4" => insert(&mut fields, "ip_version", "4".into()),
            "-6" => insert(&mut fields, "ip_version", "6".into()),
            "--interface" => insert(&mut fields, "bind_interface", text(args)?),
            "--source-ip" => insert(&mut fields, "source_ip", text(args)?),
            "--proxy" => insert(&mut fields, "proxy", text(args)?),
            "--fwmark" => {
                let raw = args.value(&arg)?;
                let mark = match raw.parse::<u64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => Value::String(raw),
                };
                insert(&mut fields, "fwmark", mark);
            }
            "-h" | "--help" => return Ok(Command::Help),
            flag if flag.starts_with('-') => return Err(unexpected(flag)),
            _ if url.is_some() => {
                // It may carry credentials (a proxy URL without --proxy).
                let shown = crate::redact::url(&arg);
                return Err(UsageError(format!("a second URL {shown:?}")));
            }
            _ => url = Some(arg.clone()),
        }
    }
    let url = url.ok_or_else(|| UsageError("probe needs a URL".into()))?;
    fields.insert("url".into(), Value::String(url));
    for (key, map) in [
        ("headers", headers),
        ("labels", labels),
        ("tls", tls),
        ("thresholds", thresholds),
    ] {
        if !map.is_empty() {
            fields.insert(key.into(), Value::Object(map));
        }
    }
    if !protocols.is_empty() {
        fields.insert("protocols".into(), Value::Array(protocols));
    }
    if !preset.is_empty() {
        if !preset.contains_key("name") {
            return Err(UsageError("--preset-option needs --preset NAME".into()));
        }
        fields.insert("preset".into(), Value::Object(preset));
    }
    Ok(Command::Probe(AdHoc {
        fields,
        count,
        interval,
        human,
    }))
}

fn parse_reflect(args: &mut Args) -> Result<Command, UsageError> {
    let mut options = reflect::Options {
        listen: Vec::new(),
        protocols: Vec::new(),
        tls: None,
        token_env: None,
        max_connections: reflect::DEFAULT_MAX_CONNECTIONS,
        max_per_address: reflect::DEFAULT_MAX_PER_ADDRESS,
        max_message_bytes: reflect::DEFAULT_MAX_MESSAGE_BYTES,
        idle_timeout: Duration::from_millis(reflect::DEFAULT_IDLE_TIMEOUT_MS),
    };
    let (mut cert, mut key) = (None, None);
    while let Some(arg) = args.next() {
        let mut within = |lo: u64, hi: u64| -> Result<u64, UsageError> {
            let n = args.number(&arg)?.as_u64().unwrap_or(0);
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(UsageError(format!("{arg} must be {lo} to {hi}, got {n}")))
            }
        };
        match arg.as_str() {
            "--max-connections" => options.max_connections = within(1, 1_000_000)? as usize,
            "--max-per-address" => options.max_per_address = within(1, 1_000_000)? as u32,
            "--max-message-bytes" => options.max_message_bytes = within(1, 16 << 20)? as usize,
            "--idle-timeout-ms" => {
                options.idle_timeout = Duration::from_millis(within(100, 86_400_000)?);
            }
            "--listen" => options.listen.push(args.value(&arg)?),
            "--protocol" => options.protocols.push(args.value(&arg)?),
            "--tls-cert" => cert = Some(PathBuf::from(args.value(&arg)?)),
            "--tls-key" => key = Some(PathBuf::from(args.value(&arg)?)),
            "--token-env" => options.token_env = Some(args.value(&arg)?),
            "--token" => {
                return Err(UsageError(
                    "--token is not taken on the command line (ps shows it): \
                     put the token in an environment variable and pass --token-env NAME"
                        .into(),
                ))
            }
            "-h" | "--help" => return Ok(Command::Help),
            _ => return Err(unexpected(&arg)),
        }
    }
    if options.listen.is_empty() {
        return Err(UsageError("reflect needs --listen ADDR".into()));
    }
    options.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err(UsageError("--tls-cert and --tls-key go together".into())),
    };
    Ok(Command::Reflect(options))
}

/// A binary message as the config writes it: `{"hex": ...}`.
fn hex(digits: Value) -> Value {
    let mut object = Map::new();
    object.insert("hex".into(), digits);
    Value::Object(object)
}

fn insert(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.insert(key.to_owned(), value);
}

fn unexpected(arg: &str) -> UsageError {
    let known = [
        "--interpretation",
        "--timeout-ms",
        "--send",
        "--expect",
        "--round-trip-scope",
        "--protocol",
        "--header",
        "--label",
        "--max-message-bytes",
        "--healthy-below",
        "--unhealthy-above",
        "--ca-file",
        "--server-name",
        "--insecure",
        "--count",
        "--interval-ms",
        "--human",
        "--config",
        "--probe",
        "--interface",
        "--source-ip",
        "--fwmark",
        "--proxy",
        "--listen",
        "--tls-cert",
        "--tls-key",
        "--token-env",
        "--max-connections",
        "--max-per-address",
        "--idle-timeout-ms",
        "--send-hex",
        "--expect-hex",
        "--samples",
        "--sample-timeout-ms",
        "--sample-interval-ms",
        "--preset",
        "--preset-option",
    ];
    match crate::config::suggest(arg, &known) {
        Some(s) => UsageError(format!("unknown argument {arg:?} (did you mean {s}?)")),
        None => UsageError(format!("unknown argument {arg:?}")),
    }
}

/// argv as UTF-8 strings, with `--flag=value` split in two.
struct Args {
    items: std::vec::IntoIter<String>,
    pending_value: Option<String>,
}

impl Args {
    fn new(args: Vec<OsString>) -> Result<Self, UsageError> {
        let mut items = Vec::with_capacity(args.len());
        for arg in args {
            let arg = arg
                .into_string()
                .map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))?;
            items.push(arg);
        }
        Ok(Args {
            items: items.into_iter(),
            pending_value: None,
        })
    }

    fn next(&mut self) -> Option<String> {
        if let Some(value) = self.pending_value.take() {
            // A `--flag=value` whose flag takes no value.
            return Some(format!("={value}"));
        }
        let arg = self.items.next()?;
        if arg.starts_with("--") {
            if let Some((flag, value)) = arg.split_once('=') {
                self.pending_value = Some(value.to_owned());
                return Some(flag.to_owned());
            }
        }
        Some(arg)
    }

    fn value(&mut self, flag: &str) -> Result<String, UsageError> {
        self.pending_value
            .take()
            .or_else(|| self.items.next())
            .ok_or_else(|| UsageError(format!("{flag} needs a value")))
    }

    fn number(&mut self, flag: &str) -> Result<Value, UsageError> {
        let raw = self.value(flag)?;
        raw.parse::<u64>()
            .map(Value::from)
            .map_err(|_| UsageError(format!("{flag} wants a whole number, got {raw:?}")))
    }

    fn float(&mut self, flag: &str) -> Result<Value, UsageError> {
        let raw = self.value(flag)?;
        raw.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(|| UsageError(format!("{flag} wants a number, got {raw:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn probe_flags_become_probe_fields() {
        let Ok(Command::Probe(adhoc)) = parse_str(&[
            "probe",
            "ws://h/",
            "--interpretation",
            "round_trip_latency",
            "--send=hi",
            "--header",
            "Origin: https://a",
            "--protocol",
            "p1",
            "--count",
            "3",
            "--interval-ms",
            "0",
            "--insecure",
            "--proxy",
            "env",
        ]) else {
            panic!("not a probe command");
        };
        assert_eq!(adhoc.count, 3);
        assert_eq!(adhoc.interval, Duration::ZERO);
        assert_eq!(adhoc.fields["interpretation"], "round_trip_latency");
        assert_eq!(adhoc.fields["send_message"], "hi");
        assert_eq!(adhoc.fields["headers"]["Origin"], "https://a");
        assert_eq!(adhoc.fields["protocols"][0], "p1");
        assert_eq!(adhoc.fields["tls"]["insecure_skip_verify"], true);
        assert_eq!(adhoc.fields["proxy"], "env");
    }

    #[test]
    fn usage_errors_are_refused() {
        assert!(parse_str(&[]).is_err());
        assert!(parse_str(&["probe"]).is_err());
        assert!(parse_str(&["probe", "ws://h/", "--bogus"]).is_err());
        assert!(parse_str(&["probe", "ws://h/", "--count", "x"]).is_err());
        assert!(parse_str(&["probe", "ws://h/", "--human=yes"]).is_err());
        assert!(parse_str(&["once", "-p"]).is_err());
    }

    #[test]
    fn reflect_flags_and_their_defaults() {
        let Ok(Command::Reflect(options)) = parse_str(&[
            "reflect",
            "--listen",
            "[::]:9000",
            "--listen=127.0.0.1:0",
            "--protocol",
            "echo",
            "--max-per-address",
            "2",
        ]) else {
            panic!("not a reflect command");
        };
        assert_eq!(options.listen, ["[::]:9000", "127.0.0.1:0"]);
        assert_eq!(options.protocols, ["echo"]);
        assert_eq!(options.max_per_address, 2);
        assert_eq!(options.max_connections, 256);
        assert_eq!(options.max_message_bytes, 65536);
        assert_eq!(options.idle_timeout, Duration::from_secs(60));
        assert_eq!(options.tls, None);
        for bad in [
            &["reflect"][..],
            &["reflect", "--listen", "h:1", "--tls-cert", "c"],
            &["reflect", "--listen", "h:1", "--token", "x"],
            &["reflect", "--listen", "h:1", "--max-connections", "0"],
            &["reflect", "--listen", "h:1", "--idle-timeout-ms", "5"],
        ] {
            assert!(parse_str(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn once_collects_probe_names() {
        assert_eq!(
            parse_str(&["once", "-c", "x.json", "-p", "a", "-p", "b"]),
            Ok(Command::Once {
                config: PathBuf::from("x.json"),
                names: vec!["a".into(), "b".into()],
            })
        );
    }
}
