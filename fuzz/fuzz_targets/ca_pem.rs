//! The `tls.ca_file` reader (PEM), and the DER walk that reads each
//! certificate's validity (also fed the server's own certificates).
//!
//! Properties: a file is accepted only with at least one certificate (an
//! empty `CERTIFICATE` block counts: the root store refuses it next, see
//! `tls::TlsFactory::setup`); a refusal names the file; a validity read from a
//! certificate is a span of real dates, and intersecting it with itself
//! changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsprobe::probe::{tls, validity};

/// 9999-12-31T23:59:59Z, the last instant a certificate date can say.
const LAST_DATE: u64 = 253_402_300_799;

fuzz_target!(|pem: &[u8]| {
    match tls::ca_certificates(pem, "/etc/fuzz-ca.pem") {
        Ok(certs) => {
            assert!(!certs.is_empty());
            for cert in &certs {
                check_validity(cert);
            }
        }
        Err(message) => assert!(message.contains("/etc/fuzz-ca.pem"), "{message}"),
    }
    // The walk on raw DER, as a server's chain reaches it.
    check_validity(pem);
});

fn check_validity(der: &[u8]) {
    if let Some(window) = validity::of(der) {
        assert!(window.not_before <= LAST_DATE && window.not_after <= LAST_DATE);
        assert_eq!(window.and(window), window);
        assert_eq!(
            window.contains(window.not_before),
            window.not_before <= window.not_after
        );
    }
}
