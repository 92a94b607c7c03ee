"""The built-in step modules: the tutorial's Elman RNN, GRU and LSTM cells with a linear readout.

Every step module follows one protocol: ``forward(x, *state) -> (y, *state)``. The built-in
ones also carry their `ModelConfig` (``config``); a user's module gets its config from
config.json (see `rnn.config`).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import CELL_KINDS, CELL_STATES, HIDDEN_SIZE, ModelConfig

W1_STD = 0.4
W2_STD = 0.3


class StepModule(nn.Module):
    """What the built-in cells share: their sizes and a zero initial state per state tensor."""

    kind = ""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size

    def model_config(self) -> ModelConfig:  # a method: TorchScript would compile a property
        return ModelConfig.cell(self.kind, self.input_size, self.hidden_size, self.output_size)

    def initial_state(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Zeros, as the reference starts every epoch and every prediction."""
        dtype = next(self.parameters()).dtype
        return tuple(torch.zeros(batch_size, self.hidden_size, dtype=dtype) for _ in CELL_STATES[self.kind])


class ElmanRNN(StepModule):
    """``h' = tanh(cat(x, h) @ w1)``, ``y = h' @ w2``: no biases, as in the reference.

    ``w1`` is (input_size + hidden_size, hidden_size), ``w2`` is (hidden_size, output_size).
    """

    kind = "elman"

    def __init__(self, input_size: int = 1, hidden_size: int = HIDDEN_SIZE, output_size: int = 1) -> None:
        super().__init__(input_size, hidden_size, output_size)
        self.w1 = nn.Parameter(torch.empty(input_size + hidden_size, hidden_size))
        self.w2 = nn.Parameter(torch.empty(hidden_size, output_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draws w1 from N(0, 0.4) then w2 from N(0, 0.3), in that order (seed-reproducible)."""
        with torch.no_grad():
            self.w1.normal_(0.0, W1_STD)
            self.w2.normal_(0.0, W2_STD)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xh = torch.cat((x, h), 1)  # (batch, input_size + hidden_size)
        h_next = torch.tanh(xh @ self.w1)  # (batch, hidden_size)
        y = h_next @ self.w2  # (batch, output_size)
        return y, h_next


class GRUStep(StepModule):
    """torch's ``GRUCell`` with a linear readout: ``h' = GRUCell(x, h)``, ``y = Linear(h')``.

    The gates are written out (with the cell's own parameters, so the state_dict is GRUCell's):
    TorchScript's ONNX exporter has no symbolic for ``aten::gru_cell``. The reset gate multiplies
    the recurrent projection *after* its bias, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    which is torch's definition (ONNX's ``linear_before_reset=1``).
    """

    kind = "gru"

    def __init__(self, input_size: int = 1, hidden_size: int = HIDDEN_SIZE, output_size: int = 1) -> None:
        super().__init__(input_size, hidden_size, output_size)
        self.cell = nn.GRUCell(input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gi = x @ self.cell.weight_ih.t() + self.cell.bias_ih  # (batch, 3 * hidden): r, z, n
        gh = h @ self.cell.weight_hh.t() + self.cell.bias_hh
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h_next = (1 - z) * n + z * h  # (batch, hidden)
        return self.readout(h_next), h_next


class LSTMStep(StepModule):
    """torch's ``LSTMCell`` with a linear readout; two state tensors, ``h`` then ``c``."""

    kind = "lstm"

    def __init__(self, input_size: int = 1, hidden_size: int = HIDDEN_SIZE, output_size: int = 1) -> None:
        super().__init__(input_size, hidden_size, output_size)
        self.cell = nn.LSTMCell(input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h_next, c_next = self.cell(x, (h, c))  # (batch, hidden) each
        return self.readout(h_next), h_next, c_next


CELLS = {"elman": ElmanRNN, "gru": GRUStep, "lstm": LSTMStep}
assert tuple(CELLS) == CELL_KINDS  # rnn.config names the cells and their states


def build_model(config: ModelConfig) -> nn.Module:
    """A built-in step module of ``config`` (not a user's), with fresh (seed-dependent) parameters."""
    return CELLS[config.kind](config.input_size, config.hidden_size, config.output_size)


def initial_state(config: ModelConfig, batch_size: int = 1, dtype: torch.dtype = torch.float32):
    """The config's initial state as tensors, one (batch_size, size) per state tensor."""
    return tuple(torch.tensor([row], dtype=dtype).repeat(batch_size, 1) for row in config.initial)
