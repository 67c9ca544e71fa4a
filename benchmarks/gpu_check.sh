#!/usr/bin/env bash
# The GPU check of issue 6: the CUDA paths of the runtimes (torch eager, torch.compile, ONNX
# Runtime's CUDA provider; fp32 and fp16) against the CPU reference. One short script for a
# machine with a GPU: `bash benchmarks/gpu_check.sh` (writes to $OUT when set).
set -u
OUT=${OUT:-/tmp}
PY=${PYTHON:-python3}
{
  nvidia-smi -L || echo "no nvidia-smi"
  $PY - <<'PYEOF'
import importlib
for name in ("torch", "onnxruntime", "onnx", "numpy", "slimkit"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING:", exc)
try:
    import torch
    print("torch.cuda.is_available:", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
    import onnxruntime
    print("onnxruntime providers:", onnxruntime.get_available_providers())
except Exception as exc:
    print("probe failed:", exc)
PYEOF
  PYTHONPATH=src timeout 420 $PY -m pytest -q -p no:cacheprovider -o addopts="" -rs \
    tests/test_runtime.py 2>&1 | tail -30
} 2>&1 | tee "$OUT/gpu_check.txt"
