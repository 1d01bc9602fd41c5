"""spark-submit driver of test_packed_env_on_cluster: probe the executors' Python, then run the nightly.

Usage: _archive_job.py PROBE_JSON NIGHTLY_ARGS...  (one application: the probe's tasks and the
nightly's tasks run on the same executors). The probe runs one pandas UDF task per partition and
records, from inside the executor's Python worker, sys.executable, sys.prefix and where numpy and
scipy were imported from.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pandas as pd

from lepton_spark.cli import main
from lepton_spark.session import get_spark


def _probe(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    import os
    import sys

    import numpy
    import scipy

    for _ in batches:
        yield pd.DataFrame({"executable": [sys.executable], "prefix": [sys.prefix], "numpy": [numpy.__file__],
                            "scipy": [scipy.__file__], "cwd": [os.getcwd()]})


if __name__ == "__main__":
    spark = get_spark()
    schema = "executable string, prefix string, numpy string, scipy string, cwd string"
    rows = spark.range(0, 4, numPartitions=4).mapInPandas(_probe, schema).collect()
    with open(sys.argv[1], "w") as fh:
        json.dump([r.asDict() for r in rows], fh)
    sys.exit(main(["nightly", *sys.argv[2:]]))
