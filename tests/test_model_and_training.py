"""The Elman step module and both trainers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnn.data import pairs, sine_series
from rnn.model import ElmanRNN
from rnn.config import TrainConfig
from rnn.train import train, train_reference
from runtime.errors import InputValueError


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


def tutorial_trainer(seed: int, epochs: int, lr: float = 0.1):
    """The tutorial's code, de-garbled, written independently of rnn.train."""
    torch.manual_seed(seed)
    w1 = torch.empty(7, 6).normal_(0.0, 0.4).requires_grad_(True)
    w2 = torch.empty(6, 1).normal_(0.0, 0.3).requires_grad_(True)
    data = np.sin(np.linspace(2, 10, 21)).reshape(21, 1)
    x = torch.Tensor(data[:-1])
    y = torch.Tensor(data[1:])
    for _ in range(epochs):
        context_state = torch.zeros((1, 6), requires_grad=True)
        for j in range(x.size(0)):
            xh = torch.cat((x[j : j + 1], context_state), 1)
            context_state = torch.tanh(xh.mm(w1))
            pred = context_state.mm(w2)
            loss = (pred - y[j : j + 1]).pow(2).sum() / 2
            loss.backward()
            w1.data -= lr * w1.grad.data
            w2.data -= lr * w2.grad.data
            w1.grad.data.zero_()
            w2.grad.data.zero_()
            context_state = context_state.detach()
    return w1.detach(), w2.detach()


def test_reference_trainer_reproduces_the_tutorial_bit_for_bit():
    model, history = train_reference(TrainConfig(seed=5, epochs=30).resolved(), sine_series())
    w1, w2 = tutorial_trainer(seed=5, epochs=30)
    assert torch.equal(model.w1.detach(), w1) and torch.equal(model.w2.detach(), w2)
    assert len(history) == 30 and history[-1] < history[0]


def test_same_seed_gives_bit_identical_weights_and_other_seeds_differ():
    a = train(TrainConfig(seed=1, epochs=15))
    b = train(TrainConfig(seed=1, epochs=15))
    c = train(TrainConfig(seed=2, epochs=15))
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert not torch.equal(a.model.w1, c.model.w1)
    assert a.loss_history == b.loss_history


def test_reference_trainer_full_run_matches_the_published_range():
    # The issue reports teacher-forced MSE between 2.5e-4 and 5.6e-2 over seeds 0-7;
    # seed 2 is the best of them and seed 0 the worst.
    best = train(TrainConfig(seed=2)).metrics["teacher_forced_mse"]
    worst = train(TrainConfig(seed=0)).metrics["teacher_forced_mse"]
    assert 2.4e-4 < best < 2.7e-4
    assert 5.5e-2 < worst < 5.7e-2


def test_progress_is_reported_every_epoch():
    seen = []
    train(TrainConfig(epochs=7), progress=lambda epoch, loss: seen.append((epoch, loss)))
    assert [e for e, _ in seen] == list(range(7)) and all(loss > 0 for _, loss in seen)


def test_bptt_trainer_keeps_the_wave_going_in_closed_loop():
    result = train(TrainConfig(trainer="bptt", seed=0))
    reference = train(TrainConfig(trainer="reference", seed=0))
    assert result.metrics["rollout_max_error"] < 0.05
    assert result.metrics["rollout_max_error"] < reference.metrics["rollout_max_error"] / 10
    assert result.metrics["teacher_forced_mse"] < reference.metrics["teacher_forced_mse"]


def test_bptt_trains_on_a_user_series(tmp_path):
    series = np.cos(np.arange(300) * 0.3)
    np.save(tmp_path / "series.npy", series)
    result = train(TrainConfig(trainer="bptt", epochs=200, data=str(tmp_path / "series.npy")))
    assert "rollout_max_error" not in result.metrics  # only defined for the sine
    assert result.metrics["teacher_forced_mse"] < np.var(series)


@pytest.mark.parametrize(
    "config, message",
    [
        (TrainConfig(trainer="adam"), "trainer must be one of"),
        (TrainConfig(epochs=0), "epochs must be >= 1"),
        (TrainConfig(lr=-1.0), "lr must be a positive number"),
        (TrainConfig(lr=float("nan")), "lr must be a positive number"),
        (TrainConfig(hidden_size=0), "hidden_size must be >= 1"),
    ],
)
def test_bad_training_settings_are_refused(config, message):
    with pytest.raises(InputValueError, match=message):
        config.resolved()


def test_pairs_shift_by_one():
    series = sine_series(20)
    inputs, targets = pairs(series)
    assert len(series) == 21 and np.array_equal(inputs[1:], targets[:-1])
    assert series[0] == pytest.approx(np.sin(2.0)) and series[-1] == pytest.approx(np.sin(10.0))
