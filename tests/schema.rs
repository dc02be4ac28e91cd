//! config.schema.json against the loader: every field the loader knows is
//! in the schema (and no other), a real validator (Python `jsonschema`,
//! draft 2020-12) accepts every valid config we ship and refuses the
//! invalid fixtures whose problem a schema can express, and the loader
//! takes the `$schema` key an editor needs.

mod pysupport;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use wsprobe::config::{known_fields, load_str};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json");
const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/schema_check.py");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config");

/// Where the schema describes each object `known_fields()` names.
const SCHEMA_OBJECTS: [(&str, &str); 6] = [
    ("top level", "#"),
    ("output", "#/$defs/output"),
    ("defaults", "#/$defs/defaults"),
    ("probe", "#/$defs/probe"),
    ("thresholds", "#/$defs/thresholds"),
    ("tls", "#/$defs/tls"),
];

/// Invalid fixtures the schema must refuse: unknown fields, types, enums,
/// ranges, patterns, and the rules within one probe object it can state
/// (with the defaults' interpretation for a probe that sets none).
const SCHEMA_REFUSES: [&str; 58] = [
    "invalid-labels-reserved.json",
    "invalid-output-prometheus.json",
    "invalid-proxy-https.json",
    "invalid-proxy-no-scheme.json",
    "invalid-proxy-not-a-string.json",
    "invalid-proxy-path.json",
    "invalid-proxy-socks5.json",
    "invalid-defaults-name-url.json",
    "invalid-headers-bad-name.json",
    "invalid-headers-connection.json",
    "invalid-headers-crlf-value.json",
    "invalid-headers-host.json",
    "invalid-headers-sec-websocket-key.json",
    "invalid-headers-sec-websocket-protocol.json",
    "invalid-headers-upgrade.json",
    "invalid-interpretation-unknown.json",
    "invalid-interval-out-of-range.json",
    "invalid-labels-not-strings.json",
    "invalid-many-problems.json",
    "invalid-max-message-bytes-out-of-range.json",
    "invalid-name-bad-characters.json",
    "invalid-name-duplicate-with-other-error.json",
    "invalid-name-missing.json",
    "invalid-name-too-long.json",
    "invalid-ping-mode-message-on-handshake.json",
    "invalid-ping-mode-none-on-round-trip.json",
    "invalid-probes-empty.json",
    "invalid-protocols-duplicate.json",
    "invalid-protocols-not-tokens.json",
    "invalid-round-trip-fields-on-connection-success.json",
    "invalid-round-trip-fields-on-handshake.json",
    "invalid-thresholds-on-connection-success.json",
    "invalid-timeout-not-a-number.json",
    "invalid-timeout-out-of-range.json",
    "invalid-tls-ca-file-missing-with-bad-url.json",
    "invalid-tls-on-ws.json",
    "invalid-tls-unknown-key.json",
    "invalid-unknown-in-defaults.json",
    "invalid-unknown-in-output.json",
    "invalid-unknown-in-probe.json",
    "invalid-unknown-in-thresholds.json",
    "invalid-unknown-top-level.json",
    "invalid-url-fragment.json",
    "invalid-url-missing.json",
    "invalid-url-no-host.json",
    "invalid-url-not-ws.json",
    "invalid-message-bad-hex.json",
    "invalid-message-not-a-message.json",
    "invalid-prelude-bad-steps.json",
    "invalid-prelude-in-defaults.json",
    "invalid-prelude-too-many-steps.json",
    "invalid-preset-conflicts.json",
    "invalid-preset-options.json",
    "invalid-preset-samples.json",
    "invalid-preset-unknown.json",
    // Refused for its second probe (samples above 1 with open_and_message);
    // its first, (samples - 1) x sample_interval_ms >= timeout_ms, compares
    // two values and only `wsprobe check` sees it.
    "invalid-samples-do-not-fit.json",
    // No interpretation and no defaults setting round_trip_latency.
    "invalid-samples-not-round-trip.json",
    "invalid-samples-out-of-range.json",
];

/// Invalid fixtures a schema cannot refuse, and why: only `wsprobe check`
/// catches these. The schema must accept them (so this list stays true).
const SCHEMA_ACCEPTS: [(&str, &str); 16] = [
    (
        "invalid-proxy-bad-port-in-defaults.json",
        "a port range in a URL pattern",
    ),
    ("invalid-proxy-env-unset.json", "needs the environment"),
    ("invalid-proxy-ip-version.json", "compares two values"),
    ("invalid-env-unset-header.json", "needs the environment"),
    ("invalid-env-unset-url.json", "needs the environment"),
    ("invalid-interval-below-timeout.json", "compares two values"),
    (
        "invalid-json-duplicate-key.json",
        "JSON parsers keep one value",
    ),
    ("invalid-name-duplicate.json", "compares two probes"),
    ("invalid-send-message-missing.json", "defaults may set it"),
    (
        "invalid-thresholds-default-stands-in.json",
        "compares two values",
    ),
    (
        "invalid-thresholds-default-stands-in-low.json",
        "compares two values",
    ),
    ("invalid-thresholds-reversed.json", "compares two values"),
    ("invalid-tls-ca-file-missing.json", "reads the file system"),
    (
        "invalid-tls-ca-file-missing-with-insecure.json",
        "reads the file system",
    ),
    ("invalid-tls-ca-file-not-pem.json", "reads the file system"),
    ("invalid-url-bad-port.json", "a port range in a URL pattern"),
];

/// Fixtures that are not JSON at all: no schema applies.
const NOT_JSON: [&str; 1] = ["invalid-json-syntax.json"];

fn schema() -> Value {
    let text = std::fs::read_to_string(SCHEMA).expect("read config.schema.json");
    serde_json::from_str(&text).expect("config.schema.json is JSON")
}

/// The object at a `#/...` pointer.
fn at<'v>(schema: &'v Value, pointer: &str) -> &'v Value {
    let path = pointer.trim_start_matches('#');
    schema
        .pointer(path)
        .unwrap_or_else(|| panic!("config.schema.json has nothing at {pointer}"))
}

/// The property names an object schema declares, its `$ref`s followed.
fn declared(schema: &Value, pointer: &str) -> BTreeSet<String> {
    let object = at(schema, pointer);
    let mut names: BTreeSet<String> = object
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(target) = object.get("$ref").and_then(Value::as_str) {
        names.extend(declared(schema, target));
    }
    names
}

/// The `properties` an object schema may declare a field in: its own and
/// those of the schemas it `$ref`s.
fn owners(schema: &Value, pointer: &str) -> Vec<String> {
    let mut places = vec![format!("{pointer}/properties")];
    if let Some(target) = at(schema, pointer).get("$ref").and_then(Value::as_str) {
        places.extend(owners(schema, target));
    }
    places
}

#[test]
fn every_field_the_loader_knows_is_in_the_schema_and_no_other() {
    let schema = schema();
    let places: BTreeMap<&str, &str> = SCHEMA_OBJECTS.into_iter().collect();
    let mut problems = Vec::new();
    for (object, fields) in known_fields() {
        let Some(pointer) = places.get(object) else {
            problems.push(format!(
                "the loader reads an object {object:?} (known_fields() in src/config/mod.rs) \
                 that SCHEMA_OBJECTS in tests/schema.rs does not place in config.schema.json"
            ));
            continue;
        };
        let in_schema = declared(&schema, pointer);
        for field in &fields {
            if !in_schema.contains(*field) {
                problems.push(format!(
                    "field {field:?} of {object} is known to the loader but missing from \
                     config.schema.json: add it to {}",
                    owners(&schema, pointer).join(" or ")
                ));
            }
        }
        for field in &in_schema {
            if !fields.contains(&field.as_str()) {
                problems.push(format!(
                    "field {field:?} is in config.schema.json at {pointer}/properties but the \
                     loader refuses it in {object}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_invalid_fixture_is_in_one_list() {
    let mut listed: BTreeSet<&str> = SCHEMA_REFUSES.into_iter().collect();
    listed.extend(SCHEMA_ACCEPTS.iter().map(|(name, _)| *name));
    listed.extend(NOT_JSON);
    let on_disk: BTreeSet<String> = fixture_names("invalid-").into_iter().collect();
    let unlisted: Vec<&String> = on_disk
        .iter()
        .filter(|n| !listed.contains(n.as_str()))
        .collect();
    let gone: Vec<&&str> = listed.iter().filter(|n| !on_disk.contains(**n)).collect();
    assert!(
        unlisted.is_empty() && gone.is_empty(),
        "put each invalid fixture in SCHEMA_REFUSES or SCHEMA_ACCEPTS (tests/schema.rs): \
         not listed {unlisted:?}; listed but not on disk {gone:?}"
    );
}

/// Runs the validator over `files`; `None` when Python or `jsonschema` is
/// missing (skipped, printed why; a failure under CI).
fn verdicts(files: &[String]) -> Option<BTreeMap<String, String>> {
    let python = pysupport::python()?;
    let has = Command::new(&python)
        .args(["-c", "import jsonschema"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        support::skip_or_fail(&format!(
            "{python} has no jsonschema (run .ci/install-pkg.sh)"
        ));
        return None;
    }
    let out = Command::new(&python)
        .arg(CHECKER)
        .arg(SCHEMA)
        .args(files)
        .output()
        .expect("run schema_check.py");
    assert!(
        out.status.success(),
        "schema_check.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    Some(
        files
            .iter()
            .zip(text.lines())
            .map(|(file, line)| (file.clone(), line.to_owned()))
            .collect(),
    )
}

/// The fixture files whose names start with `prefix`, sorted.
fn fixture_names(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("read the fixture directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

#[test]
fn the_schema_accepts_every_valid_config_we_ship() {
    let mut files: Vec<String> = fixture_names("valid-").iter().map(|n| fixture(n)).collect();
    assert!(files.len() >= 3, "valid fixtures went missing: {files:?}");
    files.push(format!("{ROOT}/config.json"));
    files.push(format!("{ROOT}/dist/config.json"));
    let Some(verdicts) = verdicts(&files) else {
        return;
    };
    let refused: Vec<&String> = verdicts
        .values()
        .filter(|v| !v.starts_with("valid "))
        .collect();
    assert!(
        refused.is_empty(),
        "the schema refuses valid configs:\n{refused:#?}"
    );
}

#[test]
fn the_schema_refuses_what_it_can_express_and_accepts_the_rest() {
    let refuse: Vec<String> = SCHEMA_REFUSES.iter().map(|n| fixture(n)).collect();
    let accept: Vec<String> = SCHEMA_ACCEPTS.iter().map(|(n, _)| fixture(n)).collect();
    let files: Vec<String> = refuse.iter().chain(&accept).cloned().collect();
    let Some(verdicts) = verdicts(&files) else {
        return;
    };
    let mut problems = Vec::new();
    for file in &refuse {
        if !verdicts[file].starts_with("invalid ") {
            problems.push(format!(
                "should be refused by the schema: {}",
                verdicts[file]
            ));
        }
    }
    for (file, (_, why)) in accept.iter().zip(SCHEMA_ACCEPTS) {
        if !verdicts[file].starts_with("valid ") {
            problems.push(format!(
                "listed as beyond a schema ({why}) but refused; move it to SCHEMA_REFUSES: {}",
                verdicts[file]
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_loader_takes_a_schema_key_that_is_a_string() {
    let no_env = |_: &str| None;
    let probe = r#""probes": [{"name": "edge", "url": "ws://192.0.2.1/"}]"#;
    let with = format!(r#"{{"$schema": "./config.schema.json", {probe}}}"#);
    assert!(
        load_str(&with, &no_env).is_ok(),
        "a $schema string is refused"
    );
    let wrong = format!(r#"{{"$schema": 5, {probe}}}"#);
    let errors = load_str(&wrong, &no_env).expect_err("a $schema number is taken");
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        ["top level: $schema: must be a string naming the schema (got 5)"]
    );
}

#[test]
fn the_shipped_configs_check_clean_with_the_binary() {
    for config in ["config.json", "dist/config.json"] {
        let path = Path::new(ROOT).join(config);
        let out = Command::new(support::WSPROBE)
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run wsprobe check");
        assert!(
            out.status.success(),
            "wsprobe check -c {config} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
