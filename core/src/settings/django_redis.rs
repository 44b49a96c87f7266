//! django-redis' `OPTIONS`: what polycache does with each.

use super::{bad_option, option_value, Res, SettingValue};
use crate::options::OptionValue;

/// Where `PASSWORD` waits until the URL is known.
pub(super) const PASSWORD: &str = "\u{0}password";

fn refuse(name: &str, why: &str) -> super::SettingsError {
    bad_option(format!("OPTIONS['{name}']: {why}"))
}

fn text<'a>(name: &str, v: &'a SettingValue) -> Res<&'a str> {
    v.as_str().ok_or_else(|| {
        bad_option(format!(
            "OPTIONS['{name}'] must be a str, not {}",
            v.type_name()
        ))
    })
}

/// A `SERIALIZER`: polycache's names, or django-redis' classes that write the same.
pub(super) fn serializer(s: &str) -> Res<String> {
    match s {
        "pickle" | "json" | "raw" => Ok(s.to_owned()),
        "django_redis.serializers.pickle.PickleSerializer" => Ok("pickle".to_owned()),
        "django_redis.serializers.json.JSONSerializer" => Ok("json".to_owned()),
        other => Err(refuse(
            "SERIALIZER",
            &format!(
                "polycache has no serializer '{other}': it stores values with \"pickle\" \
                 (the default; what Django's RedisCache and django-redis' \
                 PickleSerializer write), \"json\" or \"raw\" (bytes)"
            ),
        )),
    }
}

/// The URL options a django-redis option becomes (`None`: not one of django-redis').
pub(super) fn option(
    name: &str,
    v: &SettingValue,
) -> Res<Option<Vec<(&'static str, OptionValue)>>> {
    const SENTINEL: &str = "give a redis+sentinel:// LOCATION instead (see docs/backends/redis.md)";
    let none = Ok(Some(Vec::new()));
    match name {
        "CLIENT_CLASS" => match text(name, v)? {
            "django_redis.client.DefaultClient" => none,
            "django_redis.client.HerdClient" => Err(refuse(
                name,
                "polycache has no herd client (its entries differ): get_or_set and \
                 @cached compute a missing value once (single-flight, and a lease across \
                 processes with lease=true), and polycache.Job serves a stale value while \
                 one refresh runs; remove CLIENT_CLASS",
            )),
            "django_redis.client.ShardClient" => Err(refuse(
                name,
                "polycache does not shard over independent Redis servers: use a Redis \
                 Cluster (redis+cluster://h1:7000,h2:7001) or memcached:// with several \
                 servers",
            )),
            "django_redis.client.SentinelClient" => Err(refuse(name, SENTINEL)),
            other => Err(refuse(
                name,
                &format!(
                    "polycache.django.Cache has no pluggable client ('{other}'); its \
                     methods are native"
                ),
            )),
        },
        "COMPRESSOR" => match text(name, v)? {
            "django_redis.compressors.identity.IdentityCompressor" => none,
            // django-redis compresses values longer than 15 bytes.
            "django_redis.compressors.zstd.ZStdCompressor" => {
                Ok(Some(vec![("compress_min_size", OptionValue::Int(16))]))
            }
            other => Err(refuse(
                name,
                &format!(
                    "polycache compresses with zstd only, not '{other}': use \
                     \"django_redis.compressors.zstd.ZStdCompressor\" or COMPRESS_MIN_SIZE \
                     (values django-redis compressed are not readable by polycache: \
                     clear the cache when switching)"
                ),
            )),
        },
        "IGNORE_EXCEPTIONS" => match v {
            SettingValue::Bool(b) => Ok(Some(vec![("fail_open", OptionValue::Bool(*b))])),
            other => Err(bad_option(format!(
                "OPTIONS['{name}'] must be a bool, not {}",
                other.type_name()
            ))),
        },
        "SOCKET_TIMEOUT" => Ok(Some(vec![("socket_timeout", seconds(name, v)?)])),
        "SOCKET_CONNECT_TIMEOUT" => Ok(Some(vec![("connect_timeout", seconds(name, v)?)])),
        "PASSWORD" => Ok(Some(vec![(
            PASSWORD,
            OptionValue::Str(text(name, v)?.to_owned()),
        )])),
        "PARSER_CLASS" => {
            text(name, v)?;
            // polycache reads Redis' replies itself: a parser choice changes nothing.
            none
        }
        "CONNECTION_POOL_KWARGS" => pool_kwargs(name, v),
        "CONNECTION_POOL_CLASS" => match text(name, v)? {
            "redis.ConnectionPool"
            | "redis.connection.ConnectionPool"
            | "redis.BlockingConnectionPool"
            | "redis.connection.BlockingConnectionPool" => none,
            other => Err(refuse(
                name,
                &format!(
                    "polycache keeps its own pool ('{other}' is not used): size it with \
                     CONNECTION_POOL_KWARGS max_connections or the max_connections option"
                ),
            )),
        },
        "REDIS_CLIENT_CLASS" => match text(name, v)? {
            "redis.client.Redis" | "redis.Redis" => none,
            _ => Err(refuse(
                name,
                "polycache talks to Redis itself; for a redis-py client of the same \
                 server call polycache.django.get_redis_connection()",
            )),
        },
        "REDIS_CLIENT_KWARGS" => match v {
            SettingValue::Map(m) if m.is_empty() => none,
            SettingValue::Null => none,
            _ => Err(refuse(
                name,
                "polycache talks to Redis itself: give socket_timeout, connect_timeout, \
                 max_connections, tls_ca or insecure as OPTIONS (docs/backends/redis.md)",
            )),
        },
        "CONNECTION_FACTORY" => match text(name, v)? {
            "django_redis.pool.ConnectionFactory" => none,
            "django_redis.pool.SentinelConnectionFactory" => Err(refuse(name, SENTINEL)),
            _ => Err(refuse(name, "polycache opens its connections itself")),
        },
        "SENTINELS" | "SENTINEL_KWARGS" => Err(refuse(name, SENTINEL)),
        "PICKLE_VERSION" => match v {
            SettingValue::Int(-1 | 5) => none,
            _ => Err(refuse(
                name,
                "polycache writes pickle protocol 5 (pickle.HIGHEST_PROTOCOL, as Django's \
                 RedisCache does), which every supported Python reads; only -1 or 5 is \
                 accepted",
            )),
        },
        "REPLICA_READ_ONLY" => match v {
            SettingValue::Bool(true) => none,
            _ => Err(refuse(
                name,
                "polycache writes to the first LOCATION only and reads from the others \
                 (REPLICA_READ_ONLY=True)",
            )),
        },
        // A Django setting in django-redis (DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS), unread
        // in OPTIONS: polycache logs every failure it ignores anyway.
        "CLOSE_CONNECTION" | "LOG_IGNORED_EXCEPTIONS" => match v {
            SettingValue::Bool(_) => none,
            other => Err(bad_option(format!(
                "OPTIONS['{name}'] must be a bool, not {}",
                other.type_name()
            ))),
        },
        _ => Ok(None),
    }
}

fn seconds(name: &str, v: &SettingValue) -> Res<OptionValue> {
    match v {
        SettingValue::Int(_) | SettingValue::Float(_) | SettingValue::Null => option_value(name, v),
        other => Err(bad_option(format!(
            "OPTIONS['{name}'] must be a number of seconds or None, not {}",
            other.type_name()
        ))),
    }
}

/// `CONNECTION_POOL_KWARGS`: the redis-py pool arguments polycache has an option for.
fn pool_kwargs(name: &str, v: &SettingValue) -> Res<Option<Vec<(&'static str, OptionValue)>>> {
    let SettingValue::Map(kwargs) = v else {
        return Err(bad_option(format!(
            "OPTIONS['{name}'] must be a mapping, not {}",
            v.type_name()
        )));
    };
    let mut out = Vec::new();
    for (k, v) in kwargs {
        let key = k.as_str().unwrap_or("");
        match (key, v) {
            ("max_connections", SettingValue::Int(n)) => {
                out.push(("max_connections", OptionValue::Int(*n)))
            }
            ("socket_timeout", _) => out.push(("socket_timeout", seconds(name, v)?)),
            ("socket_connect_timeout", _) => out.push(("connect_timeout", seconds(name, v)?)),
            ("ssl_ca_certs", SettingValue::Str(path)) => {
                out.push(("tls_ca", OptionValue::Str(path.clone())))
            }
            ("ssl_cert_reqs", SettingValue::Null) => {
                out.push(("insecure", OptionValue::Bool(true)))
            }
            ("ssl_cert_reqs", SettingValue::Str(s)) if s.eq_ignore_ascii_case("none") => {
                out.push(("insecure", OptionValue::Bool(true)))
            }
            ("ssl_cert_reqs", SettingValue::Str(s)) if s.eq_ignore_ascii_case("required") => {}
            _ => {
                return Err(refuse(
                    name,
                    &format!(
                        "'{}' has no polycache equivalent here; polycache takes \
                         max_connections, socket_timeout, socket_connect_timeout, \
                         ssl_ca_certs (tls_ca) and ssl_cert_reqs=None (insecure)",
                        python_key(k)
                    ),
                ))
            }
        }
    }
    Ok(Some(out))
}

fn python_key(k: &SettingValue) -> String {
    match k {
        SettingValue::Str(s) => s.clone(),
        other => other.type_name().to_owned(),
    }
}
