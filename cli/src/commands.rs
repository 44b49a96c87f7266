//! The commands that read and write entries: stats, get, set, delete, ttl, keys,
//! delete-pattern, clear, create-table.

use crate::{show, Console, Failure, Outcome};
use polycache::{Cache, ErrorKind, Expiry, Key, TimeToLive};
use serde_json::json;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::time::{Duration, Instant};

/// Keys asked of the backend per scan page.
const PAGE: usize = 1000;

/// "KEY not found" as the failure of a command.
fn not_found(key: &str) -> Failure {
    Failure::Failed(format!("{key:?} not found"))
}

pub(crate) fn stats(cache: &Cache, c: &mut Console<'_>) -> Outcome {
    let backend = cache.backend().name();
    let keys = match count(cache, "*", |_| {}) {
        Ok(n) => Some(n),
        Err(e) if e.kind() == ErrorKind::Unsupported => None,
        Err(e) => return Err(e.into()),
    };
    let server = match cache.server_info() {
        Ok(info) => Some(info),
        Err(e) if e.kind() == ErrorKind::Unsupported => None,
        Err(e) => return Err(e.into()),
    };
    let url = polycache::redact(cache.location());
    if c.json {
        let server = server.map(|s| {
            json!({
                "software": s.software,
                "version": s.version,
                "details": s.details.into_iter().map(|(k, v)| (k, v.into())).collect::<serde_json::Map<_, _>>(),
            })
        });
        c.json(&json!({
            "url": url,
            "backend": backend,
            "key_prefix": cache.key_prefix(),
            "version": cache.version(),
            "keys": keys,
            "server": server,
        }))?;
        return Ok(());
    }
    writeln!(c.out, "url         {url}")?;
    writeln!(c.out, "backend     {backend}")?;
    writeln!(c.out, "key prefix  {:?}", cache.key_prefix())?;
    writeln!(c.out, "version     {}", cache.version())?;
    // Keys of this prefix and version, as every other command addresses them.
    match keys {
        Some(n) => writeln!(c.out, "keys        {n}")?,
        None => writeln!(
            c.out,
            "keys        unknown ({backend} cannot list its keys)"
        )?,
    }
    if let Some(info) = server {
        let version = info.version.as_deref().unwrap_or("");
        writeln!(c.out, "server      {} {version}", info.software)?;
        for (name, value) in info.details {
            writeln!(c.out, "  {name:<18}  {value}")?;
        }
    }
    Ok(())
}

/// Counts the distinct keys matching `pattern`, calling `seen` with the count after each
/// page.
fn count(cache: &Cache, pattern: &str, mut seen: impl FnMut(usize)) -> polycache::Result<usize> {
    let mut scan = cache.iter_keys(pattern, None, PAGE)?;
    let mut keys = HashSet::new();
    while let Some(page) = scan.next_page()? {
        keys.extend(page);
        seen(keys.len());
    }
    Ok(keys.len())
}

pub(crate) fn get(cache: &Cache, key: &str, raw: bool, c: &mut Console<'_>) -> Outcome {
    let Some(value) = cache.get(key)? else {
        if c.json {
            c.json(&json!({"key": key, "found": false}))?;
            return Err(Failure::Quiet);
        }
        return Err(not_found(key));
    };
    if raw {
        c.out.write_all(&value)?;
    } else if c.json {
        let (text, utf8) = show::text(&value);
        c.json(&json!({
            "key": key,
            "found": true,
            "utf8": utf8,
            "value": text,
            "base64": show::base64(&value),
        }))?;
    } else {
        writeln!(c.out, "{}", show::text(&value).0)?;
    }
    Ok(())
}

pub(crate) fn set(
    cache: &Cache,
    key: &str,
    value: Option<OsString>,
    expiry: Expiry,
    tags: &[String],
    c: &mut Console<'_>,
) -> Outcome {
    let value = match value {
        Some(v) => v.into_encoded_bytes(),
        None => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| Failure::Failed(format!("cannot read the value from stdin: {e}")))?;
            v
        }
    };
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    if !cache.set_tagged(key, &value, expiry, &tags)? {
        return Err(Failure::Failed(format!(
            "{key:?} not stored: the backend is unreachable"
        )));
    }
    if c.json {
        c.json(&json!({"key": key, "stored": true, "bytes": value.len()}))?;
    } else {
        writeln!(
            c.out,
            "stored {key:?} ({})",
            show::count(value.len(), "byte")
        )?;
    }
    Ok(())
}

pub(crate) fn delete(cache: &Cache, key: &str, c: &mut Console<'_>) -> Outcome {
    let deleted = cache.delete(key)?;
    if c.json {
        c.json(&json!({"key": key, "deleted": deleted}))?;
        return if deleted { Ok(()) } else { Err(Failure::Quiet) };
    }
    if !deleted {
        return Err(not_found(key));
    }
    writeln!(c.out, "deleted {key:?}")?;
    Ok(())
}

pub(crate) fn invalidate_tags(cache: &Cache, tags: &[String], c: &mut Console<'_>) -> Outcome {
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    if !cache.invalidate_tags(&tags)? {
        return Err(Failure::Failed(
            "tags not invalidated: the backend is unreachable".into(),
        ));
    }
    if c.json {
        c.json(&json!({"tags": tags, "invalidated": true}))?;
    } else {
        writeln!(c.out, "invalidated {}", show::count(tags.len(), "tag"))?;
    }
    Ok(())
}

pub(crate) fn ttl(cache: &Cache, key: &str, c: &mut Console<'_>) -> Outcome {
    let ttl = cache.ttl(key)?;
    if c.json {
        let (found, ms) = match ttl {
            TimeToLive::Left(d) => (true, Some(d.as_millis() as u64)),
            TimeToLive::Missing => (false, None),
            _ => (true, None),
        };
        c.json(&json!({"key": key, "found": found, "expires": ms.is_some(), "ttl_ms": ms}))?;
        return if found { Ok(()) } else { Err(Failure::Quiet) };
    }
    match ttl {
        TimeToLive::Missing => return Err(not_found(key)),
        TimeToLive::Forever => writeln!(c.out, "never")?,
        left => writeln!(c.out, "{}", left.as_secs_rounded().unwrap_or_default())?,
    }
    Ok(())
}

pub(crate) fn keys(cache: &Cache, pattern: &str, c: &mut Console<'_>) -> Outcome {
    let mut scan = cache.iter_keys(pattern, None, PAGE)?;
    // A scan may meet a key twice (Redis SCAN while the table grows): each is printed once.
    let mut seen = HashSet::new();
    if c.json {
        write!(c.out, "[")?;
    }
    let mut first = true;
    while let Some(page) = scan.next_page()? {
        for key in page {
            if !seen.insert(key.clone()) {
                continue;
            }
            if c.json {
                let sep = if first { "" } else { "," };
                write!(c.out, "{sep}\n{}", serde_json::Value::String(key))?;
            } else {
                writeln!(c.out, "{key}")?;
            }
            first = false;
        }
        c.out.flush()?;
    }
    if c.json {
        writeln!(c.out, "{}]", if first { "" } else { "\n" })?;
    }
    Ok(())
}

/// A one-line progress indicator on the process' standard error (a terminal), redrawn at
/// most every [`Progress::EVERY`].
struct Progress {
    on: bool,
    last: Option<Instant>,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(100);

    fn new(on: bool) -> Progress {
        Progress { on, last: None }
    }

    fn show(&mut self, line: impl FnOnce() -> String) {
        let due = match self.last {
            Some(t) => t.elapsed() >= Self::EVERY,
            None => true,
        };
        if self.on && due {
            eprint!("\r\x1b[K{}", line());
            self.last = Some(Instant::now());
        }
    }

    /// Erases the line.
    fn clear(&mut self) {
        if self.on && self.last.take().is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

/// True for a pattern that matches every key of the prefix.
fn matches_everything(pattern: &str) -> bool {
    !pattern.is_empty() && pattern.bytes().all(|b| b == b'*')
}

pub(crate) fn delete_pattern(
    cache: &Cache,
    pattern: &str,
    dry_run: bool,
    yes: bool,
    c: &mut Console<'_>,
) -> Outcome {
    let mut progress = Progress::new(c.progress);
    let matched = count(cache, pattern, |n| {
        progress.show(|| format!("counting keys matching {pattern:?}: {n}"));
    })?;
    progress.clear();
    if dry_run {
        if c.json {
            c.json(
                &json!({"pattern": pattern, "matched": matched, "deleted": 0, "dry_run": true}),
            )?;
        } else {
            writeln!(
                c.out,
                "{} {pattern:?} (dry run: nothing deleted)",
                match matched {
                    1 => "1 key matches".to_owned(),
                    n => format!("{n} keys match"),
                }
            )?;
        }
        return Ok(());
    }
    if matches_everything(pattern) && !yes {
        return Err(Failure::Usage(format!(
            "refusing to delete every key: {} match {pattern:?}; \
             add --yes to delete them (or use --dry-run to count)",
            show::count(matched, "key")
        )));
    }
    let mut scan = cache.iter_keys(pattern, None, PAGE)?;
    let mut deleted = 0;
    while let Some(page) = scan.next_page()? {
        if page.is_empty() {
            continue;
        }
        let keys: Vec<Key<'_>> = page.iter().map(|k| Key::new(k)).collect();
        deleted += cache.delete_many_keys(&keys)?;
        progress.show(|| format!("deleting keys matching {pattern:?}: {deleted}/{matched}"));
    }
    progress.clear();
    if c.json {
        c.json(
            &json!({"pattern": pattern, "matched": matched, "deleted": deleted, "dry_run": false}),
        )?;
    } else {
        writeln!(
            c.out,
            "deleted {} matching {pattern:?}",
            show::count(deleted, "key")
        )?;
    }
    Ok(())
}

pub(crate) fn clear(cache: &Cache, yes: bool, c: &mut Console<'_>) -> Outcome {
    let what = format!(
        "every key of prefix {:?} in {}",
        cache.key_prefix(),
        polycache::redact(cache.location())
    );
    if !yes && !c.confirm(&format!("Remove {what}?")) {
        return Err(Failure::Usage(format!("not clearing {what} without --yes")));
    }
    cache.clear()?;
    if c.json {
        c.json(&json!({"cleared": true, "key_prefix": cache.key_prefix()}))?;
    } else {
        writeln!(c.out, "cleared {what}")?;
    }
    Ok(())
}

pub(crate) fn create_table(url: &str, dry_run: bool, c: &mut Console<'_>) -> Outcome {
    if dry_run {
        let sql = polycache::create_table_sql(url)?;
        if c.json {
            c.json(&json!({"sql": sql, "created": false}))?;
        } else {
            for statement in sql {
                writeln!(c.out, "{};", statement.trim_end_matches(';'))?;
            }
        }
        return Ok(());
    }
    polycache::create_table(url)?;
    if c.json {
        c.json(&json!({"created": true}))?;
    } else {
        writeln!(
            c.out,
            "the cache table of {} is ready",
            polycache::redact(url)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stars_match_everything() {
        assert!(matches_everything("*"));
        assert!(matches_everything("**"));
        assert!(!matches_everything("user:*"));
        assert!(!matches_everything(""));
        assert!(!matches_everything("\\*"));
    }
}
