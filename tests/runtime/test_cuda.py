"""The CUDA paths beyond the classic model's (tests/runtime/test_model*.py has those): format 2
folders (token inputs, nn.GRU's (layers, batch, hidden) state, the fused sampling forms), streams,
a batched StreamPool step, GRU/LSTM cell folders and TorchScript on a CUDA device, each against
the same thing on the CPU (benchmarks/device_check.sh runs them on a lent GPU machine). Issue 21's
merged runtime on CUDA: the fused sequence_loop/rollout_loop that export/step_loops.py builds for
any step graph (a two-LSTMCell forecaster, a two-input batch-first module), a format 2 StreamPool,
BoundStep's device buffers, and seeded sampled generation of a token model loaded on "cuda".

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
from runtime.bound import BoundStep

from ..conftest import COMMITTED
from ..export.test_step_loops import FORECASTER, Forecaster, random_inputs
from ..user_modules import CHAR_GRU_SIGNATURE, TWO_INPUTS_SIGNATURE, make_char_gru, make_two_inputs
from .test_bound import inputs_for, state_for

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


# ---- issue 21's merged runtime on CUDA ----------------------------------------------------------

# The fused loops' modules, exported here with fixed seeds: (module, signature, layout, predict atol,
# generate atol) against the CPU's step loop. Two LSTMCells of 8 (the forecaster: x fed back, u held)
# and one LSTMCell of 6 with a held weekday token (batch-first); GPU and CPU round each step's float32
# matmuls in another order (TF32 off), ~1e-7 a step: teacher-forced that stays ~1e-6 over LOOP_STEPS,
# closed-loop it feeds back and grows (the classic Elman's 1000-step rollouts reached 2.3e-4).
LOOP_STEPS = 203  # 20 Loop iterations of UNROLL (10) steps and the remainder Loop's 3
LOOP_MODELS = {
    "forecaster": (Forecaster, FORECASTER, "time_first", 1e-4, 2e-4),
    "two_inputs_batch_first": (make_two_inputs, TWO_INPUTS_SIGNATURE, "batch_first", 1e-4, 2e-4),
}
POOL_ATOL = 1e-4  # 30 teacher-forced char GRU steps, batched or alone, GPU or CPU


@pytest.fixture(scope="module")
def loop_models(tmp_path_factory):
    models = {}
    for name, (make, signature, layout, _, _) in LOOP_MODELS.items():
        torch.manual_seed(0)
        module = make().eval()
        folder = export_module(module, tmp_path_factory.mktemp("cuda-loops") / name, layout=layout, **signature)
        models[name] = runtime.load(folder), runtime.load(folder, device="cuda")
    return models


def assert_states_close(got: tuple, want: tuple, atol: float, what: str) -> None:
    assert len(got) == len(want)
    for index, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, f"{what}: state {index}"
        np.testing.assert_allclose(a, b, atol=atol, rtol=0, err_msg=f"{what}: state {index}")


@needs_cuda
@pytest.mark.parametrize("name", list(LOOP_MODELS))
@pytest.mark.parametrize("batch", [1, 3, 64])  # 64: the loops' LSTM Gemm cells (from 16 rows), 1 and 3 the kernels
def test_fused_step_loops_on_the_gpu_agree_with_the_cpus_step_loop(loop_models, name, batch):
    cpu, gpu = loop_models[name]
    predict_atol, generate_atol = LOOP_MODELS[name][3:]
    assert {"sequence_loop", "rollout_loop"} <= set(gpu.forms)
    rng = np.random.default_rng(batch)
    xs = random_inputs(cpu, batch, LOOP_STEPS, rng)
    state = state_for(cpu, batch, rng)
    want, want_state = cpu.predict(xs, state, form="step")
    assert want.shape[:2] == ((batch, LOOP_STEPS) if cpu.layout == "batch_first" else (LOOP_STEPS, batch))
    for form in ("sequence_loop", "step"):
        got, got_state = gpu.predict(xs, state, form=form)
        np.testing.assert_allclose(got, want, atol=predict_atol, rtol=0, err_msg=f"predict {form}")
        assert_states_close(got_state, want_state, predict_atol, f"predict {form}")
    first = 1 if cpu.layout == "batch_first" else 0
    x0 = {key: np.take(value, 0, axis=first) for key, value in xs.items()}
    want, want_state = cpu.generate(x0, LOOP_STEPS, state, form="step")
    for form in ("rollout_loop", "step"):
        got, got_state = gpu.generate(x0, LOOP_STEPS, state, form=form)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=generate_atol, rtol=0, err_msg=f"generate {form}")
        assert_states_close(got_state, want_state, generate_atol, f"generate {form}")
    for form in ("sequence_loop", "rollout_loop"):
        assert gpu.session(form).get_providers()[0] == "CUDAExecutionProvider", form
    print(f"{name} batch {batch}: generate rollout_loop max |GPU - CPU| {np.abs(got - want).max():.1e}")


@needs_cuda
def test_a_format_2_stream_pool_on_the_gpu_steps_each_row_as_alone_and_as_the_cpu(char):
    # The char GRU: a token and a category in, a (layers, batch, hidden) state whose batch axis is 1,
    # gathered and scattered on the device. Five streams step together (padded to a runner of 8),
    # each also alone in a second GPU pool, and together on the CPU.
    cpu, gpu = char
    together, alone, on_cpu = runtime.StreamPool(gpu), runtime.StreamPool(gpu), runtime.StreamPool(cpu)
    rng = np.random.default_rng(10)
    starts = [(rng.standard_normal((2, 7)) * 0.3).astype(np.float32) for _ in range(5)]
    pools = (together, alone, on_cpu)
    ids = [[pool.open(start) for start in starts] for pool in pools]
    exact = total = 0
    for _ in range(30):
        x = char_inputs(rng, 5)
        batched = together.step(ids[0], x)
        singles = np.concatenate(
            [alone.step([i], {k: v[row : row + 1] for k, v in x.items()}) for row, i in enumerate(ids[1])]
        )
        want = on_cpu.step(ids[2], x)
        assert batched.shape == (5, VOCABULARY)
        np.testing.assert_allclose(batched, singles, atol=POOL_ATOL, rtol=0)
        np.testing.assert_allclose(batched, want, atol=POOL_ATOL, rtol=0)
        exact, total = exact + int(np.sum(batched == singles)), total + batched.size
    pushed = [pool.push(i[0], {"token": 4, "category": np.eye(3, dtype=np.float32)[1]}) for pool, i in zip(pools, ids)]
    np.testing.assert_allclose(pushed[0], pushed[2], atol=POOL_ATOL, rtol=0)
    np.testing.assert_allclose(pushed[1], pushed[2], atol=POOL_ATOL, rtol=0)
    for row in range(5):
        want_state = on_cpu.state(ids[2][row])
        assert want_state[0].shape == (2, 7)
        for pool, pool_ids in ((together, ids[0]), (alone, ids[1])):
            assert_states_close(pool.state(pool_ids[row]), want_state, POOL_ATOL, f"stream {row}")
    print(f"format 2 pool on CUDA: batched logits equal to single-stream ones bit for bit: {exact} of {total}")


@needs_cuda
@pytest.mark.parametrize("name", ["classic", "char", "forecaster", "two_inputs_batch_first"])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_bound_step_with_device_buffers_on_the_gpu_is_the_cpus_step(char, loop_models, name, batch):
    # every signature's buffers: one input, a token and a value, four states, a (layers, batch, hidden) state
    if name == "classic":
        cpu, gpu = runtime.load(COMMITTED), runtime.load(COMMITTED, device="cuda")
    else:
        cpu, gpu = char if name == "char" else loop_models[name]
    runner = BoundStep(gpu, batch, device_buffers=True)
    # white-box: the runner's OrtValue buffers are CUDA memory (the path tests/runtime/test_bound.py
    # runs on the CPU with device_buffers=True)
    buffers = [*runner._in_values, *runner._out_values, *runner._states[0], *runner._states[1]]
    assert {value.device_name().lower() for value in buffers} == {"cuda"}
    rng = np.random.default_rng(batch)
    state = state_for(cpu, batch, rng)
    for _ in range(3):  # the ping-pong of the state buffers
        inputs = inputs_for(cpu, batch, rng)
        want_ys, want_state = cpu.run_checked(inputs, state)
        got_ys, got_state = runner.step(inputs, state)
        for got, want in zip((*got_ys, *got_state), (*want_ys, *want_state)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=STEP_ATOL, rtol=0)
        state = want_state
    capacity = 6  # a pool's state rows, gathered and scattered at each state's batch axis
    rows_state = [rng.uniform(-0.5, 0.5, (capacity, *s.sizes)).astype(np.float32) for s in cpu.states]
    on_cpu = [a.copy() for a in rows_state]
    rows = np.array([5, 0, 2][:batch])
    inputs = inputs_for(cpu, batch, rng)
    got_ys = runner.step_rows(inputs, rows_state, rows)
    want_ys = BoundStep(cpu, batch).step_rows(inputs, on_cpu, rows)
    for got, want in zip((*got_ys, *rows_state), (*want_ys, *on_cpu)):
        np.testing.assert_allclose(got, want, atol=STEP_ATOL, rtol=0)


def draw_margins(logits: np.ndarray, tokens: np.ndarray, settings: dict, uniforms: np.ndarray | None) -> np.ndarray:
    """How far each of ``tokens`` (n,) was from another choice under ``logits`` (n, V): greedy, the
    gap from the best logit to the runner-up; sampled, the draw's distance to the nearest edge of
    the token's CDF interval, as a fraction of the total mass."""
    if uniforms is None:
        top = -np.partition(-logits, 1, axis=1)
        return top[:, 0] - top[:, 1]
    low, high, total = draw_intervals(logits, tokens, settings)
    x_draw = np.clip(uniforms.reshape(-1), 0, np.nextafter(np.float32(1), np.float32(0))) * total
    return np.minimum(x_draw - low, high - x_draw) / total


@needs_cuda
@pytest.mark.parametrize("form", [None, "step"])  # None: the fused rollout_greedy/rollout_sample form
@pytest.mark.parametrize(
    "settings",
    [
        {"strategy": "greedy"},
        {"strategy": "temperature", "temperature": 0.8},
        {"strategy": "top_k", "top_k": 5},
        {"strategy": "top_p", "top_p": 0.9},
    ],
)
def test_seeded_tokens_on_the_gpu_are_the_cpus_until_a_near_tie(char, form, settings):
    # runtime.load(..., device="cuda") of a token model: the same seed gives the CPU's tokens at
    # every step before a stream's first near tie under the CPU's logits (LOGIT_TIE, DRAW_TIE).
    cpu, gpu = char
    assert gpu.device == "cuda" and gpu.providers[0] == "CUDAExecutionProvider"
    x = char_inputs(np.random.default_rng(11), 32)
    got, (got_h,) = gpu.generate(x, 200, sampler=Sampler(seed=33, **settings), form=form)
    want, (want_h,) = cpu.generate(x, 200, sampler=Sampler(seed=33, **settings), form=form)
    assert got.shape == want.shape == (200, 32) and got.dtype == np.int64
    greedy = settings["strategy"] == "greedy"
    uniforms = None if greedy else Sampler(seed=33, **settings).uniforms(200, 32)
    margins = draw_margins(cpu_logits_for(cpu, x, want).reshape(-1, VOCABULARY), want.reshape(-1), settings, uniforms)
    near = margins.reshape(want.shape) <= (LOGIT_TIE if greedy else DRAW_TIE)
    agree_until = np.where(near.any(axis=0), near.argmax(axis=0), len(want))  # each stream's first near tie
    for stream, steps in enumerate(agree_until):
        np.testing.assert_array_equal(got[:steps, stream], want[:steps, stream], err_msg=f"stream {stream}")
    assert agree_until.sum() >= want.size // 2, "near ties in most steps: the comparison would say little"
    same = np.all(got == want, axis=0)
    if same.all():
        np.testing.assert_allclose(got_h, want_h, atol=SEQUENCE_ATOL, rtol=0)
    print(f"{settings} {form or 'fused'}: {same.mean():.0%} of streams identical, {int(near.sum())} near ties")
