#!/usr/bin/env bash
# The scale profile on a GPU: the PURE DAG at 224 px (real ResNet-152, random ResNet-50)
# with device: cuda, at the same two data-set sizes as `make bench-scale` on CPU.
# Writes results/bench/scale-cuda.{json,md} and benchmarks/results/scale-cuda.md (quoted
# by README.md). Needs a CUDA build of torch (make install TORCH_SPEC=...) and the real
# tier's packages (tests/install-real.sh, run here). Run on the GPU machine from the
# repository root:
#   bash benchmarks/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" - <<'PYCHECK'
import monoscope  # noqa: F401
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu-check: torch sees no CUDA device (torch %s); install a CUDA build" % torch.__version__)
print("gpu-check:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PYCHECK
PYTHON="$PY" bash tests/install-real.sh
"$PY" benchmarks/bench_scale.py --out results/bench --device cuda \
    --threads "${THREADS:-8}" --sizes 2000 4000 --neurons 32 64 --n 8 --readme
