"""Django's own cache tests, run against ``polycache.django.Cache``.

``tests/cache/`` of the installed Django's source distribution (extracted by
``run_suite.py``, never committed) is imported as the package ``cache``. Every class here
subclasses the Django test class of the Django backend that is the analogue of the
location's scheme, with ``CACHES`` pointed at polycache:

=============  ==================================================================
scheme         Django's tests it runs
=============  ==================================================================
memory://      ``LocMemCacheTests`` (``BaseCacheTests`` + the LocMem extras)
file://        ``FileBasedCacheTests``
sqlite://,     ``BaseCacheTests`` (``DBCacheTests`` adds only tests of Django's own
postgres://    cache table: ``createcachetable``, query counts, its cursor)
redis://       ``RedisCacheTests`` (without the cull caches, as Django)
memcached://   ``BaseMemcachedTests`` (without the cull caches, as Django)
dummy://       ``DummyCacheTests`` and ``AsyncDummyCacheTests``
=============  ==================================================================

plus, on every scheme but dummy://, the backend-independent classes that use a cache
(middleware, ``cache_page``, i18n keys, template responses, closing, custom key
validation). Tests that read a Django backend's private attributes (``_cache``,
``_expire_info``, ``_lock``, ``_key_to_file``, the Redis/pymemcache client objects) are
skipped with that reason; each skip and override is listed in ``RELAXATIONS`` below and in
docs/python/django.md.
"""

from __future__ import annotations

import inspect
import os
import shutil
import time
import unittest
from collections.abc import Callable
from typing import Any

from cache import tests as dj  # type: ignore[import-not-found]
from cache import tests_async as dj_async
from cache.closeable_cache import CloseHookMixin  # type: ignore[import-not-found]
from cache.liberal_backend import LiberalKeyValidationMixin  # type: ignore[import-not-found]
from django.conf import settings
from django.test import TestCase, override_settings
from django.test.signals import setting_changed

import polycache.django

LOCATION = os.environ["POLYCACHE_SUITE_LOCATION"]
SCHEME = LOCATION.partition("://")[0]
BACKEND = "polycache.django.Cache"


class CloseableCache(CloseHookMixin, polycache.django.Cache):  # type: ignore[misc]
    """``cache.closeable_cache.CacheClass`` with polycache instead of ``LocMemCache``."""


class LiberalCache(LiberalKeyValidationMixin, polycache.django.Cache):  # type: ignore[misc]
    """``cache.liberal_backend.CacheClass`` with polycache instead of ``LocMemCache``."""


#: Every Django test skipped or overridden here, with the reason; by Django test class.
RELAXATIONS: dict[str, dict[str, str]] = {}


def _record(owner: str, name: str, reason: str) -> None:
    RELAXATIONS.setdefault(owner, {})[name] = reason


def skip(cls: type, reasons: dict[str, str]) -> None:
    """Skips the named tests of ``cls`` (each reads a Django backend's internals)."""
    for name, reason in reasons.items():
        if not hasattr(cls, name):
            raise AssertionError(f"{cls.__name__} has no test {name}: is the Django version new?")

        def skipped(self: Any) -> None:
            raise AssertionError("not run")

        skipped.__name__ = name
        setattr(cls, name, unittest.skip(reason)(skipped))
        _record(cls.__name__, name, f"skipped: {reason}")


def known_failures(cls: type, reasons: dict[str, str]) -> None:
    """Marks tests that fail for a reason in the core as expected failures.

    They still run: should one pass (the core changed), the run fails as an unexpected
    success, and the mark has to go.
    """
    for name, reason in reasons.items():
        setattr(cls, name, unittest.expectedFailure(getattr(cls, name)))
        _record(cls.__name__, name, f"expected failure, needs the core: {reason}")


def with_caches(func: Callable[..., Any], caches: dict[str, dict[str, Any]], retry: bool = False) -> Any:
    """A Django test method that carries its own LocMem ``CACHES`` override, with polycache's."""
    test = override_settings(CACHES=caches)(inspect.unwrap(func))
    return dj.retry()(test) if retry else test


def suite_caches(exclude: set[str] | None = None, **params: Any) -> dict[str, dict[str, Any]]:
    """Django's ``caches_setting_for_tests`` with polycache at ``LOCATION``."""
    params.setdefault("LOCATION", LOCATION)
    setting: dict[str, dict[str, Any]] = dj.caches_setting_for_tests(BACKEND=BACKEND, exclude=exclude, **params)
    if SCHEME == "memory":
        # LocMem bounds each instance over a shared dict; a memory:// store takes the bounds
        # of its first opener, so each culling cache gets a store of its own.
        for alias in ("cull", "zero_cull"):
            if alias in setting:
                setting[alias]["LOCATION"] = f"memory://suite-{alias}"
    return setting


def single(location: str = LOCATION, **params: Any) -> dict[str, dict[str, Any]]:
    return {"default": {"BACKEND": BACKEND, "LOCATION": location, **params}}


# ---------------------------------------------------------------------------------------
# The backend classes.

if SCHEME == "memory":

    def lru_caches(test: str) -> dict[str, dict[str, Any]]:
        # Django's LRU tests find their LocMem store emptied by the previous test's tearDown
        # (it clears the same store); a memory:// store takes the bounds of its first opener,
        # so each LRU test gets an empty store of its own instead.
        return suite_caches(LOCATION=f"memory://suite-{test}", OPTIONS={"MAX_ENTRIES": 9})

    @override_settings(CACHES=suite_caches())
    class PolycacheLocMemCacheTests(dj.LocMemCacheTests):  # type: ignore[misc]
        def setUp(self) -> None:
            # LocMemCacheTests.setUp points the other aliases' private dicts at the default
            # one; memory:// caches of one LOCATION share their store already.
            super(dj.LocMemCacheTests, self).setUp()

        test_multiple_caches = with_caches(
            dj.LocMemCacheTests.test_multiple_caches,
            {
                "default": {"BACKEND": BACKEND, "LOCATION": "memory://"},
                "other": {"BACKEND": BACKEND, "LOCATION": "memory://other"},
            },
        )

        test_lru_get = with_caches(dj.LocMemCacheTests.test_lru_get, lru_caches("lru-get"))
        test_lru_set = with_caches(dj.LocMemCacheTests.test_lru_set, lru_caches("lru-set"))
        test_lru_incr = with_caches(dj.LocMemCacheTests.test_lru_incr, lru_caches("lru-incr"))

    skip(
        PolycacheLocMemCacheTests,
        {
            "test_locking_on_pickle": "reads LocMemCache._lock (polycache pickles before any lock is taken)",
            "test_incr_decr_timeout": "reads LocMemCache._expire_info",
        },
    )
    _record("PolycacheLocMemCacheTests", "setUp", "overridden: the aliases share the memory:// store")
    _record("PolycacheLocMemCacheTests", "test_multiple_caches", "overridden: memory:// and memory://other")

elif SCHEME == "file":

    @override_settings(CACHES=suite_caches())
    class PolycacheFileBasedCacheTests(dj.FileBasedCacheTests):  # type: ignore[misc]
        def setUp(self) -> None:
            # FileBasedCacheTests.setUp with a file:// URL instead of the bare directory.
            super(dj.FileBasedCacheTests, self).setUp()
            self.dirname = self.mkdtemp()
            for params in settings.CACHES.values():
                params["LOCATION"] = f"file://{self.dirname}"
            setting_changed.send(self.__class__, setting="CACHES", enter=False)

        def tearDown(self) -> None:
            super(dj.FileBasedCacheTests, self).tearDown()
            for attempt in range(50):
                try:
                    shutil.rmtree(self.dirname)
                    return
                except FileNotFoundError:
                    return
                except OSError:
                    if attempt == 49:
                        raise
                    time.sleep(0.02)

        # FileBasedCacheTests.test_touch freezes Python's time in Django's filebased module;
        # polycache's clock is the OS's, so the real-time BaseCacheTests.test_touch runs.
        test_touch = dj.BaseCacheTests.test_touch

        def test_cache_dir_permissions(self) -> None:
            # FileBasedCacheTests' test with a file:// URL instead of a pathlib.Path.
            os.rmdir(self.dirname)
            dir_path = os.path.join(self.dirname, "nested", "filebasedcache")
            for params in settings.CACHES.values():
                params["LOCATION"] = f"file://{dir_path}"
            setting_changed.send(self.__class__, setting="CACHES", enter=False)
            dj.cache.set("foo", "bar")
            self.assertIs(os.path.exists(dir_path), True)
            for directory in (dir_path, os.path.dirname(dir_path), os.path.dirname(os.path.dirname(dir_path))):
                with self.subTest(directory=directory):
                    self.assertEqual(os.stat(directory).st_mode & 0o777, 0o700)

    skip(
        PolycacheFileBasedCacheTests,
        {
            "test_get_ignores_enoent": "calls FileBasedCache._key_to_file",
            "test_empty_cache_file_considered_expired": "calls FileBasedCache._key_to_file and _is_expired",
            "test_get_does_not_ignore_non_filenotfound_exceptions": "mocks Python's open(); polycache reads files in Rust",
            "test_has_key_race_handling": "mocks Python's open(); polycache reads files in Rust",
        },
    )
    _record(
        "PolycacheFileBasedCacheTests",
        "tearDown",
        "overridden: retries removing the directory, which a dropped cache's reconcile thread "
        "may still be writing .locks/ into",
    )
    _record("PolycacheFileBasedCacheTests", "setUp", "overridden: LOCATION is file://<dir>, not <dir>")
    _record("PolycacheFileBasedCacheTests", "test_touch", "overridden: BaseCacheTests.test_touch (real time)")
    _record("PolycacheFileBasedCacheTests", "test_cache_dir_permissions", "overridden: file:// URL, not a Path")

elif SCHEME in ("sqlite", "postgres", "postgresql"):

    @override_settings(CACHES=suite_caches())
    class PolycacheSqlCacheTests(dj.BaseCacheTests, TestCase):  # type: ignore[misc]
        pass

    _record(
        "DBCacheTests",
        "*",
        "not run: its own tests check Django's cache table (createcachetable, ORM query counts, "
        "its cursor, routers); polycache's SQL backends keep their own table",
    )

elif SCHEME in ("redis", "rediss", "unix"):

    @override_settings(CACHES=suite_caches(exclude=dj.redis_excluded_caches))
    class PolycacheRedisCacheTests(dj.RedisCacheTests):  # type: ignore[misc]
        # RedisCacheTests is skipped unless Django's RedisCache is configured.
        __unittest_skip__ = False
        # RedisCacheTests expects redis-py's ResponseError; polycache raises what
        # BaseCacheTests expects of every backend (NotAnIntegerError, a TypeError).
        incr_decr_type_error = TypeError

    skip(
        PolycacheRedisCacheTests,
        {
            name: "reads django.core.cache.backends.redis.RedisCacheClient / redis-py internals"
            for name in (
                "test_incr_write_connection",
                "test_cache_client_class",
                "test_get_connection_pool_index",
                "test_get_connection_pool",
                "test_get_client",
                "test_serializer_dumps",
                "test_redis_pool_options",
            )
        }
        | {"test_get_backend_timeout_method": "RedisCache's own get_backend_timeout (relative seconds)"},
    )
    _record("PolycacheRedisCacheTests", "incr_decr_type_error", "TypeError (BaseCacheTests' value)")

elif SCHEME == "memcached":

    @override_settings(CACHES=suite_caches(exclude=dj.memcached_excluded_caches))
    class PolycacheMemcachedCacheTests(dj.BaseMemcachedTests, TestCase):  # type: ignore[misc]
        base_params = {"BACKEND": BACKEND, "LOCATION": LOCATION}
        incr_decr_type_error = TypeError
        # Django's memcached backends raise InvalidCacheKey for keys memcached refuses;
        # polycache hashes such keys, so it warns like every other Django backend.
        _perform_invalid_key_test = dj.BaseCacheTests._perform_invalid_key_test
        test_invalid_with_version_key_length = dj.BaseCacheTests.test_invalid_with_version_key_length

    skip(
        PolycacheMemcachedCacheTests,
        {
            "test_location_multiple_servers": "reads BaseMemcachedCache._servers",
            "test_close": "mocks the memcached client class's disconnect_all",
            "test_set_many_returns_failing_keys": "mocks the memcached client class's set_multi",
        },
    )
    _record("PolycacheMemcachedCacheTests", "incr_decr_type_error", "TypeError (BaseCacheTests' value)")
    _record(
        "PolycacheMemcachedCacheTests",
        "_perform_invalid_key_test",
        "BaseCacheTests' (a CacheKeyWarning): polycache stores such keys hashed instead of raising",
    )

elif SCHEME == "dummy":

    @override_settings(CACHES=single())
    class PolycacheDummyCacheTests(dj.DummyCacheTests):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single())
    class PolycacheAsyncDummyCacheTests(dj_async.AsyncDummyCacheTests):  # type: ignore[misc]
        pass


# ---------------------------------------------------------------------------------------
# The backend-independent classes that use the default cache (LocMemCache in Django).

if SCHEME != "dummy":

    @override_settings(CACHES=single())
    class PolycacheCacheUtils(dj.CacheUtils):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single(KEY_PREFIX="cacheprefix"))
    class PolycachePrefixedCacheUtils(dj.PrefixedCacheUtils):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single())
    class PolycacheCacheHEADTest(dj.CacheHEADTest):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single())
    class PolycacheCacheI18nTest(dj.CacheI18nTest):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single(KEY_PREFIX="cacheprefix"))
    class PolycachePrefixedCacheI18nTest(dj.PrefixedCacheI18nTest):  # type: ignore[misc]
        pass

    @override_settings(
        CACHES={
            "default": {"BACKEND": BACKEND, "LOCATION": LOCATION},
            # Django's "other" is a second LocMem store; here the same location under a
            # key prefix of its own (memory://: a store of its own).
            "other": {
                "BACKEND": BACKEND,
                "LOCATION": "memory://other" if SCHEME == "memory" else LOCATION,
                "KEY_PREFIX": "other",
                "TIMEOUT": "1",
            },
        }
    )
    class PolycacheCacheMiddlewareTest(dj.CacheMiddlewareTest):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single())
    class PolycacheTestWithTemplateResponse(dj.TestWithTemplateResponse):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single())
    class PolycacheDefaultNonExpiringCacheKeyTests(dj.DefaultNonExpiringCacheKeyTests):  # type: ignore[misc]
        test_caches_set_with_timeout_as_none_has_correct_default_timeout = with_caches(
            dj.DefaultNonExpiringCacheKeyTests.test_caches_set_with_timeout_as_none_has_correct_default_timeout,
            single(TIMEOUT=None),
        )

    skip(
        PolycacheDefaultNonExpiringCacheKeyTests,
        {
            "test_caches_with_unset_timeout_set_expiring_key": "reads LocMemCache._expire_info",
            "test_caches_set_with_timeout_as_none_set_non_expiring_key": "reads LocMemCache._expire_info",
        },
    )

    @override_settings(CACHES=single(BACKEND="polycache_suite.CloseableCache"))
    class PolycacheCacheClosingTests(dj.CacheClosingTests):  # type: ignore[misc]
        pass

    @override_settings(CACHES=single(BACKEND="polycache_suite.LiberalCache"))
    class PolycacheCustomCacheKeyValidationTests(dj.CustomCacheKeyValidationTests):  # type: ignore[misc]
        pass
