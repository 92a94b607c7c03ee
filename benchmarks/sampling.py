"""Benchmark of issue 13's sampled generation through the product path: eager torch vs the runtime.

Model (the issue's): Embedding(100, 32) -> nn.GRU(32, 100, 2 layers) -> Linear(100, 100),
``torch.manual_seed(0)``, the readout scaled x4 so the draws are peaked like a trained model's
(as benchmarks/sampling_prototype.py). The folder is made by ``export.export_module`` (TorchScript
exporter; it writes step.onnx and the fused ``rollout_greedy`` / ``rollout_sample`` forms) and run
by ``runtime.load(folder).generate(x0, 1000, state, sampler=Sampler(...))``. 1000 tokens at
batch 1 and 64, temperature 0.8 and greedy:

- eager torch (1 intra-op thread): the module one step per call and the pinned draw in torch
  (`export.sampling_reference.torch_draw`), a Python loop
- runtime step loop: ``generate(..., form="step")`` (step.onnx per token, `Sampler.draw` in numpy)
- runtime fused: ``generate(...)`` (the fused sampling form), loaded with ``workers`` 1 or 2
  (2: a batch of `runtime.fused.SAMPLING_PARALLEL_MIN_BATCH` or more is split into two parts of
  rows run at once) and ``threads`` 1 (the default) or 0 (onnxruntime's intra-op pool on every core)
- fused, CPU arena on: the runtime's sampling sessions as they were built before (onnxruntime's
  CPU memory arena on), for the before/after of that choice

Best of interleaved rounds after a warm-up; ratios against eager from the same run. Every
implementation's tokens are compared with `export.sampling_reference.eager_sample`'s for the same uniforms.

Usage: ``.venv/bin/python benchmarks/sampling.py [--rounds 5] [--batches 1,64] [--out FILE]``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import runtime
from export import export_module
from export.sampling_reference import eager_sample, module_step, partings, torch_draw
from runtime import Sampler
from runtime.fused import SAMPLING_FORMS, SAMPLING_PARALLEL_MIN_BATCH
from runtime.sessions import create_session, model_source  # the runtime's own session factory

V, E, H, LAYERS = 100, 32, 100, 2
STEPS = 1000
TEMPERATURE = 0.8
TARGETS = {("temperature", 1): 10, ("temperature", 64): 3, ("greedy", 1): 10, ("greedy", 64): 3}
SIGNATURE = {
    "inputs": [{"name": "token", "vocabulary": V}],
    "outputs": [{"name": "logits", "vocabulary": V}],
    "states": [{"name": "h", "shape": [LAYERS, "batch", H]}],
}


class CharGRU(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(V, E)
        self.gru = torch.nn.GRU(E, H, LAYERS)
        self.linear = torch.nn.Linear(H, V)

    def forward(self, token: torch.Tensor, h: torch.Tensor):
        ys, h_next = self.gru(self.embedding(token).unsqueeze(0), h)  # (1, batch, H), (layers, batch, H)
        return self.linear(ys[0]), h_next


def make_model() -> CharGRU:
    torch.manual_seed(0)
    model = CharGRU().eval()
    with torch.no_grad():
        model.linear.weight.mul_(4.0)
        model.linear.bias.mul_(4.0)
    return model


@torch.no_grad()
def eager(model: CharGRU, token0: np.ndarray, h0: np.ndarray, uniforms: np.ndarray | None) -> np.ndarray:
    token, h = torch.from_numpy(token0), torch.from_numpy(h0)
    u = None if uniforms is None else torch.from_numpy(uniforms)
    out = torch.empty(STEPS, token.shape[0], dtype=torch.int64)
    for t in range(STEPS):
        logits, h = model(token, h)
        token = logits.argmax(1) if u is None else torch_draw(logits, u[t], TEMPERATURE, None, None)[0]
        out[t] = token
    return out.numpy()


def with_arena(model: runtime.Model) -> runtime.Model:
    """The model with its sampling sessions built as before (CPU arena on); benchmark-only."""
    for form in SAMPLING_FORMS:
        entry = model.manifest.file(form)
        source, external = model_source(model.folder, model.manifest, entry)
        model._sessions[form] = create_session(source, external, entry.name, model.device, model.threads, arena=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = make_model()
    scratch = tempfile.TemporaryDirectory(prefix="sampling-bench-")
    folder = export_module(module, Path(scratch.name) / "char", **SIGNATURE)
    models = {
        "fused, workers 1": runtime.load(folder, workers=1),
        "fused, workers 2": runtime.load(folder, workers=2),
        "fused, workers 1, threads 0": runtime.load(folder, workers=1, threads=0),
        "fused, workers 1, CPU arena on": with_arena(runtime.load(folder, workers=1)),
    }
    lines = [
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (1 thread), onnxruntime "
        f"{ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    ]
    lines.append(f"| sampling | batch | implementation | ms / {STEPS} tokens | x eager | target |")
    lines.append("|---|---|---|---|---|---|")
    start = time.perf_counter()
    batches = [int(b) for b in args.batches.split(",")]
    for label in ("temperature", "greedy"):
        for batch in batches:
            greedy = label == "greedy"
            rng = np.random.default_rng(batch)
            token0 = rng.integers(0, V, batch)
            h0 = (rng.standard_normal((LAYERS, batch, H)) * 0.1).astype(np.float32)

            def sampler(greedy=greedy, batch=batch) -> Sampler:
                return Sampler("greedy") if greedy else Sampler("temperature", temperature=TEMPERATURE, seed=batch)

            uniforms = sampler().uniforms(STEPS, batch)
            x0 = {"token": token0}
            plain = models["fused, workers 1"]
            impls = {
                "eager torch (1 thread)": partial(eager, module, token0, h0, None if greedy else uniforms),
                "runtime step loop": lambda plain=plain, x0=x0, h0=h0, s=sampler: plain.generate(
                    x0, STEPS, h0, sampler=s(), form="step"
                )[0],
            }
            for name, model in models.items():
                if name == "fused, workers 2" and batch < SAMPLING_PARALLEL_MIN_BATCH:
                    continue  # the same run as workers 1
                impls[name] = lambda model=model, x0=x0, h0=h0, s=sampler: model.generate(x0, STEPS, h0, sampler=s())[0]
            results = {name: fn() for name, fn in impls.items()}  # warm-up, and the tokens each gives
            reference, _, gaps = eager_sample(
                module_step(module, ["token"], "token", ["logits"], "logits"),
                token0,
                {},
                (h0,),
                None if greedy else uniforms,
                TEMPERATURE,
                greedy=greedy,
                steps=STEPS,
            )
            assert np.array_equal(reference, results["eager torch (1 thread)"])
            best = {name: float("inf") for name in impls}
            for _ in range(args.rounds):
                for name, fn in impls.items():
                    begin = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - begin)
            base = best["eager torch (1 thread)"]
            target = TARGETS.get((label, batch))
            for name, seconds in best.items():
                ratio = base / seconds
                found = partings(reference, results[name], gaps)
                mark = "" if name.startswith("eager") or target is None else (" met" if ratio >= target else " missed")
                ties = sum(p.tie for p in found)
                tokens = f" ({len(found)} of {batch} streams part from eager, {ties} at a CDF tie)" if found else ""
                wanted = "-" if target is None else f">= {target}x"
                lines.append(
                    f"| {label} | {batch} | {name}{tokens} | {seconds * 1e3:.2f} | {ratio:.2f}x | {wanted}{mark} |"
                )
            print("\n".join(lines[-len(best) :]), flush=True)
    lines.append(
        f"(timing {time.perf_counter() - start:.0f} s, best of {args.rounds} interleaved rounds; "
        f"load average {os.getloadavg()[0]:.2f} at the end)"
    )
    text = "\n".join(lines)
    print(lines[-1])
    scratch.cleanup()
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
