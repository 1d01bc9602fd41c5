"""Values attached to DataFrame objects, weakly: what this process knows about a DataFrame it made.

Two kinds of DataFrame carry knowledge that Spark's plan does not: a broadcast propagation's result,
whose matrix the driver still holds (:mod:`lepton_spark.graph.resident`), and rows the driver wrote
to a local file (:func:`lepton_spark.storage.create_df`). Both are recognised by the object itself:
an entry lives as long as its DataFrame, and a DataFrame derived from it is an ordinary one.
"""

from __future__ import annotations

import weakref
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class FrameTags(Generic[T]):
    """``tag(df, value)`` attaches ``value`` to the object ``df``; ``get(df)`` returns it, or None for
    any other object (also one that reuses a collected DataFrame's ``id``). ``id(df) in tags`` says
    whether the entry is still there (it is dropped when its DataFrame is collected)."""

    def __init__(self) -> None:
        self._tags: dict[int, tuple[weakref.ref, T]] = {}

    def tag(self, df: Any, value: T) -> Any:
        """Attach ``value`` to ``df``; returns ``df``."""
        key = id(df)
        self._tags[key] = (weakref.ref(df, lambda _ref, key=key: self._tags.pop(key, None)), value)
        return df

    def get(self, df: Any) -> T | None:
        hit = self._tags.get(id(df))
        if hit is None or hit[0]() is not df:
            return None
        return hit[1]

    def __contains__(self, key: int) -> bool:
        return key in self._tags
