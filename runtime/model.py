"""`Model`: a loaded artifact folder of any signature, run by onnxruntime: step, predict, generate, generate_iter."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from .bound import BoundStep, State
from .contract import check_session, form_specs
from .errors import InputValueError, ShapeError
from .fused import FORMS, PARALLEL_MIN_BATCH, ROLLOUT_FORMS, SAMPLING_FORMS, SEQUENCE_FORMS, STEP, choose_form
from .inputs import check_memory, check_steps
from .manifest import FileEntry, Manifest
from .sampled import SampledRuns, check_sampler
from .sessions import SessionRunner, Workers, check_returned, create_session, model_source, row_parts
from .signature import Arrays, Signature
from .vocabulary import Vocabulary

if TYPE_CHECKING:
    from .loading import LoadOptions

DEFAULT_CHUNK = 100_000  # steps per chunk of generate_iter
INITIAL_CACHE = 16  # batch sizes whose initial state `step` keeps ready (read-only) for state=None
# `run_step` goes through a shared BoundStep for batches up to this size (copying into bound
# buffers and running them (BoundStep.step) costs ~5 us at batch 1 against ~7-8 us for session.run, which wraps
# every input and allocates every output); larger batches, and calls that find the bound
# runners busy in another thread, use session.run.
BOUND_MAX_BATCH = 64
BOUND_CACHE = 8  # batch sizes with a shared bound runner, least recently made dropped


class Model:
    """A loaded model of any signature its manifest describes.

    Inputs are a dict ``{name: array}`` (a bare array for a model of one input): float32 features
    (batch, *sizes) or int64 token ids (batch,) below the vocabulary; for an input of one value a
    stream a scalar or (batch,) array is taken too. Outputs are an array for a model of one output,
    else a dict by name. States are a tuple in manifest order, each with its batch axis where the
    manifest puts it. Sequences are time-first (steps, batch, ...) or batch-first (batch, steps, ...)
    as ``layout`` says; one stream's flat (steps,) series is taken for a one-value input.

    ``predict`` and ``generate`` run the fastest form for the call (`runtime.fused.choose_form`):
    the step model in a loop through bound buffers, or a fused form of the folder (the whole loop in
    one onnxruntime run) unless ``form=`` names one of ``model.forms``. A model whose manifest
    samples its next token from logits (``feedback.via`` "sample") takes ``sampler=runtime.Sampler``.
    The model is safe to share between threads.

    Trust: ``manifest_digest`` is the sha256 of the manifest bytes it was built from (pin a folder
    with it: ``runtime.load(folder, digest=...)``; ``options`` carries it). Every session's declared
    inputs and outputs are checked against the manifest when it is created, and what each run
    returns is checked too: a model that breaks its contract is an ArtifactError, never a wrong
    answer. Each onnxruntime run is stopped after ``run_timeout`` seconds (RunTimeoutError); a call
    that would allocate more than ``max_memory_bytes`` is refused.

    ``classic`` is True for the seed's signature (one float32 (batch, n) input and output, (batch,
    size) states, fed back as it is), whose folders are written as manifest format 1 when time-first.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        manifest: Manifest,
        entries: dict[str, FileEntry],
        *,
        device: str,
        options: LoadOptions,
        manifest_digest: str = "",
    ) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.manifest_digest = manifest_digest  # sha256 of the manifest.json bytes that were parsed
        self.device = device
        self.options = options
        self.threads, self.workers = options.threads, int(options.workers or 1)
        self.allow_nonfinite, self.max_steps = options.allow_nonfinite, options.max_steps
        self.max_memory_bytes, self.run_timeout = options.max_memory_bytes, options.run_timeout
        signature = Signature(manifest, allow_nonfinite=self.allow_nonfinite, max_memory_bytes=self.max_memory_bytes)
        self.signature = signature
        self._check_step, self._check_state = signature.check_step, signature.check_state  # the hot path's
        self._step_bytes, self._host = signature.step_bytes, device == "cpu"
        # sequences of outputs come back as they are run: one output, time-first, fed back as it is
        self._plain_sequences = len(signature.outputs) == 1 and not signature.batch_first and not signature.sampled
        self.inputs, self.outputs, self.states = signature.inputs, signature.outputs, signature.states
        self.input_names, self.output_names = signature.input_names, signature.output_names
        self.state_names, self.state_outputs = signature.state_names, signature.state_outputs
        self.layout, self.feedback, self.classic = signature.layout, signature.feedback, signature.classic
        # the first input and output by name and values a stream (the whole signature when classic)
        self.input_name, self.output_name = self.input_names[0], self.output_names[0]
        self.input_size, self.output_size = self.inputs[0].count, self.outputs[0].count
        self.state_sizes = tuple(s.count for s in self.states)  # values one stream holds of each state
        self._entries = dict(entries)
        self._forms = tuple(form for form in FORMS if form in self._entries)  # the folder's forms, fixed
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self.session_runner = SessionRunner(self.run_timeout)
        self.worker_threads = Workers(self.workers)
        self._fetch = [*self.output_names, *self.state_outputs]
        self._one_output = len(self.outputs) == 1
        self._initial_cache: dict[int, State] = {}
        self._bound: dict[int, BoundStep] = {}  # run_step's runners by batch size, used under _bound_lock
        self._bound_lock = threading.Lock()
        self._cell = str(manifest.model.get("kind", ""))  # the built-in cell kind, for choose_form
        self._hidden = max(self.state_sizes, default=0)  # the widest state, for choose_form
        # per fused form once its session exists: (session, file name, input names, output names),
        # so that a call builds none of them (~3 us of a ~8 us overhead per fused call, NOTES.md)
        self._fused: dict[str, tuple[ort.InferenceSession, str, list[str], list[str]]] = {}
        self._expected: dict[tuple[int, int], list] = {}  # (batch, steps) -> what a fused run returns
        self.sampled_runs = SampledRuns(self) if signature.sampled else None
        self._step_session = self.session(STEP)  # fail at load, not at the first call

    # ---- what it is ---------------------------------------------------------------------

    @property
    def forms(self) -> tuple[str, ...]:
        """The forms this folder can run: ``step`` and the fused forms it ships."""
        return self._forms

    @property
    def loaded_forms(self) -> tuple[str, ...]:
        """The forms whose onnxruntime session exists: ``step`` from `load`, fused forms once used
        (call each form once to warm a model up before serving)."""
        return tuple(form for form in FORMS if form in self._sessions)

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually uses, first is preferred."""
        return list(self._step_session.get_providers())

    @property
    def max_output_bytes(self) -> int:
        """The old name of `max_memory_bytes` (it now counts inputs and states too)."""
        return self.max_memory_bytes

    @property
    def step_file(self) -> str:
        """The name of the step model's ONNX file in the folder."""
        return self._entries[STEP].name

    @property
    def step_sha256(self) -> str:
        """The sha256 of the step model's ONNX file, as the manifest records it (and load checked):
        the model's fingerprint, which tags saved stream states."""
        return self._entries[STEP].sha256

    @cached_property
    def vocabulary(self) -> Vocabulary | None:
        """The text of each id of the token input sampled generation feeds (``encode``/``decode``),
        where the manifest carries one; else None."""
        return None if self.manifest.vocabulary is None else Vocabulary(self.manifest.vocabulary)

    def form_file(self, form: str) -> str:
        """The name of the ONNX file of ``form`` (one of `forms`) in the folder."""
        if form not in self._entries:
            raise InputValueError(f"form {form!r} is not in this artifact folder; it has {list(self.forms)}")
        return self._entries[form].name

    @property
    def step_session(self) -> ort.InferenceSession:
        """The onnxruntime session of the step model, shared by every call (for benchmarks and IO
        binding; inputs ``(*input_names, *state_names)``, outputs ``(*output_names, *state_outputs)``)."""
        return self._step_session

    def __repr__(self) -> str:
        def described(specs: tuple) -> list[str]:
            return [f"{t.name} {t.describe()}" for t in specs]

        return (
            f"Model({str(self.folder)!r}, kind={self.manifest.model.get('kind')!r}, inputs={described(self.inputs)}, "
            f"outputs={described(self.outputs)}, state={described(self.states)}, layout={self.layout!r}, "
            f"forms={list(self.forms)}, providers={self.providers})"
        )

    def bind(self, batch_size: int) -> BoundStep:
        """A `BoundStep` of ``batch_size`` streams, starting from the initial state: the fastest
        way to run many single steps (the state stays inside onnxruntime's bound buffers)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputValueError(f"batch_size must be a whole number >= 1, got {batch_size!r:.80}")
        size = int(batch_size) * self.signature.step_bytes
        check_memory(size, f"a bound step of batch {batch_size}", self.max_memory_bytes)
        return BoundStep(self, int(batch_size))

    # ---- sessions ------------------------------------------------------------------------

    def session(self, form: str) -> ort.InferenceSession:
        """The onnxruntime session of ``form`` (one of `forms`), created and checked against the
        contract on first use."""
        session = self._sessions.get(form)
        if session is not None:
            return session
        with self._lock:
            if form not in self._sessions:
                entry = self._entries[form]
                source, external = model_source(self.folder, self.manifest, entry)
                # The sampling forms' Loop bodies allocate many small tensors each step: plain malloc
                # beats the CPU arena there (batch 1: 7-10% faster greedy, 1-7% temperature; docs/sampling-bench.txt).
                arena = form not in SAMPLING_FORMS
                session = create_session(source, external, entry.name, self.device, self.threads, arena=arena)
                inputs, outputs = self.form_specs(form)
                check_session(session, form, entry.name, inputs, outputs)
                self._sessions[form] = session
            return self._sessions[form]

    def form_specs(self, form: str) -> tuple[list, list]:
        """What the ONNX model of ``form`` must declare (`runtime.contract.form_specs`): (inputs,
        outputs), each a list of (name, onnxruntime type, dims)."""
        return form_specs(form, self.inputs, self.outputs, self.states, self.feedback)

    def fused(self, form: str) -> tuple[ort.InferenceSession, str, list[str], list[str]]:
        """(session, file name, input names, output names) of a fused form."""
        fused = self._fused.get(form)
        if fused is None:
            session = self.session(form)  # checks the session against the contract when it creates it
            inputs, outputs = self.form_specs(form)
            fused = self._fused[form] = (
                session,
                self._entries[form].name,
                [s[0] for s in inputs],
                [s[0] for s in outputs],
            )
        return fused

    # ---- inputs ---------------------------------------------------------------------------

    def initial_state(self, batch_size: int = 1) -> State:
        """The manifest's initial state for ``batch_size`` streams (new arrays)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputValueError(f"batch_size must be a whole number >= 1, got {batch_size!r:.80}")
        return self.signature.initial_state(int(batch_size))

    def _initial_rows(self, batch_size: int) -> State:
        """The initial state for ``batch_size`` streams, shared and read-only (for feeding only)."""
        state = self._initial_cache.get(batch_size)
        if state is None:
            state = self.signature.initial_state(batch_size)
            for array in state:
                array.flags.writeable = False
            if len(self._initial_cache) >= INITIAL_CACHE:
                self._initial_cache.clear()
            self._initial_cache[batch_size] = state
        return state

    def check_inputs(self, x: Any, name: str = "x") -> dict[str, np.ndarray]:
        """One step's inputs as ``{name: array}``: float32 (batch, *sizes) for features, int64
        (batch,) ids below the vocabulary for tokens, one batch size for all; or a typed error
        (ShapeError, DtypeError, InputValueError for NaN/infinity/float32 overflow or ids out of range)."""
        arrays, _ = self.signature.check_step(x, name)
        return dict(zip(self.input_names, arrays))

    def check_x(self, x: Any, name: str = "x") -> np.ndarray:
        """The checked array of a model of one input (see `check_inputs`; a dict of that one name is
        taken too). A C-contiguous float32 array of the right shape comes back as it is."""
        if len(self.inputs) != 1:
            raise InputValueError(
                f"check_x checks the input of a model of one input; this model has {list(self.input_names)}: "
                "use check_inputs"
            )
        return self.signature.check_step(x, name)[0][0]

    def check_state(self, state: Any, batch_size: int) -> State:
        """A caller's state as a tuple of C-contiguous float32 arrays of the manifest's shapes at
        ``batch_size``, or a typed error; ``None`` is the initial state (new arrays)."""
        return self.signature.check_state(state, batch_size)

    def _state(self, state: Any, batch_size: int) -> State:
        return self._initial_rows(batch_size) if state is None else self.signature.check_state(state, batch_size)

    def _pick(self, kind: str, form: str | None, batch_size: int, steps: int) -> str:
        allowed = (STEP, *(SEQUENCE_FORMS if kind == "predict" else ROLLOUT_FORMS))
        if form is None:
            return choose_form(kind, batch_size, steps, self._forms, self._cell, self._hidden)
        if form not in allowed:
            raise InputValueError(f"{kind} runs in one of the forms {list(allowed)}, got {form!r}")
        if form not in self._forms:
            raise InputValueError(f"form {form!r} is not in this artifact folder; it has {list(self.forms)}")
        return form

    def _check_call_memory(self, kind: str, steps: int, batch_size: int) -> None:
        """Refuses a predict or generate call of ``steps`` x ``batch_size`` whose inputs (sequences
        for predict, the first step's for generate), outputs and states would take more than
        max_memory_bytes."""
        signature = self.signature
        sampled = signature.sampled and kind == "generate"
        per_step = 12 if sampled else signature.output_bytes  # tokens and uniforms, or the outputs
        # predict: every step's inputs; generate: the first step's inputs, and for a sampled model one
        # step's outputs too (the logits each step draws from, which the returned tokens do not hold)
        inputs = steps * signature.input_bytes if kind == "predict" else signature.input_bytes
        if sampled:
            inputs += signature.output_bytes
        size = batch_size * (inputs + steps * per_step + signature.state_bytes)
        if size > self.max_memory_bytes:
            check_memory(size, f"{kind} of {steps} steps x batch {batch_size}", self.max_memory_bytes)

    # ---- one step -------------------------------------------------------------------------

    def step(self, x: Any, state: Any = None) -> tuple[Any, State]:
        """One step for a batch of streams: returns (y, new state), y an array for one output, else
        a dict. Inputs are checked as `check_inputs` and `check_state` do; ``state=None`` is the
        initial state."""
        inputs, batch_size = self._check_step(x)
        if batch_size * self._step_bytes > self.max_memory_bytes:
            self.signature.check_bytes(batch_size * self._step_bytes, f"a step of batch {batch_size}")
        state = self._initial_rows(batch_size) if state is None else self._check_state(state, batch_size)
        ys, new_state = self.run_checked(inputs, state, False)
        return (ys[0] if self._one_output else dict(zip(self.output_names, ys))), new_state

    def run_step(self, x: Any, state: State) -> tuple[Any, State]:
        """One step on arrays that are already checked (by `check_inputs`/`check_x` and `check_state`,
        or produced by the runtime): nothing is validated. ``x`` is the array of a model of one input,
        else a tuple in manifest order. Returns (y, new state) as `step` does."""
        ys, new_state = self.run_checked((x,) if len(self.inputs) == 1 else tuple(x), state, False)
        return (ys[0] if self._one_output else dict(zip(self.output_names, ys))), new_state

    def _shared_runner(self, batch_size: int) -> BoundStep:
        """The model's own BoundStep for ``batch_size`` (made on first use); the caller holds ``_bound_lock``."""
        runner = self._bound.get(batch_size)
        if runner is None:
            if len(self._bound) >= BOUND_CACHE:
                del self._bound[next(iter(self._bound))]
            runner = self._bound[batch_size] = BoundStep(self, batch_size)
        return runner

    def run_checked(self, inputs: Arrays, state: State, sequence: bool = False) -> tuple[list[np.ndarray], State]:
        """One run of the step model on checked inputs (a tuple in manifest order, batch first) and
        state: (the outputs in manifest order, the new state); with ``sequence`` each output comes as
        (1, batch, ...): one step of predict or generate. Nothing is validated."""
        batch_size = inputs[0].shape[0]
        if batch_size <= BOUND_MAX_BATCH and self._host and self._bound_lock.acquire(blocking=False):
            try:
                return self._shared_runner(batch_size).step(inputs, state, sequence)
            finally:
                self._bound_lock.release()
        feed = dict(zip(self.input_names, inputs))
        feed.update(zip(self.state_names, state))
        values = self.session_runner.run(self._step_session, self.step_file, self._fetch, feed)
        check_returned(STEP, self.step_file, values, self.signature.returned(batch_size))
        count = len(self.outputs)
        ys = [y.reshape(1, *y.shape) for y in values[:count]] if sequence else values[:count]
        return ys, tuple(values[count:])

    # ---- loops ----------------------------------------------------------------------------

    def _step_loop(self, xs: Arrays | None, x: Arrays | None, state: State, ys: list[np.ndarray]) -> State:
        """Runs the step model once per step of ``ys`` (each (steps, batch, ...)) through bound
        buffers: teacher-forced from sequences ``xs``, or the closed loop from first inputs ``x``
        (the fed-back input replaced by its output each step, the others held). The state stays
        in the runner's buffers from step to step (on CUDA, on the device)."""
        batch_size = ys[0].shape[1]
        shared = batch_size <= BOUND_MAX_BATCH and self._bound_lock.acquire(blocking=False)
        try:
            runner = self._shared_runner(batch_size) if shared else BoundStep(self, batch_size)
            runner.load_state(state)
            if runner.simple and xs is not None:  # one input, one output: the classic hot path
                for t, y in enumerate(ys[0]):
                    runner.run(xs[0][t], out=y)
            elif runner.simple:
                value = x[0]
                for y in ys[0]:
                    value = runner.run(value, out=y)
            else:
                self._general_loop(runner, xs, x, ys)
            return runner.state
        finally:
            if shared:
                self._bound_lock.release()

    def _general_loop(self, runner: BoundStep, xs: Arrays | None, x: Arrays | None, ys: list[np.ndarray]) -> None:
        feedback = None if xs is not None else (self.signature.feedback_input, self.signature.feedback_output)
        if x is not None:
            runner.set_inputs(x)
        for t in range(ys[0].shape[0]):
            if xs is not None:
                runner.set_inputs(tuple(sequence[t] for sequence in xs))
            runner.execute()
            outputs = runner.outputs()
            for buffer, value in zip(ys, outputs):
                buffer[t] = value
            if feedback is not None:
                runner.feed_back(*feedback, outputs)

    def _run_fused(self, form: str, firsts: Arrays, state: State, steps: int | None) -> tuple[list, State]:
        """One run of a fused form, split across the worker threads for a large batch on the CPU:
        ``firsts`` are the sequences (predict, ``steps`` None) or the first step's inputs (generate)."""
        batch_size = firsts[0].shape[1 if steps is None else 0]
        if batch_size < PARALLEL_MIN_BATCH:  # parts below would be < 2: skip working it out
            return self._run_fused_part(form, firsts, state, steps)
        parts = min(self.workers, batch_size // (PARALLEL_MIN_BATCH // 2))
        if parts < 2 or self.device != "cpu":
            return self._run_fused_part(form, firsts, state, steps)
        axis = 1 if steps is None else 0
        axes = self.signature.state_axes
        calls = []
        for rows in row_parts(batch_size, parts):
            part = tuple(np.ascontiguousarray(a[(slice(None),) * axis + (rows,)]) for a in firsts)
            part_state = tuple(np.ascontiguousarray(s[(slice(None),) * a + (rows,)]) for s, a in zip(state, axes))
            calls.append((form, part, part_state, steps))
        results = self.worker_threads.map(self._run_fused_part, calls)
        ys = [np.concatenate(parts_, axis=1) for parts_ in zip(*(r[0] for r in results))]
        return ys, tuple(np.concatenate(p, axis=a) for p, a in zip(zip(*(r[1] for r in results)), axes))

    def _run_fused_part(self, form: str, firsts: Arrays, state: State, steps: int | None) -> tuple[list, State]:
        fused = self._fused.get(form) or self.fused(form)
        session, name, inputs, outputs = fused
        if steps is None:
            values = [*firsts, *state]
            batch_size, count = firsts[0].shape[1], firsts[0].shape[0]
        else:  # the fed-back input first, then the held inputs, the states and the steps
            if len(firsts) == 1:
                values = [firsts[0], *state]
            else:
                fed = self.signature.feedback_input
                values = [firsts[fed], *(a for i, a in enumerate(firsts) if i != fed), *state]
            values.append(np.array([steps], dtype=np.int64))
            batch_size, count = firsts[0].shape[0], steps
        returned = self.session_runner.run(session, name, outputs, dict(zip(inputs, values)))
        expected = self._expected.get((batch_size, count))
        if expected is None:
            if len(self._expected) >= INITIAL_CACHE:
                self._expected.clear()
            expected = self._expected[(batch_size, count)] = self.signature.returned(batch_size, count)
        check_returned(form, name, returned, expected)
        split = len(self.outputs)
        return returned[:split], tuple(returned[split:])

    # ---- predict and generate ---------------------------------------------------------------

    def predict(self, xs: Any, state: Any = None, *, form: str | None = None) -> tuple[Any, State]:
        """Teacher-forced over sequences: each step gets the given inputs. ``xs`` as `step` takes
        inputs, each with a steps axis ((steps, batch, *sizes), or (batch, steps, *sizes) when the
        layout is batch_first; (steps,) for one stream of a one-value input). Returns the outputs in
        the same layout and the final state."""
        sequences, batch_size, steps, flat = self.signature.check_sequences(xs)
        self._check_call_memory("predict", steps, batch_size)
        current = self._state(state, batch_size)
        if steps == 1 and form is None:  # straight to the step model: no loop, no output buffer
            ys, current = self.run_checked(
                (sequences[0][0],) if len(sequences) == 1 else tuple(s[0] for s in sequences), current, True
            )
        else:
            chosen = self._pick("predict", form, batch_size, steps)
            if chosen == STEP:
                ys = self._buffers(steps, batch_size)
                current = self._step_loop(sequences, None, current, ys)
            else:
                ys, current = self._run_fused(chosen, sequences, current, None)
        return (ys[0] if self._plain_sequences and not flat else self.signature.result(ys, True, flat)), current

    def _buffers(self, steps: int, batch_size: int) -> list[np.ndarray]:
        _, shapes, _ = self.signature.shapes(batch_size)
        return [np.empty((steps, *shape), np.float32) for shape in shapes]

    def _generate_inputs(self, x0: Any, steps: Any, state: Any, sampler: Any, chunk: Any = None) -> tuple:
        """The checked arguments of generate: (first inputs, steps, state, chunk)."""
        feedback = self.feedback
        if feedback is None and len(self.inputs) == len(self.outputs) == 1:
            raise ShapeError(
                f"generate feeds each output back as the next input, so output {self.output_name!r} "
                f"{self.outputs[0].describe()} must have the shape of input {self.input_name!r} "
                f"{self.inputs[0].describe()}"
            )
        if feedback is None:
            raise InputValueError(
                "generate needs to know which output becomes which input: this model's manifest declares no "
                f"feedback, and its outputs {list(self.output_names)} are not its inputs' shapes"
            )
        if sampler is not None or self.sampled_runs is not None:
            check_sampler(feedback, sampler)
        inputs, batch_size = self._check_step(x0, "x0")
        if type(steps) is not int or not 1 <= steps <= self.max_steps:  # the common case costs no call
            steps = check_steps(steps, self.max_steps)
        if chunk is not None:
            chunk = check_steps(chunk, self.max_steps)
        self._check_call_memory("generate", steps if chunk is None else min(chunk, steps), batch_size)
        state = self._initial_rows(batch_size) if state is None else self._check_state(state, batch_size)
        return inputs, steps, state, chunk

    def _closed_loop(self, inputs: Arrays, steps: int, state: State, form: str | None, sampler: Any) -> tuple:
        """``steps`` closed-loop steps from ``inputs``: (time-first outputs (the tokens when sampled),
        the final state)."""
        if self.sampled_runs is not None:
            tokens, state = self.sampled_runs.generate(inputs, steps, state, sampler, form)
            return [tokens], state
        if steps == 1 and form is None:  # a fused rollout of one step is the step model
            return self.run_checked(inputs, state, True)
        batch_size = inputs[0].shape[0]
        chosen = self._pick("generate", form, batch_size, steps)
        if steps == 1:
            return self.run_checked(inputs, state, True)
        if chosen == STEP:
            ys = self._buffers(steps, batch_size)
            return ys, self._step_loop(None, inputs, state, ys)
        return self._run_fused(chosen, inputs, state, steps)

    def _fed(self, inputs: Arrays, ys: list[np.ndarray]) -> Arrays:
        """The next step's inputs after outputs ``ys``: the last fed-back value (the last token when
        sampled) in place of the fed-back input, the others held."""
        index = self.signature.feedback_input
        value = ys[0 if self.signature.sampled else self.signature.feedback_output][-1].copy()  # not a view of a chunk
        return tuple(value if i == index else array for i, array in enumerate(inputs))

    def _generated(self, ys: list[np.ndarray]) -> Any:
        if self._plain_sequences:
            return ys[0]
        if self.signature.sampled:
            return np.ascontiguousarray(ys[0].T) if self.signature.batch_first else ys[0]
        return self.signature.result(ys, True)

    def generate(
        self, x0: Any, steps: Any, state: Any = None, *, form: str | None = None, sampler: Any = None
    ) -> tuple[Any, State]:
        """The closed loop the manifest declares (``feedback``): ``x0`` the first step's inputs (as
        `step` takes them); inputs other than the fed-back one keep their value for every step.

        Fed back as it is: returns every output stacked, (steps, batch, *sizes) (batch-first:
        (batch, steps, *sizes)), an array for one output, else a dict. Sampled: ``sampler`` (a
        `runtime.Sampler`) draws each next token from the logits; returns the tokens int64
        (steps, batch) (batch-first: (batch, steps)). ``form`` names the form to run ("step" forces
        the step loop); None picks the fastest for the call."""
        inputs, steps, current, _ = self._generate_inputs(x0, steps, state, sampler)
        ys, current = self._closed_loop(inputs, steps, current, form, sampler)
        return self._generated(ys), current

    def generate_iter(
        self,
        x0: Any,
        steps: Any,
        state: Any = None,
        *,
        chunk: int = DEFAULT_CHUNK,
        form: str | None = None,
        sampler: Any = None,
    ) -> Iterator[tuple[Any, State]]:
        """`generate` in bounded memory: yields (outputs or tokens of n <= chunk steps, state) chunk
        by chunk, each continuing from the last fed-back value and state of the one before (a
        sampler draws each chunk's uniforms as the chunk starts)."""
        inputs, steps, current, chunk = self._generate_inputs(x0, steps, state, sampler, chunk)
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            ys, current = self._closed_loop(inputs, n, current, form, sampler)
            inputs = self._fed(inputs, ys)
            done += n
            yield self._generated(ys), current
