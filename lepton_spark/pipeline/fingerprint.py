"""Fingerprints of what a stage read and of what a run published.

Two kinds, for two questions:

- :func:`inputs_fingerprint` -- "is this still the same input?" -- answers from the file listing
  alone (relative path, size, modification time of every file under a path; a single file is its own
  listing). It costs one listing, so every stage can afford it at every size. A rewrite of an input
  changes it even when the bytes are identical, which makes a resume recompute, never reuse stale
  state.
- :func:`table_fingerprint` -- "which bytes did this run publish?" -- reads a published partition: its
  data files (name, size, sha256 of the content), the total bytes and the row count from the
  Parquet footers. The manifest records it for every table, so a reader can check that the files
  they read are the files the run published.

Hidden files (``.``: checksums, temp files) are ignored by both; ``_``-prefixed markers (``_SUCCESS``,
``_LEPTON_RUN``) by the table fingerprint, which covers data only, but not by the inputs fingerprint
(``_graph.json`` is part of a graph).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lepton_spark import storage


def _files(path: str, *, data_only: bool) -> list[tuple[str, Any]]:
    """(relative path, FileInfo) of every file under ``path`` (or ``path`` itself if a file), sorted."""
    import pyarrow.fs as pafs

    fs, p = storage.filesystem(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        return []
    if info.type == pafs.FileType.File:
        return [(info.base_name, info)]
    out = []
    for f in fs.get_file_info(pafs.FileSelector(p, recursive=True)):
        if f.type != pafs.FileType.File:
            continue
        rel = f.path[len(p.rstrip("/")) + 1:]
        parts = rel.split("/")
        if any(s.startswith(".") for s in parts) or (data_only and any(s.startswith("_") for s in parts)):
            continue
        out.append((rel, f))
    return sorted(out, key=lambda t: t[0])


def inputs_fingerprint(path: str) -> str:
    """sha256 over the listing (relative path, bytes, mtime in ns) of ``path``; "missing" if absent."""
    files = _files(path, data_only=False)
    if not files:
        return "missing"
    h = hashlib.sha256()
    for rel, f in files:
        h.update(f"{rel}\t{f.size}\t{f.mtime_ns}\n".encode())
    return h.hexdigest()


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def table_fingerprint(path: str) -> dict[str, Any]:
    """Rows, files, bytes and a content sha256 of the Parquet data files under ``path``."""
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(path)
    h = hashlib.sha256()
    rows = total = 0
    files = _files(path, data_only=True)
    for rel, f in files:
        fh = hashlib.sha256()
        with fs.open_input_stream(f.path) as stream:
            while chunk := stream.read(8 << 20):
                fh.update(chunk)
        h.update(f"{rel}\t{f.size}\t{fh.hexdigest()}\n".encode())
        total += f.size
        if rel.endswith(".parquet"):
            with fs.open_input_file(f.path) as raw:
                rows += pq.ParquetFile(raw).metadata.num_rows
    return {"rows": rows, "files": len(files), "bytes": total, "sha256": h.hexdigest()}
