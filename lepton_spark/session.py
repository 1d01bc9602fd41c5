"""The one place a SparkSession is built.

``get_spark`` returns the active session when there is one (Databricks, notebooks, tests), never
overrides the master or resources chosen by ``spark-submit`` (detected by the gateway it hands to the
Python driver), connects to Spark Connect when ``spark.remote`` / ``SPARK_REMOTE`` is set, and otherwise
builds a small-machine local session (``local[*]``, few shuffle partitions, UI off, Arrow on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from lepton_spark import logs
from lepton_spark.config import ConfigError, SparkConfig

log = logging.getLogger(__name__)


def launched_by_spark_submit() -> bool:
    """True when spark-submit (or a cluster launcher) started this Python driver."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or "DATABRICKS_RUNTIME_VERSION" in os.environ


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def spark_master(spark: SparkSession) -> str:
    """``spark.master`` of the session ("" when the conf cannot be read, e.g. on restricted clusters)."""
    try:
        return spark.conf.get("spark.master", "") or ""
    except Exception:  # noqa: BLE001 - restricted conf access
        return ""


def is_local_master(spark: SparkSession) -> bool:
    """True when driver and executors share this machine (``local[...]``); unknown counts as a cluster."""
    return spark_master(spark).startswith("local")


def _conf_int(spark: SparkSession, key: str) -> int | None:
    """An integer setting of the session; None when unset, not an integer, or unreadable (restricted clusters)."""
    try:
        value = spark.conf.get(key, "") or ""
    except Exception:  # noqa: BLE001 - restricted conf access on some clusters
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def shuffle_partitions(spark: SparkSession) -> int:
    """``spark.sql.shuffle.partitions`` (8 when the conf cannot be read, e.g. on restricted clusters)."""
    value = _conf_int(spark, "spark.sql.shuffle.partitions")
    return 8 if value is None else max(1, value)


def _local_cores(master: str) -> int | None:
    """Cores of a ``local[N]`` / ``local[*]`` / ``local`` master string (None for any other master)."""
    if master == "local":
        return 1
    if not master.startswith("local[") or not master.endswith("]"):
        return None
    inner = master[len("local["):-1].split(",")[0].strip()
    if inner == "*":
        return os.cpu_count() or 1
    return int(inner) if inner.isdigit() else None


@contextlib.contextmanager
def sql_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Run the block with the SQL ``settings`` set on ``spark``, restoring the previous values after.

    A setting the session refuses (some shared clusters and Connect servers deny some keys) is left
    as it is: these settings tune speed, never results. Jobs see them when they start inside the block;
    the settings are the session's, so a job another thread starts meanwhile sees them too.
    """
    previous: dict[str, str | None] = {}
    for key, value in settings.items():
        try:
            before = spark.conf.get(key, None)
            spark.conf.set(key, value)
        except Exception as exc:  # noqa: BLE001 - a refused tuning setting must not fail the job
            log.debug("sql_conf: %s=%s not set (%s)", key, value, exc)
            continue
        previous[key] = before
    try:
        yield
    finally:
        for key, before in previous.items():
            try:
                if before is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, before)
            except Exception as exc:  # noqa: BLE001
                log.debug("sql_conf: %s not restored (%s)", key, exc)


def task_slots(spark: SparkSession) -> int:
    """How many tasks can run at once, read from the conf (no SparkContext, so it works on Connect).

    ``local[N]``/``local[*]``/``local-cluster[W, C, mem]``; else ``spark.default.parallelism``; else executor instances x cores;
    else ``spark.sql.shuffle.partitions`` (what the cluster's admin sized for it).
    """
    master = spark_master(spark)
    if master.startswith("local"):
        inner = master[master.find("[") + 1:master.find("]")] if "[" in master else "1"
        fields = [f.strip() for f in inner.split(",")]
        if master.startswith("local-cluster") and len(fields) >= 2 and all(f.isdigit() for f in fields[:2]):
            return max(1, int(fields[0]) * int(fields[1]))  # local-cluster[workers, cores, memory]
        if fields[0] == "*":
            return os.cpu_count() or 1
        return max(1, int(fields[0])) if fields[0].isdigit() else 1

    parallelism = _conf_int(spark, "spark.default.parallelism") or 0
    if parallelism > 0:
        return parallelism
    instances = _conf_int(spark, "spark.executor.instances") or 0
    cores = _conf_int(spark, "spark.executor.cores") or 0
    if instances > 0 and cores > 0:
        return instances * cores
    return shuffle_partitions(spark)


#: The local driver JVM's garbage collector: the throughput collector instead of Java 17's default G1. A
#: local nightly is one batch process whose JVM is also its executor; G1's write barriers and concurrent
#: threads cost the tasks more than its shorter pauses save (alternating nightly runs, 2 cores, driver 4g:
#: 100k/1M 27.2-36.5 s after Spark is up against 29.8-38.0 s with G1, 4 pairs; 1M/10M 112.3 and 115.6 s
#: against 129.7 and 122.4 s, peak JVM RSS 4.3 GiB against 3.2-4.9). A spark-submit or cluster driver
#: keeps its own JVM options.
LOCAL_GC_OPTIONS = ("-XX:+UseParallelGC",)

JIT_MODES = ("auto", "tiered", "c1")
#: the JVM option of ``spark.jit: c1``: stop at the client compiler
C1_ONLY = "-XX:TieredStopAtLevel=1"


def jit_options(mode: str, input_bytes: int | None, c1_max_bytes: int) -> tuple[str, ...]:
    """The local driver JVM's JIT options for ``spark.jit`` (``auto``, ``tiered`` or ``c1``).

    ``c1`` stops the JVM at the client compiler (``-XX:TieredStopAtLevel=1``); ``tiered`` is Java's
    default (C1, then C2 for the hottest code); ``auto`` is ``c1`` when the job's local input
    (``input_bytes``; None: not known, or not local) is at most ``c1_max_bytes``, else ``tiered``.

    Why: a cold JVM compiles Spark's code while it runs it, and on few cores the C2 compiles take
    the tasks' CPU. A 100k-vertex / 1M-edge build (39 MiB of raw Parquet, 2 cores) spent 18 s of
    CPU in C2 and 5.5 s in C1 in a 17 s run, against 3.8 s in C1 alone; its nightly took 23.3 /
    29.5 / 26.8 s after Spark was up with C1 only against 33.0 / 34.0 / 34.2 s tiered (alternating
    runs). A long run earns C2's code back: the 1M / 10M nightly (451 MiB) took 136.7 s with C1
    only against 112.3 and 115.6 s tiered; at 300k / 3M (135 MiB) the two were even (58.0 / 58.1
    against 55.7 / 59.6 s), hence the default threshold of 128 MiB. The test suite's session (20
    minutes of small jobs, no input size) stays tiered.

    >>> jit_options("auto", 40 << 20, 128 << 20)
    ('-XX:TieredStopAtLevel=1',)
    >>> jit_options("auto", 451 << 20, 128 << 20), jit_options("auto", None, 128 << 20)
    ((), ())
    >>> jit_options("c1", None, 0), jit_options("tiered", 1, 128 << 20)
    (('-XX:TieredStopAtLevel=1',), ())
    """
    if mode not in JIT_MODES:
        raise ValueError(f"spark.jit must be one of {', '.join(JIT_MODES)}, got {mode!r}")
    c1 = mode == "c1" or (mode == "auto" and input_bytes is not None and input_bytes <= c1_max_bytes)
    return (C1_ONLY,) if c1 else ()


def jit_of(flags: Sequence[str]) -> str:
    """What a JVM started with the options ``flags`` compiles with: ``c1`` (stopped at the client
    compiler), ``c2`` (tiered compilation off), ``interpreter`` or ``tiered`` (Java's default). The
    last of repeated options wins, as in the JVM."""
    jit = "tiered"
    for flag in flags:
        if flag.startswith("-XX:TieredStopAtLevel="):
            level = flag.partition("=")[2]
            jit = "interpreter" if level == "0" else "c1" if level in ("1", "2", "3") else "tiered"
        elif flag in ("-XX:-TieredCompilation", "-XX:+TieredCompilation"):
            jit = "c2" if flag == "-XX:-TieredCompilation" else "tiered"
    return jit


def jvm_jit(spark: SparkSession) -> str:
    """What the session's JVM compiles with (:func:`jit_of`), read from its own arguments; ``?`` when
    this process cannot see its JVM (Spark Connect)."""
    try:
        args = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()  # type: ignore[attr-defined]
        flags = [str(args.get(i)) for i in range(args.size())]
    except Exception:  # noqa: BLE001 - no JVM in this process (Spark Connect) or no py4j gateway
        return "?"
    return jit_of(flags)


def _option_kind(option: str) -> str | None:
    """Which of the project's local JVM settings a JVM option sets (see :func:`local_java_options`)."""
    if re.fullmatch(r"-XX:[+]Use\w*GC", option) and option != "-XX:+UseGCOverheadLimit":
        return "collector"
    if option.startswith("-XX:TieredStopAtLevel=") or option in ("-XX:-TieredCompilation", "-XX:+TieredCompilation"):
        return "jit"
    if option.startswith(("-Dlog4j2.configurationFile=", "-Dlog4j.configurationFile=")):
        return "logging"
    if option.startswith(("-Xshare:", "-XX:SharedArchiveFile=")):
        return "class data"
    return None


def local_java_options(project: Sequence[str], user: str) -> str:
    """``spark.driver.extraJavaOptions`` of a local JVM: the project's options (log configuration,
    collector, JIT, class data), then the user's from ``spark.extra``.

    A user's ``-XX:+HeapDumpOnOutOfMemoryError`` (say) is added to the project's options instead of
    replacing them: replaced, the JVM lost its log configuration (Spark's own INFO lines on the
    console, and plain text in the middle of ``--log-format json``), its collector and its JIT
    choice. Where the user sets the same thing, the user's option is the one kept: a collector
    (``-XX:+Use*GC``; two would stop the JVM), the JIT (``-XX:TieredStopAtLevel``,
    ``-XX:±TieredCompilation``), the log4j configuration file, class data sharing (``-Xshare:*``,
    ``-XX:SharedArchiveFile``; then none of the project's class-data options is kept).
    The user's string is appended as given (Spark splits it, quotes included).
    """
    try:
        words = shlex.split(user)
    except ValueError as exc:  # unbalanced quotes: the JVM could not start with it either
        raise ConfigError(f"spark.extra: spark.driver.extraJavaOptions {user!r}: {exc}") from None
    kinds = {_option_kind(option) for option in words} - {None}
    if "class data" in kinds:  # the project's class-data options go together
        project = [o for o in project if o not in _CLASS_DATA_COMPANIONS]
    kept = [o for o in project if _option_kind(o) not in kinds]
    return " ".join([*kept, *([user.strip()] if user.strip() else [])])


def class_data_archive() -> Path:
    """Where ``run.sh setup`` keeps this environment's JVM class-data-sharing archive (AppCDS).

    One archive per virtualenv and pyspark version: the classes a nightly loads from Spark's jars,
    already parsed and verified, which a local driver JVM maps instead of loading them again.
    """
    import pyspark

    return Path(sys.prefix) / "share" / "lepton-spark" / f"spark-{pyspark.__version__}.jsa"


#: the options that go with the class-data archive's ``-XX:SharedArchiveFile`` (:func:`_class_data_options`)
_CLASS_DATA_COMPANIONS = ("-XX:+IgnoreUnrecognizedVMOptions", "-Xlog:cds=off", "-Xlog:cds+dynamic=off")


def _class_data_options() -> list[str]:
    """Driver JVM options that map :func:`class_data_archive` when it exists, else none.

    Measured on Cora (alternating runs, 2 cores): 10.2-13.4 s from "session ready" to the report with
    the archive, 13.6-17.6 s without (the build stage's first reads 2.0 s -> 1.0 s). The JVM checks
    that the archive matches its own build and class path and otherwise runs without it, silently
    (``-Xshare:auto``, the default; its cds log tags are turned off); a JVM without these options
    ignores them (``IgnoreUnrecognizedVMOptions``). The archive is used only beside the size
    ``run.sh`` recorded after a JVM mapped it: a truncated archive crashes the JVM that maps it.
    """
    archive = class_data_archive()
    if " " in str(archive) or not archive.is_file():  # the option string is split on spaces
        return []
    try:  # run.sh records the size of the archive it checked: anything else (truncated?) is not mapped
        if int((archive.parent / f"{archive.name}.size").read_text().strip()) != archive.stat().st_size:
            return []
    except (OSError, ValueError):
        return []
    return [*_CLASS_DATA_COMPANIONS[:1], f"-XX:SharedArchiveFile={archive}", *_CLASS_DATA_COMPANIONS[1:]]


CHECKPOINTS_PREFIX = "lepton-spark-checkpoints-"


def local_checkpoint_dir() -> str:
    """This process's checkpoint directory when ``spark.checkpoint_dir`` is unset and nothing else sets
    one (a local run): ``<tmp>/lepton-spark-checkpoints-<pid>-...``, removed when the process exits.

    Spark puts a ``<uuid>`` directory under the checkpoint dir for every session and never removes it,
    and the checkpoints in it are only read by the process that wrote them (a resumed nightly reads its
    round state from the output's ``_work/``, not from here), so a shared ``<tmp>`` directory only grew
    by one empty directory a run. Directories of killed processes are removed by the next one
    (:func:`lepton_spark.storage.process_temp_dir`).
    """
    from lepton_spark import storage

    return storage.process_temp_dir(CHECKPOINTS_PREFIX)


def get_spark(conf: SparkConfig | None = None, *, inputs: Sequence[str] = ()) -> SparkSession:
    """Return the active SparkSession or build one from ``conf`` (see module docstring).

    ``inputs``: the paths the job reads; for ``spark.jit: auto`` (:func:`jit_options`) their local
    size is measured, only when this call launches a local JVM."""
    conf = conf or SparkConfig()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    remote = conf.remote or os.environ.get("SPARK_REMOTE", "")
    extra = dict(conf.extra)  # spark.* settings of the user's, applied last
    builder = SparkSession.builder.appName(conf.app_name)
    settings: dict[str, str] = {
        "spark.sql.shuffle.partitions": str(conf.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
    }
    if remote:
        builder = builder.remote(remote)
    else:
        if conf.checkpoint_dir:
            settings["spark.checkpoint.dir"] = conf.checkpoint_dir
        elif not launched_by_spark_submit():
            # a local temp dir is only right when driver and executors share this machine; under
            # spark-submit the cluster's own spark.checkpoint.dir (shared storage) is kept
            settings["spark.checkpoint.dir"] = local_checkpoint_dir()
        if not launched_by_spark_submit():
            # Local run: we own the JVM, so master, memory, UI and logging are ours to choose.
            if conf.master:
                builder = builder.master(conf.master)
            # Python workers must run this interpreter (it has pyarrow, numpy and this package)
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            if conf.master.startswith("local"):
                # keep a local driver on loopback (no warning, nothing listening on the LAN)
                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            from lepton_spark.storage import local_size

            input_bytes = local_size(inputs) if conf.jit == "auto" else None  # only auto reads it
            settings.update(
                {
                    "spark.driver.memory": conf.driver_memory,
                    "spark.ui.enabled": str(conf.ui).lower(),
                    "spark.ui.showConsoleProgress": "false",
                    "spark.driver.extraJavaOptions": local_java_options(
                        [f"-Dlog4j2.configurationFile=file:{logs.log4j_config()}", *LOCAL_GC_OPTIONS,
                         *jit_options(conf.jit, input_bytes, conf.jit_c1_max_mb << 20), *_class_data_options()],
                        extra.pop("spark.driver.extraJavaOptions", "")),
                    "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "lepton-spark-warehouse"),
                }
            )
            if conf.master.startswith("local"):
                # split input files into >= 4 tasks per core: Spark's default (one per core, at most 128 MB
                # each) gave 3 tasks for 2 cores on a 260 MB vertex table, one core idle for the last third
                # (files under spark.sql.files.openCostInBytes, 4 MB, are not split further)
                settings["spark.sql.files.minPartitionNum"] = str(4 * (_local_cores(conf.master) or 1))
                # the Python workers import the installed pyspark (cached byte code), not the sources in
                # its pyspark.zip that the JVM puts first on their path: ~0.5 s of the first Python job
                # and ~0.2 s of every later worker (see lepton_spark.worker_daemon)
                settings["spark.python.daemon.module"] = "lepton_spark.worker_daemon"
            # Python workers keep loopback TCP. Unix domain sockets (spark.python.unix.domain.socket
            # .enabled, pyspark >= 4.1) made a one-task mapInArrow job 0.17 -> 0.13 s, but the JVM
            # closes a Python worker that sat idle for a minute, and over a Unix socket that worker's
            # goodbye fails (EPIPE) and pyspark's daemon prints a BrokenPipeError traceback on stderr:
            # every nightly with a minute between Python jobs, and stderr is JSON lines in json mode
    settings.update(extra)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    import lepton_spark

    log.info("spark %s session ready (%s, master %s%s); lepton_spark %s from %s", spark.version,
             "connect" if remote else "classic", spark_master(spark) or "?",
             "" if remote else f", jit {jvm_jit(spark)}", lepton_spark.__version__, Path(lepton_spark.__file__).parent)
    return spark
