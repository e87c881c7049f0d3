#!/usr/bin/env bash
# Every speed benchmark on the embedded default, one after the other (on a quiet machine: the
# figures are wall-clock). Usage: bash benchmarks/all.sh [> figures.txt]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for b in pmi dssr varsal dcontrol mipin grid; do
  echo "== benchmarks/bench_$b.py"
  "$PY" "benchmarks/bench_$b.py" 2>&1 | grep -v -e "No runtime found" -e "ScriptRunContext" -e "^$"
done
