"""Coming from django-redis: its OPTIONS and settings, ``get_redis_connection`` and ``cache.client``.

Each django-redis option either works (mapped onto polycache's own) or fails when the cache
is made, with a message naming what polycache does instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure()
django.setup()

from django.test import override_settings  # noqa: E402

import polycache  # noqa: E402
from polycache._caches import CacheHandler  # noqa: E402
from polycache.django import Cache, InvalidOptionError, get_redis_connection  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

needs_redis = pytest.mark.skipif(
    "redis://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the redis feature (POLYCACHE_FEATURES=redis)",
)

PASSWORD = "s3cret/@pw"
#: The first bytes of a value polycache compressed (zstd; the layout is in docs/security.md).
COMPRESSED = b"\x00PCZST1\x00"
QUOTED = "s3cret%2F%40pw"


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    pytest.importorskip("redis")
    with servers.redis_server(f"requirepass {PASSWORD}") as s:
        yield s


@pytest.fixture(scope="module")
def replica() -> Iterator[servers.Server]:
    # A second server standing for a replica: which server a client talks to is what counts.
    pytest.importorskip("redis")
    with servers.redis_server(f"requirepass {PASSWORD}") as s:
        yield s


def caches_of(**entry: Any) -> Any:
    return override_settings(CACHES={"default": {"BACKEND": "polycache.django.Cache", **entry}})


def dead_url() -> str:
    return f"redis://127.0.0.1:{servers.free_port()}/0"


# --- OPTIONS --------------------------------------------------------------------------------


@needs_redis
def test_ignore_exceptions_fails_open() -> None:
    quick = {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}
    strict = Cache(dead_url(), {"OPTIONS": quick})
    with pytest.raises(polycache.ConnectionError):
        strict.get("k")
    lenient = Cache(dead_url(), {"OPTIONS": {**quick, "IGNORE_EXCEPTIONS": True}})
    assert lenient.get("k", "fallback") == "fallback"
    assert "fail_open=true" in lenient.location
    with override_settings(DJANGO_REDIS_IGNORE_EXCEPTIONS=True):
        assert Cache(dead_url(), {"OPTIONS": quick}).get("k", "fallback") == "fallback"
        # The cache's own option wins over the setting.
        with pytest.raises(polycache.ConnectionError):
            Cache(dead_url(), {"OPTIONS": {**quick, "IGNORE_EXCEPTIONS": False}}).get("k")
    with pytest.raises(InvalidOptionError, match="IGNORE_EXCEPTIONS.*bool"):
        Cache(dead_url(), {"OPTIONS": {"IGNORE_EXCEPTIONS": "yes"}})


@needs_redis
def test_timeouts_and_pool_kwargs_become_url_options() -> None:
    c = Cache(
        dead_url(),
        {
            "OPTIONS": {
                "SOCKET_TIMEOUT": 0.5,
                "SOCKET_CONNECT_TIMEOUT": 2,
                "CONNECTION_POOL_KWARGS": {"max_connections": 5},
                "CONNECTION_POOL_CLASS": "redis.BlockingConnectionPool",
                "PARSER_CLASS": "redis.connection._HiredisParser",
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "REDIS_CLIENT_CLASS": "redis.client.Redis",
                "CLOSE_CONNECTION": False,
                "LOG_IGNORED_EXCEPTIONS": True,
                "PICKLE_VERSION": -1,
                "REPLICA_READ_ONLY": True,
            }
        },
    )
    for shown in ("socket_timeout=0.5", "connect_timeout=2", "max_connections=5"):
        assert shown in c.location
    with pytest.raises(InvalidOptionError, match="retry_on_timeout.*max_connections"):
        Cache(dead_url(), {"OPTIONS": {"CONNECTION_POOL_KWARGS": {"retry_on_timeout": True}}})
    with pytest.raises(InvalidOptionError, match="SOCKET_TIMEOUT.*number of seconds"):
        Cache(dead_url(), {"OPTIONS": {"SOCKET_TIMEOUT": "fast"}})
    with pytest.raises(InvalidOptionError, match="both set socket_timeout"):
        Cache(dead_url(), {"OPTIONS": {"SOCKET_TIMEOUT": 1, "socket_timeout": 2}})


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("CLIENT_CLASS", "django_redis.client.HerdClient", "single-flight"),
        ("CLIENT_CLASS", "django_redis.client.ShardClient", "redis\\+cluster://"),
        ("CLIENT_CLASS", "django_redis.client.SentinelClient", "redis\\+sentinel://"),
        ("CLIENT_CLASS", "myapp.Client", "no pluggable client"),
        ("COMPRESSOR", "django_redis.compressors.zlib.ZlibCompressor", "zstd"),
        ("COMPRESSOR", "django_redis.compressors.lz4.Lz4Compressor", "ZStdCompressor"),
        ("SERIALIZER", "django_redis.serializers.msgpack.MSGPackSerializer", '"pickle"'),
        ("SENTINELS", [("127.0.0.1", 26379)], "redis\\+sentinel://"),
        ("CONNECTION_FACTORY", "django_redis.pool.SentinelConnectionFactory", "redis\\+sentinel://"),
        ("REDIS_CLIENT_CLASS", "myapp.Redis", "get_redis_connection"),
        ("REDIS_CLIENT_KWARGS", {"health_check_interval": 30}, "socket_timeout"),
        ("CONNECTION_POOL_CLASS", "myapp.Pool", "max_connections"),
        ("PICKLE_VERSION", 2, "protocol 5"),
        ("REPLICA_READ_ONLY", False, "first LOCATION"),
    ],
)
def test_options_polycache_cannot_honour_fail_at_once_naming_the_equivalent(
    option: str, value: Any, named: str
) -> None:
    with pytest.raises(InvalidOptionError, match=named) as err:
        Cache("memory://", {"OPTIONS": {option: value}})
    assert option in str(err.value)
    # caches.configure reads CACHES by the same rules.
    with pytest.raises(polycache.ConfigurationError, match=named):
        CacheHandler().configure({"default": {"LOCATION": "memory://", "OPTIONS": {option: value}}})


def test_serializers_of_django_redis_that_polycache_writes_too() -> None:
    pickled = Cache("memory://", {"OPTIONS": {"SERIALIZER": "django_redis.serializers.pickle.PickleSerializer"}})
    as_json = Cache("memory://", {"OPTIONS": {"SERIALIZER": "django_redis.serializers.json.JSONSerializer"}})
    assert (pickled.serializer, as_json.serializer) == ("pickle", "json")


@needs_redis
def test_password_option_and_zstd_compressor_on_a_server(server: servers.Server) -> None:
    # django-redis' PASSWORD: for a LOCATION without one (a URL's own password wins).
    url = f"redis://127.0.0.1:{server.port}/3"
    options = {"PASSWORD": PASSWORD, "COMPRESSOR": "django_redis.compressors.zstd.ZStdCompressor"}
    with caches_of(LOCATION=url, KEY_PREFIX="dr", OPTIONS=options):
        from django.core.cache import cache

        assert PASSWORD not in cache.location and QUOTED not in cache.location
        cache.set("big", "x" * 1000)
        cache.set("small", "x")
        assert cache.get("big") == "x" * 1000
        raw = get_redis_connection()
        assert raw.get(cache.make_key("big")).startswith(COMPRESSED)
        assert not raw.get(cache.make_key("small")).startswith(COMPRESSED)
    with caches_of(LOCATION=f"redis://:wrong@127.0.0.1:{server.port}/3", OPTIONS={"PASSWORD": PASSWORD}):
        from django.core.cache import cache

        with pytest.raises(polycache.CacheError):
            cache.get("big")


# --- get_redis_connection and cache.client --------------------------------------------------


@needs_redis
def test_get_redis_connection_talks_to_the_caches_server_and_database(server: servers.Server) -> None:
    import redis

    with caches_of(LOCATION=f"redis://:{QUOTED}@127.0.0.1:{server.port}/2", KEY_PREFIX="p", VERSION=4):
        from django.core.cache import cache

        cache.set("k", 41)
        conn = get_redis_connection("default")
        assert isinstance(conn, redis.Redis)
        assert conn.get(cache.make_key("k")) == b"41"
        assert conn.incr(cache.make_key("k")) == 42
        assert cache.get("k") == 42
        kwargs = conn.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", server.port, 2)
        # django-redis' shape: cache.client.get_client(write=...), one client per server.
        assert cache.client.get_client(write=True) is conn
        assert cache.client.get_client(write=False) is conn
        pipe = conn.pipeline()
        pipe.set(cache.make_key("a"), 1).set(cache.make_key("b"), 2)
        pipe.execute()
        assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}


@needs_redis
def test_reads_go_to_a_replica(server: servers.Server, replica: servers.Server) -> None:
    locations = [f"redis://:{QUOTED}@127.0.0.1:{s.port}/0" for s in (server, replica)]
    with caches_of(LOCATION=locations):
        leader = get_redis_connection(write=True)
        follower = get_redis_connection(write=False)
        assert leader.connection_pool.connection_kwargs["port"] == server.port
        assert follower.connection_pool.connection_kwargs["port"] == replica.port
        assert follower.ping()


@needs_redis
def test_unix_sockets_and_tls_options_carry_over(server: servers.Server) -> None:
    with caches_of(LOCATION=f"unix://:{QUOTED}@{server.extra['socket']}?db=5"):
        conn = get_redis_connection()
        assert conn.ping()
        kwargs = conn.connection_pool.connection_kwargs
        assert (kwargs["path"], kwargs["db"]) == (server.extra["socket"], 5)
    location = f"rediss://u:{QUOTED}@127.0.0.1:{server.port}/1?insecure=true&socket_timeout=0.5"
    with caches_of(LOCATION=location, OPTIONS={"SOCKET_CONNECT_TIMEOUT": 2}):
        kwargs = get_redis_connection().connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("u", PASSWORD, 1)
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.5, 2.0)
        assert kwargs["ssl_cert_reqs"] is None


@needs_redis
def test_a_cluster_location_gives_a_redis_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    # RedisCluster connects when made: recorded here instead, to check what it is given.
    import redis.cluster

    made: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> str:
        made.append(kwargs)
        return "cluster"

    monkeypatch.setattr(redis.cluster, "RedisCluster", record)
    with caches_of(LOCATION="redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001"):
        assert get_redis_connection() == "cluster"
    nodes = [(n.host, n.port) for n in made[0].pop("startup_nodes")]
    assert nodes == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert made == [{"password": "pw"}]


def test_no_redis_client_for_other_backends_or_without_redis_py(monkeypatch: pytest.MonkeyPatch) -> None:
    with caches_of(LOCATION="memory://"):
        with pytest.raises(polycache.UnsupportedOperationError, match="memory://, not Redis"):
            get_redis_connection()
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}):
        with pytest.raises(polycache.UnsupportedOperationError, match="LocMemCache"):
            get_redis_connection()
    if "redis://" in polycache.SCHEMES:
        monkeypatch.setitem(sys.modules, "redis", None)
        with caches_of(LOCATION=dead_url()):
            with pytest.raises(ImportError, match="pip install redis"):
                get_redis_connection()
