#!/usr/bin/env python3
"""Checks (or with --fix, rewrites) every code block of README.md marked `<!-- file: PATH -->` is that file.

The marked files are the examples the test command compiles and runs, so the README's
quick starts cannot drift from code that is known to work. Also checks that the README
starts with the two commands.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKED = re.compile(r"<!-- file: (?P<path>\S+) -->\s*\n```[a-z]*\n(?P<body>.*?)```", re.S)


def fix(readme: str) -> str:
    """Copies each marked file into its block."""

    def repl(m: re.Match) -> str:
        body = (ROOT / m["path"]).read_text().rstrip("\n") + "\n"
        fence = m.group(0).split("\n", 2)
        return f"{fence[0]}\n{fence[1]}\n{body}```"

    return MARKED.sub(repl, readme)


def main() -> int:
    readme = (ROOT / "README.md").read_text()
    if "--fix" in sys.argv:
        readme = fix(readme)
        (ROOT / "README.md").write_text(readme)
    failures = []
    blocks = list(MARKED.finditer(readme))
    for m in blocks:
        path = ROOT / m["path"]
        if not path.is_file():
            failures.append(f"README names {m['path']}, which does not exist")
        elif path.read_text().strip() != m["body"].strip():
            failures.append(f"README's block for {m['path']} differs from the file; copy the file into the README")
    head = readme[:1500]
    for command in ("make demo", "make test"):
        if command not in head:
            failures.append(f"README does not start with `{command}`")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"{len(blocks) + 2 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
