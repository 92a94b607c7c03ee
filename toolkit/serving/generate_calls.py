"""Sampled ``NAME-generate``, plugged into the engine (`core.plug`) for every model whose next
token is sampled from its logits: what the name takes and returns, and a request turned into a
running `generation.Generation` (stateless, or continuing a server-held sequence) for the infer
route of both fronts, Triton's generate extension (`generate_http`) and gRPC streaming
(`grpc_stream`).

A request holds the prompt as the token input (INT64 ``[1, T]``, T >= 1; or ``text_input``, BYTES
``[1]``, where the model has a vocabulary), the model's other inputs for one stream (held for
every step), and optionally the state tensors to start from (stateless requests and sequence
starts only). Its parameters: ``strategy`` (greedy, temperature, top_k, top_p; greedy unless
one of ``strategy``, ``temperature``, ``top_k``, ``top_p``, ``seed`` asks for a draw, as the CLI),
``temperature``, ``top_k``, ``top_p``, ``seed``, ``max_tokens``, ``stop`` (token ids, at most the
vocabulary's size), ``stop_text`` (at most 16 strings of at most 256 characters), and the sequence
parameters. A text prompt is encoded up to the server's max steps (413 past them). The answer
holds ``tokens`` (INT64 ``[1, n]``), ``text_output`` (BYTES ``[1]``, with a vocabulary: the tokens'
text; each output only where the request's outputs name it, if they name any, each once) and the
parameters ``finish_reason`` ("length" or "stop") and, in a sequence, ``sequence_version``. A
client that goes away before the answer (gRPC: the call cancelled, also while its request waits
for a busy sequence; HTTP: the connection closed) ends its generation and frees its slot. With a
``sequence_id`` the generation starts from the sequence's state and leaves it after the prompt and
every generated token (committed when the generation ends; a failed or abandoned one leaves the
sequence as it was).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

import runtime
from runtime.manifest import sampled_vocabulary
from runtime.vocabulary import TEXT_OUTPUT, TooManyTokens

from .core import GENERATE, Answer, Engine, Served, ServedName, plug
from .generation import CANCELLED, Generation, Generator
from .generation_settings import settings_from
from .protocol import DATATYPE_OF, BadRequest, InferRequest, ServeError, TensorMetadata, TooLarge
from .sequences import SequenceAsk, sequence_ask
from .tensors import check_tensors, wire_shape

ENCODE_INLINE = 4096  # a prompt's characters encoded on the loop; a longer one in a thread
TOKENS_OUTPUT = "tokens"  # the generated token ids, INT64 [1, n]
TEXT_INPUT = "text_input"  # the prompt as text (a vocabulary); the generated text: TEXT_OUTPUT


class Abandoned(ServeError):
    """A generation whose client went away: nothing of its sequence changes."""

    status = 499


@dataclass
class Started:
    """A running generation, and what its answer adds once it ended (its sequence's new version)."""

    generation: Generation
    finished: Awaitable[dict[str, Any]]


def words(model: runtime.Model | None) -> Any:
    """The model's vocabulary (`runtime.Vocabulary`: text in and out), or None."""
    return None if model is None else model.vocabulary


def prompt_text(array: np.ndarray) -> str:
    """The prompt of a ``text_input`` tensor (BYTES [1] or [1, 1]: one UTF-8 string)."""
    if array.dtype != object:
        got = DATATYPE_OF.get(array.dtype, str(array.dtype))
        raise BadRequest(f"input '{TEXT_INPUT}' must be BYTES (one UTF-8 string), got datatype {got}")
    if array.size != 1 or array.ndim not in (1, 2):
        raise BadRequest(f"input '{TEXT_INPUT}' must be BYTES of shape [1] (one string), got {list(array.shape)}")
    try:
        return bytes(array.reshape(-1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"input '{TEXT_INPUT}' is not UTF-8 text") from None


T = TypeVar("T")
Receive = Callable[[], Awaitable[dict[str, Any]]]  # an ASGI receive


async def disconnected(receive: Receive) -> None:
    """Returns once the HTTP client went away (its ASGI receive says ``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_gone(result: Awaitable[T], receive: Receive | None) -> T:
    """What ``result`` gives (every token of a generation, `Generation.result`; or a started one,
    `SampledGenerate.start`, which may wait for its sequence); with the HTTP front's ``receive``,
    Abandoned once its client went away (which cancels it: a generation's slot is freed at the next
    tick, a request waiting for its sequence never runs)."""
    if receive is None:
        return await result
    finished, watcher = asyncio.ensure_future(result), asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait({finished, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not finished.done():
            finished.cancel()  # leaving the generation's chunks (or the sequence's queue) cancels it
    if not finished.done() or finished.cancelled():
        raise Abandoned("the client went away before the generation ended")
    return finished.result()


class SampledGenerate:
    """The plugged-in call: sampled generation of a model with sampled feedback (`core.CallHandler`)."""

    def __init__(self) -> None:
        self._generators: weakref.WeakKeyDictionary[Served, Generator] = weakref.WeakKeyDictionary()

    def serves(self, model: runtime.Model) -> bool:
        return bool(model.signature.sampled)

    def tensors(self, model: runtime.Model) -> tuple[tuple[TensorMetadata, ...], tuple[TensorMetadata, ...]]:
        """The prompt (INT64 [1, -1]), the held inputs of one stream, the optional start states; the tokens out."""
        token = model.feedback.input
        inputs = [TensorMetadata(token, "INT64", (1, -1))]
        for spec in model.inputs:
            if spec.name != token:
                datatype = "INT64" if spec.is_tokens else "FP32"
                inputs.append(TensorMetadata(spec.name, datatype, tuple(1 if d == -1 else d for d in wire_shape(spec))))
        inputs += [TensorMetadata(s.name, "FP32", wire_shape(s), optional=True) for s in model.states]
        outputs = [TensorMetadata(TOKENS_OUTPUT, "INT64", (1, -1))]
        if words(model) is not None:
            inputs.append(TensorMetadata(TEXT_INPUT, "BYTES", (1,), optional=True))
            outputs.append(TensorMetadata(TEXT_OUTPUT, "BYTES", (1,)))
        return tuple(inputs), tuple(outputs)

    def generator(self, engine: Engine, served: Served) -> Generator:
        """The model's scheduler, made on first use (its steps wait up to the engine's queue delay)."""
        generator = self._generators.get(served)
        if generator is None:
            assert served.model is not None
            settings = engine.settings
            delay = settings.max_queue_delay_us / 1e6
            generator = Generator(
                served.model, delay=delay, max_batch=settings.max_batch, metrics=engine.metrics, name=served.name
            )
            self._generators[served] = generator
            weakref.finalize(served, generator.close)
        return generator

    def close(self, served: Served) -> None:
        """Stops the model's scheduler (`Engine.close`): its running generations end with
        Unavailable, later requests are refused with it."""
        generator = self._generators.get(served)
        if generator is not None:
            generator.close()

    async def run(self, engine: Engine, named: ServedName, request: InferRequest) -> Answer:
        """The infer route: every token (and its text) in one answer."""
        model = named.served.model
        assert model is not None
        wanted = engine.wanted_outputs(named, request.outputs)
        started = await until_gone(self.start(engine, named, request.inputs, request.parameters), request.receive)
        tokens = await until_gone(started.generation.result(), request.receive)
        answer = {**await started.finished, "finish_reason": started.generation.finish_reason}
        outputs = []
        if TOKENS_OUTPUT in wanted:
            outputs.append((TOKENS_OUTPUT, np.asarray(tokens, np.int64).reshape(1, -1)))
        if TEXT_OUTPUT in wanted:
            text = np.empty(1, object)
            text[0] = words(model).decode_drawn(tokens).encode("utf-8")
            outputs.append((TEXT_OUTPUT, text))
        return outputs, answer

    async def start(
        self, engine: Engine, named: ServedName, inputs: dict[str, np.ndarray], parameters: dict[str, Any], text=None
    ) -> Started:
        """Checks a request and starts its generation (in its sequence, with a ``sequence_id``);
        ``text`` is the prompt as text, instead of the token input (or ``inputs``' ``text_input``)."""
        served = named.served
        model = served.model
        assert model is not None
        token = model.feedback.input
        limits = engine.settings.limits
        inputs = await _text_prompt(named, inputs, text, limits.max_steps)
        ask = sequence_ask(parameters, engine.settings.client_sequence_ids)
        check_tensors(named.by_name, named.name, inputs, ask.key is not None and not ask.start, limits.max_elements)
        prompt = inputs[token][0]
        if prompt.size > limits.max_steps:
            raise TooLarge(f"the prompt has {prompt.size} tokens, the limit is {limits.max_steps}")
        held = {spec.name: inputs[spec.name][0] for spec in model.inputs if spec.name != token}
        state = _state(model, inputs)
        settings = settings_from(
            parameters, sampled_vocabulary(model.feedback, model.inputs), limits.max_steps, words(model) is not None
        )
        generator = self.generator(engine, served)
        if ask.key is None:
            finished = asyncio.get_running_loop().create_future()
            finished.set_result({})
            return Started(generator.submit(prompt, held, state, settings), finished)

        def submit(start_state: Any) -> Generation:
            return generator.submit(prompt, held, start_state, settings, keep_state=True)

        return await _in_sequence(engine, named, ask, state, submit)


async def _text_prompt(named: ServedName, inputs: dict[str, np.ndarray], text: str | None, limit: int) -> dict:
    """``inputs`` with the prompt's text (``text``, or ``text_input`` among them) as the token input,
    encoded up to ``limit`` tokens (TooLarge past it, refused by its length alone where it can be);
    a long text encoded off the loop."""
    model = named.served.model
    assert model is not None
    token = model.feedback.input
    if TEXT_INPUT in inputs:
        if text is not None:
            raise BadRequest(f"the request holds '{TEXT_INPUT}' twice")
        inputs = dict(inputs)
        text = prompt_text(inputs.pop(TEXT_INPUT))
    if text is None:
        return inputs
    vocabulary = words(model)
    if vocabulary is None:
        raise BadRequest(f"model '{named.name}' has no vocabulary: send the prompt as input '{token}'")
    if token in inputs:
        raise BadRequest(f"send the prompt as '{TEXT_INPUT}' or as input '{token}', not both")
    try:
        if len(text) <= ENCODE_INLINE:
            ids = vocabulary.encode(text, limit)
        else:
            ids = await asyncio.get_running_loop().run_in_executor(None, vocabulary.encode, text, limit)
    except TooManyTokens as error:
        raise TooLarge(f"the prompt is too long: {error}") from None
    return {**inputs, token: ids.reshape(1, -1)}


def _state(model: runtime.Model, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...] | None:
    """The request's start states (each at batch 1 in the model's layout), or None."""
    states = [inputs.get(spec.name) for spec in model.states]
    if all(s is None for s in states):
        return None
    if any(s is None for s in states):
        raise BadRequest(f"send every state input ({', '.join(model.state_names)}) or none")
    for spec, array in zip(model.states, states):
        if array.shape[spec.batch_axis] != 1:
            raise BadRequest(f"input '{spec.name}' must hold one stream (batch 1 at axis {spec.batch_axis})")
    return tuple(states)  # type: ignore[arg-type]


async def _in_sequence(
    engine: Engine, named: ServedName, ask: SequenceAsk, state: Any, submit: Callable[[Any], Generation]
) -> Started:
    """Starts a generation in sequence ``ask.key`` through the engine's sequence rules (its lock held
    until the generation ends; the new state committed only if it ended by itself)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Generation] = loop.create_future()

    async def run(named: ServedName, entry: Any, restart: bool, initial: Any, arrays: dict, wanted: set) -> dict:
        served = named.served
        assert served.pool is not None
        start_state = initial if restart else served.held_state(entry)
        generation = submit(start_state)
        ready.set_result(generation)
        try:
            await generation.wait_ended()  # the front reads its tokens
        except asyncio.CancelledError:
            generation.cancel()  # its caller went away: its slot freed at the next tick
            raise
        if generation.finish_reason == CANCELLED or generation.state is None:
            raise Abandoned("the client went away before the generation ended; the sequence is unchanged")
        stream = served.pool.open(generation.state)  # commit: a fresh stream holds the new state
        served.pool.close(entry.stream)
        entry.stream = stream
        return {}

    arrays = {"state": state}
    assert ask.key is not None
    task = loop.create_task(
        engine.run_sequence(named, ask.key, ask.start, ask.end, ask.version, arrays, set(), run=run)
    )
    task.add_done_callback(_retrieved)
    try:
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the caller went away while its request waited for the sequence
        task.cancel()  # waiting for the lock: it never runs; running: its generation is cancelled
        if ready.done():
            ready.result().cancel()
        raise
    if not ready.done():
        task.result()  # the sequence refused the request: its error
    finished = asyncio.ensure_future(_version(task, ask))
    finished.add_done_callback(_retrieved)
    return Started(ready.result(), finished)


async def _version(task: asyncio.Task, ask: SequenceAsk) -> dict[str, Any]:
    _, answered = await task
    return ask.answer(answered)  # sequence_version, and the id where the server drew it


def _retrieved(future: asyncio.Future) -> None:
    """Reads a background future's failure (its caller got it another way, or went away)."""
    if not future.cancelled():
        future.exception()


SAMPLED = SampledGenerate()
plug(GENERATE, SAMPLED)
