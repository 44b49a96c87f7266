"""``polycache.flask.Cache``: cachelib's semantics, and Flask-Caching with a real Flask app."""

from __future__ import annotations

import datetime as dt
import itertools
import pickle
import threading
import time
from typing import Any

import cachelib
import flask
import flask_caching
import pytest
from flask_caching.backends.base import BaseCache as FlaskCachingBaseCache

import polycache
from polycache.flask import Cache

_stores = itertools.count()


def store() -> str:
    return f"memory://flask-test-{next(_stores)}"


@pytest.fixture
def cache() -> Cache:
    return Cache(store(), default_timeout=300)


def test_is_a_cachelib_and_flask_caching_backend(cache: Cache) -> None:
    assert isinstance(cache, cachelib.BaseCache)
    assert isinstance(cache, FlaskCachingBaseCache)
    assert cache.default_timeout == 300


@pytest.mark.skipif(
    tuple(int(p) for p in cachelib.__version__.split(".")[:2]) < (0, 15),
    reason="cachelib before 0.15 (the last for Python 3.9 and 3.10) answers delete_many with the "
    "deleted keys only; polycache.flask follows cachelib 0.15 and later",
)
def test_results_match_simplecache(cache: Cache) -> None:
    theirs = cachelib.SimpleCache()
    for c in (cache, theirs):
        assert c.get("absent") is None
        assert c.set("k", "v") is True
        assert c.add("k", "other") is False
        assert c.add("j", 1) is True
        assert c.has("k") is True and c.has("absent") is False
        assert c.get_many("k", "absent", "j") == ["v", None, 1]
        assert c.get_dict("k", "absent") == {"k": "v", "absent": None}
        assert c.set_many({"a": 1, "b": 2}) == ["a", "b"]
        assert c.delete_many("a", "absent") == ["a", "absent"]
        assert c.delete("b") is True and c.delete("b") is False
        assert c.inc("counter") == 1
        assert c.inc("counter", 5) == 6
        assert c.dec("counter", 2) == 4
        assert c.dec("new-counter") == -1
        assert c.clear() is True
        assert c.get("k") is None


def test_timeouts_in_cachelibs_words() -> None:
    c = Cache(store(), default_timeout=1)
    c.set("default", 1)
    c.set("none-is-default", 1, None)
    c.set("zero-never", 1, 0)
    c.set("delta", 1, dt.timedelta(seconds=30))
    c.set("negative", 1)
    c.set("negative", 1, -1)
    assert c.get("negative") is None
    assert c.add("negative", 1, -1) is True and c.has("negative") is False
    time.sleep(1.3)
    assert c.get_dict("default", "none-is-default", "zero-never", "delta") == {
        "default": None,
        "none-is-default": None,
        "zero-never": 1,
        "delta": 1,
    }


def test_default_timeout_zero_never_expires() -> None:
    c = Cache(store(), default_timeout=0)
    c.set("k", 1)
    assert c.polycache.default_timeout is None


def test_float_timeouts_warn_as_cachelib_does(cache: Cache) -> None:
    with pytest.warns(DeprecationWarning, match="Float timeouts are deprecated"):
        cache.set("k", 1, 0.2)  # type: ignore[arg-type]  # rounded up to 1 second, as cachelib does
    assert cache.get("k") == 1


def test_inc_is_atomic_across_threads(cache: Cache) -> None:
    def work() -> None:
        for _ in range(200):
            cache.inc("n")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("n") == 800


def test_inc_on_a_non_integer_is_a_type_error(cache: Cache) -> None:
    cache.set("s", "text")
    with pytest.raises(TypeError):
        cache.inc("s")


def test_unpicklable_raises_pickles_error(cache: Cache) -> None:
    class Unpicklable:
        def __getstate__(self) -> Any:
            raise pickle.PicklingError("no")

    # cachelib's BaseCache.set documents that pickling errors raise (its RedisCache does);
    # its SimpleCache logs them and stores None instead, which a later get cannot read.
    with pytest.raises(pickle.PicklingError, match="no"):
        cache.set("k", Unpicklable())
    with pytest.raises(TypeError) as ours:
        cache.set("k", threading.Lock())
    with pytest.raises(TypeError) as theirs:
        cachelib.SimpleCache().set("k", threading.Lock())
    assert str(ours.value) == str(theirs.value)
    assert cache.has("k") is False
    with pytest.raises(pickle.PicklingError):
        cache.set_many({"a": 1, "b": Unpicklable()})
    assert cache.get_many("a", "b") == [None, None]


def test_non_str_key_is_a_type_error(cache: Cache) -> None:
    with pytest.raises(TypeError, match="int"):
        cache.get(5)  # type: ignore[arg-type]


def test_key_prefix_and_entries_shared_with_polycache() -> None:
    name = store()
    c = Cache(name, key_prefix="app")
    c.set("k", [1, 2])
    assert polycache.Cache(name, key_prefix="app").get("k") == [1, 2]
    assert c.polycache.make_key("k") == "app:1:k"


def test_url_options_and_bad_ones() -> None:
    c = Cache("memory://", max_entries=10)
    c.set_many({f"k{i}": i for i in range(100)})
    assert sum(v is not None for v in c.get_many(*(f"k{i}" for i in range(100)))) <= 10
    with pytest.raises(polycache.ConfigurationError, match="max_entires"):
        Cache("memory://", max_entires=10)
    with pytest.raises(polycache.ConfigurationError, match="nosuch"):
        Cache("nosuch://")


def test_subclass_overrides_of_get_are_honoured() -> None:
    class Counting(Cache):
        calls = 0

        def get(self, key: str) -> Any:
            Counting.calls += 1
            return super().get(key)

    c = Counting(store())
    c.get("k")
    assert Counting.calls == 1


# --- Flask-Caching ---------------------------------------------------------------------


def make_app(**config: Any) -> tuple[flask.Flask, flask_caching.Cache]:
    app = flask.Flask(__name__)
    app.config.update(
        CACHE_TYPE="polycache.flask.Cache",
        CACHE_POLYCACHE_URL=store(),
        CACHE_DEFAULT_TIMEOUT=60,
        CACHE_KEY_PREFIX="flaskapp",
        **config,
    )
    return app, flask_caching.Cache(app)


def test_flask_caching_builds_it_from_the_config() -> None:
    app, cache = make_app(CACHE_OPTIONS={"max_entries": 1000})
    with app.app_context():
        backend = app.extensions["cache"][cache]
        assert isinstance(backend, Cache)
        assert backend.default_timeout == 60
        assert backend.polycache.key_prefix == "flaskapp"
        assert backend.location.startswith("memory://flask-test-")
        cache.set("k", "v")
        assert cache.get("k") == "v"


def test_cache_options_may_set_how_values_are_stored() -> None:
    # Flask-Caching passes CACHE_OPTIONS as keyword arguments: the value settings are among them.
    app, cache = make_app(CACHE_OPTIONS={"serializer": "json", "signing_key": "k1", "max_entries": 100})
    with app.app_context():
        backend = app.extensions["cache"][cache]
        assert backend.polycache.serializer == "json"
        cache.set("doc", {"a": [1, 2]})
        assert cache.get("doc") == {"a": [1, 2]}
        url = backend.polycache.location
        raw = polycache.Cache(url, key_prefix="flaskapp", serializer="raw", signing_key="k1")
        assert raw.get("doc") == b'{"a":[1,2]}'
        # Signed: a reader with another key sees a miss.
        assert polycache.Cache(url, key_prefix="flaskapp", serializer="raw", signing_key="k2").get("doc") is None
    with pytest.raises(polycache.ConfigurationError, match="serializer"):
        make_app(CACHE_OPTIONS={"serializer": "yaml"})


def test_flask_caching_rejects_a_bad_option() -> None:
    with pytest.raises(polycache.ConfigurationError, match="max_entires"):
        make_app(CACHE_OPTIONS={"max_entires": 10})


def test_cached_view_and_memoized_function() -> None:
    app, cache = make_app()
    calls = {"view": 0, "square": 0}

    @app.route("/hello/<name>")
    @cache.cached(timeout=30)
    def hello(name: str) -> str:
        calls["view"] += 1
        return f"hello {name} #{calls['view']}"

    @cache.memoize(timeout=30)
    def square(n: int) -> int:
        calls["square"] += 1
        return n * n

    @app.route("/square/<int:n>")
    def square_view(n: int) -> str:
        return str(square(n))

    client = app.test_client()
    assert client.get("/hello/ada").text == "hello ada #1"
    assert client.get("/hello/ada").text == "hello ada #1"
    assert client.get("/hello/bob").text == "hello bob #2"
    assert calls["view"] == 2

    assert client.get("/square/4").text == "16"
    assert client.get("/square/4").text == "16"
    assert client.get("/square/5").text == "25"
    assert calls["square"] == 2
    with app.app_context():
        cache.delete_memoized(square, 4)
    assert client.get("/square/4").text == "16"
    assert calls["square"] == 3
    with app.app_context():
        cache.clear()
    assert client.get("/hello/ada").text == "hello ada #3"


def test_cached_view_expires_with_its_timeout() -> None:
    app, cache = make_app()
    calls = []

    @app.route("/now")
    @cache.cached(timeout=1)
    def now() -> str:
        calls.append(1)
        return str(len(calls))

    client = app.test_client()
    assert client.get("/now").text == "1"
    assert client.get("/now").text == "1"
    time.sleep(1.3)
    assert client.get("/now").text == "2"
