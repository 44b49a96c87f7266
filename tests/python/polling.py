"""Waiting for what background threads do, without timed assertions."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(cond: Callable[[], bool], within: float = 5.0) -> bool:
    """True as soon as `cond()` is; False if it is still false after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return cond()
