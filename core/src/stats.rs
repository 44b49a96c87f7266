//! Per-cache counters: hits, misses, stale hits, refreshes, sets, deletes, errors, evictions.
//!
//! Every cache call bumps a counter, so the counters must cost next to nothing. Each thread
//! gets a slot of its own (reused after the thread exits) and each cache keeps one stripe of
//! counters per slot: a counter has a single writer, so an update is a plain load and store
//! of a relaxed atomic (about 1 ns) rather than a locked read-modify-write (about 7 ns here)
//! on a line that other threads also write. Threads beyond the slot count share one stripe
//! updated with `fetch_add`. Readers sum the stripes.

mod prometheus;
pub use prometheus::render_prometheus;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Threads that get a counter stripe of their own; more share the overflow stripe.
const SLOTS: usize = 32;

#[repr(align(64))]
#[derive(Default)]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
    stale_hits: AtomicU64,
    refreshes: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
}

/// Counters a cache keeps.
pub(crate) struct Stats {
    stripes: Box<[Stripe]>,
    /// Per-operation counters and latency histograms.
    ops: OpStats,
    /// What this cache's OpenTelemetry spans say about it (set once, when it is built).
    #[cfg(feature = "otel")]
    traced: std::sync::OnceLock<crate::otel::SpanTarget>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(true, 1)
    }
}

/// Slots handed out to live threads, and the ones returned by threads that exited.
static FREE_SLOTS: Mutex<(usize, Vec<usize>)> = Mutex::new((0, Vec::new()));

/// A thread's slot; returned to the free list when the thread exits.
struct SlotGuard(usize);

impl SlotGuard {
    fn acquire() -> SlotGuard {
        let mut free = FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = free.1.pop() {
            return SlotGuard(slot);
        }
        if free.0 < SLOTS {
            free.0 += 1;
            SlotGuard(free.0 - 1)
        } else {
            SlotGuard(SLOTS)
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Whatever this thread still counts, from other thread-local destructors, goes to
        // the shared stripe from now on.
        let _ = SLOT_ID.try_with(|id| id.set(SLOTS));
        if self.0 < SLOTS {
            // The mutex orders this thread's last counter writes before the next owner's.
            FREE_SLOTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .push(self.0);
        }
    }
}

/// [`SLOT_ID`] of a thread that has not counted yet.
const UNASSIGNED: usize = usize::MAX;

thread_local! {
    /// The thread's slot, read on every counted call: a constant-initialised cell with no
    /// destructor, so a read is the thread-local address and one load (no lazy-init state).
    static SLOT_ID: std::cell::Cell<usize> = const { std::cell::Cell::new(UNASSIGNED) };
    /// Owns the slot and returns it when the thread exits.
    static SLOT: SlotGuard = SlotGuard::acquire();
}

/// This thread's slot ([`SLOTS`], the shared stripe, when it has none).
#[inline]
fn this_slot() -> usize {
    match SLOT_ID.try_with(std::cell::Cell::get) {
        Ok(UNASSIGNED) => assign_slot(),
        Ok(slot) => slot,
        Err(_) => SLOTS,
    }
}

#[cold]
fn assign_slot() -> usize {
    let slot = SLOT.try_with(|s| s.0).unwrap_or(SLOTS);
    let _ = SLOT_ID.try_with(|id| id.set(slot));
    slot
}

#[inline]
fn bump(counter: &AtomicU64, shared: bool, n: u64) {
    if shared {
        counter.fetch_add(n, Ordering::Relaxed);
    } else {
        // Single writer: only the thread owning this slot writes it.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}

macro_rules! counter {
    ($name:ident, $field:ident) => {
        #[inline]
        pub(crate) fn $name(&self, n: u64) {
            let slot = this_slot();
            bump(&self.stripes[slot].$field, slot == SLOTS, n);
        }
    };
}

impl Stats {
    counter!(hit, hits);
    counter!(miss, misses);
    counter!(stale_hit, stale_hits);
    counter!(refresh, refreshes);
    counter!(set, sets);
    counter!(delete, deletes);
    counter!(error, errors);

    /// Counters with latency histograms (`latency`) or without, timing one call in
    /// `sampling` (a power of two) of each operation on each thread.
    pub(crate) fn new(latency: bool, sampling: u64) -> Stats {
        Stats {
            stripes: (0..=SLOTS).map(|_| Stripe::default()).collect(),
            ops: OpStats::new(latency, sampling),
            #[cfg(feature = "otel")]
            traced: std::sync::OnceLock::new(),
        }
    }

    /// Makes every counted call of this cache an OpenTelemetry span about `target`.
    #[cfg(feature = "otel")]
    pub(crate) fn trace_as(&self, target: crate::otel::SpanTarget) {
        let _ = self.traced.set(target);
    }

    pub(crate) fn snapshot(&self, evictions: u64) -> StatsSnapshot {
        let sum = |f: fn(&Stripe) -> &AtomicU64| {
            self.stripes
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        let ops = self.ops.snapshot();
        // A read's keys found and missed are counted once, in its operation's record; the
        // stripes' own hits and misses hold the rest (jobs, reads answered by fail-open).
        let reads = [Operation::Get, Operation::GetMany].map(|op| ops.op(op));
        StatsSnapshot {
            hits: sum(|s| &s.hits) + reads.iter().map(|o| o.hits).sum::<u64>(),
            misses: sum(|s| &s.misses) + reads.iter().map(|o| o.misses).sum::<u64>(),
            stale_hits: sum(|s| &s.stale_hits),
            refreshes: sum(|s| &s.refreshes),
            // Keys stored by `set` are counted in its record (`Stats::record_set`).
            sets: sum(|s| &s.sets) + ops.sets,
            deletes: sum(|s| &s.deletes),
            errors: sum(|s| &s.errors),
            evictions,
            ..ops
        }
    }
}
/// The counters of one cache at one moment; the same names in Rust, C and Python.
///
/// `hits`/`misses` count keys looked up (a `get_many` of ten keys counts ten), `stale_hits`
/// the stale values a job served while it refreshed them, `refreshes` the values a loader or
/// a job's fetch computed and stored, `sets` and `deletes` count keys written and removed,
/// `errors` counts backend failures (connection, timeout, I/O), and `evictions` what the
/// backend dropped to keep within its bounds.
///
/// [`StatsSnapshot::to_prometheus`] renders them in the Prometheus text format, with the
/// same names (`polycache_hits_total`, …) in Rust, C and Python.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Lookups that found a value.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Stale values served at once while one refresh ran (jobs; not counted in `hits`).
    pub stale_hits: u64,
    /// Values computed by a loader or a job's fetch and stored: misses loaded by
    /// `get_or_set_with` or a decorator, early (XFetch) refreshes, background job refreshes.
    pub refreshes: u64,
    /// Keys written (`set`, `add` that stored, `set_many`, `incr`/`decr`).
    pub sets: u64,
    /// Keys removed by `delete`/`delete_many`.
    pub deletes: u64,
    /// Operations that failed in the backend.
    pub errors: u64,
    /// Entries the backend evicted to stay within its bounds.
    pub evictions: u64,
    /// Operations that failed with a timeout (also counted in `errors`).
    pub timeouts: u64,
    /// Bytes of the values read (as stored: after signing and compression are undone).
    pub bytes_read: u64,
    /// Bytes of the values written (as given to `set`, `add`, `set_many`).
    pub bytes_written: u64,
    /// Times the circuit breaker opened (after its threshold of failures, or a failed probe).
    pub breaker_opened: u64,
    /// Times an open breaker let one probe call through (half-open).
    pub breaker_half_opened: u64,
    /// Times the breaker closed again (a call succeeded after it had opened).
    pub breaker_closed: u64,
    /// True when this cache keeps latency histograms (URL option `latency_histograms`).
    pub latency_histograms: bool,
    /// The histograms time one call in this many of each operation on each thread (URL
    /// option `latency_sampling`; 16 on `memory://` and `dummy://`, 1 elsewhere). Counters
    /// other than the histograms count every call.
    pub latency_sampling: u64,
    /// Per operation, indexed by [`Operation`] (see [`StatsSnapshot::op`]).
    pub ops: [OpSnapshot; OPERATIONS],
}

/// The counters in the order they are rendered, with their help text.
const METRICS: [(&str, &str); 8] = [
    ("hits", "Lookups that found a value."),
    ("misses", "Lookups that found nothing."),
    (
        "stale_hits",
        "Stale values served at once while one refresh ran.",
    ),
    (
        "refreshes",
        "Values computed by a loader or a job's fetch and stored.",
    ),
    ("sets", "Keys written."),
    ("deletes", "Keys removed."),
    ("errors", "Operations that failed in the backend."),
    (
        "evictions",
        "Entries the backend evicted to stay within its bounds.",
    ),
];

impl StatsSnapshot {
    fn values(&self) -> [u64; 8] {
        [
            self.hits,
            self.misses,
            self.stale_hits,
            self.refreshes,
            self.sets,
            self.deletes,
            self.errors,
            self.evictions,
        ]
    }

    /// The counters in the Prometheus text exposition format, labelled `cache="{name}"`.
    ///
    /// One counter family per field, named `polycache_{field}_total`, each with its
    /// `# HELP` and `# TYPE` lines. Render several caches into one page with
    /// [`render_prometheus`].
    ///
    /// ```
    /// use polycache::Cache;
    /// let cache = Cache::open("memory://").unwrap();
    /// cache.get("absent").unwrap();
    /// let text = cache.stats().to_prometheus("default");
    /// assert!(text.contains("# TYPE polycache_misses_total counter\n"));
    /// assert!(text.contains("polycache_misses_total{cache=\"default\"} 1\n"));
    /// ```
    pub fn to_prometheus(&self, name: &str) -> String {
        render_prometheus([(name, self)])
    }
}

impl StatsSnapshot {
    /// hits / (hits + misses), or 0 when nothing was looked up.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

// Per-operation counters and latency histograms.
//
// Each cache keeps, per thread slot, one cell per operation: calls, hits, misses, errors,
// timeouts, bytes read and written, and a histogram of latencies with fixed bounds. A slot's
// cells are allocated the first time its thread calls the cache (never again on that path),
// and written by that thread alone, as the counters above. An operation costs one pair of
// `clock::cycles` reads (an `rdtsc` each on x86_64), a search among 25 bounds and three
// single-writer stores; with `latency_histograms=off` the clock is not read at all.

/// The operations a cache counts and times one by one.
///
/// `decr` counts as `Incr` (it is an `incr` of the negated delta); `get_or_set` and
/// `incr_version` count as the operations they are made of; the `_async` twins count as
/// their synchronous names. Jobs, leases and locks use internal paths and are not counted here.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `get`
    Get,
    /// `set`
    Set,
    /// `add`
    Add,
    /// `delete`
    Delete,
    /// `has_key`
    HasKey,
    /// `touch`
    Touch,
    /// `incr` and `decr`
    Incr,
    /// `get_many`
    GetMany,
    /// `set_many`
    SetMany,
    /// `delete_many`
    DeleteMany,
    /// `clear`
    Clear,
}

/// How many [`Operation`]s there are: the length of [`StatsSnapshot::ops`].
pub const OPERATIONS: usize = 11;

impl Operation {
    /// Every operation, in the order of [`StatsSnapshot::ops`].
    pub const ALL: [Operation; OPERATIONS] = [
        Operation::Get,
        Operation::Set,
        Operation::Add,
        Operation::Delete,
        Operation::HasKey,
        Operation::Touch,
        Operation::Incr,
        Operation::GetMany,
        Operation::SetMany,
        Operation::DeleteMany,
        Operation::Clear,
    ];

    /// The operation's name, as in the `op` label of the Prometheus text (`"get"`, `"has_key"`…).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Set => "set",
            Operation::Add => "add",
            Operation::Delete => "delete",
            Operation::HasKey => "has_key",
            Operation::Touch => "touch",
            Operation::Incr => "incr",
            Operation::GetMany => "get_many",
            Operation::SetMany => "set_many",
            Operation::DeleteMany => "delete_many",
            Operation::Clear => "clear",
        }
    }

    /// The operation named `name` (see [`Operation::name`]).
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// Upper bounds (inclusive, in nanoseconds) of the latency histogram buckets: 1-2-5 steps
/// from 100 ns to 10 s. A last bucket (`+Inf`) holds what took longer.
pub const LATENCY_BOUNDS_NS: [u64; 25] = [
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets of a latency histogram: one per bound of [`LATENCY_BOUNDS_NS`], and `+Inf`.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// The counters and latency histogram of one operation of one cache.
///
/// ```
/// use polycache::{Cache, Expiry, Operation};
/// // Time every call (memory:// times one in 16 by default).
/// let cache = Cache::open("memory://?latency_sampling=1").unwrap();
/// cache.set("k", b"value", Expiry::Default).unwrap();
/// cache.get("k").unwrap();
/// cache.get("absent").unwrap();
/// let stats = cache.stats();
/// let get = stats.op(Operation::Get);
/// assert_eq!((get.calls, get.hits, get.misses, get.bytes_read), (2, 1, 1, 5));
/// assert_eq!(get.latency_count, 2); // histograms are on by default
/// assert_eq!(get.cumulative_buckets()[polycache::LATENCY_BUCKETS - 1], 2);
/// assert_eq!(stats.op(Operation::Set).bytes_written, 5);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpSnapshot {
    /// Calls of the operation.
    pub calls: u64,
    /// Keys found (`get`, `get_many`).
    pub hits: u64,
    /// Keys not found (`get`, `get_many`).
    pub misses: u64,
    /// Calls that failed in the backend (connection, timeout, I/O…), fail-open or not.
    pub errors: u64,
    /// Calls that failed with a timeout (also counted in `errors`).
    pub timeouts: u64,
    /// Bytes of the values read.
    pub bytes_read: u64,
    /// Bytes of the values written.
    pub bytes_written: u64,
    /// Calls timed (0 when the cache keeps no histograms).
    pub latency_count: u64,
    /// The sum of their latencies, in nanoseconds.
    pub latency_sum_ns: u64,
    /// Calls per bucket (not cumulative): `latency_buckets[i]` counts latencies up to
    /// `LATENCY_BOUNDS_NS[i]` and above the bound before; the last counts those above 10 s.
    pub latency_buckets: [u64; LATENCY_BUCKETS],
}

impl OpSnapshot {
    /// The buckets as Prometheus counts them: each is the number of calls up to its bound
    /// (the last, `+Inf`, equals `latency_count`).
    pub fn cumulative_buckets(&self) -> [u64; LATENCY_BUCKETS] {
        let mut total = 0;
        self.latency_buckets.map(|n| {
            total += n;
            total
        })
    }
}

impl StatsSnapshot {
    /// The counters and histogram of one operation.
    pub fn op(&self, op: Operation) -> &OpSnapshot {
        &self.ops[op as usize]
    }
}

/// Transitions of a circuit breaker, written by the breaker, read by the stats.
#[derive(Debug, Default)]
pub(crate) struct BreakerCounts {
    pub(crate) opened: AtomicU64,
    pub(crate) half_opened: AtomicU64,
    pub(crate) closed: AtomicU64,
}

/// When a call began (a clock read, or 0 when it is not timed) and, for a call that ends on
/// the thread it began on, that thread's slot.
#[cfg_attr(not(feature = "otel"), derive(Clone, Copy))]
pub(crate) struct Timer {
    start: u64,
    slot: usize,
    /// The operation's cell in the slot's stripe, found by `start` for `record` (`None` for
    /// a call that may end on another thread).
    cell: Option<std::ptr::NonNull<OpCell>>,
    /// The call's OpenTelemetry span, when the global provider records one.
    #[cfg(feature = "otel")]
    span: Option<crate::otel::OpSpan>,
}

// SAFETY: `cell` points at atomics (`Sync`) in a stripe its `Stats` keeps for its whole
// life, and is only dereferenced by that `Stats`' `record`.
unsafe impl Send for Timer {}

/// [`Timer::slot`] when the slot is looked up at the end of the call.
const NO_SLOT: usize = usize::MAX;

/// What one call did, for [`Stats::record`].
#[derive(Default, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) error: bool,
    pub(crate) timeout: bool,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    /// The kind of the error the call failed with, for its span.
    #[cfg(feature = "otel")]
    pub(crate) failure: Option<crate::error::ErrorKind>,
}

/// One operation's counters in one stripe.
#[derive(Default)]
struct OpCell {
    calls: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// Keys stored ([`Stats::record_set`]), added to the snapshot's `sets`.
    stored: AtomicU64,
    /// In `clock::cycles` units.
    latency_sum: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

#[repr(align(64))]
#[derive(Default)]
struct OpStripe([OpCell; OPERATIONS]);

struct OpStats {
    latency: bool,
    /// `sampling - 1`: a call is timed when its operation's call count on this thread,
    /// masked with it, is 0.
    sample_mask: u64,
    /// [`LATENCY_BOUNDS_NS`] in `clock::cycles` units.
    bounds: [u64; LATENCY_BOUNDS_NS.len()],
    /// Nanoseconds per cycle.
    scale: f64,
    /// One per thread slot (and the shared one), allocated on the slot's first call.
    stripes: Box<[std::sync::OnceLock<Box<OpStripe>>]>,
    breaker: std::sync::OnceLock<std::sync::Arc<BreakerCounts>>,
}

impl OpStats {
    fn new(latency: bool, sampling: u64) -> OpStats {
        let scale = if latency {
            crate::clock::cycle_scale()
        } else {
            1.0
        };
        OpStats {
            latency,
            sample_mask: sampling.max(1).next_power_of_two() - 1,
            bounds: LATENCY_BOUNDS_NS.map(|ns| (ns as f64 / scale) as u64),
            scale,
            stripes: (0..=SLOTS).map(|_| std::sync::OnceLock::new()).collect(),
            breaker: std::sync::OnceLock::new(),
        }
    }

    /// The cell of `op` in the stripe of `slot`, allocated on the slot's first call.
    #[inline]
    fn cell(&self, slot: usize, op: Operation) -> &OpCell {
        &self.stripes[slot].get_or_init(Box::default).0[op as usize]
    }

    fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot {
            latency_histograms: self.latency,
            latency_sampling: self.sample_mask + 1,
            ..StatsSnapshot::default()
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for stripe in self.stripes.iter().filter_map(|s| s.get()) {
            for (out, cell) in s.ops.iter_mut().zip(&stripe.0) {
                out.calls += load(&cell.calls);
                out.hits += load(&cell.hits);
                out.misses += load(&cell.misses);
                out.errors += load(&cell.errors);
                out.timeouts += load(&cell.timeouts);
                out.bytes_read += load(&cell.bytes_read);
                out.bytes_written += load(&cell.bytes_written);
                s.sets += load(&cell.stored);
                out.latency_sum_ns += load(&cell.latency_sum);
                for (b, c) in out.latency_buckets.iter_mut().zip(&cell.buckets) {
                    *b += load(c);
                }
            }
        }
        for op in &mut s.ops {
            op.latency_sum_ns = (op.latency_sum_ns as f64 * self.scale) as u64;
            op.latency_count = op.latency_buckets.iter().sum();
            s.timeouts += op.timeouts;
            s.bytes_read += op.bytes_read;
            s.bytes_written += op.bytes_written;
        }
        if let Some(b) = self.breaker.get() {
            s.breaker_opened = load(&b.opened);
            s.breaker_half_opened = load(&b.half_opened);
            s.breaker_closed = load(&b.closed);
        }
        s
    }
}

impl Stats {
    /// The start of a call of `op` that [`Stats::record`] counts on this same thread.
    #[inline]
    pub(crate) fn start(&self, op: Operation) -> Timer {
        #[cfg(feature = "otel")]
        {
            let timer = self.start_timer(op);
            Timer {
                span: self.traced.get().and_then(|target| target.start(op)),
                ..timer
            }
        }
        #[cfg(not(feature = "otel"))]
        self.start_timer(op)
    }

    /// The clock part of [`Stats::start`]: this thread's cell of `op` (one thread-local
    /// read for the whole call), and a clock read when the cell's call count says this call
    /// is the sampled one.
    #[inline]
    fn start_timer(&self, op: Operation) -> Timer {
        let slot = this_slot();
        let cell = self.ops.cell(slot, op);
        let timed =
            self.ops.latency && cell.calls.load(Ordering::Relaxed) & self.ops.sample_mask == 0;
        Timer {
            start: if timed {
                crate::clock::cycles().max(1)
            } else {
                0
            },
            slot,
            cell: Some(std::ptr::NonNull::from(cell)),
            #[cfg(feature = "otel")]
            span: None,
        }
    }

    /// [`Stats::start`] of a call that may end on another thread (an awaited one).
    #[inline]
    pub(crate) fn start_anywhere(&self, op: Operation) -> Timer {
        // Its span is never made current: the call may end on another thread.
        #[cfg(feature = "otel")]
        {
            let timer = self.start_timer(op);
            Timer {
                slot: NO_SLOT,
                span: self
                    .traced
                    .get()
                    .and_then(|target| target.start_anywhere(op)),
                ..timer
            }
        }
        #[cfg(not(feature = "otel"))]
        Timer {
            slot: NO_SLOT,
            cell: None,
            ..self.start(op)
        }
    }

    /// Counts one call of `op` that began with `timer` (see [`Stats::start`]).
    #[inline]
    pub(crate) fn record(&self, op: Operation, timer: Timer, outcome: Outcome) {
        #[cfg(feature = "otel")]
        if let Some(span) = timer.span {
            span.finish(outcome.failure);
        }
        let (slot, cell) = match timer.cell {
            // SAFETY: `start` of this `Stats` found the cell in a stripe it keeps (`Timer`).
            Some(cell) => (timer.slot, unsafe { cell.as_ref() }),
            None => {
                let slot = this_slot();
                (slot, self.ops.cell(slot, op))
            }
        };
        let start = timer.start;
        let shared = slot == SLOTS;
        bump(&cell.calls, shared, 1);
        if outcome.hits != 0 {
            bump(&cell.hits, shared, outcome.hits);
        }
        if outcome.misses != 0 {
            bump(&cell.misses, shared, outcome.misses);
        }
        if outcome.bytes_read != 0 {
            bump(&cell.bytes_read, shared, outcome.bytes_read);
        }
        if outcome.bytes_written != 0 {
            bump(&cell.bytes_written, shared, outcome.bytes_written);
        }
        if outcome.error {
            bump(&cell.errors, shared, 1);
            if outcome.timeout {
                bump(&cell.timeouts, shared, 1);
            }
        }
        if start != 0 {
            let elapsed = crate::clock::cycles().saturating_sub(start);
            bump(&cell.latency_sum, shared, elapsed);
            let bucket = self.ops.bounds.partition_point(|&b| b < elapsed);
            bump(&cell.buckets[bucket], shared, 1);
        }
    }

    /// [`Stats::record`] of a `set`, counting the key in `sets` when it `stored` one: in
    /// the call's own cell (no thread-local read of a counter of its own, as hits and
    /// misses of a read), or in `sets` when the call has no cell (an awaited one).
    #[inline]
    pub(crate) fn record_set(&self, timer: Timer, outcome: Outcome, stored: bool) {
        if stored {
            match timer.cell {
                // SAFETY: `start` of this `Stats` found the cell in a stripe it keeps (`Timer`).
                Some(cell) => bump(unsafe { &cell.as_ref().stored }, timer.slot == SLOTS, 1),
                None => self.set(1),
            }
        }
        self.record(Operation::Set, timer, outcome);
    }

    /// [`Stats::record_set`] of a `set` that stored `written` bytes.
    ///
    /// A call that is neither timed nor traced bumps its three counters here, inlined into
    /// the write, without building an [`Outcome`] for a call of `record` (as
    /// [`Stats::record_read`] does for a read); the timed or traced one goes the full way.
    #[inline]
    pub(crate) fn record_stored(&self, timer: Timer, written: usize) {
        let Some((cell, shared)) = self.plain_cell(&timer) else {
            return self.record_stored_fully(timer, written);
        };
        bump(&cell.calls, shared, 1);
        bump(&cell.stored, shared, 1);
        if written != 0 {
            bump(&cell.bytes_written, shared, written as u64);
        }
    }

    /// The cell of a call that is neither timed nor traced, and whether its stripe is the
    /// shared one; `None` for any other call.
    #[inline]
    fn plain_cell(&self, timer: &Timer) -> Option<(&OpCell, bool)> {
        #[cfg(feature = "otel")]
        if timer.span.is_some() {
            return None;
        }
        let cell = timer.cell.filter(|_| timer.start == 0)?;
        // SAFETY: `start` of this `Stats` found the cell in a stripe it keeps (`Timer`).
        Some((unsafe { cell.as_ref() }, timer.slot == SLOTS))
    }

    /// [`Stats::record_stored`] of a timed or traced call.
    #[inline(never)]
    fn record_stored_fully(&self, timer: Timer, written: usize) {
        let outcome = Outcome {
            bytes_written: written as u64,
            ..Outcome::default()
        };
        self.record_set(timer, outcome, true);
    }

    /// [`Stats::record`] of a read of one key that succeeded: `Some(size)` of the value
    /// found, or `None` for a miss.
    ///
    /// A call that is neither timed (15 in 16 on `memory://`) nor traced bumps its three
    /// counters here, inlined into the read, without building an [`Outcome`] for a call of
    /// `record`; the timed or traced one goes the full way. The test is written out here,
    /// not taken from [`Stats::plain_cell`]: through it a `Cache::get` hit costs 3 more
    /// instructions (callgrind over the memory bench).
    #[inline]
    pub(crate) fn record_read(&self, op: Operation, timer: Timer, found: Option<usize>) {
        #[cfg(feature = "otel")]
        let traced = timer.span.is_some();
        #[cfg(not(feature = "otel"))]
        let traced = false;
        match timer.cell {
            Some(cell) if timer.start == 0 && !traced => {
                // SAFETY: `start` of this `Stats` found the cell in a stripe it keeps (`Timer`).
                let cell = unsafe { cell.as_ref() };
                let shared = timer.slot == SLOTS;
                bump(&cell.calls, shared, 1);
                match found {
                    Some(size) => {
                        bump(&cell.hits, shared, 1);
                        bump(&cell.bytes_read, shared, size as u64);
                    }
                    None => bump(&cell.misses, shared, 1),
                }
            }
            _ => self.record_read_fully(op, timer, found),
        }
    }

    /// [`Stats::record_read`] of a timed or traced call.
    #[inline(never)]
    fn record_read_fully(&self, op: Operation, timer: Timer, found: Option<usize>) {
        let outcome = match found {
            Some(size) => Outcome {
                hits: 1,
                bytes_read: size as u64,
                ..Outcome::default()
            },
            None => Outcome {
                misses: 1,
                ..Outcome::default()
            },
        };
        self.record(op, timer, outcome);
    }

    /// Where this cache's circuit breaker counts its transitions.
    pub(crate) fn watch_breaker(&self, counts: std::sync::Arc<BreakerCounts>) {
        let _ = self.ops.breaker.set(counts);
    }
}

#[cfg(test)]
mod op_tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets_and_sum() {
        let stats = Stats::new(true, 1);
        let scale = crate::clock::cycle_scale();
        // Fake starts: a call that took about 150 ns and one that took about 3 ms.
        let ago = |ns: f64| Timer {
            start: crate::clock::cycles().saturating_sub((ns / scale) as u64),
            slot: NO_SLOT,
            cell: None,
            #[cfg(feature = "otel")]
            span: None,
        };
        stats.record(Operation::Get, ago(150.0), Outcome::default());
        stats.record(Operation::Get, ago(3_000_000.0), Outcome::default());
        let s = stats.snapshot(0);
        let get = s.op(Operation::Get);
        assert_eq!(get.calls, 2);
        assert_eq!(get.latency_count, 2);
        let nonzero: Vec<usize> = (0..LATENCY_BUCKETS)
            .filter(|&i| get.latency_buckets[i] != 0)
            .collect();
        // 150 ns and up (the second clock read comes later) and 3 ms and up.
        assert!(nonzero.iter().all(|&i| i >= 1), "{nonzero:?}");
        assert!(get.latency_buckets[14..].iter().sum::<u64>() >= 1);
        assert!(get.latency_sum_ns >= 3_000_000);
        assert_eq!(get.cumulative_buckets()[LATENCY_BUCKETS - 1], 2);
        assert_eq!(s.op(Operation::Set).calls, 0);
    }

    #[test]
    fn outcomes_are_counted_per_operation_with_histograms_off() {
        let stats = Stats::new(false, 1);
        assert_eq!(stats.start(Operation::Get).start, 0);
        let outcome = Outcome {
            hits: 3,
            misses: 1,
            bytes_read: 30,
            ..Outcome::default()
        };
        let untimed = || Timer {
            start: 0,
            slot: NO_SLOT,
            cell: None,
            #[cfg(feature = "otel")]
            span: None,
        };
        stats.record(Operation::GetMany, untimed(), outcome);
        let failed = Outcome {
            error: true,
            timeout: true,
            ..Outcome::default()
        };
        stats.record(Operation::Set, untimed(), failed);
        let s = stats.snapshot(0);
        assert!(!s.latency_histograms);
        let many = s.op(Operation::GetMany);
        assert_eq!((many.calls, many.hits, many.misses), (1, 3, 1));
        assert_eq!(many.latency_count, 0);
        assert_eq!((s.bytes_read, s.timeouts), (30, 1));
        assert_eq!(s.op(Operation::Set).errors, 1);
        let text = s.to_prometheus("c");
        assert!(!text.contains("_bucket"), "{text}");
        assert!(text.contains(
            "polycache_operation_outcomes_total{cache=\"c\",op=\"get_many\",outcome=\"hit\"} 3\n"
        ));
    }

    #[test]
    fn keys_stored_in_a_record_count_as_sets() {
        let stats = Stats::new(true, 2);
        let written = Outcome {
            bytes_written: 5,
            ..Outcome::default()
        };
        // Timed and untimed calls, one with no cell (awaited), and the counter of its own
        // that other writes still use.
        for _ in 0..3 {
            stats.record_set(stats.start(Operation::Set), written, true);
        }
        stats.record_set(stats.start(Operation::Set), written, false);
        stats.record_set(
            stats.start_anywhere(Operation::Set),
            Outcome::default(),
            true,
        );
        stats.set(2);
        let s = stats.snapshot(0);
        assert_eq!(s.sets, 6);
        let set = s.op(Operation::Set);
        assert_eq!((set.calls, set.hits, set.bytes_written), (5, 0, 20));
    }

    #[test]
    fn reads_count_alike_whether_timed_or_not() {
        // One call in four timed: calls 0, 4 and 8 of ten take the full record, the rest the
        // inlined one; every counter sees all ten.
        let stats = Stats::new(true, 4);
        for i in 0..10 {
            let t = stats.start(Operation::Get);
            stats.record_read(Operation::Get, t, (i % 2 == 0).then_some(3));
        }
        let untimed = Stats::new(false, 1);
        for i in 0..10 {
            let t = untimed.start(Operation::Get);
            untimed.record_read(Operation::Get, t, (i % 2 == 0).then_some(3));
        }
        for (s, timed) in [(stats.snapshot(0), 3), (untimed.snapshot(0), 0)] {
            let get = s.op(Operation::Get);
            assert_eq!(
                (
                    get.calls,
                    get.hits,
                    get.misses,
                    get.bytes_read,
                    get.latency_count
                ),
                (10, 5, 5, 15, timed)
            );
            assert_eq!((s.hits, s.misses, s.bytes_read), (5, 5, 15));
        }
    }

    #[test]
    fn threads_beyond_the_slots_share_a_stripe_and_lose_nothing() {
        let stats = std::sync::Arc::new(Stats::new(true, 1));
        let threads: Vec<_> = (0..SLOTS + 8)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let t = stats.start(Operation::Incr);
                        stats.record(Operation::Incr, t, Outcome::default());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = stats.snapshot(0);
        let n = (SLOTS as u64 + 8) * 1000;
        assert_eq!(s.op(Operation::Incr).calls, n);
        assert_eq!(s.op(Operation::Incr).latency_count, n);
    }

    #[test]
    fn operation_names_round_trip() {
        for (i, op) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i);
            assert_eq!(Operation::from_name(op.name()), Some(op));
        }
        assert_eq!(Operation::from_name("nope"), None);
        assert!(LATENCY_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }
}
