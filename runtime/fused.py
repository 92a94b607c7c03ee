"""The forms a model can run in, their input/output contract, and the runtime's choice among them.

``step`` is the exported step model, run once per step from Python. The fused forms run the
whole loop in one onnxruntime run (built by `export.fused`, listed in the manifest with the
form as their role):

- sequence forms (teacher-forced): inputs ``xs, *state`` -> outputs ``ys, *state outputs``
- rollout forms (closed loop): inputs ``x0, *state, steps`` -> outputs ``ys, *state outputs``
  (the classic signature's names; for any signature, ``sequence_loop`` and ``rollout_loop`` built
  around the step graph by `export.step_loops`, every input and output keeps its own name where
  the model has several: `runtime.contract.form_specs` is the contract of every form)
- sampling forms (a model whose logits are sampled into its next token input, manifest format 2):
  ``rollout_greedy``: inputs ``token0, *other inputs, *state, steps`` and ``rollout_sample``:
  inputs ``token0, *other inputs, *state, uniforms, temperature, top_k, top_p`` -> outputs
  ``tokens, *state outputs``. ``token0`` int64 (batch,) is the first token fed; the other inputs
  keep their value for every step; ``uniforms`` float32 (steps, batch) are the draws (one per
  token, `runtime.sampling`); ``tokens`` int64 (steps, batch).

`choose_form` picks the fastest available form for a call from the batch size and the number of
steps (for a format 2 model, its ``sequence_loop``/``rollout_loop`` from FUSED_MIN_STEPS steps); the
thresholds come from `rnn bench` on the 2-core CI machine (NOTES.md).
"""

from __future__ import annotations

STEP = "step"
SEQUENCE_RNN, SEQUENCE_LOOP = "sequence_rnn", "sequence_loop"  # teacher-forced
ROLLOUT_RNN, ROLLOUT_LOOP = "rollout_rnn", "rollout_loop"  # closed loop, fed back as it is
ROLLOUT_GREEDY, ROLLOUT_SAMPLE = "rollout_greedy", "rollout_sample"  # closed loop, sampled
SEQUENCE_FORMS = (SEQUENCE_RNN, SEQUENCE_LOOP)
ROLLOUT_FORMS = (ROLLOUT_RNN, ROLLOUT_LOOP)
SAMPLING_FORMS = (ROLLOUT_GREEDY, ROLLOUT_SAMPLE)
FORMS = (STEP, *SEQUENCE_FORMS, *ROLLOUT_FORMS, *SAMPLING_FORMS)

# The native RNN kernel applies tanh element by element through a function pointer: unbeatable
# at batch 1 (0.13 us/step) but 2.8 us/step at batch 64 and 200 us/step at 4096, where the
# blocked Loop/Scan forms (vectorised tanh) take over.
RNN_MAX_BATCH = 16
# From this batch size up, a fused call is split into one part per worker thread, each part run
# concurrently by the same session (the streams are independent; onnxruntime releases the GIL).
# Measured at T=1000, rollout_loop, 2 workers: 6.7 -> 6.3 us/step at 2048, 13.3 -> 8.7 at 4096;
# at 1024 and below the split costs more than it gains.
PARALLEL_MIN_BATCH = 2048
# The same for the fused sampling forms, whose steps cost far more per row (embedding, GRU
# layers, readout, draw): from this batch size up a sampling call is split across the workers,
# parts of at least SAMPLING_PARALLEL_MIN_BATCH // 2 rows. Measured (benchmarks/sampling.py's
# model, 1000 tokens, 2 workers on the 2-core VM, docs/sampling-bench.txt): with a core free,
# 1.3-1.4x at batch 4, 1.5-1.6x at 8-16, 1.7-1.9x at 32-64; with the other core busy (load 2.5+)
# 0.8-0.97x. Parts of one row would run onnxruntime's one-row GEMM path, whose states differ from
# the whole batch's in the last bit; parts of 2 rows or more give the whole batch's bits.
SAMPLING_PARALLEL_MIN_BATCH = 8
# From this batch size the sampling rollouts compute a GRU layer as two Gemm and the gates'
# element-wise ops instead of onnxruntime's GRU kernel (export.gate_cells.gru_cells: 1.1-1.3x from
# 8 rows, even at 4, slower at 1). A part of a split call has at least this many rows, so each
# part runs the same arithmetic as the whole batch and gives its bits.
SAMPLING_CELLS_MIN_BATCH = SAMPLING_PARALLEL_MIN_BATCH // 2
# Below this many steps the per-run set-up of a fused model costs more than it saves.
FUSED_MIN_STEPS = 2
# The gated cells' fused forms (native GRU/LSTM kernels; a Loop for a GRU's closed loop) pay
# while batch * hidden is small: 2.1-37x the step loop at batch 1, 1.4-2.3x at batch 64 with
# hidden 16. As batch * hidden grows every form is bound by the same matmuls: at 4096 a GRU's
# native kernel is 0.90-0.94x the step loop (its Loop rollout still 1.3x), an LSTM's 0.93-1.0x; at 6400
# all are 0.9-1.05x. Above these products a call runs the step loop (benchmarks/fused_cells.py,
# docs/fused-cells-bench.txt).
GATED_MAX_WORK = {
    ("gru", "predict"): 3200,
    ("gru", "generate"): 4096,
    ("lstm", "predict"): 2048,
    ("lstm", "generate"): 2048,
}


def choose_form(
    kind: str, batch_size: int, steps: int, available: tuple[str, ...], cell: str = "", hidden_size: int = 0
) -> str:
    """The form for a ``kind`` ("predict" or "generate") call; ``step`` when nothing fused fits.

    ``cell`` is the manifest's model kind and ``hidden_size`` its widest state: a gated cell
    (`GATED_MAX_WORK`) runs the step loop when batch * hidden is too large for its fused forms to pay.
    """
    if steps < FUSED_MIN_STEPS:
        return STEP
    limit = GATED_MAX_WORK.get((cell, kind))
    if limit is not None and batch_size * hidden_size > limit:
        return STEP
    small, large = SEQUENCE_FORMS if kind == "predict" else ROLLOUT_FORMS
    preferred = (small, large) if batch_size <= RNN_MAX_BATCH else (large, small)
    return next((form for form in preferred if form in available), STEP)
