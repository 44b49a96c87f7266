//! Named caches with a `default`, built from a configuration mapping (Django's `CACHES`).

use crate::cache::{Cache, CacheBuilder};
use crate::error::{Error, Result};
use crate::options::{CacheOptions, OptionSource};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How one named cache is configured; the Rust twin of one entry of Django's `CACHES`, and a
/// face of [`crate::CacheBuilder`]: [`CacheConfig::builder`] makes the builder it describes.
///
/// `options` are the location's query options (`max_entries`, …) as typed values, so
/// everything a URL can say, a configuration can say too.
#[non_exhaustive]
#[derive(Clone, Default, PartialEq)]
pub struct CacheConfig {
    /// The URL (`memory://`, `redis://…`).
    pub location: String,
    /// The key prefix (default empty).
    pub key_prefix: Option<String>,
    /// The version (default 1).
    pub version: Option<i64>,
    /// The default TTL: `Some(None)` never expires; unset is 300 s.
    pub timeout: Option<Option<Duration>>,
    /// Backend options, read with the location's query options (one given in both places
    /// is an error).
    pub options: CacheOptions,
    /// The serializer of the Python binding: `pickle` (default), `json` or `raw`.
    pub serializer: Option<String>,
    /// The key values are signed with (see [`crate::CacheBuilder::signing_key`]).
    pub signing_key: Option<Vec<u8>>,
    /// Keys whose signatures are still accepted (key rotation).
    pub old_signing_keys: Vec<Vec<u8>>,
    /// Values of at least this many bytes are compressed (default: never).
    pub compress_min_size: Option<usize>,
    /// The zstd level of compressed values (default 3).
    pub compress_level: Option<i32>,
}

impl fmt::Debug for CacheConfig {
    // Never prints a signing key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfig")
            .field("location", &crate::redact(&self.location))
            .field("key_prefix", &self.key_prefix)
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .field(
                "options",
                &self.options.iter().map(|o| &o.name).collect::<Vec<_>>(),
            )
            .field("serializer", &self.serializer)
            .field("signed", &self.signing_key.is_some())
            .field("compress_min_size", &self.compress_min_size)
            .finish()
    }
}

impl CacheConfig {
    /// A configuration for `location` with every other setting at its default.
    pub fn new(location: impl Into<String>) -> Self {
        CacheConfig {
            location: location.into(),
            ..Default::default()
        }
    }

    /// The builder this configuration describes.
    pub fn builder(&self) -> CacheBuilder {
        let mut b = Cache::builder(&self.location).options_from(self.options.clone());
        if let Some(p) = &self.key_prefix {
            b = b.key_prefix(p.clone());
        }
        if let Some(v) = self.version {
            b = b.version(v);
        }
        if let Some(t) = self.timeout {
            b = b.default_timeout(t);
        }
        if let Some(name) = &self.serializer {
            b = b.serializer(name);
        }
        if let Some(key) = &self.signing_key {
            b = b.signing_key(key.clone());
        }
        if !self.old_signing_keys.is_empty() {
            b = b.old_signing_keys(self.old_signing_keys.clone());
        }
        if self.compress_min_size.is_some() {
            b = b.compress_min_size(self.compress_min_size);
        }
        if let Some(level) = self.compress_level {
            b = b.compress_level(level);
        }
        b
    }

    /// Opens the cache this configuration describes.
    pub fn build(&self) -> Result<Cache> {
        self.builder().build()
    }
}

/// A set of named caches, one of them called `default`.
///
/// Built from a mapping of names to [`CacheConfig`], or from JSON or TOML text shaped like
/// Django's `CACHES` setting (`LOCATION`, `KEY_PREFIX`, `VERSION`, `TIMEOUT`, `OPTIONS`;
/// lower-case names work too), read by [`crate::settings::read_entry`] with
/// [`crate::settings::Rules::Configuration`]. `Send + Sync`; the caches inside are shared
/// handles.
///
/// ```
/// use polycache::Caches;
/// let caches = Caches::from_json(r#"{
///     "default":  {"LOCATION": "memory://", "TIMEOUT": 60},
///     "sessions": {"LOCATION": "memory://", "KEY_PREFIX": "s", "TIMEOUT": null,
///                  "OPTIONS": {"max_entries": 5000}}
/// }"#).unwrap();
/// caches.default().set("a", b"1", Default::default()).unwrap();
/// assert!(caches.get("sessions").is_some());
/// assert!(caches.get("nope").is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Caches {
    caches: BTreeMap<String, Cache>,
}

impl Caches {
    /// Opens every configured cache; fails if one fails or there is no `default`.
    pub fn from_config<I, S>(configs: I) -> Result<Caches>
    where
        I: IntoIterator<Item = (S, CacheConfig)>,
        S: Into<String>,
    {
        let mut caches = BTreeMap::new();
        for (name, config) in configs {
            let name = name.into();
            let cache = config.build().map_err(|e| in_cache(&name, e))?;
            caches.insert(name, cache);
        }
        if !caches.contains_key("default") {
            return Err(Error::config(
                "the cache configuration has no 'default' cache",
            ));
        }
        Ok(Caches { caches })
    }

    /// Parses Django-shaped JSON and opens every cache.
    pub fn from_json(text: &str) -> Result<Caches> {
        let json: Json = serde_json::from_str(text).map_err(|e| {
            Error::config(format!("the cache configuration is not valid JSON: {e}"))
        })?;
        Caches::from_json_value(json)
    }

    /// Parses TOML text and opens every cache: one table per named cache, with the same
    /// settings as [`Caches::from_json`] (TOML has no null: `timeout = "none"` never expires).
    ///
    /// ```
    /// use polycache::Caches;
    /// let caches = Caches::from_toml(r#"
    ///     [default]
    ///     location = "memory://"
    ///     timeout = 60
    ///
    ///     [sessions]
    ///     location = "memory://"
    ///     key_prefix = "s"
    ///     timeout = "none"
    ///     options = { max_entries = 5000 }
    /// "#).unwrap();
    /// assert_eq!(caches.names().collect::<Vec<_>>(), ["default", "sessions"]);
    /// assert_eq!(caches.get("sessions").unwrap().key_prefix(), "s");
    /// ```
    pub fn from_toml(text: &str) -> Result<Caches> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            Error::config(format!("the cache configuration is not valid TOML: {e}"))
        })?;
        // The same configuration as JSON text gives: one parser of the settings.
        let json = serde_json::to_value(table)
            .map_err(|e| Error::config(format!("the cache configuration cannot be read: {e}")))?;
        Caches::from_json_value(json)
    }

    /// Opens every cache of a parsed configuration (from JSON or TOML text).
    fn from_json_value(json: Json) -> Result<Caches> {
        let Json::Object(map) = json else {
            return Err(Error::config(
                "the cache configuration must be a JSON object of named caches",
            ));
        };
        let mut configs = Vec::new();
        for (name, entry) in map {
            configs.push((name.clone(), config_from_json(&name, &entry)?));
        }
        Caches::from_config(configs)
    }

    /// The cache called `name`.
    pub fn get(&self, name: &str) -> Option<&Cache> {
        self.caches.get(name)
    }

    /// The `default` cache.
    pub fn default(&self) -> &Cache {
        &self.caches["default"]
    }

    /// The names of the caches, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.caches.keys().map(String::as_str)
    }
}

/// `e`, saying which cache it is about unless its option's source says so already.
fn in_cache(name: &str, e: Error) -> Error {
    match e.option_source() {
        Some(OptionSource::DjangoOptions { cache: Some(_), .. }) => e,
        _ => e.prefixed(&format!("cache '{name}': ")),
    }
}

fn config_from_json(name: &str, entry: &Json) -> Result<CacheConfig> {
    let entry = crate::settings::SettingValue::from(entry);
    let read =
        crate::settings::read_entry(Some(name), &entry, &crate::settings::Rules::Configuration)?;
    Ok(read.config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, Expiry};

    fn summary(caches: &Caches) -> Vec<(String, String, String, i64, Expiry)> {
        caches
            .names()
            .map(|n| {
                let c = caches.get(n).unwrap();
                let location = c.location().to_owned();
                (
                    n.to_owned(),
                    location,
                    c.key_prefix().to_owned(),
                    c.version(),
                    c.default_expiry(),
                )
            })
            .collect()
    }

    #[test]
    fn toml_gives_the_same_caches_as_json() {
        let json = Caches::from_json(
            r#"{"default": {"LOCATION": "memory://", "TIMEOUT": 60, "VERSION": 3},
                "sessions": {"location": "memory://", "key_prefix": "s", "timeout": null,
                             "options": {"max_entries": 5000}},
                "off": {"LOCATION": "dummy://", "TIMEOUT": 0}}"#,
        )
        .unwrap();
        let toml = Caches::from_toml(
            r#"
            [default]
            LOCATION = "memory://"
            TIMEOUT = 60
            VERSION = 3

            [sessions]
            location = "memory://"
            key_prefix = "s"
            timeout = "none"
            options = { max_entries = 5000 }

            [off]
            LOCATION = "dummy://"
            TIMEOUT = 0
            "#,
        )
        .unwrap();
        assert_eq!(summary(&json), summary(&toml));
        assert_eq!(
            toml.get("sessions").unwrap().default_expiry(),
            Expiry::Never
        );
        assert_eq!(toml.get("off").unwrap().default_expiry(), Expiry::Expired);
    }

    #[test]
    fn djangos_own_options_are_read_as_polycache_django_reads_them() {
        let caches = Caches::from_json(
            r#"{"default": {"LOCATION": "memory://", "OPTIONS": {"MAX_ENTRIES": 10}},
                "redis": {"LOCATION": "dummy://", "OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}},
                "plain": {"LOCATION": "memory://", "OPTIONS": {"max_entries": 5, "SERIALIZER": "json"}}}"#,
        )
        .unwrap();
        assert_eq!(
            caches.default().location(),
            "memory://?cull_frequency=3&max_entries=10"
        );
        assert_eq!(caches.get("redis").unwrap().location(), "dummy://");
        let plain = caches.get("plain").unwrap();
        assert_eq!(plain.location(), "memory://?max_entries=5&serializer=json");
        let err = Caches::from_json(
            r#"{"default": {"LOCATION": "memory://", "OPTIONS": {"MAX_ENTRYS": 1}}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown OPTIONS key 'MAX_ENTRYS'"),
            "{err}"
        );
        // A setting in the LOCATION and in TIMEOUT too: one of them would be ignored.
        let err = Caches::from_json(
            r#"{"default": {"LOCATION": "memory://?timeout=60", "TIMEOUT": 30}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("'timeout' is given both"), "{err}");
        let caches =
            Caches::from_json(r#"{"default": {"LOCATION": "memory://?timeout=60"}}"#).unwrap();
        assert_eq!(
            caches.default().default_expiry(),
            Expiry::After(Duration::from_secs(60))
        );
    }

    #[test]
    fn options_show_in_the_location_as_they_were_written() {
        let mut config = CacheConfig::new("memory://");
        config.options.insert("max_entries".into(), "10".into());
        config.options.insert("eviction".into(), "lru".into());
        let cache = config.build().unwrap();
        assert_eq!(cache.location(), "memory://?eviction=lru&max_entries=10");
        let mut config = CacheConfig::new("redis://:pw@127.0.0.1:1/0");
        config.options.insert("fail_open".into(), true.into());
        config.options.insert("socket_timeout".into(), 0.5.into());
        config.options.insert("signing_key".into(), "k".into());
        let url = format!("{}?{}", config.location, config.options.to_query());
        assert_eq!(
            crate::redact(&url),
            "redis://:***@127.0.0.1:1/0?fail_open=true&signing_key=***&socket_timeout=0.5"
        );
        // What would end or split an option is still encoded, and reads back unchanged.
        let mut options = CacheOptions::new();
        options.insert("odd".into(), "a&b=c d%+é".into());
        let url = format!("memory://?{}", options.to_query());
        assert_eq!(url, "memory://?odd=a%26b%3Dc%20d%25%2B%C3%A9");
        let parsed = crate::Location::parse(&url).unwrap();
        assert_eq!(
            parsed.options(),
            [("odd".to_owned(), "a&b=c d%+é".to_owned())]
        );
    }

    #[test]
    fn an_options_error_names_the_option_and_where_it_came_from() {
        let err = Caches::from_json(
            r#"{"default": {"LOCATION": "memory://", "OPTIONS": {"MAX_ENTRIES": 0}}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("OPTIONS['MAX_ENTRIES'] of CACHES['default']: invalid value \"0\""),
            "{err}"
        );
        assert!(err.option_source().unwrap().is_django_options());
        let err = Caches::from_json(r#"{"default": {"LOCATION": "memory://?max_entries=0"}}"#)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cache 'default': query parameter max_entries in the URL: "),
            "{err}"
        );
        // An option in the URL and in OPTIONS too: one would be silently unused.
        let err = Caches::from_json(
            r#"{"default": {"LOCATION": "memory://?max_bytes=10", "OPTIONS": {"max_bytes": 20}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
        // Value options are checked once the builder's own are known, and still charged
        // to the OPTIONS key that gave them.
        for (options, key) in [
            (r#"{"COMPRESS_LEVEL": 99}"#, "COMPRESS_LEVEL"),
            (r#"{"OLD_SIGNING_KEYS": ["k0"]}"#, "OLD_SIGNING_KEYS"),
            (r#"{"serializer": "yaml"}"#, "serializer"),
        ] {
            let text =
                format!(r#"{{"default": {{"LOCATION": "memory://", "OPTIONS": {options}}}}}"#);
            let err = Caches::from_json(&text).unwrap_err();
            let start = format!("OPTIONS['{key}'] of CACHES['default']: ");
            assert!(err.to_string().starts_with(&start), "{err}");
        }
        assert!(
            err.to_string()
                .contains("query parameter max_bytes in the URL"),
            "{err}"
        );
    }

    #[test]
    fn bad_toml_is_a_configuration_error_naming_the_problem() {
        let cases = [
            ("[default\nlocation = 1", "not valid TOML"),
            (
                "[default]\nlocation = 1",
                "LOCATION must be a cache URL string",
            ),
            (
                "[default]\nlocation = \"memory://\"\ntimeout = true",
                "TIMEOUT",
            ),
            (
                "[default]\nlocation = \"memory://\"\ncolour = 1",
                "unknown setting(s) 'COLOUR'",
            ),
            ("[other]\nlocation = \"memory://\"", "no 'default'"),
            ("default = 3", "must be a mapping of settings"),
            (
                "[default]\nlocation = \"memory://\"\noptions = { max_entries = -1 }",
                "max_entries",
            ),
        ];
        for (text, needle) in cases {
            let err = Caches::from_toml(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration, "{text}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }
}
