//! How tiered caches tell each other that an L1 copy is stale: the [`InvalidationBus`]
//! trait, its [`Invalidation`] messages, and [`LocalBus`] for the caches of one process.
//!
//! The buses that cross processes implement the trait in their own modules
//! ([`crate::RedisBus`] over Redis pub/sub, [`crate::TrackingBus`] over Redis' client
//! tracking); `tiered.rs` picks one from a cache's URL. Nothing here depends on them.

use crate::error::Result;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What an invalidation message says changed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidationTarget {
    /// One full key (`{key_prefix}:{version}:{key}`) was written or deleted.
    Key(Vec<u8>),
    /// Every key starting with these bytes was removed (`clear`); empty means every key.
    Prefix(Vec<u8>),
    /// The bus lost the link that tells it about changes: drop the whole L1 and neither use
    /// nor fill it until [`InvalidationTarget::Resume`]. Sent by a bus to its own
    /// subscribers ([`crate::TrackingBus`]), never carried between processes.
    Suspend,
    /// The link is back: L1 may be used and filled again.
    Resume,
}

/// One message on an [`InvalidationBus`]: which cache sent it and what changed.
///
/// ```
/// use polycache::{Invalidation, InvalidationTarget};
/// let m = Invalidation::new(7, InvalidationTarget::Key(b":1:k".to_vec()));
/// assert_eq!(Invalidation::decode(&m.encode()), Some(m));
/// assert_eq!(Invalidation::decode(b"junk"), None);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The sending cache's id; a cache ignores its own messages.
    pub origin: u64,
    /// What changed.
    pub target: InvalidationTarget,
}

impl Invalidation {
    /// A message from `origin` about `target`.
    pub fn new(origin: u64, target: InvalidationTarget) -> Invalidation {
        Invalidation { origin, target }
    }

    /// The wire form for buses that carry bytes: `K` or `P`, the origin as 8 bytes
    /// little-endian, then the key or prefix.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, bytes): (u8, &[u8]) = match &self.target {
            InvalidationTarget::Key(k) => (b'K', k),
            InvalidationTarget::Prefix(p) => (b'P', p),
            InvalidationTarget::Suspend => (b'S', &[]),
            InvalidationTarget::Resume => (b'R', &[]),
        };
        let mut out = Vec::with_capacity(9 + bytes.len());
        out.push(tag);
        out.extend_from_slice(&self.origin.to_le_bytes());
        out.extend_from_slice(bytes);
        out
    }

    /// Parses [`Invalidation::encode`]'s form; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Invalidation> {
        if bytes.len() < 9 {
            return None;
        }
        let mut origin = [0u8; 8];
        origin.copy_from_slice(&bytes[1..9]);
        let rest = bytes[9..].to_vec();
        let target = match bytes[0] {
            b'K' => InvalidationTarget::Key(rest),
            b'P' => InvalidationTarget::Prefix(rest),
            b'S' if rest.is_empty() => InvalidationTarget::Suspend,
            b'R' if rest.is_empty() => InvalidationTarget::Resume,
            _ => return None,
        };
        Some(Invalidation::new(u64::from_le_bytes(origin), target))
    }
}

/// A function a bus calls for each message; it must be quick and must not block.
pub type InvalidationHandler = Arc<dyn Fn(&Invalidation) + Send + Sync>;

/// Carries L1 invalidations between tiered caches (in one process or across processes).
///
/// Implementations deliver every published message to every subscriber, the publisher's own
/// subscription included (it ignores messages with its own origin). Delivery may be
/// asynchronous; the time it takes is the consistency window of the tiered caches on the
/// bus. `Send + Sync`.
pub trait InvalidationBus: Send + Sync + 'static {
    /// Sends `message` to every subscriber.
    fn publish(&self, message: &Invalidation) -> Result<()>;
    /// Sends every message, in order (a bus over the network sends them in one round trip).
    fn publish_all(&self, messages: &[Invalidation]) -> Result<()> {
        messages.iter().try_for_each(|m| self.publish(m))
    }
    /// Registers `handler`; returns an id for [`InvalidationBus::unsubscribe`].
    fn subscribe(&self, handler: InvalidationHandler) -> Result<u64>;
    /// Removes a subscription; unknown ids are ignored.
    fn unsubscribe(&self, id: u64);
    /// True when the server itself reports every write to the cache's keys, this cache's
    /// own included ([`crate::TrackingBus`]): the cache then publishes nothing, and its own
    /// writes drop its L1 copy instead of replacing it (the server's notice of the write
    /// may arrive after a later write by someone else; a copy made then would stay stale).
    fn tracks_writes(&self) -> bool {
        false
    }
    /// As [`InvalidationBus::subscribe`], without waiting for the bus's link to come up
    /// (the child of a `fork()` subscribing again on its first read, which must not block):
    /// a bus that suspends L1 until its link is up ([`crate::TrackingBus`]) keeps the
    /// subscriber suspended until then. The default subscribes.
    fn subscribe_without_waiting(&self, handler: InvalidationHandler) -> Result<u64> {
        self.subscribe(handler)
    }
}

/// An in-process bus: `publish` calls every subscriber before it returns.
///
/// `LocalBus::named("x")` gives every caller in the process the same bus (the URL form
/// `bus=local:x`). `Send + Sync`.
///
/// ```
/// use polycache::{Cache, Expiry};
/// let url = "tiered://?l1=memory%3A%2F%2F&l2=memory%3A%2F%2Fdoc-bus-l2&bus=local%3Adoc-bus";
/// let (a, b) = (Cache::open(url).unwrap(), Cache::open(url).unwrap());
/// a.set("k", b"old", Expiry::Default).unwrap();
/// assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"old"[..]));
/// a.set("k", b"new", Expiry::Default).unwrap();
/// assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"new"[..]));
/// ```
#[derive(Default)]
pub struct LocalBus {
    subscribers: Mutex<Vec<(u64, InvalidationHandler)>>,
    next_id: AtomicU64,
}

impl fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.subscribers.lock().map_or(0, |s| s.len());
        f.debug_struct("LocalBus").field("subscribers", &n).finish()
    }
}

impl LocalBus {
    /// A new private bus.
    pub fn new() -> Arc<LocalBus> {
        Arc::new(LocalBus::default())
    }

    /// The process-wide bus called `name`, created on first use.
    pub fn named(name: &str) -> Arc<LocalBus> {
        static NAMED: OnceLock<Mutex<HashMap<String, Weak<LocalBus>>>> = OnceLock::new();
        let mut map = NAMED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(bus) = map.get(name).and_then(Weak::upgrade) {
            return bus;
        }
        let bus = LocalBus::new();
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(name.to_owned(), Arc::downgrade(&bus));
        bus
    }
}

impl InvalidationBus for LocalBus {
    fn publish(&self, message: &Invalidation) -> Result<()> {
        // Handlers run outside the lock, so one may subscribe or publish in turn.
        let handlers: Vec<InvalidationHandler> = self
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for h in handlers {
            h(message);
        }
        Ok(())
    }

    fn subscribe(&self, handler: InvalidationHandler) -> Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, handler));
        Ok(id)
    }

    fn unsubscribe(&self, id: u64) {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
    }
}
