"""``lepton-spark`` command line (docs/architecture.md §5).

Every subcommand takes ``--config FILE``, repeated ``--set key.sub=value`` and ``--debug``; prints one
JSON summary line on stdout as its last line on success. Exit codes: 0 ok, 2 usage/config error,
3 invalid input data, 1 anything else. Errors are one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from lepton_spark import __version__
from lepton_spark.config import Config, ConfigError, load_config
from lepton_spark.errors import LeptonError, UsageError
from lepton_spark.logs import reset_format

log = logging.getLogger("lepton_spark.cli")

Handler = Callable[[argparse.Namespace, Config], dict[str, Any]]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors get our one-line format and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = "" if self.prog == "lepton-spark" else f"{self.prog.removeprefix('lepton-spark ')}: "
        raise UsageError(f"{where}{message}")


def _run_date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid run date {text!r} (expected YYYY-MM-DD)") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (default: conf/default.yaml values)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=50 (repeatable)")
    p.add_argument("--debug", action="store_true", help="full tracebacks and debug logging")
    p.add_argument("--log-format", choices=["text", "json"],
                   help="log lines on stderr: text, or one JSON object per line (default: logging.format)")


def _spark(cfg: Config, inputs: Sequence[str] = ()):  # SparkSession import kept lazy so --help is instant
    """The session, told the command's ``inputs`` (their local size decides ``spark.jit: auto``)."""
    from lepton_spark.session import get_spark

    return get_spark(cfg.spark, inputs=inputs)


# ---------------------------------------------------------------- handlers


def _cmd_sample(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from lepton_spark.datasets.planetoid import load_planetoid, write_graph

    graph = load_planetoid(args.dataset, args.raw)
    meta = write_graph(graph, args.output, source=args.raw)
    return {"command": "sample", "output": args.output, **{k: meta[k] for k in (
        "name", "num_vertices", "num_edges", "num_features", "num_classes", "split_counts")}}


def _cmd_describe(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from lepton_spark.analytics.degrees import describe_graph
    from lepton_spark.storage import read_graph

    graph_dir = args.graph or cfg.pipeline.graph_dir or _default_graph()
    spark = _spark(cfg, [graph_dir])
    vertices, edges = read_graph(spark, graph_dir)
    summary = describe_graph(vertices, edges)
    return {"command": "describe", "graph": graph_dir, **summary}


def _cmd_build(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from lepton_spark.ingest import build_graph

    if args.vertices:
        cfg.build.vertices = args.vertices
    if args.edges:
        cfg.build.edges = args.edges
    if args.format:
        cfg.build.format = args.format
    report = build_graph(_spark(cfg, [cfg.build.vertices, cfg.build.edges]), cfg.build, args.output or "")
    return {"command": "build", "output": args.output, **report["counts"], "quarantine": report["quarantine"],
            "num_features": report["graph"]["num_features"], "num_classes": report["graph"]["num_classes"]}


def _cmd_train(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from lepton_spark.models.trainer import preset_hparams
    from lepton_spark.pipeline.stages import train_model

    graph_dir = args.graph or cfg.pipeline.graph_dir or _default_graph()
    if not args.output:
        raise UsageError("train needs --output DIR (where model.npz and model.json are written)")
    hp = {**preset_hparams(cfg.model.type, cfg.model.preset), **cfg.model.params}
    metrics = train_model(_spark(cfg, [graph_dir]), cfg, graph_dir, args.output, hparams=hp)
    keys = ("model_type", "seed", "train_acc", "val_acc", "test_acc", "epochs_run", "best_epoch", "fit_seconds")
    link = {k: metrics[k] for k in ("val_auc", "val_ap", "test_auc", "test_ap") if k in metrics}  # link models
    return {"command": "train", "output": args.output, **{k: metrics.get(k) for k in keys}, **link}


def _run_date_or_today(args: argparse.Namespace) -> str:
    return args.run_date or dt.date.today().isoformat()


def _pipeline(args: argparse.Namespace, cfg: Config, stages: list[str] | None) -> dict[str, Any]:
    from lepton_spark import tracking
    from lepton_spark.logs import run_context
    from lepton_spark.pipeline import run_pipeline
    from lepton_spark.pipeline.runner import default_run_id, published_tables

    output = getattr(args, "output", None) or cfg.pipeline.output
    run_date = _run_date_or_today(args)
    resume = False if getattr(args, "no_resume", False) else None
    run_id = getattr(args, "run_id", None) or default_run_id(cfg, run_date)
    tracker = tracking.open_run(cfg, run_id=run_id, run_date=run_date, command=args.command,
                                resume=cfg.pipeline.resume if resume is None else resume)  # before Spark
    with tracker, run_context(run_id):
        manifest = run_pipeline(
            _spark(cfg, _pipeline_inputs(args, cfg, stages)), cfg, output=output, run_date=run_date, stages=stages,
            run_id=run_id, resume=resume,
            graph_dir=getattr(args, "graph", None), model_dir=getattr(args, "model", None),
        )
        tracker.finish(manifest, output)
    return {"command": args.command, "run_id": manifest["run_id"], "run_date": manifest["run_date"],
            "output": output, "tables": {t: i["rows"] for t, i in published_tables(manifest).items()},
            "stage_seconds": manifest["stage_seconds"], "model_test_acc": manifest["model"].get("test_acc"),
            "engine": manifest["engine"]}


def _pipeline_inputs(args: argparse.Namespace, cfg: Config, stages: list[str] | None) -> list[str]:
    """What a pipeline run reads: the raw tables when it builds from them, else its graph."""
    if "build" in (stages or cfg.pipeline.stages) and cfg.build.vertices and cfg.build.edges:
        return [cfg.build.vertices, cfg.build.edges]
    return [getattr(args, "graph", None) or cfg.pipeline.graph_dir or _default_graph()]


def _cmd_nightly(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return _pipeline(args, cfg, None)


def _cmd_stage(stage: str) -> Handler:
    def handler(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
        if not args.output:
            raise UsageError(f"{stage} needs --output DIR")
        if stage in ("propagate", "links") and not (args.model or cfg.pipeline.model_dir):
            raise UsageError(f"{stage} needs --model DIR (a trained artifact: model.npz + model.json)")
        cfg.train.enabled = False
        return _pipeline(args, cfg, [stage])

    return handler


def _cmd_report(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from lepton_spark.pipeline.report import write_report

    page = write_report(_spark(cfg, [args.run_dir]), args.run_dir)
    return {"command": "report", "report": page}


def _cmd_export(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from lepton_spark.analytics.export import export_graph
    from lepton_spark.storage import read_graph

    if not args.output:
        raise UsageError("export needs --output FILE")
    graph_dir = args.graph or cfg.pipeline.graph_dir or _default_graph()
    vertices, edges = read_graph(_spark(cfg, [graph_dir]), graph_dir)
    return {"command": "export", **export_graph(vertices, edges, args.output, args.format,
                                                  max_vertices=args.max_vertices, max_edges=args.max_edges,
                                                  pagerank_iters=cfg.analytics.pagerank_iters,
                                                  lpa_iters=cfg.analytics.lpa_iters,
                                                  local_max_edges=cfg.analytics.local_max_edges)}


def _default_graph() -> str:
    from lepton_spark.config import DEFAULT_SAMPLE_DIR

    return str(DEFAULT_SAMPLE_DIR)


# name -> (help, argument adder, handler)
def _commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]]:
    def a_sample(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", default="cora", choices=["cora", "citeseer"])
        p.add_argument("--raw", default="data/raw/planetoid", help="folder of ind.<name>.* files")
        p.add_argument("--output", default="data/cora", help="graph directory to (re)write")

    def a_describe(p: argparse.ArgumentParser) -> None:
        p.add_argument("--graph", help="graph directory (default: bundled sample data/cora)")

    def a_build(p: argparse.ArgumentParser) -> None:
        p.add_argument("--vertices"), p.add_argument("--edges"), p.add_argument("--output")
        p.add_argument("--format", choices=["parquet", "csv", "json"])

    def a_train(p: argparse.ArgumentParser) -> None:
        p.add_argument("--graph"), p.add_argument("--output")

    def a_dated(p: argparse.ArgumentParser) -> None:
        p.add_argument("--graph", help="graph directory (default: pipeline.graph_dir or the bundled sample)")
        p.add_argument("--output", help="outputs root (tables under outputs/, manifests under runs/)")
        p.add_argument("--run-date", type=_run_date, help="YYYY-MM-DD (default: today)")
        p.add_argument("--run-id", help="run id (default: <run date>-<config hash>; same id = resume)")
        p.add_argument("--no-resume", action="store_true", help="start the run id from scratch")

    def a_propagate(p: argparse.ArgumentParser) -> None:
        a_dated(p)
        p.add_argument("--model")

    def a_nightly(p: argparse.ArgumentParser) -> None:
        a_dated(p)
        p.add_argument("--model", help="model artifact to reuse when train.enabled is false")

    def a_report(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir")

    def a_export(p: argparse.ArgumentParser) -> None:
        p.add_argument("--graph"), p.add_argument("--output")
        p.add_argument("--format", choices=["graphml", "gexf"], default="graphml")
        p.add_argument("--max-vertices", type=int, default=2000, help="keep the top-PageRank vertices (cap)")
        p.add_argument("--max-edges", type=int, default=20000, help="cap on edges among them")

    return {
        "build": ("raw vertex/edge tables -> validated, normalised graph", a_build, _cmd_build),
        "train": ("train a GNN on the driver; writes model.npz + model.json", a_train, _cmd_train),
        "propagate": ("run a trained model over the graph on Spark", a_propagate, _cmd_stage("propagate")),
        "analytics": ("pagerank, components, communities", a_dated, _cmd_stage("analytics")),
        "embed": ("random-walk (DeepWalk/node2vec) embeddings", a_dated, _cmd_stage("embed")),
        "links": ("edge scores and top-k new links of a link model (gae)", a_propagate, _cmd_stage("links")),
        "nightly": ("the whole pipeline for one run date", a_nightly, _cmd_nightly),
        "report": ("HTML report of a run directory (runs/<run date>)", a_report, _cmd_report),
        "export": ("graph with pagerank/community attributes for Gephi", a_export, _cmd_export),
        "describe": ("counts, degree summary and class balance of a graph", a_describe, _cmd_describe),
        "sample": ("regenerate the bundled sample from the raw Planetoid files", a_sample, _cmd_sample),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lepton-spark",
        description="Lepton Spark: Spark-based big-graph learning pipeline (build, train, propagate, "
        "analyse, publish).",
    )
    parser.add_argument("--version", action="version", version=f"lepton-spark {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add_args, _) in _commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        _common(p)
    return parser


def _setup_logging(debug: bool, fmt: str = "text") -> None:
    from lepton_spark.logs import setup_logging

    setup_logging(debug, fmt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the process exit code (never raises for expected failures)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 2
        reset_format()  # errors before logging is set up are plain lines (a new in-process call)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        _setup_logging(args.debug, args.log_format or "text")  # config errors already in that format
        cfg = load_config(args.config, args.overrides)
        if not args.log_format and cfg.logging.format != "text":
            _setup_logging(args.debug, cfg.logging.format)
        handler = _commands()[args.command][2]
        t0 = time.perf_counter()
        summary = handler(args, cfg)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        sys.stdout.flush()
        print(json.dumps(summary, sort_keys=False, default=str))
        return 0
    except SystemExit as exc:  # argparse --help / --version
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("lepton-spark: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI is the last line: one clear message, an exit code
        _report_error(exc, debug)
        return _exit_code(exc)


def _report_error(exc: BaseException, debug: bool) -> None:
    """The one error line on stderr (after the traceback with ``--debug``).

    When the process logs JSON lines it is one JSON object too (level ERROR, with ``exit_code`` and,
    with ``--debug``, the traceback in ``exc``), so stderr stays parseable line by line."""
    from lepton_spark.logs import current_format

    line = f"lepton-spark: error: {_message(exc)}"
    if current_format() == "json":
        log.error(line, exc_info=exc if debug else None, extra={"exit_code": _exit_code(exc)})
        return
    if debug:
        import traceback

        traceback.print_exception(exc)
    print(line, file=sys.stderr)


def _message(exc: BaseException) -> str:
    from lepton_spark.storage import first_line

    if isinstance(exc, LeptonError | ConfigError | FileNotFoundError | ValueError):
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, LeptonError):
        return exc.exit_code
    if isinstance(exc, ConfigError):
        return 2
    return 1


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
