//! Key scans: what a backend answers to `keys`, `iter_keys` and `delete_pattern`.

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
    pattern: KeyPattern,
    count: usize,
    after: i64,
    done: bool,
    fetch: F,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl<F> IdScan<F>
where
    F: FnMut(&KeyPattern, i64, usize) -> Result<IdRows> + Send + 'static,
{
    /// A scan that reads candidate rows with `fetch(pattern, after_id, limit)`.
    pub(crate) fn new(pattern: &KeyPattern, count: usize, fetch: F) -> IdScan<F> {
        IdScan {
            pattern: pattern.clone(),
            count: count.max(1),
            after: i64::MIN,
            done: false,
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
        if self.done {
            return Ok(None);
        }
        let rows = (self.fetch)(&self.pattern, self.after, self.count)?;
        self.done = rows.len() < self.count;
        if let Some((id, _)) = rows.last() {
            self.after = *id;
        }
        Ok(Some(
            rows.into_iter()
                .map(|(_, key)| key)
                .filter(|key| self.pattern.matches(key))
                .collect(),
        ))
    }
}
