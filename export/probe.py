"""Seeded probe inputs for a step module, of each tensor's declared dtype, in the range verification uses."""

from __future__ import annotations

import torch

from runtime.errors import ExportError
from runtime.manifest import TensorSpec

PROBE_SEED = 0  # the export's protocol check, and torch's global generator while an export runs
INPUT_RANGE = (-1.0, 1.0)  # inputs and states of the protocol check, the self-check data and verification
TORCH_DTYPES = {"float32": torch.float32}  # a manifest's dtype name -> torch's


def probe_tensor(spec: TensorSpec, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A (batch_size, *spec's sizes) tensor of ``spec``'s dtype, uniform over INPUT_RANGE."""
    dtype = TORCH_DTYPES.get(spec.dtype)
    if dtype is None:
        raise ExportError(f"tensor {spec.name!r}: no probe input can be made for dtype {spec.dtype!r}")
    low, high = INPUT_RANGE
    shape = (batch_size, *(int(size) for size in spec.shape[1:]))
    return torch.rand(shape, generator=generator, dtype=dtype) * (high - low) + low
