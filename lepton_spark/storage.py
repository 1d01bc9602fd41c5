"""Reading input tables and graphs, and publishing outputs atomically.

File operations go through ``pyarrow.fs`` so the same code handles local paths and Hadoop-style URIs
(``hdfs://``, ``s3://``, ``gs://``) from the driver, without touching the JVM (Spark Connect safe).

The two atomic publication primitives of the project live here, and every writer uses them:

* :func:`atomic_write` (and :func:`write_bytes`, :func:`write_text`, :func:`write_json` on top of it)
  -- one file, written to a hidden temporary file beside it and renamed over it: markers, manifests,
  round state, the model artifact, graph exports;
* :func:`replace_dir` -- a whole directory swapped in: the current one renamed aside, the new one
  renamed in, the old one deleted: the nightly's table partitions (``pipeline.publish``), the built
  graph (``ingest``), the bundled samples (``datasets.planetoid``).

A rename is atomic on local file systems and HDFS; on object stores it is a copy, and there the
nightly's manifest, written last, is the commit point readers should trust (docs/architecture.md §6).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lepton_spark.errors import InvalidInputError
from lepton_spark.frame_tags import FrameTags

if TYPE_CHECKING:  # pragma: no cover - annotations only: writing files needs no Spark
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "json")


def filesystem(path: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for a local path or URI."""
    import pyarrow.fs as pafs

    if "://" in path and not path.startswith("file://"):
        return pafs.FileSystem.from_uri(path)
    local = path[len("file://") :] if path.startswith("file://") else path
    return pafs.LocalFileSystem(), str(Path(local).resolve())


def path_exists(path: str) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_dir(path: str) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def delete_path(path: str) -> None:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif info.type == pafs.FileType.File:
        fs.delete_file(p)


def listdir(path: str) -> list[str]:
    """Entries directly under a directory (full paths)."""
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    return [i.path for i in fs.get_file_info(pafs.FileSelector(p, recursive=False))]


def remove_if_empty(path: str) -> None:
    if is_dir(path) and not listdir(path):
        delete_path(path)


def move(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` (atomic on local filesystems and HDFS)."""
    fs, s = filesystem(src)
    _, d = filesystem(dst)
    fs.create_dir(str(Path(d).parent) if "://" not in dst else d.rsplit("/", 1)[0], recursive=True)
    fs.move(s, d)


def _local(path: str | Path) -> Path | None:
    """The local path of ``path`` (a plain path or ``file://`` URI), None for other URIs."""
    if isinstance(path, Path):
        return path
    if "://" in path and not path.startswith("file://"):
        return None
    return Path(path.removeprefix("file://"))


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], *, fsync: bool = True) -> None:
    """Write one file atomically: ``write(stream)`` fills a hidden temporary file beside ``path``
    (``.<name>.<uuid>.tmp``, in the same directory, created if missing), which is then renamed over
    ``path``. A reader, or a crash at any moment, sees the previous file or the complete new one,
    never part of one; a crash can leave only the hidden temporary file behind. A local file is
    flushed to disk (``fsync``) before the rename, so a power cut cannot leave a renamed but empty
    file (``fsync=False`` skips that for large scratch files a rerun recomputes). When ``write`` (or
    the rename) fails, the temporary file is removed and the error raised.
    """
    local = _local(path)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(local.parent / f".{local.name}.{uuid.uuid4().hex}.tmp")
        # O_EXCL: a fresh file, never another writer's; mode 0666 minus the umask, like every other output
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                if fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, local)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs, p = filesystem(str(path))
    parent, name = p.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
        fs.move(tmp, p)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write a file atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda out: out.write(data), fsync=fsync)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file (UTF-8) atomically (:func:`atomic_write`)."""
    write_bytes(path, text.encode())


def replace_dir(new: str, final: str, aside: str | None = None) -> None:
    """Swap the directory ``new`` in at ``final``: the current ``final`` (if any) is renamed to
    ``aside`` (default: ``<final>.old-<random>`` beside it), ``new`` is renamed to ``final``, and the
    old directory is deleted last.

    A reader of ``final`` sees the old complete directory or the new one. A crash between the two
    renames leaves ``final`` absent, the old content at ``aside`` and ``new`` in place; a crash after
    them leaves only ``aside`` to delete. Callers pick ``aside`` where their clean-up looks (the
    nightly: ``<output>/_trash/<run id>/...``).
    """
    old = None
    if path_exists(final):
        old = aside or f"{final.rstrip('/')}.old-{uuid.uuid4().hex[:12]}"
        move(final, old)
    move(new, final)
    if old:
        delete_path(old)


def upload_dir(local_dir: str | Path, dest: str) -> None:
    """Copy the files of a local directory (not recursive) to ``dest`` (local path or URI)."""
    for f in sorted(Path(local_dir).iterdir()):
        if not f.is_file():
            continue
        fs, p = filesystem(join_path(dest, f.name))
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(p) as out:
            out.write(f.read_bytes())


def read_text(path: str) -> str:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def join_path(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def collect_arrow(df: DataFrame) -> Any:
    """Collect a DataFrame as one pyarrow Table (toArrow on Spark >= 4; Arrow batches on 3.5)."""
    import pyarrow as pa

    if hasattr(df, "toArrow"):
        return df.toArrow()
    batches = df._collect_as_arrow()  # pyspark 3.5 classic
    if not batches:
        return pa.Table.from_pandas(df.limit(0).toPandas(), preserve_index=False)
    return pa.Table.from_batches(batches)


def create_df(spark: SparkSession, table: Any, schema: Any = None) -> DataFrame:
    """DataFrame from a pyarrow Table: rows the driver computed (a broadcast propagation's result, a
    dense layer applied to it, the analytics' results). ``schema``: a ``StructType`` the rows take.

    In a local-mode classic session (driver and executors share this machine) the table is written to
    a Parquet file in this process's rows directory (:func:`local_rows_dir`) and read back: Spark reads
    it only when a job needs it, and only the columns that job reads. Shipped through
    ``createDataFrame``, every such table went to the JVM at once and rode in its tasks' closures (18 MB
    per task at 100k x 64) whether or not anything read it; a SGC nightly makes three (the propagated
    features, the class scores, both together) and writes only the last. Measured (SGC nightly, 2
    cores): at 100k / 1M the propagate stage took 7.6-8.0 s against 9.2-10.2 s and analytics 6.5-6.6 s
    against 7.2-8.1 s; at 1M / 10M analytics took 15.6 s against 19.9 s and the JVM's peak RSS was
    3.6 GiB against 5.1 GiB.

    Elsewhere (a cluster, Spark Connect) ``createDataFrame`` ships the rows (directly on Spark >= 4,
    through pandas on 3.5); Spark makes one partition per Arrow batch of
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows (100 tasks for 1M rows), coalesced (no
    shuffle) to one per task slot.
    """
    from lepton_spark.session import is_connect, is_local_master, task_slots

    slots = task_slots(spark)
    if not is_connect(spark) and is_local_master(spark):
        import pyarrow.parquet as pq

        if schema is not None:  # the file holds exactly the schema's types (the reader does not cast)
            from pyspark.sql.pandas.types import to_arrow_schema

            table = table.select(schema.names).cast(to_arrow_schema(schema))
        path = os.path.join(local_rows_dir(), f"{uuid.uuid4().hex}.parquet")
        # one row group per task slot: Spark splits a Parquet file at its row groups
        # plain encoding, no statistics: a scratch file that Spark reads whole, once or twice
        pq.write_table(table, path, row_group_size=max(1, -(-table.num_rows // slots)), compression="none",
                       use_dictionary=False, write_statistics=False)
        df = (spark.read if schema is None else spark.read.schema(schema)).parquet(path)
        # the table stays beside the DataFrame: a caller that writes these rows with pyarrow
        # (local_rows) takes them from memory (zero-copy views of the driver's matrices, mostly)
        return _LOCAL_ROWS.tag(df, ({name: name for name in table.column_names}, table))
    if int(spark.version.split(".")[0]) >= 4:
        df = spark.createDataFrame(table, schema=schema)
    else:
        df = spark.createDataFrame(table.to_pandas(), schema=schema)
    return df.coalesce(slots)


#: DataFrames create_df made from a local file (and renamed copies of them): ({DataFrame column: file
#: column}, the pyarrow Table the file was written from)
_LOCAL_ROWS: FrameTags[tuple[dict[str, str], Any]] = FrameTags()


def rename_columns(df: DataFrame, mapping: dict[str, str]) -> DataFrame:
    """``df.withColumnsRenamed(mapping)``; when ``df`` holds rows :func:`create_df` wrote to a local file,
    :func:`local_rows` knows the renamed DataFrame too."""
    out = df.withColumnsRenamed(mapping)
    hit = _LOCAL_ROWS.get(df)
    if hit is None:
        return out
    names, table = hit
    return _LOCAL_ROWS.tag(out, ({mapping.get(col, col): src for col, src in names.items()}, table))


def local_rows(df: DataFrame) -> Any:
    """The rows of ``df`` as a pyarrow Table when it is a DataFrame :func:`create_df` made from a local
    file in this process (or :func:`rename_columns` of one): the Table that file was written from,
    kept in memory beside the DataFrame; else None (any other DataFrame, including ones derived from
    such a DataFrame by other means).

    Such rows are on this machine already: a table of them is written with pyarrow
    (:func:`write_rows`) rather than through a Spark job that reads the file and writes it again
    (1M x 64 embeddings and their class probabilities: 0.8 s against 3.6-5 s). Reading the file back
    instead of keeping the Table cost 1.2 s of that at 1M x 64.
    """
    hit = _LOCAL_ROWS.get(df)
    if hit is None:
        return None
    names, table = hit
    return table.select(list(names.values())).rename_columns(list(names))


def dictionary_columns(schema: Any) -> list[str]:
    """The columns of a pyarrow ``schema`` that :func:`write_rows` and the task writers dictionary-encode:
    all but floating-point columns and lists of floats (``pq.write_table(use_dictionary=...)``).

    Floats (features, embeddings, scores) are nearly all distinct: pyarrow builds their dictionary,
    finds it too large and falls back to plain encoding, which took as long again -- a 100k x 64
    embeddings table 0.11 s against 0.07 s, and its file was 3% larger. pyarrow matches these names
    against flat columns only: a nested column (a list of integers, a struct) is written plain.

    >>> import pyarrow as pa
    >>> dictionary_columns(pa.schema([("id", pa.int64()), ("features", pa.list_(pa.float32())),
    ...                               ("score", pa.float64()), ("split", pa.string())]))
    ['id', 'split']
    """
    import pyarrow.types as pat

    def floats(t: Any) -> bool:
        if pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
            return floats(t.value_type)
        return pat.is_floating(t)

    return [f.name for f in schema if not floats(f.type)]


#: rows per row group of :func:`write_rows` (Spark splits a Parquet file at its row groups: 131072
#: rows of 64 floats are about 32 MiB)
WRITE_ROW_GROUP = 131_072


def write_rows(table: Any, path: str) -> None:
    """Write a pyarrow Table as the Parquet directory ``path`` on the local file system (replacing it),
    as ``df.write.mode("overwrite").parquet(path)`` would: one snappy-compressed data file, written
    under a hidden temporary name and renamed (:func:`atomic_write`). Spark reads it with the same
    schema as its own files of the same table."""
    import pyarrow.parquet as pq

    local = local_dir(path, empty=True)
    atomic_write(local / f"part-00000-{uuid.uuid4()}.snappy.parquet",
                 lambda out: pq.write_table(table, out, row_group_size=WRITE_ROW_GROUP, compression="snappy",
                                            use_dictionary=dictionary_columns(table.schema)),
                 fsync=False)


def local_size(paths: Iterable[str]) -> int | None:
    """Bytes in the files at or under ``paths`` when every one is a local path that exists; None when
    any is empty, a URI of another file system, a glob or missing (the size is then not known).

    >>> local_size([]) is None, local_size(["s3://bucket/table"]) is None
    (True, True)
    """
    total, seen = 0, False
    for path in paths:
        local = _local(path) if path else None
        if local is None or not local.exists():
            return None
        seen = True
        if local.is_file():
            total += local.stat().st_size
            continue
        for root, _dirs, files in os.walk(local):
            for name in files:
                with contextlib.suppress(OSError):  # removed while walking
                    total += os.stat(os.path.join(root, name)).st_size
    return total if seen else None


def local_dir(path: str, empty: bool = False) -> Path:
    """The local directory ``path`` (a plain path or ``file://`` URI), created if missing; ``empty``:
    whatever it held is removed first (as ``mode("overwrite")``). ValueError for another file system."""
    local = _local(path)
    if local is None:
        raise ValueError(f"{path} is not on the local file system")
    if empty and local.exists():
        shutil.rmtree(local)
    local.mkdir(parents=True, exist_ok=True)
    return local


def is_local_path(path: str) -> bool:
    """A plain path or ``file://`` URI (not hdfs://, s3://, ...)."""
    return _local(path) is not None


ROWS_PREFIX = "lepton-rows-"


def process_temp_dir(prefix: str) -> str:
    """A new directory ``<tmp>/<prefix><pid>-...`` of this process, removed when the process exits. A
    killed process cannot remove its own: the next process that makes one with the same prefix removes
    those whose process is gone (:func:`remove_stale_dirs`)."""
    import atexit

    base = tempfile.gettempdir()
    remove_stale_dirs(base, prefix)
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base)
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def local_rows_dir() -> str:
    """This process's directory for :func:`create_df`'s files, ``<tmp>/lepton-rows-<pid>-...``
    (:func:`process_temp_dir`), made on first use."""
    return process_temp_dir(ROWS_PREFIX)


def remove_stale_dirs(base: str, prefix: str) -> list[str]:
    """Remove the directories ``<base>/<prefix><pid>-...`` whose process ``pid`` is gone; returns their
    paths. Names without a pid, and directories of live processes (or of processes this one may not
    signal), are left alone."""
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # the owner is alive
        except ProcessLookupError:
            pass
        except OSError:  # e.g. no permission to signal it: alive, not ours
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        removed.append(os.path.join(base, name))
    return removed


def read_table(
    spark: SparkSession,
    path: str,
    fmt: str = "parquet",
    *,
    csv_header: bool = True,
    csv_delimiter: str = ",",
    what: str = "table",
) -> DataFrame:
    """Read a Parquet / CSV / JSON-lines table; missing or unreadable files raise InvalidInputError."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"{what} {path}: unsupported format {fmt!r} (use {', '.join(FORMATS)})")
    if not path_exists(path):
        raise InvalidInputError(f"{what} {path}: no such file or directory")
    reader = spark.read
    try:
        if fmt == "parquet":
            df = reader.parquet(path)
        elif fmt == "csv":
            df = reader.option("header", csv_header).option("sep", csv_delimiter).option(
                "inferSchema", "true").option("mode", "FAILFAST").csv(path)
        else:
            df = reader.option("mode", "FAILFAST").json(path)
        _ = df.schema  # force schema resolution now so a corrupt file fails here, with its name
    except Exception as exc:  # noqa: BLE001 - Spark raises many types; all mean "unreadable input"
        raise InvalidInputError(f"{what} {path}: cannot read as {fmt}: {first_line(exc)}") from None
    return df


def first_line(exc: BaseException) -> str:
    """First meaningful line of an exception message (Spark's are long and multi-line)."""
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return type(exc).__name__


def read_graph(spark: SparkSession, graph_dir: str) -> tuple[DataFrame, DataFrame]:
    """Read ``<graph_dir>/vertices`` and ``<graph_dir>/edges`` (project layout, docs/architecture.md §3)."""
    if not path_exists(graph_dir):
        raise InvalidInputError(f"graph {graph_dir}: no such directory")
    vertices = read_table(spark, join_path(graph_dir, "vertices"), what="graph vertices")
    edges = read_table(spark, join_path(graph_dir, "edges"), what="graph edges")
    for name, df, cols in (("vertices", vertices, ("id",)), ("edges", edges, ("src", "dst"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InvalidInputError(f"graph {graph_dir}/{name}: missing column {missing[0]!r}")
    return vertices, edges


def read_parquet_arrow(path: str, columns: list[str]) -> Any:
    """Read the Parquet files under ``path`` (local or URI) straight into one pyarrow Table on this process.

    For data the driver needs whole anyway (training reads the graph): pyarrow reads the files in
    parallel threads, several times faster than collecting the same rows through Spark.
    """
    import pyarrow.dataset as ds

    fs, p = filesystem(path)
    return ds.dataset(p, filesystem=fs, format="parquet").to_table(columns=columns)


def count_parquet_rows(spark: SparkSession, path: str, by: str | None = None) -> tuple[int, dict[Any, int]]:
    """``(rows, {value: rows})`` of the Parquet table at ``path``; the dict is per value of column ``by``
    (nulls under None) and empty without ``by``.

    Read with pyarrow on this process: the footers for the total, the one column for ``by``. In a
    fresh JVM a Spark job per count took 0.15-0.3 s and the per-class collect about 1 s of a Cora
    nightly; the footers take milliseconds at any size. A file system pyarrow cannot open falls back
    to the same counts through Spark.
    """
    import pyarrow.dataset as ds

    try:
        fs, p = filesystem(path)
        dataset = ds.dataset(p, filesystem=fs, format="parquet")
        if by is None:
            return int(dataset.count_rows()), {}
        groups = value_counts(dataset.to_table(columns=[by]).column(by))
        return sum(groups.values()), groups
    except (OSError, ValueError, TypeError, KeyError) as exc:  # no pyarrow file system for the URI, ...
        log.info("%s: counting with pyarrow failed (%s); counting through Spark", path, first_line(exc))
    df = spark.read.parquet(path)
    if by is None:
        return df.count(), {}
    groups = {r[by]: int(r["count"]) for r in df.groupBy(by).count().collect()}
    return sum(groups.values()), groups


def value_counts(column: Any) -> dict[Any, int]:
    """``{value: rows}`` of a pyarrow column (nulls under None)."""
    import pyarrow.compute as pc

    vc = pc.value_counts(column)
    return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))


def read_graph_meta(graph_dir: str) -> dict[str, Any]:
    """The optional ``_graph.json`` beside a graph (counts, classes); {} when absent."""
    p = join_path(graph_dir, "_graph.json")
    if not path_exists(p):
        return {}
    try:
        return json.loads(read_text(p))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{p}: not valid JSON ({exc})") from None


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[Path | None]:
    """A local directory or file with the content of ``path`` (downloaded when it is a URI)."""
    if not path or not path_exists(path):
        yield None
        return
    if "://" not in path or path.startswith("file://"):
        yield Path(path.removeprefix("file://"))
        return
    import pyarrow.fs as pafs

    fs, root = filesystem(path)
    tmp = Path(tempfile.mkdtemp(prefix="lepton-copy-"))
    try:
        name = root.rstrip("/").rsplit("/", 1)[-1]
        if fs.get_file_info(root).type == pafs.FileType.File:
            infos = [fs.get_file_info(root)]
            base = root.rsplit("/", 1)[0]
        else:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            base = root
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            dest = tmp / name / info.path[len(base):].lstrip("/") if base == root else tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src:
                dest.write_bytes(src.read())
        yield tmp / name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
