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
