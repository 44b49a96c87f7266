"""``polycache.django.Cache``: a Django cache backend over any polycache location.

.. code-block:: python

    CACHES = {
        "default": {
            "BACKEND": "polycache.django.Cache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "TIMEOUT": 300,
            "KEY_PREFIX": "site",
            "VERSION": 1,
            "OPTIONS": {"socket_timeout": 0.5},
        }
    }

A subclass of Django's ``BaseCache`` whose methods are native: key making and Django's key
checks (``CacheKeyWarning`` with Django's exact texts) run in Rust, and so does the call to
the backend. Timeouts, results and errors are Django's. Entries are stored as Django's
``RedisCache`` stores them, under Django's full keys (``{KEY_PREFIX}:{VERSION}:{key}``).
"""

from __future__ import annotations

import random
import threading
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    CacheKeyWarning,
    default_key_func,
    get_key_func,
)

from polycache._lock import Lock
from polycache._polycache import _DjangoCache, read_cache_settings
from polycache._scan import aiter_pages
from polycache._settings import InvalidOptionError
from polycache._structures import RedisStructures
from polycache._tags import aget_or_set_tagged, get_or_set_tagged
from polycache.exceptions import UnsupportedOperationError

__all__ = ["Cache", "InvalidOptionError", "RedisClient", "get_redis_connection"]

#: The store a ``memory://`` LOCATION without a name opens: shared by every such cache of
#: the process, as every ``LocMemCache`` without a LOCATION shares one.
DEFAULT_MEMORY_STORE = "django"

def _int_or(value: object, fallback: int) -> int:
    """``int(value)``, or ``fallback`` when that fails: Django's reading of its numbers."""
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (ValueError, TypeError):
        return fallback


def _ignore_exceptions() -> bool:
    """django-redis' ``DJANGO_REDIS_IGNORE_EXCEPTIONS`` setting: every cache fails open."""
    from django.conf import settings

    return settings.configured and bool(getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False))


class Cache(_DjangoCache, RedisStructures, BaseCache):  # type: ignore[misc]
    """A Django cache backend: ``"BACKEND": "polycache.django.Cache"``.

    ``LOCATION`` is a polycache URL (``memory://`` when empty; ``memory://`` without a store
    name opens the process-wide store ``memory://django``, as ``LocMemCache`` shares one
    store between its instances). A list of URLs that differ only in their host becomes
    one multi-host URL. ``OPTIONS``: ``MAX_ENTRIES`` and ``CULL_FREQUENCY`` (Django's cull,
    exact LRU on memory://; ignored on redis:// and memcached://, as Django does) and any
    lower-case URL option of the scheme, e.g. ``{"max_bytes": 64 << 20}`` or
    ``{"fail_open": True}``.
    ``SERIALIZER`` (``"pickle"``, the default and Django's format, ``"json"`` or ``"raw"``),
    ``SIGNING_KEY``, ``OLD_SIGNING_KEYS``, ``COMPRESS_MIN_SIZE`` and ``COMPRESS_LEVEL`` set
    how values are stored (see the security guide).

    Django's async cache API (``aget``, ``aset``, ...) is native too: each answers with an
    awaitable that polycache's runtime completes, with no worker thread per call.
    """

    __module__ = "polycache.django"

    def __new__(cls, location: Any, params: Mapping[str, Any]) -> Cache:
        # The core reads the settings as Django's backends read them (polycache::settings).
        read = read_cache_settings(
            {**params, "LOCATION": location},
            django_store=DEFAULT_MEMORY_STORE,
            ignore_exceptions=_ignore_exceptions(),
        )
        url, options = read["location"], read["options"]
        kwargs: dict[str, Any] = {
            "key_prefix": read.get("key_prefix", ""),
            "version": read.get("version", 1),
            "default_timeout": read["timeout"],
            "key_func": get_key_func(params.get("KEY_FUNCTION")),
            "default_key_func": default_key_func,
            "sentinel": DEFAULT_TIMEOUT,
            "warning": CacheKeyWarning,
            "custom_make_key": cls.make_key is not _DjangoCache.make_key,
            "custom_validate": cls.validate_key is not _DjangoCache.validate_key,
            "custom_make_and_validate": cls.make_and_validate_key is not _DjangoCache.make_and_validate_key,
        }
        # The core's error names the option and where it came from: a fault in OPTIONS
        # raises InvalidOptionError.
        cache: Cache = super().__new__(cls, url, options=options or None, **kwargs)
        cache.__url = _with_query(url, options.to_query())
        return cache

    def __init__(self, location: Any, params: Mapping[str, Any]) -> None:
        # Not BaseCache.__init__: the key settings live in the native half (read-only).
        options = params.get("OPTIONS") or {}
        self._max_entries = _int_or(params.get("max_entries", options.get("MAX_ENTRIES", 300)), 300)
        self._cull_frequency = _int_or(params.get("cull_frequency", options.get("CULL_FREQUENCY", 3)), 3)

    def get_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, *, tags: Any = None
    ) -> Any:
        """Django's ``get_or_set``; with ``tags=[...]`` the stored value carries the tags,
        their versions read before ``default`` is called."""
        if not tags:
            return super().get_or_set(key, default, timeout, version)
        return get_or_set_tagged(self, key, default, timeout, version, tags)

    async def aget_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, *, tags: Any = None
    ) -> Any:
        """``get_or_set``, awaitable."""
        if not tags:
            return await super().aget_or_set(key, default, timeout, version)
        return await aget_or_set_tagged(self, key, default, timeout, version, tags)

    def aiter_keys(self, search: str, itersize: int | None = None, version: Any = None) -> AsyncIterator[str]:
        """``iter_keys`` as an async iterator, each page awaited (django-redis has no async twin)."""
        return aiter_pages(self.iter_keys(search, itersize, version))

    def __repr__(self) -> str:
        return f"<polycache.django.Cache {self.location!r} key_prefix={self.key_prefix!r} version={self.version!r}>"

    def lock(
        self,
        key: Any,
        version: Any = None,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        client: Any = None,
        thread_local: bool = True,
    ) -> Lock:
        """django-redis' ``lock``: a :class:`polycache.Lock` (redis-py's semantics) on this
        cache's store, under ``make_key(key, version)``, on every backend. ``client`` is
        django-redis' raw connection argument: polycache has none to pass (``None`` only)."""
        if client is not None:
            raise TypeError("lock(client=...) names a django-redis client; polycache locks take none")
        full = str(self.make_key(key, version))
        native = self._polycache_native()._lock(full, timeout, None, True)
        return Lock(
            native, full, sleep=sleep, blocking=blocking, blocking_timeout=blocking_timeout, thread_local=thread_local
        )

    @property
    def client(self) -> RedisClient:
        """django-redis' ``cache.client``: ``cache.client.get_client(write=True)`` is a redis-py
        client of this cache's Redis server (see :func:`get_redis_connection`)."""
        client = self.__dict__.get("_client")
        if client is None:
            client = self.__dict__.setdefault("_client", RedisClient(self.__url))
        return client  # type: ignore[no-any-return]


def _with_query(url: str, query: str) -> str:
    """``url`` with ``query`` (the OPTIONS as URL query text) added to its query."""
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def get_redis_connection(alias: str = "default", write: bool = True) -> Any:
    """django-redis' ``get_redis_connection``: a redis-py client of the Redis server of the
    Django cache ``alias``, for what polycache does not do (pipelines, pub/sub, scripts).

    The client uses the cache's URL: host, port, database, user and password, TLS
    (``rediss://``, ``tls_ca``, ``insecure``), ``socket_timeout``, ``connect_timeout`` and
    ``max_connections``. ``write=False`` answers a client of one of the cache's replicas when
    its LOCATION lists several servers. A Cluster (``redis+cluster://``) answers a
    ``redis.cluster.RedisCluster``; Sentinel (``redis+sentinel://``) answers redis-py's
    ``Sentinel(...).master_for(name)`` (``slave_for`` with ``write=False``), which follows
    failovers as the cache does. Keys are the cache's full keys: ``cache.make_key(key)``.

    Raises ``ImportError`` when redis-py is not installed and
    :class:`~polycache.UnsupportedOperationError` when the cache is not a polycache cache on
    Redis.
    """
    from django.core.cache import caches

    cache = caches[alias]
    if not isinstance(cache, Cache):
        raise UnsupportedOperationError(
            f"cache {alias!r} is a {type(cache).__module__}.{type(cache).__qualname__}, not a "
            "polycache.django.Cache: get_redis_connection reads a polycache cache's LOCATION"
        )
    return cache.client.get_client(write=write)


class RedisClient:
    """The ``client`` of a :class:`Cache`, as django-redis' ``DefaultClient`` offers it:
    ``get_client(write=True)`` answers a redis-py client, one per server, made on first use.
    Thread-safe (redis-py clients are)."""

    __module__ = "polycache.django"

    def __init__(self, url: str) -> None:
        self.__url = url
        self.__lock = threading.Lock()
        self.__clients: dict[int, Any] = {}

    def __repr__(self) -> str:
        return "<polycache.django.RedisClient>"

    def get_client(self, write: bool = True) -> Any:
        """A redis-py client of the leader (``write=True``), or of a random replica when the
        LOCATION lists several servers (``write=False``)."""
        target = _RedisTarget.parse(self.__url)
        if target.sentinel:
            index = 0 if write else 1
        elif write or len(target.hosts) == 1 or target.cluster:
            index = 0
        else:
            index = random.randrange(1, len(target.hosts))
        with self.__lock:
            client = self.__clients.get(index)
            if client is None:
                client = self.__clients[index] = target.client(index)
        return client


class _RedisTarget:
    """A polycache Redis URL, read as redis-py's arguments."""

    def __init__(self, scheme: str, hosts: list[tuple[str, int]], path: str, kwargs: dict[str, Any]) -> None:
        self.scheme, self.hosts, self.path, self.kwargs = scheme, hosts, path, kwargs
        self.cluster = scheme.endswith("+cluster")
        self.sentinel = scheme.endswith("+sentinel")

    @classmethod
    def parse(cls, url: str) -> _RedisTarget:
        scheme, _, rest = url.partition("://")
        scheme = scheme.lower()
        if scheme not in (
            "redis",
            "rediss",
            "unix",
            "redis+cluster",
            "rediss+cluster",
            "redis+sentinel",
            "rediss+sentinel",
        ):
            raise UnsupportedOperationError(
                f"this cache is on {scheme}://, not Redis: a redis-py client needs a redis://, "
                "rediss://, unix://, redis+cluster:// or redis+sentinel:// LOCATION"
            )
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        netloc, tail = rest[:end], rest[end:]
        path, _, query = tail.partition("?")
        userinfo, at, hostlist = netloc.rpartition("@")
        kwargs: dict[str, Any] = {}
        if at:
            user, _, password = userinfo.partition(":")
            if user:
                kwargs["username"] = urllib.parse.unquote(user)
            if password:
                kwargs["password"] = urllib.parse.unquote(password)
        options = dict(urllib.parse.parse_qsl(query))
        if scheme.startswith("rediss"):
            kwargs["ssl"] = True
            if "tls_ca" in options:
                kwargs["ssl_ca_certs"] = options["tls_ca"]
            if options.get("insecure", "").lower() in ("true", "1", "yes", "on"):
                kwargs["ssl_cert_reqs"] = None
                kwargs["ssl_check_hostname"] = False
        for ours, theirs in (("socket_timeout", "socket_timeout"), ("connect_timeout", "socket_connect_timeout")):
            if ours in options:
                text = options[ours].strip().lower()
                kwargs[theirs] = None if text == "none" else float(text)
        if "max_connections" in options:
            kwargs["max_connections"] = int(options["max_connections"])
        hosts: list[tuple[str, int]] = []
        if scheme == "unix":
            kwargs["unix_socket_path"] = urllib.parse.unquote(path)
            kwargs["db"] = int(options.get("db", 0))
        else:
            default_port = "26379" if scheme.endswith("+sentinel") else "6379"
            for host in hostlist.split(","):
                name, port = host, default_port
                if host.startswith("["):
                    name, _, after = host[1:].partition("]")
                    port = after[1:] or port
                elif ":" in host:
                    name, _, port = host.rpartition(":")
                hosts.append((name or "127.0.0.1", int(port)))
            if scheme.endswith("+sentinel"):
                # /<master name>[/db]; the sentinels' own credentials are options.
                master, _, db = path.strip("/").partition("/")
                kwargs["service_name"] = urllib.parse.unquote(master)
                kwargs["db"] = int(db or options.get("db", "0"))
                for ours, theirs in (("sentinel_username", "username"), ("sentinel_password", "password")):
                    if ours in options:
                        kwargs.setdefault("sentinel_kwargs", {})[theirs] = options[ours]
            elif not scheme.endswith("+cluster"):
                db = path.strip("/") or options.get("db", "0")
                kwargs["db"] = int(db)
        return cls(scheme, hosts or [("", 0)], path, kwargs)

    def client(self, index: int) -> Any:
        try:
            import redis
        except ImportError as err:
            raise ImportError(
                "get_redis_connection needs redis-py, which is not installed: pip install redis"
            ) from err
        if self.cluster:
            from redis.cluster import ClusterNode, RedisCluster

            nodes = [ClusterNode(host, port) for host, port in self.hosts]
            return RedisCluster(startup_nodes=nodes, **self.kwargs)
        if self.sentinel:
            from redis.sentinel import Sentinel

            kwargs = dict(self.kwargs)
            name = kwargs.pop("service_name")
            sentinel_kwargs = kwargs.pop("sentinel_kwargs", {})
            if kwargs.get("ssl"):
                tls = {k: v for k, v in kwargs.items() if k.startswith("ssl")}
                sentinel_kwargs = {**tls, **sentinel_kwargs}
            sentinels = Sentinel(self.hosts, sentinel_kwargs=sentinel_kwargs, **kwargs)
            return sentinels.master_for(name) if index == 0 else sentinels.slave_for(name)
        if self.scheme == "unix":
            return redis.Redis(**self.kwargs)
        host, port = self.hosts[index]
        return redis.Redis(host=host, port=port, **self.kwargs)
