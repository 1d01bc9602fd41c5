"""Benchmark: the whole nightly (``lepton-spark nightly``, SGC) on a generated raw export vs one-process scipy.

    flock /tmp/spark.lock .venv/bin/python bench/nightly_scale.py --nodes 20000 --edges 200000
    .venv/bin/python bench/nightly_scale.py --nodes 1000000 --edges 10000000 --skip-nightly   # scipy only
    flock /tmp/spark.lock .venv/bin/python bench/nightly_scale.py --nodes 1000000 --edges 10000000 \\
        --jar ../shared/jars/graphframes-spark4.3_2.13-e49a655.jar --json /tmp/nightly-1m.json

Anything that starts Spark (the nightly, ``--jar``) belongs under the machine's Spark lock. Steps:

1. **Generate** (bench/_gen.py) raw Parquet tables under ``<workdir>/raw`` like a user's export:
   vertices ``(id, features, label, split)`` with random 48-bit ids, ``--dim`` Gaussian features with a
   weak class signal (~0.3 accuracy alone), ``--classes`` planted classes, 5/5/10% train/val/test
   (labels only on those rows); edges ``(src, dst, weight)``, ``--edges`` rows, power-law degrees,
   80% of the edges inside a class, 20% of the vertices without edges, plus dirt: 0.1% dangling
   endpoints, 0.5% duplicate (src, dst) rows, 0.2% self-loops. Reused while ``<workdir>/raw/gen.json``
   matches the options (``--regenerate`` forces). 1M/10M takes ~11 s and ~0.7 GiB.
2. **scipy** (bench/_scipy_nightly.py, a subprocess): the same steps in one process — build, train (SGC
   K=2 + logistic regression, weight decay chosen on val), predict, analytics (PageRank 20 iterations,
   components, LPA 5 iterations, GraphX semantics), write Parquet — timed per stage.
3. **nightly**: ``<venv>/bin/lepton-spark nightly --output <workdir>/run --run-date 2026-11-30`` with
   ``build.vertices/edges`` = the raw tables, ``model.type=sgc``, ``analytics.local_max_edges=0`` (the
   Spark analytics path), ``graph.plan=--plan``, ``spark.driver_memory=--driver-memory``, a checkpoint
   dir under the workdir and every ``--extra-set`` (applied last, so they win). Everything else is the
   nightly's own default (e.g. SGC's ``feature_norm``). ``<workdir>/run`` is emptied first, so the run
   never resumes an older one. Per-stage seconds and the test accuracy come from the run's
   ``_manifest.json`` and the JSON line; the stage boundaries, "Spark is up" and the report's end are
   taken from its log (stderr, kept in ``<workdir>/logs/``).
4. **GraphFrames** (``--jar PATH``, needs the nightly's built graph): pageRank(maxIter=20),
   connectedComponents, labelPropagation(maxIter=5) of the real GraphFrames in their own Spark
   process (bench/_graphframes_run.py); skipped with a note when the jar is absent.

Every subprocess is sampled every 0.5 s from /proc: peak RSS of its driver process and of all its
descendants (the JVM + pyspark workers; RSS summed, so forked workers' shared pages count more than
once), per stage and overall. Prints a Markdown table (stage | nightly s | scipy s | x scipy | RSS
...), both test accuracies and their difference, and how far the nightly's output tables agree with
scipy's (the dense ids are the same: both number the vertices in raw-id order). ``--json FILE`` also
writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
RUN_DATE = "2026-11-30"
GiB = 2**30
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_JAR = ROOT.parent / "shared" / "jars" / "graphframes-spark4.3_2.13-e49a655.jar"

sys.path.insert(0, str(BENCH))


# ------------------------------------------------------------------------------------------ monitoring


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        try:
            kids[int(stat.rsplit(")", 1)[1].split()[1])].append(int(name))
        except (IndexError, ValueError):
            continue
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


@dataclass
class Monitored:
    """What one monitored subprocess did."""

    cmd: list[str]
    rc: int = 0
    wall: float = 0.0
    stdout: list[str] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)   # first time (s after launch) of each event
    peak_driver: dict[str, int] = field(default_factory=dict)  # phase -> bytes ("all" = whole run)
    peak_children: dict[str, int] = field(default_factory=dict)
    log: str = ""

    def last_json(self) -> dict[str, Any]:
        for line in reversed(self.stdout):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        return {}


STAGE_START = re.compile(r"stage (\w+): start")
STAGE_DONE = re.compile(r"stage (\w+): done")


def run_monitored(cmd: list[str], log_path: Path, interval: float = 0.5, env: dict[str, str] | None = None,
                  extra_events: tuple[tuple[str, re.Pattern[str]], ...] = ()) -> Monitored:
    """Run ``cmd``; stderr to ``log_path`` (with seconds since launch); sample RSS of its process tree.

    Phases (for the per-stage RSS peaks) come from ``stage <x>: start|done`` lines on stderr: before
    the first start "startup", between a done and the next start "after"."""
    res = Monitored(cmd=cmd, log=str(log_path))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=str(ROOT))
    phase = ["startup"]
    stop = threading.Event()

    def read_err() -> None:
        assert proc.stderr is not None
        with open(log_path, "w") as f:
            for line in proc.stderr:
                t = time.perf_counter() - t0
                f.write(f"[{t:9.3f}] {line}")
                if m := STAGE_START.search(line):
                    phase[0] = m.group(1)
                    res.events.setdefault(f"{m.group(1)}:start", t)
                elif m := STAGE_DONE.search(line):
                    phase[0] = "after"
                    res.events.setdefault(f"{m.group(1)}:done", t)
                for name, pat in extra_events:
                    if pat.search(line):
                        res.events.setdefault(name, t)

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            res.stdout.append(line)

    def sample() -> None:
        while not stop.is_set():
            ph = phase[0]
            d = _rss(proc.pid)
            c = sum(_rss(p) for p in _descendants(proc.pid))
            for key in (ph, "all"):
                res.peak_driver[key] = max(res.peak_driver.get(key, 0), d)
                res.peak_children[key] = max(res.peak_children.get(key, 0), c)
            stop.wait(interval)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out, sample)]
    for t in threads:
        t.start()
    res.rc = proc.wait()
    res.wall = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(timeout=10)
    return res


# ------------------------------------------------------------------------------------------ steps


def generate(args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    import _gen

    want = {"nodes": args.nodes, "edges": args.edges, "dim": args.dim, "classes": args.classes, "seed": args.seed,
            "version": _gen.VERSION,
            "generator": _gen.GenConfig(args.nodes, args.edges, args.dim, args.classes, args.seed).__dict__}
    marker = raw / "gen.json"
    if not args.regenerate and marker.exists():
        old = json.loads(marker.read_text())
        if old.get("want") == want:
            return {**old["result"], "reused": True}
    if raw.exists():
        shutil.rmtree(raw)
    res = _gen.generate(raw, args.nodes, args.edges, dim=args.dim, classes=args.classes, seed=args.seed)
    out = asdict(res)
    marker.write_text(json.dumps({"want": want, "result": out}, indent=1))
    return {**out, "reused": False}


def run_scipy(args: argparse.Namespace, raw: Path, work: Path) -> dict[str, Any]:
    out = work / "scipy_out"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, str(BENCH / "_scipy_nightly.py"), "--vertices", str(raw / "vertices"),
           "--edges", str(raw / "edges"), "--output", str(out)]
    mon = run_monitored(cmd, work / "logs" / "scipy.log")
    result = mon.last_json()
    if mon.rc != 0 or not result:
        raise SystemExit(f"scipy baseline failed (exit {mon.rc}); see {mon.log}")
    return {"result": result, "wall": mon.wall, "peak_rss": mon.peak_driver, "events": mon.events}


def nightly_command(args: argparse.Namespace, raw: Path, run_dir: Path, work: Path) -> list[str]:
    exe = Path(sys.executable).parent / "lepton-spark"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "lepton_spark.cli"]
    sets = [f"build.vertices={raw / 'vertices'}", f"build.edges={raw / 'edges'}", "model.type=sgc",
            "analytics.local_max_edges=0", f"graph.plan={args.plan}",
            f"spark.checkpoint_dir={work / 'checkpoints'}", f"spark.driver_memory={args.driver_memory}",
            *args.extra_set]
    return [*base, "nightly", "--output", str(run_dir), "--run-date", RUN_DATE,
            *[x for s in sets for x in ("--set", s)]]


SPARK_READY = re.compile(r"spark \S+ session ready")
REPORT_DONE = re.compile(r"report written to")
# the block engine's per-program lines: "pagerank[broadcast]: 20 rounds in 6.50s" / "pagerank[partitioned]: done in
# 6.32s"; programs sharing their rounds log one line for all: "pagerank+components+...: done in" / "...: 20 rounds in"
ALGO_ROUNDS = re.compile(r"((?:pagerank|components|labelPropagation)(?:\+\w+)*)\[\w+\]: (?:\d+ rounds in|done in) "
                         r"([\d.]+)s")
# preparation (edge blocks packed, features collected) and round lines of propagate and the block engine
PREP = re.compile(r"(?:propagate\[\w+\]: .*|blocks(?:\[\w+\])?: .*)(?:prepared|edge blocks reused) in ([\d.]+)s")
PROP_ROUND = re.compile(r"propagate\[\w+\] round \d+/\d+: .* ([\d.]+)s")
# a shared round is logged once per program that took part: counted once
ALGO_ROUND = re.compile(r"(?:pagerank|components|labelPropagation)\[\w+\] round (\d+): .* ([\d.]+)s"
                        r"(?: \((?:rounds shared with ([^,)\s]+))?(?:, )?(?:in one job)?\))?$")


def run_nightly(args: argparse.Namespace, raw: Path, work: Path) -> dict[str, Any]:
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a leftover run of the same id would be resumed, not rerun
    cmd = nightly_command(args, raw, run_dir, work)
    log = work / "logs" / "nightly.log"
    mon = run_monitored(cmd, log, extra_events=(("spark_ready", SPARK_READY), ("report_done", REPORT_DONE)))
    if mon.rc != 0:  # reported in the table (the scipy numbers are still worth printing)
        tail = [ln for ln in Path(mon.log).read_text().splitlines() if "error" in ln.lower()][-3:]
        return {"failed": f"exit {mon.rc} after {mon.wall:.0f} s; see {mon.log}", "error_lines": tail,
                "wall": mon.wall, "peak_driver": mon.peak_driver, "peak_children": mon.peak_children,
                "events": mon.events, "command": cmd}
    manifest = json.loads((run_dir / "runs" / RUN_DATE / "_manifest.json").read_text())
    summary = mon.last_json()
    algo: dict[str, float] = {}
    phases: dict[str, float] = {}  # "<stage> preparation" / "<stage> rounds" -> seconds
    stage = ""
    in_analytics = False  # (the build's report counts components too: not part of the analytics stage)
    shared: set[tuple[str | None, str]] = set()  # (programs, round) of shared rounds already counted
    for line in Path(mon.log).read_text().splitlines():
        if m := STAGE_START.search(line):
            stage = m.group(1)
            in_analytics = stage == "analytics"
        elif STAGE_DONE.search(line):
            in_analytics = False
        elif in_analytics and (m := ALGO_ROUNDS.search(line)):
            name = {"labelPropagation": "communities"}.get(m.group(1), m.group(1))
            name = "shared" if "+" in name else name
            algo[name] = algo.get(name, 0.0) + float(m.group(2))
        if stage in ("propagate", "analytics"):
            if m := PREP.search(line):
                key = f"{stage} preparation"
                # propagate logs the blocks' own line and its total: count the total only
                if not (stage == "propagate" and "lepton_spark.graph.blocks" in line):
                    phases[key] = phases.get(key, 0.0) + float(m.group(1))
            elif m := PROP_ROUND.search(line):
                phases[f"{stage} rounds"] = phases.get(f"{stage} rounds", 0.0) + float(m.group(1))
            elif (m := ALGO_ROUND.search(line)) and (m.group(3) is None or (m.group(3), m.group(1)) not in shared):
                shared.add((m.group(3), m.group(1)))
                phases[f"{stage} rounds"] = phases.get(f"{stage} rounds", 0.0) + float(m.group(2))
    ev = mon.events
    stage_s = dict(manifest.get("stage_seconds", {}))
    ready = ev.get("spark_ready")
    last_done = max((t for k, t in ev.items() if k.endswith(":done")), default=None)
    report = None
    if "report_done" in ev and last_done is not None:
        report = max(0.0, ev["report_done"] - last_done - stage_s.get("publish", 0.0))
    return {
        "command": cmd, "wall": mon.wall, "stage_seconds": stage_s, "manifest_seconds": manifest.get("seconds"),
        "report_seconds": report, "spark_ready": ready,
        "after_spark_up": None if ready is None else mon.wall - ready,
        "test_acc": (manifest.get("model") or {}).get("test_acc", summary.get("model_test_acc")),
        "train": (manifest.get("counts") or {}).get("train"), "counts": manifest.get("counts"),
        "engine": manifest.get("engine"), "analytics_seconds": algo, "phase_seconds": phases, "json_line": summary,
        "peak_driver": mon.peak_driver, "peak_children": mon.peak_children, "events": ev, "log": mon.log,
        "graph_dir": manifest.get("graph_dir"), "outputs": str(run_dir / "outputs"),
    }


def run_graphframes(args: argparse.Namespace, work: Path, graph_dir: str | None) -> dict[str, Any]:
    jar = Path(args.jar)
    if not jar.is_file():
        return {"skipped": f"no GraphFrames jar at {jar}"}
    if not graph_dir or not Path(graph_dir).exists():
        return {"skipped": "no built graph (the nightly did not run)"}
    out = work / "graphframes"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, str(BENCH / "_graphframes_run.py"), "--graph", graph_dir, "--jar", str(jar),
           "--output", str(out), "--checkpoint", str(work / "gf-checkpoints"),
           "--driver-memory", args.driver_memory]
    mon = run_monitored(cmd, work / "logs" / "graphframes.log")
    res = mon.last_json()
    if mon.rc != 0 or not res:
        return {"skipped": f"GraphFrames run failed (exit {mon.rc}); see {mon.log}"}
    return {**res, "wall": mon.wall, "peak_driver": mon.peak_driver, "peak_children": mon.peak_children,
            "outputs": str(out)}


# ------------------------------------------------------------------------------------------ agreement


def _read(path: Path, cols: list[str]) -> Any:
    import pyarrow.dataset as ds

    t = ds.dataset(str(path), format="parquet").to_table(columns=cols)
    return t.sort_by("id")


def agreement(scipy_out: Path, other: Path, published: bool) -> dict[str, Any]:
    """How far another run's output tables agree with scipy's (same dense ids). ``published``: ``other``
    is a nightly's ``outputs/`` (``<table>/run_date=<d>/``), else ``<table>/`` directories."""
    import numpy as np

    def tables(name: str, cols: list[str]) -> tuple[Any, Any] | None:
        a = _read(scipy_out / f"{name}.parquet", cols)
        b = _read(other / name / f"run_date={RUN_DATE}" if published else other / name, cols)
        if len(a) != len(b) or not np.array_equal(a["id"].to_numpy(), b["id"].to_numpy()):
            return None
        return a, b

    out: dict[str, Any] = {}
    try:
        if ab := tables("pagerank", ["id", "pagerank"]):
            x, y = ab[0]["pagerank"].to_numpy(), ab[1]["pagerank"].to_numpy()
            x, y = x / x.sum(), y / y.sum()
            out["pagerank_max_rel_err"] = float(np.abs(x - y).max() / np.abs(x).max())
        for name, col in (("components", "component"), ("communities", "label")) + \
                ((("predictions", "label"),) if published else ()):
            if ab := tables(name, ["id", col]):
                out[f"{name}_same"] = float(np.mean(ab[0][col].to_numpy() == ab[1][col].to_numpy()))
            else:
                out[f"{name}_same"] = "ids differ"
    except (OSError, KeyError, ValueError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# ------------------------------------------------------------------------------------------ report


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _g(v: int | None) -> str:
    return "-" if not v else f"{v / GiB:.2f}"


def table(args: argparse.Namespace, gen: dict[str, Any], sc: dict[str, Any] | None, ni: dict[str, Any] | None,
          gf: dict[str, Any] | None) -> str:
    sres = (sc or {}).get("result", {})
    ss = sres.get("stage_seconds", {})
    sa = sres.get("analytics_seconds", {})
    ns = (ni or {}).get("stage_seconds", {})
    na = (ni or {}).get("analytics_seconds", {})
    nd, nc = (ni or {}).get("peak_driver", {}), (ni or {}).get("peak_children", {})
    srss = (sc or {}).get("peak_rss", {})
    gsec = (gf or {}).get("seconds") or {}
    with_gf = bool(gsec)
    # (label, nightly seconds, scipy seconds, graphframes seconds, nightly phase, scipy phase)
    rows: list[tuple[str, float | None, float | None, float | None, str | None, str | None]] = [
        ("Spark startup (launch -> session ready)", (ni or {}).get("spark_ready"), None,
         (gf or {}).get("startup_seconds"), "startup", None),
        ("build", ns.get("build"), ss.get("build"), None, "build", "build"),
        ("train", ns.get("train"), ss.get("train"), None, "train", "train"),
        ("propagate / predict", ns.get("propagate"), ss.get("predict"), None, "propagate", "predict"),
        ("analytics", ns.get("analytics"), ss.get("analytics"),
         sum(gsec.values()) if with_gf else None, "analytics", "analytics"),
        ("  pageRank(20)", na.get("pagerank"), sa.get("pagerank"), gsec.get("pagerank"), None, None),
        ("  connected components", na.get("components"), sa.get("components"), gsec.get("components"), None, None),
        ("  label propagation(5)", na.get("communities"), sa.get("communities"), gsec.get("communities"),
         None, None),
        *([("  the three in shared rounds", na["shared"], sum(sa.values()) if sa else None,
            sum(gsec.values()) if with_gf else None, None, None)] if "shared" in na else []),
        ("publish / write", ns.get("publish"), ss.get("write"), None, "after", "write"),
        ("report (≈, from the log)", (ni or {}).get("report_seconds"), None, None, None, None),
        ("total (wall, incl. process start)", (ni or {}).get("wall"), (sc or {}).get("wall"),
         (gf or {}).get("wall"), "all", "all"),
        ("total after Spark is up (scipy: in-process stages)", (ni or {}).get("after_spark_up"),
         sres.get("seconds"), None, None, None),
    ]
    head = ["stage", "nightly s", "scipy s", "x scipy", "peak RSS driver GiB", "peak RSS JVM+workers GiB",
            "scipy peak RSS GiB"]
    if with_gf:
        head.insert(4, "GraphFrames s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, nsec, ssec, gsec_v, nph, sph in rows:
        ratio = f"{nsec / ssec:.1f}" if nsec is not None and ssec else "-"
        cells = [label, _s(nsec), _s(ssec), ratio, _g(nd.get(nph)) if nph else "-",
                 _g(nc.get(nph)) if nph else "-", _g(srss.get(sph)) if sph else "-"]
        if with_gf:
            cells.insert(4, _s(gsec_v))
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"\nnodes={args.nodes:,} edges={args.edges:,} dim={args.dim} classes={args.classes} seed={args.seed} "
           f"plan={args.plan} driver_memory={args.driver_memory}"
           + (f" extra={args.extra_set}" if args.extra_set else ""),
           f"generator: {gen.get('seconds')} s{' (reused)' if gen.get('reused') else ''}, "
           f"{gen.get('counts', {})}", "", *lines, "",
           "(the nightly writes its tables inside propagate and analytics, publish only renames them; scipy's "
           "wall includes interpreter start and a features-only reference fit; RSS '-': no sample in that "
           "stage, sampled every 0.5 s)"]
    nacc, sacc = (ni or {}).get("test_acc"), sres.get("test_acc")
    accs = [f"test accuracy: nightly {nacc if nacc is not None else '-'}",
            f"scipy {sacc:.4f} (weight decay {sres.get('weight_decay')})" if sacc is not None else "scipy -"]
    if nacc is not None and sacc is not None:
        accs.append(f"difference nightly - scipy {nacc - sacc:+.4f}")
    if "test_acc_features_only" in sres:
        accs.append(f"features alone (scipy, K=0) {sres['test_acc_features_only']:.4f}")
    out.append("; ".join(accs))
    if ni and ni.get("phase_seconds"):
        out.append("nightly preparation vs rounds (s): " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(ni["phase_seconds"].items())))
    if ni and not ni.get("failed"):
        tr = ni.get("train") or {}
        out.append(f"nightly: engine {ni.get('engine')}, train {json.dumps(tr)}, counts "
                   f"{json.dumps({k: v for k, v in (ni.get('counts') or {}).items() if k != 'train'})}")
    for name in ("nightly_vs_scipy", "graphframes_vs_scipy"):
        if (ni or {}).get(name) or (gf or {}).get(name):
            out.append(f"{name.replace('_', ' ')}: {json.dumps((ni or {}).get(name) or (gf or {}).get(name))}")
    if ni and ni.get("failed"):
        out.append(f"NIGHTLY FAILED: {ni['failed']}")
        out.extend(f"  {ln}" for ln in ni.get("error_lines", []))
    if gf and gf.get("skipped"):
        out.append(f"GraphFrames: skipped ({gf['skipped']})")
    if sc:
        out.append(f"scipy: {json.dumps(sres.get('counts'))}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20_000)
    ap.add_argument("--edges", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="", help="default: /tmp/lepton-nightly-scale/n<N>-m<M>-d<D>-c<C>-s<S>")
    ap.add_argument("--jar", default="", help=f"real GraphFrames jar (e.g. {DEFAULT_JAR}); omitted: no GraphFrames")
    ap.add_argument("--plan", choices=["auto", "partitioned"], default="auto", help="graph.plan of the nightly")
    ap.add_argument("--driver-memory", default="4g", help="spark.driver_memory of the nightly (and GraphFrames); 4g = the project default")
    ap.add_argument("--extra-set", action="append", default=[], metavar="KEY=VALUE",
                    help="more --set overrides for the nightly (repeatable; applied last)")
    ap.add_argument("--skip-scipy", action="store_true")
    ap.add_argument("--skip-nightly", action="store_true")
    ap.add_argument("--regenerate", action="store_true", help="regenerate the raw tables even if cached")
    ap.add_argument("--json", default="", metavar="FILE", help="also write all results as JSON")
    args = ap.parse_args(argv)

    work = Path(args.workdir or f"/tmp/lepton-nightly-scale/n{args.nodes}-m{args.edges}-d{args.dim}"
                                 f"-c{args.classes}-s{args.seed}")
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw"
    print(f"workdir {work}", file=sys.stderr, flush=True)
    gen = generate(args, raw)
    print(f"raw tables ready ({gen['seconds']} s{', reused' if gen.get('reused') else ''})", file=sys.stderr,
          flush=True)
    sc = ni = gf = None
    if not args.skip_scipy:
        sc = run_scipy(args, raw, work)
        print(f"scipy done: {sc['result']['seconds']} s, test acc {sc['result']['test_acc']:.4f}",
              file=sys.stderr, flush=True)
    if not args.skip_nightly:
        ni = run_nightly(args, raw, work)
        print(f"nightly {'FAILED' if ni.get('failed') else 'done'}: {ni['wall']:.1f} s wall, test acc "
              f"{ni.get('test_acc')}", file=sys.stderr, flush=True)
        if sc and not ni.get("failed"):
            ni["nightly_vs_scipy"] = agreement(work / "scipy_out", Path(ni["outputs"]), published=True)
    if args.jar:
        graph_dir = (ni or {}).get("graph_dir") or str(work / "run" / "runs" / RUN_DATE / "graph" / "graph")
        gf = run_graphframes(args, work, graph_dir)
        if sc and not gf.get("skipped"):
            gf["graphframes_vs_scipy"] = agreement(work / "scipy_out", Path(gf["outputs"]), published=False)
    print(table(args, gen, sc, ni, gf))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "workdir": str(work), "generator": gen,
                                               "scipy": sc, "nightly": ni, "graphframes": gf}, indent=1,
                                              default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
