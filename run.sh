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
}

cmd="${1:-nightly}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup "test" ;;
  test)
    need_java
    setup "test"
    exec "$VENV/bin/python" -m pytest "$@" ;;
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
