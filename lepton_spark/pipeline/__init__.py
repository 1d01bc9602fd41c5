"""Nightly orchestration: stages, run ids, resume, atomic publish, manifest, report."""

from __future__ import annotations

from lepton_spark.pipeline.runner import run_pipeline

__all__ = ["run_pipeline"]
