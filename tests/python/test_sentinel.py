"""``redis+sentinel://`` from Python: polycache.Cache and Django's LOCATION, through a real sentinel.

The Rust suites test failover, passwords and bad input in depth (core/tests/sentinel.rs,
core/tests/faults.rs); this checks that the URL reaches the master from Python, sync and
async, and that its secrets stay out of messages. Skipped with a reason when the installed
wheel was built without the ``redis`` feature.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator

import pytest

import polycache
from polycache import Cache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

pytestmark = pytest.mark.skipif(
    "redis+sentinel://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the redis feature (POLYCACHE_FEATURES=redis)",
)


@pytest.fixture(scope="module")
def sentinel() -> Iterator[servers.Server]:
    with servers.redis_sentinel() as s:
        yield s


def test_the_url_reaches_the_master_sync_and_async(sentinel: servers.Server) -> None:
    c = Cache(sentinel.url, key_prefix="py")
    c.set("k", {"a": 1})
    assert c.get("k") == {"a": 1}
    c.set("n", 41)
    assert c.incr("n") == 42

    async def awaited() -> None:
        await c.aset("k2", "v")
        assert await c.aget("k2") == "v"

    asyncio.run(awaited())
    # The entries are on the master the sentinel names.
    master = int(sentinel.extra["master"])
    assert servers._talk(master, b"EXISTS py:1:k py:1:n py:1:k2\r\n", b":3")


def test_django_location_is_the_url(sentinel: servers.Server) -> None:
    pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    import polycache.django

    cache = polycache.django.Cache(sentinel.url, {"KEY_PREFIX": "dj"})
    cache.set("k", [1, 2])
    assert cache.get("k") == [1, 2]
    # Django's list form: one URL per sentinel, differing only in the host.
    other = sentinel.url.replace(f":{sentinel.port}/", f":{servers.free_port()}/")
    listed = polycache.django.Cache([other, sentinel.url], {"KEY_PREFIX": "dj"})
    assert listed.get("k") == [1, 2]


def test_the_raw_client_follows_the_sentinels_to_the_master(sentinel: servers.Server) -> None:
    pytest.importorskip("django")
    pytest.importorskip("redis")
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    import polycache.django

    cache = polycache.django.Cache(sentinel.url, {"KEY_PREFIX": "raw"})
    cache.set("k", 7)
    client = cache.client.get_client()
    master = int(sentinel.extra["master"])
    assert client.connection_pool.get_master_address()[1] == master
    assert client.get(cache.make_key("k")) == b"7"
    assert cache.client.get_client() is client
    # write=False: a replica the sentinel lists, or the master while it lists none yet.
    reader = cache.client.get_client(write=False)
    assert reader is not client
    assert reader.ping() is True


def test_bad_sentinel_urls_are_clear_and_keep_secrets(sentinel: servers.Server) -> None:
    with pytest.raises(polycache.ConfigurationError, match="names no master"):
        Cache(f"redis+sentinel://127.0.0.1:{sentinel.port}")
    with pytest.raises(polycache.ConfigurationError, match="names no sentinel"):
        Cache("redis+sentinel:///mymaster")
    with pytest.raises(polycache.ConfigurationError) as caught:
        Cache(f"redis+sentinel://127.0.0.1:{sentinel.port}/?sentinel_password=hunter2")
    assert "hunter2" not in str(caught.value)
    unknown = Cache(f"redis+sentinel://127.0.0.1:{sentinel.port}/nosuch")
    with pytest.raises(polycache.ConfigurationError, match="no master named 'nosuch'"):
        unknown.get("k")
