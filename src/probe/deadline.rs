//! `Deadline`, and `DeadlineStream`, the TCP stream that enforces it.
//!
//! Before every read or write the stream waits, with `poll(2)`, at most for
//! the time left until the deadline, and a write then takes only what the
//! send buffer has room for, so a server that trickles bytes, or reads
//! none, cannot stretch a run past it. `poll` rather than a socket timeout
//! (`SO_RCVTIMEO`): the socket timeout runs on the kernel's tick and was
//! seen to end a 30 s wait 1.4 s late on a 250 Hz kernel; `poll` ends
//! within a millisecond.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
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

    /// Whether `instant` came after the deadline.
    pub fn missed_by(&self, instant: Instant) -> bool {
        instant > self.end
    }

    /// Time left as an I/O result, for code that speaks `io::Error`.
    pub fn remaining_io(&self) -> io::Result<Duration> {
        self.remaining()
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
    }
}

/// A blocking TCP stream whose every read and write ends by the deadline.
///
/// A wait that runs out is a `TimedOut` error, final for every layer above
/// (tungstenite and rustls would take a `WouldBlock` for "try again").
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

    /// Ends the connection with a reset: unsent bytes are dropped at once.
    pub fn reset(&self) {
        let _ = socket2::SockRef::from(&self.tcp).set_linger(Some(Duration::ZERO));
        self.shutdown();
    }

    /// Waits until the socket is ready for `events` or the deadline passes.
    fn wait_for(&self, events: libc::c_short) -> io::Result<()> {
        loop {
            let left = self.deadline.remaining_io()?;
            // Rounded up: a wait never ends before the deadline.
            let millis =
                libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
            let mut fd = libc::pollfd {
                fd: self.tcp.as_raw_fd(),
                events,
                revents: 0,
            };
            // SAFETY: `fd` is one valid pollfd and the count says one.
            match unsafe { libc::poll(&mut fd, 1, millis) } {
                0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")),
                n if n > 0 => return Ok(()),
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Readable (data, end of stream or an error): the read cannot block.
        self.wait_for(libc::POLLIN)?;
        self.tcp.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.wait_for(libc::POLLOUT)?;
            // Non-blocking for this call: it takes what the send buffer has
            // room for, so a peer that reads nothing holds a large message
            // only until the deadline (a socket timeout would round to the
            // kernel tick, and was seen to run 1.7 s late). No SIGPIPE
            // either: a peer gone is an error here, not a signal.
            // SAFETY: `buf` is a live slice of `buf.len()` bytes.
            let sent = unsafe {
                libc::send(
                    self.tcp.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if let Ok(sent) = usize::try_from(sent) {
                return Ok(sent);
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => {}
                // Writable by poll, yet refused: the kernel is short of
                // socket memory. Back off rather than spin to the deadline.
                io::ErrorKind::WouldBlock => {
                    let left = self.deadline.remaining_io()?;
                    std::thread::sleep(left.min(Duration::from_millis(2)));
                }
                _ => return Err(error),
            }
        }
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
