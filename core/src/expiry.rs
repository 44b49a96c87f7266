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
