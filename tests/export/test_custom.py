"""export.custom: bring your own step module: export_module, verification with its factory, clear failures,
and an export that leaves the caller's module, random generators and warnings alone."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import runtime
from export import ExportError, export_folder, export_module, verify_folder
from export.custom import PROBE_BATCH, check_protocol, custom_config
from export.probe import INPUT_RANGE
from rnn.eager import generate_eager
from runtime.errors import ArtifactError, InputValueError
from runtime.manifest import ROLE_STEP_TORCHSCRIPT, TORCHSCRIPT_SKIPPED_KEY

from ..user_modules import (
    CHAR_GRU_SIGNATURE,
    FOUR_STATES,
    MAKE_CHAR_GRU,
    TWO_INPUTS_SIGNATURE,
    DataDependent,
    LayeredGRU,
    NotScriptable,
    PythonOnly,
    TokenStep,
    TwoStateLeaky,
    WrongProtocol,
    make_char_gru,
    make_four_state,
    make_two_inputs,
    make_two_state,
)
from ..user_modules import MAKE_TWO_STATE as FACTORY


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_users_two_state_module_exports_verifies_and_runs(tmp_path, exporter):
    module = make_two_state()
    folder = export_module(
        module,
        tmp_path / "byo",
        input_size=1,
        output_size=1,
        states=[("fast", 4), ("slow", 4, 0.25)],
        exporter=exporter,
        factory=FACTORY,
    )
    manifest = runtime.read_manifest(folder)
    assert [s.name for s in manifest.state] == ["fast", "slow"]
    assert manifest.state[1].initial == (0.25,) * 4
    assert manifest.model["kind"] == "custom" and manifest.model["factory"] == FACTORY
    report = verify_folder(folder, factory=make_two_state, trust=True)
    assert report.passed, report.table()
    model = runtime.load(folder)
    assert model.forms == ("step", "sequence_loop", "rollout_loop")  # the loops around its step graph
    ys, (fast, slow) = model.generate(np.float32(0.3), 40)
    initial = (torch.zeros(1, 4), torch.full((1, 4), 0.25))
    expected, _ = generate_eager(module, torch.full((1, 1), 0.3), 40, initial)
    np.testing.assert_allclose(ys, expected.numpy(), atol=1e-4, rtol=0)


def test_verifying_a_custom_folder_needs_the_factory(tmp_path):
    folder = export_module(
        make_two_state(),
        tmp_path / "byo",
        input_size=1,
        output_size=1,
        states=[("fast", 4), ("slow", 4)],
        factory=FACTORY,
    )
    with pytest.raises(ArtifactError, match="pass its factory explicitly"):
        verify_folder(folder, trust=True)
    assert verify_folder(folder, factory=FACTORY, trust=True).passed  # by name, as the CLI does


def test_a_module_that_cannot_be_scripted_names_the_construct(tmp_path):
    with pytest.raises(ExportError, match=r"torch.jit.script cannot compile NotScriptable: .*open"):
        export_module(NotScriptable(), tmp_path / "x", input_size=1, output_size=1, states=[("h", 4)])
    assert not (tmp_path / "x").exists()


def test_a_module_torch_export_cannot_trace_is_a_clear_error(tmp_path):
    module = DataDependent()
    export_module(module, tmp_path / "ts", input_size=1, output_size=1, states=[("h", 4)])  # scripts fine
    with pytest.raises(ExportError, match="the dynamo exporter cannot export DataDependent"):
        export_module(module, tmp_path / "dyn", input_size=1, output_size=1, states=[("h", 4)], exporter="dynamo")


@pytest.mark.parametrize(
    "states, message",
    [
        ([], "at least one state"),
        ([("h", 0)], "integer size from 1 to 4096"),
        ([("x", 4)], "not 'x'"),
        ([("h", 4), ("h", 4)], "distinct"),
        ([("h", 2, [0.1])], "initial has 1 values"),
        ([("1h", 4)], "identifier"),
    ],
)
def test_bad_state_specifications(tmp_path, states, message):
    with pytest.raises(InputValueError, match=message):
        export_module(TwoStateLeaky(), tmp_path / "x", input_size=1, output_size=1, states=states)


def test_a_module_that_breaks_the_protocol(tmp_path):
    with pytest.raises(ExportError, match=r"forward must return \(y, h\)"):
        export_module(WrongProtocol(), tmp_path / "x", input_size=1, output_size=1, states=[("h", 4)])
    with pytest.raises(ExportError, match=r"calling the module as forward\(x, fast, slow\) failed: RuntimeError"):
        export_module(make_two_state(), tmp_path / "x", input_size=1, output_size=1, states=[("fast", 5), ("slow", 4)])


def _global_states():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_same_states(before, after):
    assert torch.equal(before[0], after[0]), "torch's global generator moved"
    assert before[1][0] == after[1][0] and np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
    assert before[2] == after[2], "Python's random moved"


def test_export_and_verification_leave_the_callers_random_generators_alone(tmp_path, trained_folder):
    module = make_four_state()  # seeds torch's generator itself: the user's doing, before the export
    torch.rand(3)  # the caller goes on drawing: a factory that seeds again would move the generator
    np.random.seed(7)
    random.seed(3)
    before = _global_states()
    folder = export_module(
        module, tmp_path / "four", input_size=2, output_size=3, states=FOUR_STATES, factory="x:y", exporter="dynamo"
    )
    _assert_same_states(before, _global_states())
    report = verify_folder(folder, factory=make_four_state, trust=True)  # the factory seeds, verification restores
    assert report.passed, report.table()
    _assert_same_states(before, _global_states())
    export_folder(trained_folder, tmp_path / "elman")  # rebuilding the built-in cell draws its weights
    _assert_same_states(before, _global_states())
    table = report.table()  # no closed loop here: the table says so instead of an empty heading
    assert "divergence horizon: not measured (the output size 3 differs from the input size 2" in table
    assert "divergence horizon vs" not in table and report.to_dict()["divergence"]["not_measured"]


def test_the_protocol_check_probes_seeded_inputs_of_the_declared_dtype_and_range():
    seen = []

    class Recording(nn.Module):
        def forward(self, x, h, c):
            seen.append((x.clone(), h.clone(), c.clone()))
            return x[:, :1] * 2, h, c

    config = custom_config(3, 1, [("h", 4), ("c", 2)])
    for seed in (0, 1):
        torch.manual_seed(seed)  # the check draws nothing from the global generator
        check_protocol(Recording(), config)
    low, high = INPUT_RANGE
    for first, second in zip(*seen):
        assert torch.equal(first, second) and first.dtype == torch.float32 and first.shape[0] == PROBE_BATCH
        assert low <= float(first.min()) and float(first.max()) < high
    assert [tuple(t.shape[1:]) for t in seen[0]] == [(3,), (4,), (2,)]


def test_a_token_model_exports_whatever_the_global_seed(tmp_path):
    """Issue 13: the check fed torch.randn into x, negative token ids for half of all global seeds."""
    module = TokenStep()
    for seed in range(3):
        torch.manual_seed(seed)
        export_module(module, tmp_path / f"tokens{seed}", input_size=1, output_size=1, states=[("h", 4)])
    ys, _ = runtime.load(tmp_path / "tokens0").predict(np.array([[[3.0]], [[1.0]]], np.float32))
    expected = module(torch.tensor([[3.0]]), torch.zeros(1, 4))[0]
    np.testing.assert_allclose(ys[0], expected.detach().numpy(), atol=1e-6)


def test_dynamo_exports_a_module_torchscript_cannot_compile(tmp_path):
    folder = export_module(
        PythonOnly(), tmp_path / "py", input_size=1, output_size=1, states=[("h", 4)], exporter="dynamo"
    )
    manifest = runtime.read_manifest(folder)
    assert manifest.file(ROLE_STEP_TORCHSCRIPT) is None and not (folder / "step.torchscript.pt").exists()
    assert "Lambda" in manifest.model[TORCHSCRIPT_SKIPPED_KEY]
    report = verify_folder(folder, factory=PythonOnly, trust=True)
    assert report.passed, report.table()
    assert report.skipped == {"torchscript": "the folder has no TorchScript file"}
    assert {c.form for c in report.comparisons} == {"onnx", "sequence_loop", "rollout_loop"}
    ys, _ = runtime.load(folder).generate(np.float32(0.5), 30)
    assert ys.shape == (30, 1, 1) and np.isfinite(ys).all()
    with pytest.raises(ExportError, match="torch.jit.script cannot compile PythonOnly: .*Lambda"):
        export_module(PythonOnly(), tmp_path / "ts", input_size=1, output_size=1, states=[("h", 4)])  # the default


@pytest.mark.parametrize(
    "make, exporter, message",
    [
        (NotScriptable, "torchscript", r"torch.jit.script cannot compile NotScriptable: RuntimeError: Python builtin"),
        (DataDependent, "dynamo", "the dynamo exporter cannot export DataDependent"),
    ],
)
def test_a_failing_export_fails_the_same_way_when_tried_again(tmp_path, make, exporter, message):
    errors = []
    for attempt in range(2):
        with pytest.raises(ExportError, match=message) as caught:
            export_module(
                make(), tmp_path / str(attempt), input_size=1, output_size=1, states=[("h", 4)], exporter=exporter
            )
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "redefine" not in errors[1]


def test_export_leaves_the_module_in_the_mode_it_came_in(tmp_path):
    module = make_two_state().train()
    module.out.eval()  # a submodule in its own mode
    export_module(module, tmp_path / "m", input_size=1, output_size=1, states=[("fast", 4), ("slow", 4)])
    assert module.training and module.inp.training and not module.out.training
    broken = WrongProtocol().train()
    with pytest.raises(ExportError):
        export_module(broken, tmp_path / "x", input_size=1, output_size=1, states=[("h", 4)])
    assert broken.training


def test_exporting_an_nn_gru_module_warns_nothing(tmp_path):
    torch.manual_seed(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_module(LayeredGRU(), tmp_path / "gru", input_size=1, output_size=1, states=[("h0", 3), ("h1", 3)])
    assert [str(w.message)[:120] for w in caught] == []


def test_a_float64_module_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ExportError, match=r"'inp.weight' is float64; .*float32: export module.float\(\)"):
        export_module(
            TwoStateLeaky().double(), tmp_path / "x", input_size=1, output_size=1, states=[("a", 4), ("b", 4)]
        )

    class DoubleOutput(nn.Module):
        def forward(self, x, h):
            return x.double(), h

    with pytest.raises(
        ExportError, match=r"forward's y must be a float32 tensor of shape \(batch, 1\), got \(3, 1\) float64"
    ):
        export_module(DoubleOutput(), tmp_path / "x", input_size=1, output_size=1, states=[("h", 2)])
    export_module(
        TwoStateLeaky().double().float(), tmp_path / "f", input_size=1, output_size=1, states=[("a", 4), ("b", 4)]
    )


# ---- a vocabulary: the text of each token id, written into the manifest --------------------------

VOCABULARY = ["a", "b", "c", "d", "e", "f", "g", " ", "th", "the", "."]  # one string per id of the char GRU


def test_a_vocabulary_is_written_into_the_manifest_and_kept_by_a_re_export(tmp_path):
    folder = export_module(
        make_char_gru(), tmp_path / "char", vocabulary=VOCABULARY, factory=MAKE_CHAR_GRU, **CHAR_GRU_SIGNATURE
    )
    model = runtime.load(folder)
    assert model.vocabulary == runtime.Vocabulary(VOCABULARY)
    assert model.vocabulary.encode("the th.").tolist() == [9, 7, 8, 10]
    again = export_folder(folder, tmp_path / "again", factory=make_char_gru)  # config.json carries it
    assert runtime.load(again).vocabulary.tokens == tuple(VOCABULARY)
    assert runtime.read_manifest(again).to_dict()["vocabulary"] == VOCABULARY


@pytest.mark.parametrize(
    ("vocabulary", "message"),
    [
        (VOCABULARY[:-1], r"vocabulary must hold one string per token id: 11, got 10"),
        ([*VOCABULARY[:-1], "a"], r"distinct strings: 'a' is id 0 and id 10"),
        ([*VOCABULARY[:-1], 1], r"vocabulary\[10\] must be a string, got int"),
        ([*VOCABULARY[:-1], ""], r"vocabulary\[10\] must be a string of 1 to"),
        ("abcdefgh th", "vocabulary must be a list of strings"),
    ],
)
def test_a_bad_vocabulary_is_refused_at_export_by_name(tmp_path, vocabulary, message):
    with pytest.raises(InputValueError, match=message):
        export_module(make_char_gru(), tmp_path / "char", vocabulary=vocabulary, **CHAR_GRU_SIGNATURE)
    assert not (tmp_path / "char").exists()


def test_a_vocabulary_for_a_model_that_samples_nothing_is_refused_at_export(tmp_path):
    with pytest.raises(InputValueError, match="samples its next token .* this model has none"):
        export_module(make_two_inputs(), tmp_path / "m", vocabulary=list("abcdefg"), **TWO_INPUTS_SIGNATURE)
    with pytest.raises(InputValueError, match="this model has none"):  # x -> y, identity feedback
        export_module(
            make_two_state(),
            tmp_path / "m",
            input_size=1,
            output_size=1,
            states=[("fast", 4), ("slow", 4)],
            vocabulary=["a"],
        )
    assert not (tmp_path / "m").exists()
