//! The `LOCATION` of an entry: one URL, a list of URLs, or django-redis' comma-separated
//! URLs, made into one polycache URL; and the settings a URL may carry.

use super::{fail, Res, Rules, SettingValue, URL_SETTINGS};
use percent_encoding::percent_decode_str;

/// The URL of a `LOCATION`.
pub(super) fn location(given: Option<&SettingValue>, rules: &Rules) -> Res<String> {
    let store = match rules {
        Rules::DjangoBackend { store, .. } => Some(store.as_str()),
        _ => None,
    };
    let url = match given {
        None | Some(SettingValue::Null) => "memory://".to_owned(),
        Some(SettingValue::Str(s)) if s.is_empty() => "memory://".to_owned(),
        // django-redis' form of a list: whole URLs separated by commas.
        Some(SettingValue::Str(s)) if s.split(',').skip(1).any(|u| u.contains("://")) => {
            let urls: Vec<SettingValue> = s
                .split(',')
                .map(|u| SettingValue::Str(u.trim().to_owned()))
                .collect();
            join_urls(&urls)?
        }
        Some(SettingValue::Str(s)) => {
            if !s.contains("://") {
                let shown = redact_loose(s);
                let hint = if s.starts_with('/') {
                    format!(" (for a directory: file://{shown})")
                } else {
                    String::new()
                };
                return Err(fail(format!(
                    "LOCATION '{shown}' is not a cache URL{hint}; polycache takes URLs such as \
                     memory://, file:///var/cache/site, sqlite:///var/cache/site.db, \
                     redis://127.0.0.1:6379/0 or memcached://127.0.0.1:11211"
                )));
            }
            s.clone()
        }
        Some(SettingValue::List(urls)) => join_urls(urls)?,
        Some(other) => {
            return Err(fail(format!(
                "LOCATION must be a cache URL string (or a list of them), not {}",
                other.type_name()
            )))
        }
    };
    if let (Some(store), Some(rest)) = (store, url.strip_prefix("memory://")) {
        if rest.is_empty() || rest.starts_with(['?', '/']) {
            return Ok(format!("memory://{store}{rest}"));
        }
    }
    Ok(url)
}

/// Text that is not a URL (a typo), with anything before an `@` hidden (it may be a
/// password) and secret options hidden as [`crate::redact`] hides them.
fn redact_loose(s: &str) -> String {
    crate::redact(&hide_userinfo(s))
}

fn hide_userinfo(s: &str) -> String {
    let parts: Vec<&str> = s.split('@').collect();
    let last = parts.len() - 1;
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i < last {
            let keep = part.rfind('/').map_or(0, |j| j + 1);
            out.push_str(&part[..keep]);
            out.push_str("***@");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Several server URLs of one scheme (Django's list form) as one multi-host URL.
fn join_urls(urls: &[SettingValue]) -> Res<String> {
    let mut parts = Vec::new();
    for url in urls {
        match url.as_str() {
            Some(s) if s.contains("://") => parts.push(split_url(s)),
            Some(s) => {
                return Err(fail(format!(
                    "each LOCATION in a list must be a cache URL, not '{}'",
                    redact_loose(s)
                )))
            }
            None => {
                return Err(fail(format!(
                    "each LOCATION in a list must be a cache URL, not {}",
                    url.type_name()
                )))
            }
        }
    }
    let Some(first) = parts.first() else {
        return Err(fail("LOCATION is an empty list".to_owned()));
    };
    for other in &parts[1..] {
        if (other.0, other.2) != (first.0, first.2) {
            return Err(fail(format!(
                "the URLs of a LOCATION list must differ only in their host: '{}' and '{}'",
                crate::redact(&format!("{}://{}{}", first.0, first.1, first.2)),
                crate::redact(&format!("{}://{}{}", other.0, other.1, other.2)),
            )));
        }
    }
    // One user part for all the hosts (the URL takes it once, before the first host).
    let user = |netloc: &str| netloc.rsplit_once('@').map(|(u, _)| u.to_owned());
    let users: Vec<Option<String>> = parts.iter().map(|p| user(p.1)).collect();
    if users.iter().any(|u| *u != users[0]) {
        return Err(fail(
            "the URLs of a LOCATION list must have the same user and password".to_owned(),
        ));
    }
    let hosts: Vec<&str> = parts
        .iter()
        .map(|p| p.1.rsplit_once('@').map_or(p.1, |(_, h)| h))
        .collect();
    let at = users[0].as_ref().map_or(String::new(), |u| format!("{u}@"));
    Ok(format!("{}://{at}{}{}", first.0, hosts.join(","), first.2))
}

/// `scheme`, `netloc` and the rest (path, query) of a URL.
fn split_url(url: &str) -> (&str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (scheme, &rest[..end], &rest[end..])
}

/// `url` without its `timeout`/`key_prefix`/`version` options, and those options.
pub(super) fn settings_in_url(url: &str) -> (String, Vec<(&'static str, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut found: Vec<(&'static str, String)> = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = unquote_plus(name);
        match URL_SETTINGS.iter().find(|(o, _)| *o == name) {
            Some((o, _)) if !found.iter().any(|(f, _)| f == o) => {
                found.push((o, unquote_plus(value)))
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, found)
}

fn unquote_plus(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `url` with `password` in its user part, unless it has a password already (django-redis'
/// `PASSWORD` does not override the URL's).
pub(super) fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (netloc, tail) = rest.split_at(end);
    let encoded =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
    match netloc.rsplit_once('@') {
        Some((user, _)) if user.contains(':') => url.to_owned(),
        Some((user, hosts)) => format!("{scheme}://{user}:{encoded}@{hosts}{tail}"),
        None => format!("{scheme}://:{encoded}@{netloc}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_a_url_is_shown_without_secrets() {
        assert_eq!(
            redact_loose("redis:/user:pw@host:6379/0"),
            "redis:/***@host:6379/0"
        );
        assert_eq!(
            redact_loose("/var/x?signing_key=k&max_entries=1"),
            "/var/x?signing_key=***&max_entries=1"
        );
    }
}
