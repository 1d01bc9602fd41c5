"""Vertex-program rounds in one Spark job (graph.supersteps) against the same rounds one job each.

Both run the same kernels, messages and updates, so the states must be equal bit for bit, and the
rounds as many. The one-job path also has to end (not wait for ever) when a task fails, and then
redo the rounds one job each; and a retried attempt of its job must refuse to reuse the first
attempt's barrier markers.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa
import pytest

from lepton_spark.graph import supersteps
from lepton_spark.graph.blocks import BroadcastOperator
from lepton_spark.graph.programs import (
    components_program,
    label_propagation_program,
    pagerank_program,
    run_broadcast_many,
    shortest_paths_program,
)

pytestmark = pytest.mark.engine  # also run on pyspark 3.5 in CI (barrier-mode mapInArrow: pyspark >= 3.5)


def _operator(spark, seed: int = 7, n: int = 60, m: int = 150) -> tuple[BroadcastOperator, np.ndarray]:
    """3 blocks over non-dense ids: isolated vertices (the last 5), self-loops, multi-edges and an edge
    to an id that is not a vertex."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(5_000, size=n, replace=False)).astype(np.int64)
    a, b = rng.integers(0, n - 5, m), rng.integers(0, n - 5, m)
    src = np.concatenate([ids[a], ids[[0, 1, 1]], [ids[2]]])
    dst = np.concatenate([ids[b], ids[[0, 4, 4]], [99_999]])
    edges = spark.createDataFrame([(int(s), int(d)) for s, d in zip(src, dst)], "src long, dst long")
    op = BroadcastOperator.prepare(spark, ids, edges, 3, weight=None)
    return op, ids


def _programs(ids: np.ndarray) -> list:
    return [(pagerank_program(0.15), 12), (pagerank_program(0.15, source=int(ids[3]), tol=1e-6), 500),
            (components_program(), 2**31 - 2), (label_propagation_program(), 4),
            (shortest_paths_program(ids[[0, 7]]), 50), (pagerank_program(0.15), 0)]


def _assert_same(got, want) -> None:
    assert [r for _, r in got] == [r for _, r in want]
    for (x, _), (y, _) in zip(got, want):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_rounds_in_one_job_equal_a_job_a_round(spark, caplog):
    op, ids = _operator(spark)
    try:
        assert supersteps.can_run(op)  # local[2]: the blocks are files in the exchange
        per_round = run_broadcast_many(op, _programs(ids), ids, one_job=False)
        caplog.clear()  # count only the one-job run's lines, whatever level the per-round run logged at
        with caplog.at_level(logging.INFO, logger="lepton_spark.graph.programs"):
            one_job = run_broadcast_many(op, _programs(ids), ids, one_job=True)
    finally:
        op.close()
    _assert_same(one_job, per_round)
    runs = [r for _, r in one_job]
    assert runs[0] == 12 and runs[3] == 4 and runs[5] == 0 and 1 < runs[1] < 500 and 1 < runs[2] < 2**31 - 2
    lines = [r.getMessage() for r in caplog.records if " round " in r.getMessage()]
    assert len(lines) == sum(runs) and all(m.endswith(", in one job)") for m in lines)
    assert sum(1 for m in lines if m.startswith("labelPropagation[broadcast] round ")) == 4


def test_a_failing_task_ends_the_job_and_the_rounds_are_redone_a_job_each(spark, caplog):
    """The task of partition 1 fails before the first barrier: task 0 must stop waiting for it (the
    job fails instead of hanging), and the driver redoes the rounds one job each (on the driver the
    message function works, so the result is the per-round one)."""
    op, ids = _operator(spark, seed=11)
    base = pagerank_program(0.15)

    def message(x, outdeg):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None and ctx.partitionId() == 1:
            raise ValueError("injected failure in task 1")
        return base.message(x, outdeg)

    failing = dataclasses.replace(base, message=message)
    try:
        want = run_broadcast_many(op, [(base, 9), (components_program(), 100)], ids, one_job=False)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lepton_spark.graph.programs"):
            got = run_broadcast_many(op, [(failing, 9), (components_program(), 100)], ids, one_job=True)
    finally:
        op.close()
    _assert_same(got, want)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "the rounds in one job failed" in warned[0] and "injected failure" in warned[0]


def test_a_retried_attempt_refuses_the_first_attempts_markers(spark, tmp_path):
    """The task function run in this process (one task, every block): the same states as the rounds
    one job each; run a second time on the same directory (as a retried attempt would) it fails."""
    op, ids = _operator(spark, seed=13)
    programs = [(pagerank_program(0.15), 6), (components_program(), 100), (label_propagation_program(), 3)]
    try:
        want = run_broadcast_many(op, programs, ids, one_job=False)
        task = supersteps.prepare_task(op, programs, ids, str(tmp_path), tasks=1)
        assert op.block_paths is not None
        blocks = pa.RecordBatch.from_pydict({"id": pa.array(range(len(op.block_paths)), pa.int64())})
        rows = [r for batch in task(iter([blocks])) for r in batch.to_pylist()]
        got = task.results(rows, ids)
        with pytest.raises(RuntimeError, match=supersteps.RETRIED):
            list(task(iter([blocks])))
    finally:
        op.close()
    _assert_same([(state, runs) for state, runs, _ in got], want)
    assert [len(rounds) for _, _, rounds in got] == [runs for _, runs in want]
