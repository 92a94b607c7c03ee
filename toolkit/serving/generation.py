"""Sampled generation served: the front-independent scheduler behind ``NAME-generate`` of a model
whose next token is sampled from its logits (manifest ``feedback.via`` "sample").

A `Generator` serves one model. Each request becomes a `Generation` (its prompt, held inputs,
start state, `GenerationSettings` and its own `runtime.Sampler`); one scheduler thread steps every
active generation together: one batched `runtime.StreamPool.step` of the step model per tick (its
rows are each generation's own, bit for bit what it would get alone on the CPU), then one draw per
row with the generation's own settings and uniform (rows of equal settings drawn by one call of
the pinned draw, `runtime.sampling.draw_tokens`). A request that arrives while others run joins
the next tick, so its first token comes after one step, never after a long fused chunk; requests
that arrive within ``delay`` of an idle scheduler start together.

What a generation runs equals `runtime.Model` on its own: the prompt's tokens but the last are
fed teacher-forced (as the worked example warms its state up with `Model.predict`: one fused
`predict` as it is admitted, or batched steps of the newcomers when many arrive at once), then
the last prompt token is the first input of the sampled loop, whose tokens are
``model.generate({token: prompt[-1:], ...}, max_tokens, state, sampler=Sampler(..., seed))`` (the
sampler's uniforms are drawn in chunks from its generator: the same numbers as drawn at once). It
ends after ``max_tokens`` tokens, after a stop token or once its text holds a stop text (the stop
token or text included), or when cancelled (a client that went away): its stream is closed and
its slot freed at the next tick. With ``keep_state`` its last token is fed too (one more row of
a tick, its logits unused) and ``state`` holds the state after the prompt and every generated
token: a next request continuing from it equals one generation of the concatenation.

Tokens reach the caller on its asyncio loop, one wake-up of the loop per tick at most
(`Generation.chunks`). A streaming front groups them on purpose (``chunks(STREAM_GROUP,
STREAM_WAIT_S)``): the first token alone at once, then the tokens waiting once STREAM_GROUP of them
are or STREAM_WAIT_S passed since the last group; a reader that is behind gets them in larger groups.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

import runtime
from runtime.inputs import retell_nonfinite
from runtime.manifest import sampled_vocabulary
from runtime.sampling import draw_tokens
from runtime.streams import StreamPool, state_rows

from .generation_settings import GenerationSettings
from .metrics import Metrics
from .protocol import BadRequest, Unavailable, log

UNIFORM_CHUNK = 256  # uniforms a generation draws from its sampler at a time
# How a prompt warms its generation's state up as it is admitted: one fused run (`Model.predict`,
# batch 1) when at most FUSED_NEWCOMERS generations arrive in one round or the prompt has more than
# PROMPT_FUSED_MIN tokens; else the round's newcomers are stepped together, one batched step of the
# pool per prompt token, back to back before the round's tick (64 at once reached their first
# token after 79 ms with a predict each; fed a token per tick of the running batch, they paid
# len(prompt) - 1 ticks of it; stepped back to back, the steps alone).
PROMPT_FUSED_MIN = 32
FUSED_NEWCOMERS = 4
POOL_CAPACITY = 64  # the generation pool's first capacity (it grows by doubling)
LENGTH, STOP, CANCELLED = "length", "stop", "cancelled"  # why a generation ended
ERROR = "error"  # a generation that failed (its metrics' finish reason)
# How the streaming fronts group a generation's tokens after its first (sent alone, at once): a
# response once STREAM_GROUP tokens wait or STREAM_WAIT_S passed since the last one. Each response
# costs the front far more CPU than a token's share of a batched step (grpc.aio ~40 us a message,
# an SSE event ~15 us, a token's step and draw at 64 rows a few us), and a quiet loop would send
# one per 1-3 tokens; 8 tokens or 5 ms keeps the gap a reader sees between tokens within 5 ms
# (text still streams smoothly) while the front's cost per token drops up to 8 times.
STREAM_GROUP = 8
STREAM_WAIT_S = 0.005


# ---- one generation -----------------------------------------------------------------------------


class Generation:
    """One generation in progress: read its tokens with `chunks` (on the loop that submitted it),
    stop it with `cancel`. ``tokens`` are those `result` read (a reader of `chunks` keeps its own:
    nothing here holds a streamed generation's tokens once read); ``finish_reason`` is "length",
    "stop" or "cancelled" once it ended; ``state`` the state after every token (with
    ``keep_state``)."""

    def __init__(
        self,
        prompt: np.ndarray,
        held: dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None,
        settings: GenerationSettings,
        keep_state: bool,
    ) -> None:
        self.prompt, self.held, self.start_state, self.settings = prompt, held, state, settings
        self.keep_state = keep_state
        self.sampler = settings.sampler()
        self.loop = asyncio.get_running_loop()
        self.submitted = time.perf_counter()
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.state: tuple[np.ndarray, ...] | None = None
        self.cancelled = False  # set on the loop, read by the scheduler thread
        # the scheduler thread's own
        self.stream = -1
        self.over = False  # ended: its slot freed, its caller told
        self.current = int(prompt[-1])
        self.produced = 0
        self.text = ""  # the tail of its text that a stop text may still end in
        self.stop_keep = max(map(len, settings.stop_text), default=1) - 1  # that tail's length
        self.finishing = False  # its last token is being fed (keep_state): no draw
        self.finish: str | None = None  # why it ends, once its last token is fed
        self._uniforms = np.empty(0, np.float32)
        self._used = 0
        # the loop's own
        self._pending: list[int] = []
        self._ended = False
        self._group = 1  # tokens that wake the reader of `chunks` (1 until its first token went out)
        self._wait: float | None = None  # its chunks' wait (None: no timer)
        self._due = 0.0  # when the tokens waiting go out anyway (loop time)
        self._timer: asyncio.TimerHandle | None = None
        self._late = False  # the timer fired: what waits goes out
        self._wake = asyncio.Event()
        self._end_event = asyncio.Event()

    def cancel(self) -> None:
        """Stops the generation: the scheduler closes its stream at its next tick."""
        self.cancelled = True

    def uniform(self) -> np.float32:
        """The next uniform of its sampler (drawn UNIFORM_CHUNK at a time; greedy: zeros)."""
        if self._used == len(self._uniforms):
            left = self.settings.max_tokens - self.produced
            self._uniforms = self.sampler.uniforms(max(1, min(left, UNIFORM_CHUNK)), 1)[:, 0]
            self._used = 0
        self._used += 1
        return self._uniforms[self._used - 1]

    # ---- on the caller's loop ----

    def _deliver(self, tokens: list[int], reason: str | None, error: BaseException | None) -> None:
        self._pending.extend(tokens)
        if reason is not None or error is not None:
            self.finish_reason, self.error, self._ended = reason, error, True
            self._end_event.set()
            self._wake.set()
        elif len(self._pending) >= self._group:
            self._wake.set()
        elif self._timer is None and self._wait is not None and self._pending:
            self._timer = self.loop.call_at(self._due, self._expire)

    def _expire(self) -> None:
        self._timer, self._late = None, True
        self._wake.set()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._late = False

    @property
    def ended(self) -> bool:
        """Whether it ended and the reader of `chunks` has every token (its last chunk is the one
        just read; why it ended is known)."""
        return self._ended and not self._pending

    async def wait_ended(self) -> None:
        """Waits until it ended, without taking its tokens from the reader of `chunks`; raises what failed it."""
        await self._end_event.wait()
        if self.error is not None:
            raise self.error

    async def chunks(self, group: int = 1, wait: float | None = None) -> AsyncIterator[list[int]]:
        """The tokens in groups, until the generation ends: its first token alone, as soon as it is
        drawn; then the tokens waiting once ``group`` of them are, or ``wait`` seconds after the last
        group (None: only ``group``), or it ended. Raises what failed it. Leaving the iteration early
        cancels the generation."""
        first, self._wait = True, wait
        loop = self.loop
        try:
            while True:
                pending = self._pending
                if pending and (self._ended or len(pending) >= self._group or self._late or loop.time() >= self._due):
                    self._stop_timer()
                    if first:  # the first token alone: the time to it is the stream's
                        tokens, self._pending, self._group, first = pending[:1], pending[1:], group, False
                    else:
                        tokens, self._pending = pending, []
                    self._due = loop.time() + wait if wait is not None else math.inf
                    yield tokens
                    continue
                if self._ended:
                    break
                self._wake.clear()
                if pending and self._timer is None and wait is not None:
                    self._timer = loop.call_at(self._due, self._expire)
                await self._wake.wait()
        finally:
            self._stop_timer()
            if not self._ended:
                self.cancel()
        if self.error is not None:
            raise self.error

    async def result(self) -> list[int]:
        """Every token, once it ended (kept in ``tokens``)."""
        async for tokens in self.chunks(self.settings.max_tokens):  # woken at its first token and its end
            self.tokens.extend(tokens)
        return self.tokens


# ---- the scheduler --------------------------------------------------------------------------------


class Generator:
    """The sampled generations of one model, stepped together by one scheduler thread; counted in
    ``metrics`` (if given) under model ``name``."""

    def __init__(
        self,
        model: runtime.Model,
        *,
        delay: float = 0.0,
        max_batch: int = 1024,
        max_generations: int = 4096,
        metrics: Metrics | None = None,
        name: str = "",
    ) -> None:
        feedback = model.feedback
        if feedback is None or feedback.via != "sample":
            raise runtime.InputValueError("sampled generation needs a model whose feedback samples its next token")
        self.model, self.delay, self.max_batch, self.max_generations = model, delay, max_batch, max_generations
        self.token_input, self.logits_output = feedback.input, feedback.output
        self.vocabulary = int(sampled_vocabulary(feedback, model.inputs))  # type: ignore[arg-type]
        self.words = model.vocabulary  # a runtime.Vocabulary (stop texts), or None
        self.held_specs = tuple(spec for spec in model.inputs if spec.name != feedback.input)
        self.pool = StreamPool(model, capacity=POOL_CAPACITY)
        self._incoming: list[Generation] = []
        self._active: list[Generation] = []
        self._count = 0  # generations submitted and not ended
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._outbox: list[tuple[Generation, list[int], str | None, BaseException | None]] = []
        self._mail: dict[asyncio.AbstractEventLoop, list] = {}  # handed over, its loop not woken yet
        self._mail_lock = threading.Lock()
        self.ticks = 0  # batched runs so far (tests and metrics)
        self.largest_tick = 0
        self.metrics, self.name = metrics, name

    @property
    def live(self) -> int:
        """Generations that hold a slot (submitted, not yet ended)."""
        return self._count

    def submit(
        self,
        prompt: Any,
        held: dict[str, Any] | None = None,
        state: Any = None,
        settings: GenerationSettings | None = None,
        keep_state: bool = False,
    ) -> Generation:
        """Starts a generation (call on its asyncio loop): ``prompt`` token ids (at least one),
        ``held`` the other inputs' values for one stream, ``state`` one stream's start state (None:
        the initial one). Refused (Unavailable) when ``max_generations`` are live."""
        prompt, held = self.check_prompt(prompt), self.check_held(held or {})
        if state is not None:
            rows = state_rows(self.model, state)  # checked here, in the caller's thread; as at batch 1:
            state = tuple(np.moveaxis(r, 0, spec.batch_axis) for r, spec in zip(rows, self.model.states))
        generation = Generation(prompt, held, state, settings or GenerationSettings(), keep_state)
        with self._condition:
            if self._closed:
                raise Unavailable("the generator is closed")
            if self._count >= self.max_generations:
                raise Unavailable(f"{self._count} generations are running, the limit; retry later")
            self._count += 1
            self._incoming.append(generation)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="rnn-generate", daemon=True)
                self._thread.start()
            self._condition.notify()
        if self.metrics is not None:
            self.metrics.generation_started(self.name)
        return generation

    def check_prompt(self, prompt: Any) -> np.ndarray:
        ids = np.asarray(prompt)
        if ids.dtype.kind not in "iu" or ids.ndim != 1 or ids.size < 1:
            raise BadRequest(f"the prompt must be at least one token id (integers), got {ids.dtype} {list(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.vocabulary:
            bad = int(ids[(ids < 0) | (ids >= self.vocabulary)][0])
            raise BadRequest(f"token id {bad} of input '{self.token_input}' is out of range [0, {self.vocabulary})")
        return ids.astype(np.int64)

    def check_held(self, held: dict[str, Any]) -> dict[str, np.ndarray]:
        """The inputs other than the token, one stream's each, checked as (1, *sizes) rows."""
        names = {spec.name for spec in self.held_specs}
        unknown = [name for name in held if name not in names]
        if unknown:
            raise BadRequest(f"the model has no held input '{unknown[0]}' (it holds {sorted(names) or 'none'})")
        missing = [name for name in names if name not in held]
        if missing:
            raise BadRequest(f"generation needs input '{missing[0]}' (held for every step)")
        rows = {}
        for spec in self.held_specs:  # one stream's value, or a batch of 1
            value = np.asarray(held[spec.name])
            rows[spec.name] = value.reshape(spec.shape_for(1)) if value.size == spec.count else value[None]
        try:
            checked = self.model.check_inputs({self.token_input: np.zeros(1, np.int64), **rows}, "held inputs")
        except runtime.InputValueError as error:  # NaN: the library's advice is not the server's to offer
            raise BadRequest(retell_nonfinite(str(error))) from None
        return {name: checked[name] for name in names}

    def close(self) -> None:
        """Stops the scheduler thread; generations still running end with Unavailable."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---- the scheduler thread ----

    def _serve(self) -> None:
        while True:
            with self._condition:
                while not self._incoming and not self._active and not self._closed:
                    self._condition.wait()
                if self._closed:
                    self._fail_all(Unavailable("the server is stopping"))
                    self._flush()
                    return
                idle = not self._active
            if idle and self.delay > 0:
                time.sleep(self.delay)  # let the requests of this moment start together
            with self._condition:
                incoming, self._incoming = self._incoming, []
            try:
                self._admit(incoming)
                if self._active:
                    self._tick()
            except Exception as error:  # never a thread that dies and leaves its callers waiting
                log.exception("the generation scheduler failed; its generations end with the error")
                self._fail_all(error)
            self._flush()

    def _fail_all(self, error: BaseException) -> None:
        with self._condition:
            failed, self._incoming = [*self._incoming, *self._active], []
        self._active = []
        for generation in failed:
            self._end(generation, None, error)

    def _admit(self, incoming: list[Generation]) -> None:
        """Opens the newcomers' streams, warmed up on their prompts (all but the last token,
        teacher-forced): each in one fused run when few arrive or its prompt is long, else stepped
        together (`_warm`). A newcomer that fails ends with its error; nothing else is touched."""
        fused, stepped = len(incoming) <= FUSED_NEWCOMERS, []
        for generation in incoming:
            if generation.cancelled:
                self._end(generation, CANCELLED)
                continue
            try:
                state, prompt = generation.start_state, generation.prompt
                predicted = len(prompt) > 1 and (fused or len(prompt) > PROMPT_FUSED_MIN)
                if predicted:
                    _, state = self.model.predict(self._sequences(generation, prompt[:-1]), state)
                generation.stream = self.pool.open(state)
            except Exception as error:  # the caller's answer
                self._end(generation, None, error)
                continue
            (stepped if len(prompt) > 1 and not predicted else self._active).append(generation)
        self._warm(stepped)

    def _warm(self, rows: list[Generation]) -> None:
        """Feeds the prompts of ``rows`` (their tokens but the last) in batched steps of the pool, one
        per prompt position, back to back; then they join the active generations."""
        longest = max((len(g.prompt) for g in rows), default=1)
        for position in range(longest - 1):
            feeding = [g for g in rows if g.stream >= 0 and position < len(g.prompt) - 1]
            for first in range(0, len(feeding), self.max_batch):
                part = feeding[first : first + self.max_batch]
                try:
                    self._step(part, [int(g.prompt[position]) for g in part])
                except Exception as error:  # every row of this run fails with it
                    for generation in part:
                        self._end(generation, None, error)
        self._active += [g for g in rows if g.stream >= 0]

    def _sequences(self, generation: Generation, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Teacher-forced sequences of one stream: ``tokens`` and each held input repeated, in the
        model's layout."""
        steps = len(tokens)
        if self.model.layout == "batch_first":
            sequences = {self.token_input: tokens.reshape(1, steps)}
            sequences.update({n: np.repeat(v[:, None], steps, axis=1) for n, v in generation.held.items()})
        else:
            sequences = {self.token_input: tokens.reshape(steps, 1)}
            sequences.update({n: np.repeat(v[None], steps, axis=0) for n, v in generation.held.items()})
        return sequences

    def _tick(self) -> None:
        """One batched step of every active generation (in runs of at most max_batch rows)."""
        ended = [g for g in self._active if g.cancelled]
        for generation in ended:
            self._end(generation, CANCELLED)
        active = [g for g in self._active if not g.cancelled]
        self.ticks += 1
        self.largest_tick = max(self.largest_tick, len(active))
        deliveries: list[tuple[Generation, list[int], str | None]] = []
        for first in range(0, len(active), self.max_batch):
            rows = active[first : first + self.max_batch]
            try:
                logits = self._step(rows, [g.current for g in rows])
            except Exception as error:  # every row of this run fails with it
                for generation in rows:
                    self._end(generation, None, error)
                continue
            deliveries += self._draw(rows, logits)
        if self.metrics is not None:
            self.metrics.generation_tick(self.name, len(active), len(deliveries))
        for generation, tokens, reason in deliveries:
            if reason is not None and not generation.keep_state:
                self._end(generation, reason, tokens=tokens)
            else:
                if reason is not None:  # one more row: feed its last token, then keep the state
                    generation.finishing, generation.finish = True, reason
                self._send(generation, tokens, None)
        self._active = [g for g in active if g.stream >= 0]

    def _step(self, rows: list[Generation], tokens: list[int]) -> np.ndarray:
        """One batched step of ``rows``' streams fed ``tokens`` (one each); the logits."""
        ids = np.fromiter((g.stream for g in rows), np.int64, len(rows))
        inputs = {self.token_input: np.asarray(tokens, np.int64)}
        for spec in self.held_specs:
            inputs[spec.name] = np.concatenate([g.held[spec.name] for g in rows])
        ys = self.pool.step(ids, inputs)
        return ys[self.logits_output] if isinstance(ys, dict) else ys

    def _draw(self, rows: list[Generation], logits: np.ndarray) -> list[tuple[Generation, list[int], str | None]]:
        """Each drawing row's next token, drawn with its own settings and uniform; rows that fed their
        last token (``finishing``) end here."""
        groups: dict[tuple, list[int]] = {}
        for index, generation in enumerate(rows):
            if generation.finishing:
                self.state_of(generation)
                self._end(generation, generation.finish)
            else:
                groups.setdefault(generation.settings.draw_key, []).append(index)
        tokens = np.empty(len(rows), np.int64)
        for (strategy, temperature, top_k, top_p), indices in groups.items():
            chosen = np.asarray(indices)
            part = np.ascontiguousarray(logits[chosen], dtype=np.float32)
            if strategy == "greedy":
                tokens[chosen] = np.argmax(part, axis=1)
            else:
                u = np.fromiter((rows[i].uniform() for i in indices), np.float32, len(indices))
                tokens[chosen] = draw_tokens(part, u, temperature, top_k, top_p)
        deliveries = []
        for indices in groups.values():
            for index in indices:
                generation = rows[index]
                token = int(tokens[index])
                deliveries.append((generation, [token], self._advance(generation, token)))
        return deliveries

    def _advance(self, generation: Generation, token: int) -> str | None:
        """Counts ``token`` as generated; why the generation ends with it, or None."""
        generation.current = token
        generation.produced += 1
        if generation.produced == 1 and self.metrics is not None:
            self.metrics.first_token(self.name, time.perf_counter() - generation.submitted)
        settings = generation.settings
        if token in settings.stop:
            return STOP
        if settings.stop_text and self.words is not None:
            text = generation.text + self.words.tokens[token]  # a new match ends in this token's text
            if any(stop in text for stop in settings.stop_text):
                return STOP
            generation.text = text[max(0, len(text) - generation.stop_keep) :]
        return LENGTH if generation.produced >= settings.max_tokens else None

    def state_of(self, generation: Generation) -> None:
        """Keeps the generation's state (one array per state tensor, its non-batch shape)."""
        generation.state = self.pool.state(generation.stream)

    def _end(
        self, generation: Generation, reason: str | None, error: BaseException | None = None, tokens: list[int] = ()
    ) -> None:
        """Frees its slot and tells its caller (once)."""
        if generation.over:
            return
        generation.over = True
        if generation.stream >= 0:
            self.pool.close(generation.stream)
            generation.stream = -1
        with self._condition:
            self._count -= 1
        if self.metrics is not None:
            self.metrics.generation_finished(self.name, ERROR if error is not None else reason or CANCELLED)
        self._send(generation, list(tokens), reason or (None if error else CANCELLED), error)

    def _send(
        self, generation: Generation, tokens: list[int], reason: str | None, error: BaseException | None = None
    ) -> None:
        self._outbox.append((generation, tokens, reason, error))

    def _flush(self) -> None:
        """Hands this tick's tokens to their callers' loops: one wake-up of a loop at a time (while
        one is pending, later ticks' tokens join it: a busy loop gets them in groups)."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for item in self._outbox:
            by_loop.setdefault(item[0].loop, []).append(item)
        self._outbox = []
        for loop, items in by_loop.items():
            with self._mail_lock:
                box = self._mail.get(loop)
                if box is not None:
                    box.extend(items)
                    continue
                self._mail[loop] = items
            try:
                loop.call_soon_threadsafe(self._deliver_mail, loop)
            except RuntimeError:  # its loop closed meanwhile: nobody is reading
                with self._mail_lock:
                    self._mail.pop(loop, None)

    def _deliver_mail(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: everything the scheduler handed to it since its last wake-up."""
        with self._mail_lock:
            items = self._mail.pop(loop, [])
        for generation, tokens, reason, error in items:
            generation._deliver(tokens, reason, error)
