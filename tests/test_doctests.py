"""The public API's docstring examples, run as doctests (as pyspark runs its own).

Each target's examples run with ``spark`` (the session fixture) in their globals, the way pyspark's
docstrings assume an active ``spark``. Targets are the public objects themselves, imported from their
public homes, so the test follows them when their modules move. Output is compared exactly (with
``ELLIPSIS``): examples round floats and sort rows.
"""

from __future__ import annotations

import doctest
import io
from typing import Any

import pytest

from lepton_spark.graph import GraphFrame, Pregel, propagate, spmm
from lepton_spark.models import create_model
from lepton_spark.pipeline import faults, run_pipeline

TARGETS: dict[str, Any] = {
    "propagate": propagate,
    "spmm": spmm,
    "GraphFrame": GraphFrame,
    "Pregel": Pregel,
    "create_model": create_model,
    "run_pipeline": run_pipeline,
    "pipeline.faults": faults,
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_docstring_examples(spark, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_spark.graph import engine as eng

    monkeypatch.delenv(eng.ENV_VAR, raising=False)  # the examples run on the default engine
    monkeypatch.delenv("LEPTON_FAIL_AFTER", raising=False)
    tests = [t for t in doctest.DocTestFinder().find(TARGETS[name], name, extraglobs={"spark": spark})
             if t.examples]
    assert tests, f"{name} has no docstring examples"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed\n{out.getvalue()}"
