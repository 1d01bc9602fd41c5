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
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

_TABLES: dict[int, tuple[weakref.ref, np.ndarray, np.ndarray]] = {}


def remember(df: Any, ids: np.ndarray, x: np.ndarray) -> Any:
    """Register ``df`` (columns ``id``, ``features``) as holding ``x[i]`` for ``ids[i]``, ids sorted
    ascending and unique; returns ``df``."""
    key = id(df)
    _TABLES[key] = (weakref.ref(df, lambda _ref, key=key: _TABLES.pop(key, None)), ids, x)
    return df


def lookup(df: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ids, x)`` when ``df`` itself is a registered table, else None."""
    hit = _TABLES.get(id(df))
    if hit is None or hit[0]() is not df:
        return None
    return hit[1], hit[2]
