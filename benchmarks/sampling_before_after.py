"""Before/after of the fused sampling rollouts' builder: the same step graph wrapped by today's
`export.sampling` and by the code in another checkout (``--base``, e.g. a git worktree of main
before a change), both run by bare onnxruntime sessions (1 thread, interleaved rounds).

Models: benchmarks/sampling.py's char GRU (Embedding -> 2-layer nn.GRU(100) -> Linear, V=100) and a
word LSTM (Embedding(200, 32) -> 2-layer nn.LSTM(64) -> Linear); 1000 tokens, greedy and temperature
0.8, batch 1 and 64. The tokens and final states of both builds must be identical.

Usage: ``.venv/bin/python benchmarks/sampling_before_after.py --base /tmp/base [--rounds 5]``
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.sampling import sampling_rollouts
from runtime.fused import SAMPLING_FORMS

STEPS = 1000
OPSET = 17
BUILD = """
import sys, onnx
from export.sampling import sampling_rollouts
step = onnx.load(sys.argv[1])
count = int(sys.argv[3])
forms = sampling_rollouts(step, token_input="token", logits_output="logits", state_inputs=["h", "c"][:count],
    state_outputs=["h_out", "c_out"][:count], opset=17, metadata={})
for form, model in forms.items():
    onnx.save(model, f"{sys.argv[2]}/{form}.onnx")
"""


class CharGRU(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.gru, self.linear = (
            torch.nn.Embedding(100, 32),
            torch.nn.GRU(32, 100, 2),
            torch.nn.Linear(100, 100),
        )

    def forward(self, token, h):
        ys, h_next = self.gru(self.embedding(token).unsqueeze(0), h)
        return self.linear(ys[0]) * 4.0, h_next


class WordLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.lstm, self.linear = (
            torch.nn.Embedding(200, 32),
            torch.nn.LSTM(32, 64, 2),
            torch.nn.Linear(64, 200),
        )

    def forward(self, token, h, c):
        ys, (h_next, c_next) = self.lstm(self.embedding(token).unsqueeze(0), (h, c))
        return self.linear(ys[0]) * 4.0, h_next, c_next


def step_file(module: torch.nn.Module, states: list[tuple[int, int]], path: Path) -> Path:
    names = ["h", "c"][: len(states)]
    examples = (torch.zeros(3, dtype=torch.int64), *(torch.zeros(layers, 3, size) for layers, size in states))
    axes = {"token": {0: "batch"}, "logits": {0: "batch"}}
    axes.update({name: {1: "batch"} for name in (*names, *(f"{n}_out" for n in names))})
    buffer = io.BytesIO()
    torch.onnx.export(
        module, examples, buffer, input_names=["token", *names], output_names=["logits", *(f"{n}_out" for n in names)],
        dynamic_axes=axes, opset_version=OPSET, dynamo=False,
    )  # fmt: skip
    path.write_bytes(buffer.getvalue())
    return path


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # as the runtime opens the sampling forms
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds(form: str, states: list[tuple[int, int]], batch: int, vocabulary: int) -> dict:
    rng = np.random.default_rng(batch)
    values = {"token0": rng.integers(0, vocabulary, batch)}
    for name, (layers, size) in zip(("h", "c"), states):
        values[name] = (rng.standard_normal((layers, batch, size)) * 0.1).astype(np.float32)
    if form == "rollout_greedy":
        values["steps"] = np.array([STEPS], np.int64)
    else:
        values["uniforms"] = rng.random((STEPS, batch), dtype=np.float32)
        values.update(temperature=np.array([0.8], np.float32), top_k=np.array([vocabulary], np.int64))
        values["top_p"] = np.ones(1, np.float32)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    scratch = Path(tempfile.mkdtemp(prefix="sampling-before-after-"))
    print(f"# {os.cpu_count()} cores, onnxruntime {ort.__version__}, load average {os.getloadavg()[0]:.2f}")
    print("| model | form | batch | before ms | after ms | after / before | same tokens and states |")
    print("|---|---|---|---|---|---|---|")
    for label, module, states, vocabulary in (
        ("char GRU", CharGRU().eval(), [(2, 100)], 100),
        ("word LSTM", WordLSTM().eval(), [(2, 64), (2, 64)], 200),
    ):
        step = step_file(module, states, scratch / f"{label.replace(' ', '_')}.onnx")
        before, after = scratch / f"{step.stem}_before", scratch / f"{step.stem}_after"
        before.mkdir()
        after.mkdir()
        env = {**os.environ, "PYTHONPATH": args.base}
        subprocess.run(
            [sys.executable, "-c", BUILD, str(step), str(before), str(len(states))], check=True, env=env, cwd=args.base
        )
        names = ["h", "c"][: len(states)]
        forms = sampling_rollouts(
            onnx.load(str(step)), token_input="token", logits_output="logits", state_inputs=names,
            state_outputs=[f"{n}_out" for n in names], opset=OPSET, metadata={},
        )  # fmt: skip
        for form, model in forms.items():
            onnx.save(model, str(after / f"{form}.onnx"))
        for form in SAMPLING_FORMS:
            for batch in (1, 64):
                runs = {
                    side: session(folder / f"{form}.onnx") for side, folder in (("before", before), ("after", after))
                }
                values = feeds(form, states, batch, vocabulary)
                outputs = {side: s.run(None, values) for side, s in runs.items()}
                same = all(np.array_equal(a, b) for a, b in zip(outputs["before"], outputs["after"]))
                best = {side: float("inf") for side in runs}
                for _ in range(args.rounds):
                    for side, s in runs.items():
                        begin = time.perf_counter()
                        s.run(None, values)
                        best[side] = min(best[side], time.perf_counter() - begin)
                ratio = best["after"] / best["before"]
                print(
                    f"| {label} | {form} | {batch} | {best['before'] * 1e3:.2f} | {best['after'] * 1e3:.2f} "
                    f"| {ratio:.3f} | {same} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
