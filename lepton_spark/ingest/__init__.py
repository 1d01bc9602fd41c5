"""Raw vertex/edge tables -> validated, normalised graph in the project layout (docs/architecture.md §3)."""

from __future__ import annotations

from lepton_spark.ingest.job import BuildFailed, build_graph

__all__ = ["BuildFailed", "build_graph"]
