//! Where record lines go: stdout, a file opened for append, or nowhere;
//! the one writer thread that writes them; and the count of those dropped.
//!
//! Each record is one line written with one `write_all` and flushed at
//! once, so a collector reading a pipe sees it as soon as the run ends.
//! A line of up to PIPE_BUF (4096) bytes reaches a pipe in one atomic
//! write, so a writer stuck on a stalled pipe when the agent stops leaves
//! no partial line behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::config::Output;
use crate::say;

/// Dropped records are reported at most this often.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(60);

/// A closed stdout: nobody is reading, so the agent should stop.
#[derive(Debug)]
pub struct StdoutClosed(pub io::Error);

pub struct Sink {
    target: Target,
}

enum Target {
    Stdout(io::Stdout),
    /// `"ndjson": null`: every line is taken and none written.
    Discard,
    /// The file is reopened on the next write after a failure or a reload.
    File {
        path: PathBuf,
        file: Option<File>,
    },
}

impl Sink {
    pub fn open(output: &Output) -> Sink {
        let target = match output {
            Output::Stdout => Target::Stdout(io::stdout()),
            Output::Discard => Target::Discard,
            Output::File(path) => Target::File {
                path: path.clone(),
                file: None,
            },
        };
        Sink { target }
    }

    /// Opens (or reopens) a file output now, so a bad path shows at start-up.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Target::File { path, file } = &mut self.target {
            *file = None;
            *file = Some(open_append(path)?);
        }
        Ok(())
    }

    /// Writes one line. A file that cannot be written drops the record
    /// (for the caller to count); a closed stdout is fatal for the caller to act on.
    pub fn write_line(&mut self, line: &str) -> Result<Result<(), io::Error>, StdoutClosed> {
        match &mut self.target {
            Target::Discard => Ok(Ok(())),
            Target::Stdout(stdout) => {
                let mut out = stdout.lock();
                match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                    Ok(()) => Ok(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed(e)),
                    Err(e) => Ok(Err(e)),
                }
            }
            Target::File { path, file } => {
                let written = match file {
                    Some(f) => append_whole(f, line),
                    None => open_append(path).and_then(|mut f| {
                        let done = append_whole(&mut f, line);
                        *file = Some(f);
                        done
                    }),
                };
                if written.is_err() {
                    // Retry with a fresh handle next time (the disk may
                    // have room again, or the file may have been removed).
                    *file = None;
                }
                Ok(written)
            }
        }
    }

    /// `"ndjson": null`: lines are taken and counted, never written.
    pub fn discards(&self) -> bool {
        matches!(self.target, Target::Discard)
    }

    pub fn describe(&self) -> String {
        match &self.target {
            Target::Stdout(_) => "stdout".into(),
            Target::Discard => "nowhere".into(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }
}

/// Appends `line` whole or not at all: a full disk can take part of a
/// write before it fails, and that part is cut off again, so a reader
/// never meets half a record.
fn append_whole(file: &mut File, line: &str) -> io::Result<()> {
    let before = file.metadata()?.len();
    let written = file.write_all(line.as_bytes()).and_then(|()| file.flush());
    if written.is_err() {
        // Best effort: on a full disk, shrinking needs no room.
        let _ = file.set_len(before);
    }
    written
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Records dropped since the start: not queued (the writer is behind, as
/// when nobody reads a pipe) or not written (a full disk). Probe threads
/// count here without waiting; the count is logged at most once a minute.
#[derive(Default)]
pub struct Drops {
    count: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

impl Drops {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts `n` dropped records and logs the total if a minute has
    /// passed since the last report; `why` says what happened.
    pub fn add(&self, n: u64, why: &str) {
        let total = self.count.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self
            .last_report
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= DROP_REPORT_EVERY) {
            *last = Some(Instant::now());
            drop(last);
            say!("{why}: {total} record(s) dropped so far");
        }
    }
}

/// The writer thread's state the agent reads when it stops.
#[derive(Default)]
pub struct Writing {
    /// True while a line is being written: a writer stuck on a stalled
    /// pipe holds one line it could not hand over.
    pub busy: AtomicBool,
    /// Lines written whole to stdout or the file, counted by the writer
    /// itself, so the account at the stop checks the other counts.
    pub written: AtomicU64,
    /// Lines taken and thrown away (`"ndjson": null`).
    pub discarded: AtomicU64,
}

/// The writer thread's inputs: record lines on a bounded queue, and
/// (never waiting behind the lines) reloads and the stop.
pub struct Inputs {
    pub lines: Receiver<String>,
    /// A reload's output, reopened even when unchanged (logrotate).
    pub reopen: Receiver<Output>,
    pub stop: Receiver<()>,
}

/// The writer thread: one write per line, flushed at once. Returns when
/// stop says so (after writing what was queued), when every sender is
/// gone, or with the error when stdout is closed.
pub fn write_lines(
    mut sink: Sink,
    inputs: Inputs,
    drops: &Drops,
    writing: &Writing,
) -> Result<(), StdoutClosed> {
    // True between a failed write and the next one that works.
    let mut failing = false;
    let mut write = |line: String, sink: &mut Sink| -> Result<(), StdoutClosed> {
        writing.busy.store(true, Ordering::Release);
        let written = sink.write_line(&line);
        writing.busy.store(false, Ordering::Release);
        let written = written.inspect_err(|_| drops.add(1, "stdout is closed"))?;
        match written {
            Ok(()) => {
                let count = if sink.discards() {
                    &writing.discarded
                } else {
                    &writing.written
                };
                count.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut failing) {
                    say!(
                        "writing records to {} again; {} record(s) dropped so far",
                        sink.describe(),
                        drops.count()
                    );
                }
            }
            Err(e) => {
                failing = true;
                drops.add(
                    1,
                    &format!("cannot write records to {}: {e}", sink.describe()),
                );
            }
        }
        Ok(())
    };
    loop {
        select! {
            recv(inputs.lines) -> line => match line {
                Ok(line) => write(line, &mut sink)?,
                Err(_) => return Ok(()),
            },
            recv(inputs.reopen) -> output => if let Ok(output) = output {
                sink = Sink::open(&output);
                if let Err(e) = sink.reopen() {
                    say!("cannot open {}: {e}; will retry at each record", sink.describe());
                }
            },
            recv(inputs.stop) -> _ => {
                // Write what was complete when the stop came, then leave.
                while let Ok(line) = inputs.lines.try_recv() {
                    write(line, &mut sink)?;
                }
                return Ok(());
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A record that a full disk cuts short is taken back out whole. Needs
    /// root for a tmpfs small enough to fill; skips elsewhere, fails under
    /// CI, where it runs as root.
    #[test]
    fn a_line_the_disk_cannot_hold_leaves_no_part_behind() {
        let is_root = unsafe { libc::geteuid() } == 0;
        if !is_root {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root: this test must run there"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wsprobe-fulldisk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(mounted.success(), "mount a 16 KiB tmpfs");
        let path = dir.join("records.ndjson");
        let mut file = open_append(&path).expect("open the output");
        append_whole(&mut file, "{\"first\":1}\n").expect("the first line fits");
        let before = file.metadata().expect("stat").len();
        // Far more than the filesystem holds: part of it is written first.
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(64 * 1024));
        let refused = append_whole(&mut file, &line);
        let after = std::fs::read(&path).expect("read back");
        let _ = Command::new("umount").arg(&dir).status();
        let _ = std::fs::remove_dir(&dir);
        assert!(refused.is_err(), "64 KiB cannot fit in 16 KiB");
        assert_eq!(
            after.len() as u64,
            before,
            "no part of the refused line stays"
        );
        assert!(after.ends_with(b"\n"));
    }
}
