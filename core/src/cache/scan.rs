//! `keys`, `iter_keys` and `delete_pattern`: glob patterns over the caller's keys.
//!
//! A pattern is applied as django-redis applies it: the full pattern is
//! `{key_prefix}:{version}:{pattern}` with the prefix and the version glob-escaped
//! ([`escape_glob`]), so a prefix holding `*`, `?` or `[` never matches another prefix's
//! keys; the keys returned are the caller's (prefix and version taken off). The backend scans
//! its store a page at a time ([`KeyScan`]); see each backend's page for what a scan costs
//! and what a concurrent writer may see.

use super::{Cache, Key, MAX_KEY_LEN};
use crate::backend::{AsyncKeyScan, BlockingPoolScan, InlineScan, KeyScan};
use crate::error::{Error, ErrorKind, Result};
use crate::pattern::{escape_glob, KeyPattern};

/// How many keys a scan asks the backend for per page unless told otherwise (Redis'
/// default `SCAN` count, and django-redis').
pub const DEFAULT_ITERSIZE: usize = 10;

/// The page size of `keys`, which reads every page anyway.
const KEYS_PAGE: usize = 1000;

/// The most keys a caller may ask for per page: one page is held in memory.
pub const MAX_ITERSIZE: usize = 1_000_000;

fn check_itersize(itersize: usize) -> Result<usize> {
    if itersize == 0 || itersize > MAX_ITERSIZE {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            format!("itersize must be between 1 and {MAX_ITERSIZE}, not {itersize}"),
        ));
    }
    Ok(itersize)
}

/// The caller's keys of a scan, streamed a page at a time: what [`Cache::iter_keys`]
/// returns.
///
/// Iterating yields `Result<String>`; an error ends the iteration. `Send`; not `Sync`.
/// Keys that are not UTF-8 (written by another program) come out with `U+FFFD` in place
/// of their bad bytes.
pub struct KeyIter {
    scan: Option<Box<dyn KeyScan>>,
    head: usize,
    cache: Cache,
    page: std::vec::IntoIter<String>,
}

impl KeyIter {
    /// The next page of the caller's keys (possibly empty), or `None` when the scan is over.
    pub fn next_page(&mut self) -> Result<Option<Vec<String>>> {
        Ok(self.next_full_page()?.map(|keys| strip(keys, self.head)))
    }

    /// The next page of full keys; fail-open applies, and an error or the end ends the scan.
    fn next_full_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        let page = scan.next_page();
        self.answer_page(page)
    }

    fn answer_page(&mut self, page: Result<Option<Vec<Vec<u8>>>>) -> Result<Option<Vec<Vec<u8>>>> {
        answer(&self.cache, &mut self.scan, page)
    }
}

/// Fail-open applies to `page`; an error or the end ends the scan held in `scan`.
fn answer<S>(
    cache: &Cache,
    scan: &mut Option<S>,
    page: Result<Option<Vec<Vec<u8>>>>,
) -> Result<Option<Vec<Vec<u8>>>> {
    let page = cache.apply_fail_open(page, || None);
    if !matches!(page, Ok(Some(_))) {
        *scan = None;
    }
    page
}

impl Iterator for KeyIter {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            match self.next_page() {
                Ok(Some(keys)) => self.page = keys.into_iter(),
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// [`KeyIter`], awaitable: each page comes from the backend's async scan
/// ([`AsyncBackend::scan_keys`](crate::AsyncBackend::scan_keys)): `SCAN` on Redis'
/// multiplexed connection, a page query on tokio-postgres, in place on `memory://`, and on
/// polycache's blocking pool for `file://`, `sqlite://` and synchronous custom backends.
///
/// Dropping a [`AsyncKeyIter::next_page`] future while it waits ends the scan: the next
/// call answers `None`. `Send`; not `Sync`.
pub struct AsyncKeyIter {
    scan: Option<Box<dyn AsyncKeyScan>>,
    head: usize,
    cache: Cache,
}

impl From<KeyIter> for AsyncKeyIter {
    /// The same scan, its next pages awaited (on the blocking pool unless the backend
    /// answers in memory). [`AsyncKeyIter::new`] starts a scan on the backend's async side.
    fn from(sync: KeyIter) -> AsyncKeyIter {
        let inline = sync.cache.completes_inline();
        AsyncKeyIter {
            scan: sync.scan.map(|scan| -> Box<dyn AsyncKeyScan> {
                if inline {
                    Box::new(InlineScan(scan))
                } else {
                    Box::new(BlockingPoolScan::new(scan))
                }
            }),
            head: sync.head,
            cache: sync.cache,
        }
    }
}

impl AsyncKeyIter {
    /// Starts the scan that [`Cache::iter_keys_async`] answers, without awaiting: on the
    /// built-in backends starting a scan does no I/O (the first page does), so a binding may
    /// start one outside an async context and await its pages later, or read some of them
    /// with [`AsyncKeyIter::next_page_blocking`].
    pub fn new(
        cache: &Cache,
        pattern: &str,
        version: Option<i64>,
        itersize: usize,
    ) -> Result<AsyncKeyIter> {
        let itersize = check_itersize(itersize)?;
        let (pattern, head) = cache.key_pattern(pattern, version)?;
        let backend = std::sync::Arc::clone(&cache.inner.backend);
        let scan = match cache.inner.awaited.as_ref() {
            None => backend
                .scan_keys(&pattern, itersize)
                .map(|scan| -> Box<dyn AsyncKeyScan> { Box::new(InlineScan(scan)) }),
            Some(awaited) => std::sync::Arc::clone(awaited).scan_keys(backend, &pattern, itersize),
        };
        let scan = cache.apply_fail_open(scan.map(Some), || None)?;
        Ok(AsyncKeyIter {
            scan,
            head,
            cache: cache.clone(),
        })
    }

    /// The next page of the caller's keys (possibly empty), or `None` when the scan is over.
    pub async fn next_page(&mut self) -> Result<Option<Vec<String>>> {
        let head = self.head;
        Ok(self.next_full_page().await?.map(|keys| strip(keys, head)))
    }

    /// The same page read on the calling thread, blocking it on I/O: for a binding that
    /// reads some pages of one scan from a thread and others from an event loop. Redis and
    /// PostgreSQL read it through their synchronous connections (the position is the same);
    /// a scan with no synchronous way to read a page (a custom async backend's) is awaited
    /// on polycache's runtime while this thread waits.
    pub fn next_page_blocking(&mut self) -> Result<Option<Vec<String>>> {
        let Some(mut scan) = self.scan.take() else {
            return Ok(None);
        };
        let page = match scan.next_page_blocking() {
            Some(page) => Ok((scan, page)),
            None => crate::runtime::wait(async move {
                let page = scan.next_page().await;
                (scan, page)
            }),
        }
        .and_then(|(scan, page)| {
            self.scan = Some(scan);
            page
        });
        Ok(self.answer_page(page)?.map(|keys| strip(keys, self.head)))
    }

    async fn next_full_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        let Some(mut scan) = self.scan.take() else {
            return Ok(None);
        };
        // Taken out while the page is awaited: a dropped future leaves the scan ended.
        let page = scan.next_page().await;
        self.scan = Some(scan);
        self.answer_page(page)
    }

    fn answer_page(&mut self, page: Result<Option<Vec<Vec<u8>>>>) -> Result<Option<Vec<Vec<u8>>>> {
        answer(&self.cache, &mut self.scan, page)
    }
}

/// The caller's keys: the full keys without their `{key_prefix}:{version}:` head.
fn strip(keys: Vec<Vec<u8>>, head: usize) -> Vec<String> {
    keys.into_iter()
        .map(|k| String::from_utf8_lossy(k.get(head..).unwrap_or_default()).into_owned())
        .collect()
}

impl Cache {
    /// The full-key pattern of the caller's `pattern` at `version` (default: the cache's),
    /// and the length of the head to take off the keys found.
    fn key_pattern(&self, pattern: &str, version: Option<i64>) -> Result<(KeyPattern, usize)> {
        if pattern.len() > MAX_KEY_LEN {
            return Err(super::key_too_long(pattern.len()));
        }
        let version = version.unwrap_or(self.inner.version);
        let head = self.make_key(Key::new("").version(version))?;
        let mut glob = escape_glob(&head);
        glob.extend_from_slice(pattern.as_bytes());
        Ok((KeyPattern::new(glob), head.len()))
    }

    /// Starts the scan behind `iter_keys` and its twins.
    fn start_scan(&self, pattern: &str, version: Option<i64>, itersize: usize) -> Result<KeyIter> {
        let itersize = check_itersize(itersize)?;
        let (pattern, head) = self.key_pattern(pattern, version)?;
        let scan = std::sync::Arc::clone(&self.inner.backend).scan_keys(&pattern, itersize);
        let scan = self.apply_fail_open(scan.map(Some), || None)?;
        Ok(KeyIter {
            scan,
            head,
            cache: self.clone(),
            page: Vec::new().into_iter(),
        })
    }

    /// The caller's keys that match the glob `pattern` at `version` (default: the cache's).
    ///
    /// Patterns use Redis' glob syntax (`*`, `?`, `[a-z]`, `[^a-z]`, `\*`; `?` and a class
    /// match one byte). The cache's key prefix and the version are applied to the pattern
    /// and taken off the keys found, as django-redis does. Only live keys are returned,
    /// each once (a Redis `SCAN` may find a key twice; `keys` drops the repeat).
    /// This holds every matching key in memory and walks the whole store: on a large store
    /// prefer [`Cache::iter_keys`]. Fails with [`ErrorKind::Unsupported`] on a backend
    /// that cannot list its keys (memcached).
    ///
    /// ```
    /// use polycache::{Cache, Expiry};
    /// let cache = Cache::builder("memory://").key_prefix("app").build().unwrap();
    /// cache.set("user:1", b"a", Expiry::Default).unwrap();
    /// cache.set("user:2", b"b", Expiry::Default).unwrap();
    /// cache.set("team:1", b"c", Expiry::Default).unwrap();
    /// let mut users = cache.keys("user:*", None).unwrap();
    /// users.sort();
    /// assert_eq!(users, ["user:1", "user:2"]);
    /// ```
    pub fn keys(&self, pattern: &str, version: Option<i64>) -> Result<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        self.iter_keys(pattern, version, KEYS_PAGE)?
            .filter(|k| k.as_ref().map_or(true, |k| seen.insert(k.clone())))
            .collect()
    }

    /// The caller's keys that match `pattern`, streamed: the backend is asked for about
    /// `itersize` keys at a time (Redis: `SCAN … COUNT itersize`). See [`Cache::keys`] for
    /// the pattern, and each backend's page for what a writer running meanwhile may see.
    pub fn iter_keys(
        &self,
        pattern: &str,
        version: Option<i64>,
        itersize: usize,
    ) -> Result<KeyIter> {
        self.start_scan(pattern, version, itersize)
    }

    /// Removes every key that matches `pattern` (see [`Cache::keys`]), `itersize` keys
    /// per scan page and per bulk delete; returns how many keys it removed (django-redis
    /// counts the keys it found; a key that expired or was removed meanwhile is not counted
    /// here).
    pub fn delete_pattern(
        &self,
        pattern: &str,
        version: Option<i64>,
        itersize: usize,
    ) -> Result<usize> {
        let mut scan = self.start_scan(pattern, version, itersize)?;
        let mut removed = 0;
        while let Some(keys) = scan.next_full_page()? {
            if !keys.is_empty() {
                let full: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                removed += self.answer_delete_many(self.inner.backend.delete_many(&full))?;
            }
        }
        Ok(removed)
    }

    /// [`Cache::keys`], awaitable.
    pub async fn keys_async(&self, pattern: &str, version: Option<i64>) -> Result<Vec<String>> {
        let mut scan = self.iter_keys_async(pattern, version, KEYS_PAGE).await?;
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(page) = scan.next_page().await? {
            keys.extend(page.into_iter().filter(|k| seen.insert(k.clone())));
        }
        Ok(keys)
    }

    /// [`Cache::iter_keys`], awaitable: an [`AsyncKeyIter`] whose pages are awaited (native
    /// I/O on Redis and PostgreSQL, in place on `memory://`; see [`AsyncKeyIter`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> polycache::Result<()> {
    /// use polycache::{Cache, Expiry};
    /// let cache = Cache::builder("memory://").key_prefix("app").build()?;
    /// for i in 0..25 {
    ///     cache.set_async(format!("user:{i}").as_str(), b"x", Expiry::Default).await?;
    /// }
    /// let mut scan = cache.iter_keys_async("user:*", None, 10).await?;
    /// let mut found = 0;
    /// while let Some(page) = scan.next_page().await? {
    ///     found += page.len();
    /// }
    /// assert_eq!(found, 25);
    /// # Ok(()) }
    /// ```
    pub async fn iter_keys_async(
        &self,
        pattern: &str,
        version: Option<i64>,
        itersize: usize,
    ) -> Result<AsyncKeyIter> {
        AsyncKeyIter::new(self, pattern, version, itersize)
    }

    /// [`Cache::delete_pattern`], awaitable.
    pub async fn delete_pattern_async(
        &self,
        pattern: &str,
        version: Option<i64>,
        itersize: usize,
    ) -> Result<usize> {
        let Some(backend) = self.inner.awaited.as_deref() else {
            return self.delete_pattern(pattern, version, itersize);
        };
        let mut scan = self.iter_keys_async(pattern, version, itersize).await?;
        let mut removed = 0;
        while let Some(keys) = scan.next_full_page().await? {
            if !keys.is_empty() {
                let full: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                removed += self.answer_delete_many(backend.delete_many(&full).await)?;
            }
        }
        Ok(removed)
    }
}
