"""Lepton Spark: a Spark-based big-graph learning pipeline (build, learn, propagate, analyse, publish)."""

from __future__ import annotations

__version__ = "0.1.0"
