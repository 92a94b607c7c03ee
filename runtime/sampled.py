"""Sampled generation of a model whose next token is drawn from its logits: the step loop with the
sampler's draws, or one run of a fused sampling form (split across worker threads for large batches)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .contract import TEMPERATURE, TOP_K, TOP_P
from .errors import InputValueError
from .fused import FUSED_MIN_STEPS, SAMPLING_CELLS_MIN_BATCH, SAMPLING_FORMS, SAMPLING_PARALLEL_MIN_BATCH, STEP
from .inputs import INT64
from .manifest import SAMPLE, Feedback
from .sessions import check_returned, row_parts

if TYPE_CHECKING:
    from .model import Model

GREEDY_FORM, SAMPLE_FORM = SAMPLING_FORMS  # rollout_greedy, rollout_sample


def check_sampler(feedback: Feedback, sampler: Any) -> None:
    """A sampler where the model samples its next token (and only there)."""
    if feedback.via == SAMPLE:
        if sampler is None:
            raise InputValueError(
                f"this model samples its next {feedback.input!r} token from the logits {feedback.output!r}: "
                "pass sampler=runtime.Sampler(...) (greedy, temperature, top_k or top_p)"
            )
        if not all(callable(getattr(sampler, a, None)) for a in ("uniforms", "draw", "feeds")):
            raise InputValueError(f"sampler must be a runtime.Sampler, got {type(sampler).__name__}")
    elif sampler is not None:
        raise InputValueError(
            "sampler= is for models whose generate samples the next token from logits (manifest feedback via "
            "'sample'); this model feeds its output back as it is"
        )


class SampledRuns:
    """The sampled closed loop of one model. A sampled ``generate`` of FUSED_MIN_STEPS steps or more
    runs the folder's fused sampling form when it has one (``rollout_greedy`` for a greedy sampler,
    ``rollout_sample`` otherwise), giving the step loop's tokens for the same sampler seed (the
    uniforms are drawn up front and fed to both); from `SAMPLING_CELLS_MIN_BATCH` rows it computes
    nn.GRU layers as Gemm cells, rounded in another order than the step model's GRU kernel, so
    tokens may part there at a float32 tie (as from eager PyTorch's; `rnn verify` checks both)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        feedback = model.feedback
        assert feedback is not None and feedback.via == SAMPLE
        self.token_input = model.input_names.index(feedback.input)
        self.logits_output = model.output_names.index(feedback.output)
        self.vocabulary = int(model.inputs[self.token_input].vocabulary)

    def form(self, form: str | None, sampler: Any, steps: int) -> str:
        """The form a sampled generate runs in: ``form`` checked, or the fastest the folder has."""
        wanted = GREEDY_FORM if sampler.greedy else SAMPLE_FORM
        forms = self.model.forms
        if form is None:
            return wanted if steps >= FUSED_MIN_STEPS and wanted in forms else STEP
        if form == STEP:
            return STEP
        if form not in SAMPLING_FORMS:
            raise InputValueError(
                f"generate of this model runs in one of the forms {[STEP, *SAMPLING_FORMS]}, got {form!r}"
            )
        if form not in forms:
            raise InputValueError(f"form {form!r} is not in this artifact folder; it has {list(forms)}")
        if form != wanted:
            raise InputValueError(f"form {form!r} does not run a {'greedy' if sampler.greedy else 'random'} sampler")
        return form

    def generate(self, inputs: tuple, steps: int, state: tuple, sampler: Any, form: str | None) -> tuple:
        """``steps`` sampled steps from checked ``inputs``: (tokens (steps, batch) int64, final state)."""
        chosen = self.form(form, sampler, steps)
        batch_size = inputs[0].shape[0]
        uniforms = np.ascontiguousarray(sampler.uniforms(steps, batch_size), dtype=np.float32)
        if uniforms.shape != (steps, batch_size):
            raise InputValueError(
                f"the sampler drew uniforms {uniforms.shape}, not (steps, batch) = {(steps, batch_size)}"
            )
        if chosen != STEP:
            return self._run_fused(chosen, inputs, state, sampler, uniforms, steps)
        tokens = np.empty((steps, batch_size), np.int64)
        current = list(inputs)
        model = self.model
        for t in range(steps):
            ys, state = model.run_checked(tuple(current), state, False)
            tokens[t] = np.asarray(sampler.draw(ys[self.logits_output], uniforms[t]), dtype=np.int64)
            current[self.token_input] = tokens[t]
        return tokens, state

    def _settings(self, form: str, sampler: Any, steps: int) -> list[np.ndarray]:
        if form == GREEDY_FORM:
            return [np.array([steps], dtype=np.int64)]
        feeds = sampler.feeds(self.vocabulary)
        return [
            np.asarray(feeds[TEMPERATURE], np.float32).reshape(1),
            np.asarray(feeds[TOP_K], np.int64).reshape(1),
            np.asarray(feeds[TOP_P], np.float32).reshape(1),
        ]

    def _run_fused(
        self, form: str, inputs: tuple, state: tuple, sampler: Any, uniforms: np.ndarray, steps: int
    ) -> tuple[np.ndarray, tuple]:
        """One run of a fused sampling form. A batch of `SAMPLING_PARALLEL_MIN_BATCH` or more on the
        CPU is split into one part of rows per worker thread, each run by the same session at once
        (the streams are independent; each part has at least `SAMPLING_CELLS_MIN_BATCH` rows, so it
        runs the whole batch's arithmetic and gives its rows' tokens and states bit for bit)."""
        model = self.model
        settings = self._settings(form, sampler, steps)
        token = inputs[self.token_input]
        held = [a for i, a in enumerate(inputs) if i != self.token_input]
        batch_size = uniforms.shape[1]
        parts = min(model.workers, batch_size // SAMPLING_CELLS_MIN_BATCH)  # parts of >= that many rows
        if batch_size < SAMPLING_PARALLEL_MIN_BATCH or parts < 2 or model.device != "cpu":
            return self._run_part(form, token, held, state, uniforms, settings, steps)
        axes = model.signature.state_axes
        calls = []
        for rows in row_parts(batch_size, parts):
            part_state = tuple(np.ascontiguousarray(s[(slice(None),) * axis + (rows,)]) for s, axis in zip(state, axes))
            part_uniforms = np.ascontiguousarray(uniforms[:, rows])
            calls.append((form, token[rows], [h[rows] for h in held], part_state, part_uniforms, settings, steps))
        results = model.worker_threads.map(self._run_part, calls)
        tokens = np.concatenate([r[0] for r in results], axis=1)
        return tokens, tuple(np.concatenate(p, axis=a) for p, a in zip(zip(*(r[1] for r in results)), axes))

    def _run_part(
        self,
        form: str,
        token: np.ndarray,
        held: list[np.ndarray],
        state: tuple,
        uniforms: np.ndarray,
        settings: list[np.ndarray],
        steps: int,
    ) -> tuple[np.ndarray, tuple]:
        model = self.model
        session, name, input_names, output_names = model.fused(form)
        values = [token, *held, *state]
        values += settings if form == GREEDY_FORM else [uniforms, *settings]
        returned = model.session_runner.run(session, name, output_names, dict(zip(input_names, values)))
        batch_size = uniforms.shape[1]
        expected = [((steps, batch_size), INT64), *model.signature.returned(batch_size)[len(model.outputs) :]]
        check_returned(form, name, returned, expected)
        return returned[0], tuple(returned[1:])
