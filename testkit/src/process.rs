//! What every server shares: starting a program on a free port and probing it until it
//! answers, stopping it (gracefully, or as a crash would), freezing it, its log, and the
//! account it runs under.

use crate::{
    free_loopback_port, TestkitError, LOG_TAIL_LINES, POLL_INTERVAL, PROBE_TIMEOUT, START_ATTEMPTS,
    STOP_GRACE,
};
use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A readiness check: true once the server answers.
type Probe = Box<dyn FnMut() -> bool>;

/// What to run: the program, its arguments, its directory and the user to run it as.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: PathBuf,
    pub(crate) run_as: Option<(u32, u32)>,
}

impl Launch {
    pub(crate) fn new<I, S>(program: PathBuf, args: I, cwd: &Path) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Launch {
            program,
            args: args.into_iter().map(Into::into).collect(),
            cwd: cwd.to_path_buf(),
            run_as: None,
        }
    }

    /// A command with stdin closed and stdout and stderr going to `log`.
    pub(crate) fn command(&self, log: File) -> Result<Command, TestkitError> {
        let log_err = log
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the log file handle", e))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some((uid, gid)) = self.run_as {
            // std also clears the supplementary groups when it drops root.
            cmd.uid(uid).gid(gid);
        }
        Ok(cmd)
    }
}

/// One server process, respawnable, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pub(crate) name: &'static str,
    pub(crate) launch: Launch,
    pub(crate) log_path: PathBuf,
    pub(crate) child: Option<Child>,
    /// Signal of a graceful stop.
    pub(crate) stop_signal: libc::c_int,
    /// Signal sent on drop; the process is killed if it has not exited shortly after.
    pub(crate) drop_signal: libc::c_int,
    /// Whether [`ServerProcess::freeze`] stopped it (and its children) with `SIGSTOP`.
    pub(crate) frozen: bool,
}

/// Why a spawned server did not become ready.
pub(crate) enum NotReady {
    /// It exited: most often because another process took the port.
    Exited(TestkitError),
    /// It did not answer in time, or it could not be spawned.
    Failed(TestkitError),
}

impl ServerProcess {
    pub(crate) fn new(
        name: &'static str,
        launch: Launch,
        log_path: PathBuf,
        stop_signal: libc::c_int,
    ) -> Self {
        ServerProcess {
            name,
            launch,
            log_path,
            child: None,
            stop_signal,
            drop_signal: libc::SIGKILL,
            frozen: false,
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn spawn(&mut self) -> Result<(), TestkitError> {
        let log = open_log(&self.log_path)?;
        let child = self.launch.command(log)?.spawn().map_err(|e| {
            TestkitError::io(format!("starting {}", self.launch.program.display()), e)
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` passes.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        probe: &mut dyn FnMut() -> bool,
    ) -> Result<(), TestkitError> {
        self.wait_ready_detailed(timeout, probe)
            .map_err(|e| match e {
                NotReady::Exited(e) | NotReady::Failed(e) => e,
            })
    }

    pub(crate) fn wait_ready_detailed(
        &mut self,
        timeout: Duration,
        probe: &mut dyn FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(NotReady::Failed(
                    self.start_failed("it is not running".into()),
                ));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(NotReady::Exited(self.start_failed(describe_exit(status))));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(NotReady::Failed(TestkitError::io(
                        format!("checking on {}", self.name),
                        e,
                    )))
                }
            }
            if probe() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.terminate(libc::SIGKILL);
                return Err(NotReady::Failed(self.start_failed(format!(
                    "it did not answer within {} s",
                    timeout.as_secs()
                ))));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    pub(crate) fn start_failed(&self, reason: String) -> TestkitError {
        TestkitError::StartFailed {
            server: self.name,
            reason,
            log_tail: log_tail(&self.log_path),
        }
    }

    pub(crate) fn kill(&mut self) -> Result<(), TestkitError> {
        self.terminate(libc::SIGKILL)
    }

    /// Stops the process and its direct children (PostgreSQL's per-connection backends)
    /// with `SIGSTOP`: they keep their sockets open but answer nothing, as a server stuck in
    /// swap or a long pause would. The kernel still accepts connections on its port.
    pub(crate) fn freeze(&mut self) -> Result<(), TestkitError> {
        self.signal_tree(libc::SIGSTOP)?;
        self.frozen = true;
        Ok(())
    }

    /// Lets a frozen process and its children run again (`SIGCONT`).
    pub(crate) fn thaw(&mut self) -> Result<(), TestkitError> {
        if !self.frozen {
            return Ok(());
        }
        self.signal_tree(libc::SIGCONT)?;
        self.frozen = false;
        Ok(())
    }

    pub(crate) fn signal_tree(&self, signal: libc::c_int) -> Result<(), TestkitError> {
        let context = || format!("signalling {} ({signal})", self.name);
        let Some(pid) = self.pid() else {
            return Err(TestkitError::io(
                context(),
                io::Error::new(io::ErrorKind::NotFound, "the server is not running"),
            ));
        };
        // The parent first: once stopped it forks no backend we would miss.
        signal_pid(pid, signal).map_err(|e| TestkitError::io(context(), e))?;
        for child in child_pids(pid) {
            signal_pid(child, signal).map_err(|e| TestkitError::io(context(), e))?;
        }
        Ok(())
    }

    pub(crate) fn stop(&mut self) -> Result<(), TestkitError> {
        self.terminate(self.stop_signal)
    }

    /// Sends `signal`, waits up to [`STOP_GRACE`] for the exit, then kills; always reaps.
    pub(crate) fn terminate(&mut self, signal: libc::c_int) -> Result<(), TestkitError> {
        // A stopped process would sit on a catchable signal until the grace ran out.
        let _ = self.thaw();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let result = signal_and_reap(&mut child, signal, STOP_GRACE);
        if result.is_err() {
            // Keep the handle so that Drop tries again.
            self.child = Some(child);
        }
        result.map_err(|e| TestkitError::io(format!("stopping {}", self.name), e))
    }

    pub(crate) fn restart(
        &mut self,
        timeout: Duration,
        probe: &mut dyn FnMut() -> bool,
    ) -> Result<(), TestkitError> {
        self.stop()?;
        // The old process may need a moment to release the port; a fresh spawn that exits
        // early is tried again until the deadline.
        let deadline = Instant::now() + timeout;
        loop {
            self.spawn()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_ready_detailed(left, probe) {
                Ok(()) => return Ok(()),
                Err(NotReady::Exited(e))
                    if Instant::now() + Duration::from_millis(200) >= deadline =>
                {
                    return Err(e)
                }
                Err(NotReady::Exited(_)) => thread::sleep(Duration::from_millis(100)),
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Frozen children (PostgreSQL backends) must run to notice their parent is gone.
        let _ = self.thaw();
        if let Some(mut child) = self.child.take() {
            // Errors cannot be reported from Drop; SIGKILL and a blocking wait are the
            // fallback inside `signal_and_reap`.
            let _ = signal_and_reap(&mut child, self.drop_signal, Duration::from_secs(5));
        }
    }
}

/// Sends `signal` to `child`, waits up to `grace` for it to exit, then SIGKILLs and reaps it.
pub(crate) fn signal_and_reap(
    child: &mut Child,
    signal: libc::c_int,
    grace: Duration,
) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if signal == libc::SIGKILL {
        child.kill()?;
        child.wait()?;
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: `pid` is our own child, not yet reaped (try_wait above saw it running, and
    // only this function waits on it), so the id cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Where a server is told its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortIn {
    /// `prepare` writes it into a config file.
    ConfigFile,
    /// `-p PORT` is appended to the command line.
    Flag,
}

/// Spawns the process on a fresh free port up to [`START_ATTEMPTS`] times.
///
/// `prepare(port)` writes the port where the server reads it, if that is a file, and
/// returns the readiness probe. Only an early exit of the server (most often: another
/// process took the port) leads to another attempt; a timeout does not.
pub(crate) fn start_on_free_port<F>(
    process: &mut ServerProcess,
    timeout: Duration,
    port_in: PortIn,
    mut prepare: F,
) -> Result<u16, TestkitError>
where
    F: FnMut(u16) -> Result<Probe, TestkitError>,
{
    let base_args = process.launch.args.clone();
    let takes_port_flag = port_in == PortIn::Flag;
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_loopback_port()?;
        process.launch.args = base_args.clone();
        if takes_port_flag {
            process.launch.args.push("-p".into());
            process.launch.args.push(port.to_string().into());
        }
        let mut probe = prepare(port)?;
        process.spawn()?;
        match process.wait_ready_detailed(timeout, &mut probe) {
            Ok(()) => return Ok(port),
            Err(NotReady::Exited(e)) => last_error = Some(e),
            Err(NotReady::Failed(e)) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| process.start_failed("no attempt was made".into())))
}

pub(crate) fn describe_exit(status: ExitStatus) -> String {
    format!("it exited before answering ({status})")
}

pub(crate) fn connect_probe(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    Some(stream)
}

/// Reads one `\n`-terminated line (at most 1 KiB); `None` on error or end of stream.
pub(crate) fn read_line(stream: &mut impl Read) -> Option<String> {
    let mut reader = BufReader::new(stream.take(1024));
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

pub(crate) fn open_log(path: &Path) -> Result<File, TestkitError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TestkitError::io(format!("opening log file {}", path.display()), e))
}

/// The last [`LOG_TAIL_LINES`] lines of a log file, or a note that it cannot be read.
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}

pub(crate) fn search_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds `program` on `PATH`, or else in `/usr/sbin` and `/usr/bin` (often missing from a
/// non-root `PATH`).
pub(crate) fn find_program(
    program: &'static str,
    package: &'static str,
) -> Result<PathBuf, TestkitError> {
    search_path(program)
        .or_else(|| {
            ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(program))
                .find(|candidate| is_executable(candidate))
        })
        .ok_or(TestkitError::MissingBinary { program, package })
}

/// Sends `signal` to `pid`; a process that exited meanwhile is not an error.
pub(crate) fn signal_pid(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions; `pid` is our server or one of its
    // children, listed from /proc just now.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// The processes whose parent is `pid`, read from `/proc/*/stat`.
pub(crate) fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let candidate: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let after_comm = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some(candidate)
        })
        .collect()
}

pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The account servers run as when the tests run as root.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

pub(crate) fn unprivileged_user() -> Result<Account, TestkitError> {
    const NAME: &str = "nobody";
    let c_name = CString::new(NAME).expect("no NUL in a literal");
    // SAFETY: `passwd` is plain old data; all-zero is a valid value that getpwnam_r overwrites.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: a NUL-terminated name, an owned `passwd`,
    // a buffer of the length passed, and an out-pointer; getpwnam_r is thread-safe.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        let source = if rc != 0 {
            io::Error::from_raw_os_error(rc)
        } else {
            io::Error::new(io::ErrorKind::NotFound, "no such user")
        };
        return Err(TestkitError::io(
            format!("looking up user `{NAME}` to run servers as when root"),
            source,
        ));
    }
    Ok(Account {
        name: NAME.to_string(),
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

pub(crate) fn run_to_completion(
    name: &'static str,
    launch: &Launch,
    log_path: &Path,
) -> Result<(), TestkitError> {
    let log = open_log(log_path)?;
    let status = launch
        .command(log)?
        .status()
        .map_err(|e| TestkitError::io(format!("running {}", launch.program.display()), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(TestkitError::StartFailed {
            server: name,
            reason: format!("it exited with {status}"),
            log_tail: log_tail(log_path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;

    #[test]
    fn missing_program_names_its_package() {
        let err = find_program("polycache-no-such-program", "some-package").unwrap_err();
        assert!(matches!(err, TestkitError::MissingBinary { .. }));
        let text = err.to_string();
        assert!(text.contains("polycache-no-such-program"), "{text}");
        assert!(text.contains("`some-package` package"), "{text}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = TempDir::create("logtail", None).unwrap();
        let log = dir.path().join("x.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("line 99"));
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
