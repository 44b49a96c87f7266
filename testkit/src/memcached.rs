//! `memcached`: [`MemcachedServer`], over TCP or a unix socket.

use crate::process::{
    connect_probe, find_program, read_line, running_as_root, start_on_free_port, unprivileged_user,
    Launch, PortIn, ServerProcess,
};
use crate::tempdir::TempDir;
use crate::{TestkitError, PROBE_TIMEOUT, QUICK_START_TIMEOUT};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// A `memcached` on a free port of `127.0.0.1` or on a unix socket, in a temporary
/// directory, stopped when dropped.
///
/// UDP is off and the memory limit is 64 MiB. When the tests run as root it runs as
/// `nobody` (memcached refuses root). `Send` and `Sync`.
///
/// ```no_run
/// let mc = polycache_testkit::MemcachedServer::start()?;
/// assert!(mc.url().starts_with("memcached://127.0.0.1:"));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct MemcachedServer {
    // Declared before `dir` so the process is killed before the directory is removed.
    process: ServerProcess,
    endpoint: MemcachedEndpoint,
    dir: TempDir,
}

#[derive(Debug, Clone)]
enum MemcachedEndpoint {
    Tcp(u16),
    Unix(PathBuf),
}

impl MemcachedEndpoint {
    fn answers_version(&self) -> bool {
        match self {
            MemcachedEndpoint::Tcp(port) => match connect_probe(*port) {
                Some(stream) => memcached_answers_version(stream),
                None => false,
            },
            MemcachedEndpoint::Unix(path) => match UnixStream::connect(path) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
                    memcached_answers_version(stream)
                }
                Err(_) => false,
            },
        }
    }
}

impl MemcachedServer {
    /// Starts a server on a free TCP port and waits (up to 10 s) until it answers `version`.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when `memcached` is not installed;
    /// [`TestkitError::StartFailed`] (with the end of its log) when it does not answer.
    pub fn start() -> Result<Self, TestkitError> {
        let (mut process, dir) = Self::prepare(Vec::new())?;
        let port = start_on_free_port(&mut process, QUICK_START_TIMEOUT, PortIn::Flag, |port| {
            Ok(Box::new(move || {
                MemcachedEndpoint::Tcp(port).answers_version()
            }))
        })?;
        Ok(MemcachedServer {
            process,
            endpoint: MemcachedEndpoint::Tcp(port),
            dir,
        })
    }

    /// Starts a server that listens only on the unix socket `<tmpdir>/mc.sock`.
    ///
    /// # Errors
    /// As [`MemcachedServer::start`].
    pub fn start_unix() -> Result<Self, TestkitError> {
        // The directory is not known before it is made; `prepare` appends the socket path.
        let (mut process, dir) = Self::prepare(vec![OsString::from("-s")])?;
        let socket = dir.path().join("mc.sock");
        process.launch.args.push(socket.clone().into_os_string());
        let endpoint = MemcachedEndpoint::Unix(socket);
        let probe_endpoint = endpoint.clone();
        process.spawn()?;
        process.wait_ready(QUICK_START_TIMEOUT, &mut || {
            probe_endpoint.answers_version()
        })?;
        Ok(MemcachedServer {
            process,
            endpoint,
            dir,
        })
    }

    /// Finds the program, makes the directory and the launch description (without a port).
    fn prepare(args: Vec<OsString>) -> Result<(ServerProcess, TempDir), TestkitError> {
        let program = find_program("memcached", "memcached")?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = TempDir::create("memcached", run_as.as_ref())?;
        let mut all_args: Vec<OsString> = ["-U", "0", "-m", "64"].map(OsString::from).to_vec();
        if let Some(user) = &run_as {
            all_args.push("-u".into());
            all_args.push(user.name.clone().into());
        }
        all_args.extend(args);
        let launch = Launch::new(program, all_args, dir.path());
        let log_path = dir.path().join("memcached.log");
        let process = ServerProcess::new("memcached", launch, log_path, libc::SIGTERM);
        Ok((process, dir))
    }

    /// The TCP port on `127.0.0.1`, or `None` for a unix-socket server.
    pub fn port(&self) -> Option<u16> {
        match &self.endpoint {
            MemcachedEndpoint::Tcp(port) => Some(*port),
            MemcachedEndpoint::Unix(_) => None,
        }
    }

    /// The unix socket's path, or `None` for a TCP server.
    pub fn unix_socket_path(&self) -> Option<&Path> {
        match &self.endpoint {
            MemcachedEndpoint::Tcp(_) => None,
            MemcachedEndpoint::Unix(path) => Some(path),
        }
    }

    /// The address as memcached clients write it: `127.0.0.1:PORT` or the socket path.
    pub fn addr(&self) -> String {
        match &self.endpoint {
            MemcachedEndpoint::Tcp(port) => format!("127.0.0.1:{port}"),
            MemcachedEndpoint::Unix(path) => path.display().to_string(),
        }
    }

    /// The URL: `memcached://127.0.0.1:PORT` or `memcached:///…/mc.sock`.
    pub fn url(&self) -> String {
        format!("memcached://{}", self.addr())
    }

    /// The server's temporary directory, which holds `memcached.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, or `None` once it was killed or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server with `SIGKILL` and waits for it; for fault tests.
    ///
    /// When this returns the port (or socket) no longer accepts connections. Does nothing
    /// if the server is not running.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the signal cannot be sent or the process not waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.process.kill()
    }

    /// Stops the server with `SIGTERM` and waits for it (killing it after 10 s).
    ///
    /// # Errors
    /// As [`MemcachedServer::kill`].
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.process.stop()
    }

    /// Stops the server if it runs, then starts it again, empty, on the same address.
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] if it does not answer within 10 s.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let endpoint = self.endpoint.clone();
        self.process
            .restart(QUICK_START_TIMEOUT, &mut || endpoint.answers_version())
    }

    /// Freezes the server with `SIGSTOP`: connections stay open and the kernel still
    /// accepts new ones, but nothing is answered until [`MemcachedServer::thaw`] — a server stuck in
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
    /// As [`MemcachedServer::freeze`].
    pub fn thaw(&mut self) -> Result<(), TestkitError> {
        self.process.thaw()
    }
}

fn memcached_answers_version(mut stream: impl Read + Write) -> bool {
    if stream.write_all(b"version\r\n").is_err() {
        return false;
    }
    matches!(read_line(&mut stream), Some(line) if line.starts_with("VERSION"))
}
