//! OpenTelemetry spans of cache operations (cargo feature `otel`).
//!
//! Every counted operation ([`Operation`]) of a [`crate::Cache`] is one `CLIENT` span, made
//! by the tracer that OpenTelemetry's *global* tracer provider hands out, so whatever SDK the
//! application installs with `opentelemetry::global::set_tracer_provider` receives them.
//! The span's parent is the caller's current context (`opentelemetry::Context::current()`)
//! when the call starts; for an `_async` call, when its future is first polled.
//!
//! Attributes follow OpenTelemetry's database semantic conventions: `db.system.name` (and the
//! older `db.system`), `db.operation.name`, `server.address` / `server.port` for networked
//! backends, `error.type` and an error status on failure. No key, value, user name,
//! password or query option is ever an attribute.
//!
//! An exporter that blocks or fails must not slow a cache call: [`SpanQueue`] is a span
//! processor that hands finished spans to its own export thread through a bounded queue and
//! drops (and counts, [`dropped_spans`]) what does not fit, instead of waiting.

use crate::error::ErrorKind;
use crate::location::Location;
use crate::stats::Operation;
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span as SdkSpan, SpanData, SpanExporter, SpanProcessor};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The instrumentation scope of polycache's spans.
pub const SCOPE_NAME: &str = "polycache";

/// What every span of one cache carries: its database system and server.
pub(crate) struct SpanTarget {
    attributes: Vec<KeyValue>,
    /// A `tiered://` cache: its synchronous spans are made current while the call runs, so
    /// that the call's tier spans ([`tier_span`]) are their children.
    tiered: bool,
}

/// The `db.system.name` of a scheme: the convention's own names where one exists
/// (`redis`, `memcached`, `postgresql`, `sqlite`), `polycache.<scheme>` for the stores
/// polycache implements itself (`memory`, `file`, `dummy`, `tiered`, custom backends).
pub fn system_name(scheme: &str) -> &'static str {
    match scheme {
        "redis" | "rediss" | "unix" | "redis+unix" | "redis-sentinel" | "redis+sentinel"
        | "redis-cluster" | "redis+cluster" => "redis",
        "memcached" | "memcache" => "memcached",
        "postgres" | "postgresql" => "postgresql",
        "sqlite" => "sqlite",
        "memory" => "polycache.memory",
        "file" => "polycache.file",
        "dummy" => "polycache.dummy",
        "tiered" => "polycache.tiered",
        _ => "polycache.custom",
    }
}

impl SpanTarget {
    /// The attributes of a cache at `location` (already redacted: it is only read for its
    /// scheme and first host).
    pub(crate) fn new(location: &str) -> SpanTarget {
        let parsed = Location::parse(location).ok();
        let scheme = parsed.as_ref().map_or("custom", |l| l.scheme());
        let system = system_name(scheme);
        let mut attributes = vec![
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.system", system),
        ];
        if let Some(namespace) = parsed.as_ref().and_then(|l| namespace(system, l)) {
            attributes.push(KeyValue::new("db.namespace", namespace));
        }
        let networked = matches!(system, "redis" | "memcached" | "postgresql");
        if let Some(host) = parsed
            .as_ref()
            .filter(|_| networked)
            .and_then(|l| l.hosts().first())
        {
            // `host[:port]`, `[v6]:port`; user and password are not part of `hosts()`.
            let (address, port) = split_host_port(host);
            if !address.is_empty() {
                attributes.push(KeyValue::new("server.address", address.to_owned()));
            }
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        SpanTarget {
            attributes,
            tiered: system == "polycache.tiered",
        }
    }

    /// The target of one tier (`"l1"` or `"l2"`) of a tiered cache, at `location`.
    pub(crate) fn tier(location: &str, tier: &'static str) -> SpanTarget {
        let mut target = SpanTarget::new(location);
        target
            .attributes
            .push(KeyValue::new("polycache.tier", tier));
        target
    }

    /// The span of one call of `op`, a child of the caller's current context; `None` when
    /// the global provider does not record it (none installed, or sampled out).
    #[inline]
    pub(crate) fn start(&self, op: Operation) -> Option<OpSpan> {
        if known_noop() {
            return None;
        }
        let span = self.start_span(op)?;
        Some(if self.tiered {
            OpSpan::made_current(span)
        } else {
            OpSpan::own(span)
        })
    }

    /// [`SpanTarget::start`] of a call that may end on another thread (an awaited one): its
    /// span is never made current.
    #[inline]
    pub(crate) fn start_anywhere(&self, op: Operation) -> Option<OpSpan> {
        if known_noop() {
            return None;
        }
        self.start_span(op).map(OpSpan::own)
    }

    #[inline(never)]
    fn start_span(&self, op: Operation) -> Option<BoxedSpan> {
        let cx = Context::current();
        if cx.is_telemetry_suppressed() {
            return None;
        }
        let tracer = tracer();
        let mut span = tracer.build_with_context(
            tracer
                .span_builder(op.name())
                .with_kind(SpanKind::Client)
                .with_attributes(
                    self.attributes
                        .iter()
                        .cloned()
                        .chain([KeyValue::new("db.operation.name", op.name())]),
                ),
            &cx,
        );
        if !span.is_recording() {
            // A no-op provider's span is its parent's context (every SDK span gets an id
            // of its own): remember for a second that none is installed.
            if span.span_context().span_id() == cx.span().span_context().span_id() {
                NOOP_UNTIL.store(now() + NOOP_RECHECK.as_ticks(), Ordering::Relaxed);
            }
            span.end();
            return None;
        }
        Some(span)
    }
}

/// The `db.namespace` of a cache at `location` whose `db.system.name` is `system`, as the
/// semantic conventions define it: Redis, the database index (`db` option or URL path, 0
/// when neither names one); PostgreSQL, the database named in the URL's path (none when
/// the path is empty: the server then uses the user's name, which is not recorded);
/// SQLite, the database file's name (not its directory). Memcached and polycache's own
/// stores have none.
fn namespace(system: &str, location: &Location) -> Option<String> {
    let path = location.path().trim_start_matches('/');
    match system {
        "redis" => {
            let option = location
                .options()
                .iter()
                .rev()
                .find(|(name, _)| name == "db")
                .map(|(_, value)| value.as_str());
            let index = option.or(Some(path).filter(|p| !p.is_empty()));
            match index {
                Some(i) => i.parse::<u32>().ok().map(|i| i.to_string()),
                None => Some("0".to_owned()),
            }
        }
        "postgresql" => Some(path.to_owned()).filter(|p| !p.is_empty()),
        "sqlite" => std::path::Path::new(location.path())
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned),
        _ => None,
    }
}

thread_local! {
    /// The contexts of this thread's synchronous tiered calls in progress, innermost last:
    /// their spans are current (attached) until the call ends.
    static CURRENT: std::cell::RefCell<Vec<opentelemetry::ContextGuard>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The span of one tier's part of a synchronous tiered call in progress on this thread: a
/// child of that call's span, about `target` (the tier's store). `None` outside such a call
/// (awaited calls, and calls the cache does not count) or when nothing records it.
#[inline]
pub(crate) fn tier_span(target: &SpanTarget, op: Operation) -> Option<OpSpan> {
    let inside = CURRENT
        .try_with(|c| c.try_borrow().is_ok_and(|c| !c.is_empty()))
        .unwrap_or(false);
    if !inside {
        return None;
    }
    target.start_span(op).map(OpSpan::own)
}

/// Coarse-clock ticks until which the global tracer provider is known to be a no-op
/// (OpenTelemetry's default, before an application installs an SDK): calls then cost one
/// clock read and one load instead of building a span that nobody records.
static NOOP_UNTIL: AtomicU64 = AtomicU64::new(0);

/// How long a no-op global provider is taken for granted before it is checked again.
const NOOP_RECHECK: coarsetime::Duration = coarsetime::Duration::from_secs(1);

#[inline]
fn now() -> u64 {
    coarsetime::Instant::now_without_cache_update().as_ticks()
}

#[inline]
fn known_noop() -> bool {
    let until = NOOP_UNTIL.load(Ordering::Relaxed);
    until != 0 && now() < until
}

/// Tells polycache that the global tracer provider changed. Without it, polycache notices a
/// provider installed after a call found none within a second (it checks again once a
/// second while none is installed); call this right after
/// `opentelemetry::global::set_tracer_provider` to trace the very next call.
pub fn provider_changed() {
    NOOP_UNTIL.store(0, Ordering::Relaxed);
}

fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (addr, port);
        }
    }
    match host.rsplit_once(':') {
        Some((addr, port)) if !addr.contains(':') => (addr, port.parse().ok()),
        _ => (host, None),
    }
}

/// `future`, run in the OpenTelemetry context current now (when an `_async` operation is
/// called), not in the one current when it is polled: a future made under one span and
/// awaited (or spawned) under another is still a child of the first. Captures nothing while
/// the global provider is known to be a no-op.
#[inline]
pub(crate) fn in_callers_context<F: std::future::Future>(future: F) -> InCallersContext<F> {
    let parent = if known_noop() {
        None
    } else {
        Some(Context::current())
    };
    InCallersContext { parent, future }
}

/// A future polled in the context its maker captured; see [`in_callers_context`].
pub(crate) struct InCallersContext<F> {
    parent: Option<Context>,
    future: F,
}

impl<F: std::future::Future> std::future::Future for InCallersContext<F> {
    type Output = F::Output;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // SAFETY: `future` is pinned structurally: it is never moved out of `self`, and
        // `InCallersContext` has no `Drop` and is `Unpin` only when `F` is (auto trait);
        // `parent` is never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let _attached = this.parent.as_ref().map(|cx| cx.clone().attach());
        // SAFETY: as above, `this.future` stays where it is until `self` is dropped.
        unsafe { std::pin::Pin::new_unchecked(&mut this.future) }.poll(task)
    }
}

/// The tracer of the global provider, with polycache's scope.
#[inline]
fn tracer() -> opentelemetry::global::BoxedTracer {
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    let scope = SCOPE.get_or_init(|| {
        InstrumentationScope::builder(SCOPE_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build()
    });
    opentelemetry::global::tracer_provider().tracer_with_scope(scope.clone())
}

/// One operation's span, ended by [`OpSpan::finish`] (or when dropped).
pub(crate) struct OpSpan {
    span: Made,
    /// The span is the current one on this thread until it ends (see [`CURRENT`]).
    current: bool,
}

/// Where an [`OpSpan`]'s span lives.
enum Made {
    Own(BoxedSpan),
    /// Inside a context (the one made current).
    InContext(Context),
}

impl OpSpan {
    /// `span`, ended by [`OpSpan::finish`].
    fn own(span: BoxedSpan) -> OpSpan {
        OpSpan {
            span: Made::Own(span),
            current: false,
        }
    }

    /// `span`, made the current one on this thread until it ends.
    fn made_current(span: BoxedSpan) -> OpSpan {
        let cx = Context::current_with_span(span);
        let pushed = CURRENT
            .try_with(|c| match c.try_borrow_mut() {
                Ok(mut c) => {
                    c.push(cx.clone().attach());
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false);
        OpSpan {
            span: Made::InContext(cx),
            current: pushed,
        }
    }

    /// Ends the span; an error sets `error.type` (its kind, never its text, which may quote
    /// a key) and the span's status.
    pub(crate) fn finish(mut self, error: Option<ErrorKind>) {
        match &mut self.span {
            Made::Own(span) => {
                if let Some(kind) = error {
                    span.set_attribute(KeyValue::new("error.type", kind.as_str()));
                    span.set_status(Status::error(kind.as_str()));
                }
                span.end();
            }
            Made::InContext(cx) => {
                let span = cx.span();
                if let Some(kind) = error {
                    span.set_attribute(KeyValue::new("error.type", kind.as_str()));
                    span.set_status(Status::error(kind.as_str()));
                }
                span.end();
            }
        }
    }
}

impl Drop for OpSpan {
    fn drop(&mut self) {
        if self.current {
            // Sync calls end on the thread and in the order they began: this call's guard
            // is the innermost one.
            let _ = CURRENT.try_with(|c| c.try_borrow_mut().map(|mut c| c.pop()));
        }
    }
}

/// Spans [`SpanQueue`]s dropped, process-wide: queue full (the exporter is slow or blocked)
/// or export failed.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many finished spans every [`SpanQueue`] of this process dropped instead of
/// exporting: because the queue was full (an exporter that blocks or is slow) or because
/// the exporter failed. Also in the Prometheus text as `polycache_otel_dropped_spans_total`.
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A span processor that never makes the caller wait for the exporter.
///
/// OpenTelemetry's `SimpleSpanProcessor` exports on the thread that ends the span (a cache
/// call would wait for a blocked exporter), and its `BatchSpanProcessor` drops spans when
/// its queue is full but does not say how many. `SpanQueue` puts each finished, sampled
/// span into a bounded queue with `try_send` (no wait, no lock shared with the exporter)
/// and exports from a thread of its own, in batches of up to 512 spans. A span that does
/// not fit, or whose batch the exporter rejects, is dropped and counted in
/// [`dropped_spans`].
///
/// `SpanQueue` is `Send + Sync`; its export thread ends when the processor is shut down or
/// dropped (after the exporter returns from a call in progress).
///
/// ```
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
/// use polycache::otel::SpanQueue;
///
/// let exporter = InMemorySpanExporter::default();
/// let provider = SdkTracerProvider::builder()
///     .with_span_processor(SpanQueue::new(exporter.clone(), 2048))
///     .build();
/// opentelemetry::global::set_tracer_provider(provider.clone());
/// polycache::otel::provider_changed();
/// let cache = polycache::Cache::open("memory://").unwrap();
/// cache.get("k").unwrap();
/// provider.force_flush().unwrap();
/// assert_eq!(exporter.get_finished_spans().unwrap()[0].name, "get");
/// ```
#[derive(Debug)]
pub struct SpanQueue {
    sender: Mutex<Option<SyncSender<Message>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    shut_down: AtomicBool,
}

enum Message {
    Span(Box<SpanData>),
    Flush(mpsc::Sender<()>),
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

/// The most spans one `export` call receives.
const BATCH: usize = 512;

impl SpanQueue {
    /// A processor that exports through `exporter` and holds at most `capacity` finished
    /// spans waiting for it (at least 1).
    pub fn new<E: SpanExporter + 'static>(exporter: E, capacity: usize) -> SpanQueue {
        let (sender, receiver) = mpsc::sync_channel(capacity.max(1));
        let worker = std::thread::Builder::new()
            .name("polycache-otel".into())
            .spawn(move || export_loop(exporter, receiver))
            .ok();
        SpanQueue {
            sender: Mutex::new(worker.as_ref().map(|_| sender)),
            worker: Mutex::new(worker),
            shut_down: AtomicBool::new(false),
        }
    }

    fn sender(&self) -> Option<SyncSender<Message>> {
        self.sender.lock().ok().and_then(|s| s.clone())
    }
}

fn export_loop<E: SpanExporter>(exporter: E, receiver: Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Span(span) => batch.push(*span),
                Message::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let n = spans.len() as u64;
            if futures_executor::block_on(exporter.export(spans)).is_err() {
                DROPPED.fetch_add(n, Ordering::Relaxed);
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
    let _ = exporter.shutdown();
}

impl SpanProcessor for SpanQueue {
    fn on_start(&self, _span: &mut SdkSpan, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let Some(sender) = self.sender() else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match sender.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits up to 5 seconds for the spans queued so far to be exported.
    fn force_flush(&self) -> OTelSdkResult {
        let Some(sender) = self.sender() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let (done, wait) = mpsc::channel();
        sender
            .send_within(Message::Flush(done))
            .map_err(|_| OTelSdkError::Timeout(FLUSH_TIMEOUT))?;
        wait.recv_timeout(FLUSH_TIMEOUT)
            .map_err(|_| OTelSdkError::Timeout(FLUSH_TIMEOUT))
    }

    /// Stops taking spans; the export thread finishes what is queued and shuts the
    /// exporter down. Does not wait for an exporter that blocks.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        if let Ok(mut worker) = self.worker.lock() {
            // Detached: joining would wait for an exporter that may never return.
            worker.take();
        }
        Ok(())
    }
}

/// How long `force_flush` waits for the export thread.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// `SyncSender::send` with a bound: tries for [`FLUSH_TIMEOUT`], then gives up (a blocked
/// exporter keeps the queue full).
trait SendWithin {
    fn send_within(&self, message: Message) -> Result<(), ()>;
}

impl SendWithin for SyncSender<Message> {
    fn send_within(&self, mut message: Message) -> Result<(), ()> {
        let deadline = std::time::Instant::now() + FLUSH_TIMEOUT;
        loop {
            match self.try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(()),
                Err(TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(());
                    }
                    message = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
