"""export.sampling: the fused sampling rollouts around exported step graphs, against the step loop
with the runtime's Sampler and against eager torch with the same uniforms; the draw itself in
numpy, ONNX and torch on logits with ties."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from export.onnx_graph import IR_VERSION
from export.sampling import sampling_rollouts
from export.sampling_reference import (
    TIE_ULPS,
    _gaps_ulps,
    eager_sample,
    first_parting,
    module_step,
    partings,
    torch_draw,
)
from runtime.errors import ExportError
from runtime.sampling import Sampler

from ..user_modules import make_char_gru

OPSET = 17
STATE_ATOL = 1e-5  # final states after tens of steps: the same kernels in the loop and the step model
STRATEGIES = [
    Sampler("greedy"),
    Sampler("temperature", temperature=0.8, seed=1),
    Sampler("top_k", temperature=0.9, top_k=3, seed=2),
    Sampler("top_p", temperature=1.2, top_p=0.6, seed=3),
]


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def rollouts(step: onnx.ModelProto, unroll: int | None = None, metadata: dict | None = None) -> dict:
    """The sampling forms of a step graph with inputs (token, [...], h) and outputs (logits, h_out)."""
    extra = {} if unroll is None else {"unroll": unroll}
    return sampling_rollouts(
        step,
        token_input="token",
        logits_output="logits",
        state_inputs=["h"],
        state_outputs=["h_out"],
        opset=OPSET,
        metadata=metadata or {},
        **extra,
    )


def assert_the_step_loops_tokens(forms, step, token0, h, steps: int, vocabulary: int) -> None:
    """The fused forms give the step loop's tokens (greedy and temperature) and, near enough, its state."""
    for sampler in STRATEGIES[:2]:
        uniforms = sampler.uniforms(steps, len(token0))
        tokens, h_out = fused(forms, sampler, token0, {}, h, uniforms, vocabulary)
        want, want_h = step_loop(session(step), sampler, token0, {}, h, uniforms)
        np.testing.assert_array_equal(tokens, want)
        np.testing.assert_allclose(h_out, want_h, atol=STATE_ATOL)


def export(module, examples, input_names, output_names, axes) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        examples,
        buffer,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


class TinyChar(nn.Module):
    """Embedding + 2-layer nn.GRU (state (2, batch, H)) + Linear: forward(token, h) -> (logits, h)."""

    def __init__(self, vocabulary: int = 13, embed: int = 4, hidden: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, embed)
        self.gru = nn.GRU(embed, hidden, num_layers=2)
        self.out = nn.Linear(hidden, vocabulary)

    def forward(self, token: torch.Tensor, h: torch.Tensor):
        ys, h_next = self.gru(self.embed(token).unsqueeze(0), h)
        return self.out(ys[0]) * 3.0, h_next


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    module = TinyChar().eval()
    axes = {"token": {0: "batch"}, "h": {1: "batch"}, "logits": {0: "batch"}, "h_out": {1: "batch"}}
    step = export(
        module, (torch.zeros(3, dtype=torch.int64), torch.zeros(2, 3, 6)), ["token", "h"], ["logits", "h_out"], axes
    )
    forms = rollouts(step, unroll=4, metadata={"model": "tiny"})
    return module, step, forms


@pytest.fixture(scope="module")
def char():
    """The user's character model: a second, held float input ``category``."""
    module = make_char_gru().eval()
    names = ["token", "category", "h", "logits", "h_out"]
    axes = {name: {1 if name.startswith("h") else 0: "batch"} for name in names}
    examples = (torch.zeros(3, dtype=torch.int64), torch.zeros(3, 3), torch.zeros(2, 3, 7))
    step = export(module, examples, names[:3], names[3:], axes)
    forms = rollouts(step)
    return module, step, forms


def step_loop(step: ort.InferenceSession, sampler: Sampler, token0, others: dict, h, uniforms):
    """The reference: the step model per token, the next token drawn by the runtime's Sampler."""
    tokens, token = [], token0
    for u in uniforms:
        logits, h = step.run(None, {"token": token, **others, "h": h})
        token = sampler.draw(logits, u)
        tokens.append(token)
    return np.array(tokens), h


def fused(forms, sampler: Sampler, token0, others: dict, h, uniforms, vocabulary: int):
    if sampler.greedy:
        feed = {"token0": token0, **others, "h": h, "steps": np.array([len(uniforms)], np.int64)}
        return session(forms["rollout_greedy"]).run(None, feed)
    feed = {"token0": token0, **others, "h": h, "uniforms": uniforms, **sampler.feeds(vocabulary)}
    return session(forms["rollout_sample"]).run(None, feed)


def check_against_eager(module, input_names, token0, others, h, sampler, uniforms, tokens, h_out):
    want, (want_h,), gaps = eager_sample(
        module_step(module, input_names, "token", ["logits"], "logits"),
        token0,
        others,
        (h,),
        None if sampler.greedy else uniforms,
        sampler.temperature,
        sampler.top_k,
        sampler.top_p,
        sampler.greedy,
        steps=len(uniforms),
    )
    parting = first_parting(want, tokens, gaps)
    assert parting is None or parting.tie, parting.describe()
    if parting is None:
        np.testing.assert_allclose(h_out, want_h, atol=STATE_ATOL)


@pytest.mark.parametrize("sampler", STRATEGIES, ids=lambda s: s.strategy)
@pytest.mark.parametrize(("batch", "steps"), [(1, 1), (1, 23), (5, 9), (64, 14)])
def test_the_fused_forms_give_the_step_loops_tokens_and_eagers(tiny, sampler, batch, steps):
    module, step, forms = tiny
    rng = np.random.default_rng(batch * 100 + steps)
    token0 = rng.integers(0, 13, batch)
    h = (rng.standard_normal((2, batch, 6)) * 0.5).astype(np.float32)
    uniforms = sampler.uniforms(steps, batch)
    tokens, h_out = fused(forms, sampler, token0, {}, h, uniforms, 13)
    assert tokens.dtype == np.int64 and tokens.shape == (steps, batch) and h_out.shape == (2, batch, 6)
    want, want_h = step_loop(session(step), sampler, token0, {}, h, uniforms)
    np.testing.assert_array_equal(tokens, want)
    np.testing.assert_allclose(h_out, want_h, atol=STATE_ATOL)
    check_against_eager(module, ["token"], token0, {}, h, sampler, uniforms, tokens, h_out)


@pytest.mark.parametrize("sampler", STRATEGIES[:2], ids=lambda s: s.strategy)
def test_a_held_second_input_keeps_its_value_every_step(char, sampler):
    module, step, forms = char
    rng = np.random.default_rng(4)
    token0, category = rng.integers(0, 11, 2), rng.standard_normal((2, 3)).astype(np.float32)
    h = np.zeros((2, 2, 7), np.float32)
    uniforms = sampler.uniforms(31, 2)
    tokens, h_out = fused(forms, sampler, token0, {"category": category}, h, uniforms, 11)
    want, want_h = step_loop(session(step), sampler, token0, {"category": category}, h, uniforms)
    np.testing.assert_array_equal(tokens, want)
    np.testing.assert_allclose(h_out, want_h, atol=STATE_ATOL)
    check_against_eager(
        module, ["token", "category"], token0, {"category": category}, h, sampler, uniforms, tokens, h_out
    )


def test_the_forms_io_ir_version_metadata_and_hoisted_constants(tiny):
    _, step, forms = tiny
    greedy, sample = forms["rollout_greedy"], forms["rollout_sample"]
    assert [i.name for i in greedy.graph.input] == ["token0", "h", "steps"]
    assert [i.name for i in sample.graph.input] == ["token0", "h", "uniforms", "temperature", "top_k", "top_p"]
    assert [o.name for o in greedy.graph.output] == [o.name for o in sample.graph.output] == ["tokens", "h_out"]
    for form, model in forms.items():
        assert model.ir_version == IR_VERSION
        props = {p.key: p.value for p in model.metadata_props}
        assert props["form"] == form and props["model"] == "tiny"
    # An If runs the Loops with onnxruntime's GRU kernel below SAMPLING_CELLS_MIN_BATCH rows, and
    # with the GRU computed as Gemm cells from there.
    choice = next(n for n in greedy.graph.node if n.op_type == "If")
    assert choice.input[0] == "sampling/cells_on"
    bodies = loop_bodies(greedy.graph)
    assert set(bodies) == {"kernels/main", "kernels/rest", "cells/main", "cells/rest"}
    kernels, cells = bodies["kernels/main"], bodies["cells/main"]
    for body in (kernels, cells):
        assert not [n for n in body.node if n.op_type == "Constant"]  # run once, outside the loop
        assert sum(n.op_type == "Slice" for n in body.node) == 2  # only the first step slices the carried state
        assert not outer_reads(body)  # its weights are its own initializers (onnxruntime pre-packs those)
    assert sum(n.op_type == "GRU" for n in kernels.node) == 2 * 4  # two layers, four steps per iteration
    assert not [n for n in cells.node if n.op_type == "GRU"]
    assert sum(n.op_type == "Gemm" for n in cells.node) == (2 * 2 + 1) * 4  # 2 a layer and the readout, 4 steps
    assert sum(n.op_type == "Squeeze" for n in cells.node) == 2  # the first step's state; none between cells
    assert sum(n.op_type == "Loop" for n in sample.graph.node) == 0  # sample: If(filters) around If(cells)
    assert set(loop_bodies(sample.graph)) == {
        f"{f}/{k}/{part}" for f in ("filtered", "plain") for k in ("kernels", "cells") for part in ("main", "rest")
    }


def test_gru_nodes_the_cells_do_not_cover_keep_onnxruntimes_kernel(tiny):
    # linear_before_reset 0 (not torch's GRU): no Gemm-cell variant, no If on the batch size, and
    # the rollouts still give the step loop's tokens at a batch where cells would have run.
    _, step, _ = tiny
    changed = onnx.ModelProto()
    changed.CopyFrom(step)
    grus = [n for n in changed.graph.node if n.op_type == "GRU"]
    assert len(grus) == 2
    for node in grus:
        next(a for a in node.attribute if a.name == "linear_before_reset").i = 0
    forms = rollouts(changed, unroll=4)
    assert set(loop_bodies(forms["rollout_greedy"].graph)) == {"main", "rest"}
    assert "sampling/cells_on" not in {o for n in forms["rollout_greedy"].graph.node for o in n.output}
    rng = np.random.default_rng(12)
    token0, h = rng.integers(0, 13, 6), (rng.standard_normal((2, 6, 6)) * 0.5).astype(np.float32)
    assert_the_step_loops_tokens(forms, changed, token0, h, 11, 13)


class SqueezedGRU(nn.Module):
    """nn.GRU with a (batch, H) state, unsqueezed in and squeezed out (a common way to write it):
    the unrolled body chains Unsqueeze -> Squeeze across copies, and its state output is a Squeeze."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.gru, self.out = nn.Embedding(11, 5), nn.GRU(5, 7), nn.Linear(7, 11)

    def forward(self, token: torch.Tensor, h: torch.Tensor):
        ys, h_next = self.gru(self.embed(token).unsqueeze(0), h.unsqueeze(0))
        return self.out(ys[0]) * 3.0, h_next.squeeze(0)


@pytest.mark.parametrize("local_bytes", [None, 0])  # 0: no copies of the weights in the Loop bodies
def test_a_state_squeezed_in_and_out_builds_and_gives_the_step_loops_tokens(monkeypatch, local_bytes):
    from export import step_graph

    if local_bytes is not None:
        monkeypatch.setattr(step_graph, "LOCAL_CONSTANTS_MAX_BYTES", local_bytes)
    torch.manual_seed(3)
    module = SqueezedGRU().eval()
    axes = {"token": {0: "batch"}, "h": {0: "batch"}, "logits": {0: "batch"}, "h_out": {0: "batch"}}
    examples = (torch.zeros(3, dtype=torch.int64), torch.zeros(3, 7))
    step = export(module, examples, ["token", "h"], ["logits", "h_out"], axes)
    forms = rollouts(step, unroll=4)  # onnx.checker ran on both
    bodies = loop_bodies(forms["rollout_greedy"].graph)
    assert bool(outer_reads(bodies["cells/main"])) == (local_bytes == 0)
    rng = np.random.default_rng(5)
    for batch in (1, 8):  # the kernel path and the cells path
        token0, h = rng.integers(0, 11, batch), (rng.standard_normal((batch, 7)) * 0.5).astype(np.float32)
        assert_the_step_loops_tokens(forms, step, token0, h, 13, 11)


def test_a_state_output_that_is_a_squeeze_of_an_unsqueeze_stays_an_output():
    # No GRU: h_out = Squeeze(Unsqueeze(tanh(E[token] + h))); the body's state output must keep
    # its producer (the Squeeze), not be bypassed away.
    rng = np.random.default_rng(0)
    initializers = [
        onnx.numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "E"),
        onnx.numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "O"),
        onnx.numpy_helper.from_array(np.array([0], np.int64), "ax"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "token"], ["e"]),
        helper.make_node("Add", ["e", "h"], ["s"]),
        helper.make_node("Tanh", ["s"], ["a"]),
        helper.make_node("Unsqueeze", ["a", "ax"], ["a3"]),
        helper.make_node("Squeeze", ["a3", "ax"], ["h_out"]),
        helper.make_node("MatMul", ["a", "O"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "step",
        [
            helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 4]),
        ],
        initializers,
    )
    step = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    forms = rollouts(step, unroll=3)
    assert_the_step_loops_tokens(forms, step, np.array([1, 4]), np.zeros((2, 4), np.float32), 7, 5)


def loop_bodies(graph: onnx.GraphProto) -> dict[str, onnx.GraphProto]:
    """Every Loop body under ``graph`` (through If branches), by name."""
    found = {}
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                if node.op_type == "Loop":
                    found[sub.name] = sub
                found.update(loop_bodies(sub))
    return found


def outer_reads(graph: onnx.GraphProto) -> set[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {o for n in graph.node for o in n.output}
    return {i for n in graph.node for i in n.input if i and i not in defined}


def draw_model(vocabulary: int) -> onnx.ModelProto:
    """A step whose logits are a held input ``scores`` (batch, V): its rollout draws from them. An
    extra output (``doubled``) that nothing else needs is dropped from the forms."""
    nodes = [
        helper.make_node("Identity", ["scores"], ["logits"]),
        helper.make_node("Mul", ["scores", "two"], ["doubled"]),
        helper.make_node("Add", ["h", "one"], ["h_out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "scores",
        [
            helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", vocabulary]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", vocabulary]),
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", vocabulary]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 1]),
        ],
        [
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@pytest.mark.parametrize(
    "sampler", [*STRATEGIES, Sampler("top_k", top_k=1, seed=5), Sampler("top_p", top_p=0.05, seed=6)]
)
def test_the_draw_in_numpy_onnx_and_torch_agree_on_logits_with_ties(sampler):
    vocabulary, batch = 17, 400
    rng = np.random.default_rng(9)
    scores = rng.integers(-3, 4, (batch, vocabulary)).astype(np.float32)  # many equal logits in each row
    scores[: batch // 2] += rng.standard_normal((batch // 2, vocabulary)).astype(np.float32)  # and rows without
    forms = sampling_rollouts(
        draw_model(vocabulary),
        token_input="token",
        logits_output="logits",
        state_inputs=["h"],
        state_outputs=["h_out"],
        opset=OPSET,
        metadata={},
    )
    assert not any(n.op_type == "Mul" and "two" in n.input for n in forms["rollout_sample"].graph.node)
    assert "two" not in {t.name for t in forms["rollout_sample"].graph.initializer}
    uniforms = sampler.uniforms(3, batch)
    uniforms[:, :8] = [0.0, 1 - 2**-24, 0.5, 0.25, 0.75, 1e-8, 0.999, 0.1]  # edges as well
    token0, h = np.zeros(batch, np.int64), np.zeros((batch, 1), np.float32)
    tokens, h_out = fused(forms, sampler, token0, {"scores": scores}, h, uniforms, vocabulary)
    np.testing.assert_array_equal(h_out, np.full((batch, 1), 3.0, np.float32))
    for t in range(3):
        numpy_tokens = sampler.draw(scores, uniforms[t])
        if sampler.greedy:
            torch_tokens = torch.from_numpy(scores).argmax(1).numpy()
            np.testing.assert_array_equal(numpy_tokens, torch_tokens)
            np.testing.assert_array_equal(tokens[t], numpy_tokens)
            continue
        torch_tokens, cdf, x = torch_draw(
            torch.from_numpy(scores), torch.from_numpy(uniforms[t]), sampler.temperature, sampler.top_k, sampler.top_p
        )
        gaps = _gaps_ulps(cdf.numpy(), x.numpy(), torch_tokens.numpy())[None]
        for other in (numpy_tokens, tokens[t]):
            found = partings(torch_tokens.numpy()[None], other[None], gaps)
            assert all(p.tie for p in found), [p.describe() for p in found]
            assert len(found) <= 2


def test_first_parting_reports_the_earliest_step_and_whether_it_is_a_tie():
    expected = np.array([[1, 2], [3, 4], [5, 6]])
    actual = np.array([[1, 2], [3, 9], [7, 6]])
    gaps = np.array([[50.0, 50.0], [50.0, 1.0], [30.0, 50.0]])
    assert first_parting(expected, expected.copy(), gaps) is None
    parting = first_parting(expected, actual, gaps)
    assert (parting.step, parting.stream, parting.expected, parting.actual, parting.tie) == (1, 1, 4, 9, True)
    assert "a float32 tie" in parting.describe()
    assert [p.stream for p in partings(expected, actual, gaps)] == [0, 1]
    assert not partings(expected, actual, gaps)[0].tie and TIE_ULPS < 30
    with pytest.raises(ExportError, match="different shapes"):
        first_parting(expected, actual[:2])


def test_a_step_graph_without_the_named_tensors_is_refused(tiny):
    _, step, _ = tiny
    with pytest.raises(ExportError, match=r"no input or output \['x'\]"):
        sampling_rollouts(
            step,
            token_input="x",
            logits_output="logits",
            state_inputs=["h"],
            state_outputs=["h_out"],
            opset=17,
            metadata={},
        )
    with pytest.raises(ExportError, match="must be int64"):
        sampling_rollouts(
            step, token_input="h", logits_output="logits", state_inputs=[], state_outputs=[], opset=17, metadata={}
        )
