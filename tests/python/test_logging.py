"""The core's log records reach Python's `logging`, from the caller's thread and from ours."""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import polycache
from polycache import Cache

sys.path.insert(0, os.path.dirname(__file__))
from polling import eventually  # noqa: E402

SECRET = "pw-Zq81-never-logged"



def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def forge(url: str, key: str) -> tuple[Cache, Cache]:
    """Writes `key` signed with another key; returns that cache (a named memory store lives
    while a cache holds it) and one that checks the real key."""
    forger = Cache(url, signing_key="not-the-key")
    forger.set(key, "forged")
    return forger, Cache(url, signing_key="the-key")


def test_a_value_failing_its_signature_check_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    _, checked = forge("memory://log-sign", "k")
    with caplog.at_level(logging.WARNING, logger="polycache"):
        assert checked.get("k") is None
    # Emitted before get() returned, on this thread, from the core's module logger.
    (record,) = records(caplog, "answering a miss")
    assert record.levelno == logging.WARNING
    assert record.name == "polycache.cache"
    assert record.pathname.endswith("cache.rs") and record.lineno > 0
    assert "'k'" in record.getMessage() or '"' in record.getMessage()
    assert "not-the-key" not in caplog.text and "the-key" not in caplog.text


def test_a_call_that_released_the_gil_logs_before_it_returns(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    # sqlite:// runs without the GIL: the record waits in the thread's buffer, no thread hop.
    _, checked = forge(f"sqlite://{tmp_path}/log.db", "k")
    with caplog.at_level(logging.WARNING, logger="polycache"):
        assert checked.get("k") is None
        assert len(records(caplog, "answering a miss")) == 1


def test_the_python_logger_level_is_read_at_every_record(caplog: pytest.LogCaptureFixture) -> None:
    _, checked = forge("memory://log-level", "k")
    logger = logging.getLogger("polycache")
    with caplog.at_level(logging.WARNING, logger="polycache"):
        logger.setLevel(logging.ERROR)
        assert checked.get("k") is None
        assert records(caplog, "answering a miss") == []
        logger.setLevel(logging.WARNING)
        time.sleep(1.1)  # the core warns at most once a second per cache
        assert checked.get("k") is None
        assert len(records(caplog, "answering a miss")) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_fail_open_warning_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0?fail_open=true&connect_timeout=1"
    cache = Cache(url)
    with caplog.at_level(logging.WARNING, logger="polycache"):
        assert cache.get("k", "default") == "default"
    (record,) = records(caplog, "fail_open")
    assert record.levelno == logging.WARNING
    assert SECRET not in caplog.text


class Failing(polycache.Job):
    lifetime = 0.05

    def __init__(self, cache: Cache) -> None:
        super().__init__(cache=cache)
        self.calls = 0
        self.failing = False

    def fetch(self, *args: Any) -> str:
        self.calls += 1
        if self.failing:
            raise RuntimeError("upstream is down")
        return f"v{self.calls}"


def test_a_background_refresh_failure_is_one_warning_and_a_traceback_at_debug(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    job = Failing(cache)
    assert job.get("x") == "v1"
    time.sleep(0.08)
    job.failing = True
    with caplog.at_level(logging.DEBUG, logger="polycache"):
        assert job.get("x") == "v1"  # stale, refreshed on a pool thread
        # The pool thread logs without the GIL: the polycache-log thread emits it.
        assert eventually(lambda: len(records(caplog, "stale value is kept")) == 1)
        assert eventually(lambda: len(records(caplog, "traceback of the failed refresh")) == 1)
    (warning,) = records(caplog, "stale value is kept")
    assert warning.levelno == logging.WARNING and warning.name == "polycache.jobs"
    assert "RuntimeError: upstream is down" in warning.getMessage()
    (debug,) = records(caplog, "traceback of the failed refresh")
    assert debug.levelno == logging.DEBUG and debug.exc_info is not None
    assert isinstance(debug.exc_info[1], RuntimeError)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def test_records_logged_as_the_interpreter_exits_are_emitted_not_a_crash() -> None:
    # A refresh fails on a pool thread while the main thread returns from the script: the
    # record reaches the handler at exit, and the process exits cleanly. (A refresh still
    # queued at exit is dropped, not run: tested in test_refresh.py.)
    done = run_python(
        """
        import logging, threading, time, polycache
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
        started = threading.Event()

        class J(polycache.Job):
            lifetime = 0.01
            n = 0
            def fetch(self):
                self.n += 1
                if self.n > 1:
                    started.set()
                    time.sleep(0.2)
                    raise ValueError("late failure")
                return self.n

        job = J(cache=polycache.Cache("memory://"))
        job.get()
        time.sleep(0.05)
        job.get()  # stale: the refresh runs, and fails, while the interpreter exits
        assert started.wait(10)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING polycache.jobs polycache: background refresh" in done.stderr, done.stderr
    assert "ValueError: late failure" in done.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_log_thread() -> None:
    done = run_python(
        """
        import logging, os, time, polycache
        logging.basicConfig(level=logging.WARNING, format="%(process)d %(message)s")

        class J(polycache.Job):
            lifetime = 0.01
            fail = False
            def fetch(self):
                if self.fail:
                    raise ValueError(f"failed in {os.getpid()}")
                return 1

        job = J(cache=polycache.Cache("memory://"))
        job.get()
        job.fail = True
        time.sleep(0.05)
        job.get()  # the parent's log thread starts
        time.sleep(0.5)
        pid = os.fork()
        if pid == 0:
            job2 = J(cache=polycache.Cache("memory://"))
            job2.get()
            job2.fail = True
            time.sleep(0.05)
            job2.get()
            time.sleep(0.5)
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "failed in" in line]
    assert len(lines) == 2, done.stderr
    pids = {line.split()[0] for line in lines}
    assert len(pids) == 2, "one record from the parent, one from the child"
