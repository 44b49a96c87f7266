//! When an entry expires: the one expiry type every binding maps its own words onto.

use std::time::Duration;

/// How long a stored value lives.
///
/// Ecosystems disagree on what `None`, `0` and negative timeouts mean (Django: `None` never
/// expires and `0` is already expired; cachelib: `None` is the default and `0` never expires).
/// Each binding maps its own words onto this one type, so the core never guesses.
///
/// ```
/// use polycache::Expiry;
/// use std::time::Duration;
/// assert_eq!(Expiry::from_secs_f64(0.0), Expiry::Expired);
/// assert_eq!(Expiry::from_secs_f64(-5.0), Expiry::Expired);
/// assert_eq!(Expiry::from_secs_f64(1.5), Expiry::After(Duration::from_millis(1500)));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Expiry {
    /// Use the cache's default TTL.
    #[default]
    Default,
    /// Never expire.
    Never,
    /// Expire after this long. A zero duration is the same as [`Expiry::Expired`].
    After(Duration),
    /// Already expired: a `set` stores nothing and removes any old value.
    Expired,
}

impl Expiry {
    /// Seconds as Django counts them: zero or negative is already expired; NaN is expired too.
    pub fn from_secs_f64(secs: f64) -> Expiry {
        if secs.is_nan() || secs <= 0.0 {
            Expiry::Expired
        } else if secs >= Duration::MAX.as_secs_f64() || secs.is_infinite() {
            Expiry::Never
        } else {
            Expiry::After(Duration::from_secs_f64(secs))
        }
    }

    /// Resolves [`Expiry::Default`] against `default` and folds zero durations into
    /// [`Expiry::Expired`].
    pub(crate) fn resolve(self, default: Expiry) -> Ttl {
        let this = if self == Expiry::Default {
            default
        } else {
            self
        };
        match this {
            Expiry::Never | Expiry::Default => Ttl::Never,
            Expiry::After(d) if d.is_zero() => Ttl::Expired,
            Expiry::After(d) => Ttl::After(d),
            Expiry::Expired => Ttl::Expired,
        }
    }
}

impl From<Duration> for Expiry {
    fn from(d: Duration) -> Self {
        Expiry::After(d)
    }
}

impl From<Option<Duration>> for Expiry {
    /// `None` never expires, as in Django.
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Expiry::Never, Expiry::After)
    }
}

/// A resolved expiry, as the cache hands it on: no "default" left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    Never,
    After(Duration),
    Expired,
}

impl Ttl {
    /// The duration a backend stores, `None` for never; only valid when not expired.
    pub(crate) fn as_option(self) -> Option<Duration> {
        match self {
            Ttl::After(d) => Some(d),
            _ => None,
        }
    }
}

/// How long a stored key has left: the answer of [`crate::Cache::ttl`].
///
/// Redis' `PTTL` answers -2 (missing), -1 (no expiry) or milliseconds; django-redis maps
/// those to `0`, `None` and a number. This type names the three cases.
///
/// ```
/// use polycache::TimeToLive;
/// use std::time::Duration;
/// let left = TimeToLive::Left(Duration::from_millis(1500));
/// assert_eq!(left.as_secs_rounded(), Some(2));
/// assert_eq!(left.as_millis(), Some(1500));
/// assert_eq!(TimeToLive::Forever.as_secs_rounded(), None);
/// assert_eq!(TimeToLive::Missing.as_millis(), Some(0));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeToLive {
    /// The key is not in the cache (or has expired).
    Missing,
    /// The key is present and never expires.
    Forever,
    /// The key is present and expires after this long.
    Left(Duration),
}

impl TimeToLive {
    /// The remaining lifetime of an entry with an absolute `deadline`, as the time left
    /// from `now`; an entry whose deadline has passed is [`TimeToLive::Missing`].
    pub(crate) fn until(deadline: Duration, now: Duration) -> TimeToLive {
        match deadline.checked_sub(now) {
            Some(left) if !left.is_zero() => TimeToLive::Left(left),
            _ => TimeToLive::Missing,
        }
    }

    /// Seconds as Redis' `TTL` and django-redis' `ttl` answer: rounded to the nearest
    /// second (half up), `0` for a missing key, `None` for a key that never expires.
    pub fn as_secs_rounded(self) -> Option<u64> {
        match self {
            TimeToLive::Missing => Some(0),
            TimeToLive::Forever => None,
            TimeToLive::Left(d) => {
                Some(u64::try_from((d.as_millis() + 500) / 1000).unwrap_or(u64::MAX))
            }
        }
    }

    /// Milliseconds as django-redis' `pttl` answers: `0` for a missing key, `None` for a key
    /// that never expires.
    pub fn as_millis(self) -> Option<u64> {
        match self {
            TimeToLive::Missing => Some(0),
            TimeToLive::Forever => None,
            TimeToLive::Left(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}
