//! `Deadline`, and `DeadlineStream`, the TCP stream that enforces it.
//!
//! The socket is non-blocking. A read waits first, with `poll(2)`, at most
//! for the time left until the deadline; a write is tried at once, takes
//! only what the send buffer has room for, and waits the same way only
//! when there is none. So a server that trickles bytes, or reads none,
//! cannot stretch a run past the deadline. `poll` rather than a socket timeout
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

/// A non-blocking TCP stream whose every read and write ends by the deadline.
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
        loop {
            // Readable (data, end of stream or an error): the read will not
            // wait. The socket is non-blocking, so a readiness that went
            // away again is a `WouldBlock` and another wait.
            self.wait_for(libc::POLLIN)?;
            match self.tcp.read(buf) {
                Err(e) if retry(&e) => {}
                done => return done,
            }
        }
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// All the slices in one `sendmsg`: rustls hands over the records it
    /// has queued this way, so the client's Finished and the upgrade
    /// request behind it leave in one write (one segment where they fit),
    /// not one each.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut waited = false;
        loop {
            self.deadline.remaining_io()?;
            // The send is tried first (a send buffer with no room is rare,
            // and a `poll` before every write would be one more system call
            // in the measured time). It takes what the buffer has room
            // for, so a peer that reads nothing holds a large message only
            // until the deadline (a socket timeout would round to the
            // kernel tick, and was seen to run 1.7 s late). No SIGPIPE
            // either: a peer gone is an error here, not a signal.
            let error = match send(&self.tcp, bufs) {
                Ok(sent) => return Ok(sent),
                Err(e) => e,
            };
            match error.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if !waited => {
                    self.wait_for(libc::POLLOUT)?;
                    waited = true;
                }
                // Writable by poll, yet refused: the kernel is short of
                // socket memory. Back off rather than spin to the deadline.
                io::ErrorKind::WouldBlock => {
                    let left = self.deadline.remaining_io()?;
                    std::thread::sleep(left.min(Duration::from_millis(2)));
                    waited = false;
                }
                _ => return Err(error),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A read to try again after another wait.
fn retry(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// One non-blocking `sendmsg` of `bufs`, without SIGPIPE.
fn send(tcp: &TcpStream, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix, and sendmsg only reads
    // through the pointer; at most IOV_MAX slices are passed.
    message.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    // SAFETY: `message` points at `msg_iovlen` live slices for the call.
    let sent = unsafe {
        libc::sendmsg(
            tcp.as_raw_fd(),
            &message,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Linux's limit on slices per `sendmsg` (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

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

    /// A connected pair on loopback, the probe's side non-blocking as
    /// `connect` hands it over.
    fn pair(budget: Duration) -> (DeadlineStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        ours.set_nonblocking(true).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        (DeadlineStream::new(ours, Deadline::after(budget)), theirs)
    }

    #[test]
    fn a_vectored_write_sends_every_slice_in_one_call() {
        let (mut ours, mut theirs) = pair(Duration::from_secs(5));
        let slices = [b"abc".as_slice(), b"de", b"f"].map(io::IoSlice::new);
        // std's default write_vectored would take the first slice only.
        assert_eq!(ours.write_vectored(&slices).unwrap(), 6);
        let mut got = [0u8; 6];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcdef");
    }

    #[test]
    fn a_read_on_the_non_blocking_socket_waits_for_data_or_the_deadline() {
        let (mut ours, mut theirs) = pair(Duration::from_millis(50));
        let mut buf = [0u8; 8];
        // Nothing sent: a wait that ends at the deadline, not a WouldBlock.
        let waited = ours.read(&mut buf).map_err(|e| e.kind());
        assert_eq!(waited, Err(io::ErrorKind::TimedOut));

        ours.set_deadline(Deadline::after(Duration::from_secs(5)));
        theirs.write_all(b"hi").unwrap();
        assert_eq!(ours.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
    }

    #[test]
    fn a_write_after_the_deadline_fails_without_sending() {
        let (mut ours, mut theirs) = pair(Duration::from_secs(5));
        ours.set_deadline(Deadline::at(Instant::now()));
        let sent = ours.write(b"late").map_err(|e| e.kind());
        assert_eq!(sent, Err(io::ErrorKind::TimedOut));
        drop(ours);
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn a_future_deadline_hands_out_at_most_its_budget() {
        let deadline = Deadline::after(Duration::from_secs(5));
        let left = deadline.remaining().unwrap();
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(4));
    }
}
