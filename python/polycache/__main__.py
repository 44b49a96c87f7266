"""The ``polycache`` command line: ``python -m polycache`` and the ``polycache`` console script.

The commands, their options and exit codes are those of the Rust binary (docs/cli.md): both
run the same code, ``_polycache.cli_main``.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from polycache._polycache import cli_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    As a console script it exits the process with that code.
    """
    args = ["polycache", *(sys.argv[1:] if argv is None else argv)]
    # The command runs in native code: Ctrl-C ends it at once, as it ends the Rust binary,
    # instead of waiting for the command to return to Python. A closed pipe
    # (`polycache keys '*' | head`) ends the output quietly there too.
    if argv is None and hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
