"""``python -m course doctor``: see :mod:`course.doctor`."""

from __future__ import annotations

import sys

USAGE = "usage: python -m course doctor [--no-network]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "doctor":
        print(USAGE, file=sys.stderr)
        return 2
    from course.doctor import main as doctor

    return doctor(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
