//! `polycache_stats`: the counters of one cache, filled by `polycache_cache_stats`.

use polycache::StatsSnapshot;

/// The counters of one cache at one moment; the same names as in Rust and Python.
///
/// `stale_hits` and `refreshes` were appended after `evictions` in 0.1 (an ABI change
/// before 1.0); fields are only ever appended.
///
/// Threads: a plain struct owned by the caller, copied out by `polycache_cache_stats`.
/// Lifetime: the caller's (usually a local variable); nothing in it needs freeing.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct polycache_stats {
    /// Lookups that found a value (a `get_many` of ten keys counts ten).
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Keys written (`set`, `add` that stored, `set_many`, `incr`/`decr`).
    pub sets: u64,
    /// Keys removed by `delete`/`delete_many`.
    pub deletes: u64,
    /// Operations that failed in the backend (connection, timeout, I/O).
    pub errors: u64,
    /// Entries the backend evicted to stay within its bounds.
    pub evictions: u64,
    /// Stale values served at once while one refresh ran (jobs; not counted in `hits`).
    pub stale_hits: u64,
    /// Values computed by a loader (`polycache_cache_get_or_set_with`) or a job's fetch and
    /// stored.
    pub refreshes: u64,
}

impl From<StatsSnapshot> for polycache_stats {
    fn from(s: StatsSnapshot) -> Self {
        polycache_stats {
            hits: s.hits,
            misses: s.misses,
            sets: s.sets,
            deletes: s.deletes,
            errors: s.errors,
            evictions: s.evictions,
            stale_hits: s.stale_hits,
            refreshes: s.refreshes,
        }
    }
}
