//! One entry of a mapping shaped like Django's `CACHES`, read by one set of rules for Rust
//! ([`crate::Caches`]), C (`polycache_caches_from_json`/`_from_toml`) and Python
//! (`polycache.caches.configure` and `polycache.django.Cache`).
//!
//! The entry comes in as a tree of [`SettingValue`]s (what a JSON or TOML text, or a Python
//! dict, holds) and goes out as a [`CacheConfig`]: the URL, its options, the key prefix,
//! version and default timeout. [`Rules`] says whose reading applies where they differ:
//! polycache's own configuration is strict (an unknown setting or a mistyped value is an
//! error), while a Django backend reads `TIMEOUT`, `KEY_PREFIX` and `VERSION` as Django's
//! `BaseCache` does and leaves settings it does not know to Django.

use crate::error::{Error, ErrorKind};
use crate::options::{OptionSource, OptionValue};
use crate::service::CacheConfig;
use std::time::Duration;

mod django_redis;
mod urls;
use urls::{location, settings_in_url, with_password};

/// One value of a settings tree: what JSON, TOML or a Python mapping holds.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    /// JSON `null`, Python `None`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer within 64 bits.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A list (JSON array, Python list or tuple).
    List(Vec<SettingValue>),
    /// A mapping, in the order given.
    Map(Vec<(SettingValue, SettingValue)>),
    /// Anything else (a Python object): its type name, its `int()` if it has one, its
    /// `str()`.
    Other {
        /// The type's name, for error messages.
        type_name: String,
        /// The object's integer value, if it has one.
        int: Option<i64>,
        /// The object as text.
        text: String,
    },
}

impl SettingValue {
    /// The name of the value's type, as Python would say it.
    pub fn type_name(&self) -> &str {
        match self {
            SettingValue::Null => "NoneType",
            SettingValue::Bool(_) => "bool",
            SettingValue::Int(_) => "int",
            SettingValue::Float(_) => "float",
            SettingValue::Str(_) => "str",
            SettingValue::List(_) => "list",
            SettingValue::Map(_) => "dict",
            SettingValue::Other { type_name, .. } => type_name,
        }
    }

    /// The text of a string.
    fn as_str(&self) -> Option<&str> {
        match self {
            SettingValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&serde_json::Value> for SettingValue {
    fn from(v: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => SettingValue::Null,
            J::Bool(b) => SettingValue::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => SettingValue::Int(i),
                None => SettingValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => SettingValue::Str(s.clone()),
            J::Array(a) => SettingValue::List(a.iter().map(SettingValue::from).collect()),
            J::Object(o) => SettingValue::Map(
                o.iter()
                    .map(|(k, v)| (SettingValue::Str(k.clone()), SettingValue::from(v)))
                    .collect(),
            ),
        }
    }
}

/// Whose reading of an entry applies.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Rules {
    /// polycache's configuration (`Caches::from_json`, C, `polycache.caches.configure`):
    /// settings in any case, unknown ones and mistyped values refused, `memory://` by
    /// default.
    #[default]
    Configuration,
    /// What Django hands a cache backend: `TIMEOUT` read with `int()` (300 when that fails,
    /// as `BaseCache` does), any `KEY_PREFIX` as text, a `VERSION` that is not an integer left
    /// to the binding, settings Django's backends do not read left alone, and a
    /// `memory://` without a name sharing the process-wide store `memory://{store}`, as every
    /// `LocMemCache` without a `LOCATION` shares one.
    DjangoBackend {
        /// The store of a `memory://` LOCATION without a name.
        store: String,
        /// django-redis' `DJANGO_REDIS_IGNORE_EXCEPTIONS` setting: fail open unless the
        /// cache's own options say otherwise.
        ignore_exceptions: bool,
    },
}

/// What reading an entry gave besides its [`CacheConfig`].
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Read {
    /// The configuration.
    pub config: CacheConfig,
    /// Under [`Rules::DjangoBackend`]: the `VERSION` was given and is not an integer (the
    /// binding keeps the object as given, as Django does).
    pub version_as_given: bool,
    /// The default timeout as given, in seconds (`Some(None)`: never expires; a value of
    /// zero or less expires at once), before it became `config.timeout`.
    pub timeout_seconds: Option<Option<f64>>,
}

/// A failure to read an entry, and whether it lies in its `OPTIONS`.
#[derive(Debug)]
pub struct SettingsError {
    /// The error (kind [`ErrorKind::Configuration`]).
    pub error: Error,
    /// The fault is in `OPTIONS` (Python raises `InvalidOptionError` for it, as Django's
    /// Redis and Memcached backends raise `TypeError` for an unexpected option).
    pub in_options: bool,
}

impl From<SettingsError> for Error {
    fn from(e: SettingsError) -> Error {
        e.error
    }
}

type Res<T> = std::result::Result<T, SettingsError>;

fn fail(message: String) -> SettingsError {
    SettingsError {
        error: Error::config(message),
        in_options: false,
    }
}

fn bad_option(message: String) -> SettingsError {
    SettingsError {
        error: Error::config(message),
        in_options: true,
    }
}

/// The settings of an entry.
const SETTINGS: &[&str] = &[
    "BACKEND",
    "LOCATION",
    "TIMEOUT",
    "KEY_PREFIX",
    "VERSION",
    "OPTIONS",
];

/// Django's own settings a backend may find besides [`SETTINGS`], read by the binding.
const DJANGO_ONLY: &[&str] = &["KEY_FUNCTION"];

/// URL options that are settings too: given in the LOCATION, they are the setting.
const URL_SETTINGS: &[(&str, &str)] = &[
    ("timeout", "TIMEOUT"),
    ("key_prefix", "KEY_PREFIX"),
    ("version", "VERSION"),
];

/// Reads one entry (`name` is its alias, for messages; `None` under a Django backend, which
/// does not know its alias).
///
/// ```
/// use polycache::settings::{read_entry, Rules, SettingValue as V};
/// let entry = V::Map(vec![
///     (V::Str("LOCATION".into()), V::Str("memory://?timeout=60".into())),
///     (V::Str("OPTIONS".into()), V::Map(vec![(V::Str("MAX_ENTRIES".into()), V::Int(10))])),
/// ]);
/// let read = read_entry(Some("default"), &entry, &Rules::Configuration).unwrap();
/// let cache = read.config.build().unwrap();
/// assert_eq!(cache.location(), "memory://?cull_frequency=3&max_entries=10");
/// assert_eq!(cache.default_expiry(), polycache::Expiry::After(std::time::Duration::from_secs(60)));
/// ```
pub fn read_entry(name: Option<&str>, entry: &SettingValue, rules: &Rules) -> Res<Read> {
    read(name, entry, rules).map_err(|mut e| {
        if let Some(name) = name {
            e.error = Error::new(
                e.error.kind(),
                format!("cache '{name}': {}", e.error.message()),
            );
        }
        e
    })
}

fn read(name: Option<&str>, entry: &SettingValue, rules: &Rules) -> Res<Read> {
    let django = matches!(rules, Rules::DjangoBackend { .. });
    let SettingValue::Map(fields) = entry else {
        return Err(fail(format!(
            "must be a mapping of settings, not {}",
            entry.type_name()
        )));
    };
    // The value of each setting, by its upper-case name.
    let mut given: Vec<(&'static str, &SettingValue)> = Vec::new();
    let mut unknown = Vec::new();
    let mut lower_timeout = None;
    for (k, v) in fields {
        let Some(k) = k.as_str() else {
            if django {
                continue;
            }
            return Err(fail(format!(
                "setting names must be str, not {}",
                k.type_name()
            )));
        };
        if django && k == "timeout" {
            // Django's BaseCache reads `timeout` before `TIMEOUT`.
            lower_timeout = Some(v);
            continue;
        }
        let upper = if django {
            k.to_owned()
        } else {
            k.to_ascii_uppercase()
        };
        match SETTINGS.iter().find(|s| **s == upper) {
            Some(s) if given.iter().any(|(g, _)| g == s) => {
                return Err(fail(format!("setting '{s}' is given twice")));
            }
            Some(s) => given.push((s, v)),
            None if django => {}
            None => unknown.push(upper),
        }
    }
    if !unknown.is_empty() {
        let quoted: Vec<String> = unknown.iter().map(|u| format!("'{u}'")).collect();
        let hint = if unknown.iter().any(|u| DJANGO_ONLY.contains(&u.as_str())) {
            " (KEY_FUNCTION is read by polycache.django.Cache only)"
        } else {
            ""
        };
        return Err(fail(format!(
            "unknown setting(s) {}; expected {}{hint}",
            quoted.join(", "),
            SETTINGS.join(", ")
        )));
    }
    let get = |name: &str| given.iter().find(|(g, _)| *g == name).map(|(_, v)| *v);

    let mut config = CacheConfig::default();
    let mut read = Read::default();
    let location = location(get("LOCATION"), rules)?;
    let (location, in_url) = settings_in_url(&location);
    let options = match get("OPTIONS") {
        None | Some(SettingValue::Null) => &[][..],
        Some(SettingValue::Map(m)) => &m[..],
        Some(other) => {
            return Err(fail(format!(
                "OPTIONS must be a mapping, not {}",
                other.type_name()
            )))
        }
    };
    // A setting in the LOCATION and elsewhere too: one of them would be silently unused.
    for (option, _) in &in_url {
        let setting = URL_SETTINGS.iter().find(|(o, _)| o == option).unwrap().1;
        let elsewhere =
            if get(setting).is_some() || (setting == "TIMEOUT" && lower_timeout.is_some()) {
                Some(setting.to_owned())
            } else if options.iter().any(|(k, _)| k.as_str() == Some(option)) {
                Some(format!("'{option}' in OPTIONS"))
            } else {
                None
            };
        if let Some(elsewhere) = elsewhere {
            return Err(fail(format!(
                "'{option}' is given both in LOCATION ({}) and as {elsewhere}; give it in one place",
                crate::redact(&location)
            )));
        }
    }
    for (option, text) in &in_url {
        match *option {
            "timeout" => read.timeout_seconds = Some(url_timeout(text)?),
            "key_prefix" => config.key_prefix = Some(text.clone()),
            _ => {
                config.version = Some(text.trim().parse().map_err(|_| {
                    fail(format!(
                        "LOCATION option 'version' must be an integer, not '{text}'"
                    ))
                })?)
            }
        }
    }
    if let Some(v) = lower_timeout.or(get("TIMEOUT")) {
        read.timeout_seconds = Some(timeout(v, django)?);
    } else if django && read.timeout_seconds.is_none() {
        read.timeout_seconds = Some(Some(300.0));
    }
    if let Some(t) = read.timeout_seconds {
        config.timeout = Some(t.map(seconds).transpose()?.flatten());
    }
    if let Some(v) = get("KEY_PREFIX") {
        config.key_prefix = Some(match v {
            SettingValue::Str(s) => s.clone(),
            other if django => python_str(other),
            other => {
                return Err(fail(format!(
                    "KEY_PREFIX must be a str, not {}",
                    other.type_name()
                )))
            }
        });
    }
    if let Some(v) = get("VERSION") {
        match v {
            SettingValue::Int(n) => config.version = Some(*n),
            _ if django => read.version_as_given = true,
            other => {
                return Err(fail(format!(
                    "VERSION must be an int, not {}",
                    other.type_name()
                )))
            }
        }
    }
    config.location = location;
    read_options(&mut config, options, rules, name)?;
    read.config = config;
    Ok(read)
}

/// A `timeout` given in the LOCATION: seconds or `none` (`None`).
fn url_timeout(text: &str) -> Res<Option<f64>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| {
        fail(format!(
            "LOCATION option 'timeout' must be a number of seconds or none, not '{text}'"
        ))
    })
}

fn seconds(secs: f64) -> Res<Option<Duration>> {
    if secs.is_nan() {
        return Err(fail(
            "TIMEOUT must be a number of seconds, not NaN".to_owned(),
        ));
    }
    if secs <= 0.0 {
        return Ok(Some(Duration::ZERO));
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| fail("TIMEOUT must be below 2^64 seconds, or None for never".to_owned()))
}

/// `TIMEOUT` in seconds (`None`: never expires); Django's backend reads it with `int()`,
/// 300 when that fails.
fn timeout(v: &SettingValue, django: bool) -> Res<Option<f64>> {
    if django {
        let n = match v {
            SettingValue::Null => return Ok(None),
            SettingValue::Int(n) => Some(*n),
            SettingValue::Bool(b) => Some(i64::from(*b)),
            SettingValue::Float(f) if f.is_finite() => Some(f.trunc() as i64),
            SettingValue::Str(s) => s.trim().replace('_', "").parse().ok(),
            SettingValue::Other { int, .. } => *int,
            _ => None,
        };
        return Ok(Some(n.unwrap_or(300) as f64));
    }
    match v {
        SettingValue::Null => Ok(None),
        SettingValue::Str(s) if s.trim().eq_ignore_ascii_case("none") => Ok(None),
        SettingValue::Int(n) => Ok(Some(*n as f64)),
        SettingValue::Float(f) => Ok(Some(*f)),
        other => Err(fail(format!(
            "TIMEOUT must be a number of seconds or None, not {}",
            other.type_name()
        ))),
    }
}

/// A value as Python's `str()` writes it.
fn python_str(v: &SettingValue) -> String {
    match v {
        SettingValue::Null => "None".to_owned(),
        SettingValue::Bool(true) => "True".to_owned(),
        SettingValue::Bool(false) => "False".to_owned(),
        SettingValue::Int(n) => n.to_string(),
        SettingValue::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
        SettingValue::Float(f) => f.to_string(),
        SettingValue::Str(s) => s.clone(),
        SettingValue::Other { text, .. } => text.clone(),
        SettingValue::List(_) | SettingValue::Map(_) => format!("{v:?}"),
    }
}

/// Django's own `OPTIONS` names, and polycache's value options in Django's upper-case
/// spelling, as the URL options they become.
const DJANGO_OPTIONS: &[(&str, &str, Kind)] = &[
    ("MAX_ENTRIES", "max_entries", Kind::Int),
    ("CULL_FREQUENCY", "cull_frequency", Kind::Int),
    ("SERIALIZER", "serializer", Kind::Serializer),
    ("SIGNING_KEY", "signing_key", Kind::Str),
    ("OLD_SIGNING_KEYS", "old_signing_keys", Kind::Keys),
    ("COMPRESS_MIN_SIZE", "compress_min_size", Kind::Int),
    ("COMPRESS_LEVEL", "compress_level", Kind::Int),
];

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Str,
    Keys,
    Serializer,
}

/// Reads `OPTIONS` into `config.options`, each option with the `OPTIONS` key it came from
/// (`cache`: the entry's alias, when known).
fn read_options(
    config: &mut CacheConfig,
    options: &[(SettingValue, SettingValue)],
    rules: &Rules,
    cache: Option<&str>,
) -> Res<()> {
    let source = |key: &str| OptionSource::DjangoOptions {
        key: key.to_owned(),
        cache: cache.map(str::to_owned),
    };
    // Which OPTIONS name set each URL option, to refuse two names for one option.
    let mut set_by: Vec<(String, String)> = Vec::new();
    let mut put =
        |config: &mut CacheConfig, by: &str, option: &str, value: OptionValue| -> Res<()> {
            if let Some((_, first)) = set_by.iter().find(|(o, _)| o == option) {
                return Err(bad_option(format!(
                    "OPTIONS '{first}' and '{by}' both set {option}; give one of them"
                )));
            }
            set_by.push((option.to_owned(), by.to_owned()));
            config.options.insert_from(option, value, source(by));
            Ok(())
        };
    let mut django_cull = Vec::new();
    for (name, value) in options {
        let Some(name) = name.as_str() else {
            return Err(bad_option(format!(
                "OPTIONS keys must be str, not {}",
                name.type_name()
            )));
        };
        if let Some((_, target, kind)) = DJANGO_OPTIONS.iter().find(|(d, _, _)| *d == name) {
            let text = typed_option(name, value, *kind)?;
            if matches!(name, "MAX_ENTRIES" | "CULL_FREQUENCY") {
                django_cull.push((*target, text, source(name)));
            } else {
                put(config, name, target, text)?;
            }
        } else if let Some(mapped) = django_redis::option(name, value)? {
            for (target, text) in mapped {
                put(config, name, target, text)?;
            }
        } else if name.chars().any(|c| c.is_ascii_lowercase()) {
            let value = option_value(name, value)?;
            put(config, name, name, value)?;
        } else {
            let names: Vec<&str> = DJANGO_OPTIONS.iter().map(|(d, _, _)| *d).collect();
            return Err(bad_option(format!(
                "unknown OPTIONS key '{name}': OPTIONS take {}, django-redis' options (see \
                 docs/python/django.md) and the (lower-case) URL options of its LOCATION's \
                 scheme",
                names.join(", ")
            )));
        }
    }
    if let Some(password) = config.options.remove(django_redis::PASSWORD) {
        config.location = with_password(&config.location, &password.value.to_text());
    }
    if let Rules::DjangoBackend {
        ignore_exceptions: true,
        ..
    } = rules
    {
        let in_url = crate::Location::parse(&config.location)
            .map(|l| l.options().iter().any(|(o, _)| o == "fail_open"))
            .unwrap_or(false);
        if !in_url && !config.options.contains("fail_open") {
            let setting = OptionSource::Keyword {
                argument: "DJANGO_REDIS_IGNORE_EXCEPTIONS".into(),
                function: "Django's settings".into(),
            };
            config.options.insert_from("fail_open", true, setting);
        }
    }
    django_cull_rule(config, django_cull);
    Ok(())
}

/// An `OPTIONS` value of a known kind as an option's value; never echoes a key.
fn typed_option(name: &str, value: &SettingValue, kind: Kind) -> Res<OptionValue> {
    match (kind, value) {
        (Kind::Int, SettingValue::Int(n)) => Ok(OptionValue::Int(*n)),
        (Kind::Int, other) => Err(bad_option(format!(
            "OPTIONS['{name}'] must be an int, not {}",
            other.type_name()
        ))),
        (Kind::Str, SettingValue::Str(s)) => Ok(OptionValue::Str(s.clone())),
        (Kind::Serializer, SettingValue::Str(s)) => {
            django_redis::serializer(s).map(OptionValue::Str)
        }
        (Kind::Str | Kind::Serializer, other) => Err(bad_option(format!(
            "OPTIONS['{name}'] must be a str, not {}",
            other.type_name()
        ))),
        (Kind::Keys, SettingValue::List(keys)) => {
            let mut out = Vec::new();
            for k in keys {
                match k.as_str() {
                    Some(s) if !s.is_empty() && !s.contains(',') => out.push(s.to_owned()),
                    _ => {
                        return Err(bad_option(format!(
                            "OPTIONS['{name}'] must hold non-empty str keys without commas"
                        )))
                    }
                }
            }
            Ok(OptionValue::List(out))
        }
        (Kind::Keys, other) => Err(bad_option(format!(
            "OPTIONS['{name}'] must be a list of str, not {}",
            other.type_name()
        ))),
    }
}

/// A lower-case `OPTIONS` value (a URL option), or a binding's keyword option, as an option's
/// value.
pub fn option_value(name: &str, value: &SettingValue) -> Res<OptionValue> {
    match value {
        SettingValue::Null => Ok(OptionValue::None),
        SettingValue::Bool(b) => Ok(OptionValue::Bool(*b)),
        SettingValue::Int(n) => Ok(OptionValue::Int(*n)),
        SettingValue::Float(f) => Ok(OptionValue::Float(*f)),
        SettingValue::Str(s) => Ok(OptionValue::Str(s.clone())),
        other => Err(bad_option(format!(
            "option '{name}' must be a str, int, float, bool or None, not {}",
            other.type_name()
        ))),
    }
}

/// Django's `MAX_ENTRIES`/`CULL_FREQUENCY`: where the scheme culls (memory, file, sqlite,
/// postgres) either one brings Django's default for the other (300, 3; with `eviction` other
/// than `lru`, only `max_entries`); elsewhere (redis, memcached, dummy) both are ignored, as
/// Django's own Redis and Memcached backends do.
fn django_cull_rule(config: &mut CacheConfig, given: Vec<(&str, OptionValue, OptionSource)>) {
    if given.is_empty() {
        return;
    }
    let scheme = config
        .location
        .split_once("://")
        .map_or(String::new(), |(s, _)| s.trim().to_ascii_lowercase());
    if !matches!(
        scheme.as_str(),
        "memory" | "file" | "sqlite" | "postgres" | "postgresql"
    ) {
        return;
    }
    let lru = config.options.get("eviction").map_or(true, |e| {
        e.value.to_text().trim().eq_ignore_ascii_case("lru")
    });
    let get = |n: &str| given.iter().find(|(g, _, _)| *g == n).cloned();
    // A default Django brings is charged to the OPTIONS key that brought it.
    let bringer = given[0].2.clone();
    let opts = &mut config.options;
    match get("max_entries") {
        Some((name, value, source)) => opts.insert_from(name, value, source),
        None => opts.insert_from("max_entries", 300, bringer.clone()),
    }
    if let Some((name, value, source)) = get("cull_frequency") {
        opts.insert_from(name, value, source);
    } else if lru {
        opts.insert_from("cull_frequency", 3, bringer);
    }
}

impl SettingsError {
    /// The error's kind (always [`ErrorKind::Configuration`]).
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SettingValue as V;

    fn entry(fields: &[(&str, V)]) -> V {
        V::Map(
            fields
                .iter()
                .map(|(k, v)| (V::Str((*k).to_owned()), v.clone()))
                .collect(),
        )
    }

    fn s(text: &str) -> V {
        V::Str(text.to_owned())
    }

    fn django() -> Rules {
        Rules::DjangoBackend {
            store: "django".into(),
            ignore_exceptions: false,
        }
    }

    #[test]
    fn a_django_backend_reads_its_settings_as_django_does() {
        let read = read_entry(None, &entry(&[("LOCATION", s(""))]), &django()).unwrap();
        assert_eq!(read.config.location, "memory://django");
        assert_eq!(read.timeout_seconds, Some(Some(300.0)));
        let e = entry(&[
            ("LOCATION", s("memory://?max_entries=5")),
            ("TIMEOUT", s("nonsense")),
            ("KEY_PREFIX", V::Int(7)),
            ("VERSION", s("v2")),
            (
                "KEY_FUNCTION",
                V::Other {
                    type_name: "function".into(),
                    int: None,
                    text: "<function>".into(),
                },
            ),
            ("SOMETHING_ELSE", V::Int(1)),
        ]);
        let read = read_entry(None, &e, &django()).unwrap();
        assert_eq!(read.config.location, "memory://django?max_entries=5");
        assert_eq!(read.timeout_seconds, Some(Some(300.0)));
        assert_eq!(read.config.key_prefix.as_deref(), Some("7"));
        assert!(read.version_as_given);
        // The same entry is refused by polycache's own configuration, naming each culprit.
        let err = read_entry(Some("x"), &e, &Rules::Configuration).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("'KEY_FUNCTION', 'SOMETHING_ELSE'"), "{text}");
        assert!(!err.in_options);
    }

    #[test]
    fn polycaches_configuration_defaults_to_a_private_memory_cache() {
        let read = read_entry(Some("d"), &entry(&[]), &Rules::Configuration).unwrap();
        assert_eq!(read.config.location, "memory://");
        assert_eq!(read.timeout_seconds, None);
    }

    #[test]
    fn a_location_list_shares_one_user_part() {
        let list = V::List(vec![s("redis://:pw@a:1/0"), s("redis://:pw@b:2/0")]);
        let read = read_entry(None, &entry(&[("LOCATION", list)]), &django()).unwrap();
        assert_eq!(read.config.location, "redis://:pw@a:1,b:2/0");
        let text = s("redis://:pw@a:1/0,redis://:pw@b:2/0");
        let read = read_entry(None, &entry(&[("LOCATION", text)]), &django()).unwrap();
        assert_eq!(read.config.location, "redis://:pw@a:1,b:2/0");
        let list = V::List(vec![s("redis://:pw@a:1/0"), s("redis://:other@b:2/0")]);
        let err = read_entry(None, &entry(&[("LOCATION", list)]), &django()).unwrap_err();
        assert!(err.to_string().contains("same user and password"));
        assert!(!err.to_string().contains("other"));
    }

    #[test]
    fn django_redis_options_map_onto_polycaches() {
        let options = |opts: Vec<(&str, V)>| {
            entry(&[
                ("LOCATION", s("redis://u@h:1/0")),
                (
                    "OPTIONS",
                    V::Map(opts.into_iter().map(|(k, v)| (s(k), v)).collect()),
                ),
            ])
        };
        let read = read_entry(
            None,
            &options(vec![
                ("PASSWORD", s("p@ss")),
                ("SOCKET_TIMEOUT", V::Float(0.5)),
                ("IGNORE_EXCEPTIONS", V::Bool(true)),
                (
                    "COMPRESSOR",
                    s("django_redis.compressors.zstd.ZStdCompressor"),
                ),
            ]),
            &django(),
        )
        .unwrap();
        let c = &read.config;
        assert_eq!(c.location, "redis://u:p%40ss@h:1/0");
        let value = |c: &CacheConfig, name: &str| c.options.get(name).unwrap().value.clone();
        assert_eq!(value(c, "socket_timeout"), OptionValue::Float(0.5));
        assert_eq!(value(c, "fail_open"), OptionValue::Bool(true));
        assert_eq!(value(c, "compress_min_size"), OptionValue::Int(16));
        // Each option remembers the OPTIONS key it came from.
        assert_eq!(
            c.options.get("socket_timeout").unwrap().source,
            OptionSource::DjangoOptions {
                key: "SOCKET_TIMEOUT".into(),
                cache: None
            }
        );
        // A password in the URL wins, as in django-redis.
        assert_eq!(with_password("redis://:url@h/0", "opt"), "redis://:url@h/0");
        assert_eq!(with_password("redis://h/0", "opt"), "redis://:opt@h/0");
        // DJANGO_REDIS_IGNORE_EXCEPTIONS, unless the cache says otherwise.
        let everywhere = Rules::DjangoBackend {
            store: "django".into(),
            ignore_exceptions: true,
        };
        let read = read_entry(None, &options(vec![]), &everywhere).unwrap();
        assert_eq!(value(&read.config, "fail_open"), OptionValue::Bool(true));
        let off = options(vec![("IGNORE_EXCEPTIONS", V::Bool(false))]);
        let read = read_entry(None, &off, &everywhere).unwrap();
        assert_eq!(value(&read.config, "fail_open"), OptionValue::Bool(false));
        let err = read_entry(
            None,
            &options(vec![(
                "COMPRESSOR",
                s("django_redis.compressors.zlib.ZlibCompressor"),
            )]),
            &django(),
        )
        .unwrap_err();
        assert!(err.in_options);
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
