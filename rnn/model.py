"""The built-in step modules (the tutorial's Elman RNN, GRU, LSTM), their tolerances, eager loops.

Every step module follows one protocol: ``forward(x, *state) -> (y, *state)``, with
``input_size``, ``hidden_size``, ``output_size``, ``kind``, ``state_names`` and
``initial_state(batch_size)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

# Parity tolerances of the built-in cells, as max abs error against eager float32 PyTorch.
# The model's values are O(1) (tanh states, a readout of six of them), so absolute errors are
# the meaningful measure; relative errors are reported beside them. NOTES.md justifies them.
STEP_ATOL = 1e-5  # one step: a handful of float32 roundings, ~1e-7 in practice
SEQUENCE_ATOL = 1e-5  # teacher-forced: errors do not feed back through the input
ROLLOUT_ATOL = 1e-4  # 200 closed-loop steps: rounding differences feed back and grow
DIVERGENCE_ATOL = 1e-3  # the divergence horizon: first step whose error against float64 passes this
# Multi-step checks of a model whose loop amplifies rounding: an exported form may drift from
# eager float32 up to this many times as far as eager float32 drifts from float64 (correct
# float32 implementations differ per step by a few ulp: matmul order, tanh approximations).
DRIFT_ALLOWANCE = 10.0

W1_STD = 0.4
W2_STD = 0.3


class StepModule(nn.Module):
    """What the built-in cells share: their sizes and a zero initial state per state tensor."""

    kind = ""
    state_names: tuple[str, ...] = ("h",)

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size

    def initial_state(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Zeros, as the reference starts every epoch and every prediction."""
        dtype = next(self.parameters()).dtype
        return tuple(torch.zeros(batch_size, self.hidden_size, dtype=dtype) for _ in self.state_names)

    def sizes(self) -> dict[str, int]:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "output_size": self.output_size}


class ElmanRNN(StepModule):
    """``h' = tanh(cat(x, h) @ w1)``, ``y = h' @ w2``: no biases, as in the reference.

    ``w1`` is (input_size + hidden_size, hidden_size), ``w2`` is (hidden_size, output_size).
    """

    kind = "elman"
    state_names = ("h",)

    def __init__(self, input_size: int = 1, hidden_size: int = 6, output_size: int = 1) -> None:
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
    state_names = ("h",)

    def __init__(self, input_size: int = 1, hidden_size: int = 6, output_size: int = 1) -> None:
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
    state_names = ("h", "c")

    def __init__(self, input_size: int = 1, hidden_size: int = 6, output_size: int = 1) -> None:
        super().__init__(input_size, hidden_size, output_size)
        self.cell = nn.LSTMCell(input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h_next, c_next = self.cell(x, (h, c))  # (batch, hidden) each
        return self.readout(h_next), h_next, c_next


CELLS = {"elman": ElmanRNN, "gru": GRUStep, "lstm": LSTMStep}


@dataclass(frozen=True)
class StepInfo:
    """What export and verification need to know about any step module, built-in or a user's."""

    kind: str
    input_size: int
    output_size: int
    state_names: tuple[str, ...]
    initial: tuple[tuple[float, ...], ...]  # one row per state tensor, the same for every stream

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return tuple(len(row) for row in self.initial)

    def initial_state(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return tuple(torch.tensor([row], dtype=torch.float32).repeat(batch_size, 1) for row in self.initial)

    def sizes(self) -> dict[str, int]:
        return {"input_size": self.input_size, "hidden_size": self.state_sizes[0], "output_size": self.output_size}

    @classmethod
    def of(cls, model: nn.Module) -> StepInfo:
        """The info of a built-in cell (anything with the StepModule attributes)."""
        initial = tuple(tuple(float(v) for v in t[0]) for t in model.initial_state(1))
        return cls(model.kind, model.input_size, model.output_size, tuple(model.state_names), initial)

    @classmethod
    def of_checkpoint(cls, model: nn.Module, document: dict) -> StepInfo:
        """The info of a loaded checkpoint: from the module for a built-in cell, from config.json
        for a user's module (which carries no sizes or initial state of its own)."""
        sizes = document["model"]
        if sizes["kind"] != "custom":
            return cls.of(model)
        states = sizes["states"]
        return cls("custom", sizes["input_size"], sizes["output_size"], tuple(s["name"] for s in states),
                   tuple(tuple(float(v) for v in s["initial"]) for s in states))


def build_model(kind: str, input_size: int = 1, hidden_size: int = 6, output_size: int = 1) -> nn.Module:
    """A built-in step module by kind, with fresh (seed-dependent) parameters."""
    return CELLS[kind](input_size, hidden_size, output_size)


def predict_eager(step, xs: torch.Tensor, state: Sequence[torch.Tensor]):
    """Teacher-forced loop: ``xs`` (steps, batch, n_in) -> outputs (steps, batch, n_out), final state."""
    state = tuple(state)
    ys = []
    with torch.no_grad():
        for x in xs:
            y, *state = step(x, *state)
            ys.append(y)
    return torch.stack(ys), tuple(state)


def generate_eager(step, x0: torch.Tensor, steps: int, state: Sequence[torch.Tensor]):
    """Closed loop: each output is the next input. Returns (steps, batch, n_out), final state."""
    state = tuple(state)
    x = x0
    ys = []
    with torch.no_grad():
        for _ in range(steps):
            x, *state = step(x, *state)
            ys.append(x)
    return torch.stack(ys), tuple(state)
