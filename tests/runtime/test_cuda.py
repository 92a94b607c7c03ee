"""The CUDA paths beyond the classic model's (tests/runtime/test_model*.py has those): format 2
folders (token inputs, nn.GRU's (layers, batch, hidden) state, the fused sampling forms), streams,
a batched StreamPool step, GRU/LSTM cell folders and TorchScript on a CUDA device, each against
the same thing on the CPU (benchmarks/device_check.sh runs them on a lent GPU machine).

They skip with a reason where onnxruntime has no CUDA provider (the CPU-only onnxruntime that CI
installs) or torch has no CUDA device. A GPU's float32 arithmetic rounds differently from the
CPU's, so tokens may part where two choices are a near tie: a token from the GPU is checked to be
a valid choice under the CPU's logits for the same inputs (the argmax within a tolerance, or the
token whose CDF interval holds the draw within a tolerance), which holds at every step whether or
not the two token streams ever part.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import runtime
import runtime.model
from export import export_module
from export.torchscript import load_torchscript
from runtime import Sampler

from ..conftest import COMMITTED
from ..user_modules import CHAR_GRU_SIGNATURE, make_char_gru

needs_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="CUDAExecutionProvider is not available (CPU-only onnxruntime or no GPU): CUDA paths not run",
)

STEP_ATOL = 1e-5  # one step of the char GRU, GPU against CPU (a few float32 matmuls, summed in another order)
SEQUENCE_ATOL = 1e-4  # 50 teacher-forced steps: rounding grows with the steps
LOGIT_TIE = 1e-4  # a greedy token may differ from the CPU's argmax only where the two logits are this close
DRAW_TIE = 1e-5  # a sampled token's CDF interval must hold the draw within this fraction of the total mass
VOCABULARY = 11


@pytest.fixture(scope="module")
def char(tmp_path_factory):
    folder = export_module(make_char_gru(), tmp_path_factory.mktemp("cuda-char") / "m", **CHAR_GRU_SIGNATURE)
    return runtime.load(folder), runtime.load(folder, device="cuda")


def test_cuda_sessions_ask_for_full_float32_matmuls(monkeypatch):
    # Runs everywhere: what the runtime asks of onnxruntime for device "cuda". TF32 (onnxruntime's
    # default on Ampere and later) put one Elman step 3e-4 from the CPU on an H200 (NOTES.md).
    asked = {}

    class Session:
        def __init__(self, source, sess_options=None, providers=None, **kwargs):
            asked["providers"] = providers

        def get_providers(self):
            return [p if isinstance(p, str) else p[0] for p in asked["providers"]]

    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime.sessions.ort, "get_available_providers", lambda: cuda)
    monkeypatch.setattr(runtime.sessions.ort, "InferenceSession", Session)
    runtime.sessions.create_session(b"", {}, "step.onnx", "cuda", 1)
    assert asked["providers"] == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    runtime.sessions.create_session(b"", {}, "step.onnx", "cpu", 1)
    assert asked["providers"] == ["CPUExecutionProvider"]


def char_inputs(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    category = np.eye(3, dtype=np.float32)[rng.integers(0, 3, batch)]
    return {"token": rng.integers(0, VOCABULARY, batch), "category": category}


def cpu_logits_for(cpu: runtime.GeneralModel, x: dict, tokens: np.ndarray) -> np.ndarray:
    """The CPU's logits (steps, batch, V) at each step of a generation that produced ``tokens``
    (steps, batch): the CPU model teacher-forced with the first token and then the GPU's tokens."""
    fed = np.concatenate([x["token"][None], tokens[:-1]])
    category = np.broadcast_to(x["category"], (len(tokens), *x["category"].shape))
    logits, _ = cpu.predict({"token": fed, "category": np.ascontiguousarray(category)})
    return logits


@needs_cuda
def test_token_models_step_and_predict_on_the_gpu_as_on_the_cpu(char):
    cpu, gpu = char
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.device == "cuda"
    assert gpu.step_session.get_provider_options()["CUDAExecutionProvider"]["use_tf32"] == "0"
    for batch in (1, 3, 64):  # the export example is batch 2: other shapes through the dynamic axes
        rng = np.random.default_rng(batch)
        x = char_inputs(rng, batch)
        h = (rng.standard_normal((2, batch, 7)) * 0.3).astype(np.float32)
        want, want_h = cpu.step(x, (h,))
        got, got_h = gpu.step(x, (h,))
        np.testing.assert_allclose(got, want, atol=STEP_ATOL, rtol=0)
        np.testing.assert_allclose(got_h[0], want_h[0], atol=STEP_ATOL, rtol=0)
        tokens = rng.integers(0, VOCABULARY, (50, batch))
        sequence = {"token": tokens, "category": np.repeat(x["category"][None], 50, axis=0)}
        np.testing.assert_allclose(gpu.predict(sequence)[0], cpu.predict(sequence)[0], atol=SEQUENCE_ATOL, rtol=0)


@needs_cuda
@pytest.mark.parametrize("form", [None, "step"])  # None: the fused rollout_greedy form
def test_greedy_tokens_on_the_gpu_are_argmaxes_of_the_cpus_logits(char, form):
    cpu, gpu = char
    x = char_inputs(np.random.default_rng(3), 16)
    tokens, (h,) = gpu.generate(x, 200, sampler=Sampler("greedy"), form=form)
    assert tokens.shape == (200, 16) and h.shape == (2, 16, 7)
    logits = cpu_logits_for(cpu, x, tokens)
    chosen = np.take_along_axis(logits, tokens[..., None], axis=2)[..., 0]
    shortfall = logits.max(axis=2) - chosen  # 0 where the GPU chose the CPU's argmax
    assert shortfall.max() <= LOGIT_TIE, f"step/stream {np.unravel_index(shortfall.argmax(), shortfall.shape)}"
    same = cpu.generate(x, 200, sampler=Sampler("greedy"), form=form)[0]
    print(f"greedy {form or 'rollout_greedy'}: {np.mean(np.all(same == tokens, axis=0)):.0%} of streams identical")


@needs_cuda
@pytest.mark.parametrize("form", [None, "step"])  # None: the fused rollout_sample form
@pytest.mark.parametrize(
    "settings",
    [
        {"strategy": "temperature", "temperature": 0.8},
        {"strategy": "top_k", "top_k": 5},
        {"strategy": "top_p", "top_p": 0.9},
    ],
)
def test_sampled_tokens_on_the_gpu_are_valid_draws_under_the_cpus_logits(char, form, settings):
    cpu, gpu = char
    x = char_inputs(np.random.default_rng(4), 16)
    sampler = Sampler(seed=21, **settings)
    uniforms = Sampler(seed=21, **settings).uniforms(200, 16)  # the draws the sampler will make
    tokens, _ = gpu.generate(x, 200, sampler=sampler, form=form)
    logits = cpu_logits_for(cpu, x, tokens).reshape(-1, VOCABULARY)
    steps, batch = tokens.shape
    low, high, total = draw_intervals(logits, tokens.reshape(-1), settings)
    x_draw = np.clip(uniforms.reshape(-1), 0, np.nextafter(np.float32(1), np.float32(0))) * total
    outside = np.maximum(low - x_draw, x_draw - high) / total  # > 0 where the draw is outside the token's interval
    assert outside.max() <= DRAW_TIE, f"step/stream {np.unravel_index(outside.argmax(), (steps, batch))}"
    same = cpu.generate(x, 200, sampler=Sampler(seed=21, **settings), form=form)[0]
    print(f"sampled {form or 'rollout_sample'} {settings}: {np.mean(np.all(same == tokens, axis=0)):.0%} identical")


def draw_intervals(logits: np.ndarray, tokens: np.ndarray, settings: dict) -> tuple[np.ndarray, ...]:
    """Each token's CDF interval [low, high) under the pinned draw (runtime.sampling) of ``logits``
    (n, V) with ``settings``, and the CDF's total: a token is drawn where u * total falls in it."""
    z = logits / np.float32(settings.get("temperature", 1.0))
    top_k = settings.get("top_k")
    if top_k is not None:
        z = np.where(z < -np.partition(-z, top_k - 1, axis=1)[:, top_k - 1 : top_k], -np.inf, z)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top_p = settings.get("top_p")
    if top_p is not None:
        ordered = -np.sort(-p, axis=1)
        m = np.minimum(np.count_nonzero(np.cumsum(ordered, axis=1) < top_p, axis=1), p.shape[1] - 1)
        p = np.where(p < np.take_along_axis(ordered, m[:, None], axis=1), 0, p)
    cdf = np.cumsum(p, axis=1)
    rows = np.arange(len(tokens))
    high = cdf[rows, tokens]
    return high - p[rows, tokens], high, cdf[:, -1]


@needs_cuda
def test_a_gpu_token_stream_continues_as_on_the_cpu(char):
    # GeneralStream on CUDA: pushes one token at a time and keeps its state between pushes.
    cpu, gpu = char
    x = char_inputs(np.random.default_rng(5), 1)
    on_gpu, on_cpu = runtime.Stream(gpu), runtime.Stream(cpu)
    for t in range(30):
        step = {"token": t % VOCABULARY, "category": x["category"][0]}
        np.testing.assert_allclose(on_gpu.push(step), on_cpu.push(step), atol=SEQUENCE_ATOL, rtol=0)


@needs_cuda
def test_a_classic_stream_pool_on_the_gpu_agrees_with_the_cpu():
    from export.verify import ROLLOUT_ATOL

    rng = np.random.default_rng(6)
    pools = [runtime.StreamPool(runtime.load(COMMITTED, device=d)) for d in ("cpu", "cuda")]
    ids = [[pool.open() for _ in range(5)] for pool in pools]
    for _ in range(40):
        for stream in range(5):
            x = rng.uniform(-1, 1, (1,)).astype(np.float32)
            ys = [pool.push(i[stream], x) for pool, i in zip(pools, ids)]
            np.testing.assert_allclose(ys[1], ys[0], atol=ROLLOUT_ATOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="this torch has no CUDA device: TorchScript on CUDA not run")
def test_the_torchscript_step_runs_on_the_gpu_as_on_the_cpu():
    from export.verify import ROLLOUT_ATOL

    scripted = load_torchscript(COMMITTED / "step.torchscript.pt")
    gpu = load_torchscript(COMMITTED / "step.torchscript.pt").to("cuda")
    x = torch.from_numpy(np.random.default_rng(7).uniform(-1, 1, (64, 1)).astype(np.float32))
    h_cpu, h_gpu = torch.zeros(64, 6), torch.zeros(64, 6, device="cuda")
    x_cpu, x_gpu = x, x.to("cuda")
    with torch.no_grad():
        for _ in range(200):  # the closed loop: each output is the next input
            x_cpu, h_cpu = scripted(x_cpu, h_cpu)
            x_gpu, h_gpu = gpu(x_gpu, h_gpu)
    assert x_gpu.device.type == "cuda"
    np.testing.assert_allclose(x_gpu.cpu().numpy(), x_cpu.numpy(), atol=ROLLOUT_ATOL, rtol=0)


@needs_cuda
def test_gru_and_lstm_cell_folders_run_every_form_on_the_gpu_as_on_the_cpu(cell_folder):
    from export.verify import ROLLOUT_ATOL, SEQUENCE_ATOL

    _, _, folder = cell_folder
    cpu, gpu = runtime.load(folder), runtime.load(folder, device="cuda")
    for batch in (1, 64):
        rng = np.random.default_rng(batch)
        x0 = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
        xs = rng.uniform(-1, 1, (100, batch, 1)).astype(np.float32)
        want = cpu.generate(x0, 100, form="step")[0]
        for form in [f for f in gpu.forms if f == "step" or f.startswith("rollout")]:
            np.testing.assert_allclose(gpu.generate(x0, 100, form=form)[0], want, atol=2 * ROLLOUT_ATOL, err_msg=form)
        want = cpu.predict(xs, form="step")[0]
        for form in [f for f in gpu.forms if f == "step" or f.startswith("sequence")]:
            np.testing.assert_allclose(gpu.predict(xs, form=form)[0], want, atol=2 * SEQUENCE_ATOL, err_msg=form)


@needs_cuda
def test_a_batched_step_of_a_gpu_stream_pool_is_what_each_stream_gets_alone():
    # The server batches the steps of many sequences into one StreamPool.step. On the CPU that is
    # bit for bit each stream's own step; on CUDA cuBLAS may pick other kernels for other batch
    # sizes, so here it is checked within the step tolerance, and how many values match exactly
    # is printed (NOTES.md records it).
    from export.verify import STEP_ATOL

    model = runtime.load(COMMITTED, device="cuda")
    together, alone = runtime.StreamPool(model), runtime.StreamPool(model)
    ids = [together.open() for _ in range(64)]
    own = [alone.open() for _ in range(64)]
    rng = np.random.default_rng(8)
    exact = total = 0
    for _ in range(20):
        xs = rng.uniform(-1, 1, (64, 1)).astype(np.float32)
        batched = together.step(ids, xs)
        singles = np.concatenate([alone.step([i], xs[k : k + 1]) for k, i in enumerate(own)])
        np.testing.assert_allclose(batched, singles, atol=STEP_ATOL, rtol=0)
        exact, total = exact + int(np.sum(batched == singles)), total + batched.size
    print(f"batched CUDA steps equal to single-stream steps bit for bit: {exact} of {total} values")
