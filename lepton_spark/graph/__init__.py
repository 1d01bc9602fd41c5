"""The graph engine: GraphFrames' API and semantics on plain DataFrames, plus vector propagation.

``GraphFrame`` / ``AM`` / ``Pregel`` follow GraphFrames (graphframes-py 0.12) names and semantics so
GraphFrames code ports unchanged; when the real GraphFrames JVM package is on the classpath and
``graph.engine`` is ``auto`` or ``graphframes``, the graph algorithms delegate to it (see
:mod:`lepton_spark.graph.engine`). ``propagate`` / ``spmm`` / ``apply_dense`` are the project's vector
message-passing hot path (docs/architecture.md §2).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AM": "lepton_spark.graph.frame",
    "GraphFrame": "lepton_spark.graph.frame",
    "Pregel": "lepton_spark.graph.pregel",
    "apply_dense": "lepton_spark.graph.dense",
    "map_features": "lepton_spark.graph.dense",
    "normalize_edges": "lepton_spark.graph.normalize",
    "OperatorCache": "lepton_spark.graph.propagation",
    "propagate": "lepton_spark.graph.propagation",
    "spmm": "lepton_spark.graph.propagation",
}

__all__ = [
    "AM", "GraphFrame", "OperatorCache", "Pregel", "apply_dense", "map_features", "normalize_edges", "propagate",
    "spmm",
]

if TYPE_CHECKING:  # pragma: no cover
    from lepton_spark.graph.dense import apply_dense, map_features
    from lepton_spark.graph.frame import AM, GraphFrame
    from lepton_spark.graph.normalize import normalize_edges
    from lepton_spark.graph.pregel import Pregel
    from lepton_spark.graph.propagation import OperatorCache, propagate, spmm


def __getattr__(name: str) -> Any:
    """Import on first use (PEP 562): importing the package stays cheap and free of cycles."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lepton_spark.graph' has no attribute {name!r}")
