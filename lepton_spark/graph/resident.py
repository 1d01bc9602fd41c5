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
