#!/usr/bin/env bash
# The CPU table of docs/performance.md in one run: every learner's update rate (1 seed and
# 8 stacked, quick preset), pbrl's IQL against d3rlpy's, and pbrl's CPL against the
# official update step, one after another on the same machine, in one environment.
#
#   bench/side_by_side.sh PYTHON CPL_RESEARCH_DIR OUT_DIR
#
# PYTHON: an interpreter of an environment holding pbrl, d3rlpy 2.8.1, gym 0.26 and h5py
#   (python -m venv bench-env && bench-env/bin/pip install torch==2.13.0 "d3rlpy==2.8.1"
#    "gym==0.26.2" h5py && bench-env/bin/pip install -e .)
# CPL_RESEARCH_DIR: a folder holding the official repository's research/ package, fetched
#   for the measurement only (git archive of github.com/jhejna/cpl), never part of pbrl.
# OUT_DIR: where the JSON files and the log go.
# THROUGHPUT_ARGS (environment, optional): bench/throughput.py's round and step counts,
#   default "--steps 200 --repeats 3 --stack 8".
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: bench/side_by_side.sh PYTHON CPL_RESEARCH_DIR OUT_DIR" >&2
  exit 2
fi
py=$1 cpl=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export PBRL_TORCH_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
{
  echo "# $(date -u +%FT%TZ) on $(uname -n): $(getconf _NPROCESSORS_ONLN) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# pbrl $(git -C "$here" rev-parse --short HEAD)"
  # shellcheck disable=SC2086
  "$py" "$here/throughput.py" ${THROUGHPUT_ARGS:---steps 200 --repeats 3 --stack 8} --json "$out/throughput.json"
  "$py" "$here/iql_d3rlpy.py" --steps 300 --rounds 3 --json "$out/iql_d3rlpy.json"
  "$py" "$here/cpl_official.py" --cpl-repo "$cpl" --steps 40 --rounds 3 --json "$out/cpl_official.json"
} 2>&1 | grep --line-buffered -v -e "Gym has been unmaintained" -e "upgrade to Gymnasium" -e "migration_guide" \
  -e "Users of this version of Gym" | tee "$out/side_by_side.log"
