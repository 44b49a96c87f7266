"""``get_or_set(..., tags=[...])`` where it runs Python code: the tags' versions are read
after the miss and *before* the default is computed, so a value computed while one of its
tags is invalidated is stored with the old version and never served.

Shared by ``polycache.Cache.aget_or_set`` and both ``get_or_set`` twins of
``polycache.django.Cache``; the sync ``polycache.Cache.get_or_set`` does the same natively.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

_MISSING: Any = object()


def get_or_set_tagged(cache: Any, key: Any, default: Any, timeout: Any, version: Any, tags: Sequence[str]) -> Any:
    # The tags are known: the value and their versions in one request.
    value = cache._get_tagged(key, _MISSING, version, tags)
    if value is not _MISSING:
        return value
    stamp = cache._tag_stamp(tags)
    if callable(default):
        default = default()
    if cache._set_stamped(key, default, timeout, version, stamp, True):
        return default
    # Another writer won the race, or the entry there is an invalidated one.
    value = cache.get(key, _MISSING, version=version)
    if value is _MISSING:
        cache._set_stamped(key, default, timeout, version, stamp, False)
        return default
    return value


async def aget_or_set_tagged(
    cache: Any, key: Any, default: Any, timeout: Any, version: Any, tags: Sequence[str]
) -> Any:
    value = await cache._aget_tagged(key, _MISSING, version, tags)
    if value is not _MISSING:
        return value
    stamp = await cache._atag_stamp(tags)
    if callable(default):
        default = default()
        if inspect.isawaitable(default):
            default = await default
    if await cache._aset_stamped(key, default, timeout, version, stamp, True):
        return default
    value = await cache.aget(key, _MISSING, version=version)
    if value is _MISSING:
        await cache._aset_stamped(key, default, timeout, version, stamp, False)
        return default
    return value
