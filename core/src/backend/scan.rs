//! Key scans: what a backend answers to `keys`, `iter_keys` and `delete_pattern`.

use super::BoxFuture;
use crate::error::Result;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::pattern::KeyPattern;

/// A scan over the full keys of a backend that match a pattern, a page at a time.
///
/// A scan is `Send` (it may move to another thread between pages) and holds what it needs
/// to go on (an `Arc` of its backend), so it may outlive the call that started it.
/// Each page holds roughly the `count` the scan was started with (Redis' `COUNT` is a hint;
/// a page may be empty while the scan goes on).
pub trait KeyScan: Send + 'static {
    /// The next page of matching full keys, or `None` when the scan is over.
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>>;
}

/// A scan whose keys were all collected when it started, handed out `count` at a time.
pub struct CollectedKeys {
    keys: std::vec::IntoIter<Vec<u8>>,
    count: usize,
}

impl CollectedKeys {
    /// Hands out `keys`, `count` (at least 1) a page.
    pub fn new(keys: Vec<Vec<u8>>, count: usize) -> CollectedKeys {
        CollectedKeys {
            keys: keys.into_iter(),
            count: count.max(1),
        }
    }
}

impl KeyScan for CollectedKeys {
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        let page: Vec<Vec<u8>> = self.keys.by_ref().take(self.count).collect();
        Ok((!page.is_empty()).then_some(page))
    }
}

/// `(row id, full key)` of the candidate rows of one [`IdScan`] page, in id order.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) type IdRows = Vec<(i64, Vec<u8>)>;

/// A scan that walks a table by increasing row id (`sqlite://`, `postgres://`): each page
/// asks for the next `count` candidate rows after the last id seen, and keeps those whose
/// key matches the pattern exactly. A row that keeps its id while the scan runs (an
/// overwrite keeps it) is seen exactly once; rows written after the scan passed their place
/// are not seen.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct IdScan<F> {
    cursor: IdCursor,
    fetch: F,
}

/// Where an [`IdScan`] (or an [`AsyncIdScan`]) stands: the last id seen, and whether the
/// table is exhausted.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
struct IdCursor {
    pattern: KeyPattern,
    count: usize,
    after: i64,
    done: bool,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl IdCursor {
    fn new(pattern: &KeyPattern, count: usize) -> IdCursor {
        IdCursor {
            pattern: pattern.clone(),
            count: count.max(1),
            after: i64::MIN,
            done: false,
        }
    }

    /// The matching keys of one page of candidate `rows`; moves past them.
    fn page(&mut self, rows: IdRows) -> Vec<Vec<u8>> {
        self.done = rows.len() < self.count;
        if let Some((id, _)) = rows.last() {
            self.after = *id;
        }
        rows.into_iter()
            .map(|(_, key)| key)
            .filter(|key| self.pattern.matches(key))
            .collect()
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl<F> IdScan<F>
where
    F: FnMut(&KeyPattern, i64, usize) -> Result<IdRows> + Send + 'static,
{
    /// A scan that reads candidate rows with `fetch(pattern, after_id, limit)`.
    pub(crate) fn new(pattern: &KeyPattern, count: usize, fetch: F) -> IdScan<F> {
        IdScan {
            cursor: IdCursor::new(pattern, count),
            fetch,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl<F> KeyScan for IdScan<F>
where
    F: FnMut(&KeyPattern, i64, usize) -> Result<IdRows> + Send + 'static,
{
    fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        if self.cursor.done {
            return Ok(None);
        }
        let c = &self.cursor;
        let rows = (self.fetch)(&c.pattern, c.after, c.count)?;
        Ok(Some(self.cursor.page(rows)))
    }
}

/// A scan awaited page by page: what [`super::AsyncBackend::scan_keys`] starts.
///
/// The same pages as the store's [`KeyScan`], each one a future. A scan is `Send` and holds
/// what it needs to go on (an `Arc` of its backend). A page future that is dropped before it
/// completes may leave the scan anywhere: the caller ([`crate::AsyncKeyIter`]) ends the scan
/// then.
pub trait AsyncKeyScan: Send + 'static {
    /// The next page of matching full keys, or `None` when the scan is over.
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Vec<u8>>>>>;

    /// The next page read on the calling thread, which it blocks, when this scan has a
    /// synchronous way to read one (a scan of a synchronous store); `None` (the default)
    /// when it has not: the caller then awaits [`AsyncKeyScan::next_page`] on polycache's
    /// runtime and waits for it.
    fn next_page_blocking(&mut self) -> Option<Result<Option<Vec<Vec<u8>>>>> {
        None
    }
}

/// A synchronous [`KeyScan`] awaited a page at a time on polycache's bounded blocking pool:
/// the default of [`super::AsyncBackend::scan_keys`], for `file://`, `sqlite://` and
/// synchronous custom backends. A page future dropped while its page is read ends the scan
/// (the page is read to its end on the pool and discarded).
pub struct BlockingPoolScan {
    scan: Option<Box<dyn KeyScan>>,
}

impl BlockingPoolScan {
    /// Awaits the pages of `scan` on the blocking pool.
    pub fn new(scan: Box<dyn KeyScan>) -> BlockingPoolScan {
        BlockingPoolScan { scan: Some(scan) }
    }
}

impl AsyncKeyScan for BlockingPoolScan {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Vec<u8>>>>> {
        Box::pin(async move {
            let Some(mut scan) = self.scan.take() else {
                return Ok(None);
            };
            let (scan, page) = crate::runtime::blocking(move || {
                let page = scan.next_page();
                Ok((scan, page))
            })
            .await?;
            self.scan = Some(scan);
            page
        })
    }

    fn next_page_blocking(&mut self) -> Option<Result<Option<Vec<Vec<u8>>>>> {
        Some(self.scan.as_mut().map_or(Ok(None), |scan| scan.next_page()))
    }
}

/// A synchronous [`KeyScan`] of a store that answers in memory (`memory://`, `dummy://`):
/// each page future is ready at once, read on the thread that polls it.
pub(crate) struct InlineScan(pub(crate) Box<dyn KeyScan>);

impl AsyncKeyScan for InlineScan {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Vec<u8>>>>> {
        Box::pin(std::future::ready(self.0.next_page()))
    }

    fn next_page_blocking(&mut self) -> Option<Result<Option<Vec<Vec<u8>>>>> {
        Some(self.0.next_page())
    }
}

/// [`IdScan`], awaited: each page's candidate rows come from an async `fetch(after_id,
/// limit)` (`postgres://` on tokio-postgres), or from the synchronous `fetch_blocking` when
/// a page is read on the calling thread: the position is the last id seen either way.
#[cfg(feature = "postgres")]
pub(crate) struct AsyncIdScan<F, B> {
    cursor: IdCursor,
    fetch: F,
    fetch_blocking: B,
}

#[cfg(feature = "postgres")]
impl<F, B> AsyncIdScan<F, B>
where
    F: Fn(i64, usize) -> BoxFuture<'static, Result<IdRows>> + Send + 'static,
    B: Fn(i64, usize) -> Result<IdRows> + Send + 'static,
{
    /// A scan that reads candidate rows with `fetch(after_id, limit)`, or
    /// `fetch_blocking(after_id, limit)` on the calling thread.
    pub(crate) fn new(
        pattern: &KeyPattern,
        count: usize,
        fetch: F,
        fetch_blocking: B,
    ) -> AsyncIdScan<F, B> {
        AsyncIdScan {
            cursor: IdCursor::new(pattern, count),
            fetch,
            fetch_blocking,
        }
    }
}

#[cfg(feature = "postgres")]
impl<F, B> AsyncKeyScan for AsyncIdScan<F, B>
where
    F: Fn(i64, usize) -> BoxFuture<'static, Result<IdRows>> + Send + 'static,
    B: Fn(i64, usize) -> Result<IdRows> + Send + 'static,
{
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Vec<u8>>>>> {
        Box::pin(async move {
            if self.cursor.done {
                return Ok(None);
            }
            let rows = (self.fetch)(self.cursor.after, self.cursor.count).await?;
            Ok(Some(self.cursor.page(rows)))
        })
    }

    fn next_page_blocking(&mut self) -> Option<Result<Option<Vec<Vec<u8>>>>> {
        if self.cursor.done {
            return Some(Ok(None));
        }
        let rows = (self.fetch_blocking)(self.cursor.after, self.cursor.count);
        Some(rows.map(|rows| Some(self.cursor.page(rows))))
    }
}
