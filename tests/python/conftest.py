"""Shared fixtures. The tests run against the installed wheel, never the source tree."""

from __future__ import annotations

import itertools

import pytest

import polycache

_names = itertools.count()


@pytest.fixture
def cache() -> polycache.Cache:
    """A fresh private memory cache with Django's defaults."""
    return polycache.Cache("memory://?max_entries=10000")


@pytest.fixture
def store_name() -> str:
    """A memory store name no other test uses (named stores are process-wide)."""
    return f"test-store-{next(_names)}"
