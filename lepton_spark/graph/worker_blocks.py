"""Arrays kept on the executor's disk between the rounds of a partitioned run (keyed by a block's
label, or any name): a vertex program's edge blocks, a propagation block's partial for its own vertices.

A partitioned round is a cogroup of the messages addressed to a block with the block's cached CSR
rows, and at 1M vertices / 19M edges on 2 cores most of a PageRank round was the JVM handing each
block's 32 MB of CSR to Python again (a task took 0.25-0.5 s, its numpy work 0.05 s). So the first
round's task also writes its block's arrays as ``.npy`` files into the executor's own scratch
directory (Spark's ``SparkFiles`` root: per application, removed when the executor stops), and the
later rounds cogroup the messages with the blocks' ``pid`` only: the task memory-maps its block's
files. Every task that finds no files for its block (another executor, a lost executor, a sandbox
that cannot write) answers with a miss row instead; the driver then redoes that round with the CSR
rows shipped as before and ships them for the rest of the run. The cache is a speed-up only: a
round's result never depends on whether it hit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Mapping

import numpy as np

_DIR = "lepton-blocks"


def worker_root() -> str | None:
    """The executor's scratch directory as a Python worker sees it (None when it has none)."""
    try:
        from pyspark.files import SparkFiles

        return SparkFiles.getRootDirectory() if SparkFiles._is_running_on_worker else None
    except Exception:  # noqa: BLE001 - no root means no cache, never a failed task
        return None


def _block_dir(root: str, token: str, key: int | str) -> str:
    return os.path.join(root, _DIR, token, str(key))


def store(root: str | None, token: str, pid: int | str, arrays: Mapping[str, np.ndarray]) -> bool:
    """Write block ``pid``'s ``arrays`` once (a directory of ``.npy`` files, renamed into place whole);
    False when it could not (the round goes on; the next round misses and ships the block again)."""
    if not root:
        return False
    final = _block_dir(root, token, pid)
    if os.path.isdir(final):
        return True
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    try:
        os.makedirs(tmp)
        for name, a in arrays.items():
            np.save(os.path.join(tmp, f"{name}.npy"), np.ascontiguousarray(a), allow_pickle=False)
        os.rename(tmp, final)
        return True
    except OSError:  # a concurrent attempt renamed first, or no space / no permission
        shutil.rmtree(tmp, ignore_errors=True)
        return os.path.isdir(final)


def load(root: str | None, token: str, pid: int | str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Block ``pid``'s arrays ``names``, memory-mapped (read-only); None when any is missing."""
    if not root:
        return None
    base = _block_dir(root, token, pid)
    try:
        return {n: _open(os.path.join(base, f"{n}.npy")) for n in names}
    except (OSError, ValueError):
        return None


def _open(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:  # an empty array cannot be mapped
        return np.load(path, allow_pickle=False)


def drop(root: str | None, token: str, pid: int | str) -> None:
    """Remove block ``pid``'s files (and the run's directory once it is empty)."""
    if not root:
        return
    shutil.rmtree(_block_dir(root, token, pid), ignore_errors=True)
    with contextlib.suppress(OSError):  # other blocks' files still there, or already gone
        os.rmdir(os.path.join(root, _DIR, token))
