"""Atomic publication of run-date partitions.

A run writes every table it produces to ``<output>/_staging/<run_id>/<table>/run_date=<d>/`` first.
Only when all its tables are staged does it publish them: for each table the previous
``<output>/outputs/<table>/run_date=<d>/`` directory is renamed aside, the staged one renamed in, and
the old one deleted. Renames are atomic on local filesystems and HDFS (on object stores a rename is a
copy; there the manifest, written last, is the commit point readers should trust). So a reader of
``outputs/<table>`` sees either the previous complete partition or the new complete one — never a
half-written one — and other run dates are never touched. A rerun of the same date replaces the
partition (no duplicates).

Each staged partition carries a ``_LEPTON_RUN`` file naming the run id that wrote it and a token unique
to that write (a rerun of the same run id writes a new token), written after its
data (its presence means "completely staged") and moved in with it (Spark and pyarrow skip ``_``
files). So a published partition says which run it came from: a rerun that resumes after a crash
between two swaps recognises the tables it already published, and a reader can check that the
partitions it reads belong to the run its manifest names.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pyspark.sql import DataFrame

from lepton_spark import storage

log = logging.getLogger(__name__)

#: marker file in a staged (and later published) partition: the id of the run that wrote it
RUN_MARKER = "_LEPTON_RUN"


def table_dir(output: str, table: str) -> str:
    return storage.join_path(output, "outputs", table)


def partition_dir(output: str, table: str, run_date: str) -> str:
    return storage.join_path(table_dir(output, table), f"run_date={run_date}")


def staged_dir(output: str, run_id: str, table: str, run_date: str) -> str:
    return storage.join_path(output, "_staging", run_id, table, f"run_date={run_date}")


def stage_table(df: DataFrame, output: str, run_id: str, table: str, run_date: str) -> str:
    """Write ``df`` (without run_date; the partition directory carries it) to the staging area."""
    path = staged_dir(output, run_id, table, run_date)
    df.write.mode("overwrite").parquet(path)
    return _mark(path, run_id)


def stage_rows(rows: Any, output: str, run_id: str, table: str, run_date: str) -> str:
    """:func:`stage_table` for a pyarrow Table the driver holds, on a local output: written with pyarrow
    (:func:`lepton_spark.storage.write_rows`), the run marker after it as for a DataFrame."""
    path = staged_dir(output, run_id, table, run_date)
    storage.write_rows(rows, path)
    return _mark(path, run_id)


def mark_staged(output: str, run_id: str, table: str, run_date: str) -> str:
    """Mark a staged partition that was written by other means (:mod:`lepton_spark.task_writes`)
    complete: its run marker, after its data; returns its path."""
    return _mark(staged_dir(output, run_id, table, run_date), run_id)


def _mark(path: str, run_id: str) -> str:
    """Write a staged partition's run marker (its data is complete); returns ``path``."""
    storage.write_text(storage.join_path(path, RUN_MARKER), f"{run_id}\n{uuid.uuid4().hex}\n")
    return path


def is_staged(output: str, run_id: str, table: str, run_date: str) -> bool:
    return storage.path_exists(storage.join_path(staged_dir(output, run_id, table, run_date), RUN_MARKER))


def publication(output: str, table: str, run_date: str) -> tuple[str, str] | None:
    """(run id, write token) of ``table``'s published partition for ``run_date`` (None: absent/unmarked)."""
    marker = storage.join_path(partition_dir(output, table, run_date), RUN_MARKER)
    if not storage.path_exists(marker):
        return None
    run_id, _, token = storage.read_text(marker).strip().partition("\n")
    return run_id, token.strip()


def published_by(output: str, table: str, run_date: str) -> str | None:
    """The run id that published ``table``'s partition for ``run_date`` (None: absent or unmarked)."""
    pub = publication(output, table, run_date)
    return pub[0] if pub else None


def publish_table(output: str, run_id: str, table: str, run_date: str) -> None:
    """Swap the staged partition in place of the published one (:func:`lepton_spark.storage.replace_dir`;
    the previous partition goes aside under ``_trash/<run id>/``, see the module docstring)."""
    staged = staged_dir(output, run_id, table, run_date)
    if not storage.path_exists(storage.join_path(staged, RUN_MARKER)):
        raise RuntimeError(f"table {table} for {run_date} was not staged by run {run_id}")
    aside = storage.join_path(output, "_trash", run_id, uuid.uuid4().hex[:8], table)  # clean_staging's
    storage.replace_dir(staged, partition_dir(output, table, run_date), aside=aside)
    log.info("published %s run_date=%s", table, run_date)


def clean_staging(output: str, run_id: str) -> None:
    for sub in ("_staging", "_trash"):
        path = storage.join_path(output, sub, run_id)
        if storage.path_exists(path):
            storage.delete_path(path)
    for sub in ("_staging", "_trash"):
        storage.remove_if_empty(storage.join_path(output, sub))
