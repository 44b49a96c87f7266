"""polycache.Cache: Django's cache API and semantics on memory:// (and dummy://)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import polycache
from polycache import DEFAULT_TIMEOUT, Cache


class Point:
    """A picklable user object (module level, so pickle can find it)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


# --- construction -------------------------------------------------------------------------


def test_defaults_are_djangos() -> None:
    c = Cache()
    assert c.location == "memory://"
    assert c.key_prefix == ""
    assert c.version == 1
    assert c.default_timeout == 300.0
    assert c.is_local
    assert repr(c) == "polycache.Cache('memory://', key_prefix='', version=1)"


# Every scheme of a full build, and a URL of each that opens without a server (a dead port:
# opening connects lazily) or names a temporary path.
ALL_SCHEMES = {
    "dummy://": "dummy://",
    "memory://": "memory://",
    "tiered://": "tiered://",
    "redis://": "redis://127.0.0.1:1/0",
    "rediss://": "rediss://127.0.0.1:1/0",
    "unix://": "unix:///nonexistent/redis.sock",
    "redis+cluster://": "redis+cluster://127.0.0.1:1",
    "rediss+cluster://": "rediss+cluster://127.0.0.1:1",
    "redis+sentinel://": "redis+sentinel://127.0.0.1:1/mymaster/0",
    "rediss+sentinel://": "rediss+sentinel://127.0.0.1:1/mymaster/0",
    "memcached://": "memcached://127.0.0.1:1",
    "file://": "file://{tmp}/file-cache",
    "sqlite://": "sqlite://{tmp}/cache.db",
    "postgres://": "postgres://u@127.0.0.1:1/db",
    "postgresql://": "postgresql://u@127.0.0.1:1/db",
}


def test_schemes_name_what_this_build_opens(tmp_path: Any) -> None:
    # A wheel built with fewer backends (`--no-default-features --features memory`, see
    # scripts/python-versions.sh) says which in POLYCACHE_EXPECT_SCHEMES; the default
    # wheel has them all.
    expected = os.environ.get("POLYCACHE_EXPECT_SCHEMES")
    want = expected.split(",") if expected else list(ALL_SCHEMES)
    assert sorted(polycache.SCHEMES) == sorted(want)
    for scheme, url in ALL_SCHEMES.items():
        url = url.format(tmp=tmp_path)
        try:
            Cache(url).close()
        except polycache.ConfigurationError as e:
            unknown = "unknown cache scheme" in str(e)
            assert unknown == (scheme not in polycache.SCHEMES), (scheme, str(e))
        except polycache.CacheError:
            assert scheme in polycache.SCHEMES, scheme
        else:
            assert scheme in polycache.SCHEMES, scheme


def test_constructor_settings() -> None:
    c = Cache("memory://?max_entries=1000", key_prefix="app", version=3, timeout=1.5)
    assert (c.key_prefix, c.version, c.default_timeout) == ("app", 3, 1.5)
    assert Cache(timeout=None).default_timeout is None
    assert Cache(timeout=0).default_timeout == 0.0
    assert Cache(timeout=-5).default_timeout == 0.0


def test_url_options_apply_and_keywords_win() -> None:
    c = Cache("memory://?key_prefix=u&version=7&timeout=none")
    assert (c.key_prefix, c.version, c.default_timeout) == ("u", 7, None)
    c = Cache("memory://?key_prefix=u&version=7&timeout=none", key_prefix="k", version=8, timeout=9)
    assert (c.key_prefix, c.version, c.default_timeout) == ("k", 8, 9.0)


def test_options_mapping() -> None:
    c = Cache("memory://", options={"max_entries": 10})
    for i in range(200):
        c.set(f"k{i}", i)
    assert sum(c.has_key(f"k{i}") for i in range(200)) <= 10
    assert c.stats()["evictions"] >= 190


@pytest.mark.parametrize(
    ("location", "options", "named"),
    [
        ("memory://?max_entries=-1", None, "max_entries"),
        ("memory://?max_entries=zero", None, "max_entries"),
        ("memory://", {"max_entries": -1}, "max_entries"),
        ("memory://?max_entires=10", None, "max_entires"),
        ("memory://", {"bogus": "1"}, "bogus"),
        ("nosuch://host", None, "nosuch"),
        ("not a url", None, "not a url"),
        ("memory://?timeout=soon", None, "timeout"),
    ],
)
def test_bad_configuration_names_the_culprit(location: str, options: Any, named: str) -> None:
    with pytest.raises(polycache.ConfigurationError, match=named) as info:
        Cache(location, options=options)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, polycache.CacheError)


def test_bad_option_value_type() -> None:
    with pytest.raises(polycache.ConfigurationError, match="max_entries"):
        Cache("memory://", options={"max_entries": [1]})  # type: ignore[dict-item]


# --- get / set / add / delete -------------------------------------------------------------


def test_get_set_roundtrip_of_many_types(cache: Cache) -> None:
    values: list[Any] = [
        "text",
        "",
        "héllo wörld ☃",
        b"\x00\x01bytes",
        0,
        -1,
        42,
        2**63 - 1,
        -(2**63),
        10**40,
        1.25,
        True,
        False,
        None,
        [1, "two", 3.0],
        {"a": {"b": [1, 2]}},
        (1, 2),
        {1, 2, 3},
        Point(1, 2),
    ]
    for i, value in enumerate(values):
        cache.set(f"k{i}", value)
    for i, value in enumerate(values):
        got = cache.get(f"k{i}")
        assert got == value and type(got) is type(value), (value, got)


def test_get_default_and_miss(cache: Cache) -> None:
    assert cache.get("missing") is None
    assert cache.get("missing", "fallback") == "fallback"
    assert cache.get("missing", default=0) == 0
    cache.set("none", None)
    assert cache.get("none", "fallback") is None  # a stored None is a hit


def test_get_with_one_argument_and_with_more_agree() -> None:
    # `get(key)` has an entry of its own (no generic argument parsing); every other form of
    # the call goes through the full signature. Both must answer and fail alike.
    import inspect

    c = Cache("memory://", key_prefix="p")
    c.set("k", "v1")
    c.set("k", "v2", version=2)
    assert c.get("k") == "v1"
    assert c.get("k", None) == "v1"
    assert c.get(key="k") == "v1"
    assert c.get("k", version=2) == "v2"
    assert c.get("absent") is None
    assert c.get("absent", 5) == 5
    assert c.get("absent", default=6) == 6
    not_str: tuple[Any, ...] = (1, b"k", None)
    for key in not_str:
        with pytest.raises(TypeError, match="cache keys must be str"):
            c.get(key)
        with pytest.raises(TypeError, match="cache keys must be str"):
            c.get(key, None)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'key'"):
        c.get()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes from 1 to 3 positional arguments but 4"):
        c.get("k", None, 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        c.get("k", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="doesn't apply to a 'object' object"):
        polycache._polycache.Cache.get(object(), "k")  # type: ignore[arg-type]
    assert str(inspect.signature(Cache.get)) == "(self, /, key, default=None, version=None)"
    assert (Cache.get.__doc__ or "").startswith("The value under `key`, or `default`")

    class Sub(Cache):
        pass

    s = Sub("memory://")
    s.set("k", "v")
    assert s.get("k") == "v"


def test_get_with_one_argument_fails_and_decodes_as_the_full_call() -> None:
    # The one-argument `get` answers a hit from the table of shared objects and a miss by
    # itself; decoding, errors and every other key go on to the rest of the call. Each of
    # those answers as the full signature does, and again on the next call.
    c = Cache("memory://get-one-rest", key_prefix="p")
    raw = Cache("memory://get-one-rest", key_prefix="p", serializer="raw")
    too_long = "k" * (64 * 1024 + 1)
    for _ in range(2):
        with pytest.raises(polycache.InvalidKeyError):
            c.get(too_long)
        with pytest.raises(polycache.InvalidKeyError):
            c.get(too_long, None)
    raw.set("garbage", b"not a pickle")
    for _ in range(2):
        with pytest.raises(polycache.SerializationError):
            c.get("garbage")
        with pytest.raises(polycache.SerializationError):
            c.get("garbage", None)

    class Text(str):
        pass

    long_value = "é" * 1000  # never kept in the table: decoded on every hit
    c.set("long", long_value)
    c.set("ключ", "non-ASCII key")
    for _ in range(2):
        assert c.get("long") == long_value == c.get("long", None)
        assert c.get("ключ") == "non-ASCII key" == c.get("ключ", None)
        assert c.get(Text("long")) == long_value
    # More values than the table has slots: each read decodes anew or finds its own object.
    values = {f"key-{i}": f"value-{i}" for i in range(2000)}
    for k, v in values.items():
        c.set(k, v)
    for _ in range(2):
        for k, v in values.items():
            assert c.get(k) == v


def test_set_with_two_arguments_and_with_more_agree() -> None:
    # `set(key, value)` has an entry of its own (no generic argument parsing); every other
    # form of the call goes through the full signature. Both must store, answer and fail
    # alike.
    import inspect
    import pickle

    c = Cache("memory://set-two-args", key_prefix="p")
    raw = Cache("memory://set-two-args", key_prefix="p", serializer="raw")
    values: tuple[Any, ...] = ("text", "", "é" * 300, b"bytes", 7, -(2**70), 1.5, True, None, [1])
    for value in values:
        assert c.set("k", value) is True
        two = raw.get("k")
        assert c.set("k", value, DEFAULT_TIMEOUT) is True
        assert raw.get("k") == two
        expected = str(value).encode() if type(value) is int else pickle.dumps(value, 5)
        assert two == expected, value
        assert c.get("k") == value
    assert c.set("k", "v1") is True
    assert c.set("k", "v2", version=2) is True
    assert c.get("k") == "v1" and c.get("k", version=2) == "v2"
    assert c.set(key="k", value="v3") is True and c.get("k") == "v3"
    assert c.set("k", "v4", None) is True and c.ttl("k") is None
    assert c.set("k", "v5", 0) is True and c.get("k") is None
    not_str: tuple[Any, ...] = (1, b"k", None)
    for key in not_str:
        with pytest.raises(TypeError, match="cache keys must be str"):
            c.set(key, "v")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'value'"):
        c.set("k")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        c.set("k", "v", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="doesn't apply to a 'object' object"):
        polycache._polycache.Cache.set(object(), "k", "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot pickle"):
        c.set("k", threading.Lock())
    small = Cache("memory://?max_value_size=100")
    with pytest.raises(polycache.ValueTooLargeError):
        small.set("k", "x" * 200)
    assert small.get("k") is None
    assert str(inspect.signature(Cache.set)) == (
        "(self, /, key, value, timeout=Ellipsis, version=None, *, nx=False, xx=False, tags=None)"
    )
    assert (Cache.set.__doc__ or "").startswith("Stores `value` under `key`")

    class Sub(Cache):
        pass

    s = Sub("memory://")
    assert s.set("k", "v") is True
    assert s.get("k") == "v"


def test_set_replaces(cache: Cache) -> None:
    assert cache.set("k", "one") is True
    assert cache.set("k", "two") is True
    assert cache.get("k") == "two"


def test_fail_open_options_are_accepted_and_validated() -> None:
    c = Cache("memory://?fail_open=true&breaker_threshold=5&breaker_cooldown=0.5")
    assert c.set("k", 1) is True
    assert c.get("k") == 1
    with pytest.raises(polycache.ConfigurationError, match="fail_open"):
        Cache("memory://?fail_open=perhaps")


def test_add_only_when_absent(cache: Cache) -> None:
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"
    cache.delete("k")
    assert cache.add("k", "third") is True
    assert cache.get("k") == "third"


def test_add_with_expired_timeout_stores_nothing(cache: Cache) -> None:
    assert cache.add("k", "v", timeout=0) is True
    assert cache.has_key("k") is False


def test_delete(cache: Cache) -> None:
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k") is None


def test_has_key(cache: Cache) -> None:
    assert cache.has_key("k") is False
    cache.set("k", None)
    assert cache.has_key("k") is True


# --- timeouts -----------------------------------------------------------------------------


def test_timeout_none_never_expires() -> None:
    c = Cache(timeout=0.05)
    c.set("forever", 1, timeout=None)
    c.set("default", 2)
    time.sleep(0.2)
    assert c.get("forever") == 1
    assert c.get("default") is None


@pytest.mark.parametrize("timeout", [0, -1, -0.5, float("-inf")])
def test_non_positive_timeout_stores_nothing_and_removes_old(cache: Cache, timeout: float) -> None:
    cache.set("k", "old")
    cache.set("k", "new", timeout=timeout)
    assert cache.get("k") is None
    assert cache.has_key("k") is False


def test_float_timeout_expires() -> None:
    c = Cache()
    c.set("k", "v", timeout=0.05)
    assert c.get("k") == "v"
    time.sleep(0.2)
    assert c.get("k") is None


def test_default_timeout_sentinel_uses_cache_default() -> None:
    c = Cache(timeout=0.05)
    c.set("k", "v", timeout=DEFAULT_TIMEOUT)
    c.set("long", "v", timeout=60)
    time.sleep(0.2)
    assert c.get("k") is None
    assert c.get("long") == "v"


def test_constructor_timeout_zero_expires_everything() -> None:
    c = Cache(timeout=0)
    c.set("k", "v")
    assert c.get("k") is None
    c.set("k", "v", timeout=60)
    assert c.get("k") == "v"


def test_constructor_timeout_none_never_expires() -> None:
    c = Cache(timeout=None)
    c.set("k", "v")
    assert c.get("k") == "v"
    assert c.default_timeout is None


@pytest.mark.parametrize("bad", ["10", [1], object()])
def test_bad_timeout_type(cache: Cache, bad: Any) -> None:
    with pytest.raises(TypeError, match="timeout"):
        cache.set("k", 1, timeout=bad)
    assert cache.has_key("k") is False


def test_touch(cache: Cache) -> None:
    assert cache.touch("missing") is False
    cache.set("k", "v", timeout=0.05)
    assert cache.touch("k", timeout=None) is True
    time.sleep(0.2)
    assert cache.get("k") == "v"
    assert cache.touch("k", 0) is True
    assert cache.get("k") is None


def test_touch_default_timeout() -> None:
    c = Cache(timeout=0.05)
    c.set("k", "v", timeout=None)
    assert c.touch("k") is True
    time.sleep(0.2)
    assert c.has_key("k") is False


# --- many-key operations ------------------------------------------------------------------


def test_get_many_leaves_out_missing(cache: Cache) -> None:
    cache.set("a", 1)
    cache.set("b", "two")
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": "two"}
    assert cache.get_many([]) == {}
    assert cache.get_many(k for k in ("b",)) == {"b": "two"}


def test_set_many_returns_failed_keys(cache: Cache) -> None:
    assert cache.set_many({"a": 1, "b": [2], "c": None}) == []
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": [2], "c": None}


def test_set_many_timeout_and_version(cache: Cache) -> None:
    cache.set_many({"a": 1, "b": 2}, timeout=None, version=5)
    assert cache.get_many(["a", "b"]) == {}
    assert cache.get_many(["a", "b"], version=5) == {"a": 1, "b": 2}
    cache.set_many({"a": 9}, timeout=0, version=5)
    assert cache.get_many(["a", "b"], version=5) == {"b": 2}


def test_set_many_too_large_value_fails_whole(cache: Cache) -> None:
    small = Cache("memory://?max_value_size=100")
    with pytest.raises(polycache.ValueTooLargeError):
        small.set_many({"ok": 1, "big": "x" * 1000})
    assert small.get_many(["ok", "big"]) == {}


def test_delete_many(cache: Cache) -> None:
    cache.set_many({"a": 1, "b": 2, "c": 3})
    cache.delete_many(["a", "b", "missing"])
    assert cache.get_many(["a", "b", "c"]) == {"c": 3}


# --- incr / decr --------------------------------------------------------------------------


def test_incr_decr(cache: Cache) -> None:
    cache.set("n", 10)
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n") == 15
    assert cache.decr("n", delta=20) == -5
    assert cache.get("n") == -5
    assert cache.incr("n", -5) == -10


@pytest.mark.parametrize("op", ["incr", "decr"])
def test_incr_decr_missing_key_is_value_error(cache: Cache, op: str) -> None:
    with pytest.raises(polycache.KeyNotFoundError) as info:
        getattr(cache, op)("missing")
    assert isinstance(info.value, ValueError)  # as Django raises
    assert "missing" in str(info.value)
    assert cache.has_key("missing") is False


@pytest.mark.parametrize("value", ["text", 1.5, [1], True, b"1"])
def test_incr_non_integer(cache: Cache, value: Any) -> None:
    cache.set("k", value)
    with pytest.raises(polycache.NotAnIntegerError) as info:
        cache.incr("k")
    assert isinstance(info.value, TypeError)
    assert cache.get("k") == value


def test_incr_overflow(cache: Cache) -> None:
    cache.set("k", 2**63 - 1)
    with pytest.raises(polycache.IntegerOverflowError) as info:
        cache.incr("k")
    assert isinstance(info.value, OverflowError)
    assert cache.get("k") == 2**63 - 1


def test_incr_keeps_timeout() -> None:
    c = Cache()
    c.set("n", 1, timeout=0.05)
    assert c.incr("n") == 2
    time.sleep(0.2)
    assert c.get("n") is None


def test_incr_from_threads_is_exact(cache: Cache) -> None:
    cache.set("counter", 0)
    per_thread, threads = 2000, 8
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            cache.incr("counter")

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert cache.get("counter") == per_thread * threads


# --- get_or_set ---------------------------------------------------------------------------


def test_get_or_set_calls_callable_only_on_miss(cache: Cache) -> None:
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        return "computed"

    assert cache.get_or_set("k", compute) == "computed"
    assert cache.get_or_set("k", compute) == "computed"
    assert len(calls) == 1
    assert cache.get("k") == "computed"


def test_get_or_set_plain_default(cache: Cache) -> None:
    assert cache.get_or_set("k", [1, 2]) == [1, 2]
    assert cache.get_or_set("k", "other") == [1, 2]


def test_get_or_set_with_expired_timeout_returns_default(cache: Cache) -> None:
    assert cache.get_or_set("k", "v", timeout=0) == "v"
    assert cache.has_key("k") is False


def test_get_or_set_version(cache: Cache) -> None:
    cache.set("k", "v1")
    assert cache.get_or_set("k", "v2", version=2) == "v2"
    assert cache.get("k") == "v1"
    assert cache.get("k", version=2) == "v2"


def test_get_or_set_callable_error_propagates(cache: Cache) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_set("k", boom)
    assert cache.has_key("k") is False


# --- keys, prefixes and versions ----------------------------------------------------------


def test_version_override(cache: Cache) -> None:
    cache.set("k", "v1")
    cache.set("k", "v2", version=2)
    assert cache.get("k") == "v1"
    assert cache.get("k", version=1) == "v1"
    assert cache.get("k", version=2) == "v2"
    assert cache.delete("k", version=2) is True
    assert cache.get("k", version=2) is None
    assert cache.get("k") == "v1"


def test_cache_version_setting(store_name: str) -> None:
    v1 = Cache(f"memory://{store_name}")
    v2 = Cache(f"memory://{store_name}", version=2)
    v1.set("k", "one")
    assert v2.get("k") is None
    assert v2.get("k", version=1) == "one"


def test_key_prefix_isolation(store_name: str) -> None:
    a = Cache(f"memory://{store_name}", key_prefix="a")
    b = Cache(f"memory://{store_name}", key_prefix="b")
    a.set("k", "from a")
    b.set("k", "from b")
    assert a.get("k") == "from a"
    assert b.get("k") == "from b"
    a.clear()
    assert a.get("k") is None
    assert b.get("k") == "from b"


def test_make_key_is_djangos(cache: Cache) -> None:
    c = Cache(key_prefix="site", version=3)
    assert c.make_key("user:1") == "site:3:user:1"
    assert c.make_key("user:1", version=4) == "site:4:user:1"
    assert cache.make_key("k") == ":1:k"


def test_incr_decr_version(cache: Cache) -> None:
    cache.set("k", "value")
    assert cache.incr_version("k") == 2
    assert cache.get("k") is None
    assert cache.get("k", version=2) == "value"
    assert cache.decr_version("k", version=2) == 1
    assert cache.get("k") == "value"
    assert cache.incr_version("k", delta=5) == 6
    assert cache.get("k", version=6) == "value"
    with pytest.raises(polycache.KeyNotFoundError):
        cache.incr_version("missing")
    with pytest.raises(ValueError):
        cache.decr_version("missing")


@pytest.mark.parametrize("key", [1, 1.5, b"bytes", None, ("t",)])
def test_non_str_key_is_type_error(cache: Cache, key: Any) -> None:
    for call in (
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.delete(key),
        lambda: cache.get_many([key]),
        lambda: cache.set_many({key: 1}),
    ):
        with pytest.raises(TypeError, match=type(key).__name__):
            call()
    assert cache.stats()["sets"] == 0


def test_str_subclass_key(cache: Cache) -> None:
    class Name(str):
        pass

    cache.set(Name("k"), 1)
    assert cache.get("k") == 1


def test_unicode_keys(cache: Cache) -> None:
    cache.set("ключ ☃", "v")
    assert cache.get("ключ ☃") == "v"
    assert cache.get("ключ") is None


def test_lone_surrogate_key(cache: Cache) -> None:
    with pytest.raises(polycache.InvalidKeyError):
        cache.set("\ud800", 1)


def test_too_long_key(cache: Cache) -> None:
    with pytest.raises(polycache.InvalidKeyError) as info:
        cache.set("k" * (64 * 1024 + 1), 1)
    assert isinstance(info.value, ValueError)


def test_value_too_large() -> None:
    c = Cache("memory://?max_value_size=1000")
    c.set("k", "small")
    with pytest.raises(polycache.ValueTooLargeError) as info:
        c.set("k", "x" * 2000)
    assert isinstance(info.value, ValueError)
    assert c.get("k") == "small"


# --- serialization errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(lambda: 1, "function"), (threading.Lock(), "lock"), ((x for x in range(0)), "generator")],
)
def test_unpicklable_value(cache: Cache, value: Any, type_name: str) -> None:
    cache.set("k", "old")
    with pytest.raises(polycache.SerializationError, match=type_name) as info:
        cache.set("k", value)
    assert isinstance(info.value, TypeError)
    assert info.value.__cause__ is not None
    assert cache.get("k") == "old"
    with pytest.raises(polycache.SerializationError):
        cache.set("new", value)
    assert cache.has_key("new") is False
    with pytest.raises(polycache.SerializationError):
        cache.set_many({"a": 1, "b": value})
    assert cache.get_many(["a", "b"]) == {}
    with pytest.raises(polycache.SerializationError):
        cache.add("added", value)
    assert cache.has_key("added") is False


# --- clear, close, stats ------------------------------------------------------------------


def test_clear(cache: Cache) -> None:
    cache.set_many({"a": 1, "b": 2})
    cache.clear()
    assert cache.get_many(["a", "b"]) == {}


def test_close_is_noop(cache: Cache) -> None:
    cache.set("k", 1)
    cache.close()
    assert cache.get("k") == 1


def test_stats_count(cache: Cache) -> None:
    totals = {k: v for k, v in cache.stats().items() if k != "ops"}
    assert totals == {
        "hits": 0,
        "misses": 0,
        "stale_hits": 0,
        "refreshes": 0,
        "sets": 0,
        "deletes": 0,
        "errors": 0,
        "evictions": 0,
        "timeouts": 0,
        "bytes_read": 0,
        "bytes_written": 0,
        "breaker_opened": 0,
        "breaker_half_opened": 0,
        "breaker_closed": 0,
        "latency_histograms": True,
        "latency_sampling": 16,
    }
    cache.set("a", 1)
    cache.set("b", 2)
    cache.get("a")
    cache.get("missing")
    cache.get_many(["a", "b", "c"])
    cache.delete("a")
    cache.delete("a")
    s = cache.stats()
    assert (s["hits"], s["misses"], s["sets"], s["deletes"], s["errors"]) == (3, 2, 2, 1, 0)


def test_stats_evictions() -> None:
    c = Cache("memory://?max_entries=100")
    for i in range(1000):
        c.set(f"k{i}", i)
    assert c.stats()["evictions"] >= 900


# --- other backends -----------------------------------------------------------------------


def test_dummy_always_misses() -> None:
    c = Cache("dummy://")
    c.set("k", 1)
    assert c.get("k") is None
    assert c.get("k", "d") == "d"
    assert c.add("k", 1) is True


def test_named_memory_store_is_shared(store_name: str) -> None:
    a = Cache(f"memory://{store_name}")
    b = Cache(f"memory://{store_name}")
    a.set("k", {"shared": True})
    assert b.get("k") == {"shared": True}
    assert Cache("memory://").get("k") is None
