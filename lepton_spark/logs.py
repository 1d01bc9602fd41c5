"""Log output of the command line: human-readable lines (default) or one JSON object per line.

Schedulers and log stores (Databricks job logs shipped to a log store, Airflow, Loki/Elastic, ...)
parse one JSON object per line far more reliably than free text, so ``--log-format json`` (or
``logging.format: json``) switches the driver's log records to JSON lines with the keys

``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``, and -- where known --
``run_id``, ``stage`` and ``round``; ``exc`` carries a traceback when a record has one.

The run context comes from :mod:`contextvars`: the command line runs a pipeline inside
:func:`run_context` (run id), the runner calls :func:`set_stage` as each stage starts and the
propagation loops call :func:`set_round`, so every record logged inside a stage -- by any module --
carries them without passing them around. Context
variables are per thread (and per asyncio task), so concurrent pipelines in one process do not mix.

In JSON mode the JVM of a local session logs JSON lines too (``conf/log4j2-json.properties``, log4j's
``JsonTemplateLayout`` with the same keys), see :func:`log4j_config`. On a cluster the JVM's logging
belongs to the cluster (spark-submit's or Databricks' log4j configuration). One line stays text: the
JVM's own start-up notice ``WARNING: Using incubator modules: jdk.incubator.vector``, printed by the
Java launcher before any logging framework runs (Spark adds that module); nothing can reformat it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

LogFormat = Literal["text", "json"]
FORMATS: tuple[str, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_CONF_DIR = Path(__file__).resolve().parent / "conf"

RUN_ID: ContextVar[str | None] = ContextVar("lepton_run_id", default=None)
STAGE: ContextVar[str | None] = ContextVar("lepton_stage", default=None)
ROUND: ContextVar[int | None] = ContextVar("lepton_round", default=None)

_format: LogFormat = "text"


def current_format() -> LogFormat:
    """The format chosen by the last :func:`setup_logging` call ("text" before any)."""
    return _format


def reset_format() -> None:
    """Back to "text" until the next :func:`setup_logging` (a new command in the same process)."""
    global _format
    _format = "text"


def log4j_config() -> Path:
    """log4j2 configuration for a JVM this process starts: JSON lines when the log format is json."""
    return _CONF_DIR / ("log4j2-json.properties" if _format == "json" else "log4j2.properties")


@contextlib.contextmanager
def run_context(run_id: str) -> Iterator[None]:
    """Tag every record logged inside the block with ``run_id``; stage and round are reset on exit.

    Parameters
    ----------
    run_id : str
        The pipeline run id (``<run date>-<config hash>`` by default).
    """
    tokens = (RUN_ID.set(run_id), STAGE.set(None), ROUND.set(None))
    try:
        yield
    finally:
        ROUND.reset(tokens[2])
        STAGE.reset(tokens[1])
        RUN_ID.reset(tokens[0])


def set_stage(stage: str | None) -> None:
    """Record the pipeline stage now running (build, train, ..., publish, report); clears the round.

    Called by the pipeline runner as each stage starts, so that every record of the stage -- from any
    module, Spark's included -- carries it.
    """
    STAGE.set(stage)
    ROUND.set(None)


def set_round(k: int | None) -> None:
    """Record the propagation round now running (``None`` once the rounds are over).

    Called by the round loops themselves, so that the records of a round (the engine's and Spark's)
    carry it.
    """
    ROUND.set(k)


class ContextFilter(logging.Filter):
    """Adds ``run_id``, ``stage`` and ``round`` (None when unknown) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = RUN_ID.get()
        record.stage = STAGE.get()
        record.round = ROUND.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc)
        doc: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "stage", "round", "exit_code"):
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            doc["exc"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


def setup_logging(debug: bool = False, fmt: str = "text") -> None:
    """Configure the root logger of a command-line process (stderr, INFO or DEBUG, text or JSON).

    Parameters
    ----------
    debug : bool
        DEBUG level instead of INFO.
    fmt : {"text", "json"}
        ``text``: ``time LEVEL logger: message`` lines; ``json``: see the module docstring. In JSON
        mode Python warnings are routed through logging too, so stderr stays one JSON object a line.
    """
    global _format
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    _format = fmt  # type: ignore[assignment]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(fmt == "json")
    for noisy in ("py4j", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pyspark 4 logs every failed query as a multi-line JSON blob; the CLI reports errors itself
    logging.getLogger("DataFrameQueryContextLogger").setLevel(logging.CRITICAL)
