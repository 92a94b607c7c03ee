"""The CUDA paths on a real GPU: where onnxruntime places each node, CUDA against the CPU, and speed.

Needs onnxruntime-gpu and a CUDA device (benchmarks/device_check.sh sets that up on a lent GPU
machine). Three parts, each printed as a table and written to ``--out``:

1. Node placement: every form of the classic folder (artifacts/sine-elman) and of issue 13's
   char GRU folder (benchmarks/sampling.py's model: Embedding(100, 32) -> 2-layer GRU(100) ->
   Linear(100)), opened with [CUDA, CPU] providers at onnxruntime's verbose log level; the
   "Node placements" section of that log says which nodes the CUDA provider did not take.
2. Agreement: max abs difference of CUDA against the CPU (classic rollouts and sequences; the
   char GRU's teacher-forced logits) and the share of token streams identical on both (greedy and
   temperature 0.8; tests/runtime/test_cuda.py checks that every GPU token is a valid draw).
3. Speed: ms per call and ratios from one run: the runtime on the CPU (its default form choice),
   the runtime on CUDA (each form), and eager torch on the GPU and on the CPU (1 thread).

Usage: ``python benchmarks/gpu.py --char FOLDER [--rounds 3] [--out FILE]``, where FOLDER was
written by ``python benchmarks/gpu.py --build FOLDER`` (the export and the module's weights, made
with this repository's pinned torch before going to the GPU machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime  # noqa: E402
from export.sampling_reference import torch_draw  # noqa: E402
from runtime import Sampler  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling import SIGNATURE, STEPS, TEMPERATURE, V, make_model  # noqa: E402

CLASSIC = Path(__file__).resolve().parents[1] / "artifacts" / "sine-elman"
WEIGHTS = "module_weights.pt"  # the char GRU's state_dict beside its export (torch.load weights_only)


def build(folder: Path) -> None:
    from export import export_module

    module = make_model()
    export_module(module, folder / "char", **SIGNATURE)
    torch.save(module.state_dict(), folder / WEIGHTS)
    print(f"wrote {folder / 'char'} and {folder / WEIGHTS}")


def placements(path: Path) -> str:
    """The "Node placements" lines onnxruntime logs (verbose) while it opens ``path`` on CUDA."""
    options = ort.SessionOptions()
    options.log_severity_level = 0
    options.log_verbosity_level = 0
    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        text = log.read()
    found = [
        re.sub(r"^.*VerifyEachNodeIsAssignedToAnEp\] ", "", line).strip()
        for line in text.splitlines()
        if "VerifyEachNodeIsAssignedToAnEp]" in line and "Node placements" not in line
    ]  # the main graph's, then each Loop body's
    return "; ".join(found[:16]) if found else "(no placement lines in the log)"


def best_of(fn, rounds: int) -> float:
    fn()  # warm-up (sessions, CUDA kernels, the arena)
    best = float("inf")
    for _ in range(rounds):
        begin = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - begin)
    return best


@torch.no_grad()
def eager_tokens(module, token0: np.ndarray, h0: np.ndarray, uniforms: np.ndarray | None, device: str) -> np.ndarray:
    token, h = torch.from_numpy(token0).to(device), torch.from_numpy(h0).to(device)
    u = None if uniforms is None else torch.from_numpy(uniforms).to(device)
    out = torch.empty(STEPS, token.shape[0], dtype=torch.int64, device=device)
    for t in range(STEPS):
        logits, h = module(token, h)
        token = logits.argmax(1) if u is None else torch_draw(logits, u[t], TEMPERATURE, None, None)[0]
        out[t] = token
    return out.cpu().numpy()  # waits for the GPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, help="write the char GRU folder and weights here and stop")
    parser.add_argument("--char", type=Path, help="a folder written by --build")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.build:
        return build(args.build)
    if args.char is None:
        parser.error("give --char FOLDER (made with --build) or --build FOLDER")
    torch.set_num_threads(1)
    gpu_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no torch CUDA device"
    lines = [
        f"# {gpu_name}; {platform.machine()} {os.cpu_count()} cores; onnxruntime {ort.__version__} "
        f"{ort.get_available_providers()}; torch {torch.__version__}; numpy {np.__version__}; "
        f"Python {platform.python_version()}"
    ]

    def emit(*new: str) -> None:
        lines.extend(new)
        print("\n".join(new), flush=True)

    char_folder = args.char / "char"
    classic_cpu, classic_gpu = runtime.load(CLASSIC), runtime.load(CLASSIC, device="cuda")
    char_cpu, char_gpu = runtime.load(char_folder), runtime.load(char_folder, device="cuda")

    emit("", "## Node placement on [CUDA, CPU] (onnxruntime's verbose log)")
    emit("| folder | form | placement |", "|---|---|---|")
    for name, model in (("sine-elman", classic_gpu), ("char GRU", char_gpu)):
        for form in model.forms:
            emit(f"| {name} | {form} | {placements(model.folder / model.form_file(form))} |")

    emit("", "## CUDA against the CPU", "| model | what | max abs difference / streams identical |", "|---|---|---|")
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (64, 1)).astype(np.float32)
    xs = rng.uniform(-1, 1, (1000, 64, 1)).astype(np.float32)
    want = classic_cpu.generate(x0, 1000, form="step")[0]
    for form in ("step", "rollout_rnn", "rollout_loop"):
        got = classic_gpu.generate(x0, 1000, form=form)[0]
        emit(f"| sine-elman | generate 1000 x batch 64, {form} | {np.abs(got - want).max():.2e} |")
    want = classic_cpu.predict(xs, form="step")[0]
    for form in ("step", "sequence_rnn", "sequence_loop"):
        got = classic_gpu.predict(xs, form=form)[0]
        emit(f"| sine-elman | predict 1000 x batch 64, {form} | {np.abs(got - want).max():.2e} |")
    tokens = rng.integers(0, V, (200, 64))
    diff = np.abs(char_gpu.predict({"token": tokens})[0] - char_cpu.predict({"token": tokens})[0]).max()
    emit(f"| char GRU | teacher-forced logits, 200 x batch 64 | {diff:.2e} |")
    start = {"token": rng.integers(0, V, 64)}
    samplers = (("greedy", lambda: Sampler("greedy")), ("temperature 0.8", lambda: Sampler(temperature=0.8, seed=1)))
    for label, make in samplers:
        for form in (None, "step"):
            a = char_gpu.generate(start, 1000, sampler=make(), form=form)[0]
            b = char_cpu.generate(start, 1000, sampler=make(), form=form)[0]
            same = np.all(a == b, axis=0)
            parted = [int(np.argmax(a[:, s] != b[:, s])) for s in np.flatnonzero(~same)]
            emit(
                f"| char GRU | {label}, 1000 tokens x 64 streams, {form or 'fused'} | {same.mean():.0%} identical"
                + (f"; first partings at steps {sorted(parted)[:8]} |" if parted else " |")
            )

    module = make_model()
    module.load_state_dict(torch.load(args.char / "module_weights.pt", weights_only=True))
    module_gpu = make_model().to("cuda")
    module_gpu.load_state_dict(module.state_dict())
    emit(
        "",
        f"## Speed (best of {args.rounds} after a warm-up; ratios from this run)",
        "| model | call | batch | implementation | ms / call | x runtime CPU |",
        "|---|---|---|---|---|---|",
    )
    for batch in (1, 256, 16384):
        x0 = np.random.default_rng(batch).uniform(-1, 1, (batch, 1)).astype(np.float32)
        impls = {"runtime CPU (default form)": lambda x0=x0: classic_cpu.generate(x0, 1000)}
        for form in ("step", "rollout_rnn", "rollout_loop"):
            impls[f"runtime CUDA, {form}"] = lambda x0=x0, form=form: classic_gpu.generate(x0, 1000, form=form)
        times = {name: best_of(fn, args.rounds) for name, fn in impls.items()}
        base = times["runtime CPU (default form)"]
        for name, seconds in times.items():
            emit(f"| sine-elman | generate 1000 | {batch} | {name} | {seconds * 1e3:.2f} | {base / seconds:.2f}x |")
    for label, greedy in (("temperature 0.8", False), ("greedy", True)):
        for batch in (1, 64, 1024):
            rng = np.random.default_rng(batch)
            token0 = rng.integers(0, V, batch)
            h0 = (rng.standard_normal((2, batch, 100)) * 0.1).astype(np.float32)

            def sampler(greedy=greedy, batch=batch) -> Sampler:
                return Sampler("greedy") if greedy else Sampler(temperature=TEMPERATURE, seed=batch)

            uniforms = None if greedy else sampler().uniforms(STEPS, batch)
            x = {"token": token0}
            impls = {
                "runtime CPU (fused)": lambda x=x, h0=h0, s=sampler: char_cpu.generate(x, STEPS, h0, sampler=s()),
                "runtime CUDA (fused)": lambda x=x, h0=h0, s=sampler: char_gpu.generate(x, STEPS, h0, sampler=s()),
                "runtime CUDA (step loop)": lambda x=x, h0=h0, s=sampler: char_gpu.generate(
                    x, STEPS, h0, sampler=s(), form="step"
                ),
                "eager torch CUDA": lambda t=token0, h0=h0, u=uniforms: eager_tokens(module_gpu, t, h0, u, "cuda"),
            }
            if batch <= 64:
                impls["eager torch CPU (1 thread)"] = lambda t=token0, h0=h0, u=uniforms: eager_tokens(
                    module, t, h0, u, "cpu"
                )
            times = {name: best_of(fn, args.rounds) for name, fn in impls.items()}
            base = times["runtime CPU (fused)"]
            for name, seconds in times.items():
                row = f"| {name} | {seconds * 1e3:.2f} | {base / seconds:.2f}x |"
                emit(f"| char GRU | {label} {STEPS} tokens | {batch} {row}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
