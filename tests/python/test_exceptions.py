"""The exception hierarchy: one base, builtin meanings kept."""

from __future__ import annotations

import builtins

import pytest

import polycache
from polycache import exceptions


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (polycache.ConnectionError, builtins.ConnectionError),
        (polycache.TimeoutError, builtins.TimeoutError),
        (polycache.ConfigurationError, ValueError),
        (polycache.InvalidKeyError, ValueError),
        (polycache.ValueTooLargeError, ValueError),
        (polycache.KeyNotFoundError, ValueError),
        (polycache.NotAnIntegerError, TypeError),
        (polycache.SerializationError, TypeError),
        (polycache.IntegerOverflowError, OverflowError),
        (polycache.UnsupportedOperationError, NotImplementedError),
    ],
)
def test_subclasses_base_and_builtin(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, polycache.CacheError)
    assert issubclass(cls, builtin)
    err = cls("message")
    assert str(err) == "message"
    with pytest.raises(builtin):
        raise err


def test_base_is_exception() -> None:
    assert issubclass(polycache.CacheError, Exception)
    assert issubclass(polycache.BackendError, polycache.CacheError)


def test_every_exported_exception() -> None:
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, polycache.CacheError), name
        assert getattr(polycache, name) is cls, name


def test_native_errors_are_the_python_classes() -> None:
    c = polycache.Cache()
    with pytest.raises(polycache.KeyNotFoundError):
        c.incr("missing")
    try:
        polycache.Cache("nosuch://")
    except polycache.CacheError as err:
        assert type(err) is polycache.ConfigurationError
    else:
        pytest.fail("no error")
