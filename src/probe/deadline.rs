//! `Deadline`, and `DeadlineStream`, the TCP stream that enforces it.
//!
//! Before every blocking read or write the time left until the deadline is
//! set as the socket timeout, so a server that trickles bytes cannot stretch
//! a run past its deadline: each call may block at most for what is left.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The instant a run (or its close) must be over by.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    end: Instant,
}

impl Deadline {
    pub fn at(end: Instant) -> Self {
        Deadline { end }
    }

    pub fn after(budget: Duration) -> Self {
        Deadline::at(Instant::now() + budget)
    }

    /// Time left, or `None` once it has passed. Never `Some(ZERO)`: std
    /// refuses a zero socket timeout, and zero means "passed" here anyway.
    pub fn remaining(&self) -> Option<Duration> {
        let left = self.end.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    pub fn has_passed(&self) -> bool {
        self.remaining().is_none()
    }

    /// Time left as an I/O result, for code that speaks `io::Error`.
    pub fn remaining_io(&self) -> io::Result<Duration> {
        self.remaining()
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
    }
}

/// A blocking TCP stream whose every read and write ends by the deadline.
///
/// A socket timeout surfaces on Linux as `WouldBlock`, which tungstenite and
/// rustls take for "try again later"; it is turned into `TimedOut` here so
/// that every layer above sees a plain, final error.
#[derive(Debug)]
pub struct DeadlineStream {
    tcp: TcpStream,
    deadline: Deadline,
}

impl DeadlineStream {
    pub fn new(tcp: TcpStream, deadline: Deadline) -> Self {
        DeadlineStream { tcp, deadline }
    }

    /// Moves the deadline: the close after the measurement gets its own.
    pub fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }

    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    pub fn shutdown(&self) {
        // The peer may already be gone; there is nothing to do about it.
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

fn timed_out_if_blocked(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
    } else {
        error
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp
            .set_read_timeout(Some(self.deadline.remaining_io()?))?;
        self.tcp.read(buf).map_err(timed_out_if_blocked)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp
            .set_write_timeout(Some(self.deadline.remaining_io()?))?;
        self.tcp.write(buf).map_err(timed_out_if_blocked)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_deadline_hands_out_no_time() {
        let deadline = Deadline::at(Instant::now());
        assert_eq!(deadline.remaining(), None);
        assert_eq!(
            deadline.remaining_io().map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut)
        );
    }

    #[test]
    fn a_future_deadline_hands_out_at_most_its_budget() {
        let deadline = Deadline::after(Duration::from_secs(5));
        let left = deadline.remaining().unwrap();
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(4));
    }
}
