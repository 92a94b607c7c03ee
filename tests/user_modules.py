"""Step modules a user might bring, for the bring-your-own tests (importable as tests.user_modules)."""

from __future__ import annotations

import torch
from torch import nn


class TwoStateLeaky(nn.Module):
    """A leaky two-state recurrence with a biased readout: forward(x, fast, slow) -> (y, fast, slow)."""

    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(1, hidden)
        self.rec = nn.Linear(2 * hidden, hidden, bias=False)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor, fast: torch.Tensor, slow: torch.Tensor):
        fast_next = torch.tanh(self.inp(x) + self.rec(torch.cat((fast, slow), 1)))
        slow_next = 0.9 * slow + 0.1 * fast_next
        return self.out(torch.cat((fast_next, slow_next), 1)), fast_next, slow_next


def make_two_state() -> TwoStateLeaky:
    torch.manual_seed(5)
    return TwoStateLeaky(4)


MAKE_TWO_STATE = "tests.user_modules:make_two_state"  # make_two_state by name, as a user passes --factory


class NotScriptable(nn.Module):
    """Calls a Python builtin TorchScript cannot compile."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h_next = torch.tanh(torch.cat((x, h), 1) @ self.w)
        print(f"{h_next.shape}", end="", file=open("/dev/null", "w"))  # noqa: SIM115
        return h_next[:, :1], h_next


class WrongProtocol(nn.Module):
    """Returns only the output, not the new state."""

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        return x * 2


class DataDependent(nn.Module):
    """Branches on a tensor's value: TorchScript keeps the If, torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4) * 0.5)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h_next = torch.tanh(torch.cat((x, h), 1) @ self.w)
        if bool(h_next.sum() > 0):
            h_next = h_next * 0.5
        return h_next[:, :1], h_next


class FourState(nn.Module):
    """Two layers of (h, c)-like state of different sizes, two inputs, three outputs:
    forward(x, h0, c0, h1, c1) -> (y, h0, c0, h1, c1)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer0 = nn.Linear(2 + 3 + 2, 3 + 2)
        self.layer1 = nn.Linear(3 + 4 + 1, 4 + 1)
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, h1: torch.Tensor, c1: torch.Tensor):
        h0_next, c0_next = torch.tanh(self.layer0(torch.cat((x, h0, c0), 1))).split((3, 2), 1)
        h1_next, c1_next = torch.tanh(self.layer1(torch.cat((h0_next, h1, c1), 1))).split((4, 1), 1)
        return self.out(h1_next), h0_next, c0_next, h1_next, c1_next


FOUR_STATES = [("h0", 3), ("c0", 2), ("h1", 4), ("c1", 1)]


def make_four_state() -> FourState:
    torch.manual_seed(11)  # a factory that seeds the global generator, as users' factories do
    return FourState()


class PythonOnly(nn.Module):
    """Calls a lambda in forward: torch.export traces it, TorchScript cannot compile it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4) * 0.5)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        squash = lambda v: torch.tanh(v)  # noqa: E731
        h_next = squash(torch.cat((x, h), 1) @ self.w)
        return h_next[:, :1], h_next


class TokenStep(nn.Module):
    """A token model as users write one: x carries token ids as floats, cast to long for an embedding."""

    def __init__(self, vocabulary: int = 5, hidden: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, hidden)
        self.rec = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h_next = torch.tanh(self.embed(x[:, 0].long()) + self.rec(h))  # a negative id raises IndexError
        return self.out(h_next), h_next


class LayeredGRU(nn.Module):
    """nn.GRU of two layers behind the step protocol: one state tensor per layer."""

    def __init__(self, hidden: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, num_layers=2)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor):
        ys, h = self.gru(x.unsqueeze(0), torch.stack((h0, h1)))  # (1, batch, hidden), (layers, batch, hidden)
        return self.out(ys[0]), h[0], h[1]


class CharGRU(nn.Module):
    """A character model as people write one: a token and a category in, logits out, nn.GRU's
    own (layers, batch, hidden) state; generation samples the next token from the logits."""

    def __init__(self, vocabulary: int = 11, categories: int = 3, embed: int = 5, hidden: int = 7) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, embed)
        self.gru = nn.GRU(embed + categories, hidden, num_layers=2)
        self.out = nn.Linear(hidden, vocabulary)

    def forward(self, token: torch.Tensor, category: torch.Tensor, h: torch.Tensor):
        step = torch.cat([self.embed(token), category], dim=1).unsqueeze(0)
        ys, h_next = self.gru(step, h)
        return self.out(ys[0]) * 3.0, h_next  # x3: peaked distributions, so sampling is not near uniform


def make_char_gru() -> CharGRU:
    torch.manual_seed(5)
    return CharGRU()


MAKE_CHAR_GRU = "tests.user_modules:make_char_gru"
CHAR_GRU_SIGNATURE = {
    "inputs": [{"name": "token", "vocabulary": 11}, ("category", 3)],
    "outputs": [{"name": "logits", "vocabulary": 11}],
    "states": [{"name": "h", "shape": [2, "batch", 7]}],
}


class TwoInputs(nn.Module):
    """A forecaster with two inputs: the last value (fed back) and a weekday token (held)."""

    def __init__(self, days: int = 7, hidden: int = 6) -> None:
        super().__init__()
        self.day = nn.Embedding(days, hidden)
        self.cell = nn.LSTMCell(1, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, value: torch.Tensor, day: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        h_next, c_next = self.cell(value, (h + self.day(day), c))
        return self.out(h_next), h_next, c_next


def make_two_inputs() -> TwoInputs:
    torch.manual_seed(6)
    return TwoInputs()


MAKE_TWO_INPUTS = "tests.user_modules:make_two_inputs"
TWO_INPUTS_SIGNATURE = {
    "inputs": [("value", 1), {"name": "day", "vocabulary": 7}],
    "outputs": [("next_value", 1)],
    "states": [("h", 6), ("c", 6, 0.1)],
    "feedback": {"output": "next_value", "input": "value"},
}


# ---- factories as careless users pass them (rnn export-module calls FACTORY with no arguments) ----


class SizedCell(nn.Module):
    """A cell whose constructor needs its size, as public recurrent modules' do: forward(x, h) -> (y, h)."""

    def __init__(self, hidden: int, *, scale: float = 1.0) -> None:
        super().__init__()
        self.rec = nn.Linear(1 + hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h_next = torch.tanh(self.rec(torch.cat((x, h), 1))) * self.scale
        return self.out(h_next), h_next


def make_sized_cell() -> SizedCell:
    """The fix the error message names: a function that builds the module with its arguments."""
    torch.manual_seed(8)
    return SizedCell(4)


def make_failing() -> nn.Module:
    """A factory whose own code fails (a missing file, a wrong size)."""
    raise FileNotFoundError("pretrained.pt")


def make_not_a_module() -> dict:
    """A factory that returns the state_dict instead of the module."""
    torch.manual_seed(8)
    return SizedCell(4).state_dict()


def make_python_only() -> PythonOnly:
    torch.manual_seed(9)
    return PythonOnly()


SIZED_CELL = "tests.user_modules:SizedCell"  # the class itself, which needs hidden
MAKE_SIZED_CELL = "tests.user_modules:make_sized_cell"
MAKE_FAILING = "tests.user_modules:make_failing"
MAKE_NOT_A_MODULE = "tests.user_modules:make_not_a_module"
MAKE_PYTHON_ONLY = "tests.user_modules:make_python_only"
