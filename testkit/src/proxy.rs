//! A TCP proxy on loopback that a fault test can tell to drop connections or cut replies.

use crate::TestkitError;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// A TCP proxy on a free port of `127.0.0.1` in front of one server, for fault tests.
///
/// Clients connect to [`FaultProxy::port`]; each connection is forwarded to the target
/// address by two threads. Faults are injected on command:
///
/// * [`FaultProxy::cut_all`] closes every open connection at once, both ways (a network
///   hiccup or a server closing idle connections);
/// * [`FaultProxy::truncate_replies`] arms the next `n` server replies: each is forwarded
///   only in part (half of what the server sent in that read), then its connection is
///   closed — the request reached the server, the client sees a reply cut in the middle;
/// * [`FaultProxy::refuse`] makes new connections close as soon as they are accepted.
///
/// `Send` and `Sync`. Dropping the proxy closes its listener and every connection.
///
/// ```no_run
/// let redis = polycache_testkit::RedisServer::start()?;
/// let proxy = polycache_testkit::FaultProxy::start(redis.addr())?;
/// let url = format!("redis://127.0.0.1:{}/0", proxy.port());
/// proxy.truncate_replies(1);
/// # let _ = url;
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct ProxyState {
    stopping: AtomicBool,
    refusing: AtomicBool,
    truncate: AtomicUsize,
    truncated: AtomicU64,
    /// Line ends (`\n`) clients sent: one per request of a line protocol (memcached's).
    lines_sent: AtomicU64,
    next_id: AtomicU64,
    /// Both streams of every open connection, to shut them down from outside.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
}

impl ProxyState {
    fn forget(&self, id: u64) {
        if let Some((client, server)) = lock(&self.open).remove(&id) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FaultProxy {
    /// Starts forwarding from a free loopback port to `target`.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if no port can be bound or the thread not spawned.
    pub fn start(target: SocketAddr) -> Result<FaultProxy, TestkitError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| TestkitError::io("binding the fault proxy", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TestkitError::io("reading the fault proxy's port", e))?
            .port();
        let state = Arc::new(ProxyState::default());
        let shared = state.clone();
        let acceptor = thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(listener, target, shared))
            .map_err(|e| TestkitError::io("spawning the fault proxy", e))?;
        Ok(FaultProxy {
            port,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// The port clients connect to, on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every open connection, both ways; new ones are accepted as before.
    pub fn cut_all(&self) {
        let ids: Vec<u64> = lock(&self.state.open).keys().copied().collect();
        for id in ids {
            self.state.forget(id);
        }
    }

    /// Forwards only part of each of the next `n` server replies, then closes its connection.
    pub fn truncate_replies(&self, n: usize) {
        self.state.truncate.store(n, Ordering::SeqCst);
    }

    /// How many replies were cut so far.
    pub fn truncated(&self) -> u64 {
        self.state.truncated.load(Ordering::SeqCst)
    }

    /// While `on`, new connections are closed as soon as they are accepted.
    pub fn refuse(&self, on: bool) {
        self.state.refusing.store(on, Ordering::SeqCst);
    }

    /// How many line ends (`\n` bytes) clients sent through the proxy so far: on a line
    /// protocol such as memcached's, the number of requests (retrieval commands are one
    /// line each), counted where they pass, never timed.
    pub fn lines_sent(&self) -> u64 {
        self.state.lines_sent.load(Ordering::SeqCst)
    }

    /// How many connections are open through the proxy now.
    pub fn open_connections(&self) -> usize {
        lock(&self.state.open).len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut_all();
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, state: Arc<ProxyState>) {
    for client in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if state.refusing.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        if let Err(e) = spawn_pumps(client, server, &state) {
            eprintln!("fault proxy: cannot forward a connection: {e}");
        }
    }
}

fn spawn_pumps(client: TcpStream, server: TcpStream, state: &Arc<ProxyState>) -> io::Result<()> {
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    lock(&state.open).insert(id, (client.try_clone()?, server.try_clone()?));
    let (c_read, s_write) = (client.try_clone()?, server.try_clone()?);
    let up = state.clone();
    thread::Builder::new()
        .name("fault-proxy-up".into())
        .spawn(move || {
            pump(c_read, s_write, None, Some(&up));
            up.forget(id);
        })?;
    let down = state.clone();
    thread::Builder::new()
        .name("fault-proxy-down".into())
        .spawn(move || {
            pump(server, client, Some(&down), None);
            down.forget(id);
        })?;
    Ok(())
}

/// Copies `from` into `to` until either side closes; replies (`truncating` set) may be cut;
/// requests (`counting` set) have their line ends counted.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    truncating: Option<&ProxyState>,
    counting: Option<&ProxyState>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(state) = counting {
            let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
            state.lines_sent.fetch_add(lines as u64, Ordering::SeqCst);
        }
        let cut = truncating.is_some_and(|state| {
            state
                .truncate
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
        });
        if cut {
            let _ = to.write_all(&buf[..n / 2]);
            if let Some(state) = truncating {
                state.truncated.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
