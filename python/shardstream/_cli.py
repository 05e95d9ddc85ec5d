"""The ``shard-index`` command installed with the Python package.

It runs the same command-line code as the Rust ``shard-index`` binary (compiled into the
extension module): ``build``, ``update``, ``inspect``, ``verify``, ``plan`` and ``generate``,
with identical arguments, output and exit codes.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from . import _native


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``shard-index`` console script; returns the exit status."""
    args = list(sys.argv if argv is None else ["shard-index", *argv])
    args[0] = "shard-index"
    return int(_native.shard_index_main(args))


if __name__ == "__main__":
    sys.exit(main())
