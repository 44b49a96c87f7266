//! Cache locations: URLs such as `memory://?max_entries=1000` or
//! `redis://:secret@127.0.0.1:6379/0`, parsed without ever echoing a password.

use crate::error::{Error, Result};
use crate::options::{CacheOption, CacheOptions, OptionSource, OptionValue};
use percent_encoding::percent_decode_str;
use std::fmt;
use std::time::Duration;

/// A parsed cache URL: scheme, optional credentials, hosts, path and query options.
///
/// Several hosts may be given comma-separated (`memcached://h1:11211,h2:11211`). The
/// password is kept but never shown by `Debug` or [`Location::redacted`]. `Send + Sync`.
///
/// ```
/// use polycache::Location;
/// let loc = Location::parse("redis://user:s3cret@localhost:6379/2?timeout=5").unwrap();
/// assert_eq!(loc.scheme(), "redis");
/// assert_eq!(loc.hosts(), ["localhost:6379"]);
/// assert_eq!(loc.path(), "/2");
/// assert_eq!(loc.password(), Some("s3cret"));
/// assert_eq!(loc.redacted(), "redis://user:***@localhost:6379/2?timeout=5");
/// assert!(!format!("{loc:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Location {
    scheme: String,
    username: Option<String>,
    password: Option<String>,
    hosts: Vec<String>,
    path: String,
    query: Vec<(String, String)>,
    raw: String,
}

impl Location {
    /// Parses `url`. The scheme must be present (`scheme://…`); everything else may be empty.
    pub fn parse(url: &str) -> Result<Location> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::config(format!(
                "cache location {:?} has no scheme: expected a URL such as memory:// or \
                 redis://host:6379/0",
                redact(url)
            )));
        };
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(Error::config(format!(
                "cache location {:?} has an invalid scheme",
                redact(url)
            )));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostlist) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = decode(user, "user name", url)?;
                let pass = pass.map(|p| decode(p, "password", url)).transpose()?;
                ((!user.is_empty()).then_some(user), pass)
            }
        };
        let hosts = if hostlist.is_empty() {
            Vec::new()
        } else {
            hostlist
                .split(',')
                .map(|h| {
                    if h.is_empty() {
                        Err(Error::config(format!(
                            "cache location {:?} has an empty host in its host list",
                            redact(url)
                        )))
                    } else {
                        decode(h, "host", url)
                    }
                })
                .collect::<Result<Vec<_>>>()?
        };
        let path = decode(path, "path", url)?;
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(&k.replace('+', " "), "option name", url)?;
            let v = decode(&v.replace('+', " "), "option value", url)?;
            // A repeated option is ambiguous (which one wins?): refuse it rather than pick.
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(Error::config(format!(
                    "cache location {:?} gives option '{k}' more than once",
                    redact(url)
                )));
            }
            pairs.push((k, v));
        }
        Ok(Location {
            scheme: scheme.to_ascii_lowercase(),
            username,
            password,
            hosts,
            path,
            query: pairs,
            raw: url.to_owned(),
        })
    }

    /// The scheme, lower-cased (`"memory"`, `"redis"`, …).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }
    /// The user name from the URL, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }
    /// The password from the URL, if any. Never printed by polycache.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
    /// The hosts (`host[:port]`), in the order given.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
    /// The path, percent-decoded, with its leading `/` (empty when there is none).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The query options, percent-decoded, in the order given.
    pub fn options(&self) -> &[(String, String)] {
        &self.query
    }
    /// The query options as typed options from the URL (text values).
    pub fn cache_options(&self) -> CacheOptions {
        let mut options = CacheOptions::new();
        for (k, v) in &self.query {
            options.insert_from(k.clone(), v.clone(), OptionSource::Url { name: k.clone() });
        }
        options
    }
    /// The URL with any password replaced by `***`, safe for logs and errors.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({:?})", self.redacted())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn decode(s: &str, what: &str, url: &str) -> Result<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            Error::config(format!(
                "cache location {:?} has a {what} that is not valid UTF-8 after percent-decoding",
                redact(url)
            ))
        })
}

/// The characters a query option name or value must have percent-encoded: those that would
/// end or split it (`&`, `=`, `#`), change its meaning when decoded (`%`, `+`), or are not
/// printable. Everything else stays as the user wrote it, so a location built from options
/// (`fail_open=true&socket_timeout=0.5`) prints as it would have been typed.
pub(crate) const QUERY_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'=')
    .add(b'<')
    .add(b'>');

/// Query options whose values are secrets: [`redact`] hides them as it hides passwords.
pub const SECRET_OPTIONS: &[&str] = &[
    "signing_key",
    "old_signing_keys",
    "password",
    "sslpassword",
    "sentinel_password",
];

/// Replaces the password of a URL (the text between `user:` and `@`) and the values of
/// [`SECRET_OPTIONS`] in its query with `***`.
///
/// Works on text that is not a valid URL too, so that error messages about bad URLs can
/// still be printed safely.
///
/// ```
/// assert_eq!(
///     polycache::redact("redis://:pw@h/0?signing_key=k&timeout=5"),
///     "redis://:***@h/0?signing_key=***&timeout=5"
/// );
/// ```
pub fn redact(url: &str) -> String {
    let url = redact_userinfo(url);
    let Some(q) = url.find('?') else {
        return url;
    };
    let mut out = url[..=q].to_owned();
    for (i, pair) in url[q + 1..].split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        let decoded = percent_decode_str(name).decode_utf8_lossy();
        if SECRET_OPTIONS.contains(&decoded.as_ref()) {
            out.push_str(name);
            out.push_str("=***");
        } else if let (Some((_, inner)), "l1" | "l2") = (pair.split_once('='), decoded.as_ref()) {
            // A tiered cache's levels are URLs of their own, percent-encoded.
            let inner = percent_decode_str(inner).decode_utf8_lossy();
            out.push_str(name);
            out.push('=');
            out.push_str(
                &percent_encoding::utf8_percent_encode(&redact(&inner), QUERY_COMPONENT)
                    .to_string(),
            );
        } else if DISPLAYED_OPTIONS.contains(&decoded.as_ref()) || !pair.contains('=') {
            out.push_str(pair);
        } else {
            // An option polycache does not take may be a misspelt secret (`signing_kye=`).
            out.push_str(name);
            out.push_str("=***");
        }
    }
    out
}

/// The options whose values [`redact`] shows: polycache's own, none of them secret. The
/// value of any other option (a typo, an option of another scheme) is hidden, as it may
/// be a misspelt secret.
const DISPLAYED_OPTIONS: &[&str] = &[
    "breaker_cooldown",
    "breaker_threshold",
    "bus",
    "busy_timeout",
    "compress_level",
    "compress_min_size",
    "connect_timeout",
    "cull_frequency",
    "db",
    "dead_retry",
    "eviction",
    "fail_open",
    "failure_limit",
    "flight_timeout",
    "fsync",
    "insecure",
    "key_prefix",
    "l1_timeout",
    "lease",
    "lease_ttl",
    "max_bytes",
    "max_connections",
    "max_entries",
    "max_item_size",
    "max_value_size",
    "namespace",
    "namespace_refresh",
    "pool_size",
    "read_from_replicas",
    "reconcile_interval",
    "sentinel_username",
    "serializer",
    "single_flight",
    "socket_timeout",
    "sslmode",
    "sslrootcert",
    "statement_timeout",
    "synchronous",
    "table",
    "timeout",
    "tls_ca",
    "unlogged",
    "version",
    "xfetch_beta",
];

fn redact_userinfo(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..start],
            &userinfo[..colon],
            &url[start + at..]
        ),
        None => url.to_owned(),
    }
}

/// Typed access to a cache's options (its location's query, and options given as typed
/// values), that reports the options nobody asked for.
///
/// Each getter removes the option it reads; [`Options::finish`] then fails on any left over,
/// naming it, so a typo such as `max_entires=10` is an error rather than silently ignored.
/// A text value is read as a URL's query value is; a typed one as it is. Every error names
/// the option and where it came from ([`crate::OptionSource`]).
#[derive(Debug)]
pub struct Options {
    scheme: String,
    pairs: Vec<CacheOption>,
    /// The options taken so far, for errors found after their getter ran.
    taken: Vec<(String, OptionSource)>,
    /// Every option given, for a second reader ([`Options::again`]).
    given: Vec<CacheOption>,
}

impl Options {
    /// The options of `location`.
    pub fn new(location: &Location) -> Options {
        let pairs: Vec<CacheOption> = location.cache_options().into_iter().collect();
        Options {
            scheme: location.scheme.clone(),
            given: pairs.clone(),
            pairs,
            taken: Vec::new(),
        }
    }

    /// Every option given, as if none had been taken: for a part that reads options the
    /// cache has read already (each Memcached server's breaker reads the cache's).
    pub fn again(&self) -> Options {
        Options {
            scheme: self.scheme.clone(),
            pairs: self.given.clone(),
            taken: Vec::new(),
            given: self.given.clone(),
        }
    }

    /// Adds options given besides the URL; one given in both places is an error naming both.
    pub fn add(&mut self, extra: CacheOptions) -> Result<()> {
        for option in extra {
            if let Some(first) = self.pairs.iter().find(|o| o.name == option.name) {
                return Err(Error::config(format!(
                    "option '{}' is given more than once: as {} and as {}",
                    option.name, first.source, option.source
                ))
                .about_option(&option.source));
            }
            self.given.push(option.clone());
            self.pairs.push(option);
        }
        Ok(())
    }

    /// Takes the option `name` with its source ([`Location::parse`] refuses a repeated one).
    fn take_option(&mut self, name: &str) -> Option<CacheOption> {
        let i = self.pairs.iter().position(|o| o.name == name)?;
        let option = self.pairs.remove(i);
        self.taken
            .push((option.name.clone(), option.source.clone()));
        Some(option)
    }

    /// Takes the value given for `name`, as text.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.take_option(name).map(|o| o.value.to_text())
    }

    /// Takes the value given for `name`, as given.
    pub fn take_value(&mut self, name: &str) -> Option<OptionValue> {
        self.take_option(name).map(|o| o.value)
    }

    /// The options taken so far, with where each came from.
    pub fn taken(&self) -> &[(String, OptionSource)] {
        &self.taken
    }

    /// Where the option `name` came from, once taken (or while it waits to be).
    pub fn source_of(&self, name: &str) -> Option<&OptionSource> {
        self.taken
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .or_else(|| {
                self.pairs
                    .iter()
                    .find(|o| o.name == name)
                    .map(|o| &o.source)
            })
    }

    /// A configuration error about the option `name`, naming where it came from.
    pub fn error(&self, name: &str, message: impl Into<String>) -> Error {
        self.blame(name, Error::config(message))
    }

    /// `error`, charged to the option `name` (see [`Options::error`]).
    pub fn blame(&self, name: &str, error: Error) -> Error {
        match self.source_of(name) {
            Some(source) => error.about_option(source),
            None => error,
        }
    }

    fn invalid(&self, name: &str, value: &str, expected: &str) -> Error {
        self.error(
            name,
            format!(
                "invalid value {value:?} for option '{name}' of {}://: expected {expected}",
                self.scheme
            ),
        )
    }

    /// A positive integer option.
    pub fn positive_u64(&mut self, name: &str) -> Result<Option<u64>> {
        match self.take_value(name) {
            None => Ok(None),
            Some(OptionValue::Int(n)) if n > 0 => Ok(Some(n as u64)),
            Some(v) => {
                let v = v.to_text();
                match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(self.invalid(name, &v, "a positive integer")),
                }
            }
        }
    }

    /// A non-negative integer option.
    pub fn u64(&mut self, name: &str) -> Result<Option<u64>> {
        self.integer(name, "an integer >= 0")
    }

    /// An integer option (may be negative).
    pub fn i64(&mut self, name: &str) -> Result<Option<i64>> {
        self.integer(name, "an integer")
    }

    /// An integer option of type `T`: a typed integer as it is, text parsed.
    fn integer<T: std::str::FromStr + TryFrom<i64>>(
        &mut self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>> {
        let Some(value) = self.take_value(name) else {
            return Ok(None);
        };
        if let OptionValue::Int(n) = value {
            if let Ok(n) = T::try_from(n) {
                return Ok(Some(n));
            }
        }
        let v = value.to_text();
        v.trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| self.invalid(name, &v, expected))
    }

    /// A boolean option: `true/false`, `1/0`, `yes/no`, `on/off`.
    pub fn bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.take_value(name) {
            None => Ok(None),
            Some(OptionValue::Bool(b)) => Ok(Some(b)),
            Some(v) => {
                let v = v.to_text();
                match v.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Ok(Some(true)),
                    "0" | "false" | "no" | "off" => Ok(Some(false)),
                    _ => Err(self.invalid(name, &v, "true or false")),
                }
            }
        }
    }

    /// A duration in seconds (fractions allowed); `none`/`never` gives `Some(None)`.
    pub fn seconds(&mut self, name: &str) -> Result<Option<Option<Duration>>> {
        let (secs, v) = match self.take_value(name) {
            None => return Ok(None),
            Some(OptionValue::None) => return Ok(Some(None)),
            Some(OptionValue::Int(n)) => (Some(n as f64), n.to_string()),
            Some(OptionValue::Float(f)) => (Some(f), OptionValue::Float(f).to_text()),
            Some(v) => {
                let v = v.to_text();
                let t = v.trim().to_ascii_lowercase();
                if t == "none" || t == "never" {
                    return Ok(Some(None));
                }
                (t.parse::<f64>().ok(), v)
            }
        };
        // try_from: a finite number past u64::MAX seconds must be an error, not a panic.
        match secs.filter(|s| *s >= 0.0) {
            Some(s) => match Duration::try_from_secs_f64(s) {
                Ok(d) => Ok(Some(Some(d))),
                Err(_) => Err(self.invalid(
                    name,
                    &v,
                    "a number of seconds below 2^64, or none for never",
                )),
            },
            None => Err(self.invalid(name, &v, "a number of seconds >= 0, or none")),
        }
    }

    /// Fails if any option was not taken, naming the first one.
    pub fn finish(self) -> Result<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some(o) => Err(Error::config(format!(
                "unknown option '{}' for {}:// caches",
                o.name, self.scheme
            ))
            .about_option(&o.source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cache;

    #[test]
    fn parses_multi_host_and_options() {
        let l = Location::parse("memcached://h1:11211,h2:11212/?a=1&b=x%20y").unwrap();
        assert_eq!(l.hosts(), ["h1:11211", "h2:11212"]);
        assert_eq!(
            l.options(),
            [("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
    }

    #[test]
    fn redacts_passwords_even_in_bad_urls() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("redis://u@h"), "redis://u@h");
        assert_eq!(redact("no scheme"), "no scheme");
        let err = Location::parse("redis://:pw@h,,x/0").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert_eq!(
            redact("memory://?a=1&signing_key=k1&old%5Fsigning%5Fkeys=k2,k3&sslpassword"),
            "memory://?a=***&signing_key=***&old%5Fsigning%5Fkeys=***&sslpassword=***"
        );
        // polycache's options show as written; any other may be a misspelt secret.
        assert_eq!(
            redact("redis://h/0?fail_open=true&socket_timeout=0.5&signing_kye=k1"),
            "redis://h/0?fail_open=true&socket_timeout=0.5&signing_kye=***"
        );
        assert_eq!(redact("no scheme?password=x"), "no scheme?password=***");
        let tiered = redact("tiered://?l1=memory%3A%2F%2F&l2=redis%3A%2F%2F%3Apw%40h%2F0");
        assert!(!tiered.contains("pw") && tiered.contains("l2="), "{tiered}");
    }

    #[test]
    fn rejects_missing_scheme() {
        assert!(Location::parse("localhost:6379")
            .unwrap_err()
            .is_configuration());
        assert!(Location::parse("://x").unwrap_err().is_configuration());
    }

    #[test]
    fn options_report_unknown_and_invalid() {
        let l = Location::parse("memory://?max_entries=-1").unwrap();
        let mut o = Options::new(&l);
        let e = o.positive_u64("max_entries").unwrap_err();
        assert!(
            e.to_string().contains("max_entries") && e.to_string().contains("-1"),
            "{e}"
        );
        let l = Location::parse("memory://?max_entires=5").unwrap();
        let e = Options::new(&l).finish().unwrap_err();
        assert!(e.to_string().contains("max_entires"), "{e}");
    }

    #[test]
    fn repeated_options_are_an_error_naming_the_option() {
        for url in [
            "memory://?timeout=inf&timeout=1",
            "redis://:pw@h:1/0?socket_timeout=1&socket%5Ftimeout=2",
            "memcached://h1,h2/?max_value_size=10&max_value_size=10",
            "file:///tmp/x?signing_key=s1&signing_key=s2",
        ] {
            let e = Location::parse(url).unwrap_err();
            let msg = e.to_string();
            assert!(
                e.is_configuration() && msg.contains("more than once"),
                "{msg}"
            );
            assert!(
                !msg.contains("pw") && !msg.contains("s1") && !msg.contains("s2"),
                "{msg}"
            );
            assert!(Cache::open(url).unwrap_err().is_configuration());
        }
        let e = Location::parse("memory://?timeout=inf&timeout=1").unwrap_err();
        assert!(e.to_string().contains("'timeout'"), "{e}");
        // Several hosts are not repeated options.
        assert_eq!(
            Location::parse("memcached://h1,h2").unwrap().hosts().len(),
            2
        );
    }

    #[test]
    fn typed_options_read_as_their_text_would_and_errors_name_their_source() {
        use crate::options::{CacheOptions, OptionSource, OptionValue};
        let l = Location::parse("memory://?max_entries=5").unwrap();
        let mut extra = CacheOptions::new();
        let django = |key: &str| OptionSource::DjangoOptions {
            key: key.into(),
            cache: Some("default".into()),
        };
        extra.insert_from("timeout", 1.5, django("timeout"));
        extra.insert_from("fail_open", "yes", django("fail_open"));
        extra.insert_from("max_bytes", OptionValue::Float(10.0), django("MAX_BYTES"));
        extra.insert_from("lease_ttl", OptionValue::None, django("lease_ttl"));
        let mut o = Options::new(&l);
        o.add(extra.clone()).unwrap();
        // A part that reads the cache's options again sees the typed ones too.
        let mut again = o.again();
        assert_eq!(o.positive_u64("max_entries").unwrap(), Some(5));
        assert_eq!(
            o.seconds("timeout").unwrap(),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(o.bool("fail_open").unwrap(), Some(true));
        assert_eq!(o.seconds("lease_ttl").unwrap(), Some(None));
        // 10.0 is not an integer, as the text "10.0" is not.
        let e = o.positive_u64("max_bytes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "OPTIONS['MAX_BYTES'] of CACHES['default']: invalid value \"10.0\" for option \
             'max_bytes' of memory://: expected a positive integer"
        );
        assert!(e.option_source().unwrap().is_django_options());
        assert_eq!(again.bool("fail_open").unwrap(), Some(true));
        // Given in the URL and besides it: refused, naming both.
        let mut twice = CacheOptions::new();
        twice.insert("max_entries".into(), 6.into());
        let e = Options::new(&l).add(twice).unwrap_err();
        assert!(
            e.to_string().contains(
                "given more than once: as query parameter max_entries in the URL and as \
                 option max_entries of the builder"
            ),
            "{e}"
        );
        let e = Options::new(&Location::parse("memory://?max_entires=5").unwrap())
            .finish()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "query parameter max_entires in the URL: unknown option 'max_entires' for memory:// \
             caches"
        );
    }

    /// Found by the `location` fuzz target: a finite number of seconds past `u64::MAX`
    /// made `Duration::from_secs_f64` panic.
    #[test]
    fn seconds_too_large_for_a_duration_are_an_error() {
        for v in ["1e300", "18446744073709551616", "1.8446744073709552e19"] {
            let l = Location::parse(&format!("memory://?timeout={v}")).unwrap();
            let e = Options::new(&l).seconds("timeout").unwrap_err();
            assert!(e.is_configuration() && e.to_string().contains(v), "{e}");
            assert!(Cache::open(&format!("memory://?timeout={v}")).is_err());
        }
        let l = Location::parse("memory://?timeout=1e19").unwrap();
        let d = Options::new(&l).seconds("timeout").unwrap();
        assert_eq!(
            d,
            Some(Some(Duration::from_secs(10_000_000_000_000_000_000)))
        );
    }
}
