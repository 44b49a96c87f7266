//! The envelope: a value plus the times early refresh and jobs need, in one stored entry.
//!
//! Values written by [`crate::Cache::get_or_set_with`] with early refresh on (`xfetch_beta`
//! above 0) and every value a [`crate::Job`] writes are stored in an envelope, so that the
//! entry itself says when it goes stale, when it expires and how long it took to compute.
//! One read gets everything: no sibling key that could be evicted apart from its value.
//!
//! Layout (32 bytes of header, integers little-endian, times in Unix milliseconds):
//!
//! | bytes  | field         | meaning                                                   |
//! |--------|---------------|-----------------------------------------------------------|
//! | 0..8   | magic         | `00 50 43 45 4e 56 31 00` (`"\0PCENV1\0"`)                 |
//! | 8..16  | `fresh_until` | the value is stale from this time on; 0: stale now        |
//! | 16..24 | `expires_at`  | the entry's hard expiry as written; 0: never              |
//! | 24..32 | `delta_us`    | how long the value took to compute, in microseconds       |
//! | 32..   | payload       | the value's bytes, unchanged                              |
//!
//! A plain `get` of such a key returns the whole envelope; [`Envelope::decode`] splits it.
//! Bytes that do not start with the magic are a plain value (a value written by `set`), so
//! readers of envelopes accept plain values too, as fresh values with no metadata.

use std::time::Duration;

/// The first 8 bytes of every envelope.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"\0PCENV1\0";
/// The size of the envelope header before the payload.
pub const ENVELOPE_HEADER: usize = 32;

/// The metadata of an enveloped value (see the module documentation for the layout).
///
/// `Copy`, `Send + Sync`; no method panics.
///
/// ```
/// use polycache::Envelope;
/// let env = Envelope::new(1_000, 2_000, 1_500);
/// let bytes = env.encode(b"payload");
/// let (back, payload) = Envelope::decode(&bytes).unwrap();
/// assert_eq!(back, env);
/// assert_eq!(payload, b"payload");
/// assert!(Envelope::decode(b"plain value").is_none());
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Unix milliseconds from which the value is stale; 0 means stale now.
    pub fresh_until: u64,
    /// Unix milliseconds at which the entry expires; 0 means never.
    pub expires_at: u64,
    /// The time the value took to compute, in microseconds.
    pub delta_us: u64,
}

impl Envelope {
    /// An envelope with these fields.
    pub fn new(fresh_until: u64, expires_at: u64, delta_us: u64) -> Envelope {
        Envelope {
            fresh_until,
            expires_at,
            delta_us,
        }
    }

    /// The envelope and payload of `bytes`, or `None` when `bytes` is a plain value.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Option<(Envelope, &[u8])> {
        if bytes.len() < ENVELOPE_HEADER || bytes[..8] != ENVELOPE_MAGIC {
            return None;
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Some((
            Envelope {
                fresh_until: field(8),
                expires_at: field(16),
                delta_us: field(24),
            },
            &bytes[ENVELOPE_HEADER..],
        ))
    }

    /// The stored bytes of `payload` in this envelope.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_HEADER + payload.len());
        out.extend_from_slice(&ENVELOPE_MAGIC);
        out.extend_from_slice(&self.fresh_until.to_le_bytes());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&self.delta_us.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// True when the value is stale at `now_ms` (Unix milliseconds).
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms >= self.fresh_until
    }

    /// The time the entry has left at `now_ms`: `None` for never, zero once expired.
    pub fn remaining(&self, now_ms: u64) -> Option<Duration> {
        (self.expires_at != 0)
            .then(|| Duration::from_millis(self.expires_at.saturating_sub(now_ms)))
    }
}

/// `now_ms + d`, saturating; at least 1 so that it never reads as "never" (0).
pub(crate) fn after_ms(now_ms: u64, d: Duration) -> u64 {
    now_ms
        .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_foreign_bytes_are_plain_values() {
        assert!(Envelope::decode(b"").is_none());
        assert!(Envelope::decode(&ENVELOPE_MAGIC).is_none());
        let mut almost = Envelope::new(1, 2, 3).encode(b"x");
        almost[3] ^= 1;
        assert!(Envelope::decode(&almost).is_none());
        let empty = Envelope::new(0, 0, 0).encode(b"");
        assert_eq!(Envelope::decode(&empty).unwrap().1, b"");
    }

    #[test]
    fn staleness_and_remaining() {
        let e = Envelope::new(100, 200, 0);
        assert!(!e.is_stale(99));
        assert!(e.is_stale(100));
        assert_eq!(e.remaining(150), Some(Duration::from_millis(50)));
        assert_eq!(e.remaining(250), Some(Duration::ZERO));
        assert_eq!(Envelope::new(0, 0, 0).remaining(5), None);
    }
}
