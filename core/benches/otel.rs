//! The cost of the `otel` feature on a `memory://` get hit: with no tracer provider
//! installed (OpenTelemetry's no-op default), with an SDK provider whose sampler drops every
//! span, and with one that records every span into a `SpanQueue` whose exporter discards
//! them. `cargo bench -p polycache --bench memory -- get_hit/polycache/Cache::get` is the
//! same call without the feature (docs/observability.md has the figures).

use criterion::{criterion_group, BenchmarkId, Criterion};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use polycache::{Cache, Expiry};
use std::hint::black_box;

const KEY: &str = "bench:key";
const VALUE: &[u8] = b"0123456789abcdef";

/// An exporter that discards what it is given.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

fn bench_get_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("otel_get_hit");
    let cache = Cache::open("memory://?max_entries=100000").unwrap();
    cache.set(KEY, VALUE, Expiry::Default).unwrap();
    g.bench_function(BenchmarkId::new("polycache", "no provider"), |b| {
        b.iter(|| black_box(cache.get(black_box(KEY)).unwrap()))
    });
    let off = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .build();
    opentelemetry::global::set_tracer_provider(off.clone());
    polycache::otel::provider_changed();
    g.bench_function(BenchmarkId::new("polycache", "sampled out"), |b| {
        b.iter(|| black_box(cache.get(black_box(KEY)).unwrap()))
    });
    let on = SdkTracerProvider::builder()
        .with_span_processor(polycache::otel::SpanQueue::new(Discard, 1 << 16))
        .build();
    opentelemetry::global::set_tracer_provider(on.clone());
    g.bench_function(BenchmarkId::new("polycache", "recorded"), |b| {
        b.iter(|| black_box(cache.get(black_box(KEY)).unwrap()))
    });
    g.finish();
    let _ = on.shutdown();
    let _ = off.shutdown();
}

/// An awaited `memory://` get hit (it completes in place), polled once by hand: the cost of
/// capturing the caller's context when the future is made and polling in it. Without a
/// provider nothing is captured; with one that records, the context is attached per poll.
fn bench_get_async_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("otel_get_async_hit");
    let cache = Cache::open("memory://?max_entries=100000").unwrap();
    cache.set(KEY, VALUE, Expiry::Default).unwrap();
    let poll = |cache: &Cache| futures_executor::block_on(cache.get_async(black_box(KEY))).unwrap();
    opentelemetry::global::set_tracer_provider(
        opentelemetry::trace::noop::NoopTracerProvider::new(),
    );
    polycache::otel::provider_changed();
    g.bench_function(BenchmarkId::new("polycache", "no provider"), |b| {
        b.iter(|| black_box(poll(&cache)))
    });
    let on = SdkTracerProvider::builder()
        .with_span_processor(polycache::otel::SpanQueue::new(Discard, 1 << 16))
        .build();
    opentelemetry::global::set_tracer_provider(on.clone());
    polycache::otel::provider_changed();
    g.bench_function(BenchmarkId::new("polycache", "recorded"), |b| {
        b.iter(|| black_box(poll(&cache)))
    });
    g.finish();
    let _ = on.shutdown();
}

criterion_group!(benches, bench_get_hit, bench_get_async_hit);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
