"""Feature tables whose rows the driver already holds (the broadcast plan's results).

The broadcast plan computes on the driver: it collects the features, multiplies the edge blocks
round by round, and returns its matrix as a DataFrame of local rows. A model's next step on that
table -- a dense layer, another propagation -- would send those rows through a Python worker and
collect them straight back (Cora's two-layer GCN: about a second of its propagate stage for a
2708 x 16 matrix). A table registered here keeps its driver matrix beside the DataFrame, so
:func:`~lepton_spark.graph.dense.map_features` applies its function to the matrix and the
broadcast plan reads the matrix instead of collecting the rows again. Only the DataFrame object
the plan returned (or ``map_features`` made) is registered; any other DataFrame derived from it is
an ordinary one. An entry lives as long as its DataFrame.

The partitioned plan's results are registered too, the other way round: their rows are unpacked
(a ``mapInArrow``) from a cut table of packed blocks (``(local, values)``: binary ids and float32
features of many rows each), so a per-row step on such a result reads the packed table and turns
it into rows once, in the same Python pass (:func:`lookup_packed`), instead of sending the rows to
a Python worker and back (1M x 64: the array columns' conversions both ways).

A :func:`~lepton_spark.graph.dense.map_features` output whose function keeps the width (``keeps_width``:
a standardisation, a row normalisation) is registered with its input and function
(:func:`lookup_mapped`): a partitioned propagation of it may apply the function inside its first
round's blocks instead of sending every row through a Python worker and back first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lepton_spark.frame_tags import FrameTags

_TABLES: FrameTags[tuple[np.ndarray, np.ndarray]] = FrameTags()


def remember(df: Any, ids: np.ndarray, x: np.ndarray) -> Any:
    """Register ``df`` (columns ``id``, ``features``) as holding ``x[i]`` for ``ids[i]``, ids sorted
    ascending and unique; returns ``df``."""
    return _TABLES.tag(df, (ids, x))


def lookup(df: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ids, x)`` when ``df`` itself is a registered table, else None."""
    return _TABLES.get(df)


_PACKED: FrameTags[tuple[Any, int]] = FrameTags()


def remember_packed(df: Any, packed: Any, dim: int) -> Any:
    """Register ``df`` (columns ``id``, ``features``) as the rows of the DataFrame ``packed`` (columns
    ``local``: int64 ids, ``values``: their float32 features, ``dim`` per row, as binary values of many
    rows each); returns ``df``."""
    return _PACKED.tag(df, (packed, int(dim)))


def lookup_packed(df: Any) -> tuple[Any, int] | None:
    """``(packed DataFrame, dim)`` when ``df`` itself is a registered packed result, else None."""
    return _PACKED.get(df)


_MAPPED: FrameTags[tuple[Any, Any]] = FrameTags()


def remember_mapped(df: Any, base: Any, fn: Any) -> Any:
    """Register ``df`` (columns ``id``, ``features``) as ``fn`` applied row by row to the features of
    ``base`` (columns ``id``, ``features``), keeping their width; returns ``df``."""
    return _MAPPED.tag(df, (base, fn))


def lookup_mapped(df: Any) -> tuple[Any, Any] | None:
    """``(base DataFrame, fn)`` when ``df`` itself is a registered width-keeping map, else None."""
    return _MAPPED.get(df)


_PACKED_ROWS: FrameTags[tuple[Any, Callable[[Iterator[Any]], Iterator[Any]]]] = FrameTags()


def remember_packed_rows(df: Any, packed: Any, rows: Callable[[Iterator[Any]], Iterator[Any]]) -> Any:
    """Register ``df`` as ``packed.mapInArrow(rows, df.schema)``: its rows are what the picklable
    function ``rows`` makes of the Arrow batches of the packed DataFrame ``packed`` (a partitioned
    propagation's result, :func:`remember_packed`), batches with ``df``'s column names. A writer on this
    machine may run ``rows`` in its own tasks (:func:`lepton_spark.task_writes.write_in_tasks`); returns ``df``."""
    return _PACKED_ROWS.tag(df, (packed, rows))


def lookup_packed_rows(df: Any) -> tuple[Any, Callable[[Iterator[Any]], Iterator[Any]]] | None:
    """``(packed DataFrame, rows function)`` when ``df`` itself is registered by :func:`remember_packed_rows`."""
    return _PACKED_ROWS.get(df)


class _Renamed:
    """``rows`` with columns renamed by ``mapping`` (picklable when ``rows`` is)."""

    def __init__(self, rows: Callable[[Iterator[Any]], Iterator[Any]], mapping: dict[str, str]) -> None:
        self.rows, self.mapping = rows, dict(mapping)

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        for b in self.rows(batches):
            yield type(b).from_arrays(b.columns, names=[self.mapping.get(n, n) for n in b.schema.names])


def rename_columns(df: Any, mapping: dict[str, str]) -> Any:
    """:func:`lepton_spark.storage.rename_columns` that keeps :func:`remember_packed_rows`' registration
    (with the rows' columns renamed the same way)."""
    from lepton_spark import storage

    out = storage.rename_columns(df, mapping)
    hit = _PACKED_ROWS.get(df)
    return out if hit is None else _PACKED_ROWS.tag(out, (hit[0], _Renamed(hit[1], mapping)))
