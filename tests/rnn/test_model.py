"""rnn.model: the Elman step module, the GRU and LSTM steps."""

from __future__ import annotations

import torch

from rnn.model import ElmanRNN, GRUStep, LSTMStep


def test_step_shapes_and_formula():
    torch.manual_seed(0)
    model = ElmanRNN(1, 6, 1)
    assert model.w1.shape == (7, 6) and model.w2.shape == (6, 1)
    x, h = torch.randn(5, 1), torch.randn(5, 6)
    y, h_next = model(x, h)
    assert y.shape == (5, 1) and h_next.shape == (5, 6)
    expected_h = torch.tanh(torch.cat((x, h), 1) @ model.w1)
    torch.testing.assert_close(h_next, expected_h, rtol=0, atol=0)
    torch.testing.assert_close(y, expected_h @ model.w2, rtol=0, atol=0)


def test_sizes_are_configurable():
    model = ElmanRNN(2, 9, 3)
    y, h = model(torch.zeros(4, 2), torch.zeros(4, 9))
    assert (y.shape, h.shape, model.w1.shape) == ((4, 3), (4, 9), (11, 9))


def test_initial_weights_follow_the_reference_distributions():
    torch.manual_seed(0)
    model = ElmanRNN(1, 200, 200)  # many draws, so the sample std is close to the true one
    assert abs(model.w1.std().item() - 0.4) < 0.01
    assert abs(model.w2.std().item() - 0.3) < 0.01
    assert abs(model.w1.mean().item()) < 0.01


def test_gru_step_is_torchs_gru_cell():
    torch.manual_seed(0)
    model = GRUStep(2, 5, 3)
    x, h = torch.randn(7, 2), torch.randn(7, 5)
    y, h_next = model(x, h)
    torch.testing.assert_close(h_next, model.cell(x, h), atol=1e-6, rtol=0)
    torch.testing.assert_close(y, model.readout(h_next))


def test_lstm_step_carries_two_states():
    torch.manual_seed(0)
    model = LSTMStep(1, 4, 1)
    assert model.model_config().state_names == ("h", "c") and len(model.initial_state(3)) == 2
    y, h, c = model(torch.randn(3, 1), *model.initial_state(3))
    assert y.shape == (3, 1) and h.shape == c.shape == (3, 4)
