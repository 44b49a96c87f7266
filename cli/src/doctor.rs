//! `doctor`: checks a cache URL from this machine and explains each problem in one line.

use crate::{open, show, url, Console, Failure, Global, Outcome};
use polycache::{Cache, Error, ErrorKind, Expiry, Location};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime};

/// How a check ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Ok,
    /// Works, but something deserves attention.
    Warn,
    Fail,
    /// Does not apply to this backend.
    Skip,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "--",
        }
    }
}

struct Check {
    name: &'static str,
    status: Status,
    detail: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

/// True for a host on this machine: traffic to it never crosses a network.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether traffic to the URL's servers is encrypted.
fn tls(location: &Location) -> Check {
    let scheme = location.scheme();
    let option = |name: &str| {
        location
            .options()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let remote: Vec<&String> = location
        .hosts()
        .iter()
        .filter(|h| !h.is_empty() && !h.starts_with('/') && !is_loopback(h))
        .collect();
    match scheme {
        "memory" | "dummy" | "file" | "sqlite" | "unix" => {
            check("tls", Status::Skip, "not used: nothing leaves this machine")
        }
        "rediss" | "rediss+cluster" | "rediss+sentinel" => {
            if option("insecure") == Some("true") {
                check(
                    "tls",
                    Status::Warn,
                    "encrypted, but insecure=true accepts any server certificate",
                )
            } else {
                check("tls", Status::Ok, "encrypted; the server certificate is checked")
            }
        }
        "postgres" | "postgresql" => match option("sslmode").unwrap_or("disable") {
            "verify-full" => check("tls", Status::Ok, "encrypted (sslmode=verify-full)"),
            mode @ ("require" | "verify-ca" | "prefer") => check(
                "tls",
                Status::Warn,
                format!("sslmode={mode}: the server's host name is not checked; use verify-full"),
            ),
            _ if remote.is_empty() => check("tls", Status::Ok, "not used: the server is local"),
            _ => check(
                "tls",
                Status::Warn,
                "not encrypted: passwords and values cross the network in clear; set sslmode=verify-full",
            ),
        },
        _ if remote.is_empty() => check("tls", Status::Ok, "not used: the server is local"),
        "redis" | "redis+cluster" | "redis+sentinel" => check(
            "tls",
            Status::Warn,
            "not encrypted: passwords and values cross the network in clear; use rediss://",
        ),
        _ => check(
            "tls",
            Status::Warn,
            format!("not encrypted: {scheme}:// has no TLS; keep it on a private network"),
        ),
    }
}

/// True when the server refused the credentials (only a hint for the explanation: the
/// servers say it in words, not in an error kind of their own).
fn is_auth(e: &Error) -> bool {
    let lower = e.to_string().to_ascii_lowercase();
    ["noauth", "wrongpass", "password", "authentication", "auth "]
        .iter()
        .any(|w| lower.contains(w))
}

/// One line for a failed round trip: what probably went wrong and what to do.
fn explain(e: &Error, location: &Location) -> String {
    let text = e.to_string();
    if is_auth(e) {
        let hint = if location.password().is_some() {
            "check the user and password in the URL"
        } else {
            "the server wants a password: put it in the URL (redis://:PASSWORD@host)"
        };
        return format!("authentication failed: {hint} ({text})");
    }
    match e.kind() {
        ErrorKind::Connection => {
            format!("cannot connect: is the server running and reachable from here? ({text})")
        }
        ErrorKind::Timeout => {
            format!("no answer in time: the server or the network is slow or blocked ({text})")
        }
        ErrorKind::Io => format!("local I/O failed: check the path and its permissions ({text})"),
        _ => text,
    }
}

/// Writes, reads back and deletes a probe key.
fn round_trip(cache: &Cache) -> polycache::Result<Duration> {
    let key = format!("polycache-doctor:{}", std::process::id());
    let start = Instant::now();
    cache.set(key.as_str(), b"ok", Expiry::After(Duration::from_secs(60)))?;
    let read = cache.get(key.as_str())?;
    cache.delete(key.as_str())?;
    let took = start.elapsed();
    match read {
        Some(v) if &*v == b"ok" => Ok(took),
        _ => Err(Error::new(
            ErrorKind::Backend,
            "a value just written was not read back (a full or evicting cache, or dummy://)",
        )),
    }
}

pub(crate) fn run(global: &Global, c: &mut Console<'_>) -> Outcome {
    let raw = url(global)?;
    let location = Location::parse(raw)?;
    let cache = open(global)?;
    let mut checks = vec![check(
        "url",
        Status::Ok,
        format!(
            "{} ({} backend)",
            location.redacted(),
            cache.backend().name()
        ),
    )];
    checks.push(tls(&location));
    // A server that answered, even with an error, can say more: a write that fails on a
    // table of the wrong shape is explained by the table check.
    let mut answered = true;
    let connected = match round_trip(&cache) {
        Ok(took) => {
            checks.push(check(
                "connection",
                Status::Ok,
                format!("a write, read and delete took {}", show::ms(took)),
            ));
            true
        }
        Err(e) if location.scheme() == "dummy" => {
            checks.push(check(
                "connection",
                Status::Warn,
                format!("{e}: dummy:// stores nothing"),
            ));
            false
        }
        Err(e) => {
            answered =
                !matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout) && !is_auth(&e);
            checks.push(check("connection", Status::Fail, explain(&e, &location)));
            false
        }
    };
    if answered {
        server_checks(&cache, &mut checks);
    }
    if connected {
        checks.push(
            match cache
                .iter_keys("*", None, 1)
                .and_then(|mut s| s.next_page())
            {
                Ok(_) => check(
                    "keys",
                    Status::Ok,
                    "keys can be listed (keys, delete-pattern)",
                ),
                Err(e) if e.kind() == ErrorKind::Unsupported => check(
                    "keys",
                    Status::Skip,
                    "this backend cannot list keys: keys and delete-pattern are unavailable",
                ),
                Err(e) => check("keys", Status::Fail, format!("listing keys failed: {e}")),
            },
        );
    }
    report(&location, &checks, c)
}

/// The server's version, clock and (SQL) table, from [`Cache::server_info`].
fn server_checks(cache: &Cache, checks: &mut Vec<Check>) {
    let sent = SystemTime::now();
    let info = match cache.server_info() {
        Ok(info) => info,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            checks.push(check(
                "server",
                Status::Skip,
                format!(
                    "nothing to ask: the {} backend has no server",
                    cache.backend().name()
                ),
            ));
            return;
        }
        Err(e) => {
            checks.push(check(
                "server",
                Status::Fail,
                format!("cannot read the server's information: {e}"),
            ));
            return;
        }
    };
    let version = info.version.as_deref().unwrap_or("(version unknown)");
    let tls = match info.tls {
        Some(true) => ", this connection is encrypted",
        Some(false) => ", this connection is not encrypted",
        None => "",
    };
    checks.push(check(
        "server",
        Status::Ok,
        format!("{} {version}{tls}", info.software),
    ));
    match info.clock_skew_ms(sent) {
        Some(skew) => {
            let margin =
                info.round_trip.unwrap_or_default().as_millis() as i64 / 2 + CLOCK_SLACK_MS;
            let secs = skew.unsigned_abs() as f64 / 1000.0;
            let way = if skew > 0 { "ahead of" } else { "behind" };
            if skew.abs() > margin {
                checks.push(check(
                    "clock",
                    Status::Warn,
                    format!(
                        "the server's clock is {secs:.1} s {way} this machine's: entries may \
                         expire early or late for clients with a different clock; fix NTP"
                    ),
                ));
            } else {
                checks.push(check(
                    "clock",
                    Status::Ok,
                    format!("{skew:+} ms from this machine's, within the {margin} ms tolerated"),
                ));
            }
        }
        None if info.software == "sqlite" => {}
        None => checks.push(check(
            "clock",
            Status::Skip,
            "the server does not tell its time",
        )),
    }
    if matches!(info.software.as_str(), "sqlite" | "postgresql") {
        if info.problems.is_empty() {
            checks.push(check(
                "table",
                Status::Ok,
                "has the columns and unique index polycache needs",
            ));
        }
        for problem in info.problems {
            checks.push(check("table", Status::Fail, problem));
        }
    } else {
        for problem in info.problems {
            checks.push(check("server", Status::Fail, problem));
        }
    }
}

/// Clock differences below this are not reported (beyond half the round trip).
const CLOCK_SLACK_MS: i64 = 1000;

fn report(location: &Location, checks: &[Check], c: &mut Console<'_>) -> Outcome {
    let failed = checks.iter().any(|k| k.status == Status::Fail);
    if c.json {
        let list: Vec<_> = checks
            .iter()
            .map(|k| json!({"check": k.name, "status": k.status.word().to_ascii_lowercase(), "detail": k.detail}))
            .collect();
        c.json(&json!({"url": location.redacted(), "ok": !failed, "checks": list}))?;
    } else {
        for k in checks {
            writeln!(
                c.out,
                "{:<4}  {:<10}  {}",
                k.status.word(),
                k.name,
                k.detail
            )?;
        }
    }
    if failed {
        Err(Failure::Quiet)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:6379",
            "localhost",
            "[::1]:5432",
            "::1",
            "127.5.0.1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.5:6379", "cache.internal", "[2001:db8::1]:6379"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn plain_redis_to_another_host_is_a_warning() {
        let remote = Location::parse("redis://:pw@10.0.0.5:6379/0").unwrap();
        assert_eq!(tls(&remote).status, Status::Warn);
        let local = Location::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(tls(&local).status, Status::Ok);
        let secure = Location::parse("rediss://10.0.0.5:6379").unwrap();
        assert_eq!(tls(&secure).status, Status::Ok);
    }
}
