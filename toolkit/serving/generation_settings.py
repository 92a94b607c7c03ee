"""What a sampled generation asks for (`GenerationSettings`), and a request's parameters checked
into it (`settings_from`): the sampler's strategy and settings (`runtime.Sampler`'s), the seed, how
many tokens at most, and the stop tokens and texts that end it early."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import runtime
from runtime.sampling import STRATEGIES, draw_strategy

from .protocol import BadRequest

DEFAULT_MAX_TOKENS = 100  # a request's max_tokens when it names none
MAX_STOP_TEXTS, MAX_STOP_TEXT_CHARS = 16, 256  # stop_text: at most 16 strings of at most 256 characters


@dataclass(frozen=True)
class GenerationSettings:
    """What one generation asks for: the sampler's settings (`runtime.Sampler`'s), how many tokens
    at most, and the stop tokens and texts that end it early."""

    strategy: str = "greedy"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: frozenset[int] = frozenset()  # read once per token on the scheduler thread: a set
    stop_text: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", frozenset(self.stop))

    def sampler(self) -> runtime.Sampler:
        """A new sampler of these settings (InputValueError for settings it refuses)."""
        return runtime.Sampler(
            self.strategy, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed
        )

    @property
    def draw_key(self) -> tuple:
        """Rows with equal keys are drawn by one call of the pinned draw."""
        return (self.strategy, self.temperature, self.top_k, self.top_p)


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadRequest(f"parameter '{name}' must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise BadRequest(f"parameter '{name}' must be from {low} to {high}, got {value}")
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadRequest(f"parameter '{name}' must be a number, got {type(value).__name__}")
    return float(value)


def _stop_ids(value: Any, vocabulary: int) -> frozenset[int]:
    """``stop``: a token id, a list of ids, or a string of ids separated by commas (gRPC parameters
    are scalars); at most ``vocabulary`` of them (counted before any is read), each in range."""
    count = value.count(",") + 1 if isinstance(value, str) else len(value) if isinstance(value, list) else 1
    if count > vocabulary:
        raise BadRequest(f"parameter 'stop' holds {count} token ids, more than the vocabulary's {vocabulary}")
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise BadRequest(f"parameter 'stop' must be token ids separated by commas, got {value!r:.60}") from None
    items = value if isinstance(value, list) else [value]
    return frozenset(_int("stop", item, 0, vocabulary - 1) for item in items)


def _stop_texts(value: Any) -> tuple[str, ...]:
    """``stop_text``: a string or a list of at most MAX_STOP_TEXTS distinct strings, each of 1 to
    MAX_STOP_TEXT_CHARS characters (each is looked for in the text's tail at every token)."""
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_STOP_TEXTS:
        raise BadRequest(f"parameter 'stop_text' holds {len(items)} strings, the limit is {MAX_STOP_TEXTS}")
    if not all(isinstance(item, str) and 1 <= len(item) <= MAX_STOP_TEXT_CHARS for item in items):
        raise BadRequest(
            f"parameter 'stop_text' must be a string of 1 to {MAX_STOP_TEXT_CHARS} characters or a list of them"
        )
    return tuple(dict.fromkeys(items))


def settings_from(parameters: dict[str, Any], vocabulary: int, max_tokens: int, has_text: bool) -> GenerationSettings:
    """A request's generation parameters checked (BadRequest naming the first wrong one; the
    sampler's own checks as the runtime words them): ``strategy`` (greedy, temperature, top_k,
    top_p; default: `runtime.sampling.draw_strategy`), ``temperature``, ``top_k``, ``top_p``, ``seed``, ``max_tokens``
    (1 to ``max_tokens``), ``stop`` (token ids), ``stop_text`` (needs a vocabulary)."""
    given: dict[str, Any] = {}
    strategy = draw_strategy(
        parameters.get("strategy"),
        temperature=parameters.get("temperature"),
        top_k=parameters.get("top_k"),
        top_p=parameters.get("top_p"),
        seed=parameters.get("seed"),
    )
    if strategy not in STRATEGIES:
        raise BadRequest(f"parameter 'strategy' must be one of {', '.join(STRATEGIES)}, got {strategy!r:.40}")
    given["strategy"] = strategy
    if parameters.get("temperature") is not None:
        given["temperature"] = _number("temperature", parameters["temperature"])
    if parameters.get("top_k") is not None:
        given["top_k"] = _int("top_k", parameters["top_k"], 1, 1 << 31)
    if parameters.get("top_p") is not None:
        given["top_p"] = _number("top_p", parameters["top_p"])
    if parameters.get("seed") is not None:
        given["seed"] = _int("seed", parameters["seed"], 0, (1 << 64) - 1)
    if parameters.get("max_tokens") is not None:
        given["max_tokens"] = _int("max_tokens", parameters["max_tokens"], 1, max_tokens)
    if parameters.get("stop") is not None:
        given["stop"] = _stop_ids(parameters["stop"], vocabulary)
    if parameters.get("stop_text") is not None:
        if not has_text:
            raise BadRequest("parameter 'stop_text' needs a model with a vocabulary; send 'stop' (token ids)")
        given["stop_text"] = _stop_texts(parameters["stop_text"])
    settings = GenerationSettings(**given)
    settings.sampler()  # the sampler's own checks, now (InputValueError: a 400 at the fronts)
    return settings
