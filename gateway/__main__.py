"""``python -m gateway`` and the ``lockgate`` console script."""

from __future__ import annotations

import sys


def main() -> int:
    # Ctrl-C is quiet from the first instant: before the heavy imports below.
    from gateway.cli import interrupts

    interrupts.install()
    from gateway.cli.main import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
