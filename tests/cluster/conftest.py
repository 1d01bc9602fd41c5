"""A real Spark standalone cluster and a Spark Connect server on 127.0.0.1, started from pyspark itself.

Everything here is started with pyspark's own launchers (``bin/spark-class``, ``bin/spark-submit``):
no downloads. Every process is started in its own process group, recorded by pid, and killed (the
whole group: a worker's executors and their Python workers too) when the fixture ends, also when a
test fails. Ports are picked free on 127.0.0.1 and every daemon binds there (``SPARK_LOCAL_IP`` and
explicit ``--host``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyspark
import pytest

ROOT = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).resolve().parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def spark_env(**extra: str) -> dict[str, str]:
    """Environment for every Spark process: this interpreter for Python workers, loopback only."""
    env = dict(os.environ)
    for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP=LOOPBACK,
        SPARK_LOCAL_HOSTNAME="localhost",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_NO_DAEMONIZE="1",
    )
    env.update(extra)  # callers may override the defaults above (e.g. PYSPARK_PYTHON of a packed env)
    return env


@dataclass
class Proc:
    """One started process (group leader of its own session)."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)


@dataclass
class Procs:
    """Processes started by a fixture; all killed (by pid, with their groups) on exit."""

    root: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Proc:
        log = self.root / f"{name}.log"
        fh = log.open("ab")
        popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd or ROOT,
                                 start_new_session=True)
        fh.close()
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.kill()


def wait_for(what: str, check, timeout: float, interval: float = 0.25, proc: Proc | None = None):
    """Poll ``check()`` until it returns a truthy value; fail with ``what`` (and the log tail) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.popen.poll() is not None:
            pytest.fail(f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n{proc.text()[-3000:]}")
        time.sleep(interval)
    tail = proc.text()[-3000:] if proc is not None else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def pids_of(needle: str, *more: str) -> list[int]:
    """Pids of processes whose command line contains every given string (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and all(m in cmdline for m in more):
            found.append(int(entry.name))
    return found


# ------------------------------------------------------------------------------------------- wheel


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel with ``python -m build`` (as the README's cluster section does)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], check=True,
                   cwd=out, stdout=subprocess.DEVNULL)
    (whl,) = out.glob("lepton_spark-*.whl")
    return whl


@pytest.fixture(scope="session")
def packed_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``env.tar.gz`` built by the README's command (``deploy/pack_env.sh``, venv-pack) with this Python."""
    out = tmp_path_factory.mktemp("packed-env") / "env.tar.gz"
    r = subprocess.run(["bash", str(ROOT / "deploy" / "pack_env.sh"), str(out)], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=900)
    assert r.returncode == 0, f"deploy/pack_env.sh failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    print(r.stdout.strip().splitlines()[-1])  # "pack-env: wrote ... in Ns" (shown with -s / on failure)
    return out


# --------------------------------------------------------------------------------- standalone cluster


@dataclass
class Cluster:
    master_url: str
    ui_url: str
    procs: Procs
    workers: list[Proc]

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as r:
            return json.load(r)

    def executor_pids(self, app_id: str) -> list[int]:
        """Executor JVMs of one application on this cluster's workers (children in their process groups)."""
        groups = {w.pid for w in self.workers}
        pids = []
        for pid in pids_of("CoarseGrainedExecutorBackend", f"--app-id {app_id}"):
            try:
                if os.getpgid(pid) in groups:
                    pids.append(pid)
            except ProcessLookupError:
                continue
        return pids

    @staticmethod
    def app_id(proc: Proc) -> str | None:
        """The application id a spark-submit driver logged when it registered with the master."""
        m = re.search(r"Connected to Spark cluster with app ID (app-[0-9-]+)", proc.text())
        return m.group(1) if m else None

    def submit(self, name: str, args: list[str], *, conf: dict[str, str] | None = None,
               py_files: Path | None = None, env: dict[str, str] | None = None,
               archives: str | None = None) -> Proc:
        """spark-submit ``args`` (script + its arguments) to this cluster, in client mode.

        ``archives`` is passed as ``--archives`` (e.g. ``env.tar.gz#env``: unpacked as ``./env`` in
        every executor's working directory)."""
        settings = {
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            "spark.executor.memory": "1g",
            "spark.executor.cores": "1",
            "spark.cores.max": "2",
            "spark.ui.enabled": "false",
            "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
            **(conf or {}),
        }
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", self.master_url, "--driver-memory", "2g"]
        for k, v in settings.items():
            cmd += ["--conf", f"{k}={v}"]
        if py_files:
            cmd += ["--py-files", str(py_files)]
        if archives:
            cmd += ["--archives", archives]
        return self.procs.start(name, cmd + args, spark_env(**(env or {})))


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A standalone master and two workers (1 core, 2 GiB each) on 127.0.0.1; torn down by pid."""
    root = tmp_path_factory.mktemp("standalone")
    procs = Procs(root)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port, ui = free_port(), free_port()
    env = spark_env(SPARK_LOG_DIR=str(root), SPARK_WORKER_DIR=str(root / "work"))
    try:
        master = procs.start("master", [spark_class, "org.apache.spark.deploy.master.Master",
                                        "--host", LOOPBACK, "--port", str(port), "--webui-port", str(ui)], env)
        cluster = Cluster(f"spark://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{ui}", procs, [])

        def master_up():
            try:
                return cluster.state().get("status") == "ALIVE"
            except OSError:
                return False

        wait_for("the standalone master", master_up, 60, proc=master)
        for i in range(2):
            cluster.workers.append(procs.start(
                f"worker{i}", [spark_class, "org.apache.spark.deploy.worker.Worker", cluster.master_url,
                               "--host", LOOPBACK, "--cores", "1", "--memory", "2g",
                               "--webui-port", str(free_port()), "--work-dir", str(root / f"work{i}")], env))
        wait_for("two registered workers", lambda: cluster.state().get("aliveworkers", 0) >= 2, 60, proc=master)
        yield cluster
    finally:
        procs.stop_all()


# ----------------------------------------------------------------------------------- Spark Connect


@dataclass
class ConnectServer:
    url: str
    proc: Proc


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServer]:
    """A Spark Connect server (local[2]) started from pyspark's own jars, listening on 127.0.0.1 only."""
    pytest.importorskip("grpc", reason="pyspark[connect] extras (grpcio) are installed by the test extras")
    root = tmp_path_factory.mktemp("connect")
    procs = Procs(root)
    port = free_port()
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
           "--name", "lepton-connect-test", "--master", "local[2]", "--driver-memory", "2g",
           "--conf", f"spark.connect.grpc.binding.address={LOOPBACK}",
           "--conf", f"spark.connect.grpc.binding.port={port}",
           "--conf", "spark.ui.enabled=false",
           "--conf", "spark.sql.shuffle.partitions=4",
           "--conf", f"spark.checkpoint.dir={root / 'checkpoints'}",
           "--conf", f"spark.sql.warehouse.dir={root / 'warehouse'}",
           "spark-internal"]
    try:
        proc = procs.start("connect-server", cmd, spark_env())

        def listening():
            with socket.socket() as s:
                return s.connect_ex((LOOPBACK, port)) == 0

        wait_for("the Spark Connect server", listening, 90, proc=proc)
        yield ConnectServer(f"sc://{LOOPBACK}:{port}", proc)
    finally:
        procs.stop_all()
