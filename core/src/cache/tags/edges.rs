//! `replace` and `incr`/`decr` at an invalidated tagged entry: they behave as at a missing
//! key. `replace` stores nothing and answers false; `incr`/`decr` fail with
//! [`ErrorKind::NotFound`] (and `incr_or_create` creates the counter), the invalidated bytes
//! being removed first (only those bytes: a value another writer stores meanwhile stays).
//!
//! **Cost.** `incr` pays nothing on its usual paths: a tagged entry is not a counter, so
//! only an `incr` the backend refuses as not an integer looks at the entry (one more read).
//! `replace` looks at the key before it writes (`Backend::get_marked`: in place on
//! `memory://`, one `GET` on the others, as `has_key` does): the check and the write are two
//! steps, so an entry invalidated between them is replaced, as if the `replace` came first.

use super::reads::{Presence, MARKS};
use super::Via;
use crate::backend::Marked;
use crate::cache::Cache;
use crate::error::{ErrorKind, Result};
use crate::value::Value;
use std::time::Duration;

impl Cache {
    /// The stored bytes under `full` when they are a tagged entry whose tags were
    /// invalidated; `None` for anything else (missing, live, untagged).
    async fn invalidated(&self, via: Via<'_>, full: &[u8]) -> Result<Option<Value>> {
        let presence = match via {
            Via::Blocking => match self.inner.backend.get_marked(full, &MARKS)? {
                Marked::Value(stored) => self.presence_of_marked(full, stored)?,
                _ => return Ok(None),
            },
            Via::Awaited(backend) => self.presence_async(backend, full).await?,
        };
        Ok(match presence {
            Presence::Invalidated(stored) => Some(stored),
            _ => None,
        })
    }

    /// The backend's `incr`, where an invalidated tagged entry is a missing key.
    pub(crate) async fn incr_live(&self, via: Via<'_>, full: &[u8], delta: i64) -> Result<i64> {
        let result = match via {
            Via::Blocking => self.inner.backend.incr(full, delta),
            Via::Awaited(backend) => backend.incr(full, delta).await,
        };
        match result {
            Err(e) if e.kind() == ErrorKind::NotAnInteger => {
                let Some(stored) = self.invalidated(via, full).await? else {
                    return Err(e);
                };
                match via {
                    Via::Blocking => self.inner.backend.delete_if_equals(full, &stored)?,
                    Via::Awaited(backend) => backend.delete_if_equals(full, &stored).await?,
                };
                Err(crate::backend::not_found(full))
            }
            other => other,
        }
    }

    /// The backend's `replace` of sealed bytes, which stores nothing over an invalidated
    /// tagged entry (false, as at a missing key).
    pub(crate) async fn replace_live(
        &self,
        via: Via<'_>,
        full: &[u8],
        sealed: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        if self.invalidated(via, full).await?.is_some() {
            return Ok(false);
        }
        match via {
            Via::Blocking => self.inner.backend.replace(full, sealed, ttl),
            Via::Awaited(backend) => backend.replace(full, sealed, ttl).await,
        }
    }
}
