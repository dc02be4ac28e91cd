//! Certificate verification across runs, through the real binary.
//!
//! A probe remembers the chains it has verified and does not check their
//! signatures again (README, "Decisions where the contract is silent"). The
//! promise under test: that changes the CPU a run spends, never its
//! verdict. A certificate that expires between two runs fails the second,
//! and a server that changes its certificate is judged on the new one.

mod pysupport;
mod support;

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use pysupport::{start_tls_server, TlsMaterial};
use support::*;

/// Seconds the short-lived certificate stays valid after it is made; the
/// first run must start within them, the second after them.
const LIFETIME_S: u64 = 5;

#[test]
fn a_certificate_that_expires_between_runs_fails_the_second_run() {
    let tls = TlsMaterial::generate();
    let leaf = tls.leaf_expiring_in("short", LIFETIME_S);
    // The third-party Python server presents it on every connection.
    let Some(server) = start_tls_server(&leaf, &[]) else {
        return;
    };
    let interval_ms = ((LIFETIME_S + 2) * 1000).to_string();
    let run = probe(&[
        &server.wss_url("/"),
        "--ca-file",
        tls.ca_pem.to_str().expect("utf-8 path"),
        "--count",
        "2",
        "--interval-ms",
        &interval_ms,
    ]);
    let records = run.records();
    assert_eq!(records.len(), 2, "{run:#?}");
    assert_reason(&records[0], &run, None);
    assert_eq!(
        records[0].meta.tls_verified,
        Some(true),
        "{:#?}",
        records[0]
    );
    assert_reason(&records[1], &run, Some("ws_open_failed"));
    let error = records[1].meta.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("expired"),
        "the second run should fail saying the certificate expired: {:#?}",
        records[1]
    );
}

#[test]
fn a_server_that_changes_its_certificate_is_judged_on_the_new_one() {
    let tls = TlsMaterial::generate();
    // Connection by connection: good, expired, good, wrong name, good.
    let server = server_presenting(vec![
        &tls.good,
        &tls.expired,
        &tls.good,
        &tls.wrong_name,
        &tls.good,
    ]);
    let run = probe(&[
        &format!("wss://127.0.0.1:{}/", server.port),
        "--ca-file",
        tls.ca_pem.to_str().expect("utf-8 path"),
        "--count",
        "5",
        "--interval-ms",
        "0",
    ]);
    let records = run.records();
    assert_eq!(records.len(), 5, "{run:#?}");
    let errors: Vec<&str> = records
        .iter()
        .map(|record| record.meta.error.as_deref().unwrap_or_default())
        .collect();
    for good in [0, 2, 4] {
        assert_reason(&records[good], &run, None);
        assert_eq!(records[good].meta.tls_verified, Some(true));
    }
    for bad in [1, 3] {
        assert_reason(&records[bad], &run, Some("ws_open_failed"));
        assert_eq!(records[bad].meta.phase.as_deref(), Some("tls"));
    }
    assert!(errors[1].contains("expired"), "{:#?}", records[1]);
    assert!(errors[3].contains("wrong name"), "{:#?}", records[3]);
}

/// A `wss://` server (rustls, tungstenite) whose n-th connection gets the
/// n-th of `leaves` (cert, key), and the last one after that. It accepts
/// the upgrade and reads until the client closes.
fn server_presenting(leaves: Vec<&(std::path::PathBuf, std::path::PathBuf)>) -> Server {
    let configs: Vec<Arc<ServerConfig>> = leaves
        .into_iter()
        .map(|(cert, key)| {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .expect("read cert")
                .collect::<Result<_, _>>()
                .expect("parse cert");
            let key = PrivateKeyDer::from_pem_file(key).expect("read key");
            let config = ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
            Arc::new(config)
        })
        .collect();
    let served = AtomicUsize::new(0);
    spawn_server(move |tcp: TcpStream, _| {
        let n = served.fetch_add(1, Ordering::SeqCst).min(configs.len() - 1);
        let Ok(conn) = ServerConnection::new(configs[n].clone()) else {
            return;
        };
        let Ok(mut ws) = tungstenite::accept(StreamOwned::new(conn, tcp)) else {
            return;
        };
        while ws.read().is_ok() {}
    })
}
