//! `dummy://`: a cache that stores nothing and always misses, for development.

use super::{not_found, Backend};
use crate::error::Result;
use crate::expiry::TimeToLive;
use crate::value::Value;
use std::time::Duration;

/// The backend behind `dummy://`: every read misses, every write is accepted and dropped.
///
/// As in Django's `DummyCache`, `add` reports success, `incr` fails as on a missing key.
/// `Send + Sync`; never panics.
#[derive(Debug, Default, Clone, Copy)]
pub struct DummyBackend;

impl Backend for DummyBackend {
    fn name(&self) -> &'static str {
        "dummy"
    }
    fn is_local(&self) -> bool {
        true
    }
    fn get(&self, _key: &[u8]) -> Result<Option<Value>> {
        Ok(None)
    }
    fn set(&self, _key: &[u8], _value: &[u8], _ttl: Option<Duration>) -> Result<()> {
        Ok(())
    }
    fn add(&self, _key: &[u8], _value: &[u8], _ttl: Option<Duration>) -> Result<bool> {
        Ok(true)
    }
    fn delete(&self, _key: &[u8]) -> Result<bool> {
        Ok(false)
    }
    fn touch(&self, _key: &[u8], _ttl: Option<Duration>) -> Result<bool> {
        Ok(false)
    }
    fn incr(&self, key: &[u8], _delta: i64) -> Result<i64> {
        Err(not_found(key))
    }
    fn clear(&self, _prefix: &[u8]) -> Result<()> {
        Ok(())
    }

    fn ttl(&self, _key: &[u8]) -> Result<TimeToLive> {
        Ok(TimeToLive::Missing)
    }
    fn replace(&self, _key: &[u8], _value: &[u8], _ttl: Option<Duration>) -> Result<bool> {
        Ok(false)
    }

    fn scan_keys(
        self: std::sync::Arc<Self>,
        _pattern: &crate::KeyPattern,
        count: usize,
    ) -> Result<Box<dyn super::KeyScan>> {
        Ok(Box::new(super::CollectedKeys::new(Vec::new(), count)))
    }

    fn extend_if_equals(&self, _: &[u8], _: &[u8], _: Duration, _: bool) -> Result<bool> {
        Ok(false)
    }
}
