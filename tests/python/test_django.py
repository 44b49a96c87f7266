"""``polycache.django.Cache``: Django's key rules, timeouts, results and errors.

Django's own cache test suite runs separately (scripts/django-suite.sh); these tests pin the
details that suite does not reach, and compare with Django's ``LocMemCache`` where Django
defines the answer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import sys
import threading
import time
import types
import warnings
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure()
django.setup()

from django.core.cache import caches  # noqa: E402
from django.core.cache.backends.base import DEFAULT_TIMEOUT, CacheKeyWarning, default_key_func  # noqa: E402
from django.core.cache.backends.locmem import LocMemCache  # noqa: E402
from django.test import override_settings  # noqa: E402

import polycache  # noqa: E402
import polycache.django  # noqa: E402
from polycache.django import Cache, InvalidOptionError  # noqa: E402

_stores = itertools.count()


def store() -> str:
    """A memory store no other test uses."""
    return f"memory://django-test-{next(_stores)}"


def make(location: str | None = None, **params: Any) -> Cache:
    return Cache(store() if location is None else location, params)


def locmem(**params: Any) -> Any:
    return LocMemCache(f"django-test-locmem-{next(_stores)}", params)


def key_warnings(fn: Any, *args: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn(*args)
        except ValueError:
            pass  # incr/decr of a missing key: the warnings came first
    assert all(issubclass(w.category, CacheKeyWarning) for w in caught)
    return [str(w.message) for w in caught]


# --- Keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"KEY_PREFIX": "site"}, {"VERSION": 7}, {"KEY_PREFIX": "p:q", "VERSION": -3}, {"KEY_PREFIX": 5}],
)
@pytest.mark.parametrize("key", ["k", "ключ", 42, ("a", 1)])
def test_make_key_is_djangos(params: dict[str, Any], key: Any) -> None:
    ours, theirs = make(**params), locmem(**params)
    assert ours.make_key(key) == theirs.make_key(key)
    assert ours.make_key(key, version=3) == theirs.make_key(key, version=3)
    assert ours.make_key(key, version="x") == theirs.make_key(key, version="x")


BAD_KEYS = [
    "key with spaces",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "a" * 247,
    "a" * 248,
    "é" * 248,  # 248 characters, 496 bytes: Django counts characters
    "b" * 300 + " and a space",
    "fine",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: repr(k[:20]))
@pytest.mark.parametrize("op", ["get", "set", "add", "delete", "has_key", "touch", "incr", "get_many", "set_many"])
def test_key_warnings_are_djangos(key: str, op: str) -> None:
    ours, theirs = make(), locmem()
    for c in (ours, theirs):
        c.set("seed", 1)

    def call(c: Any) -> list[str]:
        if op == "get_many":
            return key_warnings(c.get_many, [key, "seed"])
        if op == "set_many":
            return key_warnings(c.set_many, {key: 1, "seed": 2})
        if op in ("set", "add"):
            return key_warnings(getattr(c, op), key, 1)
        return key_warnings(getattr(c, op), key)

    assert call(ours) == call(theirs)


def test_key_prefix_with_a_space_warns_on_every_key() -> None:
    ours, theirs = make(KEY_PREFIX="my site"), locmem(KEY_PREFIX="my site")
    assert key_warnings(ours.get, "k") == key_warnings(theirs.get, "k")
    assert key_warnings(ours.get, "k") == [
        "Cache key contains characters that will cause errors if used with memcached: 'my site:1:k'"
    ]


def test_key_warning_is_an_error_under_warnings_as_errors() -> None:
    c = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        with pytest.raises(CacheKeyWarning, match="key with space"):
            c.set("key with space", 1)


def custom_key_func(key: Any, key_prefix: str, version: Any) -> str:
    return f"custom|{key_prefix}|{version}|{key}"


def test_custom_key_function_callable_and_dotted_path(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("polycache_test_key_functions")
    module.custom_key_func = custom_key_func  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    name = store()
    custom = Cache(name, {"KEY_FUNCTION": custom_key_func, "KEY_PREFIX": "x"})
    dotted = Cache(name, {"KEY_FUNCTION": "polycache_test_key_functions.custom_key_func", "KEY_PREFIX": "x"})
    plain = Cache(name, {"KEY_PREFIX": "x"})
    assert custom.make_key("k") == "custom|x|1|k"
    custom.set("k", "v")
    assert custom.get("k") == "v"
    assert plain.get("k") is None
    # Stored under exactly the key the function made: a plain cache reads it by that key.
    raw = Cache(name, {"KEY_FUNCTION": lambda k, p, v: k})
    assert raw.get("custom|x|1|k") == "v"
    assert dotted.key_func is custom_key_func
    assert dotted.get("k") == "v"


def test_custom_key_function_goes_through_the_cache() -> None:
    # Statistics and the value size limit apply to keys a KEY_FUNCTION made.
    c = make(KEY_FUNCTION=custom_key_func, OPTIONS={"max_value_size": 100})
    c.set("k", "v")
    c.set_many({"a": 1, "b": 2})
    assert c.get("k") == "v"
    assert c.get("missing") is None
    assert c.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
    assert c.delete("k") is True
    c.delete_many(["a"])
    stats = c.stats()
    assert (stats["hits"], stats["misses"], stats["sets"], stats["deletes"]) == (3, 2, 3, 2)
    with pytest.raises(polycache.ValueTooLargeError):
        c.set("big", "x" * 1000)
    with pytest.raises(polycache.ValueTooLargeError):
        c.set_many({"small": 1, "big": "x" * 1000})
    assert c.get_many(["big", "small"]) == {}


@pytest.mark.skipif("redis://" not in polycache.SCHEMES, reason="this wheel was built without the redis feature")
def test_custom_key_function_fails_open() -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    import servers

    dead = f"redis://127.0.0.1:{servers.free_port()}/0"
    c = Cache(dead, {"KEY_FUNCTION": custom_key_func, "OPTIONS": {"fail_open": True, "breaker_cooldown": 60}})
    assert c.get("k", "default") == "default"
    c.set("k", 1)  # reported as not stored, not raised
    assert c.get_many(["k", "j"]) == {}
    assert c.add("k", 1) is False
    assert c.stats()["errors"] >= 4
    strict = Cache(dead, {"KEY_FUNCTION": custom_key_func})
    with pytest.raises(polycache.ConnectionError):
        strict.get("k")


def test_custom_key_function_keys_are_validated() -> None:
    c = make(KEY_FUNCTION=lambda k, p, v: k + " !")
    assert key_warnings(c.get, "k") == [
        "Cache key contains characters that will cause errors if used with memcached: 'k !'"
    ]


def test_key_func_can_be_replaced_and_restored() -> None:
    c = make()
    c.set("k", 1)
    c.key_func = lambda k, p, v: f"other:{k}"
    assert c.get("k") is None
    c.set("k", 2)
    c.key_func = default_key_func
    assert c.get("k") == 1
    with pytest.raises(TypeError, match="callable"):
        c.key_func = "not callable"  # type: ignore[assignment]


class LiberalCache(Cache):
    def validate_key(self, key: str) -> None:
        pass


class ShoutingCache(Cache):
    def make_key(self, key: Any, version: Any = None) -> Any:
        return f"SHOUT:{str(key).upper()}"


def test_subclass_validate_key_and_make_key_are_used() -> None:
    liberal = LiberalCache(store(), {})
    assert key_warnings(liberal.set, "a key with spaces " * 20, 1) == []
    name = store()
    shouting = ShoutingCache(name, {})
    shouting.set("k", 1)
    assert Cache(name, {"KEY_FUNCTION": lambda k, p, v: k}).get("SHOUT:K") == 1
    assert shouting.get("k") == 1
    assert shouting.get_many(["k", "j"]) == {"k": 1}


def test_get_with_one_argument_and_with_more_agree() -> None:
    # `get(key)` has an entry of its own (no generic argument parsing); every other form of
    # the call goes through the full signature. Both make and check the key alike.
    import inspect

    name = store()
    c = Cache(name, {"KEY_PREFIX": "p", "VERSION": 3})
    c.set("k", "v3")
    c.set("k", "v2", version=2)
    c.set(42, "int key")
    c.set(3.5, "float key")
    for key, value in [("k", "v3"), (42, "int key"), (3.5, "float key"), ("absent", None)]:
        assert c.get(key) == c.get(key, None) == c.get(key=key) == c.get(key, version=3) == value
    assert c.get("k", version=2) == "v2"
    assert c.get("absent", 5) == 5
    bad = "key with spaces"
    assert key_warnings(c.get, bad) == key_warnings(lambda k: c.get(k, None), bad) != []
    # A version that is not an int, a custom key function and an overridden make_key take
    # the Python key path, on the one-argument call too.
    odd = Cache(name, {"KEY_PREFIX": "p", "VERSION": "3"})
    assert odd.get("k") == odd.get("k", None) == "v3"
    custom = Cache(name, {"KEY_FUNCTION": lambda k, p, v: f"p:3:{k}"})
    assert custom.get("k") == custom.get("k", None) == "v3"
    shouting = ShoutingCache(name, {})
    shouting.set("k", "loud")
    assert Cache(name, {"KEY_FUNCTION": lambda k, p, v: k}).get("SHOUT:K") == "loud"
    assert shouting.get("k") == shouting.get("k", None) == "loud"
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'key'"):
        c.get()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        c.get("k", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="doesn't apply to a 'object' object"):
        polycache._polycache._DjangoCache.get(object(), "k")  # type: ignore[arg-type]
    assert str(inspect.signature(Cache.get)) == "(self, /, key, default=None, version=None)"


def test_non_str_keys_and_versions_follow_djangos_formatting() -> None:
    ours, theirs = make(), locmem()
    for c in (ours, theirs):
        c.set(5, "five")
        c.set("5", "five-str")
        c.set("v", "one", version="1")
    assert ours.get(5) == theirs.get(5) == "five-str"  # "%s" makes 5 and "5" one key
    assert ours.get("v", version=1) == "one"
    assert ours.get_many([5, "v"]) == {5: "five-str", "v": "one"}
    assert 5 in ours


def test_version_setting_and_per_call_version() -> None:
    name = store()
    v1, v2 = Cache(name, {}), Cache(name, {"VERSION": 2})
    v1.set("k", "one")
    v2.set("k", "two")
    assert v1.get("k", version=2) == "two"
    assert v2.get("k", version=1) == "one"
    assert v1.incr_version("k") == 2
    assert v2.get("k") == "one"
    assert v1.decr_version("k", version=2) == 1
    assert v1.get("k") == "one"
    with pytest.raises(ValueError):
        v1.incr_version("absent")


def test_same_entries_as_polycache_cache_and_other_workers() -> None:
    name = store()
    dj = Cache(name, {"KEY_PREFIX": "site", "VERSION": 3})
    pc = polycache.Cache(name, key_prefix="site", version=3)
    dj.set("k", {"a": 1})
    assert pc.get("k") == {"a": 1}
    pc.set("n", 41)
    assert dj.incr("n") == 42
    assert dj.make_key("k") == pc.make_key("k") == "site:3:k"


# --- Timeouts ---------------------------------------------------------------------------


def test_timeouts_in_djangos_words() -> None:
    c = make(TIMEOUT=1)
    c.set("default", 1)
    c.set("django-default", 1, DEFAULT_TIMEOUT)
    c.set("polycache-default", 1, polycache.DEFAULT_TIMEOUT)
    c.set("never", 1, None)
    c.set("long", 1, 60.5)
    c.set("zero", 1)
    c.set("zero", 1, 0)
    c.set("negative", 1)
    c.set("negative", 1, -5)
    assert c.get("zero") is None and c.get("negative") is None
    assert c.add("zero", 1, 0) is True and c.get("zero") is None
    time.sleep(1.3)
    assert c.get_many(["default", "django-default", "polycache-default", "never", "long"]) == {"never": 1, "long": 1}


def test_timeout_setting_parsing_matches_basecache() -> None:
    for timeout, expected in [("7", 7), (7.9, 7), (None, None), ("junk", 300), (0, 0)]:
        assert make(TIMEOUT=timeout).default_timeout == locmem(TIMEOUT=timeout).default_timeout == expected
    assert make().default_timeout == 300
    assert make(TIMEOUT=None).get_backend_timeout() is None


def test_zero_default_timeout_stores_nothing() -> None:
    c = make(TIMEOUT=0)
    c.set("k", 1)
    assert c.get("k") is None
    c.set("k", 1, 10)
    assert c.get("k") == 1


def test_touch() -> None:
    c = make()
    c.set("k", 1, 1)
    assert c.touch("k", None) is True
    assert c.touch("absent") is False
    time.sleep(1.2)
    assert c.get("k") == 1
    assert c.touch("k", 0) is True
    assert c.get("k") is None


def test_bad_timeout_type() -> None:
    with pytest.raises(TypeError, match="timeout"):
        make().set("k", 1, "soon")


# --- Results ----------------------------------------------------------------------------


def test_results_are_djangos() -> None:
    ours, theirs = make(), locmem()
    for c in (ours, theirs):
        assert c.set("k", 1) is None
    for c in (ours, theirs):
        assert c.add("k", 2) is False
        assert c.add("j", 2) is True
        assert c.get_many(["k", "j", "x"]) == {"k": 1, "j": 2}
        assert c.set_many({"a": 1, "b": 2}) == []
        assert c.delete("a") is True
        assert c.delete("a") is False
        assert c.delete_many(["b", "absent"]) is None
        assert c.get_or_set("g", lambda: "made") == "made"
        assert c.get_or_set("g", "other") == "made"
        assert c.incr("k", 10) == 11
        assert c.decr("k") == 10
        assert c.has_key("k") is True
        assert ("nope" in c) is False
        assert c.clear() is None
        assert c.get("k", "dflt") == "dflt"


def test_missing_and_non_integer_incr_match_locmem() -> None:
    ours, theirs = make(), locmem()
    for c in (ours, theirs):
        c.set("s", "text")
    for c in (ours, theirs):
        with pytest.raises(ValueError):
            c.incr("absent")
        with pytest.raises(TypeError):
            c.incr("s")


def test_memory_hits_share_immutable_objects_and_raise_pickles_errors() -> None:
    # Django's face reads memory:// hits through polycache.Cache's shared decoding: an
    # immutable value read twice in a row is kept, so later reads answer the object an
    # earlier read decoded; a mutable one is decoded anew (a caller's mutation never reaches
    # the next caller), and stored bytes that are no pickle still raise pickle's own error.
    location = store()
    c = make(location)
    c.set("text", "a" * 16)
    c.set("tuple", ("a", 1, None))
    c.set("list", [1, 2])
    for key in ("text", "tuple"):
        c.get(key)  # the first miss is noted, the next read keeps its object
        assert c.get(key) is c.get(key)
    first = c.get("list")
    assert first == [1, 2] and c.get("list") is not first
    first.append(3)
    assert c.get("list") == [1, 2]
    polycache.Cache(location, serializer="raw").set("bad", b"not a pickle")
    with pytest.raises(pickle.UnpicklingError):
        c.get("bad")
    with pytest.raises(pickle.UnpicklingError):
        c.get("bad")


@pytest.mark.parametrize(("old", "new"), [("aaaa", "bbbb"), (b"aaaa", b"bbbb"), (("a", 1), ("b", 2))])
def test_memory_hits_see_a_value_rewritten_in_place(old: Any, new: Any) -> None:
    # Django's face shares decoded objects through the same table as polycache.Cache: a
    # value rewritten under the same key at the same length is read back new, by every
    # reader.
    c = make()
    for round_ in range(4):
        for value in (old, new):
            if round_ % 2:
                c.delete("k")  # freed first: the new entry may take the old one's address
            c.set("k", value)
            assert c.get("k") == value
            assert c.get("k") == value
            assert c.get("k", "absent") == value
            assert c.get_many(["k"]) == {"k": value}
            assert asyncio.run(c.aget("k")) == value


def test_unpicklable_values_raise_pickles_error_and_store_nothing() -> None:
    ours, theirs = make(), locmem()

    class Unpicklable:
        def __getstate__(self) -> Any:
            raise pickle.PicklingError("no")

    for value in (Unpicklable(), lambda: 1, threading.Lock()):
        for op in ("set", "add"):
            with pytest.raises(Exception) as ours_err:
                getattr(ours, op)("k", value)
            with pytest.raises(Exception) as theirs_err:
                getattr(theirs, op)("k", value)
            assert type(ours_err.value) is type(theirs_err.value)
            assert not ours.has_key("k")
    with pytest.raises(pickle.PicklingError):
        ours.set_many({"a": 1, "b": Unpicklable()})
    assert ours.get_many(["a", "b"]) == {}


def test_get_many_keeps_the_callers_key_objects() -> None:
    c = make()
    c.set_many({1: "one", "2": "two"})
    assert c.get_many([1, 2, "2"]) == {1: "one", 2: "two", "2": "two"}


def test_stats_count_django_calls() -> None:
    c = make()
    c.set("k", 1)
    c.get("k")
    c.get("absent")
    assert {k: c.stats()[k] for k in ("hits", "misses", "sets")} == {"hits": 1, "misses": 1, "sets": 1}


def test_dummy_location_stores_and_serializes_nothing() -> None:
    c = Cache("dummy://", {})
    c.set("k", lambda: 1)  # DummyCache does not pickle either
    assert c.add("k", 1) is True
    assert c.get("k") is None
    with pytest.raises(ValueError):
        c.incr("k")
    assert key_warnings(c.get, "a b") == [
        "Cache key contains characters that will cause errors if used with memcached: ':1:a b'"
    ]


# --- Configuration ----------------------------------------------------------------------


def test_empty_location_is_a_shared_store_like_locmem() -> None:
    a, b = Cache("", {}), Cache("memory://", {"KEY_PREFIX": "b"})
    a.set("shared-k", 1)
    assert Cache("", {}).get("shared-k") == 1
    assert b.location == f"memory://{polycache.django.DEFAULT_MEMORY_STORE}"
    a.delete("shared-k")


def test_wrong_location() -> None:
    with pytest.raises(polycache.ConfigurationError, match="LOCATION 'localhost' is not a cache URL"):
        Cache("localhost", {})
    with pytest.raises(polycache.ConfigurationError, match="file:///var/tmp/x"):
        Cache("/var/tmp/x", {})
    with pytest.raises(polycache.ConfigurationError, match="nosuch"):
        Cache("nosuch://h", {})
    with pytest.raises(polycache.ConfigurationError, match="differ only in their host"):
        Cache(["redis://a:1/0", "redis://b:1/1"], {})
    with pytest.raises(ValueError):  # ConfigurationError is a ValueError
        Cache(42, {})
    for typo in ("redis:/user:s3cret@host:6379/0", "rediss//:s3cret@host", "nosuch://u:s3cret@h"):
        with pytest.raises(polycache.ConfigurationError) as err:
            Cache(typo, {})
        assert "s3cret" not in str(err.value)
    with pytest.raises(polycache.ConfigurationError) as err:
        Cache(["redis://u:s3cret@a/0", "redis://u:s3cret@b/1"], {})
    assert "s3cret" not in str(err.value)


def test_settings_in_the_location_are_used_and_never_given_twice() -> None:
    cache = make(f"{store()}?timeout=60&key_prefix=zz&version=3")
    assert (cache.default_timeout, cache.key_prefix, cache.version) == (60, "zz", 3)
    cache.set("k", 1)
    assert cache.make_key("k") == "zz:3:k"
    assert make(f"{store()}?timeout=none").default_timeout is None
    cases: list[tuple[str, dict[str, Any]]] = [
        ("timeout=60", {"TIMEOUT": 30}),
        ("key_prefix=zz", {"KEY_PREFIX": "yy"}),
        ("version=2", {"VERSION": 2}),
        ("timeout=60", {"OPTIONS": {"timeout": 30}}),
    ]
    for url_option, params in cases:
        with pytest.raises(polycache.ConfigurationError, match="given both"):
            make(f"{store()}?{url_option}", **params)
    with pytest.raises(polycache.ConfigurationError, match="'version' must be an integer"):
        make(f"{store()}?version=two")


def test_location_prints_as_written_without_secrets() -> None:
    cache = make(f"{store()}?max_entries=10", OPTIONS={"eviction": "lru", "signing_key": "s3cret-key"})
    assert "%5F" not in cache.location and "eviction=lru" in cache.location
    assert "s3cret" not in cache.location and "s3cret" not in repr(cache)


def test_unknown_options_raise_what_djangos_clients_raise() -> None:
    with pytest.raises(InvalidOptionError, match="'FOO'") as upper:
        make(OPTIONS={"FOO": 1})
    assert isinstance(upper.value, TypeError) and isinstance(upper.value, ValueError)
    with pytest.raises(InvalidOptionError, match="max_entires"):
        make(OPTIONS={"max_entires": 1})
    with pytest.raises(InvalidOptionError, match="MAX_ENTRIES"):
        make(OPTIONS={"MAX_ENTRIES": "many"})
    with pytest.raises(polycache.ConfigurationError, match="OPTIONS must be a mapping"):
        make(OPTIONS=["max_entries"])
    # The core's error names the OPTIONS key it is about: no second opening to find out.
    with pytest.raises(InvalidOptionError) as bad:
        make(OPTIONS={"MAX_ENTRIES": 0})
    assert str(bad.value).startswith("OPTIONS['MAX_ENTRIES']: invalid value \"0\" for option 'max_entries'")
    with pytest.raises(InvalidOptionError, match=r"^OPTIONS\['max_entires'\]: unknown option"):
        make(OPTIONS={"max_entires": 1})
    # A fault in the LOCATION itself is no OPTIONS fault.
    with pytest.raises(polycache.ConfigurationError) as url:
        make(f"{store()}?max_entries=0", OPTIONS={"eviction": "lru"})
    assert not isinstance(url.value, InvalidOptionError)
    assert str(url.value).startswith("query parameter max_entries in the URL: ")


@pytest.mark.parametrize(
    ("location", "options", "key"),
    [
        # Found after the option was read: a TLS mode that needs another option, a file that
        # cannot be used, a store URL that is not allowed where the option puts it.
        ("postgres://127.0.0.1:1/db", {"sslmode": "verify-full"}, "sslmode"),
        ("postgres://127.0.0.1:1/db", {"sslmode": "verify-ca", "sslrootcert": "{dir}/absent.pem"}, "sslrootcert"),
        ("rediss://127.0.0.1:1", {"tls_ca": "{dir}"}, "tls_ca"),
        ("tiered://", {"l1": "dummy://", "l2": "memory://opt-l2"}, "l1"),
        ("tiered://", {"l2": "tiered://"}, "l2"),
        ("tiered://", {"l2": "memory://opt-l2", "bus": "nowhere"}, "bus"),
    ],
)
def test_option_errors_found_inside_a_backend_name_the_option(
    tmp_path: Any, location: str, options: dict[str, str], key: str
) -> None:
    options = {k: v.replace("{dir}", str(tmp_path)) for k, v in options.items()}
    with pytest.raises(InvalidOptionError) as bad:
        make(location, OPTIONS=options)
    assert str(bad.value).startswith(f"OPTIONS['{key}']: "), str(bad.value)


@pytest.mark.parametrize("cull", [None, 0, 1, 2, 3, 7, 100])
def test_max_entries_and_cull_frequency_cull_as_locmem_does(cull: int | None) -> None:
    options = {"MAX_ENTRIES": 20} if cull is None else {"MAX_ENTRIES": 20, "CULL_FREQUENCY": cull}
    ours, theirs = make(OPTIONS=options), locmem(OPTIONS=options)
    keys = [f"k{i}" for i in range(75)]
    for i, key in enumerate(keys):
        for c in (ours, theirs):
            c.set(key, i)
            if i % 4 == 0:
                c.get(keys[i // 2])  # a read moves a key to the recent end
    # LocMemCache removes nothing when 20 // CULL_FREQUENCY is 0; polycache removes one
    # so that MAX_ENTRIES holds.
    if cull == 100:
        assert len(ours.get_many(keys)) == 20
        return
    assert ours.get_many(keys) == theirs.get_many(keys)
    assert (ours._max_entries, ours._cull_frequency) == (20, 3 if cull is None else cull)
    assert ours.stats()["evictions"] > 0


def test_eviction_clock_keeps_the_fast_policy_under_max_entries() -> None:
    c = make(OPTIONS={"MAX_ENTRIES": 20, "eviction": "clock"})
    c.set_many({f"k{i}": i for i in range(200)})
    assert 0 < len(c.get_many([f"k{i}" for i in range(200)])) <= 20
    with pytest.raises(InvalidOptionError, match="eviction=lru"):
        make(OPTIONS={"CULL_FREQUENCY": 2, "eviction": "clock"})
    with pytest.raises(InvalidOptionError, match="cull_frequency"):
        make(OPTIONS={"CULL_FREQUENCY": -1})


def test_cull_frequency_alone_bounds_at_djangos_300() -> None:
    c = make(OPTIONS={"CULL_FREQUENCY": 0})
    c.set_many({f"k{i}": i for i in range(301)})
    assert c.get_many([f"k{i}" for i in range(301)]) == {"k300": 300}


def test_django_bounds_are_ignored_where_django_ignores_them() -> None:
    # Django's Redis and Memcached backends take no MAX_ENTRIES; neither does dummy://.
    c = Cache("dummy://", {"OPTIONS": {"MAX_ENTRIES": 5, "CULL_FREQUENCY": 0}})
    c.set("k", 1)
    assert c.get("k") is None


def test_lower_case_options_are_url_options() -> None:
    c = make(OPTIONS={"max_bytes": 1 << 20})
    c.set("k", "v")
    assert c.get("k") == "v"


def test_through_djangos_caches_setting() -> None:
    name = store()
    with override_settings(
        CACHES={
            "default": {"BACKEND": "polycache.django.Cache", "LOCATION": name, "KEY_PREFIX": "s", "TIMEOUT": 60},
            "other": {"BACKEND": "polycache.django.Cache", "LOCATION": name, "VERSION": 2},
        }
    ):
        caches["default"].set("k", "v")
        assert caches["default"].get("k") == "v"
        assert isinstance(caches["default"], Cache)
        assert caches["other"].get("k") is None
        assert polycache.Cache(name, key_prefix="s").get("k") == "v"


# --- Async ------------------------------------------------------------------------------


def test_async_twins_are_native_on_memory() -> None:
    c = make()

    async def main() -> list[Any]:
        await c.aset("k", 1)
        out: list[Any] = [await c.aget("k"), await c.aadd("k", 2), await c.aincr("k", 5), await c.adecr("k")]
        out += [await c.aset_many({"a": 1}), await c.aget_many(["a", "k", "x"]), await c.ahas_key("a")]
        out += [await c.atouch("a", None), await c.adelete("a")]
        await c.adelete_many(["k"])
        out += [await c.aget("k"), await c.aget_or_set("g", lambda: 9), await c.aincr_version("g")]
        out += [await c.aget("g", version=2), await c.adecr_version("g", version=2)]
        await c.aclear()
        out.append(await c.aget("g"))
        await c.aclose()
        return out

    assert asyncio.run(main()) == [1, False, 6, 5, [], {"a": 1, "k": 5}, True, True, True, None, 9, 2, 9, 1, None]


def test_async_twins_do_not_use_djangos_thread_wrappers(monkeypatch: pytest.MonkeyPatch) -> None:
    import asgiref.sync

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sync_to_async was used")

    monkeypatch.setattr(asgiref.sync, "sync_to_async", forbidden)
    monkeypatch.setattr("django.core.cache.backends.base.sync_to_async", forbidden)
    c = make()
    asyncio.run(c.aset("k", 1))
    assert asyncio.run(c.aget("k")) == 1


@pytest.fixture
def file_location(tmp_path: Any) -> Iterator[str]:
    if "file://" not in polycache.SCHEMES:
        pytest.skip("this wheel was built without the file backend (cargo feature 'file')")
    yield f"file://{tmp_path}/cache"


def test_async_on_a_blocking_backend_runs_in_worker_threads(file_location: str) -> None:
    c = Cache(file_location, {})
    assert not c.is_local
    seen: set[int] = set()
    original = c.get

    class Spy(Cache):
        def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
            seen.add(threading.get_ident())
            return original(key, default, version)

    spy = Spy(file_location, {})

    async def main() -> Any:
        await spy.aset("k", "v")
        return await asyncio.gather(*(spy.aget("k") for _ in range(4)))

    assert asyncio.run(main()) == ["v"] * 4
    assert threading.get_ident() not in seen


def test_set_with_two_arguments_and_with_more_agree() -> None:
    # `set(key, value)` has an entry of its own (no generic argument parsing); every other
    # form of the call goes through the full signature: same keys, bytes, answers and errors.
    import inspect

    location = store()
    c = make(location, KEY_PREFIX="p", TIMEOUT=None)
    raw = polycache.Cache(location, key_prefix="p", serializer="raw")
    values: tuple[Any, ...] = ("text", b"bytes", 7, 1.5, False, None, {"a": [1]})
    for value in values:
        assert c.set("k", value) is None
        two = raw.get("k")
        assert c.set("k", value, DEFAULT_TIMEOUT) is None
        assert raw.get("k") == two
        assert two == (str(value).encode() if type(value) is int else pickle.dumps(value, 5))
        assert c.get("k") == value
    assert c.ttl("k") is None  # TIMEOUT=None: the default timeout never expires
    assert c.set(key="k", value="v") is None and c.get("k") == "v"
    assert c.set("k", "v", 0) is None and c.get("k") is None
    # A key Django warns about warns the same through the two-argument call.
    assert key_warnings(c.set, "with space", "v") == key_warnings(c.set, "with space", "v", 5)
    assert key_warnings(c.set, "with space", "v")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'value'"):
        c.set("k")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        c.set("k", "v", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="cannot pickle"):
        c.set("k", threading.Lock())
    small = make(OPTIONS={"max_value_size": 100})
    with pytest.raises(polycache.ValueTooLargeError):
        small.set("k", "x" * 200)
    assert small.get("k") is None
    assert str(inspect.signature(Cache.set)).startswith("(self, /, key, value, timeout=")

    # A subclass that makes its own keys still has them made by its code.
    made: list[Any] = []

    class Custom(Cache):
        def make_key(self, key: Any, version: Any = None) -> str:
            made.append(key)
            return f"p:1:custom-{key}"

    d = Custom(location, {})
    assert d.set("k", "v") is None
    assert made == ["k"]
    assert raw.get("custom-k") == pickle.dumps("v", 5)
    # dummy:// stores nothing and answers None.
    assert Cache("dummy://", {}).set("k", "v") is None
