"""The ``polycache`` console script of the installed wheel, and ``python -m polycache``.

They run the same code as the Rust binary (the ``polycache-cli`` crate through
``_polycache.cli_main``); cli/tests/ covers every command on file://, sqlite://, Redis and
PostgreSQL. Here: the script is installed and runs, its exit codes, bytes in and out, and
every example of docs/cli.md run with this script as ``polycache``.
"""

from __future__ import annotations

import json
import os
import pickle
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

import polycache.__main__

SCRIPT = shutil.which("polycache", path=os.path.dirname(sys.executable))
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def run(*args: str, url: str, stdin: bytes = b"", module: bool = False) -> subprocess.CompletedProcess[bytes]:
    assert SCRIPT is not None, f"no polycache script next to {sys.executable}"
    program = [sys.executable, "-m", "polycache"] if module else [SCRIPT]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCACHE_")}
    env["POLYCACHE_URL"] = url
    return subprocess.run([*program, *args], input=stdin, capture_output=True, env=env, timeout=60)


@pytest.fixture
def url(tmp_path: pathlib.Path) -> str:
    return f"file://{tmp_path}/cache"


@pytest.mark.parametrize("module", [False, True], ids=["script", "python -m"])
def test_get_set_and_exit_codes(url: str, module: bool) -> None:
    assert run("set", "greeting", "héllo", url=url, module=module).returncode == 0
    got = run("get", "greeting", url=url, module=module)
    assert (got.returncode, got.stdout) == (0, "héllo\n".encode())
    missing = run("get", "nope", url=url, module=module)
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, b"", b'polycache: "nope" not found\n')
    unknown = run("frobnicate", url=url, module=module)
    assert unknown.returncode == 2
    assert unknown.stderr.decode().count("\n") == 1 and "frobnicate" in unknown.stderr.decode()
    bad_url = run("get", "k", url="nosuch://x", module=module)
    assert bad_url.returncode == 2 and b"unknown cache scheme" in bad_url.stderr


def test_bytes_go_in_and_out_unchanged(url: str) -> None:
    value = bytes(range(256))
    assert run("set", "blob", url=url, stdin=value).returncode == 0
    assert run("get", "--raw", "blob", url=url).stdout == value
    shown = json.loads(run("--json", "get", "blob", url=url).stdout)
    assert shown["utf8"] is False and shown["value"].startswith('b"\\x00\\x01')


def test_values_written_by_python_read_back(url: str) -> None:
    cache = polycache.Cache(url)
    cache.set("n", 42)
    cache.set("obj", {"a": 1})
    assert run("get", "n", url=url).stdout == b"42\n"
    # A pickle is not UTF-8: shown escaped, and the raw bytes load back.
    assert run("get", "obj", url=url).stdout.startswith(b'b"\\x80')
    assert pickle.loads(run("get", "--raw", "obj", url=url).stdout) == {"a": 1}
    assert run("--json", "--prefix", "", "keys", "*", url=url).returncode == 0
    assert sorted(json.loads(run("--json", "keys", "*", url=url).stdout)) == ["n", "obj"]


def test_help_and_version() -> None:
    out = run("--help", url="")
    assert out.returncode == 0 and b"Usage: polycache" in out.stdout
    assert run("--version", url="").stdout == f"polycache {polycache.__version__}\n".encode()


def test_main_returns_the_exit_code(url: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert polycache.__main__.main(["--url", url, "get", "absent"]) == 1
    assert capfd.readouterr().err == 'polycache: "absent" not found\n'


@pytest.fixture(scope="module")
def redis_addr() -> Iterator[str]:
    with servers.redis_server() as s:
        yield f"127.0.0.1:{s.port}"


def matches(pattern: str, text: str) -> bool:
    """``...`` in a documented output line stands for any text."""
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("...")), text, re.S) is not None


def test_the_cli_page_runs_with_the_script(tmp_path: pathlib.Path, redis_addr: str) -> None:
    """docs/cli.md's session, as cli/tests/docs.rs runs it with the Rust binary."""
    assert SCRIPT is not None
    page = DOCS.read_text()
    blocks = re.findall(r"```console\n(.*?)```", page, re.S)
    site = str(tmp_path)

    def local(s: str) -> str:
        return s.replace("/var/cache/site", site).replace("127.0.0.1:6379", redis_addr)

    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCACHE_")}
    env["PATH"] = os.path.dirname(SCRIPT) + os.pathsep + env.get("PATH", "")
    exports = ""
    ran = 0
    for block in blocks:
        for step in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *expected = step.rstrip("\n").split("\n")
            command = local(command)
            if command.startswith("export "):
                exports += command + "\n"
                continue
            done = subprocess.run(
                ["sh", "-c", exports + command], capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=60
            )
            got = (done.stdout + done.stderr).decode(errors="replace").splitlines()
            want = [local(line) for line in expected]
            assert len(got) == len(want) and all(map(matches, want, got)), f"$ {command}\n{got}\n!=\n{want}"
            ran += 1
    assert ran > 30
