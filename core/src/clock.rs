//! Monotonic time for deadlines that must never fire late, at the cost of a coarse read.
//!
//! `CLOCK_MONOTONIC_COARSE` costs a few nanoseconds but lags real time: by up to a tick, and
//! by more on a tickless kernel right after a thread wakes (seen here: an entry still
//! readable after sleeping past its 30 ms TTL). So a deadline is judged on the coarse clock
//! only when it is clearly ahead; within [`SLACK_NS`] of it, the precise clock decides.

/// How far behind real time the coarse clock is allowed to be before a precise read.
const SLACK_NS: u64 = 50_000_000;

/// Nanoseconds on the coarse monotonic clock (never ahead of [`precise_now_ns`]).
#[inline]
pub(crate) fn coarse_now_ns() -> u64 {
    now_ns(COARSE)
}

/// Nanoseconds on the precise monotonic clock.
#[inline]
pub(crate) fn precise_now_ns() -> u64 {
    now_ns(PRECISE)
}

/// True while `deadline` (monotonic nanoseconds) has not passed.
#[inline]
pub(crate) fn before_deadline(deadline: u64) -> bool {
    let coarse = coarse_now_ns();
    if coarse >= deadline {
        return false;
    }
    deadline - coarse > SLACK_NS || precise_now_ns() < deadline
}

/// Milliseconds since the Unix epoch on the wall clock: for times that other processes and
/// machines read (SQL `expires_at`, file records, envelopes).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds on the monotonic clock, never 0: for cooldowns within this process.
#[cfg(feature = "redis")]
pub(crate) fn monotonic_ms() -> u64 {
    precise_now_ns() / 1_000_000 + 1
}

/// Ticks of `coarsetime`'s clock: the cheapest read, for circuit breakers and server health.
pub(crate) fn ticks() -> u64 {
    coarsetime::Instant::now_without_cache_update().as_ticks()
}

/// `d` in [`ticks`], capped at a year (so that adding it to a time never overflows).
pub(crate) fn ticks_of(d: std::time::Duration) -> u64 {
    coarsetime::Duration::from(d.min(std::time::Duration::from_secs(86_400 * 365))).as_ticks()
}

#[cfg(target_os = "linux")]
const COARSE: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
#[cfg(target_os = "linux")]
const PRECISE: libc::clockid_t = libc::CLOCK_MONOTONIC;

#[cfg(target_os = "linux")]
#[inline]
fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack;
    // both clock ids exist on every Linux this builds for.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    // Seconds since boot: nanoseconds overflow a u64 after 584 years, so the plain
    // arithmetic (no saturation tests on every read) is exact.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
const COARSE: () = ();
#[cfg(not(target_os = "linux"))]
const PRECISE: () = ();

/// Elsewhere both are the standard monotonic clock, measured from the first call.
#[cfg(not(target_os = "linux"))]
fn now_ns(_clock: ()) -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A precise timestamp for latency histograms, in [`cycle_scale`] units: the CPU's invariant
/// time-stamp counter on x86_64 (one `rdtsc`, about half the cost of a `CLOCK_MONOTONIC`
/// read), else [`precise_now_ns`]. Only differences of two reads mean anything.
#[inline]
pub(crate) fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if USE_TSC.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: `rdtsc` reads a counter and touches no memory; every x86_64 CPU has it.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
    }
    precise_now_ns()
}

/// Whether [`cycles`] reads the TSC: set once by [`cycle_scale`] when the CPU says its TSC
/// is invariant (constant rate, runs in every power state).
#[cfg(target_arch = "x86_64")]
static USE_TSC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Nanoseconds per [`cycles`] unit, measured once per process (about 1 ms against
/// `CLOCK_MONOTONIC` the first time a cache times its operations).
pub(crate) fn cycle_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(calibrate)
}

#[cfg(target_arch = "x86_64")]
fn calibrate() -> f64 {
    // CPUID 0x8000_0007, EDX bit 8: invariant TSC.
    // SAFETY: `cpuid` is available on every x86_64 CPU and only returns registers (a safe
    // function since Rust 1.87; `rust-version` is older).
    #[allow(unused_unsafe)]
    let invariant = unsafe {
        let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        max >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
    };
    if !invariant {
        return 1.0;
    }
    // SAFETY: as in `cycles`.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (precise_now_ns(), tsc());
    let mut t1 = t0;
    let mut c1 = c0;
    while t1 < t0 + 1_000_000 {
        t1 = precise_now_ns();
        c1 = tsc();
    }
    if c1 <= c0 {
        return 1.0;
    }
    USE_TSC.store(true, std::sync::atomic::Ordering::Relaxed);
    (t1 - t0) as f64 / (c1 - c0) as f64
}

#[cfg(not(target_arch = "x86_64"))]
fn calibrate() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_never_runs_ahead_and_deadlines_are_exact() {
        for _ in 0..1000 {
            let c = coarse_now_ns();
            assert!(c <= precise_now_ns());
        }
        let now = precise_now_ns();
        assert!(!before_deadline(now));
        assert!(before_deadline(now + 10_000_000_000));
        let soon = precise_now_ns() + 2_000_000;
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(!before_deadline(soon), "a passed deadline is never live");
    }

    #[test]
    fn cycles_advance_at_the_calibrated_rate() {
        let scale = cycle_scale();
        assert!(scale > 0.0 && scale.is_finite());
        let (t0, c0) = (precise_now_ns(), cycles());
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (t1, c1) = (precise_now_ns(), cycles());
        let measured = (c1 - c0) as f64 * scale;
        let elapsed = (t1 - t0) as f64;
        // The same interval on both clocks, within a tenth (the reads are not simultaneous).
        assert!(
            (measured - elapsed).abs() < elapsed / 10.0,
            "{measured} ns against {elapsed} ns"
        );
    }
}
