//! `polycache_key_scan`: the keys of a cache that match a glob pattern, read like a cursor,
//! and `polycache_cache_delete_pattern`, with their non-blocking twins
//! (`polycache_key_scan_next_start`, `polycache_cache_delete_pattern_start`).

use crate::cache::polycache_cache;
use crate::cache_start::{count, handles};
use crate::error::polycache_error;
use crate::handle::{self, borrow, out, text};
use crate::panic::{boundary, guard};
use crate::queue::{
    polycache_queue, Output, POLYCACHE_OP_DELETE_PATTERN, POLYCACHE_OP_KEY_SCAN_NEXT,
};
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_OK};
use crate::value::polycache_value;
use polycache::{AsyncKeyIter, Error, ErrorKind};
use std::collections::VecDeque;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

/// A scan of a cache's keys, from `polycache_cache_scan_keys`: each
/// `polycache_key_scan_next` hands out one key, reading `itersize` keys from the backend
/// when it needs more.
///
/// Threads: a scan may be used from any thread, one call at a time (concurrent calls wait
/// for each other); while a `polycache_key_scan_next_start` on it has not completed, every
/// other `_next` or `_next_start` on it fails with `POLYCACHE_RESULT_CONFIGURATION`.
/// Lifetime: from `polycache_cache_scan_keys` until `polycache_key_scan_free` (which may come
/// while a `_next_start` is in flight); it keeps the cache's backend open, so it may outlive
/// `polycache_cache_free` of the cache it came from.
pub struct polycache_key_scan {
    state: Arc<Mutex<ScanState>>,
    /// The cache answers in memory: a page is read during the start call.
    inline: bool,
}

/// A scan's cursor and the keys of the pages read and not yet handed out.
struct ScanState {
    cursor: Cursor,
    ready: VecDeque<String>,
}

enum Cursor {
    /// Ready for the next page.
    Idle(AsyncKeyIter),
    /// A `polycache_key_scan_next_start` holds it.
    Busy,
    /// Lost: the page read in flight stopped before it finished (a panic).
    Lost,
}

impl polycache_key_scan {
    fn lock(&self) -> MutexGuard<'_, ScanState> {
        lock_state(&self.state)
    }
}

fn lock_state(state: &Mutex<ScanState>) -> MutexGuard<'_, ScanState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error of a second use of a scan while a page read is in flight (or lost).
fn not_idle(cursor: &Cursor) -> Failure {
    let why = match cursor {
        Cursor::Lost => "its page read in flight stopped before it finished; free it",
        _ => "a polycache_key_scan_next_start on it has not completed; drain its completion first",
    };
    Failure::Core(Error::new(
        ErrorKind::Configuration,
        format!("the key scan cannot be used now: {why}"),
    ))
}

/// Starts a scan of the keys of `cache` that match the glob `pattern`.
///
/// `pattern` is NUL-terminated UTF-8 in Redis' glob syntax (`*`, `?`, `[a-z]`, `[^a-z]`,
/// `\*`; `?` and a class match one byte), matched against the caller's keys: the cache's
/// key prefix and version are applied (escaped, so a prefix holding `*` matches only
/// itself) and taken off the keys handed out. Only live keys are returned; a key present
/// for the whole scan is returned (once on every backend but Redis, whose `SCAN` may repeat
/// a key). `itersize` is how many keys to ask the backend for at a time (1 to 1,000,000;
/// 0 gives `POLYCACHE_RESULT_INVALID_KEY`). On success `*scan_out` receives a new scan owned
/// by the caller, to be released with `polycache_key_scan_free`. A backend that cannot list
/// its keys (memcached) gives `POLYCACHE_RESULT_UNSUPPORTED`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_scan_keys(
    cache: *const polycache_cache,
    pattern: *const c_char,
    itersize: usize,
    scan_out: *mut *mut polycache_key_scan,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, pattern: text, scan_out: out);
        // The core's async scan: a `_next_start` page is native I/O on Redis and PostgreSQL.
        let keys = AsyncKeyIter::new(&cache.cache, pattern, None, itersize)?;
        scan_out.write(handle::into_raw(polycache_key_scan {
            state: Arc::new(Mutex::new(ScanState {
                cursor: Cursor::Idle(keys),
                ready: VecDeque::new(),
            })),
            inline: cache.cache.completes_inline(),
        }));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// The next key of `scan`.
///
/// Returns `POLYCACHE_RESULT_OK` and puts a new value owned by the caller in `*key_out`
/// (the key as UTF-8, not NUL-terminated: print it with `%.*s` and `polycache_value_len`),
/// to be released with `polycache_value_free`; or `POLYCACHE_RESULT_MISS`, leaving
/// `*key_out` untouched, when the scan is over. An error (the backend's) also ends the scan.
/// Keys a `polycache_key_scan_next_start` read come first, without I/O; only when none is
/// left does it read the next page, blocking. `POLYCACHE_RESULT_CONFIGURATION` while a
/// `polycache_key_scan_next_start` on `scan` has not completed.
#[no_mangle]
pub unsafe extern "C" fn polycache_key_scan_next(
    scan: *const polycache_key_scan,
    key_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(scan: borrow, key_out: out);
        let mut state = scan.lock();
        let state = &mut *state;
        loop {
            if let Some(key) = state.ready.pop_front() {
                key_out.write(handle::into_raw(polycache_value::new(
                    key.into_bytes().into(),
                )));
                return Ok(POLYCACHE_RESULT_OK);
            }
            let Cursor::Idle(keys) = &mut state.cursor else {
                return Err(not_idle(&state.cursor));
            };
            match keys.next_page_blocking()? {
                Some(page) => state.ready.extend(page),
                None => return Ok(POLYCACHE_RESULT_MISS),
            }
        }
    })
}

/// Frees a scan from `polycache_cache_scan_keys`, finished or not; NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_key_scan_free(scan: *mut polycache_key_scan) {
    guard((), || {
        // SAFETY: scan is NULL or a scan from polycache_cache_scan_keys, freed once (C API
        // contract).
        unsafe { handle::free(scan) }
    })
}

/// Removes every key of `cache` that matches the glob `pattern` (see
/// `polycache_cache_scan_keys`), `itersize` keys per scan page and per bulk delete.
///
/// On success `*deleted_out` receives how many keys it removed. NULL `deleted_out` gives
/// `POLYCACHE_RESULT_NULL_PARAMETER` and removes nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_delete_pattern(
    cache: *const polycache_cache,
    pattern: *const c_char,
    itersize: usize,
    deleted_out: *mut usize,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, pattern: text, deleted_out: out);
        deleted_out.write(cache.cache.delete_pattern(pattern, None, itersize)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// A scan's cursor while its page read is in flight: put back by the read, or, when the read
/// is dropped unfinished (a panic), put back unused or marked lost.
struct Return {
    state: Arc<Mutex<ScanState>>,
    keys: Option<AsyncKeyIter>,
    returned: bool,
}

impl Return {
    /// Puts the cursor back; the scan stays locked while the caller adds the page's keys.
    fn put_back(&mut self, keys: AsyncKeyIter) -> MutexGuard<'_, ScanState> {
        self.returned = true;
        let mut state = lock_state(&self.state);
        state.cursor = Cursor::Idle(keys);
        state
    }
}

impl Drop for Return {
    fn drop(&mut self) {
        if !self.returned {
            lock_state(&self.state).cursor = match self.keys.take() {
                Some(keys) => Cursor::Idle(keys),
                None => Cursor::Lost,
            };
        }
    }
}

/// Reads the next page of `scan` without blocking; its completion
/// (`POLYCACHE_OP_KEY_SCAN_NEXT`) arrives on `queue` with `user_data`.
///
/// The page's keys stay in the scan: the completion's `result` is `OK` with `integer` the
/// number of keys ready in the scan (possibly 0: a Redis `SCAN` page may be empty; start
/// again), which the next `integer` calls of `polycache_key_scan_next` hand out without I/O;
/// `MISS` when the scan is over; or an error with its `error` (which ends the scan). When
/// keys are still ready in the scan, nothing is read and the completion counts them.
///
/// Until the completion is queued, the scan is busy: `polycache_key_scan_next` and
/// `polycache_key_scan_next_start` on it fail with `POLYCACHE_RESULT_CONFIGURATION`
/// (nothing started, the scan untouched). The scan may be freed meanwhile (the read
/// finishes and its keys are dropped). Start codes (NULL `scan` or `queue`: nothing
/// started, no completion), inline completion on memory:// and threads are as for
/// `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_key_scan_next_start(
    scan: *const polycache_key_scan,
    queue: *const polycache_queue,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(scan: borrow, queue: borrow);
        let mut state = scan.lock();
        if !state.ready.is_empty() {
            let ready = count(state.ready.len());
            return queue.start(true, POLYCACHE_OP_KEY_SCAN_NEXT, user_data, async move {
                Ok(Output::Integer(ready))
            });
        }
        let keys = match std::mem::replace(&mut state.cursor, Cursor::Busy) {
            Cursor::Idle(keys) => keys,
            other => {
                let failure = not_idle(&other);
                state.cursor = other;
                return Err(failure);
            }
        };
        drop(state);
        let mut back = Return {
            state: Arc::clone(&scan.state),
            keys: Some(keys),
            returned: false,
        };
        queue.start(
            scan.inline,
            POLYCACHE_OP_KEY_SCAN_NEXT,
            user_data,
            async move {
                let Some(mut keys) = back.keys.take() else {
                    return Err(not_idle(&Cursor::Lost));
                };
                let page = keys.next_page().await;
                // The cursor and the page's keys return together: the scan is never idle
                // without them.
                let mut state = back.put_back(keys);
                Ok(match page? {
                    Some(page) => {
                        state.ready.extend(page);
                        Output::Integer(count(state.ready.len()))
                    }
                    None => Output::Miss,
                })
            },
        )
    })
}

/// Starts `polycache_cache_delete_pattern(cache, pattern, itersize)` without blocking; its
/// completion (`POLYCACHE_OP_DELETE_PATTERN`) arrives on `queue` with `user_data`.
///
/// The completion's `result` is `OK` with how many keys it removed in `integer`, or an
/// error with its `error` (`INVALID_KEY` for an `itersize` of 0, `UNSUPPORTED` on
/// memcached, …). The pattern is copied. Start codes, inline completion and threads are as
/// for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_delete_pattern_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    pattern: *const c_char,
    itersize: usize,
    user_data: *mut c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        // SAFETY: each pointer is NULL or valid for the call (the C API contract).
        let ((cache, queue), pattern) =
            unsafe { (handles(cache, queue)?, text(pattern, "pattern")?) };
        let pattern = pattern.to_owned();
        let inline = cache.completes_inline();
        queue.start(inline, POLYCACHE_OP_DELETE_PATTERN, user_data, async move {
            let removed = cache.delete_pattern_async(&pattern, None, itersize).await?;
            Ok(Output::Integer(count(removed)))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::POLYCACHE_RESULT_CONFIGURATION;

    #[test]
    fn a_read_dropped_unfinished_gives_the_cursor_back_or_marks_it_lost() {
        let cache = polycache::Cache::open("memory://").unwrap();
        let state = Arc::new(Mutex::new(ScanState {
            cursor: Cursor::Busy,
            ready: VecDeque::new(),
        }));
        let keys = cache.iter_keys("*", None, 10).unwrap().into();
        drop(Return {
            state: Arc::clone(&state),
            keys: Some(keys),
            returned: false,
        });
        assert!(matches!(lock_state(&state).cursor, Cursor::Idle(_)));

        lock_state(&state).cursor = Cursor::Busy;
        drop(Return {
            state: Arc::clone(&state),
            keys: None,
            returned: false,
        });
        let lost = not_idle(&lock_state(&state).cursor);
        assert_eq!(lost.result(), POLYCACHE_RESULT_CONFIGURATION);
        assert!(lost.message().contains("free it"), "{}", lost.message());
        let busy = not_idle(&Cursor::Busy);
        assert!(
            busy.message().contains("has not completed"),
            "{}",
            busy.message()
        );
    }
}
