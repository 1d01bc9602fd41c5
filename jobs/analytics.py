"""spark-submit entry point: `lepton-spark analytics` (same arguments)."""

from __future__ import annotations

import sys

from lepton_spark.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["analytics", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
