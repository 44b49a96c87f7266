"""``polycache.esipy.Cache``: EsiPy's cache interface (get / set / invalidate) and stable keys.

EsiPy does not import on current Python, so the tests drive the interface the way
``esipy.client.EsiClient`` does (``esipy/client.py``): keys are tuples of the URL and
frozensets of the headers, path and query; responses are stored with ``set(key, value,
expire)``, where ``expire`` is -1 when the response has no ``Expires`` header.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections import namedtuple
from typing import Any

import pytest

from polycache.esipy import Cache, canonical_key

_stores = itertools.count()

CachedResponse = namedtuple("CachedResponse", ["status_code", "headers", "content"])


def request_key(url: str, headers: dict[str, str], path: dict[str, str], query: list[tuple[str, str]]) -> Any:
    """What EsiClient.__make_cache_key builds."""
    return (url, frozenset(headers.items()), frozenset(path.items()), frozenset(query))


KEY = request_key(
    "https://esi.evetech.net/latest/characters/{character_id}/",
    {"User-Agent": "EsiPy/Client", "Accept": "application/json", "X-Tenant": "tranquility"},
    {"character_id": "90000001"},
    [("datasource", "tranquility"), ("language", "en"), ("page", "1")],
)


@pytest.fixture
def cache() -> Cache:
    return Cache(f"memory://esipy-test-{next(_stores)}")


def test_get_set_invalidate(cache: Cache) -> None:
    response = CachedResponse(200, {"expires": "soon"}, b'{"name": "x"}')
    assert cache.get(KEY) is None
    assert cache.get(KEY, "default") == "default"
    cache.set(KEY, response, 300)
    assert cache.get(KEY) == response
    cache.invalidate(KEY)
    assert cache.get(KEY) is None


def test_expire_words_follow_esipy(cache: Cache) -> None:
    cache.set(("a",), 1, 1)
    cache.set(("never",), 1, None)
    cache.set(("default",), 1)
    cache.set(("no-expires-header",), 1, -1)
    cache.set(("zero",), 1, 0)
    assert cache.get(("no-expires-header",)) is None and cache.get(("zero",)) is None
    time.sleep(1.3)
    assert [cache.get((k,)) for k in ("a", "never", "default")] == [None, 1, 1]


def test_equal_keys_give_one_entry(cache: Cache) -> None:
    same = request_key(
        "https://esi.evetech.net/latest/characters/{character_id}/",
        {"X-Tenant": "tranquility", "Accept": "application/json", "User-Agent": "EsiPy/Client"},
        {"character_id": "90000001"},
        [("page", "1"), ("language", "en"), ("datasource", "tranquility")],
    )
    cache.set(KEY, "v")
    assert cache.get(same) == "v"
    assert canonical_key(same) == canonical_key(KEY)
    assert canonical_key(KEY).startswith("esi_") and len(canonical_key(KEY)) == 4 + 64
    assert canonical_key(("a", 1)) != canonical_key(("a", "1"))
    assert canonical_key(frozenset({1})) != canonical_key((1,))


def test_keys_are_stable_across_processes() -> None:
    code = (
        "from polycache.esipy import canonical_key\n"
        "key = ('u', frozenset({('h%d' % i, 'v%d' % i) for i in range(20)}), frozenset(), "
        "frozenset({('q', str(i)) for i in range(20)}))\n"
        "print(canonical_key(key))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                             timeout=60, cwd="/")
        outputs.add(out.stdout.strip())
    assert len(outputs) == 1


def test_unhashable_parts_are_refused_by_name(cache: Cache) -> None:
    with pytest.raises(TypeError, match="object"):
        cache.get(("u", object()))


def test_esipy_base_class_when_importable() -> None:
    try:
        from esipy.cache import BaseCache  # type: ignore[import-not-found]
    except Exception:
        pytest.skip("EsiPy is not importable on this Python (its pyswagger dependency)")
    assert isinstance(Cache(), BaseCache)
