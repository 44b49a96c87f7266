"""The serializer writes and reads exactly what Django's RedisSerializer does.

`polycache._polycache.dumps/loads` are the functions every cache operation uses; the native
fast path must produce the very bytes `pickle.dumps(v, 5)` produces, and fall back to pickle
for everything else.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from django.core.cache.backends.redis import RedisSerializer

import polycache
from polycache._polycache import dumps, loads

DJANGO = RedisSerializer()


def django_bytes(value: Any) -> bytes:
    """What Django's RedisCache sends to Redis for `value` (redis-py encodes ints as repr)."""
    out = DJANGO.dumps(value)
    return repr(out).encode() if type(out) is int else out


class Custom:
    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and self.payload == other.payload


STRINGS: list[Any] = [
    "",
    "a",
    "abcdefghijklmnop",
    "é",
    "日本語テキスト",
    "emoji 🎉",
    "\x00nul",
    "x" * 254,
    "x" * 255,
    "x" * 256,
    "é" * 127,  # 254 UTF-8 bytes
    "é" * 128,  # 256 UTF-8 bytes: the long opcode
    "x" * 4096,
    "x" * (32 * 1024),
    "x" * (32 * 1024 + 1),
    "x" * 65529,
    "x" * 65530,
    "x" * 65531,
    "x" * 65535,
    "x" * 65536,
    "x" * 70000,
    "é" * 40000,
    "\ud800",  # lone surrogates: pickle's surrogatepass, via the fallback
    "a\udfffb",
]
BYTES: list[Any] = [
    b"",
    b"\x00",
    b"\x80\x05",
    b"x" * 255,
    b"x" * 256,
    b"x" * 65535,
    b"x" * 65536,
    bytes(range(256)) * 300,
]
FLOATS: list[Any] = [0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.pi, math.inf, -math.inf, math.nan]
INTS: list[Any] = [0, 1, -1, 42, 2**31, 2**63 - 1, -(2**63), 2**63, -(2**64), 10**18, 10**19, 10**100]
OTHERS: list[Any] = [True, False, None]


@pytest.mark.parametrize("value", STRINGS + BYTES + FLOATS + OTHERS, ids=repr)
def test_pickled_bytes_identical_to_pickle(value: Any) -> None:
    expected = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    assert pickle.HIGHEST_PROTOCOL == 5
    assert dumps(value) == expected
    assert dumps(value) == django_bytes(value)


@pytest.mark.parametrize("value", INTS, ids=repr)
def test_ints_are_ascii_decimal(value: int) -> None:
    assert dumps(value) == str(value).encode()
    assert dumps(value) == django_bytes(value)
    assert loads(dumps(value)) == value
    assert type(loads(dumps(value))) is int


def test_bool_is_pickled_not_decimal() -> None:
    assert dumps(True) == pickle.dumps(True, 5)
    assert loads(dumps(True)) is True
    assert loads(dumps(False)) is False


class MyInt(int):
    pass


def test_int_subclass_is_pickled() -> None:
    assert dumps(MyInt(5)) == pickle.dumps(MyInt(5), 5)
    assert type(loads(dumps(MyInt(5)))) is MyInt


def test_int_beyond_str_digit_limit_is_pickled() -> None:
    if not hasattr(sys, "get_int_max_str_digits"):
        pytest.skip("no int digit limit on this Python")
    huge = 10 ** (sys.get_int_max_str_digits() + 10)
    assert dumps(huge) == pickle.dumps(huge, 5)
    assert loads(dumps(huge)) == huge


@pytest.mark.parametrize("value", STRINGS + BYTES + FLOATS + OTHERS, ids=repr)
def test_roundtrip_native_types(value: Any) -> None:
    got = loads(dumps(value))
    assert type(got) is type(value)
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(got)
    else:
        assert got == value
    if isinstance(value, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, value)
    if isinstance(value, str):
        # An ASCII str is built by copying its bytes into a new object: it must hash, compare
        # and report its kind as the decoder's would.
        assert hash(got) == hash(value)
        assert got.isascii() == value.isascii()
        assert {got: 1}.get(value) == 1


ROUNDTRIP: list[Any] = [
    {"a": 1, "b": [1, 2, {"c": (3, 4)}]},
    [1, "two", 3.0, None, True],
    (1, 2, 3),
    {1, 2},
    frozenset({"x"}),
    Decimal("1.10"),
    Fraction(1, 3),
    Custom({"nested": [Custom(1)]}),
    bytearray(b"abc"),
    complex(1, 2),
]


@pytest.mark.parametrize("value", ROUNDTRIP, ids=repr)
def test_roundtrip_other_types_via_pickle(value: Any) -> None:
    data = dumps(value)
    assert data == pickle.dumps(value, 5)
    assert loads(data) == value
    assert DJANGO.loads(data) == value


@pytest.mark.parametrize("value", INTS + STRINGS + BYTES + FLOATS + OTHERS + ROUNDTRIP, ids=repr)
def test_django_reads_polycache_and_back(value: Any) -> None:
    ours = dumps(value)
    theirs = django_bytes(value)
    assert ours == theirs
    for read in (loads(theirs), DJANGO.loads(ours)):
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(read)
        else:
            assert read == value


@pytest.mark.parametrize(
    "data",
    [b" 42", b"42 ", b"\t-7\n", b"+5", b"1_000", b"0042", b"-0", b"9" * 30, b"-" + b"9" * 25],
    ids=repr,
)
def test_loads_accepts_what_int_accepts(data: bytes) -> None:
    assert loads(data) == int(data) == DJANGO.loads(data)


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps("protocol 2", 2),
        pickle.dumps("protocol 4", 4),
        pickle.dumps([1, 2], 4),
        pickle.dumps(b"b", 3),
        pickle.dumps(1.5, 0),
        pickle.dumps("p0", 0),
        pickle.dumps("x" * 100, 5) + b"trailing bytes ignored by pickle",
        # A frame shorter than the rest: not the native shape, so pickle decides.
        b"\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00\x8c\x02ab\x94.",
    ],
    ids=repr,
)
def test_loads_other_pickles_like_django(data: bytes) -> None:
    assert loads(data) == DJANGO.loads(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"-", b"not a pickle", b"\x80\x05\x95", b"\x80\x05\x8c\x05ab", b"\x80\x05\x8c\x02\xff\xfe\x94."],
    ids=repr,
)
def test_loads_garbage_is_serialization_error(data: bytes) -> None:
    with pytest.raises(Exception) as django_error:
        DJANGO.loads(data)
    with pytest.raises(polycache.SerializationError) as info:
        loads(data)
    assert type(info.value.__cause__) is type(django_error.value)


def test_unpicklable_names_the_type() -> None:
    with pytest.raises(polycache.SerializationError, match="function"):
        dumps(lambda: None)


def test_cache_stores_djangos_bytes(store_name: str) -> None:
    """Values written through a cache are the serializer's bytes (read back by key)."""
    cache = polycache.Cache(f"memory://{store_name}")
    for i, value in enumerate(STRINGS[:12] + BYTES[:5] + FLOATS[:-1] + INTS + OTHERS + ROUNDTRIP):
        cache.set(f"k{i}", value)
        assert cache.get(f"k{i}") == value


@pytest.mark.parametrize("serializer", ["pickle", "json", "raw"])
def test_memory_hits_share_only_immutable_objects(serializer: str) -> None:
    # A memory:// hit may hand out the object an earlier read of the same stored bytes
    # decoded, but only when nobody can change it: a caller mutating what it read must
    # never change what the next caller reads.
    cache = polycache.Cache("memory://", serializer=serializer)
    if serializer == "raw":
        immutable: list[Any] = [b"abc"]
        mutable: list[Any] = []
    elif serializer == "json":
        immutable = ["text", 1.5, True, None]
        mutable = [[1, 2], {"a": [1]}]
    else:
        immutable = ["text", b"bytes", 1.5, ("a", 1, ("b", None)), 10**30]
        mutable = [[1, 2], {"a": [1]}, bytearray(b"xy"), ("a", [1]), {1, 2}]
    for i, value in enumerate(immutable + mutable):
        cache.set(f"k{i}", value)
    for i, value in enumerate(immutable):
        first = cache.get(f"k{i}")
        assert first == value and type(first) is type(value)
        assert cache.get(f"k{i}") == value
    for i, value in enumerate(mutable, start=len(immutable)):
        first = cache.get(f"k{i}")
        assert first == value
        second = cache.get(f"k{i}")
        assert second is not first, f"a {type(value).__name__} must not be shared"
        if isinstance(first, list):
            first.append("mutated")
        elif isinstance(first, dict):
            first["mutated"] = True
        elif isinstance(first, (bytearray, set)):
            first.clear()
        assert cache.get(f"k{i}") == value


def test_memory_hits_keep_objects_read_again_not_objects_read_once() -> None:
    # An object is kept for later hits when the same stored bytes miss twice in a row; a
    # pass over many values read once each keeps none of them, so it pushes out no object
    # of a key read again and again.
    cache = polycache.Cache("memory://")
    cache.set("hot", "hot value")
    cache.get("hot")  # a miss noted...
    second = cache.get("hot")  # ...and the second one kept
    assert cache.get("hot") is second
    once = {f"once-{i}": f"value {i}" for i in range(5_000)}
    cache.set_many(once)
    for key, value in once.items():
        assert cache.get(key) == value
    assert cache.get("hot") is second
    # Read again, a value read once before is kept like any other.
    assert cache.get("once-7") is not cache.get("once-7")
    assert cache.get("once-7") is cache.get("once-7")


def test_memory_hits_see_new_values_after_a_write() -> None:
    # A slot matches only the very stored bytes it was decoded from: an overwrite, a delete
    # or an incr is never answered with the old object.
    cache = polycache.Cache("memory://")
    for round_ in range(50):
        cache.set("k", f"v{round_}")
        assert cache.get("k") == f"v{round_}"
        assert cache.get("k") == f"v{round_}"
    cache.delete("k")
    assert cache.get("k") is None
    cache.set("n", 1)
    assert cache.get("n") == 1
    cache.incr("n")
    assert cache.get("n") == 2


# Pairs of values of the same type whose stored bytes have the same length: a store may
# rewrite such an entry in place, at the same address.
SAME_LENGTH = [
    ("aaaa", "bbbb"),
    (b"aaaa", b"bbbb"),
    (1.5, 2.5),
    (1234, 5678),
    (("a", 1), ("b", 2)),
    ("a" * 100, "b" * 100),  # longer than a slot's own copy
    ("a" * 300, "b" * 300),  # too long to keep
]


@pytest.mark.parametrize(("old", "new"), SAME_LENGTH)
def test_memory_hits_see_a_value_rewritten_in_place(old: Any, new: Any) -> None:
    # The shared-object table keys a slot on the bytes, not on where the store keeps them:
    # a value rewritten under the same key at the same length (maybe at the same address)
    # is never answered with the object decoded from the old bytes, by any reader.
    cache = polycache.Cache("memory://")
    for round_ in range(4):
        for value in (old, new):
            if round_ % 2:
                # Freed first: the new entry may take the old one's address.
                cache.delete("k")
            cache.set("k", value)
            assert cache.get("k") == value
            assert cache.get("k") == value
            assert cache.get("k", "absent") == value
            assert cache.get_many(["k"]) == {"k": value}
            assert asyncio.run(aget(cache, "k")) == value
            assert cache.get("k") == value


async def aget(cache: Any, key: str) -> Any:
    return await cache.aget(key)
