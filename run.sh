#!/usr/bin/env bash
# Lepton Spark — one-command entry points for a fresh machine (Python >= 3.10, Java 17).
#   bash run.sh            set up .venv and run the main job on the bundled Cora sample
#   bash run.sh test       set up .venv (with test extras) and run the test suite
#   bash run.sh setup      only set up .venv
#   bash run.sh pack-env [OUT]   build the packed executor environment (default dist/env.tar.gz;
#                          venv-pack, see deploy/pack_env.sh) for spark-submit --archives OUT#env
# Extra arguments after the command are passed on (to lepton-spark or pytest).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${LEPTON_VENV:-.venv}"
PY="${PYTHON:-python3}"

need_java() {
  if ! command -v java >/dev/null 2>&1; then
    echo "run.sh: Java 17+ is required (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2
    exit 2
  fi
  local v
  v=$(java -version 2>&1 | awk -F'"' '/version/ {print $2}' | cut -d. -f1)
  if [ "${v:-0}" -lt 17 ] 2>/dev/null; then
    echo "run.sh: Java 17+ is required, found $(java -version 2>&1 | head -1)" >&2
    exit 2
  fi
}

setup() {
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  # quiet install; a stamp of pyproject.toml avoids re-resolving on every call
  local stamp="$VENV/.lepton-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install --quiet -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
  class_data
}

# JVM class-data sharing (AppCDS), once per environment: one nightly on the bundled sample (built from
# its tables as raw input, analytics on Spark: the paths a nightly on a user's graph takes) records the
# classes a run loads from Spark's jars; local sessions then map them instead of loading them again
# (lepton_spark.session._class_data_options: about 2.5 s of a Cora nightly). The archive is checked
# by a JVM that must map it (-Xshare:on) before it is moved into place with its size beside it (a
# truncated archive would crash the JVM that maps it). Optional: if anything fails, runs start without it.
class_data() {
  local archive tmp size
  archive=$("$VENV/bin/python" -c 'from lepton_spark.session import class_data_archive; print(class_data_archive())') || return 0
  [ -f "$archive" ] && [ -f "$archive.size" ] && return 0
  command -v java >/dev/null 2>&1 || return 0
  case "$archive" in *" "*) return 0 ;; esac
  mkdir -p "$(dirname "$archive")" || return 0
  tmp=$(mktemp -d)
  echo "run.sh: recording the JVM class-data archive for this environment (once; about a minute)" >&2
  if PYSPARK_PYTHON="$VENV/bin/python" SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}" \
       "$VENV/bin/spark-submit" --master "local[2]" \
       --driver-java-options "-XX:+IgnoreUnrecognizedVMOptions -XX:ArchiveClassesAtExit=$tmp/spark.jsa" \
       jobs/nightly.py --output "$tmp/out" --run-date 2000-01-01 --set build.vertices=data/cora/vertices \
       --set build.edges=data/cora/edges --set analytics.local_max_edges=0 > "$tmp/record.log" 2>&1 \
     && [ -s "$tmp/spark.jsa" ] \
     && PYSPARK_PYTHON="$VENV/bin/python" SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}" \
       "$VENV/bin/spark-submit" --master "local[1]" \
       --driver-java-options "-Xshare:on -XX:SharedArchiveFile=$tmp/spark.jsa" \
       tools/check_session.py > "$tmp/check.log" 2>&1; then
    size=$(wc -c < "$tmp/spark.jsa")
    mv "$tmp/spark.jsa" "$archive.tmp$$" && mv "$archive.tmp$$" "$archive" && echo "$size" > "$archive.size"
  else
    echo "run.sh: no class-data archive (optional; runs start a little slower): $(tail -1 "$tmp/record.log" "$tmp/check.log" 2>/dev/null | tail -1)" >&2
  fi
  rm -rf "$tmp"
}

cmd="${1:-nightly}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup "test" ;;
  test)
    need_java
    setup "test"
    # two test processes (pytest-xdist), whole files per process so module fixtures are built once:
    # much of the suite waits on JVM start-up, subprocess nightlies and task latency (the suite took
    # 0.85x the time of one process, 2 cores); LEPTON_TEST_WORKERS=0 runs it in this process
    exec "$VENV/bin/python" -m pytest -n "${LEPTON_TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  pack-env)
    PYTHON="$PY" exec bash deploy/pack_env.sh "$@" ;;
  nightly|describe|build|train|propagate|analytics|embed|report|export|sample)
    need_java
    setup ""
    exec "$VENV/bin/lepton-spark" "$cmd" "$@" ;;
  *)
    echo "run.sh: unknown command '$cmd' (use: nightly | test | setup | pack-env | any lepton-spark subcommand)" >&2
    exit 2 ;;
esac
