"""Round state of iterative graph computations: the lineage cut and the resumable round store.

Lineage is cut every ``checkpoint_interval`` rounds (:func:`cut`). When a checkpoint directory is
given, each completed round's state is also written there with a completion marker
(:class:`RoundStore`), and a later call with the same inputs resumes from the last complete round
(docs/architecture.md §2.2, §6).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pyspark.sql import DataFrame

from lepton_spark import storage
from lepton_spark.session import is_local_master

log = logging.getLogger(__name__)

RoundCallback = Callable[[int, dict[str, Any]], None]


def cut(df: DataFrame) -> DataFrame:
    """Cut lineage and materialise.

    Local mode: ``localCheckpoint`` (executor memory, the fastest cut; nothing can be lost that the
    driver would survive). On a cluster a lost executor would take local checkpoint blocks with it
    and fail the job, so there the cut is a reliable ``checkpoint`` into the checkpoint directory,
    falling back to ``localCheckpoint`` when no directory is configured; persist+count where neither
    is available (some Connect servers).
    """
    if not is_local_master(df.sparkSession):
        try:
            return df.checkpoint(eager=True)
        except Exception as exc:  # noqa: BLE001 - no checkpoint directory: local checkpoint instead
            log.warning("propagate: reliable checkpoint failed (%s); using localCheckpoint "
                        "(set spark.checkpoint.dir to survive executor loss)", storage.first_line(exc))
    try:
        return df.localCheckpoint(eager=True)
    except Exception as exc:  # noqa: BLE001 - some Connect servers lack it; persisting is the fallback
        log.debug("localCheckpoint unavailable (%s); persisting instead", exc)
        df = df.persist()
        df.count()
        return df


class RoundStore:
    """Round state under ``<checkpoint>/round-NNNN/`` with a ``_COMPLETE`` marker (resume support)."""

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
