//! From a redis URL to redis-rs clients: hosts and ports (IPv6 in brackets), the database
//! (path or `db` option), TCP or TLS addresses, the sentinels of a `redis+sentinel://` URL,
//! and the timeouts' "positive or none" rule.

use super::sentinel::{self, Sentinels};
use super::{RedisOptions, DEFAULT_PORT};
use crate::error::{Error, Result};
use crate::location::{Location, Options};
use redis::io::tcp::TcpSettings;
use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};
use std::time::Duration;

pub(super) fn positive_or_none(t: Option<Duration>, name: &str) -> Result<Option<Duration>> {
    match t {
        Some(d) if d.is_zero() => Err(Error::config(format!(
            "invalid value 0 for option '{name}': expected a positive number of seconds, or none"
        ))),
        other => Ok(other),
    }
}

/// The sentinels of a `redis+sentinel://` location, with their own auth (the options
/// `sentinel_username` and `sentinel_password`) and the master's (the URL's user and
/// password, database and TLS).
pub(super) fn sentinel_group(
    location: &Location,
    options: &mut Options,
    db_option: Option<i64>,
    auth: &RedisConnectionInfo,
    tls_certs: Option<TlsCertificates>,
    opts: &mut RedisOptions,
) -> Result<Sentinels> {
    let redacted = location.redacted();
    let bad = |what: String| Error::config(format!("{what} in {redacted}"));
    let scheme = location.scheme();
    let tls = scheme == "rediss+sentinel";
    if location.hosts().is_empty() {
        return Err(bad(format!(
            "{scheme}:// names no sentinel: expected {scheme}://host1:26379,host2:26379/<master \
             name>[/db]"
        )));
    }
    let (name, db) = sentinel::name_and_db(location.path(), db_option).map_err(&bad)?;
    opts.db = db;
    let sentinel_auth = RedisConnectionInfo::default();
    let sentinel_auth = match options.take("sentinel_username") {
        Some(u) => sentinel_auth.set_username(u),
        None => sentinel_auth,
    };
    let sentinel_auth = match options.take("sentinel_password") {
        Some(p) => sentinel_auth.set_password(p),
        None => sentinel_auth,
    };
    let mut sentinels = Vec::with_capacity(location.hosts().len());
    for host in location.hosts() {
        let (h, port) = split_host(host).map_err(&bad)?;
        let port = if host_has_port(host) {
            port
        } else {
            sentinel::DEFAULT_SENTINEL_PORT
        };
        let addr = tcp_addr(h.clone(), port, tls.then_some(opts.insecure));
        let info = connection_info(addr, sentinel_auth.clone())?;
        let client = client_for(info, tls_certs.clone(), &redacted)?;
        sentinels.push((client, format!("{h}:{port}")));
    }
    let nodes = sentinel::NodeSettings {
        tls: tls.then_some((opts.insecure, tls_certs)),
        auth: auth.clone().set_db(db),
    };
    Ok(Sentinels::new(sentinels, name, nodes, opts, redacted))
}

/// Whether `host` (`name`, `name:port`, `[v6]`, `[v6]:port`) gives a port.
pub(super) fn host_has_port(host: &str) -> bool {
    match host.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => host.contains(':'),
    }
}

pub(super) fn check_db(db: i64) -> std::result::Result<i64, String> {
    if (0..=i64::from(i32::MAX)).contains(&db) {
        Ok(db)
    } else {
        Err(format!("invalid database number {db}: expected 0 or more"))
    }
}

/// The database of `redis://host/N`, or of the `db` option when the path has none.
pub(super) fn db_from_path(path: &str, option: Option<i64>) -> std::result::Result<i64, String> {
    let text = path.strip_prefix('/').unwrap_or(path);
    let from_path = if text.is_empty() {
        None
    } else {
        match text.parse::<i64>() {
            Ok(n) => Some(check_db(n)?),
            Err(_) => {
                return Err(format!(
                    "invalid database {text:?} in the path: expected a number such as /0"
                ))
            }
        }
    };
    match (from_path, option) {
        (Some(a), Some(b)) if a != b => {
            Err(format!("the path names database {a} and the db option {b}"))
        }
        (Some(a), _) => Ok(a),
        (None, Some(b)) => check_db(b),
        (None, None) => Ok(0),
    }
}

/// `host`, `host:port` or `[v6]:port`.
pub(super) fn split_host(host: &str) -> std::result::Result<(String, u16), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((name, "")) => (name, None),
            Some((name, tail)) => match tail.strip_prefix(':') {
                Some(p) => (name, Some(p)),
                None => return Err(format!("invalid host {host:?}")),
            },
            None => return Err(format!("invalid host {host:?}: no closing ']'")),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, p)) => (name, Some(p)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return Err(format!("invalid host {host:?}: the name is empty"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "invalid port {p:?} of host {name:?}: expected 1 to 65535"
                ))
            }
        },
    };
    Ok((name.to_owned(), port))
}

/// `host:port` over TCP, or over TLS when `tls` is `Some(insecure)`.
pub(super) fn tcp_addr(host: String, port: u16, tls: Option<bool>) -> ConnectionAddr {
    match tls {
        Some(insecure) => ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(host, port),
    }
}

pub(super) fn connection_info(
    addr: ConnectionAddr,
    auth: RedisConnectionInfo,
) -> Result<ConnectionInfo> {
    let info = addr
        .into_connection_info()
        .map_err(|e| Error::config(format!("invalid redis address: {}", e.category())))?;
    Ok(info
        .set_redis_settings(auth)
        .set_tcp_settings(TcpSettings::default().set_nodelay(true)))
}

pub(super) fn client_for(
    info: ConnectionInfo,
    certs: Option<TlsCertificates>,
    redacted: &str,
) -> Result<Client> {
    let result = match certs {
        Some(certs) => Client::build_with_tls(info, certs),
        None => Client::open(info),
    };
    result.map_err(|e| {
        Error::config(format!(
            "cannot set up a redis client for {redacted}: {} ({})",
            e.category(),
            e.detail().unwrap_or("")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_databases() {
        assert_eq!(split_host("h").unwrap(), ("h".into(), 6379));
        assert_eq!(split_host("h:7000").unwrap(), ("h".into(), 7000));
        assert_eq!(split_host("[::1]:7000").unwrap(), ("::1".into(), 7000));
        assert!(split_host("h:0").is_err());
        assert!(split_host("h:99999").is_err());
        assert!(split_host(":1").is_err());
        assert_eq!(db_from_path("", None).unwrap(), 0);
        assert_eq!(db_from_path("/3", None).unwrap(), 3);
        assert_eq!(db_from_path("/", Some(2)).unwrap(), 2);
        assert!(db_from_path("/x", None).is_err());
        assert!(db_from_path("/-1", None).is_err());
        assert!(db_from_path("/1", Some(2)).is_err());
    }
}
