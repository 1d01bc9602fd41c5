"""Every round of the broadcast plan's vertex programs inside one Spark job (local mode).

On the broadcast plan a round of PageRank, components or label propagation is one Spark job
(:meth:`~lepton_spark.graph.blocks.BroadcastOperator.apply_many`): the driver writes the messages,
the tasks reduce their blocks, the driver applies the update. A job costs about 0.1 s on 2 cores
however little it computes, and a PageRank round at 100k vertices / 1.9M edges computes for about
5 ms: the analytics stage's 20 rounds spent 2 s scheduling jobs.

When the operator's blocks are files in the local exchange (driver and tasks share this machine),
:func:`run_supersteps` runs all the rounds in one job. Its tasks, one per task slot, run as a
*barrier* stage, which Spark schedules all at once or not at all. Each task holds the programs'
whole state (a vector per program; the broadcast plan already holds it in one process) and, every
round: computes the messages, reduces its blocks into a shared memory-mapped result file, waits
until every task has written its rows, then applies the same update to the whole state. Every task
does the same arithmetic on the same arrays, so every task reaches the same state and the same
convergence decision, and the result is the one :func:`~lepton_spark.graph.programs.run_broadcast_many`
computes round by round (the same kernels, messages and updates; tested bit for bit).

The tasks wait for each other at a file barrier in the exchange (one marker file per task and round,
polled every 0.2 ms; 20 barriers cost about 5 ms). Spark's own ``BarrierTaskContext.barrier()``
was measured at about 1 s a call on this machine (its RPC answers on a one-second poll). Two result
files per program alternate between rounds, so one barrier per round suffices: a task writes
round ``r + 1``'s rows into the other file while a slower one still reads round ``r``'s, and round
``r + 2`` writes only after every task passed round ``r + 1``'s barrier, after its update of ``r``.
A task that fails marks the job aborted, and the others stop waiting and fail too. Spark retries a
failed barrier stage as a whole, but the markers of the first attempt would mislead a second one:
every task claims its partition once (an exclusive marker file), a retried task finds its claim and
fails, and :func:`~lepton_spark.graph.programs.run_broadcast_many` then runs the rounds one job each.

The driver logs the rounds after the job (one line per program and round, as before), with the
seconds task 0 measured: round 1's count from the job's submission, so the rounds add up to the job.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lepton_spark import storage
from lepton_spark.graph import kernels
from lepton_spark.graph.blocks import BroadcastOperator, _load_block, _reduce_block, fault_sleep
from lepton_spark.session import task_slots

if TYPE_CHECKING:
    from lepton_spark.graph.programs import VertexProgram

log = logging.getLogger(__name__)

_LOG_SCHEMA = "program int, round int, delta double, seconds double"
#: the error of a retried attempt's task (see :class:`_SuperstepTask`)
RETRIED = "supersteps: a retried attempt"
#: seconds between two looks at the barrier's marker files
POLL_SECONDS = 0.0002


def can_run(op: BroadcastOperator) -> bool:
    """Whether ``op``'s rounds can run in one job: its blocks are files in a local exchange, and it has vertices."""
    return op.block_paths is not None and bool(op.block_paths) and op.exchange is not None and op.n > 0


def failure_reason(exc: BaseException) -> str:
    """The line of a failed job's error that names the cause: the Python exception a task raised
    (``ValueError: ...``, the last such line of the task's traceback), else its first line."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    raised = [ln for ln in lines if _RAISED.match(ln) and not ln.startswith(("org.", "java.", "scala.", "py4j."))]
    return raised[-1][:300] if raised else storage.first_line(exc)


_RAISED = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception): \S")


def run_supersteps(op: BroadcastOperator, programs: Sequence[tuple[VertexProgram, int]],
                   ids: np.ndarray) -> list[tuple[np.ndarray, int, list[tuple[float, float]]]]:
    """Run every ``(program, max_iter)`` on ``op`` side by side, all rounds in one job (see the module docstring).

    A program leaves when it converges or reaches its ``max_iter``, as in
    :func:`~lepton_spark.graph.programs.run_broadcast_many`. Returns per program ``(state in ids
    order, rounds run, [(delta, seconds) per round])``. Only where :func:`can_run`.
    """
    assert can_run(op) and op.block_paths is not None and op.exchange is not None
    run_dir = tempfile.mkdtemp(prefix="supersteps-", dir=op.exchange)
    try:
        tasks = max(1, min(len(op.block_paths), task_slots(op.spark)))
        task = prepare_task(op, programs, ids, run_dir, tasks)
        job = op.spark.range(0, len(op.block_paths), 1, tasks).mapInArrow(task, _LOG_SCHEMA, barrier=True)
        return task.results(storage.collect_arrow(job).to_pylist(), ids)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def prepare_task(op: BroadcastOperator, programs: Sequence[tuple[VertexProgram, int]], ids: np.ndarray,
                 run_dir: str, tasks: int) -> _SuperstepTask:
    """Write what the tasks map into ``run_dir`` (the ids, which vertices receive messages, the
    out-degrees, two result files per program) and return the job's task function for ``tasks`` tasks."""
    assert op.block_paths is not None
    progs = [p for p, _ in programs]
    limits = [int(m) for _, m in programs]
    outdeg = op.out_degrees() if any(p.needs_outdeg for p in progs) else None
    np.save(os.path.join(run_dir, "ids.npy"), np.asarray(ids), allow_pickle=False)
    np.save(os.path.join(run_dir, "received.npy"), op.received(), allow_pickle=False)
    if outdeg is not None:
        np.save(os.path.join(run_dir, "outdeg.npy"), outdeg, allow_pickle=False)
    for k, p in enumerate(progs):
        if limits[k] > 0:  # two result files (rounds alternate), shaped as the first round's result
            msg = p.message(p.init(ids), outdeg if p.needs_outdeg else None)
            dtype = kernels.reduce_dtype(np.asarray(msg).dtype, p.reduce)
            for b in (0, 1):
                # a sparse file: the rows no block writes (no in-edge) read as zero, as in apply_many
                np.lib.format.open_memmap(_out_path(run_dir, k, b), mode="w+", dtype=dtype, shape=np.shape(msg))
    return _SuperstepTask(progs, limits, run_dir, list(op.block_paths), tasks, fault_sleep(), time.time())


def _out_path(run_dir: str, k: int, buf: int) -> str:
    return os.path.join(run_dir, f"out{k}-{buf}.npy")


def _final_path(run_dir: str, k: int) -> str:
    return os.path.join(run_dir, f"final{k}.npy")


class _SuperstepTask:
    """The barrier job's ``mapInArrow`` function: one task's share of the blocks, every round.

    Task 0 also writes the final states (``final<k>.npy``) and returns the rounds' ``(program,
    round, delta, seconds)`` rows; the other tasks return nothing."""

    def __init__(self, programs: list[VertexProgram], limits: list[int], run_dir: str, paths: list[str],
                 tasks: int, delay: float, submitted: float) -> None:
        self.programs, self.limits, self.run_dir, self.paths = programs, limits, run_dir, paths
        self.tasks, self.delay, self.submitted = tasks, delay, submitted

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        me = ctx.partitionId() if ctx is not None else 0
        sync = os.path.join(self.run_dir, "sync")
        os.makedirs(sync, exist_ok=True)
        try:
            # the markers below are only valid for one attempt of the job: a retried attempt (Spark
            # reruns a failed barrier stage whole) finds its claim and fails, and the driver runs the
            # rounds one job each instead
            os.close(os.open(os.path.join(sync, f"claim-t{me}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            raise RuntimeError(f"{RETRIED}: task {me} already ran once") from None
        mine = [int(i) for b in batches for i in b.column("id").to_pylist()]
        try:
            rows = self._run(me, mine, sync)
        except BaseException as exc:
            why = f"task {me}: {type(exc).__name__}: {storage.first_line(exc)}".encode()
            # whole or not at all: the others stop waiting for this task and name its error
            storage.atomic_write(os.path.join(sync, "abort"), lambda f: f.write(why), fsync=False)
            raise
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=pa.schema(
                [("program", pa.int32()), ("round", pa.int32()), ("delta", pa.float64()), ("seconds", pa.float64())]))

    def results(self, rows: list[dict[str, Any]],
                ids: np.ndarray) -> list[tuple[np.ndarray, int, list[tuple[float, float]]]]:
        """Per program ``(final state, rounds run, [(delta, seconds) per round])`` from task 0's rows and files."""
        rounds: list[list[tuple[float, float]]] = [[] for _ in self.programs]
        for r in sorted(rows, key=lambda r: (r["round"], r["program"])):
            rounds[r["program"]].append((float(r["delta"]), float(r["seconds"])))
        return [(np.load(_final_path(self.run_dir, k)) if rounds[k] else p.init(ids), len(rounds[k]), rounds[k])
                for k, p in enumerate(self.programs)]

    def _run(self, me: int, mine: list[int], sync: str) -> list[dict[str, Any]]:
        d = self.run_dir
        ids = np.load(os.path.join(d, "ids.npy"))
        received = np.load(os.path.join(d, "received.npy"))
        outdeg = np.load(os.path.join(d, "outdeg.npy")) if os.path.exists(os.path.join(d, "outdeg.npy")) else None
        blocks = [_load_block(self.paths[i]) for i in mine]
        progs = self.programs
        live = [k for k, m in enumerate(self.limits) if m > 0]
        outs = {k: [np.load(_out_path(d, k, b), mmap_mode="r+") for b in (0, 1)] for k in live}
        states = [p.init(ids) for p in progs]
        rows: list[dict[str, Any]] = []
        it, t0 = 0, min(time.time(), self.submitted)  # round 1 counts from the job's submission (one clock)
        while live:
            it += 1
            if self.delay:
                time.sleep(self.delay)
            buf = it % 2
            for k in live:
                p = progs[k]
                msg = np.ascontiguousarray(p.message(states[k], outdeg if p.needs_outdeg else None))
                out = outs[k][buf]
                for b in blocks:  # a shared mapping: the other tasks see these rows without a flush
                    out[b["rows"]] = _reduce_block(b, msg, p.reduce, p.weighted)
            self._barrier(sync, it, me)
            still, done = [], []
            for k in live:
                p = progs[k]
                # a private copy: the update may write into it while another task still reads the file
                new = p.update(states[k], np.array(outs[k][buf]), received.copy(), ids)
                done.append((k, float(p.delta(states[k], new))))
                states[k] = new
                if not p.converged(done[-1][1]) and it < self.limits[k]:
                    still.append(k)
            now = time.time()
            rows += [{"program": k, "round": it, "delta": delta, "seconds": now - t0} for k, delta in done]
            t0, live = now, still
        outs.clear()
        if me != 0:
            return []
        for k in range(len(progs)):
            if any(r["program"] == k for r in rows):
                storage.atomic_write(_final_path(d, k), lambda f, s=states[k]: np.save(f, s, allow_pickle=False),
                                     fsync=False)
        return rows

    def _barrier(self, sync: str, it: int, me: int) -> None:
        """Mark task ``me`` done with round ``it`` and wait until every task is (or one failed)."""
        open(os.path.join(sync, f"r{it}-t{me}"), "w").close()
        names = [os.path.join(sync, f"r{it}-t{t}") for t in range(self.tasks)]
        abort = os.path.join(sync, "abort")
        while not all(os.path.exists(n) for n in names):
            if os.path.exists(abort):
                with open(abort) as f:
                    raise RuntimeError(f"supersteps: another task of the job failed in round {it}: {f.read()}")
            time.sleep(POLL_SECONDS)
