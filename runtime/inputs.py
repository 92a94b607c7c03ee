"""Turns what a caller hands the runtime into float32 arrays of the right shape, or a typed error."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import DtypeError, InputValueError, ShapeError

DEFAULT_MAX_STEPS = 100_000_000
# The memory one call may allocate: every array it hands to or gets from onnxruntime (inputs as
# converted to float32, outputs, states in and out); runtime.load's max_memory_bytes.
DEFAULT_MAX_MEMORY_BYTES = 1 << 30
DEFAULT_MAX_OUTPUT_BYTES = DEFAULT_MAX_MEMORY_BYTES  # its name before it counted inputs and states too
MAX_INT64 = 2**63 - 1  # steps are fed to a fused model as int64
FLOAT32_ROUNDS_TO_INF = 2.0**128 - 2.0**103  # float32 max + half an ulp: from here a cast gives infinity
FLOAT32 = np.dtype(np.float32)
SMALL_FINITE_CHECK = 16  # up to this many values, summing them as Python floats is the fastest exact check
# the library's option: a command, a server or a bulk run retells it as what it offers (or drops it:
# toolkit.run_inputs.nonfinite_hint, toolkit.serving.core), never naming an option it lacks
NONFINITE_HINT = "load the model with allow_nonfinite=True to run it anyway"


def retell_nonfinite(text: str, hint: str = "") -> str:
    """A message with the advice on NaN and infinity (`NONFINITE_HINT`, the library's
    ``allow_nonfinite=True``) retold as ``hint``: what the path that raised it offers ("": none)."""
    return text.replace(f"; {NONFINITE_HINT}", f"; {hint}" if hint else "")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.shape} {value.dtype}"
    return type(value).__name__


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of a float32 array is finite.

    One dot product of the values with a constant 2**-100 (0.4 us, against 1.3 us for
    ``np.isfinite(a).all()``): NaN and infinity propagate into it, and scaled so, no sum of
    finite float32 values can overflow (nor raise numpy's overflow warning). A few values are
    summed as Python floats instead (0.04 us for one, 0.35 us for 16; exact).
    """
    size = array.size
    if size == 1:
        return math.isfinite(array.item())
    if size <= SMALL_FINITE_CHECK:
        return math.isfinite(sum(array.ravel().tolist()))
    return math.isfinite(array.ravel().dot(_tiny_weights(size)))


_TINY_WEIGHTS: dict[int, np.ndarray] = {}


def _tiny_weights(size: int) -> np.ndarray:
    """A read-only float32 vector of ``size`` times 2**-100, cached for the sizes last seen."""
    weights = _TINY_WEIGHTS.get(size)
    if weights is None:
        if len(_TINY_WEIGHTS) >= 64:
            _TINY_WEIGHTS.clear()
        weights = np.full(size, 2.0**-100, dtype=np.float32)
        weights.flags.writeable = False
        _TINY_WEIGHTS[size] = weights
    return weights


def is_ready(value: Any, ndim: int, last: int, allow_nonfinite: bool) -> bool:
    """Whether ``value`` can be run as it is: a C-contiguous float32 ndarray of ``ndim`` axes, the
    last of size ``last``, no empty axis, and finite unless ``allow_nonfinite`` (the fast path of
    the input checks; anything else takes the full conversion with its typed errors)."""
    return (
        type(value) is np.ndarray
        and value.dtype is FLOAT32
        and len(shape := value.shape) == ndim
        and shape[-1] == last
        and all(shape)
        and value.flags.c_contiguous
        and (allow_nonfinite or all_finite(value))
    )


def nonfinite_error(name: str) -> InputValueError:
    return InputValueError(f"input {name!r} contains NaN or infinity; {NONFINITE_HINT}")


def as_float32(value: Any, name: str, expected: str, *, allow_nonfinite: bool) -> np.ndarray:
    """Converts real numbers (float or integer arrays, lists, scalars) to float32.

    Refuses booleans, complex numbers, strings and objects, and (unless allowed) NaN and
    infinity. ``expected`` describes the wanted shape for the error message. A C-contiguous
    float32 array comes back as it is (no copy, no conversion).
    """
    if type(value) is np.ndarray and value.dtype is FLOAT32 and value.ndim and value.flags.c_contiguous:  # fast path
        if allow_nonfinite or all_finite(value):
            return value
        raise nonfinite_error(name)
    if isinstance(value, np.ma.MaskedArray):  # its mask would be dropped silently by the conversion
        raise DtypeError(f"input {name!r} must be {expected} float32, got a masked array (fill it: x.filled(...))")
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (numbers.Real, list, tuple)) and not isinstance(value, bool):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            raise DtypeError(
                f"input {name!r} must be {expected} float32, got a ragged {type(value).__name__}"
            ) from None
    else:
        raise DtypeError(f"input {name!r} must be {expected} float32, got {_describe(value)}")
    if array.dtype.kind not in "fiu":
        raise DtypeError(f"input {name!r} must be {expected} float32, got {_describe(array)}")
    source = array
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    if not allow_nonfinite and not np.isfinite(array).all():
        if source.dtype.kind in "fiu" and np.isfinite(source).all():
            raise InputValueError(
                f"input {name!r} has values beyond float32's range (largest magnitude "
                f"{float(np.max(np.abs(source.astype(np.float64)))):.3g}, float32 holds up to 3.4e38)"
            )
        raise nonfinite_error(name)
    return array


INT64 = np.dtype(np.int64)


def as_tokens(value: Any, name: str, expected: str, vocabulary: int) -> np.ndarray:
    """Token ids (an integer array, list or int) as a C-contiguous int64 array, each id
    0 <= id < ``vocabulary``; a DtypeError for anything but integers (floats and booleans too), an
    InputValueError naming the first id out of range and where it is. ``expected`` describes the
    wanted shape for the error message."""
    if isinstance(value, np.ma.MaskedArray):
        raise DtypeError(f"input {name!r} must be {expected} int64 token ids, got a masked array")
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (numbers.Integral, list, tuple)) and not isinstance(value, bool):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            raise DtypeError(
                f"input {name!r} must be {expected} int64 token ids, got a ragged {type(value).__name__}"
            ) from None
    else:
        raise DtypeError(f"input {name!r} must be {expected} int64 token ids, got {_describe(value)}")
    if array.dtype.kind not in "iu":
        raise DtypeError(
            f"input {name!r} must be {expected} int64 token ids (any integer dtype), got {_describe(array)}"
        )
    if array.size and (array.min() < 0 or array.max() >= vocabulary):
        where = tuple(int(i) for i in np.argwhere((array < 0) | (array >= vocabulary))[0])
        raise InputValueError(
            f"input {name!r} holds token id {int(array[where])} at index {where}; "
            f"its ids must be 0 <= id < {vocabulary} (the vocabulary)"
        )
    return np.ascontiguousarray(array, dtype=INT64)


def check_steps(steps: Any, max_steps: int = DEFAULT_MAX_STEPS) -> int:
    """A positive whole number of steps, at most ``max_steps``."""
    if type(steps) is int and 1 <= steps <= max_steps:  # the fast path
        return steps
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise InputValueError(f"steps must be a whole number, got {steps!r} ({type(steps).__name__})")
    steps = int(steps)
    if not 1 <= steps <= max_steps:
        raise InputValueError(f"steps must be between 1 and {max_steps}, got {steps}")
    return steps


def check_memory(size: int, what: str, max_bytes: int) -> None:
    """Refuses a call that would allocate ``size`` bytes (inputs, outputs and states) when that is
    more than ``max_bytes``, before it allocates them."""
    if size > max_bytes:
        raise InputValueError(
            f"{what} would take {size / 2**20:.1f} MiB of inputs, outputs and states, more than the limit of "
            f"{max_bytes / 2**20:.1f} MiB; use fewer steps or a smaller batch, or raise max_memory_bytes"
        )


def check_count(value: Any, name: str, low: int, high: int) -> int:
    """A whole number (int or numpy integer, not bool) from ``low`` to ``high``, as an int; an
    InputValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise InputValueError(f"{name} must be a whole number from {low} to {high}, got {value!r:.80}")
    return int(value)


def check_scalar(value: float, name: str, *, allow_nonfinite: bool) -> float:
    """A Python float or numpy float scalar that float32 holds (finite unless allowed; then a
    value beyond float32's range becomes infinity, as the cast of an array does)."""
    if abs(float(value)) < FLOAT32_ROUNDS_TO_INF:  # false for NaN and infinity too
        return value
    if allow_nonfinite:
        return value if math.isnan(value) else math.copysign(math.inf, value)
    if math.isfinite(value):
        raise InputValueError(
            f"input {name!r} has values beyond float32's range (largest magnitude {abs(float(value)):.3g}, "
            "float32 holds up to 3.4e38)"
        )
    raise nonfinite_error(name)


def check_batch(array: np.ndarray, name: str, expected: str) -> None:
    if array.shape[0] == 0:
        raise ShapeError(f"input {name!r} must be {expected} with batch >= 1, got an empty batch {array.shape}")
