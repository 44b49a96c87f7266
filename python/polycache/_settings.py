"""The ``OPTIONS`` of one cache in Django's ``CACHES`` shape, as URL options.

Shared by ``polycache.django.Cache`` and ``polycache.caches.configure`` (which must not import
Django), with the same rules as the core's reader of ``CACHES``-shaped JSON and TOML
(``polycache::Caches``): Django's upper-case names, then any lower-case URL option.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from polycache.exceptions import ConfigurationError

__all__ = ["InvalidOptionError"]

#: Django's own OPTIONS and the URL options they become.
_DJANGO_OPTIONS: dict[str, str] = {"MAX_ENTRIES": "max_entries", "CULL_FREQUENCY": "cull_frequency"}

#: The URL options of ``_DJANGO_OPTIONS`` each scheme takes. Elsewhere (redis, memcached,
#: dummy) they are checked and ignored, as Django's own Redis and Memcached backends ignore
#: them. Where both are taken, either one brings Django's default for the other (300, 3):
#: Django's words select Django's cull (on memory://, its exact LRU).
_SCHEME_DJANGO_OPTIONS: dict[str, frozenset[str]] = {
    "memory": frozenset({"max_entries", "cull_frequency"}),
    "sqlite": frozenset({"max_entries", "cull_frequency"}),
    "postgres": frozenset({"max_entries", "cull_frequency"}),
    "postgresql": frozenset({"max_entries", "cull_frequency"}),
    "file": frozenset({"max_entries", "cull_frequency"}),
}

#: Django's ``MAX_ENTRIES`` and ``CULL_FREQUENCY`` when ``OPTIONS`` gives only the other.
_DEFAULT_MAX_ENTRIES = 300
_DEFAULT_CULL_FREQUENCY = 3

#: polycache's value OPTIONS in Django's upper-case spelling, the URL options they become and
#: the types they take.
_VALUE_OPTIONS: dict[str, tuple[str, type]] = {
    "SERIALIZER": ("serializer", str),
    "SIGNING_KEY": ("signing_key", str),
    "OLD_SIGNING_KEYS": ("old_signing_keys", list),
    "COMPRESS_MIN_SIZE": ("compress_min_size", int),
    "COMPRESS_LEVEL": ("compress_level", int),
}



class InvalidOptionError(ConfigurationError, TypeError):
    """An ``OPTIONS`` entry the location does not take, or a bad value for one.

    A ``TypeError`` as well, as Django's Redis and Memcached backends raise for an
    unexpected option (``got an unexpected keyword argument``).
    """

    __module__ = "polycache.django"


def _url_options(options: object, url: str) -> dict[str, object]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"OPTIONS must be a mapping, not {type(options).__name__}")
    taken = _SCHEME_DJANGO_OPTIONS.get(url.partition("://")[0].lower(), frozenset())
    out: dict[str, object] = {}
    django: dict[str, int] = {}
    for name, value in options.items():
        if not isinstance(name, str):
            raise InvalidOptionError(f"OPTIONS keys must be str, not {type(name).__name__}")
        if name in _VALUE_OPTIONS:
            target, kind = _VALUE_OPTIONS[name]
            out[target] = _value_option(name, value, kind)
        elif name in _DJANGO_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidOptionError(f"OPTIONS[{name!r}] must be an int, not {type(value).__name__}")
            django[_DJANGO_OPTIONS[name]] = value
        elif name.isupper():
            raise InvalidOptionError(
                f"unknown OPTIONS key {name!r}: OPTIONS take MAX_ENTRIES, "
                f"CULL_FREQUENCY, {', '.join(_VALUE_OPTIONS)} and the (lower-case) URL options "
                "of its LOCATION's scheme"
            )
        else:
            out[name] = value
    if django and "cull_frequency" in taken:
        # Django's defaults for the one not given; a lower-case eviction=clock keeps
        # memory://'s default policy with MAX_ENTRIES as its bound.
        django.setdefault("max_entries", _DEFAULT_MAX_ENTRIES)
        if str(out.get("eviction", "lru")).strip().lower() == "lru":
            django.setdefault("cull_frequency", _DEFAULT_CULL_FREQUENCY)
    out.update((name, value) for name, value in django.items() if name in taken)
    return out


def _value_option(name: str, value: object, kind: type) -> object:
    """An OPTIONS entry of ``_VALUE_OPTIONS`` as URL option text; never echoes a key."""
    if kind is list:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise InvalidOptionError(f"OPTIONS[{name!r}] must be a list of str, not {type(value).__name__}")
        if not all(isinstance(k, str) and k and "," not in k for k in value):
            raise InvalidOptionError(f"OPTIONS[{name!r}] must hold non-empty str keys without commas")
        return ",".join(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidOptionError(f"OPTIONS[{name!r}] must be a {kind.__name__}, not {type(value).__name__}")
    return value


#: URL options that are Django settings too: given in the LOCATION, they are the setting.
_URL_SETTINGS: dict[str, str] = {"timeout": "TIMEOUT", "key_prefix": "KEY_PREFIX", "version": "VERSION"}


def _settings_in_url(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its ``timeout``/``key_prefix``/``version`` options, and those options."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    kept, found = [], {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        name = urllib.parse.unquote_plus(name)
        if name in _URL_SETTINGS and name not in found:
            found[name] = urllib.parse.unquote_plus(value)
        else:
            kept.append(pair)
    return (f"{base}?{'&'.join(kept)}" if kept else base), found


def _url_setting(name: str, text: str) -> Any:
    """A Django setting given as URL option text, as Django's own type."""
    if name == "key_prefix":
        return text
    stripped = text.strip()
    if name == "timeout" and stripped.lower() == "none":
        return None
    try:
        number = float(stripped) if name == "timeout" else int(stripped)
    except ValueError:
        kind = "a number of seconds or none" if name == "timeout" else "an integer"
        raise ConfigurationError(f"LOCATION option {name!r} must be {kind}, not {text!r}") from None
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _check_url_settings(location: str, entry: Mapping[str, Any]) -> None:
    """Raises when a setting is both in ``location`` and in ``entry`` (``TIMEOUT``, ...)."""
    given = entry.get("OPTIONS")
    options: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    for name in _settings_in_url(location)[1]:
        setting = _URL_SETTINGS[name]
        if setting in entry or name in options:
            raise ConfigurationError(
                f"{name!r} is given both in LOCATION and as "
                f"{setting if setting in entry else repr(name) + ' in OPTIONS'}; give it in one place"
            )
