//! Where record lines go: stdout or a file opened for append.
//!
//! Each record is one line written with one `write_all` and flushed at
//! once, so a collector reading a pipe sees it as soon as the run ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use crate::config::Output;

/// A closed stdout: nobody is reading, so the agent should stop.
#[derive(Debug)]
pub struct StdoutClosed(pub io::Error);

pub struct Sink {
    target: Target,
    /// Records that could not be written (full disk) since the last report.
    pub dropped: u64,
}

enum Target {
    Stdout(io::Stdout),
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
            Output::File(path) => Target::File {
                path: path.clone(),
                file: None,
            },
        };
        Sink { target, dropped: 0 }
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
    /// (counted); a closed stdout is fatal for the caller to act on.
    pub fn write_line(&mut self, line: &str) -> Result<Result<(), io::Error>, StdoutClosed> {
        match &mut self.target {
            Target::Stdout(stdout) => {
                let mut out = stdout.lock();
                match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                    Ok(()) => Ok(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed(e)),
                    Err(e) => {
                        self.dropped += 1;
                        Ok(Err(e))
                    }
                }
            }
            Target::File { path, file } => {
                let written = match file {
                    Some(f) => f.write_all(line.as_bytes()).and_then(|()| f.flush()),
                    None => open_append(path).and_then(|mut f| {
                        let done = f.write_all(line.as_bytes()).and_then(|()| f.flush());
                        *file = Some(f);
                        done
                    }),
                };
                if written.is_err() {
                    // Retry with a fresh handle next time (the disk may
                    // have room again, or the file may have been removed).
                    *file = None;
                    self.dropped += 1;
                }
                Ok(written)
            }
        }
    }

    pub fn describe(&self) -> String {
        match &self.target {
            Target::Stdout(_) => "stdout".into(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
