"""Which graph engine runs the algorithms: the real GraphFrames (JVM) or our builtin DataFrame engine.

``graph.engine`` is ``auto | graphframes | builtin`` (docs/architecture.md §2). The choice comes from the caller's
argument, else the ``LEPTON_GRAPH_ENGINE`` environment variable, else ``auto``. ``auto`` picks
GraphFrames only when its Python front end imports *and*, in a classic session, its JVM class
``org.graphframes.GraphFrame`` loads: graphframes-py is a pure front end and its jar comes from a
Maven repository these machines cannot reach, so "importable" alone proves nothing. A Spark Connect
session cannot be probed (the GraphFrames Connect plugin lives on the server), so ``auto`` stays
builtin there; request ``graphframes`` explicitly when the server has the plugin.

The JVM probe in :func:`graphframes_status` is the project's only use of ``spark._jvm``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

from lepton_spark.errors import UsageError

if TYPE_CHECKING:
    from lepton_spark.graph.frame import GraphFrame

from lepton_spark.session import is_connect

log = logging.getLogger(__name__)

ENV_VAR = "LEPTON_GRAPH_ENGINE"
ENGINES = ("auto", "builtin", "graphframes")
BUILTIN = "builtin"
GRAPHFRAMES = "graphframes"
JVM_CLASS = "org.graphframes.GraphFrame"

_logged: set[tuple[str, str]] = set()


class EngineUnavailableError(UsageError):
    """``graphframes`` was requested but cannot run in this session (exit code 2, a configuration error)."""


def graphframes_status(spark: SparkSession) -> tuple[bool, str]:
    """(usable, reason): can the real GraphFrames run in ``spark``? Never raises.

    The class is looked up through the JVM thread's context class loader, the loader that holds
    jars added with ``spark.jars`` / ``--packages`` (and the one py4j itself uses to reach
    ``org.graphframes``).
    """
    try:
        import graphframes  # noqa: F401
    except ImportError as exc:
        return False, f"the graphframes Python package does not import ({exc})"
    if is_connect(spark):
        return False, "Spark Connect session: the GraphFrames server plugin cannot be probed from the client"
    try:
        jvm: Any = spark._jvm  # type: ignore[attr-defined]
        jvm.java.lang.Class.forName(JVM_CLASS, False, jvm.java.lang.Thread.currentThread().getContextClassLoader())
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not loadable"
        return False, f"GraphFrames JVM package not on the classpath ({JVM_CLASS} does not load: {type(exc).__name__})"
    return True, f"{JVM_CLASS} loads"


def resolve_engine(spark: SparkSession, requested: str | None = None) -> str:
    """``"builtin"`` or ``"graphframes"`` for ``requested`` (else ``$LEPTON_GRAPH_ENGINE``, else ``auto``).

    Raises :class:`~lepton_spark.errors.UsageError` for an unknown name and
    :class:`EngineUnavailableError` when ``graphframes`` is requested but cannot run. Logs the engine
    in use once per process (per distinct outcome).
    """
    choice = (requested or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if choice not in ENGINES:
        raise UsageError(f"unknown graph engine {choice!r}; expected one of {', '.join(ENGINES)}")
    if choice == BUILTIN:
        engine, reason = BUILTIN, "requested"
    else:
        ok, why = graphframes_status(spark)
        if choice == GRAPHFRAMES and not ok:
            raise EngineUnavailableError(
                f"graph engine 'graphframes' was requested but is unavailable: {why}. "
                f"Add the GraphFrames package to the session (spark.jars.packages / --jars) or use "
                f"engine 'builtin' / 'auto' (set {ENV_VAR} or graph.engine)."
            )
        engine = GRAPHFRAMES if ok else BUILTIN
        reason = why if choice == "auto" else "requested"
    key = (engine, reason)
    if key not in _logged:
        _logged.add(key)
        log.info("graph engine: %s (%s%s)", engine, "auto: " if choice == "auto" else "", reason)
    return engine


def to_graphframes(g: GraphFrame) -> Any:
    """The real ``graphframes.GraphFrame`` over the same vertex and edge DataFrames."""
    from graphframes import GraphFrame as GF

    return GF(g.vertices, g.edges)
