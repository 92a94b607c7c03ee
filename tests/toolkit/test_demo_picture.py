"""The demo's headline picture: the seed's teacher-forced picture (reference trainer) beside the
stable trainer's closed loop, each title saying which is which; loss.png's axes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from rnn.config import TrainConfig, training_series
from rnn.train import stable_counterpart, train
from toolkit import plots


@pytest.fixture(scope="module")
def runs():
    """A short reference run and its (short) stable counterpart."""
    config = TrainConfig(epochs=8).resolved()
    return train(config), train(stable_counterpart(config))


@pytest.fixture()
def drawn(monkeypatch):
    """The figures the plots module saves, kept open to read their axes (and still written)."""
    figures = []
    save = plots._save

    def keep(figure, path):
        figures.append(figure)
        figure.savefig(path, dpi=30)
        plots.plt.close(figure)  # axes, titles and lines stay readable

    monkeypatch.setattr(plots, "_save", keep)
    yield figures
    monkeypatch.setattr(plots, "_save", save)


def test_the_headline_draws_the_seeds_points_beside_the_stable_closed_loop(runs, drawn, tmp_path):
    reference, stable = runs
    path = plots.plot_side_by_side(
        (reference.model, reference.checkpoint_config()),
        (stable.model, stable.checkpoint_config()),
        tmp_path / "prediction.png",
        rollout_steps=40,
    )
    assert path.is_file() and imread(path).shape[1] > imread(path).shape[0] * 2
    (figure,) = drawn
    left, right = figure.axes
    assert "reference trainer, seed 0: the tutorial's picture" in left.get_title()
    assert f"closed-loop max error {reference.metrics['rollout_max_error']:.3f} (not drawn)" in left.get_title()
    assert "bptt trainer, seed 0: the stable trainer" in right.get_title()
    assert f"closed-loop max error {stable.metrics['rollout_max_error']:.3f}" in right.get_title()
    assert "(not drawn)" not in right.get_title()
    # Left: the tutorial's actual points and one-step predictions, no rollout line.
    times = training_series(reference.config).times
    assert [len(c.get_offsets()) for c in left.collections] == [len(times) - 1] * 2
    assert [line.get_label() for line in left.get_lines()] == ["sin(t)"]
    np.testing.assert_allclose(left.collections[0].get_offsets()[:, 0], times[:-1])
    np.testing.assert_allclose(left.collections[1].get_offsets()[:, 0], times[1:])
    # Right: the same points and the 40-step closed loop past the data, from t = 10 on.
    rollout = next(line for line in right.get_lines() if line.get_label().startswith("Closed-loop"))
    x, y = rollout.get_data()
    assert len(x) == 40 and x[0] > times[-1] and np.all(np.diff(x) > 0)
    assert np.all(np.isfinite(y))


def test_the_single_picture_says_its_rollout_is_drawn(runs, drawn, tmp_path):
    _, stable = runs
    plots.plot_prediction(stable.model, stable.checkpoint_config(), tmp_path / "p.png", rollout_steps=30)
    (figure,) = drawn
    title = figure.axes[0].get_title()
    assert title.startswith("Elman RNN, bptt trainer, seed 0") and "(not drawn)" not in title
    assert "closed-loop max error" in title


@pytest.mark.parametrize("which", [0, 1])
def test_loss_picture_axes_say_what_x_and_y_are(runs, drawn, tmp_path, which):
    result = runs[which]
    plots.plot_loss(result.checkpoint_config(), tmp_path / "loss.png")
    (figure,) = drawn
    axis = figure.axes[0]
    assert axis.get_xlabel() == {"reference": "epoch", "bptt": "iteration"}[result.config.trainer]
    assert axis.get_ylabel().startswith("loss: ") and "(" not in axis.get_xlabel()
    (line,) = axis.get_lines()
    np.testing.assert_allclose(line.get_ydata(), result.loss_history)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, len(result.loss_history) + 1))
