"""Serializers, signed and compressed values shared with C, and passwords that never show."""

from __future__ import annotations

import ctypes
import os
import pathlib
import pickle
import sqlite3
import subprocess
import sys
import urllib.parse
from typing import Any, Callable

import pytest

import polycache
from polycache import Cache
from polycache.exceptions import ConfigurationError, SerializationError

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_json_serializer_round_trips_and_counts(cache: Cache) -> None:
    c = Cache("memory://", serializer="json")
    assert c.serializer == "json"
    value = {"a": [1, 2.5, None, True], "é": "ü"}
    c.set("doc", value)
    assert c.get("doc") == value
    c.set("n", 41)
    assert c.incr("n") == 42
    assert c.get("n") == 42
    # The stored bytes are compact JSON text any program can read.
    raw = Cache(c.location, serializer="raw")
    assert cache.serializer == "pickle"
    del raw
    shared = Cache("memory://sec-json", serializer="json")
    shared.set("k", [1, "x"])
    assert Cache("memory://sec-json", serializer="raw").get("k") == b'[1,"x"]'


@pytest.mark.parametrize("bad", [{1, 2}, object(), b"bytes", float("nan")])
def test_json_refuses_what_json_cannot_hold(bad: object) -> None:
    c = Cache("memory://", serializer="json")
    with pytest.raises(SerializationError) as info:
        c.set("k", bad)
    assert isinstance(info.value, (TypeError, ValueError))
    assert isinstance(info.value, TypeError)
    assert "json" in str(info.value)
    assert c.get("k") is None


def test_raw_serializer_is_bytes_in_bytes_out() -> None:
    c = Cache("memory://", serializer="raw")
    c.set("b", b"\x00\xffbytes")
    assert c.get("b") == b"\x00\xffbytes"
    c.set("ba", bytearray(b"ba"))
    c.set("mv", memoryview(b"mv"))
    assert c.get_many(["ba", "mv"]) == {"ba": b"ba", "mv": b"mv"}
    c.set("n", b"41")
    assert c.incr("n") == 42
    assert c.get("n") == b"42"
    for bad in ["text", 5, None]:
        with pytest.raises(SerializationError) as info:
            c.set("s", bad)
        assert isinstance(info.value, TypeError)
        assert "raw serializer stores bytes" in str(info.value)
    assert c.get("s") is None
    with pytest.raises(ConfigurationError, match="unknown serializer"):
        Cache("memory://", serializer="yaml")


def test_signed_values_rotate_and_forgeries_miss() -> None:
    old = Cache("memory://sec-sign", signing_key="key-2025")
    old.set("session", {"user": "alice"})
    old.set("visits", 10)
    rotated = Cache("memory://sec-sign", signing_key=b"key-2026", old_signing_keys=["key-2025"])
    assert rotated.get("session") == {"user": "alice"}
    assert rotated.incr("visits") == 11
    wrong = Cache("memory://sec-sign", signing_key="not-the-key")
    assert wrong.get("session") is None
    assert wrong.stats()["misses"] == 1
    # A pickle a forger writes straight into the store is never unpickled.
    forger = Cache("memory://sec-sign", serializer="raw")
    forger.set("evil", pickle.dumps(Exploding()))
    assert rotated.get("evil") is None
    assert "signing_key" not in repr(rotated) or "key-2026" not in repr(rotated)


class Exploding:
    def __reduce__(self) -> Any:
        return (pytest.fail, ("a forged pickle was unpickled",))


def test_compressed_values_are_read_by_any_reader(tmp_path: pathlib.Path) -> None:
    url = f"sqlite://{tmp_path}/c.db"
    writer = Cache(url, compress_min_size=256, compress_level=3)
    big = "polycache " * 2000
    writer.set("big", big)
    assert Cache(url).get("big") == big
    # Every reader expands it, raw included; the table holds the small marked form.
    assert Cache(url, serializer="raw").get("big") == pickle.dumps(big, 5)
    with sqlite3.connect(tmp_path / "c.db") as db:
        (stored,) = db.execute("SELECT value FROM polycache_cache WHERE key = ?", (b":1:big",)).fetchone()
    assert stored.startswith(b"\x00PCZST1\x00") and len(stored) < 1000


def _libpolycache() -> ctypes.CDLL:
    """The C library, built by the C suite (or here, when this runs alone)."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    lib = target / "debug" / "libpolycache.so"
    if not lib.exists():
        subprocess.run(["cargo", "build", "-p", "polycache-ffi"], cwd=ROOT, check=True, stdin=subprocess.DEVNULL)
    c = ctypes.CDLL(str(lib))
    c.polycache_cache_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
    c.polycache_cache_set.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int64,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    c.polycache_cache_get.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_void_p),
    ]
    c.polycache_value_data.argtypes = [ctypes.c_void_p]
    c.polycache_value_data.restype = ctypes.POINTER(ctypes.c_char)
    c.polycache_value_len.argtypes = [ctypes.c_void_p]
    c.polycache_value_len.restype = ctypes.c_size_t
    c.polycache_value_free.argtypes = [ctypes.c_void_p]
    c.polycache_cache_free.argtypes = [ctypes.c_void_p]
    c.polycache_error_message.argtypes = [ctypes.c_void_p]
    c.polycache_error_message.restype = ctypes.c_char_p
    c.polycache_error_free.argtypes = [ctypes.c_void_p]
    return c


def test_values_written_by_the_c_library_read_from_python(tmp_path: pathlib.Path) -> None:
    c = _libpolycache()
    url = f"sqlite://{tmp_path}/shared.db?signing_key=shared-secret&compress_min_size=64"
    handle, err = ctypes.c_void_p(), ctypes.c_void_p()
    assert c.polycache_cache_open(url.encode(), ctypes.byref(handle), ctypes.byref(err)) == 0
    try:
        big = b"from C " * 100
        for key, data in [(b"greeting", b"hello from C"), (b"big", big)]:
            assert c.polycache_cache_set(handle, key, data, len(data), -2, ctypes.byref(err)) == 0
        py = Cache(f"sqlite://{tmp_path}/shared.db", serializer="raw", signing_key="shared-secret")
        assert py.get("greeting") == b"hello from C"
        assert py.get("big") == big
        # And back: Python writes bytes, C reads them.
        py.set("reply", b"hello from Python")
        value = ctypes.c_void_p()
        assert c.polycache_cache_get(handle, b"reply", ctypes.byref(value), ctypes.byref(err)) == 0
        got = ctypes.string_at(c.polycache_value_data(value), c.polycache_value_len(value))
        c.polycache_value_free(value)
        assert got == b"hello from Python"
        # Without the key, Python does not serve the signed bytes.
        assert Cache(f"sqlite://{tmp_path}/shared.db", serializer="raw").get("greeting") is None
    finally:
        c.polycache_cache_free(handle)


SECRET = "Pw-py-4q7Z-distinctive"


def _seen(make: Callable[[], Any]) -> str:
    """Everything a user sees of a cache `make()` opens and of its errors."""
    out: list[str] = []
    try:
        cache = make()
    except Exception as err:  # noqa: BLE001 - the message is what is checked
        return f"{err!s}\n{err!r}\n{err.__cause__!r}\n"
    out += [repr(cache), str(cache), getattr(cache, "location", "")]
    inner = getattr(cache, "polycache", cache)
    if hasattr(inner, "stats_prometheus"):
        out.append(inner.stats_prometheus("x"))
    calls: list[Callable[[], object]] = [lambda: cache.get("k"), lambda: cache.set("k", "v"), cache.clear]
    for call in calls:
        try:
            call()
        except Exception as err:  # noqa: BLE001 - the message is what is checked
            out += [str(err), repr(err), repr(err.__cause__)]
    return "\n".join(out)


def _configured(url: str) -> Cache:
    handler = polycache.CacheHandler()
    handler.configure({"default": {"LOCATION": url, "OPTIONS": {"signing_key": SECRET}}})
    return handler["default"]


def test_passwords_and_signing_keys_never_show() -> None:
    import polycache.django
    import polycache.flask

    dead = servers.free_port()
    urls = [
        f"redis://:{SECRET}@127.0.0.1:{dead}/0",
        f"redis://:{SECRET}@127.0.0.1:{dead}/0?fail_open=true",
        f"memcached://u:{SECRET}@127.0.0.1:{dead}",
        f"postgres://u:{SECRET}@127.0.0.1:{dead}/db",
        f"postgres://u@127.0.0.1:{dead}/db?password={SECRET}",
        "tiered://?l2=" + urllib.parse.quote(f"redis://:{SECRET}@127.0.0.1:{dead}/0", safe=""),
        f"memory://?signing_key={SECRET}",
        f"nosuch://:{SECRET}@h",
        f"redis://:{SECRET}@127.0.0.1:{dead}/0?bogus=1",
        f"/var/cache/site?signing_key={SECRET}",
    ]
    seen = []
    for url in urls:
        seen.append(_seen(lambda: Cache(url)))
        seen.append(_seen(lambda: Cache(url.split("?")[0], signing_key=SECRET, options={"bogus": 1})))
        seen.append(_seen(lambda: polycache.django.Cache(url, {"OPTIONS": {"SIGNING_KEY": SECRET}})))
        seen.append(_seen(lambda: polycache.django.Cache(url, {"OPTIONS": {"bogus": SECRET}})))
        seen.append(_seen(lambda: polycache.flask.Cache(url, signing_key=SECRET)))
        seen.append(_seen(lambda: _configured(url)))
    text = "\n".join(seen)
    assert "***" in text
    assert SECRET not in text, text


def test_django_options_set_how_values_are_stored() -> None:
    import polycache.django

    c = polycache.django.Cache(
        "memory://sec-django",
        {"OPTIONS": {"SERIALIZER": "json", "SIGNING_KEY": "k1", "OLD_SIGNING_KEYS": ["k0"], "COMPRESS_MIN_SIZE": 100}},
    )
    c.set("k", {"a": 1})
    assert c.get("k") == {"a": 1}
    assert Cache("memory://sec-django", serializer="raw", signing_key="k1").get("k") == b'{"a":1}'
    assert "k1" not in repr(c) and "k1" not in c.location
    with pytest.raises(polycache.django.InvalidOptionError):
        polycache.django.Cache("memory://", {"OPTIONS": {"OLD_SIGNING_KEYS": "k0"}})
    with pytest.raises(ConfigurationError):
        polycache.django.Cache("memory://", {"OPTIONS": {"SERIALIZER": "yaml"}})


def test_flask_settings_set_how_values_are_stored() -> None:
    import polycache.flask

    c = polycache.flask.Cache.factory(
        None, {"CACHE_POLYCACHE_URL": "memory://", "CACHE_SERIALIZER": "raw", "CACHE_SIGNING_KEY": "k"}, [], {}
    )
    assert c.polycache.serializer == "raw"
    c.set("b", b"bytes")
    assert c.get("b") == b"bytes"
    with pytest.raises(TypeError):
        c.set("s", "text")


def test_django_serializer_property_and_lower_case_options() -> None:
    import polycache.django

    assert polycache.django.Cache("memory://sec-dj-ser", {}).serializer == "pickle"
    upper = polycache.django.Cache("memory://sec-dj-ser", {"OPTIONS": {"SERIALIZER": "json"}})
    assert upper.serializer == "json"
    lower = polycache.django.Cache(
        "memory://sec-dj-ser2",
        {"OPTIONS": {"serializer": "raw", "signing_key": "k1", "old_signing_keys": "k0", "compress_min_size": 10}},
    )
    assert lower.serializer == "raw"
    lower.set("b", b"x" * 100)
    assert lower.get("b") == b"x" * 100
    assert Cache("memory://sec-dj-ser2", serializer="raw", signing_key="k1").get("b") == b"x" * 100
    assert Cache("memory://sec-dj-ser2", serializer="raw", signing_key="k0").get("b") is None
    with pytest.raises(AttributeError):
        lower.serializer = "json"  # type: ignore[misc]

