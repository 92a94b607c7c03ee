"""toolkit.plots: prediction.png, loss.png and parity.png of a folder, drawn and not blank."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from runtime.manifest import VERIFY_NAME
from toolkit.plots import LOSS_NAME, PARITY_NAME, PREDICTION_NAME, plot_folder

from ..conftest import COMMITTED

PICTURES = (PREDICTION_NAME, LOSS_NAME, PARITY_NAME)
BLANK_VARIANCE = 1e-3  # a one-colour picture has variance 0; a drawn one far more


@pytest.fixture()
def committed_copy(tmp_path):
    """The committed folder without its pictures, so that any picture found was drawn here."""
    folder = tmp_path / "sine-elman"
    shutil.copytree(COMMITTED, folder)
    for name in PICTURES:
        (folder / name).unlink()
    return folder


def assert_drawn(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path.name
    pixels = imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100, (path.name, pixels.shape)
    assert float(np.var(pixels[..., :3])) > BLANK_VARIANCE, f"{path.name} is blank"


def test_plot_folder_draws_every_picture(committed_copy):
    paths = plot_folder(committed_copy)
    assert [p.name for p in paths] == list(PICTURES)
    for name in PICTURES:
        assert_drawn(committed_copy / name)


def test_plot_folder_into_another_folder_leaves_the_source_untouched(committed_copy, tmp_path):
    before = {p.name: p.read_bytes() for p in committed_copy.iterdir() if p.is_file()}
    out = tmp_path / "pictures"
    out.mkdir()
    paths = plot_folder(committed_copy, out=out)
    assert paths == [out / name for name in PICTURES]
    for name in PICTURES:
        assert_drawn(out / name)
    assert {p.name: p.read_bytes() for p in committed_copy.iterdir() if p.is_file()} == before


def test_without_a_verify_report_there_is_no_parity_picture(committed_copy):
    (committed_copy / VERIFY_NAME).unlink()
    assert [p.name for p in plot_folder(committed_copy)] == [PREDICTION_NAME, LOSS_NAME]
    assert not (committed_copy / PARITY_NAME).exists()


class TwoInputs(torch.nn.Module):
    """A user's step module with two inputs: no one-column series to draw."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.Linear(2 + 3, 3)
        self.readout = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_next = torch.tanh(self.cell(torch.cat((x, h), 1)))
        return self.readout(h_next), h_next


def test_a_model_with_two_inputs_gets_its_loss_picture_and_no_prediction(tmp_path):
    from export import export_module

    torch.manual_seed(0)
    module = TwoInputs()
    folder = export_module(module, tmp_path / "two", input_size=2, output_size=1, states=[("h", 3)])
    paths = plot_folder(folder, factory=lambda: module)
    assert [p.name for p in paths] == [LOSS_NAME] and not (folder / PREDICTION_NAME).exists()
