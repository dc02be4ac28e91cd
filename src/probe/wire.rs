//! `Wire`: what the probe needs of the byte stream under the WebSocket.
//!
//! The upgrade, the exchange and the close run over any `Wire`: in the
//! probe a `Transport` (TCP or TLS, deadline-bound), in the fuzz targets a
//! stream made of the fuzzer's bytes, so they try the very code the probe
//! runs.

use std::io::{self, Read, Write};

use super::deadline::Deadline;
use super::ws::Transport;

/// A deadline-bound byte stream the probe speaks WebSocket over.
pub trait Wire: Read + Write {
    /// Writes all of `bytes`, in as few packets as it can.
    fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    /// Moves the deadline every read and write must end by.
    fn set_deadline(&mut self, deadline: Deadline);

    /// Ends the connection politely: TLS close_notify, then the TCP FIN.
    fn shutdown(&mut self);

    /// Ends the connection with a reset: unsent bytes are dropped at once.
    fn reset(&mut self);
}

impl Wire for Transport {
    fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Transport::send_all(self, bytes)
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.tcp().set_deadline(deadline);
    }

    fn shutdown(&mut self) {
        Transport::shutdown(self);
    }

    fn reset(&mut self) {
        self.tcp().reset();
    }
}

/// A borrowed wire is a wire, as a borrowed reader is a reader: the caller
/// keeps the stream to look at it afterwards.
impl<W: Wire + ?Sized> Wire for &mut W {
    fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).send_all(bytes)
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        (**self).set_deadline(deadline);
    }

    fn shutdown(&mut self) {
        (**self).shutdown();
    }

    fn reset(&mut self) {
        (**self).reset();
    }
}
