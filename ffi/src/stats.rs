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

// Per-operation counters and latency histograms: accessor functions and structs of their
// own, so that `polycache_stats` keeps its layout.

use crate::cache::polycache_cache;
use crate::error::polycache_error;
use crate::handle::{borrow, out, out_array};
use crate::panic::{boundary, guard};
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_OK};
use polycache::{Error, ErrorKind, OpSnapshot, Operation, LATENCY_BOUNDS_NS, LATENCY_BUCKETS};
use std::ffi::{c_char, CStr};

/// An operation counted and timed one by one: one of the `POLYCACHE_STATS_OP_*` values
/// (numbered apart from the `POLYCACHE_OP_*` of non-blocking completions).
///
/// A plain `uint32_t`: values are stable and only ever appended; `POLYCACHE_STATS_OPERATIONS` is
/// how many there are in this version.
pub type polycache_stats_op = u32;
/// `polycache_cache_get` (and its non-blocking twin).
pub const POLYCACHE_STATS_OP_GET: polycache_stats_op = 0;
/// `polycache_cache_set`.
pub const POLYCACHE_STATS_OP_SET: polycache_stats_op = 1;
/// `polycache_cache_add`.
pub const POLYCACHE_STATS_OP_ADD: polycache_stats_op = 2;
/// `polycache_cache_delete`.
pub const POLYCACHE_STATS_OP_DELETE: polycache_stats_op = 3;
/// `polycache_cache_has_key`.
pub const POLYCACHE_STATS_OP_HAS_KEY: polycache_stats_op = 4;
/// `polycache_cache_touch`.
pub const POLYCACHE_STATS_OP_TOUCH: polycache_stats_op = 5;
/// `polycache_cache_incr` and `polycache_cache_decr`.
pub const POLYCACHE_STATS_OP_INCR: polycache_stats_op = 6;
/// `polycache_cache_get_many`.
pub const POLYCACHE_STATS_OP_GET_MANY: polycache_stats_op = 7;
/// `polycache_cache_set_many`.
pub const POLYCACHE_STATS_OP_SET_MANY: polycache_stats_op = 8;
/// `polycache_cache_delete_many`.
pub const POLYCACHE_STATS_OP_DELETE_MANY: polycache_stats_op = 9;
/// `polycache_cache_clear`.
pub const POLYCACHE_STATS_OP_CLEAR: polycache_stats_op = 10;
/// How many operations this version counts (`POLYCACHE_STATS_OP_*` are below it).
pub const POLYCACHE_STATS_OPERATIONS: u32 = 11;
/// Buckets of a latency histogram: one per bound of `polycache_latency_bucket_bound_ns`,
/// the last one for latencies above 10 s.
pub const POLYCACHE_LATENCY_BUCKETS: usize = 26;

const _: () = assert!(POLYCACHE_STATS_OPERATIONS as usize == polycache::OPERATIONS);
const _: () = assert!(POLYCACHE_LATENCY_BUCKETS == LATENCY_BUCKETS);
const _: () = assert!(POLYCACHE_STATS_OP_CLEAR as usize == Operation::Clear as usize);

/// The counters of one operation of one cache, filled by `polycache_cache_op_stats`.
///
/// Threads: a plain struct owned by the caller. Lifetime: the caller's; nothing in it
/// needs freeing. Fields are only ever appended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct polycache_op_stats {
    /// Calls of the operation.
    pub calls: u64,
    /// Keys found (get, get_many).
    pub hits: u64,
    /// Keys not found (get, get_many).
    pub misses: u64,
    /// Calls that failed in the backend (connection, timeout, I/O…).
    pub errors: u64,
    /// Calls that failed with a timeout (also counted in `errors`).
    pub timeouts: u64,
    /// Bytes of the values read.
    pub bytes_read: u64,
    /// Bytes of the values written.
    pub bytes_written: u64,
    /// Calls timed (0 when the cache keeps no histograms: `latency_histograms=off`).
    pub latency_count: u64,
    /// The sum of their latencies, in nanoseconds.
    pub latency_sum_ns: u64,
}

impl From<&OpSnapshot> for polycache_op_stats {
    fn from(o: &OpSnapshot) -> Self {
        polycache_op_stats {
            calls: o.calls,
            hits: o.hits,
            misses: o.misses,
            errors: o.errors,
            timeouts: o.timeouts,
            bytes_read: o.bytes_read,
            bytes_written: o.bytes_written,
            latency_count: o.latency_count,
            latency_sum_ns: o.latency_sum_ns,
        }
    }
}

/// The state changes of a cache's circuit breaker, filled by `polycache_cache_breaker_stats`.
///
/// Threads and lifetime: as `polycache_op_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct polycache_breaker_stats {
    /// Times the breaker opened (after its threshold of failures, or a failed probe).
    pub opened: u64,
    /// Times an open breaker let one probe call through (half-open).
    pub half_opened: u64,
    /// Times it closed again after a successful call.
    pub closed: u64,
}

fn operation(op: polycache_stats_op) -> Result<Operation, Failure> {
    usize::try_from(op)
        .ok()
        .and_then(|i| Operation::ALL.get(i).copied())
        .ok_or_else(|| {
            Failure::Core(Error::new(ErrorKind::Configuration, format!(
                "unknown operation {op}: expected a POLYCACHE_STATS_OP_* value below {POLYCACHE_STATS_OPERATIONS}"
            )))
        })
}

/// Copies the counters of operation `op` (a `POLYCACHE_STATS_OP_*` value) of `cache` into the
/// caller's `*stats_out`. An unknown `op` is `POLYCACHE_RESULT_CONFIGURATION`.
///
/// Nothing is allocated; the struct belongs to the caller.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_op_stats(
    cache: *const polycache_cache,
    op: polycache_stats_op,
    stats_out: *mut polycache_op_stats,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, stats_out: out);
        let op = operation(op)?;
        stats_out.write(cache.cache.stats().op(op).into());
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Copies the latency histogram of operation `op` of `cache` into `counts_out`, an array of
/// `counts_len` elements: `POLYCACHE_LATENCY_BUCKETS` counts, not cumulative, bucket `i`
/// holding the calls that took at most `polycache_latency_bucket_bound_ns(i)` and more than
/// the bound before it. All zero when the cache keeps no histograms.
///
/// `counts_len` below `POLYCACHE_LATENCY_BUCKETS` is `POLYCACHE_RESULT_BUFFER_TOO_SMALL`
/// (nothing written); elements past it are left untouched. An unknown `op` is
/// `POLYCACHE_RESULT_CONFIGURATION`. Nothing is allocated.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_op_latency(
    cache: *const polycache_cache,
    op: polycache_stats_op,
    counts_out: *mut u64,
    counts_len: usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: cache is NULL or valid for the call (the C API contract).
        let cache = unsafe { borrow(cache, "cache")? };
        let op = operation(op)?;
        if counts_len < LATENCY_BUCKETS {
            return Err(Failure::BufferTooSmall {
                needed: LATENCY_BUCKETS,
                capacity: counts_len,
            });
        }
        // SAFETY: counts_out is NULL or points to counts_len writable u64s (the contract).
        let counts = unsafe { out_array(counts_out, LATENCY_BUCKETS, "counts_out")? };
        let stats = cache.cache.stats();
        for (slot, n) in counts.iter_mut().zip(stats.op(op).latency_buckets) {
            slot.write(n);
        }
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// The upper bound, in nanoseconds, of latency bucket `index`: 1-2-5 steps from 100 ns
/// (index 0) to 10 s (index `POLYCACHE_LATENCY_BUCKETS - 2`); `UINT64_MAX` for the last
/// bucket (`+Inf`) and for any index past it.
#[no_mangle]
pub extern "C" fn polycache_latency_bucket_bound_ns(index: usize) -> u64 {
    guard(u64::MAX, || {
        LATENCY_BOUNDS_NS.get(index).copied().unwrap_or(u64::MAX)
    })
}

/// Copies the circuit breaker's state changes of `cache` into `*stats_out` (all zero for a
/// cache without a breaker: `memory://`, `dummy://`, `breaker_threshold=0`).
///
/// Nothing is allocated; the struct belongs to the caller.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_breaker_stats(
    cache: *const polycache_cache,
    stats_out: *mut polycache_breaker_stats,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, stats_out: out);
        let s = cache.cache.stats();
        stats_out.write(polycache_breaker_stats {
            opened: s.breaker_opened,
            half_opened: s.breaker_half_opened,
            closed: s.breaker_closed,
        });
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// The name of operation `op` (`"get"`, `"has_key"`…), as in the Prometheus text's `op`
/// label; `"unknown"` for a value this version does not know. A static NUL-terminated
/// string: never NULL, never freed.
#[no_mangle]
pub extern "C" fn polycache_stats_op_name(op: polycache_stats_op) -> *const c_char {
    const NAMES: [&CStr; POLYCACHE_STATS_OPERATIONS as usize] = [
        c"get",
        c"set",
        c"add",
        c"delete",
        c"has_key",
        c"touch",
        c"incr",
        c"get_many",
        c"set_many",
        c"delete_many",
        c"clear",
    ];
    guard(c"unknown".as_ptr(), || {
        let name = usize::try_from(op).ok().and_then(|i| NAMES.get(i)).copied();
        name.unwrap_or(c"unknown").as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_match_the_core() {
        for op in Operation::ALL {
            // SAFETY: polycache_stats_op_name returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(polycache_stats_op_name(op as u32)) };
            assert_eq!(name.to_str().unwrap(), op.name());
        }
    }
}
