"""lepton_spark.storage: the one atomic file writer and the one directory swap.

Each test states the crash-consistency property it pins: what a reader (or a crash at a given point)
can observe. The non-local branch of ``atomic_write`` runs on a pyarrow SubTreeFileSystem standing in
for a remote store (same code path as ``hdfs://`` / ``s3://``), with no Spark.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from lepton_spark import storage


def _hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


class Boom(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# atomic_write
# --------------------------------------------------------------------------------------------------
def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.json"
    storage.write_json(str(target), {"b": 1, "a": [1.5]})
    assert target.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'  # indent 2, sorted keys
    assert _hidden(target.parent) == []


def test_atomic_write_reader_sees_old_content_until_the_rename(tmp_path: Path) -> None:
    target = tmp_path / "marker"
    target.write_text("old\n")
    seen_during_write = []

    def write(out):
        out.write(b"new")
        seen_during_write.append(target.read_text())  # the new bytes go elsewhere until complete
        out.write(b"\n")

    storage.atomic_write(target, write)
    assert seen_during_write == ["old\n"]
    assert target.read_text() == "new\n"


def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.json"
    target.write_text("old")

    def write(out):
        out.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        storage.atomic_write(target, write)
    assert target.read_text() == "old"
    assert _hidden(tmp_path) == []


def test_atomic_write_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        storage.write_text(str(tmp_path / "f"), "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640  # 0666 & ~027


def test_atomic_write_file_uri_is_local(tmp_path: Path) -> None:
    storage.write_bytes(f"file://{tmp_path}/x.bin", b"\x00\x01")
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``fake://`` URIs on a file system that is not the local one (the pyarrow-stream branch)."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    real = storage.filesystem

    def filesystem(path: str):
        if path.startswith("fake://"):
            return fs, path[len("fake://") :]
        return real(path)

    monkeypatch.setattr(storage, "filesystem", filesystem)
    return tmp_path


def test_atomic_write_remote_branch(remote: Path) -> None:
    (remote / "bucket").mkdir()
    (remote / "bucket" / "f.txt").write_text("old")
    storage.write_text("fake://bucket/f.txt", "new")
    assert (remote / "bucket" / "f.txt").read_text() == "new"
    assert _hidden(remote / "bucket") == []
    storage.write_text("fake://bucket/deeper/g.txt", "g")  # parents created
    assert (remote / "bucket" / "deeper" / "g.txt").read_text() == "g"


def test_atomic_write_remote_failure_keeps_old_and_removes_temp(remote: Path) -> None:
    (remote / "bucket").mkdir()
    (remote / "bucket" / "f.txt").write_text("old")

    def write(out):
        out.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        storage.atomic_write("fake://bucket/f.txt", write)
    assert (remote / "bucket" / "f.txt").read_text() == "old"
    assert _hidden(remote / "bucket") == []


# --------------------------------------------------------------------------------------------------
# replace_dir
# --------------------------------------------------------------------------------------------------
def _dir(path: Path, **files: str) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


def test_replace_dir_swaps_in_and_deletes_the_old(tmp_path: Path) -> None:
    final = _dir(tmp_path / "out", a="old", only_old="x")
    new = _dir(tmp_path / ".out.staging", a="new")
    storage.replace_dir(new, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, no .old- left
    assert {p.name: p.read_text() for p in Path(final).iterdir()} == {"a": "new"}


def test_replace_dir_without_previous(tmp_path: Path) -> None:
    new = _dir(tmp_path / "staged", a="new")
    final = tmp_path / "outputs" / "t" / "run_date=2026-01-01"  # parents created
    storage.replace_dir(new, str(final))
    assert (final / "a").read_text() == "new" and not Path(new).exists()


def test_replace_dir_default_aside_is_beside_final(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = _dir(tmp_path / "graph", a="old")
    new = _dir(tmp_path / "g2", a="new")
    deleted = []
    monkeypatch.setattr(storage, "delete_path", deleted.append)
    storage.replace_dir(new, final)
    assert len(deleted) == 1 and deleted[0].startswith(f"{final}.old-")
    assert Path(deleted[0], "a").read_text() == "old"


def test_replace_dir_crash_between_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented crash state: final absent, the old content at aside, the new one still staged."""
    final = _dir(tmp_path / "out", a="old")
    new = _dir(tmp_path / "staged", a="new")
    aside = str(tmp_path / "_trash" / "run" / "out")
    real_move, calls = storage.move, []

    def move(src: str, dst: str) -> None:
        calls.append((src, dst))
        if len(calls) == 2:
            raise Boom
        real_move(src, dst)

    monkeypatch.setattr(storage, "move", move)
    with pytest.raises(Boom):
        storage.replace_dir(new, final, aside=aside)
    assert calls == [(final, aside), (new, final)]
    assert not Path(final).exists()
    assert (Path(aside) / "a").read_text() == "old" and (Path(new) / "a").read_text() == "new"


def test_publish_table_sets_old_partition_aside_in_trash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nightly's swap: the previous partition goes to _trash/<run id>/ (what clean_staging removes)."""
    from lepton_spark.pipeline import publish

    out = str(tmp_path)
    final = Path(publish.partition_dir(out, "pagerank", "2026-01-01"))
    _dir(final, **{"part-0.parquet": "old", publish.RUN_MARKER: "run0\nt0\n"})
    staged = Path(publish.staged_dir(out, "run1", "pagerank", "2026-01-01"))
    _dir(staged, **{"part-0.parquet": "new", publish.RUN_MARKER: "run1\nt1\n"})
    deleted = []
    monkeypatch.setattr(storage, "delete_path", deleted.append)
    publish.publish_table(out, "run1", "pagerank", "2026-01-01")
    assert publish.publication(out, "pagerank", "2026-01-01") == ("run1", "t1")
    assert len(deleted) == 1 and deleted[0].startswith(f"{out}/_trash/run1/")
    assert Path(deleted[0], "part-0.parquet").read_text() == "old"


def test_write_json_round_trip(tmp_path: Path) -> None:
    storage.write_json(str(tmp_path / "m.json"), {"x": [1, 2], "when": tmp_path})  # default=str
    assert json.loads(storage.read_text(str(tmp_path / "m.json"))) == {"x": [1, 2], "when": str(tmp_path)}


def test_fsync_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    storage.write_bytes(str(tmp_path / "durable"), b"x")
    assert len(calls) == 1
    storage.write_bytes(str(tmp_path / "scratch"), b"y", fsync=False)
    assert len(calls) == 1 and (tmp_path / "scratch").read_bytes() == b"y"


# --------------------------------------------------------------------------------------------------
# count_parquet_rows
# --------------------------------------------------------------------------------------------------
def test_count_parquet_rows_equals_spark_with_nulls_and_side_files(spark, tmp_path: Path) -> None:
    """The footer count and the per-value counts equal Spark's count and groupBy on a table written by
    Spark in several files, with null values and the run marker and _SUCCESS beside the data files."""
    rows = [(i, None if i % 7 == 0 else i % 3) for i in range(50)]
    path = str(tmp_path / "t" / "run_date=2026-12-01")
    spark.createDataFrame(rows, "id long, label int").repartition(3).write.parquet(path)
    (tmp_path / "t" / "run_date=2026-12-01" / "_LEPTON_RUN").write_text("run\ntoken\n")
    want = {r["label"]: r["count"] for r in spark.read.parquet(path).groupBy("label").count().collect()}
    assert storage.count_parquet_rows(spark, path) == (50, {})
    total, groups = storage.count_parquet_rows(spark, path, by="label")
    assert total == 50 and groups == want and groups[None] == 8  # 0, 7, ..., 49
    empty = str(tmp_path / "empty")
    spark.createDataFrame([], "id long, label int").write.parquet(empty)
    assert storage.count_parquet_rows(spark, empty, by="label") == (0, {})


def test_count_parquet_rows_falls_back_to_spark(spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path pyarrow cannot open (here: its file-system lookup fails) is counted through Spark."""
    path = str(tmp_path / "t")
    spark.createDataFrame([(1, 0), (2, 0), (3, 1)], "id long, label int").write.parquet(path)

    def no_fs(p: str) -> None:
        raise OSError(f"no pyarrow file system for {p}")

    monkeypatch.setattr(storage, "filesystem", no_fs)
    assert storage.count_parquet_rows(spark, path) == (3, {})
    assert storage.count_parquet_rows(spark, path, by="label") == (3, {0: 2, 1: 1})


def test_create_df_in_local_mode_reads_the_rows_from_a_local_parquet_file(spark) -> None:
    """In a local-mode session create_df writes the table to this process's rows directory and reads it
    back: the same rows as createDataFrame, cast to the schema when one is given (float64 lists ->
    array<float>); an empty table too."""
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import types as T
    from pyspark.testing import assertDataFrameEqual

    x = np.arange(12, dtype=np.float64).reshape(6, 2) / 3.0
    table = pa.table({"id": pa.array([5, 1, 4, 2, 3, 0], pa.int64()),
                      "features": pa.array([list(r) for r in x], pa.list_(pa.float64()))})
    schema = T.StructType([T.StructField("id", T.LongType(), False),
                           T.StructField("features", T.ArrayType(T.FloatType(), False), False)])
    df = storage.create_df(spark, table, schema)
    assert df.schema.simpleString() == "struct<id:bigint,features:array<float>>"
    assert [f for f in os.listdir(storage.local_rows_dir()) if f.endswith(".parquet")]
    want = spark.createDataFrame([(int(i), [float(v) for v in r.astype(np.float32)]) for i, r in
                                  zip(table.column("id").to_pylist(), x)], "id long, features array<float>")
    assertDataFrameEqual(df, want, rtol=0, atol=0)
    assert sorted(r["id"] for r in df.select("id").collect()) == [0, 1, 2, 3, 4, 5]
    untyped = storage.create_df(spark, pa.table({"id": pa.array([1, 2], pa.int64()), "v": [0.5, None]}))
    assertDataFrameEqual(untyped, spark.createDataFrame([(1, 0.5), (2, None)], "id long, v double"))
    empty = storage.create_df(spark, table.slice(0, 0), schema)
    assert empty.count() == 0 and empty.columns == ["id", "features"]


def test_remove_stale_dirs_keeps_live_and_foreign_names(tmp_path: Path) -> None:
    """Directories of a process that is gone are removed; this process's, a live one's (pid 1) and
    names without a pid stay."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / f"lepton-rows-{dead}-abc").mkdir()
    (tmp_path / f"lepton-rows-{os.getpid()}-mine").mkdir()
    (tmp_path / "lepton-rows-1-init").mkdir()
    (tmp_path / "lepton-rows-nopid").mkdir()
    (tmp_path / "other-123-x").mkdir()
    assert storage.remove_stale_dirs(str(tmp_path), "lepton-rows-") == [str(tmp_path / f"lepton-rows-{dead}-abc")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"lepton-rows-{os.getpid()}-mine", "lepton-rows-1-init", "lepton-rows-nopid", "other-123-x"])


def test_driver_rows_are_written_as_spark_writes_them(spark, tmp_path: Path) -> None:
    """A forward pass's rows that create_df wrote locally (renamed with rename_columns) are known to
    local_rows and staged with pyarrow; the files read back through Spark as the same rows, with the
    same schema, as the DataFrame path's writes (embeddings; predictions with ties, a NaN, a negative)."""
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.testing import assertDataFrameEqual

    from lepton_spark.graph.arrow import matrix_to_list
    from lepton_spark.pipeline.stages import embedding_rows, prediction_rows, predictions_from

    rng = np.random.default_rng(5)
    probs = rng.random((50, 4)).astype(np.float32)
    probs[3] = [0.2, 0.7, 0.7, 0.1]  # tie: the first largest
    probs[7] = [0.1, np.nan, 0.9, 0.0]  # NaN counts as the largest in both
    probs[9] = [-1.0, -0.5, -3.0, -0.5]
    table = pa.table({"id": pa.array(rng.permutation(1000)[:50], pa.int64()),
                      "features": matrix_to_list(rng.normal(size=(50, 6)).astype(np.float32)),
                      "probs": matrix_to_list(probs)})
    arr = T.ArrayType(T.FloatType())
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("features", arr),
                           T.StructField("probs", arr)])
    out = storage.rename_columns(storage.create_df(spark, table, schema), {"features": "embedding"})
    rows = storage.local_rows(out)
    assert rows is not None and rows.column_names == ["id", "embedding", "probs"]
    assert rows.column("embedding").to_pylist() == table.column("features").to_pylist()
    assert storage.local_rows(out.select("id", "probs")) is None  # a derived DataFrame is not
    assert storage.local_rows(spark.range(3)) is None

    emb_spark = out.select("id", F.col("embedding").cast("array<float>").alias("embedding"))
    emb_spark.write.parquet(str(tmp_path / "e_spark"))
    predictions_from(out).write.parquet(str(tmp_path / "p_spark"))
    storage.write_rows(embedding_rows(rows), str(tmp_path / "e_rows"))
    storage.write_rows(prediction_rows(rows), str(tmp_path / "p_rows"))
    storage.write_rows(prediction_rows(rows), str(tmp_path / "p_rows"))  # replaces, as mode overwrite
    assert len(list((tmp_path / "p_rows").glob("*.parquet"))) == 1
    assert not [p for p in (tmp_path / "p_rows").iterdir() if p.name.startswith(".")]  # no temp files left
    for name in ("e", "p"):
        want = spark.read.parquet(str(tmp_path / f"{name}_spark"))
        got = spark.read.parquet(str(tmp_path / f"{name}_rows"))
        assert got.schema == want.schema
        assertDataFrameEqual(got, want, rtol=0.0, atol=0.0)
    labels = {r["id"]: r["label"] for r in spark.read.parquet(str(tmp_path / "p_rows")).collect()}
    ids = table.column("id").to_pylist()
    assert labels[ids[3]] == 1 and labels[ids[7]] == 1 and labels[ids[9]] == 1
    with pytest.raises(ValueError, match="not on the local file system"):
        storage.write_rows(rows, "s3://bucket/x")


def test_local_size_sums_files_under_local_paths(tmp_path: Path) -> None:
    """A directory's files (nested ones too) and a single file add up; a file:// URI is local; a
    missing path, an empty one or another file system's URI make the size unknown (None)."""
    table = tmp_path / "table"
    (table / "part=1").mkdir(parents=True)
    (table / "a.parquet").write_bytes(b"x" * 100)
    (table / "part=1" / "b.parquet").write_bytes(b"x" * 23)
    (table / "_SUCCESS").write_bytes(b"")
    single = tmp_path / "edges.csv"
    single.write_bytes(b"y" * 7)
    assert storage.local_size([str(table)]) == 123
    assert storage.local_size([str(table), str(single)]) == 130
    assert storage.local_size([f"file://{single}"]) == 7
    assert storage.local_size([str(table), str(tmp_path / "missing")]) is None
    assert storage.local_size([str(table), "s3://bucket/edges"]) is None
    assert storage.local_size([str(table), ""]) is None
    assert storage.local_size([]) is None
