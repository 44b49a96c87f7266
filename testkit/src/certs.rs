//! [`TestCertificates`]: a throwaway CA and server certificate for the TLS tests.

use crate::process::{find_program, run_to_completion, Launch};
use crate::tempdir::TempDir;
use crate::TestkitError;
use std::fs;
use std::path::PathBuf;

/// A throw-away certificate authority and a server certificate it signed, for
/// `127.0.0.1` and `localhost`, made with `openssl` in a temporary directory removed on drop.
///
/// ```no_run
/// let certs = polycache_testkit::TestCertificates::generate()?;
/// let redis = polycache_testkit::RedisServer::start_tls(&certs)?;
/// assert!(redis.tls_url().is_some());
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct TestCertificates {
    dir: TempDir,
}

impl TestCertificates {
    /// Makes `ca.crt`, `server.crt` and `server.key` (EC P-256, valid for two days).
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] without `openssl`; [`TestkitError::StartFailed`]
    /// (with its output) when a step fails.
    pub fn generate() -> Result<Self, TestkitError> {
        let openssl = find_program("openssl", "openssl")?;
        let dir = TempDir::create("certs", None)?;
        let ext = dir.path().join("server.ext");
        fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .map_err(|e| TestkitError::io(format!("writing {}", ext.display()), e))?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=polycache test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        let log = dir.path().join("openssl.log");
        for args in steps {
            let launch = Launch::new(openssl.clone(), args.iter().copied(), dir.path());
            run_to_completion("openssl", &launch, &log)?;
        }
        Ok(TestCertificates { dir })
    }

    /// The certificate authority's certificate (PEM): what clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server's certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}
