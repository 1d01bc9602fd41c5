"""Round state of iterative graph computations: one lineage policy, the resumable store, the round loop.

- :class:`LineagePolicy` is the one rule for cutting the lineage of iterative state, used by both
  propagation plans, the partitioned vertex programs (:mod:`lepton_spark.graph.partitioned`) and the
  DataFrame :class:`~lepton_spark.graph.pregel.Pregel`: a cut is due every ``interval`` rounds; a cut
  is a reliable ``checkpoint`` where a lost executor must not lose the state, else a
  ``localCheckpoint``, and a failed reliable checkpoint (no checkpoint directory) is logged once and
  local from then on.
- :class:`RoundStore` writes each completed round's state under ``<checkpoint>/round-NNNN/`` with a
  completion marker, so that a later call with the same inputs resumes after the last complete round
  (docs/architecture.md §2.2, §6).
- :class:`Rounds` owns propagation's round loop (resume, step, save or cut, log, callback); a plan
  supplies only its :class:`RoundPlan` (how its state is stepped, saved, loaded and cut).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.storagelevel import StorageLevel

from lepton_spark import logs, storage
from lepton_spark.session import is_local_master

log = logging.getLogger(__name__)

RoundCallback = Callable[[int, dict[str, Any]], None]
S = TypeVar("S")


# ------------------------------------------------------------------------------------ lineage cuts


def local_checkpoint(df: DataFrame, level: StorageLevel | None = None, eager: bool = False) -> DataFrame:
    """``df.localCheckpoint`` at ``level``: the plan and the RDD lineage are cut, the data kept by executors.

    ``level`` None is Spark's default level. Non-eager by default: the next action over the result
    materialises and stores it, so cutting costs no extra Spark job. (``storageLevel`` is a Spark 4
    argument; older Spark uses its default.)
    """
    if level is None:
        return df.localCheckpoint(eager=eager)
    try:
        return df.localCheckpoint(eager=eager, storageLevel=level)
    except TypeError:  # pyspark 3.5
        return df.localCheckpoint(eager=eager)


def _reason(exc: BaseException) -> str:
    """The telling line of a JVM error (the one naming the exception), at most 300 characters."""
    lines = [ln.strip(" :") for ln in str(exc).splitlines() if ln.strip(" :")]
    return next((ln for ln in lines if "Exception" in ln), lines[0] if lines else type(exc).__name__)[:300]


@dataclass
class LineagePolicy:
    """When and how the lineage of iterative state is cut (propagation, vertex programs, Pregel).

    A round ``k`` is due for a cut when ``interval`` > 0 and ``k % interval == 0``. A cut is a
    reliable ``checkpoint`` into the checkpoint directory (``spark.checkpoint.dir``) when
    ``reliable``, so that a lost executor cannot lose the state; when that fails (no directory) the
    policy logs once and cuts with ``localCheckpoint`` for the rest of the run. Otherwise the cut is
    a ``localCheckpoint`` (executor storage, the fastest cut) at ``level``.

    ``eager`` cuts materialise at once (where ``localCheckpoint`` is missing, on some Connect
    servers, they persist and count instead, which at least materialises); lazy cuts are stored by
    the next job that reads them and cost no job of their own.

    Parameters
    ----------
    interval : int, default 1
        Rounds between due cuts; 0 = no round is due.
    reliable : bool, default False
        Cut with a reliable checkpoint (falling back to a local one).
    eager : bool, default True
        Materialise at the cut.
    level : StorageLevel, optional
        Storage level of local checkpoints (default: Spark's).
    what : str, default "propagate"
        The computation's name in log lines.
    logger : logging.Logger, optional
        Where the fallback warning goes (default: this module's logger); callers pass their own so
        that the warning carries their name.
    """

    interval: int = 1
    reliable: bool = False
    eager: bool = True
    level: StorageLevel | None = None
    what: str = "propagate"
    logger: logging.Logger = field(default=log, repr=False)
    _local_only: bool = field(default=False, init=False, repr=False)

    @classmethod
    def for_session(cls, spark: SparkSession, interval: int = 1, what: str = "propagate",
                    logger: logging.Logger | None = None) -> LineagePolicy:
        """The block engines' policy: eager cuts, local in local mode, reliable on a cluster.

        In local mode a local checkpoint loses nothing that the driver would survive; on a cluster a
        lost executor would take local checkpoint blocks with it and fail the job.
        """
        return cls(interval=interval, reliable=not is_local_master(spark), what=what, logger=logger or log)

    def due(self, k: int) -> bool:
        """True when round ``k`` is one of every ``interval`` rounds."""
        return self.interval > 0 and k % self.interval == 0

    def cut(self, df: DataFrame) -> DataFrame:
        """``df`` with its lineage cut: reliable checkpoint when asked and available, else local."""
        if self.reliable and not self._local_only:
            try:
                return df.checkpoint(eager=self.eager)
            except Exception as exc:  # noqa: BLE001 - the JVM error type varies (py4j, captured, Connect)
                self.logger.warning(
                    "%s: reliable checkpoint failed (%s); falling back to localCheckpoint "
                    "(set spark.checkpoint.dir for reliable checkpoints)", self.what, _reason(exc))
                self._local_only = True
        return self.local(df)

    def local(self, df: DataFrame) -> DataFrame:
        """``df`` with its lineage cut by a local checkpoint (eager or not, as the policy says)."""
        if not self.eager:
            return local_checkpoint(df, self.level)
        try:
            return local_checkpoint(df, self.level, eager=True)
        except Exception as exc:  # noqa: BLE001 - some Connect servers lack it; persisting is the fallback
            self.logger.debug("localCheckpoint unavailable (%s); persisting instead", exc)
            df = df.persist() if self.level is None else df.persist(self.level)
            df.count()
            return df


# ------------------------------------------------------------------------------------- round store


class RoundStore:
    """Round state under ``<checkpoint>/round-NNNN/`` with a ``_COMPLETE`` marker (resume support).

    ``signature`` names the computation (sizes, plan, aggregation): state written for another
    signature is never resumed, and :meth:`begin` deletes it. Without a root nothing is stored.
    """

    def __init__(self, root: str | None, signature: dict[str, Any]) -> None:
        self.root = root.rstrip("/") if root else None
        self.signature = signature

    def _dir(self, k: int) -> str:
        return f"{self.root}/round-{k:04d}"

    def latest(self, rounds: int) -> int:
        """Highest complete round <= rounds written for the same signature, else 0."""
        if not self.root:
            return 0
        meta_path = f"{self.root}/_signature.json"
        if not storage.path_exists(meta_path) or json.loads(storage.read_text(meta_path)) != self.signature:
            return 0
        for k in range(rounds, 0, -1):
            if storage.path_exists(f"{self._dir(k)}/_COMPLETE"):
                return k
        return 0

    def begin(self) -> None:
        """Claim the directory for this signature (state of another computation is deleted)."""
        if not self.root:
            return
        meta_path = f"{self.root}/_signature.json"
        if storage.path_exists(meta_path) and json.loads(storage.read_text(meta_path)) == self.signature:
            return
        if storage.path_exists(self.root):
            storage.delete_path(self.root)  # state of another computation: start clean
        storage.write_json(meta_path, self.signature)

    def complete(self, k: int) -> None:
        """Mark round ``k`` complete (after its state is written)."""
        if self.root:
            storage.write_text(f"{self._dir(k)}/_COMPLETE", str(time.time()))

    def path(self, k: int, name: str) -> str:
        """Where round ``k`` keeps its state file or table ``name``."""
        return f"{self._dir(k)}/{name}"

    def write_array(self, k: int, name: str, arr: np.ndarray) -> None:
        """Round ``k``'s state array as ``.npy`` (atomic; no fsync: resume scratch, not worth one per round)."""
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        storage.write_bytes(self.path(k, name), buf.getvalue(), fsync=False)

    def read_array(self, k: int, name: str) -> np.ndarray:
        """Round ``k``'s state array written by :meth:`write_array`."""
        fs, p = storage.filesystem(self.path(k, name))
        return np.load(fs.open_input_file(p), allow_pickle=False)


# -------------------------------------------------------------------------------------- round loop


class RoundPlan(Protocol[S]):
    """What a physical plan contributes to the round loop: its state of type ``S`` and four operations."""

    name: str  # the plan's name in log lines and round reports
    rows: int  # vertices updated per round (reported; counting would cost a job)
    lazy: bool  # a step only plans Spark work, which runs in the job of the next cut or save

    def step(self, state: S) -> S:
        """The state after one more round."""
        ...

    def save(self, store: RoundStore, k: int, state: S) -> S:
        """Write round ``k``'s state into ``store``; returns the state to go on with."""
        ...

    def load(self, store: RoundStore, k: int) -> S:
        """The state written for round ``k``."""
        ...

    def cut(self, state: S) -> S:
        """The state with its lineage cut (by the run's :class:`LineagePolicy`)."""
        ...


@dataclass
class Rounds:
    """A run of ``rounds`` rounds: where their state is stored, when lineage is cut, who hears of them.

    :meth:`run` is the one round loop of both propagation plans. Round ``k``'s state is saved when a
    store is given and ``k`` is due for a cut or the last round; otherwise it is cut when due.
    """

    rounds: int
    store: RoundStore
    policy: LineagePolicy
    on_round: RoundCallback | None = None

    def saves(self, k: int) -> bool:
        """True when round ``k``'s state is written to the store."""
        return bool(self.store.root) and (self.policy.due(k) or k == self.rounds)

    def run(self, plan: RoundPlan[S], state: S) -> S:
        """The state after the last round, from ``state`` (round 0) or the store's last complete round."""
        what = f"{self.policy.what}[{plan.name}]"
        start = self.store.latest(self.rounds)
        self.store.begin()
        if start:
            state = plan.load(self.store, start)
            log.info("%s: resuming after round %d/%d from %s", what, start, self.rounds, self.store.root)
        try:
            for k in range(start + 1, self.rounds + 1):
                logs.set_round(k)
                tk = time.perf_counter()
                state = plan.step(state)
                secs = time.perf_counter() - tk  # an eager plan's round: its step
                saved, due = self.saves(k), self.policy.due(k)
                if saved:
                    state = plan.save(self.store, k, state)
                    self.store.complete(k)
                elif due:
                    state = plan.cut(state)
                if plan.lazy:  # a lazy plan's round runs in the job of its save or cut
                    secs = time.perf_counter() - tk
                ran = " (planned; runs with the next lineage cut)" if plan.lazy and not (saved or due) else ""
                log.info("%s round %d/%d: %d rows, %.2fs%s", what, k, self.rounds, plan.rows, secs, ran)
                if self.on_round:
                    self.on_round(k, {"round": k, "rounds": self.rounds, "rows": plan.rows, "seconds": secs,
                                      "plan": plan.name})
        finally:
            logs.set_round(None)
        return state
