//! The coarse monotonic clock's resolution, for deadlines that must never fire late.

use std::sync::OnceLock;

/// The resolution of `CLOCK_MONOTONIC_COARSE` (what `coarsetime` reads) in coarsetime ticks.
pub(crate) fn coarse_resolution_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| coarsetime::Duration::from(resolution()).as_ticks())
}

#[cfg(target_os = "linux")]
fn resolution() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres only writes the timespec it is given, which lives on this stack.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc == 0 && ts.tv_sec >= 0 && ts.tv_nsec >= 0 {
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    } else {
        FALLBACK
    }
}

#[cfg(not(target_os = "linux"))]
fn resolution() -> std::time::Duration {
    FALLBACK
}

/// A tick of the slowest common kernel timer (HZ=100).
const FALLBACK: std::time::Duration = std::time::Duration::from_millis(10);

#[cfg(test)]
mod tests {
    #[test]
    fn resolution_is_small_and_positive() {
        let t = super::coarse_resolution_ticks();
        assert!(t > 0);
        assert!(t <= coarsetime::Duration::from_millis(20).as_ticks(), "{t}");
    }
}
