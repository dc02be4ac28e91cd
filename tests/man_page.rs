//! dist/man/wsprobe.1, the hand-written man page the packages ship, against
//! the real `wsprobe --help`: every subcommand and every flag the help lists
//! must be in the page, and the page must carry the crate's version.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/man/wsprobe.1");

/// The page's text with the roff escapes and font changes that split a
/// flag taken out (`\-\-timeout\-ms` becomes `--timeout-ms`).
fn page_text() -> String {
    let roff = std::fs::read_to_string(PAGE).expect("read dist/man/wsprobe.1");
    let mut text = roff.replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        text = text.replace(font, "");
    }
    text
}

fn help() -> String {
    let out = Command::new(support::WSPROBE)
        .arg("--help")
        .output()
        .expect("run wsprobe --help");
    assert!(out.status.success(), "wsprobe --help failed");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The subcommands (`  wsprobe NAME ...` lines) and the flags (words that
/// start with `-` and a letter or digit) the help lists.
fn listed(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut commands = BTreeSet::new();
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"wsprobe") {
            if let Some(name) = words.get(1).filter(|w| !w.starts_with('-')) {
                commands.insert((*name).to_owned());
            }
        }
        for word in line.split(|c: char| c.is_whitespace() || matches!(c, ',' | '|' | '[' | ']')) {
            let flag = word.trim_end_matches(['.', ':', ';', ')']);
            let mut chars = flag.chars();
            let looks_like_flag = chars.next() == Some('-')
                && flag
                    .trim_start_matches('-')
                    .starts_with(|c: char| c.is_ascii_alphanumeric());
            if looks_like_flag {
                flags.insert(flag.to_owned());
            }
        }
    }
    (commands, flags)
}

/// Whether `word` stands alone in `text` (not as part of a longer flag).
fn has_word(text: &str, word: &str) -> bool {
    let is_word_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}

#[test]
fn the_page_names_every_subcommand_and_flag_the_help_lists() {
    let help = help();
    let (commands, flags) = listed(&help);
    // The parse must find what we know is there, or the test proves nothing.
    for known in ["run", "check", "once", "probe"] {
        assert!(
            commands.contains(known),
            "{known} not found in --help: {commands:?}"
        );
    }
    for known in [
        "-c",
        "-p",
        "--help",
        "--version",
        "--timeout-ms",
        "-4",
        "--human",
    ] {
        assert!(
            flags.contains(known),
            "{known} not found in --help: {flags:?}"
        );
    }
    let page = page_text();
    let missing: Vec<String> = commands
        .iter()
        .filter(|c| {
            !has_word(&page, &format!("B {c}")) && !has_word(&page, &format!("wsprobe {c}"))
        })
        .map(|c| format!("subcommand {c}"))
        .chain(
            flags
                .iter()
                .filter(|f| !has_word(&page, f))
                .map(|f| format!("flag {f}")),
        )
        .collect();
    assert!(
        missing.is_empty(),
        "dist/man/wsprobe.1 lacks what `wsprobe --help` lists: {missing:?}"
    );
}

#[test]
fn the_page_carries_the_crate_version() {
    let page = page_text();
    let th = page
        .lines()
        .find(|l| l.starts_with(".TH "))
        .expect("a .TH line");
    let version = concat!("wsprobe ", env!("CARGO_PKG_VERSION"));
    assert!(th.contains(version), "{th:?} does not say {version:?}");
}
