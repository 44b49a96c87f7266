//! OpenTelemetry spans of cache operations (feature `otel`), seen through the SDK's
//! in-memory exporter; and `SpanQueue`'s rule that a blocked or failing exporter never
//! holds up or fails a cache call.
//!
//! The global tracer provider is process-wide, so every test here runs under one lock and
//! installs its own provider.

use opentelemetry::trace::{FutureExt, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, Value as OtelValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter};
use polycache::otel::{dropped_spans, SpanQueue};
use polycache::{Cache, Expiry};
use std::sync::{Arc, Mutex, MutexGuard};

static GLOBAL: Mutex<()> = Mutex::new(());

/// Installs a provider that exports into a fresh in-memory exporter (synchronously).
fn install_in_memory() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    polycache::otel::provider_changed();
    (provider, exporter)
}

/// The global lock, and a provider as `install_in_memory` makes one.
fn install() -> (
    MutexGuard<'static, ()>,
    SdkTracerProvider,
    InMemorySpanExporter,
) {
    let guard = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let (provider, exporter) = install_in_memory();
    (guard, provider, exporter)
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a OtelValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn spans(provider: &SdkTracerProvider, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

#[test]
fn each_operation_is_a_client_span_with_database_attributes() {
    let (_guard, provider, exporter) = install();
    let cache = Cache::open("memory://otel-ops").unwrap();
    cache.set("k", b"v", Expiry::Never).unwrap();
    cache.get("k").unwrap();
    cache.get_many(&["k", "absent"], None).unwrap();
    cache.delete("k").unwrap();
    let spans = spans(&provider, &exporter);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["set", "get", "get_many", "delete"]);
    for span in &spans {
        assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Client);
        assert_eq!(
            attr(span, "db.system.name"),
            Some(&OtelValue::from("polycache.memory"))
        );
        assert_eq!(
            attr(span, "db.system"),
            Some(&OtelValue::from("polycache.memory"))
        );
        assert_eq!(
            attr(span, "db.operation.name").map(|v| v.as_str().into_owned()),
            Some(span.name.to_string())
        );
        assert_eq!(span.status, Status::Unset);
        assert_eq!(span.instrumentation_scope.name(), "polycache");
        // No key and no value anywhere in the attributes.
        for kv in &span.attributes {
            let text = kv.value.as_str();
            assert!(
                !text.contains(":1:k") && text != "v",
                "{kv:?} leaks a key or value"
            );
        }
    }
}

#[test]
fn spans_join_the_callers_current_span() {
    let (_guard, provider, exporter) = install();
    let cache = Cache::open("memory://otel-parent").unwrap();
    let tracer = provider.tracer("app");
    tracer.in_span("request", |_cx| {
        cache.set("k", b"v", Expiry::Never).unwrap();
    });
    cache.get("k").unwrap(); // no caller span: a root span
    let spans = spans(&provider, &exporter);
    let set = spans.iter().find(|s| s.name == "set").unwrap();
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    let get = spans.iter().find(|s| s.name == "get").unwrap();
    assert_eq!(set.parent_span_id, request.span_context.span_id());
    assert_eq!(set.span_context.trace_id(), request.span_context.trace_id());
    assert_eq!(get.parent_span_id, opentelemetry::trace::SpanId::INVALID);
}

#[test]
fn failed_calls_set_error_status_and_type() {
    let (_guard, provider, exporter) = install();
    let cache = Cache::open("memory://otel-errors").unwrap();
    // incr of a missing key fails with NotFound.
    assert!(cache.incr("absent", 1).is_err());
    let spans = spans(&provider, &exporter);
    let incr = spans.iter().find(|s| s.name == "incr").unwrap();
    assert_eq!(incr.status, Status::error("not_found"));
    assert_eq!(
        attr(incr, "error.type"),
        Some(&OtelValue::from("not_found"))
    );
}

#[test]
fn server_attributes_never_carry_credentials_or_options() {
    let (_guard, provider, exporter) = install();
    // Nothing listens on port 1: the call fails, and the span says where it went.
    let cache =
        Cache::open("redis://alice:s3cret@127.0.0.1:1/0?connect_timeout=0.2&socket_timeout=0.2")
            .unwrap();
    assert!(cache.get("k").is_err());
    let spans = spans(&provider, &exporter);
    let get = spans.iter().find(|s| s.name == "get").unwrap();
    assert_eq!(attr(get, "db.system.name"), Some(&OtelValue::from("redis")));
    assert_eq!(
        attr(get, "server.address"),
        Some(&OtelValue::from("127.0.0.1"))
    );
    assert_eq!(attr(get, "server.port"), Some(&OtelValue::I64(1)));
    assert!(matches!(get.status, Status::Error { .. }));
    for kv in &get.attributes {
        let text = kv.value.as_str();
        assert!(
            !text.contains("s3cret") && !text.contains("alice") && !text.contains("timeout="),
            "{kv:?}"
        );
    }
}

/// The `db.namespace` of the span of one failed or answered `get` on a cache at `url`.
fn namespace_of(
    provider: &SdkTracerProvider,
    exporter: &InMemorySpanExporter,
    url: &str,
) -> Option<String> {
    exporter.reset();
    let cache = Cache::open(url).unwrap();
    let _ = cache.get("k");
    let spans = spans(provider, exporter);
    let get = spans.iter().find(|s| s.name == "get").unwrap();
    for kv in &get.attributes {
        let text = kv.value.as_str();
        assert!(
            !text.contains("s3cret") && !text.contains("alice"),
            "{kv:?}"
        );
    }
    attr(get, "db.namespace").map(|v| v.as_str().into_owned())
}

#[test]
fn db_namespace_names_the_database_as_the_conventions_say() {
    let (_guard, provider, exporter) = install();
    let dir = std::env::temp_dir().join(format!("polycache-otel-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Nothing listens on port 1: the calls fail at once, and their spans are still made.
    let quick = "connect_timeout=0.2&socket_timeout=0.2";
    let cases = [
        // Redis: the database index, from the path or the db option; 0 by default.
        (
            format!("redis://alice:s3cret@127.0.0.1:1/3?{quick}"),
            Some("3"),
        ),
        (format!("redis://127.0.0.1:1?db=5&{quick}"), Some("5")),
        (format!("redis://127.0.0.1:1?{quick}"), Some("0")),
        // PostgreSQL: the database name; none when the URL names none (the user's name).
        (
            format!("postgres://alice:s3cret@127.0.0.1:1/appdb?{quick}"),
            Some("appdb"),
        ),
        (format!("postgres://alice:s3cret@127.0.0.1:1?{quick}"), None),
        // SQLite: the file's name, not its directory.
        (
            format!("sqlite://{}/cache.db", dir.display()),
            Some("cache.db"),
        ),
        // Memcached and polycache's own stores: none.
        (format!("memcached://127.0.0.1:1?{quick}"), None),
        ("memory://otel-ns".to_owned(), None),
    ];
    for (url, expected) in cases {
        assert_eq!(
            namespace_of(&provider, &exporter, &url).as_deref(),
            expected,
            "{url}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tiered_calls_have_a_child_span_per_tier_reached() {
    let (_guard, provider, exporter) = install();
    let dir = std::env::temp_dir().join(format!("polycache-otel-tiers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let l2 = format!("sqlite://{}/l2.db", dir.display());
    let cache = Cache::builder_tiered("memory://", &l2).build().unwrap();
    let other = Cache::builder_tiered("memory://", &l2).build().unwrap();
    other.set("k", b"v", Expiry::Never).unwrap(); // in L2, not in this cache's L1
    exporter.reset();

    let system = |s: &SpanData| attr(s, "db.system.name").map(|v| v.as_str().into_owned());
    let tier = |s: &SpanData| attr(s, "polycache.tier").map(|v| v.as_str().into_owned());
    let children =
        |spans: &[SpanData], parent: &SpanData| -> Vec<(Option<String>, Option<String>)> {
            spans
                .iter()
                .filter(|s| s.parent_span_id == parent.span_context.span_id())
                .map(|s| (tier(s), system(s)))
                .collect()
        };

    // A miss in L1: L1 then L2 are reached; L2's span says which store it is.
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    let first = spans(&provider, &exporter);
    let get = first
        .iter()
        .find(|s| s.name == "get" && system(s).as_deref() == Some("polycache.tiered"))
        .unwrap();
    assert_eq!(
        children(&first, get),
        [
            (Some("l1".into()), Some("polycache.memory".into())),
            (Some("l2".into()), Some("sqlite".into())),
        ]
    );
    let l2_span = first
        .iter()
        .find(|s| tier(s).as_deref() == Some("l2"))
        .unwrap();
    assert_eq!(l2_span.name, "get");
    assert_eq!(l2_span.span_kind, opentelemetry::trace::SpanKind::Client);
    assert_eq!(
        attr(l2_span, "db.namespace"),
        Some(&OtelValue::from("l2.db"))
    );
    assert_eq!(
        attr(l2_span, "db.operation.name"),
        Some(&OtelValue::from("get"))
    );

    // Now in L1: only L1 is reached.
    exporter.reset();
    cache.get("k").unwrap();
    let second = spans(&provider, &exporter);
    let get = second.iter().find(|s| tier(s).is_none()).unwrap();
    assert_eq!(
        children(&second, get),
        [(Some("l1".into()), Some("polycache.memory".into()))]
    );

    // A write is one L2 request (L1 takes a copy).
    exporter.reset();
    cache.set("k2", b"v", Expiry::Never).unwrap();
    let third = spans(&provider, &exporter);
    let set = third.iter().find(|s| tier(s).is_none()).unwrap();
    assert_eq!(
        children(&third, set),
        [(Some("l2".into()), Some("sqlite".into()))]
    );

    // The tier spans end with their call: nothing stays current after it.
    let after = Context::current();
    assert!(!after.span().span_context().is_valid());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn async_calls_join_the_context_they_are_awaited_in() {
    let (_guard, provider, exporter) = install();
    // file:// answers async calls from the blocking pool: the span must still be a child
    // of the caller's span, not of whatever runs on the pool's thread.
    let dir = std::env::temp_dir().join(format!("polycache-otel-{}", std::process::id()));
    let cache = Cache::open(&format!("file://{}", dir.display())).unwrap();
    let tracer = provider.tracer("app");
    let parent = tracer.start("request");
    let cx = Context::current_with_span(parent);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(
        async {
            cache.set_async("k", b"v", Expiry::Never).await.unwrap();
            cache.get_async("k").await.unwrap();
        }
        .with_context(cx.clone()),
    );
    cx.span().end();
    let spans = spans(&provider, &exporter);
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    for name in ["set", "get"] {
        let span = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            span.parent_span_id,
            request.span_context.span_id(),
            "{name}"
        );
        assert_eq!(
            attr(span, "db.system.name"),
            Some(&OtelValue::from("polycache.file"))
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn async_calls_join_the_context_they_are_made_in_not_the_one_they_are_polled_in() {
    let (_guard, provider, exporter) = install();
    // file:// awaits the blocking pool; memory:// answers in place. Either way the span's
    // parent is the span current when the future was made (A), not where it is polled (B).
    let dir = std::env::temp_dir().join(format!("polycache-otel-made-{}", std::process::id()));
    let file = Cache::open(&format!("file://{}", dir.display())).unwrap();
    let memory = Cache::open("memory://otel-made").unwrap();
    let tracer = provider.tracer("app");
    let a = Context::current_with_span(tracer.start("A"));
    let b = Context::current_with_span(tracer.start("B"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (set, get, incr, get_many, memory_get) = {
        let _a = a.clone().attach();
        (
            file.set_async("k", b"1", Expiry::Never),
            file.get_async("k"),
            file.incr_async("k", 1),
            file.get_many_async(&["k", "absent"], None),
            memory.get_async("k"),
        )
    };
    runtime.block_on(
        async {
            set.await.unwrap();
            get.await.unwrap();
            incr.await.unwrap();
            get_many.await.unwrap();
            memory_get.await.unwrap();
        }
        .with_context(b.clone()),
    );
    // A spawned future, made under A, runs on a worker thread with no context at all.
    let leaked: &'static Cache = Box::leak(Box::new(file));
    let spawned = {
        let _a = a.clone().attach();
        runtime.spawn(leaked.delete_async("k"))
    };
    assert!(runtime.block_on(spawned).unwrap().unwrap());
    a.span().end();
    b.span().end();
    let spans = spans(&provider, &exporter);
    let id = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .span_context
            .span_id()
    };
    let (a_id, b_id) = (id("A"), id("B"));
    assert_ne!(a_id, b_id);
    for name in ["set", "get", "incr", "get_many", "delete"] {
        let made = spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
        assert!(!made.is_empty(), "{name}");
        for span in made {
            assert_eq!(
                span.parent_span_id,
                a_id,
                "{name} {:?}",
                attr(span, "db.system.name")
            );
        }
    }
    let memory_get = spans
        .iter()
        .find(|s| {
            s.name == "get"
                && attr(s, "db.system.name") == Some(&OtelValue::from("polycache.memory"))
        })
        .unwrap();
    assert_eq!(memory_get.parent_span_id, a_id);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_provider_no_spans_and_calls_work() {
    let _guard = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    opentelemetry::global::set_tracer_provider(
        opentelemetry::trace::noop::NoopTracerProvider::new(),
    );
    polycache::otel::provider_changed();
    let cache = Cache::open("memory://otel-none").unwrap();
    cache.set("k", b"v", Expiry::Never).unwrap();
    assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    // An SDK installed later is seen once polycache is told (or within a second).
    let (provider, exporter) = install_in_memory();
    cache.get("k").unwrap();
    let names: Vec<_> = spans(&provider, &exporter)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["get"]);
}

/// An exporter that never returns from `export`, and counts what it was handed.
#[derive(Debug, Clone, Default)]
struct Blocking {
    started: Arc<Mutex<usize>>,
}

impl SpanExporter for Blocking {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        *self.started.lock().unwrap() += batch.len();
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// An exporter that fails every export.
#[derive(Debug, Clone, Default)]
struct Failing {
    calls: Arc<Mutex<usize>>,
}

impl SpanExporter for Failing {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        *self.calls.lock().unwrap() += 1;
        Err(OTelSdkError::InternalFailure(
            "collector unreachable".into(),
        ))
    }
}

#[test]
fn a_blocked_exporter_drops_and_counts_spans_without_holding_up_calls() {
    let _guard = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let exporter = Blocking::default();
    let capacity = 8;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(SpanQueue::new(exporter.clone(), capacity))
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    polycache::otel::provider_changed();
    let cache = Cache::open("memory://otel-blocked").unwrap();
    let before = dropped_spans();
    let calls = 2_000;
    for i in 0..calls {
        cache.set("k", b"v", Expiry::Never).unwrap();
        assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]), "{i}");
    }
    // Every call completed. Of its 4,000 spans the export thread took one batch (and is
    // stuck in it), the queue holds at most `capacity`: the rest were dropped and counted.
    let taken = *exporter.started.lock().unwrap();
    let dropped = dropped_spans() - before;
    assert!(taken >= 1);
    assert!(
        dropped >= 2 * calls as u64 - taken as u64 - capacity as u64,
        "{dropped}"
    );
    assert!(dropped <= 2 * calls as u64);
    // force_flush gives up on a blocked exporter rather than hang.
    assert!(provider.force_flush().is_err());
    let _ = provider.shutdown();
    assert!(polycache::render_prometheus([("c", &cache.stats())])
        .contains("polycache_otel_dropped_spans_total "));
}

#[test]
fn a_failing_exporter_drops_and_counts_spans_without_failing_calls() {
    let _guard = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let exporter = Failing::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(SpanQueue::new(exporter.clone(), 4096))
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    polycache::otel::provider_changed();
    let cache = Cache::open("memory://otel-failing").unwrap();
    let before = dropped_spans();
    for _ in 0..100 {
        cache.set("k", b"v", Expiry::Never).unwrap();
    }
    provider.force_flush().unwrap();
    assert!(*exporter.calls.lock().unwrap() >= 1);
    assert_eq!(dropped_spans() - before, 100);
    let _ = provider.shutdown();
}
