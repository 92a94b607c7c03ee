#!/usr/bin/env bash
# The CUDA checks, run on a lent GPU machine (the device tool) from the repository root:
#   bash benchmarks/device_check.sh
# That machine has torch with CUDA but a CPU-only onnxruntime and no network, so onnxruntime-gpu
# travels in two pieces made here by benchmarks/pack_ort_gpu.py (its docstring has the calls):
# .gpua/cuda_sm90.so.xz (the CUDA provider library, machine code of GPUs other than sm_90 zeroed so
# that it compresses under the 64 MiB a call may carry; a first call copies it to /tmp there) and
# .gpub/ortrest.tar.xz (the rest of the package). .gpu/bench is `python benchmarks/gpu.py --build .gpu/bench`.
# Writes pytest.txt, gpu-bench.txt and torch-free.txt under $OUT.
set -u
OUT=${OUT:-/tmp/device-out}
SITE=/tmp/ort-gpu-site
mkdir -p "$OUT" "$SITE"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

python3 - "$SITE" <<'EOF' || exit 1
import lzma, shutil, sys, tarfile
site = sys.argv[1]
with tarfile.open(".gpub/ortrest.tar.xz") as archive:
    archive.extractall(site)
with lzma.open(".gpua/cuda_sm90.so.xz") as packed, open(f"{site}/onnxruntime/capi/libonnxruntime_providers_cuda.so", "wb") as out:
    shutil.copyfileobj(packed, out)
EOF
export PYTHONPATH="$SITE:$PWD"
nvidia-smi -L
python3 -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers(), '| torch', torch.__version__, torch.cuda.is_available())"

# 1. The runtime alone (no torch imported): does device="cuda" find CUDA's libraries by itself?
{
  echo "## runtime.load(device='cuda') in a process without torch"
  timeout 60 python3 -c "
import sys, runtime, numpy as np
try:
    m = runtime.load('artifacts/sine-elman', device='cuda')
    print('loaded:', m.providers, 'torch imported:', 'torch' in sys.modules)
    print('generate:', m.generate(np.zeros((2, 1), np.float32), 5)[0][:, 0, 0])
except Exception as e:
    print('ERROR', type(e).__name__, e)
"
  echo "## the CLI: rnn generate --device cuda"
  timeout 60 python3 -c "import sys; from toolkit.cli import main; sys.argv = ['rnn', 'generate', 'artifacts/sine-elman', '--device', 'cuda', '--steps', '5']; main()"
  echo "exit code $?"
} 2>&1 | tee "$OUT/torch-free.txt"

# 2. The CUDA tests (they skip without a CUDA provider; here they must run).
timeout 300 python3 -m pytest -q -p no:cacheprovider -rs -s tests/runtime/test_cuda.py \
  tests/runtime/test_model.py::test_cuda_runs_on_the_gpu_and_agrees_with_the_cpu \
  tests/runtime/test_model_fused_forms.py::test_cuda_step_loop_and_fused_forms_agree_with_the_cpu 2>&1 | tee "$OUT/pytest.txt"

# 3. Placement, agreement and speed.
timeout 240 python3 benchmarks/gpu.py --char .gpu/bench --out "$OUT/gpu-bench.txt" 2>&1 | tail -90
