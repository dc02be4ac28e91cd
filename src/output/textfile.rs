//! `output.prometheus_textfile`: the metrics as a `.prom` file for
//! node_exporter's textfile collector (or OpenWrt's
//! prometheus-node-exporter-lua-textfile), rewritten on a thread of its
//! own after runs finish, at most once a second, and once at start.
//!
//! Each rewrite goes to a temporary file in the same directory, whose
//! name does not end in `.prom` (the collector reads every `*.prom`,
//! dotfiles too), made readable by others (Debian's node_exporter runs as
//! its own user), then renamed over the target: a scraper never reads
//! half a file.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use super::metrics::Metrics;
use crate::say;

/// At most one rewrite per this long.
const MIN_GAP: Duration = Duration::from_secs(1);

/// A failing file is logged at most this often.
const FAILURE_REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the textfile thread is told besides "runs finished".
pub enum Control {
    /// A reload: the file to keep (None: no file any more). Rewritten at
    /// once for the new set of probes.
    Path(Option<PathBuf>),
    Stop,
}

/// Starts the textfile thread, which writes `path` (if any) at once.
/// `changed` wakes it after runs (a bounded(1) slot: one pending rewrite
/// is enough); `control` carries reloads and the stop.
pub fn spawn(
    path: Option<PathBuf>,
    metrics: Arc<Metrics>,
    changed: Receiver<()>,
    control: Receiver<Control>,
) -> io::Result<()> {
    thread::Builder::new()
        .name("wsprobe-textfile".into())
        .stack_size(64 * 1024)
        .spawn(move || Writer::new(path, metrics).run(&changed, &control))?;
    Ok(())
}

struct Writer {
    path: Option<PathBuf>,
    metrics: Arc<Metrics>,
    /// Reused between rewrites: the exposition's size hardly changes.
    text: String,
    last_failure_report: Option<Instant>,
    failing: bool,
}

impl Writer {
    fn new(path: Option<PathBuf>, metrics: Arc<Metrics>) -> Writer {
        Writer {
            path,
            metrics,
            text: String::new(),
            last_failure_report: None,
            failing: false,
        }
    }

    fn run(mut self, changed: &Receiver<()>, control: &Receiver<Control>) {
        self.rewrite();
        let mut last = Instant::now();
        loop {
            select! {
                recv(changed) -> message => if message.is_err() { return },
                recv(control) -> message => match message {
                    Ok(Control::Path(path)) => {
                        self.move_to(path);
                        self.rewrite();
                        last = Instant::now();
                        continue;
                    }
                    Ok(Control::Stop) | Err(_) => return,
                },
            }
            // Runs finished: wait out the gap (a stop or reload still
            // comes through), then write what they found.
            match control.recv_deadline(last + MIN_GAP) {
                Ok(Control::Path(path)) => self.move_to(path),
                Ok(Control::Stop) => return,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            self.rewrite();
            last = Instant::now();
        }
    }

    /// A reload changed (or removed) the path: the old file would go
    /// stale for ever, so it is removed.
    fn move_to(&mut self, path: Option<PathBuf>) {
        if self.path != path {
            if let Some(old) = &self.path {
                let _ = fs::remove_file(old);
            }
            self.path = path;
            self.failing = false;
        }
    }

    fn rewrite(&mut self) {
        let Some(path) = &self.path else { return };
        self.text.clear();
        self.metrics.render(&mut self.text);
        match replace(path, self.text.as_bytes()) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    say!("writing metrics to {} again", path.display());
                }
            }
            Err(e) => {
                self.failing = true;
                let due = self
                    .last_failure_report
                    .is_none_or(|t| t.elapsed() >= FAILURE_REPORT_EVERY);
                if due {
                    say!("cannot write metrics to {}: {e}", path.display());
                    self.last_failure_report = Some(Instant::now());
                }
            }
        }
    }
}

/// Replaces `path` with `contents` atomically: a temporary file beside
/// it, mode 0644, renamed over it.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temp = temp_path(path);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            // The umask may have taken bits away from the mode above.
            file.set_permissions(Permissions::from_mode(0o644))
        })
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// `.NAME.prom.tmp` beside `path`: hidden, and not ending in `.prom`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_name_is_beside_the_file_and_not_a_prom() {
        let temp = temp_path(Path::new("/var/prometheus/wsprobe.prom"));
        assert_eq!(temp, Path::new("/var/prometheus/.wsprobe.prom.tmp"));
        assert!(!temp.to_string_lossy().ends_with(".prom"));
    }

    #[test]
    fn a_replaced_file_is_whole_and_readable_by_others() {
        let dir = std::env::temp_dir().join(format!("wsprobe-textfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.prom");
        replace(&path, b"a 1\n").unwrap();
        replace(&path, b"b 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "b 2\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
