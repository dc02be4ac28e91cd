//! How a `wss://` probe judges the server's certificate: webpki against
//! the probe's roots, remembering the chains that passed so that a probe
//! does not check the same signatures again on every run; or, under
//! `insecure_skip_verify`, not at all.
//!
//! A probe meets the same chain run after run, and checking it is CPU time
//! inside `tls_ms`: one signature check per link, 0.05 ms for P-256 and
//! 0.76 ms for P-384 (which Let's Encrypt's ECDSA intermediates use) on
//! the x86_64 machine this was measured on, and more on a router's slower
//! core. webpki's verdict depends on the chain's bytes, the
//! server name, the trusted roots and the time. So the memory belongs to
//! one verifier (one root store), is keyed by a digest of the name and the
//! bytes, and a hit still checks the time: every certificate the server
//! sent must be within its validity now. Otherwise the chain is verified
//! in full, and an expired one fails as webpki says. Only successes are
//! remembered. The server's signature over the handshake
//! (CertificateVerify), which proves it holds the key, is checked on
//! every run.
//!
//! Why a hit is sound: a chain is remembered only if every certificate
//! the server sent was within its validity when webpki accepted it, and
//! is accepted again only while they all still are. webpki's path is made
//! of certificates the server sent, and none of its checks but those of
//! validity depends on the time (no revocation lists are configured). So
//! the same search, over the same bytes, would find the same path again,
//! within the same budget of signature checks.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::validity;

/// Verifies against `roots`, remembering what passed.
pub fn checked(roots: RootCertStore, provider: &CryptoProvider) -> Arc<dyn ServerCertVerifier> {
    let webpki = Webpki {
        roots: Some(roots),
        algorithms: provider.signature_verification_algorithms,
    };
    Arc::new(Remembering::new(Arc::new(webpki)))
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake
/// signatures are still checked so the session itself is sound.
pub fn unchecked(provider: &CryptoProvider) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Webpki {
        roots: None,
        algorithms: provider.signature_verification_algorithms,
    })
}

/// What rustls's own webpki verifier does when it has no revocation
/// lists, made of rustls's public parts. That verifier carries revocation
/// code the agent never uses: the aarch64 binary is 6 KB smaller with
/// this one, memory of chains included, and wrapping that one (through
/// its builder) would have made it 26 KB larger.
#[derive(Debug)]
struct Webpki {
    /// None: any chain is accepted (`unchecked`).
    roots: Option<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Webpki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        verify_server_name(&cert, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Chains remembered per verifier: one per host a config probes is
/// typical; past this the oldest is forgotten. 48 bytes each.
const CAPACITY: usize = 64;

pub struct Remembering {
    inner: Arc<dyn ServerCertVerifier>,
    verified: Mutex<Memory>,
    /// How often `inner` was asked to verify a chain, for the tests.
    #[cfg(test)]
    full_checks: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Memory {
    entries: Vec<Entry>,
    /// Where the next entry goes once `entries` is full.
    oldest: usize,
}

#[derive(Clone, Copy)]
struct Entry {
    key: [u8; 32],
    valid: validity::Window,
}

impl Remembering {
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Self {
        Remembering {
            inner,
            verified: Mutex::default(),
            #[cfg(test)]
            full_checks: Default::default(),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Plain data, consistent after any panic.
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Memory {
    fn valid_now(&self, key: &[u8; 32], now: u64) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.key == *key && entry.valid.contains(now))
    }

    fn remember(&mut self, entry: Entry) {
        if let Some(same) = self.entries.iter_mut().find(|e| e.key == entry.key) {
            *same = entry;
        } else if self.entries.len() < CAPACITY {
            // One at a time: most verifiers (a probe's own CA) only ever
            // hold one chain, and a probe's bytes count on a router.
            self.entries.reserve_exact(1);
            self.entries.push(entry);
        } else {
            self.entries[self.oldest] = entry;
            self.oldest = (self.oldest + 1) % CAPACITY;
        }
    }
}

/// SHA-256 over the name, its kind (so that a four-letter DNS name is
/// never taken for an IPv4 address) and every certificate, each with its
/// length; None for a kind of name this does not know (never remembered).
fn key_of(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
) -> Option<[u8; 32]> {
    let ip;
    let (kind, name): (u8, &[u8]) = match server_name {
        ServerName::DnsName(name) => (b'd', name.as_ref().as_bytes()),
        ServerName::IpAddress(address) => {
            ip = IpAddr::from(*address);
            match &ip {
                IpAddr::V4(v4) => (b'4', &v4.octets()[..]),
                IpAddr::V6(v6) => (b'6', &v6.octets()[..]),
            }
        }
        _ => return None,
    };
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(&[kind]);
    for part in std::iter::once(name).chain(
        std::iter::once(end_entity)
            .chain(intermediates)
            .map(|cert| cert.as_ref()),
    ) {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut key = [0; 32];
    key.copy_from_slice(context.finish().as_ref());
    Some(key)
}

/// When every certificate sent is valid; None if one cannot be read.
fn valid_window(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<validity::Window> {
    let mut window = validity::of(end_entity)?;
    for cert in intermediates {
        window = window.and(validity::of(cert)?);
    }
    Some(window)
}

impl ServerCertVerifier for Remembering {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = key_of(end_entity, intermediates, server_name);
        let now_secs = now.as_secs();
        if let Some(key) = &key {
            if self.memory().valid_now(key, now_secs) {
                return Ok(ServerCertVerified::assertion());
            }
        }
        #[cfg(test)]
        self.full_checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let (Some(key), Some(valid)) = (key, valid_window(end_entity, intermediates)) {
            if valid.contains(now_secs) {
                self.memory().remember(Entry { key, valid });
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

impl fmt::Debug for Remembering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remembering")
            .field("inner", &self.inner)
            .field("remembered", &self.memory().entries.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::client::WebPkiServerVerifier;
    use rustls::CertificateError as C;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A CA valid 2000-4000 and what it signed.
    struct Chain {
        roots: RootCertStore,
        /// For `localhost`, valid 2020-2030; `other_leaf` likewise.
        leaf: CertificateDer<'static>,
        other_leaf: CertificateDer<'static>,
        /// For `t.co`, valid 2020-2030.
        tco_leaf: CertificateDer<'static>,
        /// An intermediate valid 2000-2026 and its leaf for `localhost`,
        /// valid 2020-2030.
        intermediate: CertificateDer<'static>,
        under_intermediate: CertificateDer<'static>,
        /// A certificate of no use to any path, valid 2026-2040.
        early: CertificateDer<'static>,
    }

    fn params(names: &[&str], from: i32, to: i32) -> CertificateParams {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 1, 1);
        params
    }

    fn ca_params(from: i32, to: i32) -> CertificateParams {
        static CAS: AtomicUsize = AtomicUsize::new(0);
        let mut ca = params(&[], from, to);
        let serial = CAS.fetch_add(1, Ordering::SeqCst);
        ca.distinguished_name
            .push(DnType::CommonName, format!("test CA {serial}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca
    }

    fn chain() -> Chain {
        let ca = ca_params(2000, 4000);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |issuer: &Issuer<'_, KeyPair>, name: &str| {
            let key = KeyPair::generate().unwrap();
            let params = params(&[name], 2020, 2030);
            params.signed_by(&key, issuer).unwrap().der().clone()
        };
        let intermediate = ca_params(2000, 2026);
        let intermediate_key = KeyPair::generate().unwrap();
        let intermediate_cert = intermediate.signed_by(&intermediate_key, &issuer).unwrap();
        let by_intermediate = Issuer::new(intermediate, intermediate_key);
        let early_key = KeyPair::generate().unwrap();
        let early = params(&["early.example"], 2026, 2040)
            .self_signed(&early_key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        Chain {
            roots,
            leaf: leaf(&issuer, "localhost"),
            other_leaf: leaf(&issuer, "localhost"),
            tco_leaf: leaf(&issuer, "t.co"),
            intermediate: intermediate_cert.der().clone(),
            under_intermediate: leaf(&by_intermediate, "localhost"),
            early: early.der().clone(),
        }
    }

    fn webpki(roots: RootCertStore) -> Webpki {
        Webpki {
            roots: Some(roots),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    fn verifier(roots: RootCertStore) -> Remembering {
        Remembering::new(Arc::new(webpki(roots)))
    }

    /// A chain, and a verifier that trusts its CA.
    fn remembering() -> (Chain, Remembering) {
        let chain = chain();
        let cache = verifier(chain.roots.clone());
        (chain, cache)
    }

    fn full_checks(cache: &Remembering) -> usize {
        cache.full_checks.load(Ordering::SeqCst)
    }

    /// `result` is a certificate error that matches `pattern`.
    macro_rules! assert_cert_error {
        ($result:expr, $pattern:pat) => {
            match $result {
                Err(rustls::Error::InvalidCertificate(error)) => {
                    assert!(matches!(error, $pattern), "{error:?}")
                }
                other => panic!("expected a certificate error, got {other:?}"),
            }
        };
    }

    fn at(year: i32, month: u8, day: u8) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            date_time_ymd(year, month, day).unix_timestamp() as u64,
        ))
    }

    fn name(text: &str) -> ServerName<'static> {
        ServerName::try_from(text.to_owned()).unwrap()
    }

    fn verify(
        cache: &Remembering,
        leaf: &CertificateDer<'_>,
        host: &str,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        cache.verify_server_cert(leaf, &[], &name(host), &[], now)
    }

    #[test]
    fn the_same_chain_and_name_are_checked_once() {
        let (chain, cache) = remembering();
        for _ in 0..3 {
            verify(&cache, &chain.leaf, "localhost", at(2025, 6, 1)).unwrap();
        }
        assert_eq!(full_checks(&cache), 1);
    }

    #[test]
    fn a_hit_past_the_validity_is_verified_again_and_fails_as_expired() {
        let (chain, cache) = remembering();
        verify(&cache, &chain.leaf, "localhost", at(2025, 6, 1)).unwrap();
        let expired = verify(&cache, &chain.leaf, "localhost", at(2030, 1, 2));
        assert_cert_error!(expired, C::ExpiredContext { .. } | C::Expired);
        let early = verify(&cache, &chain.leaf, "localhost", at(2019, 12, 31));
        assert_cert_error!(early, C::NotValidYetContext { .. } | C::NotValidYet);
        assert_eq!(full_checks(&cache), 3);
    }

    #[test]
    fn another_name_or_another_chain_is_not_a_hit() {
        let (chain, cache) = remembering();
        verify(&cache, &chain.leaf, "localhost", at(2025, 6, 1)).unwrap();
        let wrong = verify(&cache, &chain.leaf, "other.example", at(2025, 6, 1));
        assert!(wrong.is_err(), "{wrong:?}");
        verify(&cache, &chain.other_leaf, "localhost", at(2025, 6, 1)).unwrap();
        let with_extra = cache.verify_server_cert(
            &chain.leaf,
            std::slice::from_ref(&chain.other_leaf),
            &name("localhost"),
            &[],
            at(2025, 6, 1),
        );
        assert!(with_extra.is_ok(), "{with_extra:?}");
        assert_eq!(full_checks(&cache), 4);
    }

    #[test]
    fn a_dns_name_is_never_taken_for_the_ip_address_of_the_same_bytes() {
        let (chain, cache) = remembering();
        verify(&cache, &chain.tco_leaf, "t.co", at(2025, 6, 1)).unwrap();
        // "t.co" is the bytes 116, 46, 99, 111.
        let posing = verify(&cache, &chain.tco_leaf, "116.46.99.111", at(2025, 6, 1));
        assert_cert_error!(
            posing,
            C::NotValidForNameContext { .. } | C::NotValidForName
        );
    }

    #[test]
    fn an_intermediate_that_expires_first_ends_the_hits() {
        let (chain, cache) = remembering();
        let sent = std::slice::from_ref(&chain.intermediate);
        let localhost = name("localhost");
        let check =
            |now| cache.verify_server_cert(&chain.under_intermediate, sent, &localhost, &[], now);
        check(at(2025, 6, 1)).unwrap();
        check(at(2025, 7, 1)).unwrap();
        assert_eq!(full_checks(&cache), 1);
        let expired = check(at(2026, 1, 2));
        assert_cert_error!(expired, C::ExpiredContext { .. } | C::Expired);
        assert_eq!(full_checks(&cache), 2);
    }

    #[test]
    fn a_chain_sent_with_a_certificate_out_of_its_validity_is_not_remembered() {
        let (chain, cache) = remembering();
        // webpki accepts it every time: the extra one is on no path.
        let sent = std::slice::from_ref(&chain.early);
        let localhost = name("localhost");
        let check = |now| cache.verify_server_cert(&chain.leaf, sent, &localhost, &[], now);
        // Not remembered while the extra one is not valid yet: a chain is
        // remembered only as webpki saw it, every certificate valid.
        check(at(2025, 6, 1)).unwrap();
        check(at(2026, 6, 1)).unwrap();
        assert_eq!(full_checks(&cache), 2);
        check(at(2026, 7, 1)).unwrap();
        assert_eq!(full_checks(&cache), 2);
    }

    #[test]
    fn a_failure_is_not_remembered_and_other_roots_know_nothing() {
        let stranger = chain();
        let chain = chain();
        let cache = verifier(stranger.roots.clone());
        for _ in 0..2 {
            let unknown = verify(&cache, &chain.leaf, "localhost", at(2025, 6, 1));
            assert_cert_error!(unknown, C::UnknownIssuer);
        }
        assert_eq!(full_checks(&cache), 2);
        // The cache of a verifier that trusts the chain does not make
        // this one trust it.
        let trusting = verifier(chain.roots.clone());
        verify(&trusting, &chain.leaf, "localhost", at(2025, 6, 1)).unwrap();
        assert!(verify(&cache, &chain.leaf, "localhost", at(2025, 6, 1)).is_err());
    }

    #[test]
    fn webpki_judges_as_rustls_own_verifier_does() {
        let stranger = chain();
        let chain = chain();
        let ours = webpki(chain.roots.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let theirs = WebPkiServerVerifier::builder_with_provider(Arc::new(chain.roots), provider)
            .build()
            .unwrap();
        for (leaf, host, now) in [
            (&chain.leaf, "localhost", at(2025, 6, 1)),
            (&chain.leaf, "other.example", at(2025, 6, 1)),
            (&chain.leaf, "localhost", at(2030, 1, 2)),
            (&chain.leaf, "localhost", at(2019, 12, 31)),
            (&stranger.leaf, "localhost", at(2025, 6, 1)),
        ] {
            let verdict = |verifier: &dyn ServerCertVerifier| {
                format!(
                    "{:?}",
                    verifier.verify_server_cert(leaf, &[], &name(host), &[], now)
                )
            };
            assert_eq!(
                verdict(&ours),
                verdict(theirs.as_ref()),
                "{host} at {now:?}"
            );
        }
    }

    #[test]
    fn memory_is_bounded() {
        let mut memory = Memory::default();
        let valid = validity::Window {
            not_before: 0,
            not_after: 10,
        };
        for n in 0..CAPACITY + 5 {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(n as u64).to_be_bytes());
            memory.remember(Entry { key, valid });
            memory.remember(Entry { key, valid });
        }
        assert_eq!(memory.entries.len(), CAPACITY);
        let mut first = [0; 32];
        first[..8].copy_from_slice(&0u64.to_be_bytes());
        assert!(!memory.valid_now(&first, 5), "the oldest was forgotten");
        let mut last = [0; 32];
        last[..8].copy_from_slice(&((CAPACITY + 4) as u64).to_be_bytes());
        assert!(memory.valid_now(&last, 5) && !memory.valid_now(&last, 11));
    }
}
