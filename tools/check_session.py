"""Start a local Spark session and run one Python (mapInArrow) job; exit 0 when it works.

``run.sh`` runs it under spark-submit with a freshly recorded JVM class-data archive mapped
(``-Xshare:on``) before it puts the archive in place.
"""

from __future__ import annotations

import sys


def main() -> int:
    from lepton_spark.session import get_spark

    spark = get_spark()

    def ident(batches):  # a mapInArrow function: Arrow batches in, the same out
        yield from batches

    rows = spark.range(0, 4, 1, 2).mapInArrow(ident, "id long").count()
    spark.stop()
    return 0 if rows == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
