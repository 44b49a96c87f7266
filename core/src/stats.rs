//! Per-cache counters: hits, misses, sets, deletes, errors, evictions.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 8;

/// One stripe of counters, alone on its cache lines so threads on different stripes do not
/// bounce a shared line on every call.
#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
}

/// Counters a cache keeps. Striped by thread; reads sum the stripes.
#[derive(Default)]
pub(crate) struct Stats {
    stripes: [Stripe; STRIPES],
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

macro_rules! counter {
    ($name:ident, $field:ident) => {
        #[inline]
        pub(crate) fn $name(&self, n: u64) {
            if n != 0 {
                self.stripes[stripe_index()].$field.fetch_add(n, Ordering::Relaxed);
            }
        }
    };
}

impl Stats {
    counter!(hit, hits);
    counter!(miss, misses);
    counter!(set, sets);
    counter!(delete, deletes);
    counter!(error, errors);

    pub(crate) fn snapshot(&self, evictions: u64) -> StatsSnapshot {
        let sum = |f: fn(&Stripe) -> &AtomicU64| {
            self.stripes.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        StatsSnapshot {
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            sets: sum(|s| &s.sets),
            deletes: sum(|s| &s.deletes),
            errors: sum(|s| &s.errors),
            evictions,
        }
    }
}

/// The counters of one cache at one moment; the same names in Rust, C and Python.
///
/// `hits`/`misses` count keys looked up (a `get_many` of ten keys counts ten), `sets` and
/// `deletes` count keys written and removed, `errors` counts backend failures (connection,
/// timeout, I/O), and `evictions` what the backend dropped to keep within its bounds.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Lookups that found a value.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Keys written (`set`, `add` that stored, `set_many`, `incr`/`decr`).
    pub sets: u64,
    /// Keys removed by `delete`/`delete_many`.
    pub deletes: u64,
    /// Operations that failed in the backend.
    pub errors: u64,
    /// Entries the backend evicted to stay within its bounds.
    pub evictions: u64,
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
