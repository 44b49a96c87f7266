"""django-redis' hash, set and sorted-set methods, over one native call.

Each method makes its keys as django-redis 7 does (``make_key(key, version)``; hash fields
are used as they are), encodes members and values as django-redis does (set members and
hash values: ints as decimal, everything else pickled with ``pickle.DEFAULT_PROTOCOL``;
sorted-set members: always pickled; never signed or compressed, so that equal members stay
equal bytes), sends one allow-listed command through
``_redis_command`` and shapes the reply as django-redis returns it. Every method has an
awaitable ``a``-twin (``sadd`` / ``asadd``). On a scheme other than ``redis://`` each raises
``UnsupportedOperationError``; a cache with ``fail_open`` answers ``None`` while Redis is
unreachable, as django-redis with ``IGNORE_EXCEPTIONS`` does.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from polycache.exceptions import InvalidArgumentError

#: A planned call: the command, its arguments, and how its reply becomes the answer.
_Plan = tuple[str, list[Any], Callable[[Any, Any], Any]]


def _twins(plan: Callable[..., _Plan]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The sync method and its awaitable twin of one planned command."""

    @functools.wraps(plan)
    def sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        command, cargs, shape = plan(self, *args, **kwargs)
        return _shaped(self, shape, self._redis_command(command, cargs))

    sync.__name__ = sync.__qualname__ = plan.__name__.lstrip("_")

    @functools.wraps(plan)
    async def awaited(self: Any, *args: Any, **kwargs: Any) -> Any:
        command, cargs, shape = plan(self, *args, **kwargs)
        return _shaped(self, shape, await self._aredis_command(command, cargs))

    awaited.__name__ = awaited.__qualname__ = "a" + sync.__name__
    return sync, awaited


def _shaped(cache: Any, shape: Callable[[Any, Any], Any], reply: Any) -> Any:
    # None only when the cache fails open and Redis is unreachable (or a nil reply, whose
    # answer is None anyway): django-redis' IGNORE_EXCEPTIONS answers None too.
    return None if reply is None else shape(cache, reply)


def _number(value: Any) -> Any:
    """A score bound or score as Redis takes it: a number, or text such as ``-inf``, ``(1``."""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"a score must be a number or text such as '-inf', not {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise InvalidArgumentError(f"a score must be a number or text such as '-inf', not {type(value).__name__}")


def _int(cache: Any, reply: Any) -> int:
    return int(reply)


def _bool(cache: Any, reply: Any) -> bool:
    return bool(reply)


def _float(cache: Any, reply: Any) -> float:
    return float(reply)


def _members_set(cache: Any, reply: Any) -> set[Any]:
    return {cache._decode(m) for m in reply}


def _members_list(cache: Any, reply: Any) -> list[Any]:
    return [cache._decode(m) for m in reply]


def _bools(cache: Any, reply: Any) -> list[bool]:
    return [bool(v) for v in reply]


def _pairs(reply: list[Any], cast: Callable[[Any], Any] = float) -> list[tuple[Any, Any]]:
    return [(reply[i], cast(reply[i + 1])) for i in range(0, len(reply), 2)]


class RedisStructures:
    """django-redis' hash, set and sorted-set methods; see the module documentation."""

    __slots__ = ()

    # Provided by the native half.
    _redis_command: Callable[[str, list[Any]], Any]
    _aredis_command: Callable[[str, list[Any]], Any]
    _encode: Callable[[Any], bytes]
    _decode: Callable[[bytes], Any]
    make_key: Callable[..., str]
    serializer: str

    def _key(self, key: Any, version: int | None = None) -> str:
        return str(self.make_key(key, version=version))

    def _value(self, value: Any) -> bytes:
        """A set member or hash value as django-redis encodes it: a plain int as decimal,
        anything else pickled with django-redis' default protocol (``pickle.DEFAULT_PROTOCOL``,
        not the ``HIGHEST_PROTOCOL`` Django's ``RedisCache`` and polycache use for cache
        values): equal members must be equal bytes whichever library wrote them."""
        if self.serializer != "pickle":
            return self._encode(value)
        if type(value) is int:
            return str(value).encode()
        return pickle.dumps(value, pickle.DEFAULT_PROTOCOL)

    # ---- hashes: the hash is a key of the cache, its fields are used as they are ----

    def _hset(
        self,
        key: Any,
        field: Any = None,
        value: Any = None,
        mapping: Mapping[Any, Any] | None = None,
        version: int | None = None,
    ) -> _Plan:
        pairs: list[Any] = []
        if field is not None:
            if value is None:
                raise InvalidArgumentError("hset takes a value with its field")
            pairs += [_field(field), self._value(value)]
        for f, v in (mapping or {}).items():
            pairs += [_field(f), self._value(v)]
        if not pairs:
            raise InvalidArgumentError("hset needs a field and value, or a mapping")
        return "HSET", [self._key(key, version), *pairs], _int

    def _hdel(self, key: Any, field: Any, version: int | None = None) -> _Plan:
        return "HDEL", [self._key(key, version), _field(field)], _int

    def _hlen(self, key: Any, version: int | None = None) -> _Plan:
        return "HLEN", [self._key(key, version)], _int

    def _hkeys(self, key: Any, version: int | None = None) -> _Plan:
        return "HKEYS", [self._key(key, version)], _texts

    def _hexists(self, key: Any, field: Any, version: int | None = None) -> _Plan:
        return "HEXISTS", [self._key(key, version), _field(field)], _bool

    # ---- sets ----

    def _sadd(self, key: Any, *values: Any, version: int | None = None) -> _Plan:
        return "SADD", [self._key(key, version), *map(self._value, values)], _int

    def _srem(self, key: Any, *members: Any, version: int | None = None) -> _Plan:
        return "SREM", [self._key(key, version), *map(self._value, members)], _int

    def _scard(self, key: Any, version: int | None = None) -> _Plan:
        return "SCARD", [self._key(key, version)], _int

    def _smembers(self, key: Any, version: int | None = None) -> _Plan:
        return "SMEMBERS", [self._key(key, version)], _members_set

    def _sismember(self, key: Any, member: Any, version: int | None = None) -> _Plan:
        return "SISMEMBER", [self._key(key, version), self._value(member)], _bool

    def _smismember(self, key: Any, *members: Any, version: int | None = None) -> _Plan:
        return "SMISMEMBER", [self._key(key, version), *map(self._value, members)], _bools

    def _spop(self, key: Any, count: int | None = None, version: int | None = None) -> _Plan:
        args: list[Any] = [self._key(key, version)]
        if count is not None:
            args.append(_count(count))
        return "SPOP", args, _one_or_set

    def _srandmember(self, key: Any, count: int | None = None, version: int | None = None) -> _Plan:
        args: list[Any] = [self._key(key, version)]
        if count is not None:
            args.append(_count(count, negative=True))
        return "SRANDMEMBER", args, _one_or_list

    def _smove(self, source: Any, destination: Any, member: Any, version: int | None = None) -> _Plan:
        # As django-redis: the destination is made at the cache's own version.
        return "SMOVE", [self._key(source, version), self._key(destination), self._value(member)], _bool

    def _sdiff(self, *keys: Any, version: int | None = None) -> _Plan:
        return "SDIFF", [self._key(k, version) for k in keys], _members_set

    def _sinter(self, *keys: Any, version: int | None = None) -> _Plan:
        return "SINTER", [self._key(k, version) for k in keys], _members_set

    def _sunion(self, *keys: Any, version: int | None = None) -> _Plan:
        return "SUNION", [self._key(k, version) for k in keys], _members_set

    def _sdiffstore(
        self, dest: Any, *keys: Any, version_dest: int | None = None, version_keys: int | None = None
    ) -> _Plan:
        return "SDIFFSTORE", [self._key(dest, version_dest), *(self._key(k, version_keys) for k in keys)], _int

    def _sinterstore(self, dest: Any, *keys: Any, version: int | None = None) -> _Plan:
        return "SINTERSTORE", [self._key(dest, version), *(self._key(k, version) for k in keys)], _int

    def _sunionstore(self, destination: Any, *keys: Any, version: int | None = None) -> _Plan:
        return "SUNIONSTORE", [self._key(destination, version), *(self._key(k, version) for k in keys)], _int

    def _sscan_args(self, key: Any, cursor: int, match: str | None, count: int | None, version: int | None) -> list[Any]:
        args: list[Any] = [self._key(key, version), cursor]
        if match:
            # As django-redis: the pattern is encoded as a member is.
            args += [b"MATCH", self._value(match)]
        if count is not None:
            args += [b"COUNT", _count(count)]
        return args

    def _sscan(self, key: Any, match: str | None = None, count: int | None = 10, version: int | None = None) -> _Plan:
        return "SSCAN", self._sscan_args(key, 0, match, count, version), _scan_page

    def sscan_iter(
        self, key: Any, match: str | None = None, count: int | None = 10, version: int | None = None
    ) -> Iterator[Any]:
        """Every member of the set, page by page (``SSCAN``), decoded."""
        cursor: int | None = 0
        while cursor is not None:
            reply = self._redis_command("SSCAN", self._sscan_args(key, cursor, match, count, version))
            cursor, members = self._scanned(reply)
            yield from members

    async def asscan_iter(
        self, key: Any, match: str | None = None, count: int | None = 10, version: int | None = None
    ) -> AsyncIterator[Any]:
        """``sscan_iter``, as an async iterator."""
        cursor: int | None = 0
        while cursor is not None:
            reply = await self._aredis_command("SSCAN", self._sscan_args(key, cursor, match, count, version))
            cursor, members = self._scanned(reply)
            for member in members:
                yield member

    def _scanned(self, reply: Any) -> tuple[int | None, list[Any]]:
        """The next cursor of an ``SSCAN`` page (None after the last) and its members."""
        if reply is None:  # failing open
            return None, []
        cursor = int(reply[0])
        return (cursor or None), [self._decode(m) for m in reply[1]]

    # ---- sorted sets: members are always serialized, ints too (django-redis' allow_int=False) ----

    def _member(self, value: Any) -> bytes:
        if type(value) is int and self.serializer == "pickle":
            return pickle.dumps(value, pickle.DEFAULT_PROTOCOL)
        return self._value(value)

    def _zadd(
        self,
        key: Any,
        mapping: dict[Any, float],
        nx: bool = False,
        xx: bool = False,
        ch: bool = False,
        incr: bool = False,
        gt: bool = False,
        lt: bool = False,
        version: int | None = None,
    ) -> _Plan:
        if not mapping:
            raise InvalidArgumentError("zadd needs at least one member and score")
        if nx and xx:
            raise InvalidArgumentError("zadd takes nx or xx, not both")
        if gt and lt:
            raise InvalidArgumentError("zadd takes gt or lt, not both")
        if nx and (gt or lt):
            raise InvalidArgumentError("zadd takes nx, or gt/lt, not both")
        if incr and len(mapping) != 1:
            raise InvalidArgumentError("zadd with incr takes exactly one member and score")
        args: list[Any] = [self._key(key, version)]
        for flag, word in ((nx, b"NX"), (xx, b"XX"), (gt, b"GT"), (lt, b"LT"), (ch, b"CH"), (incr, b"INCR")):
            if flag:
                args.append(word)
        for member, score in mapping.items():
            args += [_number(score), self._member(member)]
        # With incr Redis answers the new score (or nil when nx/xx/gt/lt kept it out).
        return "ZADD", args, (_float if incr else _int)

    def _zrem(self, key: Any, *values: Any, version: int | None = None) -> _Plan:
        return "ZREM", [self._key(key, version), *map(self._member, values)], _int

    def _zcard(self, key: Any, version: int | None = None) -> _Plan:
        return "ZCARD", [self._key(key, version)], _int

    def _zcount(self, key: Any, min: float | str, max: float | str, version: int | None = None) -> _Plan:
        return "ZCOUNT", [self._key(key, version), _number(min), _number(max)], _int

    def _zincrby(self, key: Any, amount: float, value: Any, version: int | None = None) -> _Plan:
        return "ZINCRBY", [self._key(key, version), _number(amount), self._member(value)], _float

    def _zscore(self, key: Any, value: Any, version: int | None = None) -> _Plan:
        return "ZSCORE", [self._key(key, version), self._member(value)], _float

    def _zmscore(self, key: Any, members: list[Any], version: int | None = None) -> _Plan:
        if not members:
            raise InvalidArgumentError("zmscore needs at least one member")
        return "ZMSCORE", [self._key(key, version), *map(self._member, members)], _optional_floats

    def _zrank(self, key: Any, value: Any, withscore: bool = False, version: int | None = None) -> _Plan:
        args = [self._key(key, version), self._member(value), *([b"WITHSCORE"] if withscore else [])]
        return "ZRANK", args, (_rank_and_score if withscore else _int)

    def _zrevrank(self, key: Any, value: Any, withscore: bool = False, version: int | None = None) -> _Plan:
        args = [self._key(key, version), self._member(value), *([b"WITHSCORE"] if withscore else [])]
        return "ZREVRANK", args, (_rank_and_score if withscore else _int)

    def _zrange(
        self,
        key: Any,
        start: int,
        end: int,
        desc: bool = False,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
    ) -> _Plan:
        args = [self._key(key, version), start, end]
        return _range("ZREVRANGE" if desc else "ZRANGE", args, withscores, score_cast_func)

    def _zrevrange(
        self,
        key: Any,
        start: int,
        end: int,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
    ) -> _Plan:
        return self._zrange(key, start, end, True, withscores, score_cast_func, version)

    def _zrangebyscore(
        self,
        key: Any,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
    ) -> _Plan:
        args = [self._key(key, version), _number(min), _number(max), *_limit(start, num)]
        return _range("ZRANGEBYSCORE", args, withscores, score_cast_func)

    def _zrevrangebyscore(
        self,
        key: Any,
        max: float | str,
        min: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
    ) -> _Plan:
        args = [self._key(key, version), _number(max), _number(min), *_limit(start, num)]
        return _range("ZREVRANGEBYSCORE", args, withscores, score_cast_func)

    def _zremrangebyscore(self, key: Any, min: float | str, max: float | str, version: int | None = None) -> _Plan:
        return "ZREMRANGEBYSCORE", [self._key(key, version), _number(min), _number(max)], _int

    def _zremrangebyrank(self, key: Any, min: int, max: int, version: int | None = None) -> _Plan:
        return "ZREMRANGEBYRANK", [self._key(key, version), min, max], _int

    def _zpopmin(self, key: Any, count: int | None = None, version: int | None = None) -> _Plan:
        return "ZPOPMIN", _pop_args(self._key(key, version), count), _popped(count)

    def _zpopmax(self, key: Any, count: int | None = None, version: int | None = None) -> _Plan:
        return "ZPOPMAX", _pop_args(self._key(key, version), count), _popped(count)

    hset, ahset = _twins(_hset)
    hdel, ahdel = _twins(_hdel)
    hlen, ahlen = _twins(_hlen)
    hkeys, ahkeys = _twins(_hkeys)
    hexists, ahexists = _twins(_hexists)
    sadd, asadd = _twins(_sadd)
    srem, asrem = _twins(_srem)
    scard, ascard = _twins(_scard)
    smembers, asmembers = _twins(_smembers)
    sismember, asismember = _twins(_sismember)
    smismember, asmismember = _twins(_smismember)
    spop, aspop = _twins(_spop)
    srandmember, asrandmember = _twins(_srandmember)
    smove, asmove = _twins(_smove)
    sdiff, asdiff = _twins(_sdiff)
    sinter, asinter = _twins(_sinter)
    sunion, asunion = _twins(_sunion)
    sdiffstore, asdiffstore = _twins(_sdiffstore)
    sinterstore, asinterstore = _twins(_sinterstore)
    sunionstore, asunionstore = _twins(_sunionstore)
    sscan, asscan = _twins(_sscan)
    zadd, azadd = _twins(_zadd)
    zrem, azrem = _twins(_zrem)
    zcard, azcard = _twins(_zcard)
    zcount, azcount = _twins(_zcount)
    zincrby, azincrby = _twins(_zincrby)
    zscore, azscore = _twins(_zscore)
    zmscore, azmscore = _twins(_zmscore)
    zrank, azrank = _twins(_zrank)
    zrevrank, azrevrank = _twins(_zrevrank)
    zrange, azrange = _twins(_zrange)
    zrevrange, azrevrange = _twins(_zrevrange)
    zrangebyscore, azrangebyscore = _twins(_zrangebyscore)
    zrevrangebyscore, azrevrangebyscore = _twins(_zrevrangebyscore)
    zremrangebyscore, azremrangebyscore = _twins(_zremrangebyscore)
    zremrangebyrank, azremrangebyrank = _twins(_zremrangebyrank)
    zpopmin, azpopmin = _twins(_zpopmin)
    zpopmax, azpopmax = _twins(_zpopmax)


def _count(count: Any, negative: bool = False) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or (count < 0 and not negative):
        raise InvalidArgumentError(f"count must be a{'n' if negative else ' non-negative'} int, not {count!r}")
    return count


def _limit(start: int | None, num: int | None) -> list[Any]:
    if (start is None) != (num is None):
        raise InvalidArgumentError("start and num must both be given, or neither")
    return [] if start is None else [b"LIMIT", start, num]


def _field(field: Any) -> bytes:
    """A hash field as redis-py sends it: text as UTF-8, numbers as their text."""
    if isinstance(field, bytes):
        return field
    if isinstance(field, str):
        return field.encode()
    if isinstance(field, (int, float)) and not isinstance(field, bool):
        return repr(field).encode()
    raise InvalidArgumentError(f"a hash field must be str, bytes, int or float, not {type(field).__name__}")


def _texts(cache: Any, reply: Any) -> list[str]:
    return [k.decode() for k in reply]


def _rank_and_score(cache: Any, reply: Any) -> list[Any]:
    return [int(reply[0]), float(reply[1])]


def _one_or_set(cache: Any, reply: Any) -> Any:
    return {cache._decode(m) for m in reply} if isinstance(reply, list) else cache._decode(reply)


def _one_or_list(cache: Any, reply: Any) -> Any:
    return [cache._decode(m) for m in reply] if isinstance(reply, list) else cache._decode(reply)


def _scan_page(cache: Any, reply: Any) -> set[Any]:
    return {cache._decode(m) for m in reply[1]}


def _optional_floats(cache: Any, reply: Any) -> list[float | None]:
    return [None if v is None else float(v) for v in reply]


def _range(command: str, args: list[Any], withscores: bool, cast: Callable[[Any], Any]) -> _Plan:
    """A range command's plan: ``WITHSCORES`` pairs cast by ``cast``, or the members."""

    def shape(cache: Any, reply: Any) -> Any:
        if withscores:
            return [(cache._decode(m), s) for m, s in _pairs(reply, cast)]
        return [cache._decode(m) for m in reply]

    return command, [*args, b"WITHSCORES"] if withscores else args, shape


def _pop_args(key: str, count: int | None) -> list[Any]:
    return [key] if count is None else [key, _count(count)]


def _popped(count: int | None) -> Callable[[Any, Any], Any]:
    def shape(cache: Any, reply: Any) -> Any:
        decoded = [(cache._decode(m), s) for m, s in _pairs(reply)]
        if count is None:
            return decoded[0] if decoded else None
        return decoded

    return shape
