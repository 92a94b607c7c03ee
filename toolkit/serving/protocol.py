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
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import runtime

VERSION = "1"  # every model has one version; tritonclient's default ("") means it too
PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "rnn-toolkit"
# What this server implements of the protocol's extensions, honestly: the repository extension
# only as its index (no load/unload); model configuration and statistics (`statistics.py`); no
# shared memory, classification, trace or logging.
EXTENSIONS = (
    "binary_tensor_data",
    "sequence",
    "parameters",
    "model_repository(index_only)",
    "model_configuration",
    "statistics",
)
MAX_DIMS = 32  # axes of one input tensor
MAX_REQUEST_ID_CHARS = 256  # a request's 'id', echoed in its answer (every streamed message holds it)

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
    # strings (text_input / text_output of a token model with a vocabulary): an object array of
    # bytes; on the binary wire each is a 4-byte little-endian length and its bytes (`bytes_tensor`)
    "BYTES": np.dtype(object),
}
DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}
BYTES = "BYTES"

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
    shape; ``outputs`` the requested output names (None: all); ``receive`` the HTTP front's ASGI
    receive (its ``http.disconnect`` stops a generation whose client went away), else None."""

    model: str
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    receive: Callable[[], Awaitable[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        check_request_id(self.id)


def check_request_id(value: str) -> None:
    """A request id is echoed in its answer, escaped as JSON (up to 12 bytes a character) or in
    every message of a stream: a long one would make an answer larger than its size check counts."""
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise BadRequest(f"the request 'id' is longer than {MAX_REQUEST_ID_CHARS} characters")


@dataclass
class InferResponse:
    model: str
    id: str
    outputs: list[tuple[str, np.ndarray]]
    parameters: dict[str, Any] = field(default_factory=dict)


# ---- BYTES tensors (both fronts) ------------------------------------------------------------------


def _strings(name: str, raw: bytes | memoryview, count: int) -> list[bytes]:
    """``count`` strings of the binary form: each a 4-byte little-endian length, then its bytes."""
    values, offset, data = [], 0, memoryview(raw)
    while offset < len(data):
        if offset + 4 > len(data):
            raise BadRequest(f"input '{name}' (BYTES) ends inside a string's 4-byte length")
        (length,) = struct.unpack_from("<I", data, offset)
        if offset + 4 + length > len(data):
            raise BadRequest(f"input '{name}' (BYTES) has a string of {length} bytes past its data's end")
        values.append(bytes(data[offset + 4 : offset + 4 + length]))
        offset += 4 + length
        if len(values) > count:
            break
    if len(values) != count:
        raise BadRequest(f"input '{name}' (BYTES) holds {len(values)} strings or more, its shape needs {count}")
    return values


def bytes_tensor(name: str, shape: Sequence[int], count: int, raw: bytes | memoryview | None, items: Any) -> np.ndarray:
    """A BYTES input as an object array of bytes of ``shape``: from ``raw`` (the binary form; None:
    not sent so), else from ``items`` (a JSON array of strings, or gRPC's ``bytes_contents``)."""
    if raw is not None:
        values = _strings(name, raw, count)
    else:
        values, pending = [], [iter(items)]
        while pending and len(values) <= count:  # row-major, nested JSON arrays flattened
            item = next(pending[-1], pending)
            if item is pending:
                pending.pop()
            elif isinstance(item, list):
                pending.append(iter(item))
            elif isinstance(item, (str, bytes)):
                values.append(item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item)
            else:
                raise BadRequest(f"input '{name}' is BYTES: its data must be strings, got {type(item).__name__}")
        if len(values) != count:
            raise BadRequest(f"input '{name}' (BYTES) holds {len(values)} strings or more, its shape needs {count}")
    array = np.empty(count, object)
    array[:] = values
    return array.reshape(tuple(shape))


def json_bytes_input(
    name: str, shape: Sequence[int], count: int, item: dict[str, Any], size: Any, rest: memoryview | None, offset: int
) -> tuple[np.ndarray, int]:
    """A BYTES input of the HTTP front's JSON request (``item``): its ``data`` (strings), or
    ``size`` bytes of the binary data ``rest`` from ``offset``; (the array, the binary bytes used)."""
    if size is None:
        if "data" not in item:
            raise BadRequest(f"input '{name}' has no 'data' and no binary_data_size")
        if not isinstance(item["data"], list):
            raise BadRequest(f"input '{name}' data must be a JSON array, got {type(item['data']).__name__}")
        return bytes_tensor(name, shape, count, None, item["data"]), 0
    if "data" in item:
        raise BadRequest(f"input '{name}' has both 'data' and binary_data_size")
    if type(size) is not int or size < 0:
        raise BadRequest(f"input '{name}' parameter 'binary_data_size' must be a byte count, got {size!r:.40}")
    if rest is None or offset + size > len(rest):
        raise BadRequest(f"input '{name}' needs {size} bytes of binary data the request does not hold")
    return bytes_tensor(name, shape, count, rest[offset : offset + size], None), size


def _items(array: np.ndarray) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.ravel().tolist()]


def bytes_output(entry: dict[str, Any], array: np.ndarray, binary: bool) -> list[bytes]:
    """A BYTES output (an object array of bytes or str) on the HTTP front: sets its JSON ``entry``'s
    ``data`` (the strings, decoded as UTF-8) or, ``binary``, its ``binary_data_size``; the binary
    blobs that follow the JSON (none, or its length-prefixed form)."""
    items = _items(array)
    if not binary:
        entry["data"] = [v.decode("utf-8", "replace") for v in items]
        return []
    blob = b"".join([struct.pack("<I", len(v)) + v for v in items])
    entry["parameters"] = {"binary_data_size": len(blob)}
    return [blob]


def raw_contents(array: np.ndarray) -> bytes:
    """An output's raw bytes (gRPC ``raw_output_contents``; the binary extension): BYTES in its
    length-prefixed form, any other datatype its values."""
    if array.dtype == DATATYPES[BYTES]:
        return b"".join([struct.pack("<I", len(v)) + v for v in _items(array)])
    return array.tobytes()
