//! The memcached backend's native async side: one pipelined connection per server that
//! every async call shares.
//!
//! A connection is two tasks on polycache's runtime ([`crate::runtime`]), so they outlive
//! any one caller's runtime: a writer that sends requests in the order they come (many at
//! once when they queue up), and a reader that parses replies with the synchronous side's
//! parser and hands each request the replies it asked for, in order. Meta commands carry an
//! opaque token (`O` flag) that the reply must echo: a reply that answers another request
//! means the connection is out of step, and it is dropped. A request whose future is
//! dropped leaves the connection usable: its replies are read and thrown away. Each request
//! is bounded by `socket_timeout`; a connection that lets one wait longer is dropped, and the
//! requests in flight on it fail with a timeout. A forked child opens connections of its own.
//!
//! The requests and the decoding of their replies are `commands.rs`', as on the synchronous
//! side; failures count towards the same per-server health.

use super::commands::{
    ask_item_size_max, by_server, item_size_max, Answer, Batch, DeleteMany, Expect, GetMany,
    Request,
};
use super::conn::{no_address, reply_limit, Fault, Inbox, Io, Replies};
use super::protocol::{self, Kind, Reply};
use super::{
    clearing, counter, fault_error, io_error, keys, lock, set_many, store_request, Clearing,
    Endpoint, Inner, MemcachedBackend, Server, Settings,
};
use crate::backend::{AsyncBackend, BoxFuture};
use crate::error::Result;
use crate::value::Value;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify, OnceCell};
use tokio::time::Instant;

/// Bytes of queued requests the writer gathers into one write.
const WRITE_BATCH: usize = 256 * 1024;

/// The replies to one request, collected by the reader: what the decoders read.
#[derive(Default)]
pub(super) struct Frame {
    bytes: Vec<u8>,
    replies: VecDeque<Reply>,
}

impl Frame {
    /// Adds a reply whose bytes are `whole` in `inbox`.
    fn push(&mut self, inbox: &Inbox, mut reply: Reply, whole: Range<usize>) {
        let shift =
            |r: Range<usize>, base: usize| r.start - whole.start + base..r.end - whole.start + base;
        let base = self.bytes.len();
        reply.data = shift(reply.data, base);
        reply.name = shift(reply.name, base);
        reply.opaque = shift(reply.opaque, base);
        self.bytes.extend_from_slice(inbox.bytes(whole.clone()));
        self.replies.push_back(reply);
    }
}

impl Replies for Frame {
    fn reply(&mut self) -> Io<Reply> {
        self.replies
            .pop_front()
            .ok_or_else(|| Fault::Protocol("a reply is missing".into()))
    }
    fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.bytes.get(range).unwrap_or_default()
    }
}

/// A request on its way to the writer.
struct Outgoing {
    bytes: Vec<u8>,
    expects: Vec<Expect>,
    reply: oneshot::Sender<Io<Frame>>,
}

/// A request written (or being written) and not yet answered.
struct Pending {
    expects: Vec<Expect>,
    /// How many of `expects` are answered.
    done: usize,
    frame: Frame,
    reply: oneshot::Sender<Io<Frame>>,
    deadline: Option<Instant>,
}

/// What a connection's tasks and its users share.
struct Shared {
    /// Oldest first, in the order the requests were written.
    pending: Mutex<VecDeque<Pending>>,
    dead: AtomicBool,
    /// Wakes the reader when a request is queued on an idle connection, or the connection
    /// is dropped.
    woken: Notify,
    /// The longest reply accepted (see [`Inbox::max_reply`]).
    max_reply: AtomicUsize,
}

impl Shared {
    /// Drops the connection: every request in flight fails with `fault`, later ones at once.
    fn kill(&self, fault: &Fault) {
        let drained = {
            let mut pending = lock(&self.pending);
            self.dead.store(true, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for p in drained {
            let _ = p.reply.send(Err(fault.again()));
        }
        self.woken.notify_one();
    }

    /// Gives the reply `reply` (bytes `whole` of `inbox`) to the oldest request.
    fn deliver(&self, inbox: &Inbox, reply: Reply, whole: Range<usize>) -> Io<()> {
        let mut pending = lock(&self.pending);
        let Some(head) = pending.front_mut() else {
            return Err(Fault::Protocol(
                "the server sent a reply no request asked for".into(),
            ));
        };
        let ends = match head.expects[head.done] {
            Expect::One(token) => {
                let echoed = inbox.bytes(reply.opaque.clone());
                let carries = matches!(
                    reply.kind,
                    Kind::Hit
                        | Kind::Miss
                        | Kind::Value
                        | Kind::NotFound
                        | Kind::NotStored
                        | Kind::Exists
                );
                if let (Some(token), true) = (token, carries) {
                    if protocol::parse_counter(echoed) != Some(token) {
                        return Err(Fault::Protocol(format!(
                            "a reply carries the opaque {:?} where {token} was due: the \
                             connection is out of step",
                            String::from_utf8_lossy(echoed)
                        )));
                    }
                }
                true
            }
            Expect::UntilEnd => match reply.kind {
                Kind::Item | Kind::Stat => false,
                Kind::End | Kind::Error | Kind::ClientError | Kind::ServerError => true,
                other => {
                    return Err(Fault::Protocol(format!(
                        "unexpected {other:?} reply among get or stats replies"
                    )))
                }
            },
        };
        head.frame.push(inbox, reply, whole);
        if ends {
            head.done += 1;
            if head.done == head.expects.len() {
                if let Some(p) = pending.pop_front() {
                    // A dropped future's reply is thrown away here.
                    let _ = p.reply.send(Ok(p.frame));
                }
            }
        }
        Ok(())
    }

    /// The deadline of the oldest request, and whether any request is in flight.
    fn head(&self) -> (Option<Instant>, bool) {
        let pending = lock(&self.pending);
        match pending.front() {
            Some(p) => (p.deadline, true),
            None => (None, false),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no reply within socket_timeout; the connection was dropped",
    )
}

fn closed() -> Fault {
    Fault::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the connection was closed",
    ))
}

/// Sends the queued requests, oldest first, gathering those that wait into one write.
async fn write_loop(
    mut w: impl AsyncWrite + Unpin,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
    timeout: Option<Duration>,
) {
    let mut buf = Vec::new();
    while let Some(first) = queue.recv().await {
        buf.clear();
        {
            let mut pending = lock(&shared.pending);
            let mut next = Some(first);
            while let Some(o) = next.take() {
                if shared.dead.load(Ordering::Acquire) {
                    let _ = o.reply.send(Err(closed()));
                } else {
                    buf.extend_from_slice(&o.bytes);
                    pending.push_back(Pending {
                        expects: o.expects,
                        done: 0,
                        frame: Frame::default(),
                        reply: o.reply,
                        deadline: timeout.map(|t| Instant::now() + t),
                    });
                }
                if buf.len() < WRITE_BATCH {
                    next = queue.try_recv().ok();
                }
            }
        }
        if buf.is_empty() {
            continue;
        }
        shared.woken.notify_one();
        let written = match timeout {
            Some(t) => tokio::time::timeout(t, w.write_all(&buf))
                .await
                .unwrap_or_else(|_| Err(timed_out())),
            None => w.write_all(&buf).await,
        };
        if let Err(e) = written {
            shared.kill(&Fault::Io(e));
            return;
        }
        if buf.capacity() > 4 * WRITE_BATCH {
            buf = Vec::new();
        }
    }
}

/// Reads replies and hands them to their requests until the connection fails.
async fn read_loop(mut r: impl AsyncRead + Unpin, shared: Arc<Shared>) {
    let mut inbox = Inbox::new(shared.max_reply.load(Ordering::Relaxed));
    let fault = 'conn: loop {
        inbox.max_reply = shared.max_reply.load(Ordering::Relaxed);
        let need = loop {
            match inbox.next() {
                Ok(Ok((reply, whole))) => {
                    if let Err(f) = shared.deliver(&inbox, reply, whole) {
                        break 'conn f;
                    }
                }
                Ok(Err(need)) => break need,
                Err(f) => break 'conn f,
            }
        };
        if shared.dead.load(Ordering::Acquire) {
            return;
        }
        let (deadline, busy) = shared.head();
        let room = inbox.room(need);
        let read = if busy {
            match deadline {
                Some(d) => match tokio::time::timeout_at(d, r.read(room)).await {
                    Ok(read) => Some(read),
                    Err(_) => break Fault::Io(timed_out()),
                },
                None => Some(r.read(room).await),
            }
        } else {
            // Idle: read (the server may close the connection) until a request is queued,
            // whose deadline then applies.
            let woken = shared.woken.notified();
            let mut woken = pin!(woken);
            let mut reading = pin!(r.read(room));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(read) = reading.as_mut().poll(cx) {
                    return Poll::Ready(Some(read));
                }
                if woken.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        };
        match read {
            None => continue,
            Some(Ok(n)) => {
                if let Err(e) = inbox.filled(n) {
                    break Fault::Io(e);
                }
            }
            Some(Err(e)) => break Fault::Io(e),
        }
    };
    shared.kill(&fault);
}

/// One pipelined connection: a handle on its writer and what it shares with its reader.
pub(super) struct Link {
    queue: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
    tokens: AtomicU64,
}

impl Link {
    fn start(
        r: impl AsyncRead + Unpin + Send + 'static,
        w: impl AsyncWrite + Unpin + Send + 'static,
        timeout: Option<Duration>,
    ) -> Link {
        let shared = Arc::new(Shared {
            pending: Mutex::new(VecDeque::new()),
            dead: AtomicBool::new(false),
            woken: Notify::new(),
            max_reply: AtomicUsize::new(reply_limit(protocol::MAX_VALUE)),
        });
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(w, rx, Arc::clone(&shared), timeout));
        tokio::spawn(read_loop(r, Arc::clone(&shared)));
        Link {
            queue,
            shared,
            tokens: AtomicU64::new(1),
        }
    }

    /// Connects to `endpoint`; runs on polycache's runtime, where the tasks then live.
    async fn open(endpoint: Endpoint, settings: Settings) -> io::Result<Link> {
        let connect_timeout = settings
            .connect_timeout
            .unwrap_or(Duration::from_secs(86_400 * 365));
        let late = |_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        let timeout = settings.socket_timeout;
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let mut last = None;
                for addr in tokio::net::lookup_host((host.as_str(), port)).await? {
                    let attempt =
                        tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
                            .await
                            .map_err(late)
                            .and_then(|r| r);
                    match attempt {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            let (r, w) = s.into_split();
                            return Ok(Link::start(r, w, timeout));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| no_address(&host)))
            }
            Endpoint::Unix(path) => {
                let s =
                    tokio::time::timeout(connect_timeout, tokio::net::UnixStream::connect(path))
                        .await
                        .map_err(late)??;
                let (r, w) = s.into_split();
                Ok(Link::start(r, w, timeout))
            }
        }
    }

    fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed)
    }

    fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire)
    }

    /// Sends `bytes` and waits for the replies `expects` describes.
    async fn exchange(&self, bytes: Vec<u8>, expects: Vec<Expect>) -> Io<Frame> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Outgoing {
                bytes,
                expects,
                reply,
            })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// A server's shared connection, opened on first use in each process.
pub(super) struct Slot {
    cell: Mutex<(u64, Arc<OnceCell<Arc<Link>>>)>,
}

impl Slot {
    pub(super) fn new() -> Slot {
        Slot {
            cell: Mutex::new((crate::fork::generation(), Arc::new(OnceCell::new()))),
        }
    }

    /// The cell of this process's live connection, a fresh one when it has none.
    fn current(&self) -> Arc<OnceCell<Arc<Link>>> {
        let mut slot = lock(&self.cell);
        let now = crate::fork::generation();
        if slot.0 != now {
            // The parent's connection: its tasks are not in this process. Neither used nor
            // dropped (dropping could write to the parent's socket).
            let inherited = std::mem::replace(&mut *slot, (now, Arc::new(OnceCell::new())));
            std::mem::forget(inherited);
        } else if slot.1.get().is_some_and(|l| l.is_dead()) {
            slot.1 = Arc::new(OnceCell::new());
        }
        Arc::clone(&slot.1)
    }
}

impl Inner {
    /// The server's connection (`true` when it was open before this call), opened if needed.
    async fn link(&self, server: &Server) -> Result<(Arc<Link>, bool)> {
        let cell = server.aio.current();
        if let Some(link) = cell.get() {
            return Ok((Arc::clone(link), true));
        }
        let link = cell.get_or_try_init(|| self.open_link(server)).await?;
        Ok((Arc::clone(link), false))
    }

    /// Opens a connection on polycache's runtime and learns the server's item size limit.
    async fn open_link(&self, server: &Server) -> Result<Arc<Link>> {
        let (endpoint, settings) = (server.endpoint.clone(), self.settings.clone());
        let link = crate::runtime::spawn(Link::open(endpoint, settings))
            .await?
            .map_err(|e| io_error(server, server.connect_failure(), e))?;
        if server.learn_item_size {
            let mut out = Vec::new();
            let expect = ask_item_size_max(&mut out);
            let learned = match link.exchange(out, vec![expect]).await {
                Ok(mut frame) => item_size_max(&mut frame),
                Err(fault) => Err(fault),
            };
            match learned {
                Ok(Some(n)) => {
                    server.item_size_max.store(n, Ordering::Relaxed);
                    link.shared
                        .max_reply
                        .store(reply_limit(n), Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(fault) => {
                    link.shared.kill(&fault);
                    return Err(fault_error(server, fault));
                }
            }
        }
        server.reached.store(true, Ordering::Relaxed);
        Ok(Arc::new(link))
    }

    /// The connection for a call to `server`, after its health check; a failure to
    /// connect counts against the server.
    async fn link_for(&self, server: &Server) -> Result<(Arc<Link>, bool)> {
        self.check_alive(server)?;
        self.link(server).await.inspect_err(|_| self.failed(server))
    }

    /// [`Inner::single_on`], awaitable.
    async fn single_on_async(
        &self,
        server: &Server,
        wire: &[u8],
        request: Request<'_>,
    ) -> Result<Answer> {
        let mut retried = false;
        loop {
            let (link, reused) = self.link_for(server).await?;
            if let Some(e) = request.refused(server, wire) {
                return Err(e);
            }
            let mut out = Vec::with_capacity(wire.len() + 48);
            let expect = request.encode(&mut out, wire, Some(link.token()));
            let fault = match link.exchange(out, vec![expect]).await {
                Ok(mut frame) => match request.decode(server, &mut frame) {
                    Ok(answer) => {
                        self.succeeded(server);
                        return answer;
                    }
                    Err(fault) => {
                        link.shared.kill(&fault);
                        fault
                    }
                },
                Err(fault) => fault,
            };
            if reused && request.retry() && !retried && fault.is_stale_connection() {
                // The server restarted or dropped the connection: once more on a new one.
                retried = true;
                continue;
            }
            return Err(self.faulted(server, fault));
        }
    }

    /// [`Inner::single`], awaitable.
    async fn single_async(&self, key: &[u8], request: Request<'_>) -> Result<Answer> {
        let wire = self
            .wire_keys_async(&[key])
            .await?
            .pop()
            .unwrap_or_default();
        self.single_on_async(self.server(&wire), &wire, request)
            .await
    }

    /// [`Inner::wire_keys`], awaitable.
    async fn wire_keys_async<'k>(&self, keys: &[&'k [u8]]) -> Result<Vec<Cow<'k, [u8]>>> {
        if !self.settings.namespace {
            return Ok(self.fold_keys(keys, &[]));
        }
        let mut generations = Vec::new();
        for ns in keys::namespaces(keys) {
            let g = match self.cached_generation(ns) {
                Some(g) => g,
                None => self.bump_generation_async(ns, 0).await?,
            };
            generations.push((ns, g));
        }
        Ok(self.fold_keys(keys, &generations))
    }

    /// [`Inner::bump_generation`], awaitable.
    async fn bump_generation_async(&self, ns: &[u8], delta: u64) -> Result<u64> {
        let wire = keys::generation_key(ns);
        let request = keys::generation_request(delta);
        let g = self
            .single_on_async(self.server(&wire), &wire, request)
            .await?
            .count();
        self.remember_generation(ns, g);
        Ok(g)
    }

    /// Sends a server's share of a batch as one pipelined request; the connection, the
    /// replies and the units (ranges of `items`) they answer, in order.
    async fn share_async<B: Batch + Sync>(
        &self,
        batch: &B,
        server: &Server,
        items: &[usize],
    ) -> Result<(Arc<Link>, Frame, Vec<Range<usize>>)> {
        let mut retried = false;
        loop {
            let (link, reused) = self.link_for(server).await?;
            let (mut out, mut expects, mut units) = (Vec::new(), Vec::new(), Vec::new());
            let mut written = 0;
            while written < items.len() {
                let start = written;
                let done = batch.encode(&items[start..], server, &mut out, Some(link.token()));
                written = (start + done.items.max(1)).min(items.len());
                if let Some(expect) = done.expect {
                    expects.push(expect);
                    units.push(start..written);
                }
            }
            if expects.is_empty() {
                return Ok((link, Frame::default(), units));
            }
            match link.exchange(out, expects).await {
                Ok(frame) => return Ok((link, frame, units)),
                Err(fault) if reused && !retried && fault.is_stale_connection() => retried = true,
                Err(fault) => return Err(self.faulted(server, fault)),
            }
        }
    }

    /// [`Inner::pipeline`], awaitable: every server's share in flight at once.
    async fn pipeline_async<B: Batch + Sync>(&self, mut batch: B) -> Result<B::Output> {
        let groups = by_server(&self.ring, self.servers.len(), batch.wire());
        let shares = futures_util::future::join_all(
            groups
                .iter()
                .map(|(s, items)| self.share_async(&batch, &self.servers[*s], items)),
        )
        .await;
        let mut outcomes = Vec::with_capacity(groups.len());
        for ((s, items), share) in groups.into_iter().zip(shares) {
            let server = &self.servers[s];
            let error = match share {
                Err(e) => Some(e),
                Ok((link, mut frame, units)) => {
                    let decoded = units
                        .into_iter()
                        .try_for_each(|unit| batch.decode(&items[unit], server, &mut frame));
                    match decoded {
                        Ok(()) => {
                            self.succeeded(server);
                            None
                        }
                        Err(fault) => {
                            link.shared.kill(&fault);
                            Some(self.faulted(server, fault))
                        }
                    }
                }
            };
            outcomes.push(super::commands::Outcome { items, error });
        }
        batch.finish(outcomes)
    }
}

impl AsyncBackend for MemcachedBackend {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Value>>> {
        Box::pin(async move {
            let answer = self.inner.single_async(key, Request::Get).await?;
            Ok(answer.value())
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let request = store_request(value, ttl, false);
            self.inner.single_async(key, request).await.map(|_| ())
        })
    }

    fn add<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let request = store_request(value, ttl, true);
            Ok(self.inner.single_async(key, request).await?.flag())
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.inner.single_async(key, Request::Delete).await?.flag()) })
    }

    /// As the synchronous side: a read with the CAS token, then a delete with it.
    fn delete_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self.inner.single_async(key, Request::GetCas).await?.cas() {
                Some((v, cas, _)) if &*v == expected => Ok(self
                    .inner
                    .single_async(key, Request::DeleteCas(cas))
                    .await?
                    .flag()),
                _ => Ok(false),
            }
        })
    }

    fn has_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.inner.single_async(key, Request::Exists).await?.flag()) })
    }

    fn touch<'a>(&'a self, key: &'a [u8], ttl: Option<Duration>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let request = Request::Touch(keys::exptime(ttl));
            Ok(self.inner.single_async(key, request).await?.flag())
        })
    }

    fn incr<'a>(&'a self, key: &'a [u8], delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let request = Request::Arithmetic { delta, key };
            Ok(counter(
                self.inner.single_async(key, request).await?.count(),
            ))
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Value>>>> {
        Box::pin(async move {
            let wire = self.inner.wire_keys_async(keys).await?;
            let values = vec![None; keys.len()];
            self.inner.pipeline_async(GetMany { wire, values }).await
        })
    }

    fn set_many<'a>(
        &'a self,
        items: &'a [(&'a [u8], &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<usize>>> {
        Box::pin(async move {
            let keys: Vec<&[u8]> = items.iter().map(|(k, _)| *k).collect();
            let wire = self.inner.wire_keys_async(&keys).await?;
            self.inner.pipeline_async(set_many(wire, items, ttl)).await
        })
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let wire = self.inner.wire_keys_async(keys).await?;
            let batch = DeleteMany {
                wire,
                deleted: 0,
                errors: Vec::new(),
            };
            self.inner.pipeline_async(batch).await
        })
    }

    /// As the synchronous side: a read with the CAS token, then a store with it.
    fn extend_if_equals<'a>(
        &'a self,
        key: &'a [u8],
        expected: &'a [u8],
        ttl: Duration,
        replace: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let found = self.inner.single_async(key, Request::GetCas).await?.cas();
            match super::cas_extension(&found, expected, ttl, replace) {
                Some(request) => Ok(self.inner.single_async(key, request).await?.flag()),
                None => Ok(false),
            }
        })
    }

    fn clear<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let inner = &*self.inner;
            match clearing(&inner.settings, prefix)? {
                Clearing::Namespace(ns) => inner.bump_generation_async(ns, 1).await.map(|_| ()),
                Clearing::FlushAll => {
                    let flushes = inner
                        .servers
                        .iter()
                        .map(|s| inner.single_on_async(s, b"", Request::FlushAll));
                    let results = futures_util::future::join_all(flushes).await;
                    super::first_error(results.into_iter().map(|r| r.map(|_| ())))
                }
            }
        })
    }

    fn ttl<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<crate::expiry::TimeToLive>> {
        Box::pin(async move { Ok(self.inner.single_async(key, Request::Ttl).await?.lifetime()) })
    }

    fn replace<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let exptime = keys::exptime(ttl);
            let request = Request::Replace { value, exptime };
            Ok(self.inner.single_async(key, request).await?.flag())
        })
    }
}
