"""``aiter_keys``: a key scan as an async iterator, one awaited page at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

from polycache._polycache import KeyScan

__all__ = ["aiter_pages"]


async def aiter_pages(scan: KeyScan) -> AsyncIterator[str]:
    """The keys of ``scan``; each page is read on polycache's runtime and awaited."""
    while True:
        page = await scan.anext_page()
        if page is None:
            return
        for key in page:
            yield key
