//! Per-cache counters: hits, misses, stale hits, refreshes, sets, deletes, errors, evictions.
//!
//! Every cache call bumps a counter, so the counters must cost next to nothing. Each thread
//! gets a slot of its own (reused after the thread exits) and each cache keeps one stripe of
//! counters per slot: a counter has a single writer, so an update is a plain load and store
//! of a relaxed atomic (about 1 ns) rather than a locked read-modify-write (about 7 ns here)
//! on a line that other threads also write. Threads beyond the slot count share one stripe
//! updated with `fetch_add`. Readers sum the stripes.

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
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            stripes: (0..=SLOTS).map(|_| Stripe::default()).collect(),
        }
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

thread_local! {
    static SLOT: SlotGuard = SlotGuard::acquire();
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
            let slot = SLOT.try_with(|s| s.0).unwrap_or(SLOTS);
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

    pub(crate) fn snapshot(&self, evictions: u64) -> StatsSnapshot {
        let sum = |f: fn(&Stripe) -> &AtomicU64| {
            self.stripes
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        StatsSnapshot {
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            stale_hits: sum(|s| &s.stale_hits),
            refreshes: sum(|s| &s.refreshes),
            sets: sum(|s| &s.sets),
            deletes: sum(|s| &s.deletes),
            errors: sum(|s| &s.errors),
            evictions,
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

/// Renders the counters of several caches as one Prometheus text page.
///
/// Each metric family appears once, with one sample per cache. Label values are escaped as
/// the format requires (`\\`, `\"`, `\n`).
///
/// ```
/// use polycache::{render_prometheus, StatsSnapshot};
/// let (a, b) = (StatsSnapshot::default(), StatsSnapshot::default());
/// let text = render_prometheus([("a", &a), ("b", &b)]);
/// assert_eq!(text.matches("# TYPE polycache_hits_total counter").count(), 1);
/// assert!(text.contains("polycache_hits_total{cache=\"b\"} 0\n"));
/// ```
pub fn render_prometheus<'a, I>(caches: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a StatsSnapshot)>,
{
    use std::fmt::Write;
    let caches: Vec<(String, [u64; 8])> = caches
        .into_iter()
        .map(|(name, s)| (escape_label(name), s.values()))
        .collect();
    let mut out = String::with_capacity(256 + caches.len() * 400);
    for (i, (field, help)) in METRICS.iter().enumerate() {
        let _ = writeln!(out, "# HELP polycache_{field}_total {help}");
        let _ = writeln!(out, "# TYPE polycache_{field}_total counter");
        for (name, values) in &caches {
            let _ = writeln!(
                out,
                "polycache_{field}_total{{cache=\"{name}\"}} {}",
                values[i]
            );
        }
    }
    out
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
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
