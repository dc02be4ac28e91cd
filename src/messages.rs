//! The only way to stderr: diagnostics and logs, never records.
//!
//! `eprintln!` panics when stderr is a closed pipe (`wsprobe run 2>&1 |
//! head`); a router's agent must not die, or stop probing, because nobody
//! reads its log any more. A line that cannot be written is dropped.

use std::fmt;
use std::io::{self, Write};

/// Writes one line to stderr, prefixed with `wsprobe: `.
pub fn line(message: fmt::Arguments) {
    let _ = writeln!(io::stderr().lock(), "wsprobe: {message}");
}

/// `say!("...", args)`: a diagnostic line on stderr; see `messages::line`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::messages::line(format_args!($($arg)*))
    };
}
