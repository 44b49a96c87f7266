"""polycache's Python quick start: an in-process cache with Django's API.

Run it with `python examples/python/quickstart.py`; it needs no server.
"""

import asyncio

import polycache


def slow_square(n: int) -> int:
    print(f"  computing {n}**2 ...")
    return n * n


def main() -> None:
    # The embedded memory cache: at most 1000 entries, entries live 60 s by default.
    cache = polycache.Cache("memory://?max_entries=1000", key_prefix="demo", timeout=60)

    cache.set("greeting", "hello, polycache")
    print("get greeting   ->", cache.get("greeting"))
    print("get missing    ->", cache.get("missing", "(default)"))

    # get_or_set calls the function only on a miss.
    print("get_or_set     ->", cache.get_or_set("square:12", lambda: slow_square(12)))
    print("get_or_set     ->", cache.get_or_set("square:12", lambda: slow_square(12)), "(cached)")

    # Integers are stored as decimal text, so incr/decr are atomic and native.
    cache.set("visits", 0, timeout=None)
    for _ in range(3):
        cache.incr("visits")
    print("incr visits x3 ->", cache.get("visits"))

    # timeout=0 stores nothing (Django's rule); timeout=None never expires.
    cache.set("gone", "x", timeout=0)
    print("timeout=0      ->", cache.get("gone"))

    print("full key       ->", cache.make_key("greeting"))
    print("stats          ->", cache.stats())


async def main_async() -> None:
    # Every method has an awaitable twin (aget, aset, ...): on redis:// and the other remote
    # backends polycache's runtime completes it, with no thread per call.
    cache = polycache.Cache("memory://", key_prefix="demo")
    await cache.aset("greeting", "hello, await")
    print("await aget     ->", await cache.aget("greeting"))


if __name__ == "__main__":
    main()
    asyncio.run(main_async())
