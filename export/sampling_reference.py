"""The eager PyTorch reference of the fused sampling rollouts: a torch step looped in Python with the pinned draw.

`eager_sample` loops a torch step callable with the draw `runtime.sampling` pins, in torch;
`first_parting`/`partings` find where two token streams part and whether the parting is a CDF tie.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from runtime.errors import ExportError
from runtime.sampling import U_MAX

TIE_ULPS = 4  # a parting whose drawn point lies within this many float32 ulps of a boundary is a tie

StepFn = Callable[[torch.Tensor, dict, tuple], tuple]


def module_step(
    module: torch.nn.Module,
    input_names: Sequence[str],
    token_input: str,
    output_names: Sequence[str],
    logits_output: str,
) -> StepFn:
    """A step callable for `eager_sample` from a module ``forward(*inputs, *states) -> (*outputs, *states)``."""
    index = list(output_names).index(logits_output)
    count = len(output_names)

    def step_fn(token: torch.Tensor, others: dict, states: tuple) -> tuple:
        values = module(*(token if name == token_input else others[name] for name in input_names), *states)
        return values[index], tuple(values[count:])

    return step_fn


def torch_draw(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pinned draw (`runtime.sampling`) in torch: (tokens (batch,) int64, cdf (batch, V), x (batch, 1))."""
    vocabulary = logits.shape[1]
    z = logits.float() / torch.tensor(temperature, dtype=torch.float32)
    if top_k is not None and top_k < vocabulary:
        kth = torch.topk(z, max(int(top_k), 1), dim=1).values[:, -1:]
        z = torch.where(z < kth, torch.tensor(float("-inf")), z)
    p = torch.softmax(z, dim=1)
    if top_p is not None and top_p < 1.0:
        ordered = torch.sort(p, dim=1, descending=True).values
        mass = torch.cumsum(ordered, dim=1)
        m = (mass < torch.tensor(top_p, dtype=torch.float32)).sum(1, keepdim=True).clamp_(max=vocabulary - 1)
        p = torch.where(p < torch.gather(ordered, 1, m), torch.tensor(0.0), p)
    cdf = torch.cumsum(p, dim=1)
    x = u.float().clamp(0.0, float(U_MAX)).unsqueeze(1) * cdf[:, -1:]
    tokens = (cdf <= x).sum(1).clamp_(max=vocabulary - 1)
    return tokens, cdf, x


def _gaps_ulps(cdf: np.ndarray, x: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Distance from x to the nearer cdf boundary of the drawn id, in float32 ulps at x (batch,)."""
    rows = np.arange(len(tokens))
    upper = cdf[rows, tokens]
    lower = np.where(tokens > 0, cdf[rows, np.maximum(tokens - 1, 0)], np.float32(0.0))
    x = x[:, 0]
    gap = np.minimum(np.abs(upper.astype(np.float64) - x), np.abs(x.astype(np.float64) - lower))
    return gap / np.spacing(np.maximum(np.abs(x), np.float32(np.finfo(np.float32).tiny)).astype(np.float32))


def _argmax_gaps_ulps(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] < 2:  # one id: nothing to part over
        return np.full(logits.shape[0], np.inf)
    top2 = -np.partition(-logits, 1, axis=1)[:, :2]
    gap = top2[:, 0].astype(np.float64) - top2[:, 1]
    return gap / np.spacing(np.maximum(np.abs(top2[:, 0]), np.float32(np.finfo(np.float32).tiny)).astype(np.float32))


@torch.no_grad()
def eager_sample(
    step_fn: StepFn,
    token0,
    others: dict,
    states: tuple,
    uniforms=None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    steps: int | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """Tokens int64 (steps, batch), the final states and the draws' gaps (steps, batch) from eager
    torch: ``step_fn(token, others, states) -> (logits, states)`` looped in Python, each token drawn
    with the pinned draw (`torch_draw`; greedy: argmax) at ``uniforms[t]`` (float32 (steps, batch);
    None for greedy, then ``steps`` is needed). A gap is the distance, in float32 ulps at the drawn
    point, from ``u * total`` to the nearer cdf boundary of the drawn id (greedy: from the maximum
    logit to the runner-up), what `first_parting` calls a tie when it is small."""
    token = torch.as_tensor(np.asarray(token0, dtype=np.int64))
    others = {k: torch.as_tensor(np.asarray(v)) for k, v in others.items()}
    current = tuple(torch.as_tensor(np.asarray(s, dtype=np.float32)) for s in states)
    if uniforms is None:
        if not greedy or steps is None:
            raise ExportError("eager_sample needs uniforms (steps, batch) unless greedy with steps given")
        total_steps = int(steps)
    else:
        uniforms = torch.as_tensor(np.asarray(uniforms, dtype=np.float32))
        total_steps = uniforms.shape[0]
    batch = token.shape[0]
    tokens = np.empty((total_steps, batch), np.int64)
    gaps = np.empty((total_steps, batch), np.float64)
    for t in range(total_steps):
        logits, current = step_fn(token, others, current)
        logits = logits.float()
        if greedy:
            token = logits.argmax(1)
            gaps[t] = _argmax_gaps_ulps(logits.numpy())
        else:
            token, cdf, x = torch_draw(logits, uniforms[t], temperature, top_k, top_p)
            gaps[t] = _gaps_ulps(cdf.numpy(), x.numpy(), token.numpy())
        tokens[t] = token.numpy()
    return tokens, tuple(s.numpy() for s in current), gaps


@dataclass(frozen=True)
class Parting:
    """Where two token streams first differ: ``step`` and ``stream`` (batch row), the tokens each
    side drew, the reference's gap there (float32 ulps, `eager_sample`) and whether that is a tie."""

    step: int
    stream: int
    expected: int
    actual: int
    gap_ulps: float | None
    tie: bool

    def describe(self) -> str:
        gap = "" if self.gap_ulps is None else f", gap {self.gap_ulps:.1f} ulps"
        kind = "a float32 tie" if self.tie else "not a tie"
        return f"step {self.step} stream {self.stream}: expected {self.expected}, got {self.actual}{gap} ({kind})"


def partings(expected_tokens, actual_tokens, gaps=None, *, ulps: float = TIE_ULPS) -> list[Parting]:
    """The first parting of every stream that parts, in stream order (tokens (steps, batch))."""
    expected, actual = np.asarray(expected_tokens), np.asarray(actual_tokens)
    if expected.shape != actual.shape:
        raise ExportError(f"token streams of different shapes: {expected.shape} and {actual.shape}")
    found = []
    differ = expected != actual
    for stream in np.flatnonzero(differ.any(axis=0)):
        t = int(np.argmax(differ[:, stream]))
        gap = None if gaps is None else float(np.asarray(gaps)[t, stream])
        found.append(
            Parting(
                t, int(stream), int(expected[t, stream]), int(actual[t, stream]), gap, gap is not None and gap <= ulps
            )
        )
    return found


def first_parting(expected_tokens, actual_tokens, gaps=None, *, ulps: float = TIE_ULPS) -> Parting | None:
    """The earliest step (then the lowest stream) where ``actual_tokens`` parts from
    ``expected_tokens`` (both (steps, batch)), or None; a tie when the reference's gap there
    (`eager_sample`'s, in float32 ulps) is at most ``ulps``."""
    found = partings(expected_tokens, actual_tokens, gaps, ulps=ulps)
    return min(found, key=lambda p: (p.step, p.stream)) if found else None
