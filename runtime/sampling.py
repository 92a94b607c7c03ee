"""Draws the next token from a model's logits: greedy, temperature, top-k or top-p. Numpy only.

The draw is pinned here once, float32 throughout; the fused ONNX forms (`export.sampling`) and
the eager PyTorch reference (`export.sampling_reference.eager_sample`) implement the same steps:

1. Greedy: ``token = argmax(logits)``, the first maximum (lowest id). No uniforms are used.
2. ``z = logits / T`` (a float32 division, T = the temperature).
3. Top-k (``1 <= k < V``): the threshold is the k-th largest ``z`` of the row; every id whose
   ``z`` is below it becomes ``-inf``. Ties at the threshold are all kept (more than k ids may
   stay). k >= V keeps every id.
4. ``p = softmax(z)`` = ``exp(z - max z) / sum(exp(z - max z))``.
5. Top-p (``0 < top_p < 1``): ``s`` = p sorted descending, ``c = cumsum(s)``;
   ``m = min(count(c < top_p), V - 1)``; the threshold is ``s[m]`` (the smallest probability of
   the shortest prefix whose mass reaches top_p); every id whose ``p`` is below it gets ``p = 0``.
   Ties at the threshold are all kept, so the kept set does not depend on how a sort orders
   equal values. top_p >= 1 keeps every id.
6. ``cdf = cumsum(p)`` in id order, ``total = cdf[V - 1]`` (not renormalised: the filtered mass).
7. ``u`` is clipped to ``[0, 1 - 2**-24]`` (`U_MAX`; the uniforms `Sampler.uniforms` draws are
   already in it) and ``token = min(count(cdf <= u * total), V - 1)``: the first id whose cdf
   exceeds ``u * total``. For u in range the min never binds (``u * total < total`` in float32),
   and the drawn id always has ``p > 0``.

Implementations round ``exp``, the sums and the division differently in the last bit, so two
of them can part where ``u * total`` lies within a few float32 ulps of a cdf value: a CDF tie
(`export.sampling_reference.first_parting` reports it as such).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from .errors import InputValueError, ShapeError

STRATEGIES = ("greedy", "temperature", "top_k", "top_p")
# The largest uniform of the draw: 1 - 2**-24, the largest float32 below 1 (numpy's float32 draws
# are multiples of 2**-24 in [0, 1)); a larger u is clipped to it, so u * total < total.
U_MAX = np.float32(1.0 - 2.0**-24)
# What feeds() gives the fused form for a filter that is off (top_k = V is fed as the vocabulary).
TOP_P_OFF = 1.0
# The smallest temperature: logits / T is computed in float32, and a smaller T can overflow it to
# infinity (then NaN), which would draw token 0 silently.
MIN_TEMPERATURE = 1e-6


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def draw_strategy(
    strategy: str | None = None,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> str:
    """The strategy a caller's sampling options ask for, one rule for the CLI (with or without Ray),
    the server and the Node and C++ examples: "greedy" unless one of them asks for a draw; then
    ``strategy`` where given, else "top_k" / "top_p" where ``top_k`` / ``top_p`` is given, else
    "temperature" (``temperature`` or ``seed`` alone ask for it). The value is checked by `Sampler`."""
    if all(value is None for value in (strategy, temperature, top_k, top_p, seed)):
        return "greedy"
    if strategy is not None:
        return strategy
    return "top_k" if top_k is not None else "top_p" if top_p is not None else "temperature"


class Sampler:
    """Draws tokens from logits with its own ``numpy.random.Generator`` (never the global one).

    ``strategy`` "greedy" (argmax), "temperature", "top_k" (needs ``top_k`` >= 1) or "top_p"
    (needs ``top_p`` in (0, 1]); the last three divide the logits by ``temperature`` (> 0).
    Uniforms are drawn up front (`uniforms`), so the step loop, the fused forms and eager PyTorch
    can be fed the same ones; the draw itself is in the module docstring.
    """

    def __init__(
        self,
        strategy: str = "temperature",
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise InputValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
        if not _is_number(temperature) or not (math.isfinite(temperature) and MIN_TEMPERATURE <= temperature <= 1e30):
            raise InputValueError(
                f"temperature must be a number from {MIN_TEMPERATURE:g} to 1e30 (for the most likely token use "
                f"strategy 'greedy'), got {temperature!r}"
            )
        if strategy == "top_k":
            if not isinstance(top_k, Integral) or isinstance(top_k, bool) or top_k < 1:
                raise InputValueError(f"strategy 'top_k' needs top_k, an int >= 1, got {top_k!r}")
        elif top_k is not None:
            raise InputValueError(f"top_k is used only by strategy 'top_k', not {strategy!r}; got top_k={top_k!r}")
        if strategy == "top_p":
            if not _is_number(top_p) or not (0.0 < top_p <= 1.0):
                raise InputValueError(f"strategy 'top_p' needs top_p, a number in (0, 1], got {top_p!r}")
        elif top_p is not None:
            raise InputValueError(f"top_p is used only by strategy 'top_p', not {strategy!r}; got top_p={top_p!r}")
        if seed is not None and (not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0):
            raise InputValueError(f"seed must be None or an int >= 0, got {seed!r}")
        self._strategy = strategy
        self._temperature = float(temperature)
        self._top_k = None if top_k is None else int(top_k)
        self._top_p = None if top_p is None else float(top_p)
        self._seed = None if seed is None else int(seed)
        self._rng = np.random.default_rng(self._seed)

    @property
    def strategy(self) -> str:
        return self._strategy

    @property
    def greedy(self) -> bool:
        return self._strategy == "greedy"

    @property
    def temperature(self) -> float:
        return self._temperature

    @property
    def top_k(self) -> int | None:
        return self._top_k

    @property
    def top_p(self) -> float | None:
        return self._top_p

    @property
    def seed(self) -> int | None:
        return self._seed

    def __repr__(self) -> str:
        parts = [repr(self._strategy)]
        if not self.greedy:
            parts.append(f"temperature={self._temperature!r}")
        if self._top_k is not None:
            parts.append(f"top_k={self._top_k!r}")
        if self._top_p is not None:
            parts.append(f"top_p={self._top_p!r}")
        parts.append(f"seed={self._seed!r}")
        return f"Sampler({', '.join(parts)})"

    def uniforms(self, steps: int, batch: int) -> np.ndarray:
        """The next ``steps`` x ``batch`` uniforms in [0, 1), float32 (steps, batch); advances the
        generator. Greedy draws none: zeros, the generator untouched."""
        for name, value in (("steps", steps), ("batch", batch)):
            if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
                raise InputValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.greedy:
            return np.zeros((int(steps), int(batch)), np.float32)
        return self._rng.random((int(steps), int(batch)), dtype=np.float32)

    def feeds(self, vocabulary: int) -> dict[str, np.ndarray]:
        """The settings the fused ``rollout_sample`` form takes: ``temperature`` float32 [1],
        ``top_k`` int64 [1] (the vocabulary when off) and ``top_p`` float32 [1] (1 when off)."""
        if not isinstance(vocabulary, Integral) or isinstance(vocabulary, bool) or vocabulary < 1:
            raise InputValueError(f"vocabulary must be an int >= 1, got {vocabulary!r}")
        top_k = int(vocabulary) if self._top_k is None else min(self._top_k, int(vocabulary))
        return {
            "temperature": np.array([self._temperature], np.float32),
            "top_k": np.array([top_k], np.int64),
            "top_p": np.array([TOP_P_OFF if self._top_p is None else self._top_p], np.float32),
        }

    def draw(self, logits: Any, u: Any) -> np.ndarray:
        """Tokens int64 (batch,) from ``logits`` (batch, V) and one uniform a row ``u`` (batch,)."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] < 1 or logits.dtype.kind not in "fiu":
            raise ShapeError(f"logits must be (batch, vocabulary) float32, got {logits.shape} {logits.dtype}")
        logits = logits.astype(np.float32, copy=False)
        if self.greedy:
            return np.argmax(logits, axis=1).astype(np.int64)
        u = np.asarray(u)
        if u.shape != (logits.shape[0],) or u.dtype.kind != "f":
            raise ShapeError(f"u must be (batch,) = ({logits.shape[0]},) float32, got {u.shape} {u.dtype}")
        return draw_tokens(logits, u.astype(np.float32, copy=False), self._temperature, self._top_k, self._top_p)


def draw_tokens(
    logits: np.ndarray, u: np.ndarray, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> np.ndarray:
    """The pinned draw (module docstring) of float32 ``logits`` (batch, V) at ``u`` (batch,)."""
    _, vocabulary = logits.shape
    z = logits / np.float32(temperature)  # (batch, V) float32
    if top_k is not None and top_k < vocabulary:
        k = max(int(top_k), 1)
        threshold = -np.partition(-z, k - 1, axis=1)[:, k - 1 : k]  # (batch, 1): the k-th largest
        z = np.where(z < threshold, np.float32(-np.inf), z)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True, dtype=np.float32)
    if top_p is not None and top_p < 1.0:
        ordered = -np.sort(-p, axis=1)  # (batch, V) descending
        mass = np.cumsum(ordered, axis=1, dtype=np.float32)
        m = np.minimum(np.count_nonzero(mass < np.float32(top_p), axis=1), vocabulary - 1)
        threshold = np.take_along_axis(ordered, m[:, None], axis=1)  # (batch, 1)
        p = np.where(p < threshold, np.float32(0.0), p)
    cdf = np.cumsum(p, axis=1, dtype=np.float32)  # (batch, V)
    x = np.clip(u, np.float32(0.0), U_MAX)[:, None] * cdf[:, -1:]  # (batch, 1)
    return np.minimum(np.count_nonzero(cdf <= x, axis=1), vocabulary - 1).astype(np.int64)
