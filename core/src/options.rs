//! Options as typed values: each a name, a value and where it came from (a URL's query, a
//! builder call, Django's `OPTIONS`, a keyword of a binding), handed to the core as they
//! were given, never rewritten as URL text and parsed again.
//!
//! A URL's query gives [`OptionValue::Str`] values; Django's `OPTIONS`, the bindings and
//! [`crate::CacheBuilder::option`] give typed ones. Every option is read by the same getters
//! ([`crate::Options`]), which take a text value as a URL would and a typed value as it is;
//! an error names the option and its [`OptionSource`].

use crate::location::{redact, QUERY_COMPONENT, SECRET_OPTIONS};
use std::fmt;

/// The value of one option.
#[non_exhaustive]
#[derive(Clone, PartialEq)]
pub enum OptionValue {
    /// `None` in Python, `null` in JSON: for a duration, never.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text, read as a URL's query value is (`"10"` is a valid `max_entries`).
    Str(String),
    /// A list of text values (`old_signing_keys`).
    List(Vec<String>),
}

impl OptionValue {
    /// The value as a URL's query would write it (lists comma-separated).
    pub fn to_text(&self) -> String {
        match self {
            OptionValue::None => "none".to_owned(),
            OptionValue::Bool(b) => b.to_string(),
            OptionValue::Int(n) => n.to_string(),
            // As Python's `str()` writes it: `10.0`, `0.5`.
            OptionValue::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
            OptionValue::Float(f) => f.to_string(),
            OptionValue::Str(s) => s.clone(),
            OptionValue::List(items) => items.join(","),
        }
    }
}

impl fmt::Debug for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Str(s) => write!(f, "{s:?}"),
            other => f.write_str(&other.to_text()),
        }
    }
}

impl From<bool> for OptionValue {
    fn from(b: bool) -> Self {
        OptionValue::Bool(b)
    }
}

impl From<i64> for OptionValue {
    fn from(n: i64) -> Self {
        OptionValue::Int(n)
    }
}

impl From<u64> for OptionValue {
    fn from(n: u64) -> Self {
        match i64::try_from(n) {
            Ok(n) => OptionValue::Int(n),
            Err(_) => OptionValue::Str(n.to_string()),
        }
    }
}

impl From<i32> for OptionValue {
    fn from(n: i32) -> Self {
        OptionValue::Int(n.into())
    }
}

impl From<f64> for OptionValue {
    fn from(f: f64) -> Self {
        OptionValue::Float(f)
    }
}

impl From<&str> for OptionValue {
    fn from(s: &str) -> Self {
        OptionValue::Str(s.to_owned())
    }
}

impl From<String> for OptionValue {
    fn from(s: String) -> Self {
        OptionValue::Str(s)
    }
}

impl From<std::time::Duration> for OptionValue {
    fn from(d: std::time::Duration) -> Self {
        OptionValue::Float(d.as_secs_f64())
    }
}

/// Where an option came from, for error messages.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionSource {
    /// A query parameter of the cache's URL, by the name written there.
    Url {
        /// The parameter's name.
        name: String,
    },
    /// A call of [`crate::CacheBuilder::option`].
    Builder {
        /// The option's name.
        name: String,
    },
    /// A key of the `OPTIONS` of an entry of Django's `CACHES` shape.
    DjangoOptions {
        /// The key as written (`MAX_ENTRIES`, `max_bytes`).
        key: String,
        /// The entry's alias, when the reader knows it.
        cache: Option<String>,
    },
    /// An argument of a binding's function (`options['fail_open'] of polycache.Cache()`).
    Keyword {
        /// The argument as the caller wrote it.
        argument: String,
        /// The function it was given to.
        function: String,
    },
    /// A `polycache_options_set_*` call of the C API.
    C {
        /// The option's name.
        name: String,
    },
}

impl OptionSource {
    /// True when the option came from Django's `OPTIONS`.
    pub fn is_django_options(&self) -> bool {
        matches!(self, OptionSource::DjangoOptions { .. })
    }
}

impl fmt::Display for OptionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionSource::Url { name } => write!(f, "query parameter {name} in the URL"),
            OptionSource::Builder { name } => write!(f, "option {name} of the builder"),
            OptionSource::DjangoOptions { key, cache: None } => write!(f, "OPTIONS['{key}']"),
            OptionSource::DjangoOptions {
                key,
                cache: Some(cache),
            } => write!(f, "OPTIONS['{key}'] of CACHES['{cache}']"),
            OptionSource::Keyword { argument, function } => write!(f, "{argument} of {function}"),
            OptionSource::C { name } if name.is_empty() => write!(f, "an option set from C"),
            OptionSource::C { name } => write!(f, "option {name} set from C"),
        }
    }
}

/// One option: its name (as the backends read it), its value and where it came from.
#[derive(Clone, PartialEq)]
pub struct CacheOption {
    /// The option's name (`max_entries`).
    pub name: String,
    /// Its value.
    pub value: OptionValue,
    /// Where it came from.
    pub source: OptionSource,
}

impl fmt::Debug for CacheOption {
    // Never prints a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CacheOption");
        d.field("name", &self.name);
        if SECRET_OPTIONS.contains(&self.name.as_str()) {
            d.field("value", &"***");
        } else {
            d.field("value", &self.value);
        }
        d.field("source", &self.source).finish()
    }
}

/// A set of options, one value per name, in the order given.
///
/// `Send + Sync`. [`crate::CacheConfig::options`] holds one; [`crate::CacheBuilder::options_from`]
/// hands one to the builder.
///
/// ```
/// use polycache::{Cache, CacheOptions, OptionSource, OptionValue};
/// let mut options = CacheOptions::new();
/// options.insert_from("max_entries", 10, OptionSource::Keyword {
///     argument: "max_entries".into(),
///     function: "open_cache()".into(),
/// });
/// let cache = Cache::builder("memory://").options_from(options.clone()).build().unwrap();
/// assert_eq!(cache.location(), "memory://?max_entries=10");
/// options.insert("max_entries".into(), (-1).into());
/// let err = Cache::builder("memory://").options_from(options).build().unwrap_err();
/// assert!(err.to_string().starts_with("option max_entries of the builder: invalid value"), "{err}");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheOptions {
    entries: Vec<CacheOption>,
}

impl CacheOptions {
    /// No options.
    pub fn new() -> Self {
        CacheOptions::default()
    }

    /// Sets `name` (replacing a value given before) to `value`, set in code (its errors name
    /// the builder: [`OptionSource::Builder`]).
    pub fn insert(&mut self, name: String, value: OptionValue) {
        let source = OptionSource::Builder { name: name.clone() };
        self.insert_from(name, value, source);
    }

    /// Sets `name` (replacing a value given before) to `value`, from `source`.
    pub fn insert_from(
        &mut self,
        name: impl Into<String>,
        value: impl Into<OptionValue>,
        source: OptionSource,
    ) {
        let option = CacheOption {
            name: name.into(),
            value: value.into(),
            source,
        };
        match self.entries.iter_mut().find(|o| o.name == option.name) {
            Some(old) => *old = option,
            None => self.entries.push(option),
        }
    }

    /// The option called `name`.
    pub fn get(&self, name: &str) -> Option<&CacheOption> {
        self.entries.iter().find(|o| o.name == name)
    }

    /// Removes and answers the option called `name`.
    pub fn remove(&mut self, name: &str) -> Option<CacheOption> {
        let i = self.entries.iter().position(|o| o.name == name)?;
        Some(self.entries.remove(i))
    }

    /// True when `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The options, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &CacheOption> {
        self.entries.iter()
    }

    /// How many options there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The options as URL query text, sorted by name, secrets included: what a cache's
    /// location shows after [`redact`]ion, and what a client of the same server needs.
    pub fn to_query(&self) -> String {
        let mut sorted: Vec<&CacheOption> = self.entries.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let encode =
            |s: &str| percent_encoding::utf8_percent_encode(s, QUERY_COMPONENT).to_string();
        sorted
            .iter()
            .map(|o| format!("{}={}", encode(&o.name), encode(&o.value.to_text())))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `url` with these options added to its query, secrets hidden.
    pub(crate) fn shown_with(&self, url: &str) -> String {
        if self.is_empty() {
            return redact(url);
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        redact(&format!("{url}{sep}{}", self.to_query()))
    }
}

impl IntoIterator for CacheOptions {
    type Item = CacheOption;
    type IntoIter = std::vec::IntoIter<CacheOption>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}
