#!/usr/bin/env bash
# The one-GPU check (docs/gpu.md): the environment report, then every test marked `gpu`, with no -x
# (each failure is information). Diagnostics go to the folder given as $1 (default gpu-report/):
#   env.txt        GPU, driver, torch, CUDA, cuDNN, capability, bf16 and TF32 flags
#   <test>.json    what each test saw: dtypes, losses, first divergence index, iterations/s
#   gpu.xml        JUnit results; pytest.txt the full pytest output; bench-gpu.json the bench run
# Usage: scripts/gpu-check.sh [report-dir]     (about 6 minutes on one H200; run it alone)
set -u
cd "$(dirname "$0")/.."
REPORT="${1:-gpu-report}"
mkdir -p "$REPORT"
export CHARRNN_GPU_REPORT="$(cd "$REPORT" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"

{
  echo "== date: $(date -u +%FT%TZ)  host: $(hostname)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  timeout 120 "$PYTHON" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device 0", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    print("bf16 supported (no emulation)", torch.cuda.is_bf16_supported(including_emulation=False))
print("cudnn.allow_tf32", torch.backends.cudnn.allow_tf32, "matmul.allow_tf32", torch.backends.cuda.matmul.allow_tf32)
PY
} 2>&1 | tee "$CHARRNN_GPU_REPORT/env.txt"

timeout 450 "$PYTHON" -m pytest -m gpu -q -rA --durations=20 -p no:cacheprovider \
  --junitxml="$CHARRNN_GPU_REPORT/gpu.xml" tests/test_gpu_device.py 2>&1 | tee "$CHARRNN_GPU_REPORT/pytest.txt"
status=${PIPESTATUS[0]}

if [ -f "$CHARRNN_GPU_REPORT/bench-gpu.json" ]; then
  "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["markdown"])' "$CHARRNN_GPU_REPORT/bench-gpu.json"
fi
echo "== pytest exit status $status; diagnostics in $CHARRNN_GPU_REPORT"
exit "$status"
