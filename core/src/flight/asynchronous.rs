//! The awaitable side of a flight: a follower awaits its end (the flight's
//! [`tokio::sync::Notify`]) instead of blocking; `cache/compute_async.rs` holds the awaitable
//! `get_or_set_with` family that uses it. Lease polls there sleep with
//! [`tokio::time::sleep`], so those futures need a tokio context with timers when they wait
//! (polycache's runtime, or the caller's). A leader whose future is dropped fails its flight
//! (the waiting callers retry) and its lease expires after `lease_ttl`.

use super::{Flight, Waited};
use std::time::Instant;

impl Flight {
    /// Awaits the end of the computation, or `deadline`.
    pub(crate) async fn wait_async(&self, deadline: Instant) -> Waited {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the state is read, so a completion in between still wakes us.
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::TimedOut;
            }
            if tokio::time::timeout(deadline - now, notified)
                .await
                .is_err()
            {
                return self.outcome().unwrap_or(Waited::TimedOut);
            }
        }
    }
}
