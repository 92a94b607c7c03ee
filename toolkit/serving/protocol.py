"""The Open Inference Protocol's pieces both serving fronts share: datatypes, tensor metadata, requests, errors.

The HTTP front (`http_api`) and the gRPC front (`grpc_api`) each decode their wire into an
`InferRequest` and encode an `InferResponse`; what they have in common lives here, so neither
imports the other: the datatype names and the numpy dtypes they decode to, a tensor's shape
checked before numpy sees it, the bearer-token check, the server's identity, and the error
mapping. Every refusal of a request is a `ServeError` with the HTTP status the fronts answer (the
gRPC front maps the status to its code); `status_of` says which status any other failure gets, and
`unexpected_message` the one line that answers a failure that is not the caller's.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import runtime

VERSION = "1"  # every model has one version; tritonclient's default ("") means it too
PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "rnn-toolkit"
# What this server implements of the protocol's extensions, honestly: the repository extension
# only as its index (no load/unload); no shared memory, classification, statistics or config.
EXTENSIONS = ("binary_tensor_data", "sequence", "parameters", "model_repository(index_only)")
MAX_DIMS = 32  # axes of one input tensor

# The protocol's datatype names and the numpy dtypes they decode to.
DATATYPES = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}

log = logging.getLogger("rnn.serve")


# ---- errors ----------------------------------------------------------------------------------


class ServeError(Exception):
    """A refused request, with the HTTP status the fronts answer (gRPC maps it to a status code)."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class BadRequest(ServeError):
    status = 400


class Unauthorized(ServeError):
    status = 401


class NotFound(ServeError):
    status = 404


class TooLarge(ServeError):
    status = 413


class Conflict(ServeError):
    """The sequence's state here is not the one the client acknowledged (this server or replica
    never held it, lost it, or holds another version): the client resends its last acknowledged
    state with ``sequence_start`` and goes on. Only requests that carry ``sequence_version`` get it."""

    status = 409


class Unavailable(ServeError):
    """Not the caller's mistake and worth a retry later: a model not ready, a full server."""

    status = 503


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:500] or type(error).__name__


def callers_error(error: BaseException) -> bool:
    """Whether an error of the runtime is the caller's (a bad input) rather than the server's."""
    return isinstance(error, (runtime.ShapeError, runtime.DtypeError, runtime.InputValueError))


def status_of(error: BaseException) -> int:
    """The HTTP status that answers ``error``: a ServeError's own, 400 for the runtime's refusal of
    an input, else 500 (the server's own failure)."""
    if isinstance(error, ServeError):
        return error.status
    return 400 if callers_error(error) else 500


def unexpected_message(error: BaseException, where: str) -> str:
    """The one line that answers a failure that is not the caller's (both fronts): its traceback
    goes to the log, its text to the caller only when it is a `runtime.ToolkitError` (written for
    users), else just its class."""
    log.error("%s failed: %s", where, one_line(error), exc_info=error)
    if isinstance(error, runtime.ToolkitError):  # typed and written for users: say what it is
        return one_line(error)
    return f"internal server error ({type(error).__name__}); the server log has the details"


def bearer_matches(value: bytes, token: bytes) -> bool:
    """Whether an authorization header (or gRPC metadata) value is ``Bearer <token>``: the scheme
    in any case, whitespace around the value and between scheme and token ignored (both fronts)."""
    scheme, _, given = value.strip().partition(b" ")
    # compare_digest on every value, whatever its scheme: no timing hint
    return hmac.compare_digest(given.strip(), token) and scheme.lower() == b"bearer"


# ---- tensors, requests, responses ----------------------------------------------------------------


def check_shape(name: str, shape: Sequence[int], max_elements: int) -> int:
    """The element count of input ``name``'s ``shape`` (ints), checked before numpy sees it (both
    fronts): at most MAX_DIMS sizes, none negative (BadRequest), at most ``max_elements`` elements
    (TooLarge); and an empty tensor's nonzero sizes may not multiply past ``max_elements`` either
    (BadRequest: numpy cannot even hold such a shape)."""
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"input '{name}' has {len(shape)} dimensions in its shape, at most {MAX_DIMS} are allowed")
    volume = 1  # the product of the nonzero sizes
    empty = False
    for size in shape:
        if size < 0:
            raise BadRequest(f"input '{name}' shape must hold sizes >= 0, got {list(shape)!r:.80}")
        if size == 0:
            empty = True
        elif volume <= max_elements:  # past the limit the product no longer matters
            volume *= size
    if volume > max_elements:
        if not empty:
            raise TooLarge(f"input '{name}' has {volume} elements, the limit is {max_elements}")
        raise BadRequest(
            f"input '{name}' shape {list(shape)!r:.80} is out of range: its nonzero sizes multiply past the limit "
            f"of {max_elements} elements"
        )
    return 0 if empty else volume


@dataclass(frozen=True)
class TensorMetadata:
    """One input or output of a served model as the protocol's model metadata shows it (not the
    manifest's `runtime.manifest.TensorSpec`): its wire datatype name and shape, -1 for a dynamic
    axis; ``optional`` inputs may be left out of a request."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class InferRequest:
    """One decoded inference request. ``inputs`` holds numpy arrays of the wire's datatype and
    shape; ``outputs`` the requested output names (None: all)."""

    model: str
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    model: str
    id: str
    outputs: list[tuple[str, np.ndarray]]
    parameters: dict[str, Any] = field(default_factory=dict)
