#!/bin/bash
# The benchmarks that have GPU figures in benchmarks/RESULTS.md, in one go on
# an accelerator host, each section time-boxed and logged to OUTDIR/<section>.log:
#
#   bash benchmarks/gpu_suite.sh OUTDIR [SECTION ...]
#
# Sections (default: all, in this order): env throughput robustness quickstart
# models. Needs the package importable (pip install -e '.[cuda12]', or
# PYTHONPATH) and, for `robustness`, the reference `imagecorruptions` 1.1.2
# importable by $REFERENCE_PYTHON (default: the same python; see
# benchmarks/reference_corruptions.py). Section time limits: $LIMIT_<SECTION>
# seconds (defaults below); a section cut at its limit keeps what it printed.
set -u
out=$1; shift
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(env throughput robustness quickstart models)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
cd "$(dirname "$0")/.."

run() {  # run SECTION LIMIT CMD...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$out/$name.log"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.log"
  echo "=== $name: rc ${PIPESTATUS[0]} in $((SECONDS - t0)) s" | tee -a "$out/$name.log"
}

for s in "${sections[@]}"; do
  case $s in
    env)
      run env "${LIMIT_ENV:-60}" "$py" -c "
import jax, jaxlib, flax, optax, grain, numpy
print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__,
      'optax', optax.__version__, 'grain', grain.__version__, 'numpy', numpy.__version__)
print(jax.devices())"
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
          --format=csv 2>&1 | tee -a "$out/env.log" ;;
    throughput)
      run throughput "${LIMIT_THROUGHPUT:-150}" "$py" benchmarks/train_throughput.py \
          --workers=0,2,8
      run throughput "${LIMIT_THROUGHPUT:-150}" "$py" benchmarks/train_throughput.py \
          --batch=64 --workers= ;;
    robustness)
      run robustness "${LIMIT_ROBUSTNESS:-300}" "$py" benchmarks/robustness.py \
          --batch=128 --reference-python="${REFERENCE_PYTHON:-$py}" ;;
    quickstart)
      rm -rf /tmp/gpu_suite_quickstart
      run quickstart "${LIMIT_QUICKSTART:-240}" "$py" main.py \
          --config=experiments/quickstart.py --workdir=/tmp/gpu_suite_quickstart \
          --mode=ingest,train,eval
      cp /tmp/gpu_suite_quickstart/eval/test_metrics.json "$out/quickstart_test_metrics.json" \
          2>/dev/null ;;
    models)
      run models "${LIMIT_MODELS:-300}" "$py" benchmarks/models.py \
          --sizes=224,512 --max_memory_gb=100 ;;
    *) echo "unknown section $s" >&2; exit 2 ;;
  esac
done
