"""Seeded probe inputs for a step module, of each tensor's declared dtype, in the range verification uses."""

from __future__ import annotations

import torch

from runtime.errors import ExportError
from runtime.manifest import TensorSpec

PROBE_SEED = 0  # the export's protocol check, and torch's global generator while an export runs
INPUT_RANGE = (-1.0, 1.0)  # inputs and states of the protocol check, the self-check data and verification
TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64}  # a manifest's dtype name -> torch's


def probe_tensor(spec: TensorSpec, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``spec``'s shape at ``batch_size`` (its batch axis where it has it) in its dtype: token ids
    uniform over 0 .. vocabulary - 1, anything else uniform over INPUT_RANGE."""
    dtype = TORCH_DTYPES.get(spec.dtype)
    if dtype is None:
        raise ExportError(f"tensor {spec.name!r}: no probe input can be made for dtype {spec.dtype!r}")
    shape = spec.shape_for(batch_size)
    if spec.is_tokens:
        return torch.randint(0, int(spec.vocabulary), shape, generator=generator, dtype=torch.int64)
    low, high = INPUT_RANGE
    return torch.rand(shape, generator=generator, dtype=dtype) * (high - low) + low
