"""Test-only fault injection: ``LEPTON_FAIL_AFTER=<point>`` makes a run fail right after ``<point>``.

Points, each checked once the named step has fully completed:

- ``stage:<name>``   after a stage's completion marker is written (``stage:build`` ... ``stage:embed``);
- ``publish:<table>`` after one table's partition was swapped in (before the next table and the manifest);
- ``round:<k>``      after round ``k`` of a stage's Spark forward pass (propagate, links) completed and was
                     recorded.

The variable lives outside the config on purpose: the config digest is part of the run id, so a fault
that changed the config would give the crashed run and its rerun different run ids and the rerun
would never exercise resume. Nothing reads the variable but :func:`fail_after`; unset (the default)
it costs one dictionary lookup per point.

Examples
--------
>>> import os
>>> from lepton_spark.pipeline.faults import fail_after, InjectedFault
>>> os.environ["LEPTON_FAIL_AFTER"] = "stage:train"
>>> fail_after("stage:build")            # another point: nothing happens
>>> try:
...     fail_after("stage:train")
... except InjectedFault as exc:
...     print(exc)
fault injected after stage:train (LEPTON_FAIL_AFTER)
>>> del os.environ["LEPTON_FAIL_AFTER"]
"""

from __future__ import annotations

import os

ENV = "LEPTON_FAIL_AFTER"


class InjectedFault(RuntimeError):
    """Raised at the fault point named by ``LEPTON_FAIL_AFTER`` (tests only; exit code 1 on the CLI)."""


def fail_after(point: str) -> None:
    """Raise :class:`InjectedFault` if ``LEPTON_FAIL_AFTER`` names ``point``."""
    wanted = os.environ.get(ENV, "").strip()
    if wanted and wanted == point:
        raise InjectedFault(f"fault injected after {point} ({ENV})")
