//! The Redis pub/sub [`InvalidationBus`]: L1 invalidations of tiered caches across processes
//! and machines.
//!
//! Each tiered cache publishes on the channel `polycache:l1:{key_prefix}` of a Redis server
//! (by default its L2's). Each process keeps **one** subscriber connection per server, owned
//! by one thread: it `PSUBSCRIBE`s to `polycache:l1:*` and hands every message to the
//! caches of this process that listen on its channel, so adding a cache never touches the
//! connection. When the connection breaks (a Redis restart, a network failure) the thread
//! reconnects by itself, with a backoff of 50 ms doubling to 1 s; messages published while
//! it was disconnected are lost, so after every (re)connection it drops the whole L1 of
//! every cache it serves. The thread ends once no cache of this process listens on the
//! server any more (checked every second).
//!
//! Threads do not survive `fork()`: a cache opened before a fork gets no invalidations in
//! the child. Open tiered caches in the worker processes (Django and Flask open caches on
//! first use, after gunicorn's fork, unless the application is preloaded).

use crate::backend::redis::RedisBackend;
use crate::bus::{Invalidation, InvalidationBus, InvalidationHandler, InvalidationTarget};
use crate::error::{Error, Result};
use crate::location::{redact, Location, Options};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The start of every invalidation channel; the rest is the cache's key prefix.
pub const INVALIDATION_CHANNEL_PREFIX: &str = "polycache:l1:";
/// What the subscriber connection listens to.
const PATTERN: &str = "polycache:l1:*";
/// How long the subscriber blocks on a quiet connection before it checks it is still
/// wanted (and pings the server, so a half-open connection is noticed).
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(1);
/// The longest wait between two connection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The origin of the message a subscriber sends its caches after a (re)connection: "drop
/// everything". No cache has it (tiered origins are never 0).
pub(crate) const FLUSH_ORIGIN: u64 = 0;

/// A bus over Redis pub/sub: publishes on `polycache:l1:{key_prefix}` and delivers what
/// other processes publish there.
///
/// Open it with the URL of one Redis server (`redis://`, `rediss://` or `unix://`, with
/// their options; a leader + replicas URL uses the leader; not a Cluster). A tiered URL says
/// `bus=redis` (the L2's server) or `bus=<url-encoded redis URL>`; in Rust,
/// `Cache::builder_tiered(..).bus(RedisBus::open(url, "app")?)`.
///
/// Delivery takes one network hop after the write returns. While the subscriber is
/// disconnected, other processes' L1 copies are bounded by `l1_timeout`; on reconnection the
/// subscriber drops the L1 of every cache it serves. Publishing failures are logged by the
/// tiered cache, never raised (the L2 write succeeded). `Send + Sync`.
///
/// ```no_run
/// use polycache::{Cache, Expiry, RedisBus};
/// let bus = RedisBus::open("redis://127.0.0.1:6379/0", "app")?;
/// let cache = Cache::builder_tiered("memory://", "redis://127.0.0.1:6379/0")
///     .key_prefix("app")
///     .bus(bus.clone())
///     .build()?;
/// cache.set("k", b"v", Expiry::Default)?; // other processes drop their L1 copy of "k"
/// # Ok::<(), polycache::Error>(())
/// ```
pub struct RedisBus {
    publisher: RedisBackend,
    channel: String,
    /// The process-wide subscriber this bus registers with (its server's URL).
    hub_key: String,
    received: Arc<AtomicU64>,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("server", &redact(&self.hub_key))
            .field("channel", &self.channel)
            .finish()
    }
}

impl RedisBus {
    /// A bus on the Redis server at `url` for the caches whose key prefix is `key_prefix`
    /// (channel `polycache:l1:{key_prefix}`). Connects to nothing until a cache subscribes.
    ///
    /// # Errors
    /// A configuration error for a URL that is not one Redis server, or a bad option.
    pub fn open(url: &str, key_prefix: &str) -> Result<Arc<RedisBus>> {
        let location = Location::parse(url)?;
        if !matches!(location.scheme(), "redis" | "rediss" | "unix") {
            return Err(Error::config(format!(
                "a Redis invalidation bus needs a redis://, rediss:// or unix:// URL, not {}",
                location.redacted()
            )));
        }
        let mut options = Options::new(&location);
        let publisher = RedisBackend::open(&location, &mut options)?;
        options.finish()?;
        Ok(Arc::new(RedisBus {
            publisher,
            channel: format!("{INVALIDATION_CHANNEL_PREFIX}{key_prefix}"),
            hub_key: url.to_owned(),
            received: Arc::default(),
        }))
    }

    /// The channel this bus publishes and listens on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// How many messages from other caches this bus delivered to its subscribers (each
    /// message counted once per subscriber), for tests and monitoring.
    pub fn messages_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// How many times this process's subscriber connection to the bus's server connected
    /// (1 after the first connection, +1 per reconnection); 0 while none is open yet. When
    /// it grows, the L1s the subscriber serves have already been dropped.
    pub fn connections(&self) -> u64 {
        existing_hub(&self.hub_key).map_or(0, |h| h.connects())
    }
}

impl InvalidationBus for RedisBus {
    fn publish(&self, message: &Invalidation) -> Result<()> {
        self.publisher.publish(&self.channel, &[message.encode()])
    }

    fn publish_all(&self, messages: &[Invalidation]) -> Result<()> {
        let encoded: Vec<Vec<u8>> = messages.iter().map(Invalidation::encode).collect();
        self.publisher.publish(&self.channel, &encoded)
    }

    fn subscribe(&self, handler: InvalidationHandler) -> Result<u64> {
        let Some((client, connect_timeout)) = self.publisher.leader_client() else {
            return Err(Error::config(
                "pub/sub invalidations need one Redis server, not a Cluster",
            ));
        };
        let received = self.received.clone();
        let counted: InvalidationHandler = Arc::new(move |m: &Invalidation| {
            if m.origin != FLUSH_ORIGIN {
                received.fetch_add(1, Ordering::Relaxed);
            }
            handler(m);
        });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let link = || -> Box<dyn Link> {
            Box::new(PubSubLink {
                client: client.clone(),
                connect_timeout: *connect_timeout,
            })
        };
        let hub = subscribe_to_hub(
            &self.hub_key,
            redact(&self.hub_key),
            link,
            (&self.channel, id, counted),
        );
        hub.wait_first_attempt(connect_timeout.unwrap_or(MAX_BACKOFF) + MAX_BACKOFF);
        Ok(id)
    }

    fn unsubscribe(&self, id: u64) {
        if let Some(hub) = existing_hub(&self.hub_key) {
            hub.unregister(&self.channel, id);
        }
    }
}

pub(crate) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The subscribers of this process, one per server (and kind of link).
fn hubs() -> MutexGuard<'static, HashMap<String, Arc<Hub>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Arc<Hub>>>> = OnceLock::new();
    HUBS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Registers `handler` under `channel` with the hub of this process under `key`, started
/// with `link` when there is none (or when the one there was inherited through `fork()` and
/// has no thread in this process). Under the hubs' lock, so the hub cannot retire between.
pub(crate) fn subscribe_to_hub(
    key: &str,
    shown: String,
    link: impl FnOnce() -> Box<dyn Link>,
    (channel, id, handler): (&str, u64, InvalidationHandler),
) -> Arc<Hub> {
    let mut map = hubs();
    if map.get(key).is_some_and(|h| h.pid != std::process::id()) {
        map.remove(key);
    }
    let hub = map
        .entry(key.to_owned())
        .or_insert_with(|| Hub::start(key.to_owned(), link(), shown))
        .clone();
    hub.register(channel, id, handler);
    hub
}

/// The hub of this process under `key`, if one runs.
pub(crate) fn existing_hub(key: &str) -> Option<Arc<Hub>> {
    hubs().get(key).cloned()
}

/// How one connection of a [`Hub`] ended.
pub(crate) enum Ended {
    /// No cache listens any more: the thread ends.
    Retired,
    /// The connection failed or broke (it retries with a backoff).
    Broke(String),
    /// The server refused what the link needs (an unknown command, a protocol it does not
    /// speak): reported to caches that subscribe, retried like a break.
    Refused(String),
}

/// What a hub's connection listens to: one connection's life, from connecting to its end.
pub(crate) trait Link: Send + Sync + 'static {
    /// Connects, subscribes to what `hub` serves, calls [`Hub::ready`], then delivers
    /// messages until the connection breaks or no cache listens any more.
    fn session(&self, hub: &Hub) -> Ended;
    /// True when the caches must not use their L1 while no connection is ready (the
    /// server's notifications are the only invalidations they get).
    fn suspends(&self) -> bool {
        false
    }
}

/// One subscriber connection to one server and the handlers it serves, by channel (or key
/// prefix); the thread that owns it reconnects with a backoff of 50 ms doubling to 1 s.
pub(crate) struct Hub {
    key: String,
    /// The process that started the thread.
    pid: u32,
    /// The server for log messages (no password).
    pub(crate) shown: String,
    link: Box<dyn Link>,
    state: Mutex<HubState>,
    changed: Condvar,
    connects: AtomicU64,
    /// Wakes a link that waits for messages: a cache subscribed.
    pub(crate) wake: tokio::sync::Notify,
}

#[derive(Default)]
pub(crate) struct HubState {
    pub(crate) channels: HashMap<String, Vec<(u64, InvalidationHandler)>>,
    /// Connection attempts finished, successful or not.
    pub(crate) attempts: u64,
    /// The subscriptions a ready connection serves (for links that suspend L1).
    pub(crate) live: std::collections::HashSet<u64>,
    /// Whether a connection is ready now.
    pub(crate) connected: bool,
    /// Why the server refused the last attempt, if it did.
    pub(crate) refused: Option<String>,
}

/// The message that tells a cache to drop its whole L1.
fn flush_message() -> Invalidation {
    Invalidation::new(FLUSH_ORIGIN, InvalidationTarget::Prefix(Vec::new()))
}

impl Hub {
    fn start(key: String, link: Box<dyn Link>, shown: String) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            key,
            pid: std::process::id(),
            shown,
            link,
            state: Mutex::default(),
            changed: Condvar::new(),
            connects: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        });
        let runner = hub.clone();
        let spawned = thread::Builder::new()
            .name("polycache-l1-bus".into())
            .spawn(move || runner.run());
        if let Err(e) = spawned {
            log::warn!("polycache: cannot start the L1 invalidation subscriber: {e}");
        }
        hub
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times a connection became ready (see [`RedisBus::connections`]).
    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Adds `handler` under `channel`.
    pub(crate) fn register(&self, channel: &str, id: u64, handler: InvalidationHandler) {
        self.lock()
            .channels
            .entry(channel.to_owned())
            .or_default()
            .push((id, handler));
        self.wake.notify_one();
    }

    /// Removes subscription `id` from `channel`.
    pub(crate) fn unregister(&self, channel: &str, id: u64) {
        let mut state = self.lock();
        state.live.remove(&id);
        if let Some(list) = state.channels.get_mut(channel) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                state.channels.remove(channel);
            }
        }
    }

    /// Waits until `done` holds for the state (or `limit` passed); returns whether it did.
    pub(crate) fn wait_for(&self, limit: Duration, done: impl Fn(&HubState) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits until the subscriber has tried to connect at least once (or `limit` passed),
    /// so that a cache that subscribes while the server is up misses no message after.
    fn wait_first_attempt(&self, limit: Duration) {
        self.wait_for(limit, |s| s.attempts > 0);
    }

    fn attempted(&self, refused: Option<String>) {
        let mut state = self.lock();
        state.attempts += 1;
        state.refused = refused;
        drop(state);
        self.changed.notify_all();
    }

    /// Ends the thread if no cache listens any more; true when it did.
    pub(crate) fn retire_if_unused(&self) -> bool {
        let mut map = hubs();
        if !self.lock().channels.is_empty() {
            return false;
        }
        if map
            .get(&self.key)
            .is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), self))
        {
            map.remove(&self.key);
        }
        true
    }

    /// The handlers registered under `channel`.
    pub(crate) fn handlers(&self, channel: &str) -> Vec<InvalidationHandler> {
        match self.lock().channels.get(channel) {
            Some(list) => list.iter().map(|(_, h)| h.clone()).collect(),
            None => Vec::new(),
        }
    }

    fn deliver(&self, channel: &str, message: &Invalidation) {
        for h in self.handlers(channel) {
            h(message);
        }
    }

    /// Every handler with its subscription id.
    fn all_handlers(&self) -> Vec<(u64, InvalidationHandler)> {
        self.lock()
            .channels
            .values()
            .flatten()
            .map(|(id, h)| (*id, h.clone()))
            .collect()
    }

    /// Tells every cache to drop its whole L1: messages may have been missed.
    pub(crate) fn flush_all(&self) {
        let flush = flush_message();
        for (_, h) in self.all_handlers() {
            h(&flush);
        }
    }

    /// Lets the subscriptions `ids` use their L1 again (the connection serves them now).
    /// They count as live only once their caches have resumed, so that a cache waiting to
    /// open (see `TrackingBus::subscribe`) never reads before its L1 is in use.
    pub(crate) fn resume(&self, ids: &[u64]) {
        let resume = Invalidation::new(FLUSH_ORIGIN, InvalidationTarget::Resume);
        let handlers: Vec<InvalidationHandler> = {
            let state = self.lock();
            let all = state.channels.values().flatten();
            all.filter(|(id, _)| ids.contains(id))
                .map(|(_, h)| h.clone())
                .collect()
        };
        for h in handlers {
            h(&resume);
        }
        self.lock().live.extend(ids.iter().copied());
        self.changed.notify_all();
    }

    /// Stops every cache from using its L1 (and drops it): the connection is gone.
    fn suspend_all(&self) {
        let suspend = Invalidation::new(FLUSH_ORIGIN, InvalidationTarget::Suspend);
        self.lock().live.clear();
        for (_, h) in self.all_handlers() {
            h(&suspend);
        }
    }

    /// Called by the link once its connection is subscribed: from here on no message is
    /// missed, what was published before may have been. A link that suspends L1 resumes
    /// the subscriptions it serves itself ([`Hub::resume`]).
    pub(crate) fn ready(&self) {
        if self.connects() > 0 {
            log::info!(
                "polycache: L1 invalidation subscriber reconnected to redis {}",
                self.shown
            );
        }
        if !self.link.suspends() {
            self.flush_all();
        }
        self.lock().connected = true;
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.attempted(None);
    }

    fn run(self: Arc<Hub>) {
        // The subscriber's blocking reads are redis-rs', which fail on `EINTR`; signals
        // are for the program's own threads to take.
        let _signals = crate::signals::Held::hold();
        let mut backoff = Duration::from_millis(50);
        let mut warned = false;
        loop {
            let before = self.connects();
            let ended = self.link.session(&self);
            let was_ready = self.connects() != before;
            if was_ready {
                self.lock().connected = false;
                if self.link.suspends() {
                    self.suspend_all();
                }
                backoff = Duration::from_millis(50);
            }
            let (error, refused) = match ended {
                Ended::Retired => return,
                Ended::Broke(e) => (e, None),
                Ended::Refused(e) => (e.clone(), Some(e)),
            };
            if was_ready {
                log::warn!(
                    "polycache: L1 invalidation subscriber lost redis {} \
                     (reconnecting; L1 copies will be dropped): {error}",
                    self.shown
                );
                warned = true;
                continue;
            }
            self.attempted(refused);
            if !warned {
                log::warn!(
                    "polycache: L1 invalidation subscriber cannot use redis {} (retrying): \
                     {error}",
                    self.shown
                );
                warned = true;
            }
            if self.retire_if_unused() {
                return;
            }
            thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Redis pub/sub: `PSUBSCRIBE polycache:l1:*`, messages delivered by channel.
struct PubSubLink {
    client: redis::Client,
    connect_timeout: Option<Duration>,
}

impl PubSubLink {
    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let conn = match self.connect_timeout {
            Some(t) => self.client.get_connection_with_timeout(t)?,
            None => self.client.get_connection()?,
        };
        conn.set_read_timeout(Some(IDLE_CHECK))?;
        conn.set_write_timeout(Some(IDLE_CHECK))?;
        Ok(conn)
    }
}

impl Link for PubSubLink {
    fn session(&self, hub: &Hub) -> Ended {
        let mut conn = match self.connect() {
            Ok(conn) => conn,
            Err(e) => return Ended::Broke(e.to_string()),
        };
        let mut pubsub = conn.as_pubsub();
        if let Err(e) = pubsub.psubscribe(PATTERN) {
            return Ended::Broke(format!("could not subscribe: {e}"));
        }
        hub.ready();
        loop {
            match pubsub.get_message() {
                Ok(msg) => {
                    if let Some(m) = Invalidation::decode(msg.get_payload_bytes()) {
                        let carried = matches!(
                            m.target,
                            InvalidationTarget::Key(_) | InvalidationTarget::Prefix(_)
                        );
                        if m.origin != FLUSH_ORIGIN && carried {
                            hub.deliver(msg.get_channel_name(), &m);
                        }
                    }
                }
                Err(e) if e.is_timeout() => {
                    if hub.retire_if_unused() {
                        return Ended::Retired;
                    }
                    if let Err(e) = pubsub.ping::<redis::Value>() {
                        return Ended::Broke(e.to_string());
                    }
                }
                Err(e) => return Ended::Broke(e.to_string()),
            }
        }
    }
}
