#!/usr/bin/env bash
# The accelerator checks recorded in BUILD_NOTES.md ("Measured", GPU rows), as one script:
# the tests that need neither TensorFlow nor several CPU processes, then the benchmarks.
#
#   PY=python3 OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh [tests] [train] [iw]
#
# PY is a Python with jax (a CUDA build), flax, optax, ml-collections and pytest; logs are
# written under OUT. With no section named, all three run. The tests run at float32
# matmul precision (a GPU's default, TF32, is not what their float64 references check).
set -u -o pipefail
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_check}
SECTIONS=${*:-tests train iw}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L || true
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
SECONDS=0
status=0
if [[ " $SECTIONS " == *" tests "* ]]; then
  JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_distributions.py tests/test_model.py tests/test_likelihood.py \
    tests/test_objectives.py tests/test_optim.py tests/test_benchmarks.py \
    2>&1 | tee "$OUT/pytest.log" | tail -40 || status=1
  echo "tests: ${SECONDS}s"
fi
if [[ " $SECTIONS " == *" train "* ]]; then
  for b in 100 1000; do
    "$PY" benchmarks/train_throughput.py --batch_size=$b --rounds=5 --steps=100 2>&1 \
      | tee "$OUT/train_$b.log" | tail -12 || status=1
  done
fi
if [[ " $SECTIONS " == *" iw "* ]]; then
  for p in highest default; do     # float32 products, then the GPU's default (TF32)
    "$PY" benchmarks/iw_eval.py --examples=2048 --batch_size=256 --memory_budget_mb=8192 \
      --rounds=3 --loop_examples=16 --loop_rounds=1 --matmul_precision=$p 2>&1 \
      | tee "$OUT/iw_$p.log" | tail -8 || status=1
  done
fi
echo "total: ${SECONDS}s"
exit $status
