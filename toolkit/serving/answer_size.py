"""The size of an answer, worked out before anything runs (issue 23: a 948-byte request asking for
160 sequences x 100,000 steps ran the model for half a second and grew the server by 200 MB before
its 384 MB JSON answer was refused).

A request's answer is planned from its shapes and the model's signature (`planned_outputs`): for
NAME, NAME-predict and NAME-generate each wanted output holds batch x steps x its per-step values
(the new states batch x their values, when they are wanted); for a sampled NAME-generate the
tokens hold at most ``max_tokens`` ids and its text at most ``max_tokens`` x the vocabulary's
longest token. Each output is then counted in the encoding its front writes (`Encoding`): JSON at
most JSON_VALUE_BYTES a value (a float32 written by Python is at most 23 characters and a comma),
text as JSON at most JSON_ESCAPE bytes a UTF-8 byte; binary tensor data (HTTP's extension) and
gRPC's raw contents the datatype's bytes, a string its 4-byte length and its bytes. A request
whose answer would pass the limit is refused (`TooLarge`: 413, gRPC RESOURCE_EXHAUSTED) before
the model runs or a sequence changes: the fronts call `check_answer` before `Engine.infer`, the
generate extension `check_generated` before a generation starts. Streamed answers (server-sent
events, gRPC decoupled responses) are sent a group of tokens at a time and have no total to check.

A request the engine will refuse anyway (no first input, a shape of the wrong rank, a bad
``steps`` or ``max_tokens``) has no plan: it is answered with the engine's own error.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

import runtime
from runtime.vocabulary import TEXT_OUTPUT

from .core import Engine, ServedName
from .generate_calls import SAMPLED, TOKENS_OUTPUT, words
from .generation_settings import DEFAULT_MAX_TOKENS
from .protocol import BYTES, DATATYPES, VERSION, InferRequest, TooLarge
from .tensors import GENERATE, STEPS_INPUT, lead_axes

JSON_VALUE_BYTES = {"f": 24, "i": 21, "u": 21, "b": 6}  # at most, per value written as JSON (with its comma)
JSON_ESCAPE = 6  # at most, per UTF-8 byte of a string written as JSON (``\u00XX``; non-ASCII is escaped)
STRING_FRAME = 4  # a string's 4-byte length (binary) or its quotes and comma (JSON)
OUTPUT_HEAD_BYTES = 160  # an output's datatype, shape and parameters (its name counted apart)
ANSWER_HEAD_BYTES = 256  # the model's version, the answer's parameters (the model's name and the id counted apart)

Planned = tuple[str, str, int, int]  # an output before it is made: name, datatype, values, bytes per string


class Encoding:
    """How a front writes an answer's outputs: each binary (``binary`` by name, else
    ``binary_default``) as its datatype's bytes, else as JSON; refused past ``limit`` bytes (the
    option ``limit_name`` sets)."""

    __slots__ = ("binary", "binary_default", "limit", "limit_name", "offers_binary")

    def __init__(
        self,
        limit: int,
        binary_default: bool,
        binary: Mapping[str, bool] | None = None,
        limit_name: str = "--max-body-bytes",
        offers_binary: bool = True,
    ) -> None:
        self.limit, self.binary_default, self.binary = limit, binary_default, binary or {}
        self.limit_name, self.offers_binary = limit_name, offers_binary  # whether the route has binary outputs

    def json(self, name: str) -> bool:
        return not self.binary.get(name, self.binary_default)

    def size(self, planned: list[Planned], head: int) -> int:
        """The most bytes ``planned`` outputs take in this encoding, with their headers and the
        answer's (``head``: the bytes of the model's name and the request's id it repeats)."""
        size = ANSWER_HEAD_BYTES + head
        for name, datatype, values, string_bytes in planned:
            json = self.json(name)
            if datatype == BYTES:
                each = STRING_FRAME + (JSON_ESCAPE * string_bytes if json else string_bytes)
            elif json:
                each = JSON_VALUE_BYTES[DATATYPES[datatype].kind]
            else:
                each = DATATYPES[datatype].itemsize
            size += OUTPUT_HEAD_BYTES + len(name) + values * each
        return size


class _Plan:
    """What the answers of one served name (an engine call) hold, made once: each output's values
    a stream takes a step (``a_step``) and once (a new state), where a request's batch and steps
    are, and the bytes a stream-step takes in the costliest encoding (JSON), for a quick pass."""

    __slots__ = (
        "batch_axis",
        "expected_rank",
        "first",
        "generate",
        "outputs",
        "quick_head",
        "quick_once",
        "quick_step",
    )

    def __init__(self, named: ServedName, model: runtime.Model) -> None:
        datatypes = {spec.name: spec.datatype for spec in named.outputs}
        per_step = [(spec.name, datatypes[spec.name], spec.count, 0) for spec in model.outputs]
        once = [(output, datatypes[output], 0, spec.count) for output, spec in zip(model.state_outputs, model.states)]
        self.outputs = tuple(per_step + once)  # (name, datatype, values a step, values once)
        self.first = model.input_names[0]
        self.batch_axis, steps_axis = lead_axes(model, named.call)
        self.expected_rank = len(model.inputs[0].shape) + (steps_axis is not None)
        self.generate = None if steps_axis is not None else named.call == GENERATE  # None: steps on an axis
        costliest = max(JSON_VALUE_BYTES.values())  # no encoding writes a number in more bytes
        self.quick_step = costliest * sum(a_step for _, _, a_step, _ in self.outputs)
        self.quick_once = costliest * sum(values for _, _, _, values in self.outputs)
        self.quick_head = ANSWER_HEAD_BYTES + sum(OUTPUT_HEAD_BYTES + len(name) for name, *_ in self.outputs)

    def batch_and_steps(self, inputs: dict[str, np.ndarray], max_steps: int) -> tuple[int, int]:
        """(batch, steps) of a request; (0, 0) where the engine refuses its inputs anyway."""
        first = inputs.get(self.first)
        if first is None or first.ndim != self.expected_rank:
            return 0, 0
        if self.generate is None:  # predict: steps along the other lead axis
            return first.shape[self.batch_axis], first.shape[1 - self.batch_axis]
        if not self.generate:
            return first.shape[self.batch_axis], 1
        steps = inputs.get(STEPS_INPUT)
        if steps is None or steps.shape != (1,) or steps.dtype != np.int64 or not 1 <= int(steps[0]) <= max_steps:
            return 0, 0
        return first.shape[self.batch_axis], int(steps[0])


_PLANS: weakref.WeakKeyDictionary[ServedName, _Plan] = weakref.WeakKeyDictionary()
_LONGEST: weakref.WeakKeyDictionary[ServedName, int] = weakref.WeakKeyDictionary()  # the longest token's bytes


def _plan(named: ServedName, model: runtime.Model) -> _Plan:
    plan = _PLANS.get(named)
    if plan is None:
        plan = _PLANS[named] = _Plan(named, model)
    return plan


def _longest_token_bytes(named: ServedName, vocabulary: Any) -> int:
    longest = _LONGEST.get(named)
    if longest is None:
        longest = _LONGEST[named] = max((len(t.encode("utf-8")) for t in vocabulary.tokens), default=0)
    return longest


def _sampled(
    named: ServedName, model: runtime.Model, parameters: dict[str, Any], max_steps: int
) -> list[Planned] | None:
    """A sampled generation's answer: at most ``max_tokens`` token ids and, with a vocabulary,
    their text (None: ``max_tokens`` is one the generation refuses)."""
    tokens = parameters.get("max_tokens")
    if tokens is None:
        tokens = DEFAULT_MAX_TOKENS
    elif isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or not 1 <= tokens <= max_steps:
        return None
    planned: list[Planned] = [(TOKENS_OUTPUT, "INT64", int(tokens), 0)]
    vocabulary = words(model)
    if vocabulary is not None:
        planned.append((TEXT_OUTPUT, BYTES, 1, int(tokens) * _longest_token_bytes(named, vocabulary)))
    return planned


def planned_outputs(named: ServedName, request: InferRequest, max_steps: int) -> list[Planned] | None:
    """The outputs the answer to ``request`` of ready ``named`` holds at most, each wanted one
    (every one when the request names none); None where the engine refuses the request anyway."""
    model = named.served.model
    if model is None:
        return None
    if named.handler is SAMPLED:
        planned = _sampled(named, model, request.parameters, max_steps)
    elif named.handler is not None:
        return None  # a plugged-in call this module does not know
    else:
        plan = _plan(named, model)
        batch, steps = plan.batch_and_steps(request.inputs, max_steps)
        if not batch:
            return None
        planned = [(name, kind, batch * (steps * a_step + once), 0) for name, kind, a_step, once in plan.outputs]
    if planned is None or request.outputs is None:
        return planned
    wanted = set(request.outputs)
    return [output for output in planned if output[0] in wanted]


def _advice(named: ServedName, encoding: Encoding, planned: list[Planned]) -> str:
    ways = []
    if encoding.offers_binary and any(encoding.json(name) and datatype != BYTES for name, datatype, _, _ in planned):
        ways.append("binary tensor data (parameter binary_data_output)")
    ways.append("fewer tokens (max_tokens)" if named.handler is not None else "fewer steps or sequences")
    return " or ".join(ways)


def refuse_large(named: ServedName, encoding: Encoding, planned: list[Planned], request_id: str = "") -> None:
    """TooLarge when ``planned`` outputs of ``named``'s answer (which repeats ``request_id``) pass
    the encoding's limit."""
    size = encoding.size(planned, len(named.name) + len(request_id))
    if size > encoding.limit:
        raise TooLarge(
            f"the answer would be up to {size} bytes, the limit is {encoding.limit} ({encoding.limit_name}): "
            f"ask for {_advice(named, encoding, planned)}"
        )


def check_answer(engine: Engine, request: InferRequest, version: str, encoding: Encoding) -> None:
    """Refuses (TooLarge) ``request`` before the engine runs it when its answer, in ``encoding``,
    would pass the limit; leaves every other refusal (an unknown model, a bad input) to the engine."""
    named = engine.names.get(request.model)
    model = None if named is None or version not in ("", VERSION) else named.served.model
    if model is None:  # unknown, another version, not ready: the engine's answer
        return
    max_steps = engine.settings.limits.max_steps
    if named.handler is None:  # the quick pass (every step of a sequence comes here): small even as JSON
        plan = _plan(named, model)
        batch, steps = plan.batch_and_steps(request.inputs, max_steps)
        head = plan.quick_head + len(named.name) + len(request.id)
        if head + batch * (steps * plan.quick_step + plan.quick_once) <= encoding.limit:
            return
    planned = planned_outputs(named, request, max_steps)
    if planned is not None:
        refuse_large(named, encoding, planned, request.id)


def check_generated(engine: Engine, named: ServedName, parameters: dict[str, Any]) -> None:
    """Refuses (TooLarge) a generate-extension request (one JSON answer) whose tokens and text
    would pass --max-body-bytes, before its generation starts."""
    limits = engine.settings.limits
    model = named.served.model
    planned = None if model is None else _sampled(named, model, parameters, limits.max_steps)
    if planned is not None:
        refuse_large(named, Encoding(limits.max_body_bytes, binary_default=False, offers_binary=False), planned)
