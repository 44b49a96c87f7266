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
use crate::error::{Error, Result};
use crate::location::{redact, Location, Options};
use crate::tiered::{Invalidation, InvalidationBus, InvalidationHandler, InvalidationTarget};
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
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The origin of the message a subscriber sends its caches after a (re)connection: "drop
/// everything". No cache has it (tiered origins are never 0).
const FLUSH_ORIGIN: u64 = 0;

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
        hubs()
            .get(&self.hub_key)
            .map_or(0, |h| h.connects.load(Ordering::Relaxed))
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
        let hub = {
            let mut map = hubs();
            // A hub inherited through fork() has no thread in this process: start another.
            if map
                .get(&self.hub_key)
                .is_some_and(|h| h.pid != std::process::id())
            {
                map.remove(&self.hub_key);
            }
            let hub = map
                .entry(self.hub_key.clone())
                .or_insert_with(|| {
                    Hub::start(
                        self.hub_key.clone(),
                        client.clone(),
                        *connect_timeout,
                        redact(&self.hub_key),
                    )
                })
                .clone();
            hub.lock()
                .channels
                .entry(self.channel.clone())
                .or_default()
                .push((id, counted));
            hub
        };
        hub.wait_first_attempt(connect_timeout.unwrap_or(MAX_BACKOFF) + MAX_BACKOFF);
        Ok(id)
    }

    fn unsubscribe(&self, id: u64) {
        let map = hubs();
        if let Some(hub) = map.get(&self.hub_key) {
            let mut state = hub.lock();
            if let Some(list) = state.channels.get_mut(&self.channel) {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    state.channels.remove(&self.channel);
                }
            }
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The subscribers of this process, one per server URL.
fn hubs() -> MutexGuard<'static, HashMap<String, Arc<Hub>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Arc<Hub>>>> = OnceLock::new();
    HUBS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// One subscriber connection to one server and the handlers it serves, by channel.
struct Hub {
    key: String,
    /// The process that started the thread.
    pid: u32,
    /// The server for log messages (no password).
    shown: String,
    client: redis::Client,
    connect_timeout: Option<Duration>,
    state: Mutex<HubState>,
    changed: Condvar,
    connects: AtomicU64,
}

#[derive(Default)]
struct HubState {
    channels: HashMap<String, Vec<(u64, InvalidationHandler)>>,
    /// Connection attempts finished, successful or not.
    attempts: u64,
}

impl Hub {
    fn start(
        key: String,
        client: redis::Client,
        connect_timeout: Option<Duration>,
        shown: String,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            key,
            pid: std::process::id(),
            shown,
            client,
            connect_timeout,
            state: Mutex::default(),
            changed: Condvar::new(),
            connects: AtomicU64::new(0),
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

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the subscriber has tried to connect at least once (or `limit` passed),
    /// so that a cache that subscribes while the server is up misses no message after.
    fn wait_first_attempt(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while state.attempts == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn attempted(&self) {
        self.lock().attempts += 1;
        self.changed.notify_all();
    }

    /// Ends the thread if no cache listens any more; true when it did.
    fn retire_if_unused(&self) -> bool {
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

    fn deliver(&self, channel: &str, message: &Invalidation) {
        let handlers: Vec<InvalidationHandler> = match self.lock().channels.get(channel) {
            Some(list) => list.iter().map(|(_, h)| h.clone()).collect(),
            None => return,
        };
        for h in handlers {
            h(message);
        }
    }

    /// Tells every cache to drop its whole L1: messages may have been missed.
    fn flush_all(&self) {
        let flush = Invalidation::new(FLUSH_ORIGIN, InvalidationTarget::Prefix(Vec::new()));
        let handlers: Vec<InvalidationHandler> = self
            .lock()
            .channels
            .values()
            .flatten()
            .map(|(_, h)| h.clone())
            .collect();
        for h in handlers {
            h(&flush);
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let conn = match self.connect_timeout {
            Some(t) => self.client.get_connection_with_timeout(t)?,
            None => self.client.get_connection()?,
        };
        conn.set_read_timeout(Some(IDLE_CHECK))?;
        conn.set_write_timeout(Some(IDLE_CHECK))?;
        Ok(conn)
    }

    fn run(self: Arc<Hub>) {
        let mut backoff = Duration::from_millis(50);
        let mut warned = false;
        loop {
            let mut conn = match self.connect() {
                Ok(conn) => conn,
                Err(e) => {
                    self.attempted();
                    if !warned {
                        log::warn!(
                            "polycache: L1 invalidation subscriber cannot reach redis {} \
                             (retrying): {e}",
                            self.shown
                        );
                        warned = true;
                    }
                    if self.retire_if_unused() {
                        return;
                    }
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let mut pubsub = conn.as_pubsub();
            if let Err(e) = pubsub.psubscribe(PATTERN) {
                self.attempted();
                log::warn!(
                    "polycache: L1 invalidation subscriber could not subscribe on redis {}: {e}",
                    self.shown
                );
                if self.retire_if_unused() {
                    return;
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            // Subscribed: from here on no message is missed. What was published before
            // (while disconnected, or before this connection existed) may have been.
            self.flush_all();
            self.connects.fetch_add(1, Ordering::Relaxed);
            self.attempted();
            if warned {
                log::info!(
                    "polycache: L1 invalidation subscriber reconnected to redis {}",
                    self.shown
                );
            }
            backoff = Duration::from_millis(50);
            warned = false;
            loop {
                match pubsub.get_message() {
                    Ok(msg) => {
                        if let Some(m) = Invalidation::decode(msg.get_payload_bytes()) {
                            if m.origin != FLUSH_ORIGIN {
                                self.deliver(msg.get_channel_name(), &m);
                            }
                        }
                    }
                    Err(e) if e.is_timeout() => {
                        if self.retire_if_unused() {
                            return;
                        }
                        if let Err(e) = pubsub.ping::<redis::Value>() {
                            log::warn!(
                                "polycache: L1 invalidation subscriber lost redis {}: {e}",
                                self.shown
                            );
                            break;
                        }
                    }
                    Err(e) => {
                        log::warn!(
                            "polycache: L1 invalidation subscriber lost redis {} \
                             (reconnecting; L1 copies will be dropped): {e}",
                            self.shown
                        );
                        warned = true;
                        break;
                    }
                }
            }
        }
    }
}
