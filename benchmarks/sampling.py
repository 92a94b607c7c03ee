"""Benchmark of issue 13's sampled generation: eager torch vs the step loop vs the fused sampling forms.

Model (the issue's): Embedding(100, 32) -> nn.GRU(32, 100, 2 layers) -> Linear(100, 100),
``torch.manual_seed(0)``, the readout scaled x4 so the draws are peaked like a trained model's
(as benchmarks/sampling_prototype.py). The step model is exported with the TorchScript exporter
(opset 17, dynamic batch), the fused forms are `export.sampling.sampling_rollouts` of it.
1000 tokens at batch 1 and 64, temperature 0.8 and greedy:

- eager torch (1 intra-op thread): the module's layers one step per call and the pinned draw in
  torch (`export.sampling.torch_draw`), a Python loop
- ORT step loop + numpy: the step model per token, `runtime.sampling.Sampler.draw`
- fused rollout, unroll U, N thr: one run of ``rollout_sample`` / ``rollout_greedy`` (sessions
  built by the runtime's own `_create_session`, intra-op threads N: 1, or 0 = every core)

Best of interleaved rounds after a warm-up; ratios against eager from the same run.

Usage: ``.venv/bin/python benchmarks/sampling.py [--rounds 5] [--unrolls 1,10] [--out FILE]``
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from functools import partial

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.sampling import eager_sample, module_step, partings, sampling_rollouts, torch_draw
from runtime.model import _create_session  # the runtime's own session factory
from runtime.sampling import Sampler

V, E, H, LAYERS = 100, 32, 100, 2
STEPS = 1000
TEMPERATURE = 0.8
OPSET = 17
TARGETS = {("temperature", 1): 10, ("temperature", 64): 3, ("greedy", 1): 10, ("greedy", 64): 3}


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


def export_step(model: CharGRU) -> onnx.ModelProto:
    buffer = io.BytesIO()
    examples = (torch.zeros(3, dtype=torch.int64), torch.zeros(LAYERS, 3, H))
    axes = {"token": {0: "batch"}, "h": {1: "batch"}, "logits": {0: "batch"}, "h_out": {1: "batch"}}
    torch.onnx.export(
        model,
        examples,
        buffer,
        input_names=["token", "h"],
        output_names=["logits", "h_out"],
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


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


def step_loop(session, sampler: Sampler, token0, h0, uniforms) -> np.ndarray:
    token, h = token0, h0
    out = np.empty((STEPS, token0.shape[0]), np.int64)
    for t in range(STEPS):
        logits, h = session.run(None, {"token": token, "h": h})
        token = out[t] = sampler.draw(logits, uniforms[t])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--unrolls", default="1,10")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = make_model()
    step = export_step(model)
    step_session = _create_session(step.SerializeToString(), {}, "step.onnx", "cpu", 1)
    unrolls = [int(u) for u in args.unrolls.split(",")]
    fused = {}
    for unroll in unrolls:
        forms = sampling_rollouts(
            step,
            token_input="token",
            logits_output="logits",
            state_inputs=["h"],
            state_outputs=["h_out"],
            opset=OPSET,
            metadata={},
            unroll=unroll,
        )
        for form, proto in forms.items():
            for threads in (1, 0):
                fused[(form, unroll, threads)] = _create_session(proto.SerializeToString(), {}, form, "cpu", threads)
    lines = [
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (1 thread), onnxruntime "
        f"{ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, Python {platform.python_version()}"
    ]
    lines.append(f"| sampling | batch | implementation | ms / {STEPS} tokens | x eager | target |")
    lines.append("|---|---|---|---|---|---|")
    start = time.perf_counter()
    for label, batch in (("temperature", 1), ("temperature", 64), ("greedy", 1), ("greedy", 64)):
        greedy = label == "greedy"
        rng = np.random.default_rng(batch)
        token0 = rng.integers(0, V, batch)
        h0 = (rng.standard_normal((LAYERS, batch, H)) * 0.1).astype(np.float32)
        sampler = Sampler("greedy") if greedy else Sampler("temperature", temperature=TEMPERATURE, seed=batch)
        uniforms = sampler.uniforms(STEPS, batch)
        feeds = sampler.feeds(V)
        impls = {
            "eager torch (1 thread)": partial(eager, model, token0, h0, None if greedy else uniforms),
            "ORT step loop + numpy": partial(step_loop, step_session, sampler, token0, h0, uniforms),
        }
        form = "rollout_greedy" if greedy else "rollout_sample"
        if greedy:
            feed = {"token0": token0, "h": h0, "steps": np.array([STEPS], np.int64)}
        else:
            feed = {"token0": token0, "h": h0, "uniforms": uniforms, **feeds}
        for unroll in unrolls:
            for threads in (1, 0):
                session = fused[(form, unroll, threads)]
                name = f"fused, unroll {unroll}, {'1 thr' if threads == 1 else 'default thr'}"
                impls[name] = lambda session=session, feed=feed: session.run(["tokens"], feed)[0]
        results = {name: fn() for name, fn in impls.items()}  # warm-up, and the tokens each gives
        reference, _, gaps = eager_sample(
            module_step(model, ["token"], "token", ["logits"], "logits"),
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
        target = TARGETS[(label, batch)]
        for name, seconds in best.items():
            ratio = base / seconds
            found = partings(reference, results[name], gaps)
            mark = "" if name.startswith("eager") else (" met" if ratio >= target else " missed")
            ties = sum(p.tie for p in found)
            tokens = f" ({len(found)} of {batch} streams part from eager, {ties} at a CDF tie)" if found else ""
            lines.append(
                f"| {label} | {batch} | {name}{tokens} | {seconds * 1e3:.2f} | {ratio:.2f}x | >= {target}x{mark} |"
            )
        print("\n".join(lines[-len(best) :]), flush=True)
    lines.append(f"(timing {time.perf_counter() - start:.0f} s, best of {args.rounds} interleaved rounds)")
    text = "\n".join(lines)
    print(lines[-1])
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
