//! TLS for `postgres://` (the `sslmode` and `sslrootcert` options), with rustls as redis:// uses.
//!
//! The modes mean what they mean to libpq:
//!
//! | `sslmode`     | encrypted | server certificate checked                            |
//! |---------------|-----------|-------------------------------------------------------|
//! | `disable`     | no        | —  (the default)                                      |
//! | `prefer`      | if the server offers it | no                                      |
//! | `require`     | yes       | no; with `sslrootcert`, its chain (as `verify-ca`)    |
//! | `verify-ca`   | yes       | chained to `sslrootcert`                              |
//! | `verify-full` | yes       | chained to `sslrootcert` and issued for the host name |
//!
//! `sslrootcert` is a PEM file of trusted certificates, or `system` for the Mozilla roots
//! (webpki-roots), as libpq 16 spells it.

use crate::error::{Error, Result};
use crate::location::Options;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a PostgreSQL backend secures its connections.
#[derive(Clone)]
pub(super) enum PgTls {
    /// Plain TCP or a unix socket.
    Off,
    /// TLS as `sslmode` asks (the mode is set on the connection's `Config`).
    Rustls(MakeRustlsConnect),
}

impl PgTls {
    /// Reads `sslmode` and `sslrootcert`, sets the mode on `config`.
    pub(super) fn take(
        options: &mut Options,
        config: &mut tokio_postgres::Config,
    ) -> Result<PgTls> {
        let mode = options.take("sslmode");
        let root = options.take("sslrootcert");
        let (mode, ssl_mode) = match mode.as_deref().map(str::trim) {
            None | Some("disable") => {
                if root.is_some() {
                    return Err(options.error(
                        "sslrootcert",
                        "option sslrootcert needs an sslmode (require, verify-ca or verify-full)",
                    ));
                }
                return Ok(PgTls::Off);
            }
            Some("prefer") => (Check::Nothing, SslMode::Prefer),
            Some("require") if root.is_some() => (Check::Chain, SslMode::Require),
            Some("require") => (Check::Nothing, SslMode::Require),
            Some("verify-ca") => (Check::Chain, SslMode::Require),
            Some("verify-full") => (Check::Full, SslMode::Require),
            Some(other) => {
                return Err(options.error(
                    "sslmode",
                    format!(
                        "invalid value {other:?} for option 'sslmode' of postgres://: expected \
                         disable, prefer, require, verify-ca or verify-full"
                    ),
                ))
            }
        };
        config.ssl_mode(ssl_mode);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS for postgres:// cannot be set up: {e}")))?;
        let tls = match mode {
            Check::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Relaxed {
                    provider,
                    chain: None,
                }))
                .with_no_client_auth(),
            Check::Chain | Check::Full => {
                // The error names the option at fault: a missing or unusable sslrootcert.
                let culprit = if root.is_some() {
                    "sslrootcert"
                } else {
                    "sslmode"
                };
                let roots = roots(root.as_deref(), &mode).map_err(|e| options.blame(culprit, e))?;
                let roots = Arc::new(roots);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| {
                        Error::config(format!("TLS for postgres:// cannot be set up: {e}"))
                    })?;
                if mode == Check::Full {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(Relaxed {
                            provider,
                            chain: Some(webpki),
                        }))
                        .with_no_client_auth()
                }
            }
        };
        Ok(PgTls::Rustls(MakeRustlsConnect::new(tls)))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    Full,
}

/// The trusted certificates: the PEM file `root`, or the Mozilla roots for `system`.
fn roots(root: Option<&str>, mode: &Check) -> Result<RootCertStore> {
    let Some(path) = root else {
        let name = if *mode == Check::Full {
            "verify-full"
        } else {
            "verify-ca"
        };
        return Err(Error::config(format!(
            "sslmode={name} needs sslrootcert=/path/to/ca.pem (or sslrootcert=system for the \
             Mozilla root certificates)"
        )));
    };
    let mut store = RootCertStore::empty();
    if path == "system" {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    let bad = |why: String| Error::config(format!("cannot use the sslrootcert file {path}: {why}"));
    let pem = crate::backend::read_pem_file("sslrootcert", std::path::Path::new(path))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("it holds no usable PEM certificate".into()));
    }
    Ok(store)
}

/// The checks of `require`/`prefer` (none: libpq's meaning) and `verify-ca` (the chain, not
/// the name) on the server's certificate; handshake signatures are always verified.
#[derive(Debug)]
struct Relaxed {
    provider: Arc<CryptoProvider>,
    /// `Some` for `verify-ca`: the verifier whose name check is waived.
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
