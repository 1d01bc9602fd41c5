"""The Python worker daemon of a local session: pyspark's own, importing the installed pyspark.

A local JVM starts its Python workers' daemon (``python -m pyspark.daemon``) with the ``pyspark.zip``
and ``py4j-*.zip`` inside the installed pyspark package first on ``PYTHONPATH``. Python cannot cache
the byte code of a module imported from a zip that holds only sources, so the daemon and every worker it
forks compile pyspark's modules again: measured here, ``import pyspark.worker`` took 0.64 s from the zip
and 0.15 s from the installed package, and a worker of an Arrow job 1.0 s against 0.45 s -- on 2 cores,
about a second of every run's first Python job, and again whenever Spark replaces an idle worker.

:func:`lepton_spark.session.get_spark` names this module ``spark.python.daemon.module`` for a local
master (the JVM and the Python workers are then this environment's own). It moves those two zips
behind the installed packages -- only when they lie inside the pyspark package found on the path, so
the code imported is the same release either way -- and runs :func:`pyspark.daemon.manager`.

Nothing else is imported before the fork: pyspark's daemon imports the worker after it (pandas and
pyarrow start threads when imported, and a process must not fork with threads running).
"""

from __future__ import annotations

import os
import sys


def _installed_pyspark_zips(path: list[str]) -> list[str]:
    """The entries of ``path`` that are ``<pkg>/python/lib/{pyspark,py4j-*}.zip`` of the pyspark package
    ``<pkg>`` that a later entry of ``path`` holds (a pip or conda installation: the zips are its own
    sources)."""
    zips = []
    for entry in path:
        name = os.path.basename(entry)
        if not (entry.endswith(".zip") and (name == "pyspark.zip" or name.startswith("py4j-"))):
            continue
        package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(entry))))
        if os.path.basename(package) != "pyspark":
            continue
        site = os.path.dirname(package)
        if any(os.path.abspath(p or ".") == site for p in path) and os.path.isfile(os.path.join(package,
                                                                                                 "__init__.py")):
            zips.append(entry)
    return zips


def prefer_installed_pyspark(path: list[str]) -> list[str]:
    """``path`` with the installed pyspark package's own zips (:func:`_installed_pyspark_zips`) moved to
    its end; any other order is returned as it is."""
    zips = _installed_pyspark_zips(path)
    return [p for p in path if p not in zips] + zips


def main() -> None:
    sys.path[:] = prefer_installed_pyspark(sys.path)
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
