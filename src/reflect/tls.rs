//! The reflector's TLS: the server configuration, read from PEM files at
//! start and again on SIGHUP (the caller keeps the old one when that
//! fails), and one connection's session over a non-blocking socket.
//!
//! Server-side TLS adds about 98 KB to the aarch64 binary (docs/reflect.md),
//! so it sits behind the `reflect-tls` cargo feature, on by default. Built
//! without it, `Config` and `Session` have no values: the compiler drops
//! every TLS path of the reflector and `--tls-cert` is refused at start.

#[cfg(feature = "reflect-tls")]
pub use enabled::*;

#[cfg(not(feature = "reflect-tls"))]
pub use disabled::*;

#[cfg(feature = "reflect-tls")]
mod enabled {
    use std::io::{self, Read, Write};
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection};

    pub type Config = Arc<ServerConfig>;

    /// Reads the certificate chain and key; the error names the file at
    /// fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Config, String> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "--tls-cert {}: no PEM certificate in the file",
                cert.display()
            ));
        }
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                format!(
                    "--tls-cert {} with --tls-key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        Ok(Arc::new(config))
    }

    /// One connection's TLS state; the caller owns the socket.
    pub struct Session(Box<ServerConnection>);

    impl Session {
        pub fn new(config: &Config) -> Result<Self, rustls::Error> {
            ServerConnection::new(config.clone()).map(|c| Session(Box::new(c)))
        }

        /// Plaintext from the client, reading records from `socket` as
        /// needed; `WouldBlock` when there is none yet, `InvalidData` when
        /// the TLS layer fails (its alert is sent if the socket takes it).
        pub fn read(
            &mut self,
            socket: &mut (impl Read + Write),
            buf: &mut [u8],
        ) -> io::Result<usize> {
            let tls = &mut self.0;
            loop {
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // No close_notify before the end of TCP: an end all the same.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if tls.read_tls(socket)? == 0 {
                    return Ok(0);
                }
                if let Err(e) = tls.process_new_packets() {
                    let _ = tls.write_tls(socket);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }

        /// Queues plaintext; returns how much fitted rustls's buffer limit.
        pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.writer().write(data)
        }

        pub fn wants_write(&self) -> bool {
            self.0.wants_write()
        }

        pub fn write_tls(&mut self, socket: &mut impl Write) -> io::Result<usize> {
            self.0.write_tls(socket)
        }

        pub fn send_close_notify(&mut self) {
            self.0.send_close_notify();
        }
    }
}

#[cfg(not(feature = "reflect-tls"))]
mod disabled {
    use std::io::{self, Read, Write};
    use std::path::Path;

    /// No configuration can exist in this build.
    pub enum Config {}

    pub fn load(cert: &Path, _key: &Path) -> Result<Config, String> {
        Err(format!(
            "--tls-cert {}: this wsprobe was built without TLS for reflect \
             (cargo feature reflect-tls)",
            cert.display()
        ))
    }

    /// No session can exist in this build.
    pub enum Session {}

    impl Session {
        pub fn new(config: &Config) -> Result<Self, String> {
            match *config {}
        }

        pub fn read(&mut self, _: &mut (impl Read + Write), _: &mut [u8]) -> io::Result<usize> {
            match *self {}
        }

        pub fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            match *self {}
        }

        pub fn wants_write(&self) -> bool {
            match *self {}
        }

        pub fn write_tls(&mut self, _: &mut impl Write) -> io::Result<usize> {
            match *self {}
        }

        pub fn send_close_notify(&mut self) {
            match *self {}
        }
    }
}
