"""rnn.train: the reference trainer (the tutorial, bit for bit), the bptt trainer, every cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnn.config import TRAIN_DATA_NAME, TrainConfig, read_config, training_series
from rnn.data import sine_series
from rnn.train import stable_counterpart, train, train_folder, train_reference
from runtime.errors import InputValueError


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


def test_the_stable_counterpart_of_a_reference_run_keeps_its_model_and_scales_its_iterations():
    default = stable_counterpart(TrainConfig())
    assert (default.trainer, default.epochs, default.lr, default.seed, default.cell) == ("bptt", 1500, 0.01, 0, "elman")
    short = stable_counterpart(TrainConfig(cell="gru", seed=3, epochs=20, lr=0.5, hidden_size=8, seq_length=30))
    assert (short.trainer, short.epochs, short.lr) == ("bptt", 100, 0.01)  # 300 epochs : 1500 iterations
    assert (short.cell, short.seed, short.hidden_size, short.seq_length) == ("gru", 3, 8, 30)
    assert stable_counterpart(TrainConfig(epochs=1)).epochs == 5


def test_bptt_trains_on_a_user_series(tmp_path):
    series = np.cos(np.arange(300) * 0.3)
    np.save(tmp_path / "series.npy", series)
    result = train(TrainConfig(trainer="bptt", epochs=200, data=str(tmp_path / "series.npy")))
    assert "rollout_max_error" not in result.metrics  # only defined for the sine
    assert result.metrics["teacher_forced_mse"] < np.var(series)


def test_cells_train_with_both_trainers():
    for cell in ("gru", "lstm"):
        reference = train(TrainConfig(cell=cell, epochs=40, seed=1))
        assert reference.loss_history[-1] < reference.loss_history[0]
        bptt = train(TrainConfig(cell=cell, trainer="bptt", epochs=120, seed=1))
        assert bptt.loss_history[-1] < bptt.loss_history[0] / 2


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cells_train_on_a_users_series(tmp_path, cell):
    series = np.cos(np.arange(200) * 0.25)
    np.save(tmp_path / "series.npy", series)
    result = train(TrainConfig(cell=cell, trainer="bptt", epochs=80, data=str(tmp_path / "series.npy")))
    assert result.metrics["teacher_forced_mse"] < np.var(series)


@pytest.mark.parametrize("trainer", ["reference", "bptt"])
def test_a_diverging_run_stops_with_an_error_naming_the_learning_rate(tmp_path, trainer):
    """--lr 1e308 used to train to NaN weights and save them; now nothing is written."""
    message = r"training diverged: the loss became nan in epoch \d+ with learning rate 1e\+308; use a smaller --lr"
    with pytest.raises(InputValueError, match=message):
        train_folder(TrainConfig(trainer=trainer, epochs=3, lr=1e308), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_users_series_is_copied_into_the_folder_it_trains(tmp_path):
    """config.json records the copy, inside the folder: the folder never names a file elsewhere."""
    series = np.cos(np.arange(30) * 0.3)
    np.savetxt(tmp_path / "series.csv", series)
    train_folder(TrainConfig(epochs=2, data=str(tmp_path / "series.csv")), tmp_path / "m")
    config = read_config(tmp_path / "m")
    assert config.train.data == TRAIN_DATA_NAME
    np.testing.assert_array_equal(np.load(tmp_path / "m" / TRAIN_DATA_NAME), series)
    (tmp_path / "series.csv").unlink()
    (tmp_path / "m").rename(tmp_path / "moved")  # still complete where it is moved
    np.testing.assert_array_equal(training_series(config.train, tmp_path / "moved").values, series)
