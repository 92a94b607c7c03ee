"""runtime.fused: which form runs a call (choose_form), and the forms a folder lists."""

from __future__ import annotations

import pytest

import runtime
from runtime.fused import FORMS, RNN_MAX_BATCH, STEP, choose_form

ALL = FORMS


def test_choice_by_batch_and_steps():
    assert choose_form("generate", 1, 1000, ALL) == "rollout_rnn"
    assert choose_form("generate", RNN_MAX_BATCH, 1000, ALL) == "rollout_rnn"
    assert choose_form("generate", RNN_MAX_BATCH + 1, 1000, ALL) == "rollout_loop"
    assert choose_form("generate", 4096, 20, ALL) == "rollout_loop"
    assert choose_form("predict", 1, 20, ALL) == "sequence_rnn"
    assert choose_form("predict", 4096, 1000, ALL) == "sequence_loop"
    assert choose_form("generate", 1, 1, ALL) == STEP  # one step is the step model
    assert choose_form("generate", 4096, 1000, ("step", "rollout_rnn")) == "rollout_rnn"  # what is there
    assert choose_form("predict", 4, 1000, ("step",)) == STEP  # a folder without fused forms


@pytest.fixture(scope="module")
def model(exported_folder):
    return runtime.load(exported_folder)


def test_every_form_is_listed(model):
    assert model.forms == ("step", "sequence_rnn", "sequence_loop", "rollout_rnn", "rollout_loop")
