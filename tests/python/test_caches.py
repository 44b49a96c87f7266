"""polycache.caches: named caches from a Django-shaped settings mapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import polycache
from polycache import CacheHandler


@pytest.fixture
def handler() -> CacheHandler:
    return CacheHandler()


@pytest.fixture
def global_caches() -> Iterator[CacheHandler]:
    yield polycache.caches
    polycache.caches.configure({"default": {"LOCATION": "memory://"}})


def test_default_before_configure(handler: CacheHandler) -> None:
    default = handler["default"]
    assert default.location == "memory://"
    assert handler["default"] is default
    assert handler.default is default
    assert list(handler) == ["default"]
    with pytest.raises(KeyError, match="other"):
        handler["other"]


def test_configure_django_shape(global_caches: CacheHandler) -> None:
    global_caches.configure(
        {
            "default": {
                "LOCATION": "memory://",
                "TIMEOUT": 60,
                "KEY_PREFIX": "x",
                "VERSION": 2,
                "OPTIONS": {"max_entries": 1000},
            },
            "other": {"BACKEND": "polycache.django.PolycacheCache", "LOCATION": "memory://", "TIMEOUT": None},
        }
    )
    default = polycache.caches["default"]
    assert (default.key_prefix, default.version, default.default_timeout) == ("x", 2, 60.0)
    other = polycache.caches["other"]
    assert other.default_timeout is None
    assert sorted(polycache.caches) == ["default", "other"]
    assert len(polycache.caches) == 2
    default.set("k", "v")
    assert default.get("k") == "v"
    assert other.get("k") is None
    assert default.make_key("k") == "x:2:k"


def test_options_bound_the_store(handler: CacheHandler) -> None:
    handler.configure({"default": {"LOCATION": "memory://", "OPTIONS": {"max_entries": 10}}})
    c = handler["default"]
    for i in range(100):
        c.set(f"k{i}", i)
    assert sum(c.has_key(f"k{i}") for i in range(100)) <= 10


def test_location_defaults_to_memory(handler: CacheHandler) -> None:
    handler.configure({"default": {"TIMEOUT": 5}})
    assert handler["default"].location == "memory://"
    assert handler["default"].default_timeout == 5.0


def test_timeout_zero_expires_everything(handler: CacheHandler) -> None:
    handler.configure({"default": {"TIMEOUT": 0}})
    handler["default"].set("k", 1)
    assert handler["default"].get("k") is None


def test_named_locations_share_a_store(handler: CacheHandler) -> None:
    handler.configure(
        {
            "default": {"LOCATION": "memory://caches-shared"},
            "second": {"LOCATION": "memory://caches-shared"},
        }
    )
    handler["default"].set("k", "v")
    assert handler["second"].get("k") == "v"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"default": {"LOCATON": "memory://"}}, "LOCATON"),
        ({"default": {"KEY_FUNCTION": "f", "TIMOUT": 1}}, "KEY_FUNCTION"),
        ({"default": {"TIMOUT": 1}}, "TIMOUT"),
        ({"other": {"LOCATION": "memory://"}}, "default"),
        ({"default": {"LOCATION": "nosuch://"}}, "nosuch"),
        ({"default": {"LOCATION": "memory://", "OPTIONS": {"max_entries": -1}}}, "max_entries"),
        ({"default": {"LOCATION": "memory://", "OPTIONS": {"max_entires": 5}}}, "max_entires"),
        ({"default": {"LOCATION": 5}}, "LOCATION"),
        ({"default": {"TIMEOUT": "60"}}, "TIMEOUT"),
        ({"default": {"VERSION": "2"}}, "VERSION"),
        ({"default": {"KEY_PREFIX": 1}}, "KEY_PREFIX"),
        ({"default": {"OPTIONS": [1]}}, "OPTIONS"),
        ({"default": "memory://"}, "default"),
    ],
)
def test_bad_settings_name_the_culprit(handler: CacheHandler, settings: Any, named: str) -> None:
    with pytest.raises(polycache.ConfigurationError, match=named):
        handler.configure(settings)


def test_option_errors_name_the_option_and_where_it_came_from(handler: CacheHandler) -> None:
    with pytest.raises(polycache.ConfigurationError) as err:
        handler.configure({"default": {"LOCATION": "memory://", "OPTIONS": {"MAX_ENTRIES": 0}}})
    assert str(err.value).startswith("OPTIONS['MAX_ENTRIES'] of CACHES['default']: invalid value \"0\"")
    with pytest.raises(polycache.ConfigurationError) as err:
        handler.configure({"default": {"LOCATION": "memory://?max_entries=0"}})
    assert str(err.value).startswith("cache 'default': query parameter max_entries in the URL: ")
    with pytest.raises(polycache.ConfigurationError) as err:
        polycache.Cache("memory://", options={"max_entries": 0})
    assert str(err.value).startswith("options['max_entries'] of polycache.Cache(): ")
    # Given in the URL and in OPTIONS: one of them would be silently unused.
    with pytest.raises(polycache.ConfigurationError, match="max_bytes is given more than once|'max_bytes' is given more than once"):
        handler.configure({"default": {"LOCATION": "memory://?max_bytes=10", "OPTIONS": {"max_bytes": 20}}})


def test_failed_configure_keeps_previous(handler: CacheHandler) -> None:
    handler.configure({"default": {"KEY_PREFIX": "kept"}})
    with pytest.raises(polycache.ConfigurationError):
        handler.configure({"default": {"LOCATION": "nosuch://"}})
    assert handler["default"].key_prefix == "kept"


def test_close_all(handler: CacheHandler) -> None:
    handler["default"].set("k", 1)
    handler.close_all()
    assert handler["default"].get("k") == 1


def test_configure_takes_djangos_own_options(handler: CacheHandler) -> None:
    # The CACHES of docs/python/django.md, as Django reads it.
    handler.configure(
        {
            "default": {"BACKEND": "polycache.django.Cache", "LOCATION": "memory://", "TIMEOUT": 300},
            "local": {"BACKEND": "polycache.django.Cache", "LOCATION": "memory://", "OPTIONS": {"MAX_ENTRIES": 3}},
            "signed": {"LOCATION": "memory://", "OPTIONS": {"SERIALIZER": "json", "CULL_FREQUENCY": 2}},
        }
    )
    local = handler["local"]
    for i in range(10):
        local.set(f"k{i}", i)
    assert sum(local.has_key(f"k{i}") for i in range(10)) <= 3
    assert handler["signed"].serializer == "json"
    with pytest.raises(polycache.ConfigurationError, match="'MAX_ENTRYS'"):
        handler.configure({"default": {"LOCATION": "memory://", "OPTIONS": {"MAX_ENTRYS": 3}}})
    with pytest.raises(polycache.ConfigurationError, match="given both"):
        handler.configure({"default": {"LOCATION": "memory://?timeout=60", "TIMEOUT": 30}})
