"""lepton_spark.session: the local session's settings."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest


def test_local_python_workers_stay_on_loopback_tcp(spark) -> None:
    """The local session leaves Spark's Python workers on loopback TCP: over a Unix domain socket
    (pyspark >= 4.1) a worker the JVM closes after a minute idle makes pyspark's daemon print a
    BrokenPipeError traceback on stderr (seen in a CI nightly, reproduced with a 80 s pause between two
    mapInArrow jobs; silent over TCP). A mapInArrow job runs through the session."""
    assert spark.conf.get("spark.python.unix.domain.socket.enabled", "false") == "false"

    def double(batches):
        import pyarrow.compute as pc

        for b in batches:
            yield pa.RecordBatch.from_arrays([pc.multiply(b.column("id"), 2)], names=["id"])

    assert sorted(r["id"] for r in spark.range(0, 5, 1, 2).mapInArrow(double, "id long").collect()) == [0, 2, 4, 6, 8]


def test_class_data_archive_is_mapped_only_when_its_checked_size_matches(tmp_path, monkeypatch) -> None:
    """The driver JVM maps the class-data archive only beside the size run.sh recorded after a JVM
    mapped it: no archive, no size file, or a different size (a truncated file, which would crash the
    JVM) give no options."""
    from lepton_spark import session

    archive = tmp_path / "share" / "spark-x.jsa"
    monkeypatch.setattr(session, "class_data_archive", lambda: archive)
    assert session._class_data_options() == []
    archive.parent.mkdir()
    archive.write_bytes(b"x" * 100)
    assert session._class_data_options() == []  # not checked by run.sh: no size beside it
    (archive.parent / "spark-x.jsa.size").write_text("99\n")
    assert session._class_data_options() == []
    (archive.parent / "spark-x.jsa.size").write_text("100\n")
    assert session._class_data_options() == ["-XX:+IgnoreUnrecognizedVMOptions", f"-XX:SharedArchiveFile={archive}",
                                             "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    spaced = tmp_path / "a b" / "spark-x.jsa"
    monkeypatch.setattr(session, "class_data_archive", lambda: spaced)
    spaced.parent.mkdir()
    spaced.write_bytes(b"x" * 100)
    (spaced.parent / "spark-x.jsa.size").write_text("100\n")
    assert session._class_data_options() == []  # the JVM option string is split on spaces


def test_class_data_archive_lives_in_the_environment() -> None:
    import sys

    import pyspark

    from lepton_spark.session import class_data_archive

    assert class_data_archive().is_relative_to(sys.prefix)
    assert class_data_archive().name == f"spark-{pyspark.__version__}.jsa"


def test_local_driver_jvm_runs_the_throughput_collector(spark) -> None:
    """A local session's JVM (the driver that is also the executor) runs the parallel collector
    (session.LOCAL_GC_OPTIONS), read back from the running JVM's collector beans; on Spark Connect
    or under spark-submit the JVM is not ours and keeps its own collector."""
    from lepton_spark.session import LOCAL_GC_OPTIONS, launched_by_spark_submit

    if getattr(spark, "_jvm", None) is None or launched_by_spark_submit():
        pytest.skip("the session's JVM is not one this process launched (Spark Connect or spark-submit)")
    assert LOCAL_GC_OPTIONS == ("-XX:+UseParallelGC",)
    assert "-XX:+UseParallelGC" in spark.conf.get("spark.driver.extraJavaOptions").split()
    beans = spark._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    names = {beans.get(i).getName() for i in range(beans.size())}
    assert names == {"PS Scavenge", "PS MarkSweep"}, names


def test_jit_options_follow_the_mode_and_the_input_size() -> None:
    """``spark.jit``: c1 and tiered are what they say whatever the input; auto is c1 up to the
    threshold (inclusive) and tiered above it or when the input size is not known."""
    from lepton_spark.session import jit_options

    c1, mib = ("-XX:TieredStopAtLevel=1",), 1 << 20
    assert jit_options("c1", 10**12, 128 * mib) == c1
    assert jit_options("tiered", 0, 128 * mib) == ()
    assert jit_options("auto", 0, 128 * mib) == c1
    assert jit_options("auto", 128 * mib, 128 * mib) == c1
    assert jit_options("auto", 128 * mib + 1, 128 * mib) == ()
    assert jit_options("auto", None, 128 * mib) == ()
    assert jit_options("auto", 1, 0) == ()  # jit_c1_max_mb: 0 turns auto's c1 off for any non-empty input
    with pytest.raises(ValueError, match=r"spark\.jit must be one of auto, tiered, c1"):
        jit_options("c2", 0, 0)


def test_the_test_session_jvm_runs_tiered(spark) -> None:
    """The test session has no input size: its JVM keeps the default tiered JIT (a 20-minute session
    of small jobs earns C2's compiles back), read back from the JVM's own arguments."""
    from lepton_spark.session import jvm_jit

    if getattr(spark, "_jvm", None) is None:
        pytest.skip("the session's JVM is not one this process launched (Spark Connect)")
    assert jvm_jit(spark) == "tiered"


def test_user_java_options_are_added_to_the_local_jvm_options() -> None:
    """``spark.extra`` ``spark.driver.extraJavaOptions`` on a local launch: appended to the project's
    options; a user option that sets a collector, the JIT, the log4j configuration or class data
    sharing replaces the project's option of that kind (two collectors would stop the JVM)."""
    from lepton_spark.session import local_java_options

    ours = ["-Dlog4j2.configurationFile=file:/x/log4j2.properties", "-XX:+UseParallelGC", "-XX:TieredStopAtLevel=1",
            "-XX:+IgnoreUnrecognizedVMOptions", "-XX:SharedArchiveFile=/x/spark.jsa", "-Xlog:cds=off",
            "-Xlog:cds+dynamic=off"]
    assert local_java_options(ours, "") == " ".join(ours)
    assert local_java_options(ours, "  ") == " ".join(ours)
    # an option of another kind: added after all of ours
    assert local_java_options(ours, "-XX:+HeapDumpOnOutOfMemoryError -Dfoo='a b'") == \
        " ".join(ours) + " -XX:+HeapDumpOnOutOfMemoryError -Dfoo='a b'"
    # -XX:+UseGCOverheadLimit is not a collector
    assert local_java_options(ours, "-XX:+UseGCOverheadLimit").split()[:-1] == ours
    cases = {
        "-XX:+UseG1GC": {"-XX:+UseParallelGC"},
        "-XX:+UseZGC -Xmx2g": {"-XX:+UseParallelGC"},
        "-XX:TieredStopAtLevel=4": {"-XX:TieredStopAtLevel=1"},
        "-XX:-TieredCompilation": {"-XX:TieredStopAtLevel=1"},
        "-Dlog4j.configurationFile=mine.xml": {"-Dlog4j2.configurationFile=file:/x/log4j2.properties"},
        "-Xshare:off": {"-XX:+IgnoreUnrecognizedVMOptions", "-XX:SharedArchiveFile=/x/spark.jsa",
                        "-Xlog:cds=off", "-Xlog:cds+dynamic=off"},
    }
    for user, dropped in cases.items():
        got = local_java_options(ours, user)
        assert got == " ".join([o for o in ours if o not in dropped] + [user]), (user, got)
    from lepton_spark.config import ConfigError

    with pytest.raises(ConfigError, match=r"spark\.driver\.extraJavaOptions .*No closing quotation"):
        local_java_options(ours, "-Dfoo='a b")


def test_jit_of_reads_the_last_jit_option() -> None:
    """The session line's JIT word: the JVM's last JIT option wins, as in the JVM."""
    from lepton_spark.session import C1_ONLY, jit_of

    assert jit_of([]) == "tiered"
    assert jit_of(["-Xmx4g", C1_ONLY]) == "c1"
    assert jit_of([C1_ONLY, "-XX:TieredStopAtLevel=4"]) == "tiered"
    assert jit_of(["-XX:TieredStopAtLevel=4", "-XX:TieredStopAtLevel=3"]) == "c1"
    assert jit_of(["-XX:TieredStopAtLevel=0"]) == "interpreter"
    assert jit_of([C1_ONLY, "-XX:-TieredCompilation"]) == "c2"
    assert jit_of(["-XX:-TieredCompilation", "-XX:+TieredCompilation"]) == "tiered"


def test_sql_conf_sets_settings_for_the_block_and_restores_them(spark) -> None:
    from lepton_spark.session import sql_conf

    key, unset_key = "spark.sql.shuffle.partitions", "spark.lepton.test.unset"
    before = spark.conf.get(key)
    assert spark.conf.get(unset_key, None) is None
    with sql_conf(spark, {key: "7", unset_key: "x"}):
        assert spark.conf.get(key) == "7"
        assert spark.conf.get(unset_key) == "x"
    assert spark.conf.get(key) == before
    assert spark.conf.get(unset_key, None) is None  # a key that was not set is unset again
    with pytest.raises(RuntimeError), sql_conf(spark, {key: "9"}):
        raise RuntimeError("the block fails")
    assert spark.conf.get(key) == before  # restored when the block raises too


def test_sql_conf_skips_a_setting_the_session_refuses() -> None:
    from lepton_spark.session import sql_conf

    class Conf:
        def __init__(self) -> None:
            self.values = {"ok": "1"}

        def get(self, key, default=None):
            return self.values.get(key, default)

        def set(self, key, value):
            if key == "refused":
                raise PermissionError("not allowed on this cluster")
            self.values[key] = value

        def unset(self, key):
            self.values.pop(key, None)

    class Session:
        conf = Conf()

    s = Session()
    with sql_conf(s, {"refused": "x", "ok": "2"}):
        assert s.conf.values == {"ok": "2"}
    assert s.conf.values == {"ok": "1"}


def test_local_python_workers_import_the_installed_pyspark(spark) -> None:
    """A local session's Python workers run lepton_spark.worker_daemon: they import pyspark from the
    installed package (whose byte code Python caches), not from the pyspark.zip of sources the JVM puts
    first on their path -- and the release is the driver's."""
    import pyspark

    if not spark.conf.get("spark.master", "").startswith("local"):
        pytest.skip("a remote session's workers are the server's")
    assert spark.conf.get("spark.python.daemon.module") == "lepton_spark.worker_daemon"

    def where(batches):
        import pyspark

        for _ in batches:
            pass
        yield pa.RecordBatch.from_pylist([{"file": pyspark.__file__, "version": pyspark.__version__}])

    rows = spark.range(0, 2, 1, 2).mapInArrow(where, "file string, version string").collect()
    assert len(rows) == 2
    for r in rows:
        assert ".zip" not in r["file"], r["file"]
        assert r["version"] == pyspark.__version__


def test_worker_daemon_moves_only_the_installed_packages_zips(tmp_path) -> None:
    """The zips move behind the site directory only when they lie inside the pyspark package that
    directory holds; a Spark distribution's zips (SPARK_HOME/python/lib) and other entries keep their
    place."""
    from lepton_spark.worker_daemon import prefer_installed_pyspark

    site = tmp_path / "site-packages"
    lib = site / "pyspark" / "python" / "lib"
    lib.mkdir(parents=True)
    (site / "pyspark" / "__init__.py").write_text("")
    own = [str(lib / "pyspark.zip"), str(lib / "py4j-0.10.9.9-src.zip")]
    other = str(tmp_path / "spark-home" / "python" / "lib" / "pyspark.zip")
    path = [*own, "/opt/app.zip", other, str(site), "/usr/lib/python3.11"]
    assert prefer_installed_pyspark(path) == ["/opt/app.zip", other, str(site), "/usr/lib/python3.11", *own]
    # no site directory holding that package on the path: nothing moves
    assert prefer_installed_pyspark([*own, "/usr/lib/python3.11"]) == [*own, "/usr/lib/python3.11"]
    # a package directory without __init__.py is not an installed pyspark
    (site / "pyspark" / "__init__.py").unlink()
    assert prefer_installed_pyspark(path) == path


def test_local_checkpoint_dir_is_the_processs_own_and_goes_with_it(tmp_path) -> None:
    """The default local checkpoint dir is made per process and removed at its exit; a killed process's
    dir (its pid gone) is removed by the next process that makes one; a live process's dir is kept."""
    import os
    import subprocess
    import sys

    from lepton_spark.session import CHECKPOINTS_PREFIX

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f"{CHECKPOINTS_PREFIX}{dead}-abc" / "0f1e2d3c-uuid"
    live = tmp_path / f"{CHECKPOINTS_PREFIX}{os.getpid()}-def"
    stale.mkdir(parents=True)
    live.mkdir()
    code = ("import os; from lepton_spark.session import local_checkpoint_dir; p = local_checkpoint_dir(); "
            "print(p, os.path.isdir(p))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TMPDIR": str(tmp_path)}).stdout.split()
    made = Path(out[0])
    assert out[1] == "True" and made.parent == tmp_path and made.name.startswith(CHECKPOINTS_PREFIX)
    assert not made.exists()  # removed when that process exited
    assert not stale.parent.exists() and live.is_dir()
