//! The small text rules: names, tokens, `${NAME}`, "did you mean".

use super::Env;

/// Expands every `${NAME}`; an unset variable is an error. An invalid
/// name is not quoted: it is whatever stands between `${` and `}` in a URL
/// or a header value, and may hold a secret.
pub fn expand_env(raw: &str, env: Env) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or("has \"${\" without a closing \"}\"")?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(
                "has a \"${...}\" whose name is not a variable name (letters, digits and _)"
                    .to_owned(),
            );
        }
        let value = env(name).ok_or_else(|| {
            format!("environment variable {name} is not set (used as ${{{name}}})")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn is_probe_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// A label name the Prometheus metrics take for themselves, or one
/// Prometheus reserves (`__` prefix).
pub(super) fn is_reserved_label(name: &str) -> bool {
    name.starts_with("__") || crate::output::metrics::RESERVED_LABELS.contains(&name)
}

/// An HTTP token (RFC 9110 section 5.6.2): header names and subprotocols.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// The known name closest to `given`, if one is close enough to be a typo.
pub fn suggest<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    let squash = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let given_squashed = squash(given);
    known
        .iter()
        .map(|k| {
            let d = edit_distance(&given_squashed, &squash(k));
            let prefix = given.len() >= 4 && (k.starts_with(given) || given.starts_with(k));
            (if prefix { d.min(1) } else { d }, *k)
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PROBE_FIELDS;

    #[test]
    fn env_substitution_requires_set_variables() {
        let env = |n: &str| (n == "TOKEN").then(|| "abc".to_owned());
        assert_eq!(expand_env("Bearer ${TOKEN}", &env).unwrap(), "Bearer abc");
        assert!(expand_env("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING"));
        assert!(expand_env("${TOKEN", &env).is_err());
    }

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(suggest("timeout", &PROBE_FIELDS), Some("timeout_ms"));
        assert_eq!(suggest("tiemout_ms", &PROBE_FIELDS), Some("timeout_ms"));
        assert_eq!(suggest("Protocols", &PROBE_FIELDS), Some("protocols"));
        assert_eq!(suggest("colour", &PROBE_FIELDS), None);
    }
}
