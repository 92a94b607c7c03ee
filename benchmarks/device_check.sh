#!/usr/bin/env bash
# The CUDA checks, run on a lent GPU machine (the device tool) from the repository root, in ONE call:
#   bash benchmarks/device_check.sh            (carry: .gpua .gpub; see benchmarks/pack_ort_gpu.py)
# That machine has torch with CUDA but a CPU-only onnxruntime and no network, so onnxruntime-gpu
# travels in two pieces made here by benchmarks/pack_ort_gpu.py (its docstring has the calls):
# .gpua/cuda_sm90.so.xz (the CUDA provider library, machine code of GPUs other than sm_90 zeroed so
# that it compresses) and .gpub/ortrest.tar.xz (the rest of the package). If .gpua did not travel
# with this call, /tmp/gpua/ (copied there by an earlier call on the same warm machine) is used.
# .gpu/bench (`python benchmarks/gpu.py --build .gpu/bench`) is built here on the machine when absent.
#
# Steps, each under its own timeout; a failed step is recorded and the next one runs:
#   1 unpack onnxruntime-gpu   2 build the char GRU bench folder   3 the runtime without torch on
#   CUDA (classic and format 2 folders, the CLI)   4 the CUDA tests   5 benchmarks/gpu.py if the time
#   left allows. The whole run aims at ~6 minutes (BUDGET_S). Writes under $OUT: device-check.log
#   (everything), summary.txt, torch-free.txt, pytest.txt, junit.xml, gpu-bench.txt.
set -u
OUT=${OUT:-/tmp/device-out}
SITE=/tmp/ort-gpu-site
BENCH=.gpu/bench
BUDGET_S=${BUDGET_S:-360}
mkdir -p "$OUT" "$SITE"
exec > >(tee "$OUT/device-check.log") 2>&1
TEE=$!
export OUT SITE BENCH PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH="$SITE:$PWD"
BEGIN=$SECONDS
SUMMARY=()

step() {  # step NAME TIMEOUT_S COMMAND...: runs it (a command or a function below) under timeout
  local name=$1 limit=$2 began=$SECONDS rc
  shift 2
  echo "=== $name (timeout ${limit}s, at +$((SECONDS - BEGIN))s)"
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@"
  rc=$?
  local verdict=ok
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && verdict="TIMED OUT"
  [ "$rc" -ne 0 ] && [ "$verdict" = ok ] && verdict="FAILED (exit $rc)"
  SUMMARY+=("$(printf '%-28s %-18s %4ds' "$name" "$verdict" $((SECONDS - began)))")
  return "$rc"
}

unpack() {
  local packed=.gpua/cuda_sm90.so.xz
  [ -f "$packed" ] || packed=/tmp/gpua/cuda_sm90.so.xz
  python3 - "$SITE" "$packed" <<'EOF'
import lzma, shutil, sys, tarfile
site, packed = sys.argv[1:]
with tarfile.open(".gpub/ortrest.tar.xz") as archive:
    archive.extractall(site)
with lzma.open(packed) as source, open(f"{site}/onnxruntime/capi/libonnxruntime_providers_cuda.so", "wb") as out:
    shutil.copyfileobj(source, out)
EOF
}

torch_free() {
  local folder=$BENCH/char
  (
    echo "## runtime.load(device='cuda') in a process without torch: classic and format 2 (char GRU) folders"
    python3 - "$folder" <<'EOF'
import sys
import numpy as np
import runtime
for name, path in (("sine-elman", "artifacts/sine-elman"), ("char GRU", sys.argv[1])):
    try:
        m = runtime.load(path, device="cuda")
        print(name, "loaded:", m.providers, "| torch imported:", "torch" in sys.modules)
        if m.sampled_runs is None:
            print("  generate:", m.generate(np.full((2, 1), 0.5, np.float32), 5)[0][:, 0, 0])
        else:
            tokens, _ = m.generate({"token": np.array([1, 2])}, 12, sampler=runtime.Sampler(temperature=0.8, seed=1))
            cpu, _ = runtime.load(path).generate({"token": np.array([1, 2])}, 12, sampler=runtime.Sampler(temperature=0.8, seed=1))
            print("  sampled tokens:", tokens.T.tolist(), "| the CPU's:", cpu.T.tolist())
    except Exception as e:
        print("  ERROR", type(e).__name__, e)
        sys.exit(1)
assert "torch" not in sys.modules, "torch was imported"
EOF
    local rc=$?
    echo "## the CLI: rnn generate --device cuda"
    python3 -c "import sys; from toolkit.cli import main; sys.argv = ['rnn', 'generate', 'artifacts/sine-elman', '--device', 'cuda', '--steps', '5']; main()"
    echo "exit code $?"
    exit "$rc"
  ) 2>&1 | tee "$OUT/torch-free.txt"
  return "${PIPESTATUS[0]}"
}

cuda_tests() {
  local timeout_option=()
  python3 -c "import pytest_timeout" 2>/dev/null && timeout_option=(--timeout=120)
  python3 -m pytest -q -p no:cacheprovider -rs -s "${timeout_option[@]}" --junitxml="$OUT/junit.xml" \
    tests/runtime/test_cuda.py \
    tests/runtime/test_model.py::test_cuda_runs_on_the_gpu_and_agrees_with_the_cpu \
    tests/runtime/test_model_fused_forms.py::test_cuda_step_loop_and_fused_forms_agree_with_the_cpu 2>&1 | tee "$OUT/pytest.txt"
  return "${PIPESTATUS[0]}"
}

export -f unpack torch_free cuda_tests
step unpack 60 unpack
nvidia-smi -L
PROVIDERS=$(python3 -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers(), '| torch', torch.__version__, 'CUDA', torch.cuda.is_available())" 2>&1 | tail -1)
echo "$PROVIDERS"
[ -f "$BENCH/module_weights.pt" ] || step "build $BENCH" 120 python3 benchmarks/gpu.py --build "$BENCH"
step "torch-free CUDA load" 60 torch_free
step "CUDA tests" 240 cuda_tests
left=$((BUDGET_S - (SECONDS - BEGIN)))
if [ "$left" -ge 60 ]; then
  step "benchmarks/gpu.py" "$left" python3 benchmarks/gpu.py --char "$BENCH" --rounds 2 --out "$OUT/gpu-bench.txt"
else
  SUMMARY+=("$(printf '%-28s %-18s' benchmarks/gpu.py "not run (${left}s left)")")
fi

{
  echo "=== summary (total $((SECONDS - BEGIN))s): $PROVIDERS"
  printf '%s\n' "${SUMMARY[@]}"
  grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed)" "$OUT/pytest.txt" 2>/dev/null | tail -30
} | tee "$OUT/summary.txt"
exec >&- 2>&-
wait "$TEE"
