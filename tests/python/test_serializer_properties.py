"""Property tests of the serializer's native decoder: stored bytes from a shared store are
untrusted, so `loads` must never crash on them and must always agree with Django's
`RedisSerializer.loads` (the native fast path is only a faster route to the same answer).

The native decoder lives in the PyO3 crate (python/src/serializer.rs), where a Rust fuzzer
cannot call it without an interpreter; hypothesis drives it through the built wheel instead.
The generated pickles never contain the opcodes that import or call anything, so the
reference `pickle.loads` runs no code.
"""

from __future__ import annotations

import math
import pickle
import struct
from typing import Any

from django.core.cache.backends.redis import RedisSerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polycache
from polycache._polycache import dumps, loads

DJANGO = RedisSerializer()

# The opcodes that can reach a callable: GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE, NEWOBJ,
# NEWOBJ_EX, BUILD, EXT1/2/4. Without them pickle.loads only builds plain data.
CODE_OPCODES = frozenset(b"c\x93ioR\x81\x92b\x82\x83\x84")

# The opcodes of the native shapes (serializer.rs), with lengths that are right or wrong.
PROTO, FRAME, STOP, MEMOIZE = b"\x80", b"\x95", b".", b"\x94"
NATIVE_OPS = [b"N", b"\x88", b"\x89", b"G", b"\x8c", b"C", b"X", b"B"]

SETTINGS = settings(
    max_examples=400,
    deadline=None,  # timing assertions flake on a loaded machine
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # no .hypothesis directory in the checkout
)


# Arbitrary bytes without the code opcodes, wherever pickle could read them as opcodes.
SAFE_BYTES = st.lists(st.integers(0, 255).filter(lambda b: b not in CODE_OPCODES), max_size=300).map(bytes)


@st.composite
def native_shaped(draw: st.DrawFn) -> bytes:
    """Bytes shaped like the pickles the native decoder reads, with every field fuzzed."""
    proto = draw(st.sampled_from([b"\x04", b"\x05", b"\x03", b"\x06", b"\x00"]))
    op = draw(st.sampled_from(NATIVE_OPS))
    payload = draw(SAFE_BYTES)
    if op in (b"\x8c", b"C"):
        length = bytes([draw(st.integers(0, 255))]) if draw(st.booleans()) else bytes([min(len(payload), 255)])
        payload = payload[:255]
    elif op in (b"X", b"B"):
        n = draw(st.sampled_from([len(payload), len(payload) + 1, max(len(payload) - 1, 0), 2**32 - 1]))
        length = struct.pack("<I", n)
    elif op == b"G":
        length, payload = b"", struct.pack(">d", draw(st.floats())) if draw(st.booleans()) else payload[:9]
    else:
        length, payload = b"", b""
    tail = draw(st.sampled_from([STOP, MEMOIZE + STOP, b"", STOP + STOP, b"x"]))
    body = op + length + payload + tail
    if draw(st.booleans()):
        size = draw(st.sampled_from([len(body), len(body) + 1, len(body) - 1, 2**64 - 1]))
        body = FRAME + struct.pack("<Q", max(size, 0)) + body
    return PROTO + proto + body


UNTRUSTED = st.one_of(
    native_shaped(),
    SAFE_BYTES,
    st.from_regex(rb"\A[ \t+-]?[0-9_]{0,30}[ \n]?\Z"),
)


def outcome(fn: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except Exception as exc:  # noqa: BLE001 - comparing whatever each side raises
        return "error", exc


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@SETTINGS
@given(UNTRUSTED)
def test_loads_agrees_with_django_on_untrusted_bytes(data: bytes) -> None:
    ours, theirs = outcome(loads, data), outcome(DJANGO.loads, data)
    if theirs[0] == "ok":
        assert ours[0] == "ok", (data, ours[1])
        assert same_value(ours[1], theirs[1]), (data, ours[1], theirs[1])
    else:
        assert ours[0] == "error", (data, ours[1])
        assert isinstance(ours[1], polycache.SerializationError), (data, ours[1])
        assert type(ours[1].__cause__) is type(theirs[1]), (data, ours[1].__cause__, theirs[1])


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=40_000),
    st.lists(st.integers(), max_size=5),
)


@SETTINGS
@given(VALUES)
def test_dumps_is_djangos_bytes_and_loads_back(value: Any) -> None:
    data = dumps(value)
    expected = DJANGO.dumps(value)
    assert data == (repr(expected).encode() if type(expected) is int else expected)
    assert same_value(loads(data), value)
    assert same_value(loads(data), pickle.loads(data) if data[:1] == PROTO else int(data))


@SETTINGS
@given(UNTRUSTED, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_enveloped_bytes_read_as_their_payload(data: bytes, fresh: int, expires: int) -> None:
    """A value stored with refresh metadata (XFetch, jobs) reads as its payload."""
    wrapped = b"\0PCENV1\0" + struct.pack("<QQQ", fresh, expires, 7) + data
    ours, payload = outcome(loads, wrapped), outcome(loads, data)
    assert ours[0] == payload[0], (wrapped, ours[1], payload[1])
    if ours[0] == "ok":
        assert same_value(ours[1], payload[1])
    else:
        assert isinstance(ours[1], polycache.SerializationError)
