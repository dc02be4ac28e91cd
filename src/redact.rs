//! Keeping secrets out of records and logs.
//!
//! URLs keep their shape with credentials replaced. Header values are never
//! written at all, not even in config errors, so they need no rule here.

/// Query parameters whose names contain one of these (any case) are secret.
const SECRET_PARAM_WORDS: [&str; 9] = [
    "token",
    "key",
    "secret",
    "pass",
    "auth",
    "sig",
    "session",
    "credential",
    "jwt",
];

pub const REDACTED: &str = "REDACTED";

/// The URL (absolute or a relative redirect target) with userinfo and secret
/// query values replaced by `REDACTED`.
pub fn url(raw: &str) -> String {
    let (before_fragment, fragment) = match raw.find('#') {
        Some(at) => raw.split_at(at),
        None => (raw, ""),
    };
    let (base, query) = match before_fragment.find('?') {
        Some(at) => (&before_fragment[..at], Some(&before_fragment[at + 1..])),
        None => (before_fragment, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_params(query));
    }
    // An OAuth-style redirect carries its tokens in the fragment.
    if let Some(fragment) = fragment.strip_prefix('#') {
        out.push('#');
        out.push_str(&redact_params(fragment));
    }
    out
}

fn redact_params(params: &str) -> String {
    let params: Vec<String> = params.split('&').map(redact_param).collect();
    params.join("&")
}

fn redact_userinfo(base: &str) -> String {
    // `scheme://authority...`, or a scheme-relative `//authority...`. A
    // `://` after something that is no scheme (RFC 3986 section 3.1) is
    // not where the authority starts: in `//bob:pw@host://x` it is in the
    // path, after the userinfo.
    let authority_start = match base.find("://") {
        Some(scheme_end) if is_scheme(&base[..scheme_end]) => scheme_end + 3,
        _ if base.starts_with("//") => 2,
        _ => return base.to_owned(),
    };
    let rest = &base[authority_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{REDACTED}@{}", &base[..authority_start], &rest[at + 1..]),
        None => base.to_owned(),
    }
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn redact_param(param: &str) -> String {
    match param.split_once('=') {
        Some((name, _)) if is_secret_param(name) => format!("{name}={REDACTED}"),
        _ => param.to_owned(),
    }
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAM_WORDS.iter().any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_secret_parameters_are_redacted() {
        assert_eq!(
            url("wss://bob:hunter2@example.com:8443/s?room=1&access_token=abc&Sig=x#frag"),
            "wss://REDACTED@example.com:8443/s?room=1&access_token=REDACTED&Sig=REDACTED#frag"
        );
    }

    #[test]
    fn every_secret_word_is_caught_in_any_case() {
        for word in SECRET_PARAM_WORDS {
            let name = format!("x{}", word.to_uppercase());
            assert_eq!(
                url(&format!("ws://h/?{name}=v")),
                format!("ws://h/?{name}=REDACTED")
            );
        }
    }

    #[test]
    fn plain_urls_and_relative_locations_keep_their_shape() {
        assert_eq!(url("ws://example.com/socket"), "ws://example.com/socket");
        assert_eq!(url("/login?next=/&token=t"), "/login?next=/&token=REDACTED");
        assert_eq!(url("ws://h/p@q?x=1"), "ws://h/p@q?x=1");
    }

    #[test]
    fn scheme_relative_userinfo_and_fragment_tokens_are_redacted() {
        assert_eq!(
            url("//bob:hunter2@cdn.example/socket?room=1"),
            "//REDACTED@cdn.example/socket?room=1"
        );
        // Found by fuzz/fuzz_targets/url_redaction.rs: a later `://` was
        // taken for the scheme's, and the userinfo before it kept.
        assert_eq!(
            url("//bob:hunter2@cdn.example://x"),
            "//REDACTED@cdn.example://x"
        );
        assert_eq!(url("//bob:hunter2@://"), "//REDACTED@://");
        assert_eq!(url("a/b://bob:pw@h"), "a/b://bob:pw@h");
        assert_eq!(
            url("https://sso.example/cb#access_token=abc&state=x"),
            "https://sso.example/cb#access_token=REDACTED&state=x"
        );
    }
}
