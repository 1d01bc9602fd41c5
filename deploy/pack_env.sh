#!/usr/bin/env bash
# Build the packed executor environment: a relocatable virtualenv archive for
#   spark-submit --archives env.tar.gz#env --conf spark.pyspark.python=./env/bin/python ...
#
#   bash deploy/pack_env.sh [OUT]         (default OUT: dist/env.tar.gz; also: bash run.sh pack-env [OUT])
#
# What is in it: lepton_spark (built from this checkout, not editable) and its runtime dependencies
# (numpy, scipy, pyarrow, pandas, ...) -- NOT pyspark: executors take PySpark from the cluster's own
# Spark (SPARK_HOME/python/lib/pyspark.zip), which must match the cluster's JVM side anyway, and it would
# add ~500 MB of jars to every executor's download.
#
# How: venv-pack (PyPI) archives a plain `python -m venv` environment and rewrites its scripts'
# shebangs and activate scripts to be relocatable. A virtualenv does not contain the interpreter
# itself: bin/python links to the Python that built it, so the executors need that Python version at
# the same path (clusters built from one image), or at the prefix given in PYTHON_PREFIX (venv-pack's
# --python-prefix, e.g. PYTHON_PREFIX=/usr when the nodes run /usr/bin/python3.11). conda-pack would
# ship the interpreter too, but needs conda environments, which this project does not use.
#
# Environment: PYTHON (the interpreter to build with; default python3, must be the cluster's Python
# version), PYTHON_PREFIX (see above), PIP_* (pip's own settings, e.g. an index mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist/env.tar.gz}"
PY="${PYTHON:-python3}"
start=$(date +%s)
work="$(mktemp -d "${TMPDIR:-/tmp}/lepton-pack-env.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "pack-env: building the environment with $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
"$PY" -m venv "$work/env"
"$PY" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$work/tools/bin/python" -m pip install --quiet "venv-pack>=0.2"
"$work/env/bin/python" -m pip install --quiet --upgrade pip >/dev/null

# the runtime dependencies minus pyspark (graphframes-py declares pyspark too, so it goes in without
# its dependencies), then the project itself (a wheel build of this checkout), also without them
"$work/env/bin/python" - "$work/requirements.txt" <<'PY'
import re
import sys
import tomllib

deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
name = lambda d: re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-")
keep = [d for d in deps if name(d) not in ("pyspark", "graphframes-py")]
no_deps = [d for d in deps if name(d) == "graphframes-py"]
open(sys.argv[1], "w").write("\n".join(keep) + "\n")
open(sys.argv[1] + ".nodeps", "w").write("\n".join(no_deps) + "\n")
PY
"$work/env/bin/python" -m pip install --quiet -r "$work/requirements.txt"
"$work/env/bin/python" -m pip install --quiet --no-deps -r "$work/requirements.txt.nodeps"
"$work/env/bin/python" -m pip install --quiet --no-deps .
echo "pack-env: environment installed after $(( $(date +%s) - start ))s"
"$work/env/bin/python" -m pip uninstall --quiet --yes pip >/dev/null  # executors install nothing
# the packages' own test suites (scipy, numpy, pandas, pyarrow: ~1/4 of the files) stay out

mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
"$work/tools/bin/venv-pack" --quiet -p "$work/env" -o "$OUT" --exclude "*/site-packages/*/tests/*" ${PYTHON_PREFIX:+--python-prefix "$PYTHON_PREFIX"}
echo "pack-env: wrote $OUT ($(du -h "$OUT" | cut -f1)) in $(( $(date +%s) - start ))s"
