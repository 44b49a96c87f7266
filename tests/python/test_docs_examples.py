"""Every ```python block of docs/python/*.md (and of the pages in ``MORE_PAGES``) runs, page
by page, against the installed wheel.

The blocks of one page run in order in one fresh process (a later block may use what an
earlier one defined, as a reader would). Three things are added around them, and only these:

- ``PRELUDE``: what a page takes for granted without showing it (a Flask ``app``);
- ``CHECKS``: code run right after a block that uses what it defined for real (Django's
  settings built from the page's ``CACHES``, a request through the Ellar module, ...), so a
  block that only assigns a dict is exercised too;
- the addresses: ``redis://127.0.0.1:6379`` becomes a Redis server this test starts, and
  ``/var/cache/site`` a temporary directory.

A block the page marks ``<!-- example: not run: REASON -->`` is skipped with that reason;
anything else that fails fails the test.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "python"
# Pages outside docs/python/ with Python examples.
MORE_PAGES = [DOCS.parent / "observability.md"]
BLOCK = re.compile(r"(?P<marker><!-- example: not run: (?P<reason>[^>]*?) -->\s*\n)?```python\n(?P<code>.*?)```", re.S)

PRELUDE: dict[str, str] = {
    "flask.md": "import flask, flask_caching\napp = flask.Flask(__name__)\n",
}

CHECKS: dict[tuple[str, int], str] = {
    ("cacheback.md", 0): """
import django
from django.conf import settings
settings.configure(CACHES=CACHES)
django.setup()
from django.core.cache import caches
caches["default"].set("docs", 1)
assert caches["default"].get("docs") == 1
""",
    ("django.md", 0): """
import django
from django.conf import settings
settings.configure(CACHES=CACHES)
django.setup()
from django.core.cache import caches
for alias in CACHES:
    caches[alias].set("docs", alias)
    assert caches[alias].get("docs") == alias
""",
    ("django.md", 1): """
import io
from django.core.management import call_command
from django.test import override_settings
apps_ = [app for app in INSTALLED_APPS if app is not ...]
with override_settings(INSTALLED_APPS=apps_, CACHES=CACHES):
    out = io.StringIO()
    call_command("createcachetable", dry_run=True, stdout=out)
    assert "CREATE TABLE" in out.getvalue() and not os.path.exists(SITE), out.getvalue()
    call_command("createcachetable", stdout=out)
    assert os.path.exists(SITE + "/cache.db")
""",
    ("ellar.md", 0): """
from ellar.testing import Test
module = Test.create_test_module(modules=[ApplicationModule])
from ellar.cache import ICacheService
service = module.get(ICacheService)
service.set("docs", 1)
assert service.get("docs") == 1
service.set("docs", 2, backend="local")
assert service.get("docs", backend="local") == 2
""",
    ("ellar.md", 1): "default.set('docs', 3)\nassert default.get('docs') == 3\n",
    ("flask.md", 0): """
with app.test_request_context():
    assert report() is None and user(1) is None
c.set("docs", 1)
assert c.get("docs") == 1
""",
    ("flask.md", 2): """
shared = flask_caching.Cache(app)
shared.set("docs", 4)
assert shared.get("docs") == 4
""",
    ("giotto.md", 0): "cache.set('docs', 5, 0)\nassert cache.get('docs') == 5\n",
}


def page_paths() -> dict[str, pathlib.Path]:
    return {p.name: p for p in [*DOCS.glob("*.md"), *MORE_PAGES]}


def pages() -> list[str]:
    return sorted(name for name, p in page_paths().items() if "```python" in p.read_text())


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with servers.redis_server() as s:
        yield f"redis://127.0.0.1:{s.port}"


@pytest.mark.parametrize("page", pages())
def test_the_examples_of_the_page_run(page: str, redis_url: str, tmp_path: pathlib.Path) -> None:
    text = page_paths()[page].read_text()
    site = str(tmp_path / "var" / "cache" / "site")
    parts = ["import os\nSITE = " + repr(site) + "\n", PRELUDE.get(page, "")]
    skipped = []
    for n, m in enumerate(BLOCK.finditer(text)):
        if m["marker"]:
            skipped.append(m["reason"])
            continue
        code = m["code"].replace("redis://127.0.0.1:6379", redis_url).replace("/var/cache/site", site)
        parts += [f"# --- {page}, example {n + 1}\n", code, CHECKS.get((page, n), "")]
    for key in CHECKS:
        assert key[0] != page or key[1] < n + 1, f"CHECKS names example {key[1] + 1} of {page}, which is gone"
    script = tmp_path / f"example_{page.replace('.', '_')}.py"
    script.write_text("\n".join(parts))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{page}:\n{done.stdout}\n{done.stderr}"
    if skipped and len(skipped) == len(BLOCK.findall(text)):
        pytest.skip(f"every example of {page} is marked not run: {'; '.join(skipped)}")
