"""runtime.contract.form_specs: one contract for every form of every signature (the classic
signature's is format 1's, name for name); and runtime.fused.choose_form picks a format 2 model's
fused loops."""

from __future__ import annotations

import pytest

from runtime.contract import FLOAT32, INT64, form_specs
from runtime.errors import InputValueError
from runtime.fused import FUSED_MIN_STEPS, ROLLOUT_FORMS, SEQUENCE_FORMS, STEP, choose_form
from runtime.manifest import Feedback, StateSpec, TensorSpec

CLASSIC_STATES = (
    StateSpec("h", ("batch", 6), output="h_out"),
    StateSpec("c", ("batch", 5), output="c_out"),
)


CLASSIC_STATE_SPECS = [("h", FLOAT32, ("batch", 6)), ("c", FLOAT32, ("batch", 5))]
CLASSIC_OUTPUT_STATES = [("h_out", FLOAT32, ("batch", 6)), ("c_out", FLOAT32, ("batch", 5))]
CLASSIC = {  # format 1's contract, name for name
    STEP: (
        [("x", FLOAT32, ("batch", 2)), *CLASSIC_STATE_SPECS],
        [("y", FLOAT32, ("batch", 2)), *CLASSIC_OUTPUT_STATES],
    ),
    "sequence": (
        [("xs", FLOAT32, ("steps", "batch", 2)), *CLASSIC_STATE_SPECS],
        [("ys", FLOAT32, ("steps", "batch", 2)), *CLASSIC_OUTPUT_STATES],
    ),
    "rollout": (
        [("x0", FLOAT32, ("batch", 2)), *CLASSIC_STATE_SPECS, ("steps", INT64, (1,))],
        [("ys", FLOAT32, ("steps", "batch", 2)), *CLASSIC_OUTPUT_STATES],
    ),
}


@pytest.mark.parametrize("form", [STEP, *SEQUENCE_FORMS, *ROLLOUT_FORMS])
def test_the_classic_signature_gets_todays_contract_name_for_name(form):
    x, y = TensorSpec("x", ("batch", 2)), TensorSpec("y", ("batch", 2))
    expected = CLASSIC[form if form == STEP else form.split("_")[0]]
    assert form_specs(form, (x,), (y,), CLASSIC_STATES, Feedback("y", "x")) == expected


def test_a_classic_step_keeps_its_own_tensor_names():
    x, y = TensorSpec("u", ("batch", 3)), TensorSpec("v", ("batch", 1))
    inputs, outputs = form_specs(STEP, (x,), (y,), CLASSIC_STATES, None)
    assert inputs == [("u", FLOAT32, ("batch", 3)), *CLASSIC_STATE_SPECS]
    assert outputs == [("v", FLOAT32, ("batch", 1)), *CLASSIC_OUTPUT_STATES]
    inputs, outputs = form_specs("sequence_loop", (x,), (y,), CLASSIC_STATES, None)
    assert inputs[0] == ("xs", FLOAT32, ("steps", "batch", 3)) and outputs[0] == ("ys", FLOAT32, ("steps", "batch", 1))


CHAR = (
    (TensorSpec("char", ("batch",), "int64", "tokens", 11), TensorSpec("category", ("batch", 3))),
    (TensorSpec("logits", ("batch", 11), role="logits"),),
    (StateSpec("h", (2, "batch", 7), output="h_out"),),
    Feedback("logits", "char", "sample"),
)


def test_a_format_2_models_step_and_sampling_forms():
    inputs, outputs = form_specs(STEP, *CHAR)
    assert inputs == [("char", INT64, ("batch",)), ("category", FLOAT32, ("batch", 3)), ("h", FLOAT32, (2, "batch", 7))]
    assert outputs == [("logits", FLOAT32, ("batch", 11)), ("h_out", FLOAT32, (2, "batch", 7))]
    held = [("category", FLOAT32, ("batch", 3)), ("h", FLOAT32, (2, "batch", 7))]
    tokens = [("tokens", INT64, ("steps", "batch")), ("h_out", FLOAT32, (2, "batch", 7))]
    assert form_specs("rollout_greedy", *CHAR) == (
        [("token0", INT64, ("batch",)), *held, ("steps", INT64, (1,))],
        tokens,
    )
    settings = [("temperature", FLOAT32, (1,)), ("top_k", INT64, (1,)), ("top_p", FLOAT32, (1,))]
    uniforms = ("uniforms", FLOAT32, ("steps", "batch"))
    assert form_specs("rollout_sample", *CHAR) == ([("token0", INT64, ("batch",)), *held, uniforms, *settings], tokens)


def test_a_sampled_model_has_no_rollout_loop_but_has_a_sequence_loop():
    with pytest.raises(InputValueError, match="feeds back as it is"):
        form_specs("rollout_loop", *CHAR)
    inputs, outputs = form_specs("sequence_loop", *CHAR)
    assert inputs == [
        ("char", INT64, ("steps", "batch")),
        ("category", FLOAT32, ("steps", "batch", 3)),
        ("h", FLOAT32, (2, "batch", 7)),
    ]
    assert outputs == [("ys", FLOAT32, ("steps", "batch", 11)), ("h_out", FLOAT32, (2, "batch", 7))]


FORECASTER = (
    (TensorSpec("x", ("batch", 1)), TensorSpec("mode", ("batch",), "int64", "tokens", 2)),
    (TensorSpec("y", ("batch", 1)), TensorSpec("spread", ("batch", 4, 2))),
    (StateSpec("h", ("batch", 8), output="h_next"), StateSpec("grid", (3, "batch", 2, 2), output="grid_next")),
    Feedback("y", "x"),
)


def test_several_inputs_and_outputs_keep_their_names_with_a_steps_axis_in_front():
    inputs, outputs = form_specs("sequence_loop", *FORECASTER)
    assert inputs == [
        ("x", FLOAT32, ("steps", "batch", 1)),
        ("mode", INT64, ("steps", "batch")),
        ("h", FLOAT32, ("batch", 8)),
        ("grid", FLOAT32, (3, "batch", 2, 2)),
    ]
    expected_outputs = [
        ("y", FLOAT32, ("steps", "batch", 1)),
        ("spread", FLOAT32, ("steps", "batch", 4, 2)),
        ("h_next", FLOAT32, ("batch", 8)),
        ("grid_next", FLOAT32, (3, "batch", 2, 2)),
    ]
    assert outputs == expected_outputs
    inputs, outputs = form_specs("rollout_loop", *FORECASTER)
    assert inputs == [
        ("x", FLOAT32, ("batch", 1)),
        ("mode", INT64, ("batch",)),
        ("h", FLOAT32, ("batch", 8)),
        ("grid", FLOAT32, (3, "batch", 2, 2)),
        ("steps", INT64, (1,)),
    ]
    assert outputs == expected_outputs


def test_the_fed_back_input_comes_first_and_a_one_input_model_names_it_x0():
    inputs, outputs, states, _ = FORECASTER
    fed_second = (inputs[1], inputs[0])
    assert [s[0] for s in form_specs("rollout_loop", fed_second, outputs, states, Feedback("y", "x"))[0]] == [
        "x",
        "mode",
        "h",
        "grid",
        "steps",
    ]
    specs = form_specs("rollout_loop", inputs[:1], outputs[:1], states, Feedback("y", "x"))
    assert [s[0] for s in specs[0]] == ["x0", "h", "grid", "steps"]
    assert [s[0] for s in specs[1]] == ["ys", "h_next", "grid_next"]


def test_no_rollout_without_feedback_and_no_unknown_form():
    inputs, outputs, states, _ = FORECASTER
    with pytest.raises(InputValueError):
        form_specs("rollout_loop", inputs, outputs, states, None)
    with pytest.raises(InputValueError, match="not a form"):
        form_specs("rollout_fast", *FORECASTER)


@pytest.mark.parametrize("batch", [1, 3, 64, 4096])
def test_choose_form_picks_a_format_2_models_loops_from_fused_min_steps(batch):
    available = (STEP, "sequence_loop", "rollout_loop")
    for kind, form in (("predict", "sequence_loop"), ("generate", "rollout_loop")):
        assert choose_form(kind, batch, FUSED_MIN_STEPS, available, "custom", 8) == form
        assert choose_form(kind, batch, 1000, available, "custom", 8) == form
        assert choose_form(kind, batch, FUSED_MIN_STEPS - 1, available, "custom", 8) == STEP
    assert choose_form("generate", batch, 1000, (STEP, "sequence_loop"), "custom", 8) == STEP
