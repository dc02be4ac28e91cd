//! TLS for `wss://` over rustls (ring), timed as a phase of its own.
//!
//! The client configurations are built once when the config loads (the
//! webpki root store is shared by every probe that does not bring its own
//! CA); a run only creates a connection from one and drives the handshake.
//! Each configuration's verifier remembers the chains it has verified
//! (`verify`), so a run checks the signatures of a chain it has seen
//! before only once, and its validity every time.

use std::io::{self, Read};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::deadline::DeadlineStream;
use super::verify;
use crate::outcome::{Failure, Phase};
use crate::spec::{TlsOptions, TlsSetup};

pub type TlsStream = StreamOwned<ClientConnection, DeadlineStream>;

/// Builds the rustls clients for one config load, sharing what can be shared.
pub struct TlsFactory {
    provider: Arc<CryptoProvider>,
    default_client: Option<Arc<ClientConfig>>,
}

impl Default for TlsFactory {
    fn default() -> Self {
        TlsFactory {
            provider: Arc::new(provider()),
            default_client: None,
        }
    }
}

/// ring's provider with the cipher suites in the order browsers offer
/// them: AES-128-GCM with SHA-256 first. Servers mostly follow the
/// client's order, so a probe negotiates what a browser would, and
/// SHA-256 runs on the SHA extensions of x86_64 and ARMv8 CPUs, where
/// ring's SHA-384 is plain code: a fifth of a handshake's CPU otherwise.
fn provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite::*;
    CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

impl TlsFactory {
    /// The client for these options; an error names what is wrong with them.
    pub fn setup(&mut self, options: &TlsOptions) -> Result<TlsSetup, String> {
        // Read even when unused (insecure): a wrong path is still a mistake
        // worth showing, and a reload must see a CA file that changed.
        let ca_certs = match &options.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let client = match (&options.ca_file, options.insecure_skip_verify) {
            (_, true) => self.client(RootCertStore::empty(), true)?,
            (Some(path), false) => self.client(roots_from(path, &ca_certs)?, false)?,
            (None, false) => match &self.default_client {
                Some(client) => client.clone(),
                None => {
                    let roots = RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    };
                    let client = self.client(roots, false)?;
                    self.default_client = Some(client.clone());
                    client
                }
            },
        };
        Ok(TlsSetup {
            options: options.clone(),
            ca_certs,
            client,
        })
    }

    fn client(&self, roots: RootCertStore, insecure: bool) -> Result<Arc<ClientConfig>, String> {
        let verifier = if insecure {
            verify::unchecked(&self.provider)
        } else {
            verify::checked(roots, &self.provider)
        };
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // Every run measures a full handshake, as a new client would see it,
        // and no session state accumulates across runs.
        config.resumption = Resumption::disabled();
        // WebSocket upgrades are HTTP/1.1 (RFC 6455); say so to ALPN-aware
        // load balancers so none of them picks h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A larger `tls.ca_file` is refused unread: `/dev/zero` or a runaway
/// file must not take all memory. Mozilla's whole root bundle is 0.2 MiB.
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a PEM file that must hold at least one certificate.
fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem))
        .map_err(|e| format!("cannot read {path}: I/O error: {e}"))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "{path} is larger than {} MiB, too large for a CA file",
            MAX_CA_FILE_BYTES >> 20
        ));
    }
    ca_certificates(&pem, path)
}

/// The certificates in `pem`, the contents of the `tls.ca_file` at `path`
/// (which the errors name); at least one.
pub fn ca_certificates(pem: &[u8], path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

fn roots_from(path: &str, certs: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if roots.is_empty() {
        return Err(format!(
            "{path}: none of its {ignored} certificates could be used as a CA"
        ));
    }
    Ok(roots)
}

/// A client for one run, its ClientHello written: creating it draws the
/// key share, a scalar multiplication the run does before its clock starts.
/// Boxed: made early, it would otherwise sit (1 KiB) in the frames that
/// stay on the stack while a probe waits for a reply, a page a probe.
pub fn client(setup: &TlsSetup, url_host: &str) -> Result<Box<ClientConnection>, Failure> {
    let name = server_name(setup, url_host)?;
    ClientConnection::new(setup.client.clone(), name)
        .map(Box::new)
        .map_err(|e| Failure::open_failed(Phase::Tls, format!("TLS setup: {e}")))
}

/// The name checked in the certificate and sent in SNI.
fn server_name(setup: &TlsSetup, url_host: &str) -> Result<ServerName<'static>, Failure> {
    let name = setup.options.server_name.as_deref().unwrap_or(url_host);
    ServerName::try_from(name.to_owned())
        .map_err(|e| Failure::open_failed(Phase::Tls, format!("server name {name:?}: {e}")))
}

/// Runs the TLS handshake within the stream's deadline, until the server's
/// Finished is verified. With TLS 1.3 the client's own Finished is then
/// still queued: the upgrade request joins it, and both leave in one
/// write (`Transport::send_all`) instead of three.
pub fn handshake(
    conn: Box<ClientConnection>,
    stream: DeadlineStream,
) -> Result<TlsStream, Failure> {
    let mut tls = StreamOwned::new(*conn, stream);
    while tls.conn.is_handshaking() {
        step(&mut tls).map_err(handshake_failure)?;
    }
    // Done just too late: still the handshake's timeout, not the upgrade's
    // (whose first write, the queued Finished, would refuse to go).
    if tls.sock.deadline().has_passed() {
        return Err(Failure::handshake_timeout(Phase::Tls));
    }
    Ok(tls)
}

/// Sends the flight rustls has queued, or else reads and processes what
/// the server sent: rustls's `complete_io`, less its flush of the last
/// flight.
fn step(tls: &mut TlsStream) -> io::Result<()> {
    if tls.conn.wants_write() {
        return tls.conn.write_tls(&mut tls.sock).map(drop);
    }
    if tls.conn.read_tls(&mut tls.sock)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if let Err(error) = tls.conn.process_new_packets() {
        // Best effort: the alert saying why, if rustls queued one.
        let _ = tls.conn.write_tls(&mut tls.sock);
        return Err(io::Error::new(io::ErrorKind::InvalidData, error));
    }
    Ok(())
}

/// `TLSv1.3` or `TLSv1.2`, as the record shows it.
pub fn version_name(tls: &TlsStream) -> Option<&'static str> {
    match tls.conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("other"),
    }
}

/// The earliest notAfter (Unix seconds) among the certificates the server
/// sent, or None when there are none or one cannot be read.
pub fn earliest_not_after(tls: &TlsStream) -> Option<u64> {
    tls.conn
        .peer_certificates()?
        .iter()
        .map(|cert| super::validity::of(cert).map(|window| window.not_after))
        .try_fold(u64::MAX, |earliest, not_after| {
            Some(earliest.min(not_after?))
        })
        .filter(|t| *t != u64::MAX)
}

fn handshake_failure(error: io::Error) -> Failure {
    if error.kind() == io::ErrorKind::TimedOut {
        return Failure::handshake_timeout(Phase::Tls);
    }
    let detail = match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls_error) => describe(tls_error),
        None if error.kind() == io::ErrorKind::UnexpectedEof => {
            "TLS: the server closed the connection during the handshake".to_owned()
        }
        None => format!("TLS: {error}"),
    };
    Failure::open_failed(Phase::Tls, detail)
}

/// Says in plain words which check failed; the operator reads this at night.
fn describe(error: &rustls::Error) -> String {
    use CertificateError as C;
    let cert = match error {
        rustls::Error::InvalidCertificate(cert) => cert,
        other => return format!("TLS: {other}"),
    };
    match cert {
        C::UnknownIssuer => "TLS: certificate from an unknown issuer (not signed by a trusted \
                             CA; set tls.ca_file for a private CA)"
            .to_owned(),
        C::Expired | C::ExpiredContext { .. } => format!("TLS: certificate expired ({cert})"),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("TLS: certificate not valid yet; check the device clock ({cert})")
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("TLS: wrong name: {cert}")
        }
        other => format!("TLS: invalid certificate: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::deadline::Deadline;
    use crate::probe::ws::Transport;
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ServerConfig, ServerConnection};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// A self-signed `localhost` certificate: the server's configuration
    /// and a client configuration that trusts it.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let ring = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(ring.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(ring)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    #[test]
    fn the_clients_finished_and_the_request_leave_in_one_write() {
        let (server_config, client_config) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut conn = ServerConnection::new(server_config).unwrap();
            // Up to and including the server's flight.
            while !conn.wants_write() {
                conn.read_tls(&mut tcp).unwrap();
                conn.process_new_packets().unwrap();
            }
            while conn.wants_write() {
                conn.write_tls(&mut tcp).unwrap();
            }
            // One read of what the client answered (it blocks until the
            // first segment is in): Finished and request, or less.
            let mut answer = vec![0u8; 16 * 1024];
            let n = tcp.read(&mut answer).unwrap();
            conn.read_tls(&mut &answer[..n]).unwrap();
            conn.process_new_packets().unwrap();
            let mut request = Vec::new();
            let _ = conn.reader().read_to_end(&mut request);
            (conn.is_handshaking(), request)
        });

        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let stream = DeadlineStream::new(tcp, Deadline::after(Duration::from_secs(5)));
        let name = ServerName::try_from("localhost").unwrap();
        let client = Box::new(ClientConnection::new(client_config, name).unwrap());
        let tls = handshake(client, stream).unwrap();
        assert_eq!(version_name(&tls), Some("TLSv1.3"));
        assert!(
            tls.conn.wants_write(),
            "the client's Finished was sent alone"
        );
        let mut transport = Transport::Tls(Box::new(tls));
        transport.send_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();

        let (handshaking, request) = server.join().unwrap();
        assert!(!handshaking, "the first read held no client Finished");
        assert_eq!(request, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn aes_128_gcm_sha256_is_offered_first_and_no_suite_is_lost() {
        let ours = provider().cipher_suites;
        let ring = rustls::crypto::ring::default_provider().cipher_suites;
        assert_eq!(
            ours[0],
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(ours.len(), ring.len());
        assert!(ring.iter().all(|suite| ours.contains(suite)));
    }
}
