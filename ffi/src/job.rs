//! `polycache_job`: a cacheback-style job from C, serving a stale value while one background
//! refresh runs (stale-while-revalidate), with a fetch callback.

use crate::cache::{polycache_cache, POLYCACHE_TTL_DEFAULT, POLYCACHE_TTL_NEVER};
use crate::error::polycache_error;
use crate::handle::{self, borrow, bytes, out, text};
use crate::loader::{call_loader, polycache_loader, LoaderFn, UserData};
use crate::panic::{boundary, guard};
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_MISS, POLYCACHE_RESULT_OK};
use crate::value::polycache_value;
use polycache::{CacheStatus, Error, ErrorKind, Fetch, Fetched, Job, JobOptions};
use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;
use std::time::Duration;

/// What a job's read found: `POLYCACHE_STATUS_HIT`, `POLYCACHE_STATUS_STALE` or
/// `POLYCACHE_STATUS_MISS`; `polycache_status_name` gives `"hit"`, `"stale"`, `"miss"`.
pub type polycache_status = u32;
/// A fresh value.
pub const POLYCACHE_STATUS_HIT: polycache_status = 0;
/// A value past its lifetime: served at once while one refresh runs in the background, or
/// fetched again now when it was too stale.
pub const POLYCACHE_STATUS_STALE: polycache_status = 1;
/// No value: fetched now (`fetch_on_miss`), or not (the call returned `POLYCACHE_RESULT_MISS`).
pub const POLYCACHE_STATUS_MISS: polycache_status = 2;

fn status(s: CacheStatus) -> polycache_status {
    match s {
        CacheStatus::Hit => POLYCACHE_STATUS_HIT,
        CacheStatus::Stale => POLYCACHE_STATUS_STALE,
        // CacheStatus is non_exhaustive: a status added later reads as a miss here.
        _ => POLYCACHE_STATUS_MISS,
    }
}

/// `"hit"`, `"stale"` or `"miss"` (the words Rust and Python use), `"unknown"` for any other
/// value. Returns a static NUL-terminated string: never NULL, never freed.
#[no_mangle]
pub extern "C" fn polycache_status_name(status: polycache_status) -> *const c_char {
    guard(c"unknown".as_ptr(), || match status {
        POLYCACHE_STATUS_HIT => c"hit".as_ptr(),
        POLYCACHE_STATUS_STALE => c"stale".as_ptr(),
        POLYCACHE_STATUS_MISS => c"miss".as_ptr(),
        _ => c"unknown".as_ptr(),
    })
}

/// The fetch callback of a job and its user data, shared by the job and its background
/// refreshes.
struct FetchCallback {
    fetch: LoaderFn,
    user_data: UserData,
}

/// One key's fetch: what the core's `Job` calls, here or on a refresh thread.
struct KeyedFetch {
    callback: Arc<FetchCallback>,
    key: CString,
}

impl Fetch for KeyedFetch {
    fn fetch(&self) -> polycache::Result<Fetched> {
        // SAFETY: the caller of polycache_job_new promised that fetch is a valid, thread-safe
        // function for its user_data; key is NUL-terminated and lives during the call.
        let (value, fresh_for) = unsafe {
            call_loader(
                self.callback.fetch,
                self.callback.user_data.ptr(),
                self.key.as_ptr(),
            )
        }?;
        Ok(Fetched::new(value, fresh_for))
    }
}

/// A job: values of one cache that are refreshed in the background by a fetch callback
/// while the stale value is served (django-cacheback's `Job`, with no task queue).
///
/// Threads: one job may be used by any number of threads at the same time, except
/// `polycache_job_free`; its fetch callback runs on the calling threads and on polycache's
/// refresh threads, so it must be thread-safe. Lifetime: from `polycache_job_new` until
/// `polycache_job_free`; it keeps its cache alive, and background refreshes that are
/// running when it is freed finish first (then the user data is released).
pub struct polycache_job {
    job: Job,
    callback: Arc<FetchCallback>,
}

impl polycache_job {
    fn fetch_of(&self, key: &str) -> KeyedFetch {
        KeyedFetch {
            callback: self.callback.clone(),
            // A key read from a C string holds no NUL.
            key: CString::new(key).unwrap_or_default(),
        }
    }
}

/// `ms` as a duration: it must be positive (the special values are handled by the caller).
fn positive_ms(name: &str, ms: i64, allowed: &str) -> Result<Duration, Failure> {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(Failure::Core(Error::new(
            ErrorKind::Configuration,
            format!("{name} must be {allowed} or a positive number of milliseconds, not {ms}"),
        ))),
    }
}

/// `POLYCACHE_TTL_NEVER` as `None`, a positive `ms` as a duration.
fn ms_or_never(name: &str, ms: i64) -> Result<Option<Duration>, Failure> {
    match ms {
        POLYCACHE_TTL_NEVER => Ok(None),
        ms => positive_ms(name, ms, "POLYCACHE_TTL_DEFAULT, POLYCACHE_TTL_NEVER").map(Some),
    }
}

/// Makes a job over `cache` whose values are computed by `fetch`.
///
/// - `lifetime_ms`: how long a value is fresh: positive, or `POLYCACHE_TTL_DEFAULT` (600 s).
/// - `ttl_ms`: the hard TTL of the entry: positive, `POLYCACHE_TTL_NEVER`, or
///   `POLYCACHE_TTL_DEFAULT` (30 days).
/// - `fetch_on_miss`: on a miss, fetch in the caller (true) or answer
///   `POLYCACHE_RESULT_MISS` and fetch in the background (false).
/// - `max_stale_ms`: how long past its lifetime a value may still be served while refreshes
///   fail (past it the caller fetches): positive, or `POLYCACHE_TTL_NEVER` /
///   `POLYCACHE_TTL_DEFAULT` for no bound (until the hard TTL).
///
/// `fetch` has the `polycache_loader` contract and receives `user_data` and the caller's
/// key; it may set a per-value lifetime with `polycache_loader_output_set_fresh_for`. Other
/// values give `POLYCACHE_RESULT_CONFIGURATION`. On success `*job_out` receives a new job
/// owned by the caller, to be released with `polycache_job_free`, and polycache owns
/// `user_data`: `release` (if not NULL) is called once with it, after the last fetch, when
/// the job is freed and its last background refresh is done (possibly on a refresh thread).
/// On failure nothing is called and the caller still owns `user_data`. The cache's URL
/// options `lease`, `lease_ttl` and `flight_timeout` apply to the job's fetches.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_new(
    cache: *const polycache_cache,
    fetch: polycache_loader,
    user_data: *mut c_void,
    release: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    lifetime_ms: i64,
    ttl_ms: i64,
    fetch_on_miss: bool,
    max_stale_ms: i64,
    job_out: *mut *mut polycache_job,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, job_out: out);
        let fetch = fetch.ok_or(Failure::NullParameter("fetch"))?;
        let defaults = JobOptions::default();
        let options = JobOptions::default()
            .lifetime(match lifetime_ms {
                POLYCACHE_TTL_DEFAULT => defaults.lifetime,
                ms => positive_ms("lifetime_ms", ms, "POLYCACHE_TTL_DEFAULT")?,
            })
            .ttl(match ttl_ms {
                POLYCACHE_TTL_DEFAULT => defaults.ttl,
                ms => ms_or_never("ttl_ms", ms)?,
            })
            .fetch_on_miss(fetch_on_miss)
            .max_stale(match max_stale_ms {
                POLYCACHE_TTL_DEFAULT => None,
                ms => ms_or_never("max_stale_ms", ms)?,
            });
        let callback = Arc::new(FetchCallback {
            fetch,
            user_data: UserData::new(user_data, release),
        });
        let job = Job::new(cache.cache.clone(), options);
        job_out.write(handle::into_raw(polycache_job { job, callback }));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Frees a job; NULL does nothing. Background refreshes already running finish (and store
/// their value) before the user data is released.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_free(job: *mut polycache_job) {
    guard((), || {
        // SAFETY: job is NULL or a job from polycache_job_new, freed once (C API contract).
        unsafe { handle::free(job) }
    })
}

/// Reads `key` through the job: a fresh value (`POLYCACHE_STATUS_HIT`); a stale one, served
/// at once while one background refresh runs (`POLYCACHE_STATUS_STALE`); or, on a miss, a
/// value fetched now (`POLYCACHE_STATUS_MISS`, with `fetch_on_miss`).
///
/// On `POLYCACHE_RESULT_OK`, `*value_out` receives a new value owned by the caller, to be
/// released with `polycache_value_free`, and `*status_out` what the cache held. On a miss
/// without `fetch_on_miss` it returns `POLYCACHE_RESULT_MISS` (writing nothing) and a
/// background fetch is scheduled. A fetch that fails when the caller needs its value gives
/// `POLYCACHE_RESULT_LOADER_FAILED` (a failed background refresh is logged and the stale
/// value keeps being served, up to `max_stale_ms`). Counted in the cache's stats as a hit,
/// a stale hit or a miss.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_get(
    job: *const polycache_job,
    key: *const c_char,
    value_out: *mut *mut polycache_value,
    status_out: *mut polycache_status,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(job: borrow, key: text, value_out: out, status_out: out);
        let result = job.job.get(key, job.fetch_of(key))?;
        let Some(value) = result.value else {
            return Ok(POLYCACHE_RESULT_MISS);
        };
        value_out.write(handle::into_raw(polycache_value::new(value)));
        status_out.write(status(result.status));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Fetches `key` now, stores it as fresh and returns it (cacheback's `refresh`).
///
/// On success `*value_out` receives a new value owned by the caller, to be released with
/// `polycache_value_free`. A failed fetch gives `POLYCACHE_RESULT_LOADER_FAILED`.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_refresh(
    job: *const polycache_job,
    key: *const c_char,
    value_out: *mut *mut polycache_value,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(job: borrow, key: text, value_out: out);
        let value = job.job.refresh(key, job.fetch_of(key))?;
        value_out.write(handle::into_raw(polycache_value::new(value)));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Stores the `len` bytes at `value` under `key` as fresh for `fresh_for_ms` (positive, or
/// `POLYCACHE_TTL_DEFAULT` for the job's lifetime), with the job's hard TTL.
///
/// `value` may be NULL only when `len` is 0; the bytes are copied. A value over the cache's
/// `max_value_size` gives `POLYCACHE_RESULT_VALUE_TOO_LARGE` and stores nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_set(
    job: *const polycache_job,
    key: *const c_char,
    value: *const u8,
    len: usize,
    fresh_for_ms: i64,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(job: borrow, key: text, value: bytes(len));
        let fresh_for = match fresh_for_ms {
            POLYCACHE_TTL_DEFAULT => None,
            ms => Some(positive_ms("fresh_for_ms", ms, "POLYCACHE_TTL_DEFAULT")?),
        };
        job.job.set(key, value, fresh_for)?;
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Marks `key` stale and schedules one background refresh; `*present_out` receives true
/// when a value was present. Until the refresh lands, reads get the old value as stale.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_invalidate(
    job: *const polycache_job,
    key: *const c_char,
    present_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(job: borrow, key: text, present_out: out);
        present_out.write(job.job.invalidate(key, job.fetch_of(key))?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// Removes `key`; `*deleted_out` receives true when it was present. The next read misses.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_delete(
    job: *const polycache_job,
    key: *const c_char,
    deleted_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(job: borrow, key: text, deleted_out: out);
        deleted_out.write(job.job.delete(key)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// `*refreshing_out` receives true while a refresh of `key` (background or synchronous)
/// runs in this process: wait for it to turn false to see a background refresh land.
#[no_mangle]
pub unsafe extern "C" fn polycache_job_is_refreshing(
    job: *const polycache_job,
    key: *const c_char,
    refreshing_out: *mut bool,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(job: borrow, key: text, refreshing_out: out);
        refreshing_out.write(job.job.is_refreshing(key)?);
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// For process exit: drops the background refreshes still queued (of every job; the stale
/// values stay and nothing is logged), refuses new ones, and waits up to `timeout_ms`
/// milliseconds (negative: 0) for the running ones to finish. Returns true when none is left
/// running. There is no restart: jobs keep answering, but never refresh in the background
/// again. Call it before freeing what your fetch callbacks use, so that no refresh thread is
/// still inside one.
#[no_mangle]
pub extern "C" fn polycache_stop_refreshes(timeout_ms: i64) -> bool {
    guard(false, || {
        polycache::stop_refreshes(Duration::from_millis(timeout_ms.max(0).unsigned_abs()))
    })
}
