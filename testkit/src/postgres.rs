//! PostgreSQL: [`PostgresServer`], a throwaway cluster made with `initdb`.

use crate::certs::TestCertificates;
use crate::process::{
    connect_probe, is_executable, run_to_completion, running_as_root, search_path,
    start_on_free_port, unprivileged_user, Launch, PortIn, ServerProcess,
};
use crate::tempdir::TempDir;
use crate::{TestkitError, POSTGRES_START_TIMEOUT};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A PostgreSQL server on a free port of `127.0.0.1`, with a fresh cluster in a temporary
/// directory, stopped when dropped.
///
/// The cluster has one superuser, `postgres`, with `trust` authentication, and durability
/// is off (`fsync`, `synchronous_commit`, `full_page_writes`). When the tests run as root,
/// `initdb` and `postgres` run as `nobody` (PostgreSQL refuses root) and the directory is
/// owned by that user. `Send` and `Sync`.
///
/// ```no_run
/// let pg = polycache_testkit::PostgresServer::start()?;
/// assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    // Declared before `dir` so the process is killed before the directory is removed.
    process: ServerProcess,
    port: u16,
    bin_dir: PathBuf,
    dir: TempDir,
}

impl PostgresServer {
    /// Runs `initdb`, starts `postgres` and waits (up to 30 s) until it accepts a login.
    ///
    /// The binaries are looked for on `PATH`, then under `/usr/lib/postgresql/*/bin`
    /// (the highest version).
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when PostgreSQL is not installed;
    /// [`TestkitError::StartFailed`] (with the end of the log) when `initdb` fails or the
    /// server does not accept connections in time.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_inner(None)
    }

    /// Starts a server with `ssl=on` and the server certificate of `certs`; it accepts both
    /// TLS and plain connections on its one port (clients choose with `sslmode`).
    ///
    /// # Errors
    /// As [`PostgresServer::start`], and [`TestkitError::Io`] when the key cannot be copied.
    pub fn start_tls(certs: &TestCertificates) -> Result<Self, TestkitError> {
        Self::start_inner(Some(certs))
    }

    fn start_inner(certs: Option<&TestCertificates>) -> Result<Self, TestkitError> {
        let bin_dir = find_postgres_bin_dir()?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = TempDir::create("postgres", run_as.as_ref())?;
        let data_dir = dir.path().join("data");

        let initdb_log = dir.path().join("initdb.log");
        let mut initdb = Launch::new(
            bin_dir.join("initdb"),
            [
                OsStr::new("-D"),
                data_dir.as_os_str(),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--no-sync"),
                OsStr::new("--locale=C"),
                OsStr::new("--encoding=UTF8"),
            ],
            dir.path(),
        );
        initdb.run_as = run_as.as_ref().map(|u| (u.uid, u.gid));
        run_to_completion("initdb", &initdb, &initdb_log)?;

        let mut launch = Launch::new(
            bin_dir.join("postgres"),
            [
                OsStr::new("-D"),
                data_dir.as_os_str(),
                OsStr::new("-k"),
                dir.path().as_os_str(),
                OsStr::new("-c"),
                OsStr::new("listen_addresses=127.0.0.1"),
                OsStr::new("-c"),
                OsStr::new("fsync=off"),
                OsStr::new("-c"),
                OsStr::new("synchronous_commit=off"),
                OsStr::new("-c"),
                OsStr::new("full_page_writes=off"),
            ],
            dir.path(),
        );
        launch.run_as = initdb.run_as;
        if let Some(certs) = certs {
            // PostgreSQL refuses a key that others can read or that another user owns.
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            for (from, to) in [(certs.server_cert(), &cert), (certs.server_key(), &key)] {
                fs::copy(&from, to)
                    .map_err(|e| TestkitError::io(format!("copying {}", from.display()), e))?;
                fs::set_permissions(to, fs::Permissions::from_mode(0o600))
                    .map_err(|e| TestkitError::io(format!("chmod {}", to.display()), e))?;
                if let Some(account) = &run_as {
                    std::os::unix::fs::chown(to, Some(account.uid), Some(account.gid))
                        .map_err(|e| TestkitError::io(format!("chown {}", to.display()), e))?;
                }
            }
            launch.args.extend([
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", cert.display()).into(),
                "-c".into(),
                format!("ssl_key_file={}", key.display()).into(),
            ]);
        }
        // SIGINT is PostgreSQL's "fast" shutdown: it ends sessions instead of waiting for them.
        let mut process = ServerProcess::new(
            "postgres",
            launch,
            dir.path().join("postgres.log"),
            libc::SIGINT,
        );
        // SIGQUIT ("immediate") makes the postmaster take its children down with it, which
        // a SIGKILL would not.
        process.drop_signal = libc::SIGQUIT;
        let port =
            start_on_free_port(&mut process, POSTGRES_START_TIMEOUT, PortIn::Flag, |port| {
                Ok(Box::new(move || postgres_accepts_login(port)))
            })?;
        Ok(PostgresServer {
            process,
            port,
            bin_dir,
            dir,
        })
    }

    /// The TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database as user `postgres`:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory that holds the server's unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the PostgreSQL programs used (`psql` is usually there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's temporary directory: `data/`, `initdb.log`, `postgres.log`, the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The postmaster's process id, or `None` once it was killed or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stops the server at once (`SIGQUIT`, "immediate" shutdown) and waits for it; for
    /// fault tests.
    ///
    /// Unlike `SIGKILL` this lets the postmaster take its child processes down too. When
    /// this returns the port is closed.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the signal cannot be sent or the process not waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.process.terminate(libc::SIGQUIT)
    }

    /// Stops the server with a "fast" shutdown (`SIGINT`) and waits for it.
    ///
    /// # Errors
    /// As [`PostgresServer::kill`].
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.process.stop()
    }

    /// Stops the server if it runs, then starts it again on the same port, keeping its data.
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] if it does not accept connections within 30 s.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let port = self.port;
        self.process
            .restart(POSTGRES_START_TIMEOUT, &mut || postgres_accepts_login(port))
    }

    /// Freezes the server with `SIGSTOP` (the postmaster and every backend process): connections stay open and the kernel still
    /// accepts new ones, but nothing is answered until [`PostgresServer::thaw`] — a server stuck in
    /// a long pause. For fault tests of timeouts. Dropping, stopping or restarting a frozen
    /// server thaws it first.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the server is not running or cannot be signalled.
    pub fn freeze(&mut self) -> Result<(), TestkitError> {
        self.process.freeze()
    }

    /// Lets a frozen server run again (`SIGCONT`); does nothing if it is not frozen.
    ///
    /// # Errors
    /// As [`PostgresServer::freeze`].
    pub fn thaw(&mut self) -> Result<(), TestkitError> {
        self.process.thaw()
    }
}

/// Whether the server completes a login as `postgres` (trust) to database `postgres`.
///
/// Speaks just enough of the v3 protocol: a StartupMessage, then the first reply must be
/// `AuthenticationOk`; while starting up the server answers with an `ErrorResponse` instead.
fn postgres_accepts_login(port: u16) -> bool {
    let Some(mut stream) = connect_probe(port) else {
        return false;
    };
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for part in ["user", "postgres", "database", "postgres"] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    if stream.write_all(&message).is_err() {
        return false;
    }
    let mut reply = [0u8; 9];
    if stream.read_exact(&mut reply).is_err() {
        return false;
    }
    let ok = reply == [b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    // Terminate, so the server does not log an unexpected EOF.
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    ok
}

fn find_postgres_bin_dir() -> Result<PathBuf, TestkitError> {
    let usable =
        |dir: &Path| is_executable(&dir.join("postgres")) && is_executable(&dir.join("initdb"));
    if let Some(postgres) = search_path("postgres") {
        // initdb finds its matching `postgres` next to its own resolved path.
        let resolved = fs::canonicalize(&postgres).unwrap_or(postgres);
        if let Some(dir) = resolved.parent().filter(|d| usable(d)) {
            return Ok(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = entry.path().join("bin");
            match version {
                Some(v) if usable(&bin) => Some((v, bin)),
                _ => None,
            }
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(TestkitError::MissingBinary {
            program: "postgres",
            package: "postgresql",
        })
}
