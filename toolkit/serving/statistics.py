"""Triton's model configuration and statistics extensions, as the documents both fronts serve:
HTTP ``GET /v2/models/NAME[/versions/V]/config`` and gRPC ``ModelConfig`` answer `model_config`
(the JSON form of Triton's ModelConfig message; the gRPC front parses it into the message), HTTP
``GET /v2/models[/NAME[/versions/V]]/stats`` and gRPC ``ModelStatistics`` answer `model_statistics`
(``{"model_stats": [...]}``, one entry per served name; an unknown name or version is NotFound).

The statistics come from the engine's `metrics.Metrics` (the counts `/metrics` shows), per served
name (NAME, NAME-predict, NAME-generate), since the server started:

- ``inference_count``: batch items of the successful requests (a request of batch 64 counts 64; a
  request that no front could decode, or a streamed generation, counts 1 a request);
- ``execution_count`` and ``batch_stats`` (by batch size, ``compute_infer``): the model runs the
  engine made, a batched run of sequence steps (one run for every step in it) or a request's own
  run; a sampled generation's ticks are not runs of one request and are left out (see
  ``rnn_generation_tick_size`` at ``/metrics``), as are runs on Ray replicas (``--ray``);
- ``inference_stats``: ``success`` and ``fail`` (requests and the time from a decoded request to its
  answer), ``compute_infer`` (each request of a run counted with the run's time, as Triton does),
  ``queue`` (requests that waited for their run and how long in all: stateless requests run at once,
  0 ns each, a wait for a worker thread falls in compute_infer; a batched sequence step counts its
  wait from arrival to the start of its batch's run);
- always 0: ``compute_input`` and ``compute_output`` (onnxruntime's run copies its inputs and
  outputs inside compute_infer), ``cache_hit`` and ``cache_miss`` (no response cache), and the
  batch statistics' compute_input and compute_output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import Metrics, Stats
from .protocol import PLATFORM, VERSION, NotFound, TensorMetadata
from .tensors import lead_axes

if TYPE_CHECKING:
    from .core import Engine, ServedName

NS = 1_000_000_000  # nanoseconds a second
ZERO_STATISTICS = ("compute_input", "compute_output", "cache_hit", "cache_miss")  # nothing measures these


def batch_items(named: ServedName, inputs: dict[str, np.ndarray]) -> int:
    """The batch items of a successful request of ``named``: the batch axis of its model's first
    input (the second axis of a time-first predict call's sequences); 1 where it has none."""
    model = named.served.model
    if model is None:
        return 1
    array = inputs.get(model.input_names[0])
    axis = lead_axes(model, named.call)[0]
    return int(array.shape[axis]) if array is not None and array.ndim > axis else 1


def _config_tensor(spec: TensorMetadata) -> dict[str, Any]:
    return {"name": spec.name, "data_type": f"TYPE_{spec.datatype}", "dims": list(spec.shape)}


def model_config(engine: Engine, named: ServedName) -> dict[str, Any]:
    """Triton's model configuration of ``named`` (Unavailable when not ready): its tensors with the
    batch axis in ``dims`` (``max_batch_size`` 0), sequence batching with the idle timeout, and as
    ``parameters`` what the dims cannot say (`tensors.model_parameters`: vocabulary sizes, the
    layout, the states' batch axes, the feedback)."""
    named.metadata()  # Unavailable when not ready
    return {
        "name": named.name,
        "platform": PLATFORM,
        "max_batch_size": 0,
        "input": [{**_config_tensor(spec), "optional": spec.optional} for spec in named.inputs],
        "output": [_config_tensor(spec) for spec in named.outputs],
        "sequence_batching": {"max_sequence_idle_microseconds": int(engine.settings.sequence_idle_timeout_s * 1e6)},
        "parameters": {key: {"string_value": value} for key, value in named.parameters.items()},
    }


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": round(seconds * NS)}


def _model_stat(metrics: Metrics, name: str) -> dict[str, Any]:
    """The statistics of served name ``name``."""
    stats = metrics.stats.get(name) or Stats()  # nothing recorded yet: zeros
    inference = {
        "success": _duration(*metrics.successes(name)),
        "fail": _duration(metrics.failures(name), stats.failed_seconds),
        "queue": _duration(*stats.queue),
        "compute_infer": _duration(*stats.compute),
    }
    inference.update({key: _duration(0, 0.0) for key in ZERO_STATISTICS})
    return {
        "name": name,
        "version": VERSION,
        "last_inference": stats.last_ms,
        "inference_count": stats.items,
        "execution_count": stats.executions,
        "inference_stats": inference,
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(0, 0.0),
                "compute_infer": _duration(count, seconds),
                "compute_output": _duration(0, 0.0),
            }
            for size, (count, seconds) in sorted(stats.batches.items())
        ],
    }


def model_statistics(engine: Engine, name: str = "", version: str = "") -> dict[str, Any]:
    """The statistics response of served name ``name`` ("": every served name) at ``version``
    ("" or the one version); NotFound for a name or version the server does not serve."""
    if name:
        names = [engine.lookup(name, version).name]
    else:
        if version not in ("", VERSION):
            raise NotFound(f"no model has version '{version}' (every model has version {VERSION})")
        names = list(engine.names)
    return {"model_stats": [_model_stat(engine.metrics, served) for served in names]}
