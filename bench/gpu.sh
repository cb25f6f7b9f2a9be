#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA device (docs/performance.md, "The CUDA
# path"), in this order: the CUDA tests; 64 stacked IQL seeds at IQL's paper size with the
# update replayed as a CUDA graph and without; every learner at the quick size (one seed, 8
# stacked, 8 sequential); member forwards against vmap (bench/stack_vmap.py); 64 and 512
# stacked IQL seeds with the graph and TF32, 8 at the quick size; torch.compile of the
# update's forwards (64 stacked and one seed); the evaluation of 8 stacked seeds over env
# processes; the smoke suite through `pbrl bench` with stacked seeds (the default on CUDA);
# a profile of 64 stacked IQL seeds; every learner at the paper size.
#
#     bench/gpu.sh OUTDIR
#
# Runs from the repository root with the python3 on PATH, pbrl importable (installed, or the
# layout of a snapshot on PYTHONPATH: agents/, envs/ and datasets/ copied into pbrl/ and the
# root on PYTHONPATH, as `python3 bench/...` does not put the working directory on sys.path).
# MUJOCO_GL defaults to "disable": nothing here renders, and a machine without EGL's
# libraries then still imports MuJoCo. Each stage has its own time limit and a failing stage
# does not stop the next; every stage writes its log under OUTDIR, and the script exits
# non-zero when any stage failed.
set -u
OUTDIR="${1:?usage: bench/gpu.sh OUTDIR}"
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 MUJOCO_GL="${MUJOCO_GL:-disable}"
export MINARI_DATASETS_PATH="${MINARI_DATASETS_PATH:-$(mktemp -d)}"
status=0
stage() {  # stage NAME SECONDS COMMAND...: run, log to OUTDIR/NAME.log, note the exit status
  local name="$1" secs="$2"
  shift 2
  local t0=$SECONDS
  echo "== $name: $*" | tee "$OUTDIR/$name.log"
  timeout "$secs" "$@" >>"$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUTDIR/$name.log"
  tail -n 40 "$OUTDIR/$name.log"
  [ "$rc" = 0 ] || status=1
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), platform.python_version())"
  echo "commit ${PBRL_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}"
} >"$OUTDIR/machine.txt" 2>&1
cat "$OUTDIR/machine.txt"

stage cuda-tests "${PBRL_GPU_TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider -k cuda \
  tests/test_agents_conformance.py tests/test_online.py tests/test_stack.py
# First what issue 22's targets need, in the order that fits one call of a lent machine's
# time: the IQL update replayed as one CUDA graph (--agent.cuda_graph, added after the first
# H200 run) at 64 stacked seeds in float32, the same without the graph (whether the graph
# should be the default on CUDA), and every learner's 8 stacked seeds against 8 sequential
# runs; then TF32, 512 stacked seeds ("64 or more") and 8 stacked at the quick size.
stage iql-64-graph "${PBRL_GPU_GRAPH_S:-60}" python3 bench/throughput.py --device cuda \
  --agents iql --preset paper --steps 2000 --repeats 1 --stack 64 --set cuda_graph=true \
  --json "$OUTDIR/iql-64-graph.json"
stage iql-64 "${PBRL_GPU_IQL_S:-40}" python3 bench/throughput.py --device cuda --agents iql \
  --preset paper --steps 300 --repeats 1 --stack 64 --json "$OUTDIR/iql-64.json"
stage throughput-quick "${PBRL_GPU_QUICK_S:-150}" python3 bench/throughput.py --device cuda \
  --preset quick --steps 200 --repeats 1 --stack 8 --json "$OUTDIR/throughput-quick.json"
# the transformers' member forwards and the losses with a member axis against vmap
stage stack-vmap "${PBRL_GPU_VMAP_S:-40}" python3 bench/stack_vmap.py --device cuda \
  --steps 100 --rounds 2
stage iql-64-graph-tf32 "${PBRL_GPU_GRAPH_S:-60}" python3 bench/throughput.py --device cuda \
  --agents iql --preset paper --steps 2000 --repeats 1 --stack 64 --set cuda_graph=true --tf32 \
  --json "$OUTDIR/iql-64-graph-tf32.json"
stage iql-512-graph-tf32 "${PBRL_GPU_IQL512_S:-60}" python3 bench/throughput.py --device cuda \
  --agents iql --preset paper --steps 300 --repeats 1 --stack 512 --set cuda_graph=true \
  --tf32 --json "$OUTDIR/iql-512-graph-tf32.json"
stage iql-8-graph "${PBRL_GPU_GRAPH8_S:-40}" python3 bench/throughput.py --device cuda \
  --agents iql --preset quick --steps 1000 --repeats 1 --stack 8 --set cuda_graph=true \
  --json "$OUTDIR/iql-8-graph.json"
# torch.compile of the member-batched forwards against eager, 64 stacked and one seed
stage compile-iql-64 "${PBRL_GPU_COMPILE_S:-60}" python3 bench/compile_iql.py --device cuda \
  --stack 64 --rounds 2 --updates 100
stage compile-iql-1 "${PBRL_GPU_COMPILE1_S:-40}" python3 bench/compile_iql.py --device cuda \
  --rounds 2 --updates 200
# Evaluation of 8 stacked seeds: one after another, together, and over 8 env processes
stage eval-rates "${PBRL_GPU_EVAL_S:-50}" python3 bench/eval_rates.py --k 8 --episodes 2 \
  --horizon 200 --workers 8 --rounds 1 --device cuda --json "$OUTDIR/eval-rates.json"
SMOKE_RUNS="$(mktemp -d)"
stage smoke "${PBRL_GPU_SMOKE_S:-110}" python3 -m pbrl bench --suite smoke --seeds 0-2 \
  --device cuda --out "$SMOKE_RUNS" --no-plots
cp "$SMOKE_RUNS/table.md" "$OUTDIR/smoke-table.md" 2>/dev/null
python3 -c "import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).rglob('config.json')):
    c = json.loads(p.read_text()); print(p.parent.name, c.get('device'), c.get('stacked_seeds'))
" "$SMOKE_RUNS" >"$OUTDIR/smoke-stacked.txt" 2>&1
stage profile-iql-64 "${PBRL_GPU_PROFILE_S:-45}" python3 bench/profile_update.py iql \
  --preset paper --device cuda --stack 64 --steps 30 --top 25
stage throughput-paper "${PBRL_GPU_PAPER_S:-60}" python3 bench/throughput.py --device cuda \
  --preset paper --steps 100 --repeats 1 --stack 8 --json "$OUTDIR/throughput-paper.json"
exit $status
