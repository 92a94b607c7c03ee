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
