"""The HTTP front of `rnn serve`: the Open Inference Protocol's REST routes (KServe v2 with Triton's
binary tensor data extension) over an `Engine`. Decodes and encodes the wire; knows no model.

Every error is JSON ``{"error": "<one line>"}`` with the status of the `ServeError` (the caller's
mistakes 4xx, a model not ready 503); an unexpected failure is a 500 with one line, its traceback
goes to the log. The infer route is a plain ASGI callable (the hot path: no Request object); the
other routes are ordinary Starlette endpoints.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import runtime

from .answer_size import Encoding, check_answer
from .callers import CALLER, Tokens
from .core import Engine, Limits
from .generate_http import generate_routes
from .metrics import CONTENT_TYPE
from .protocol import (
    BYTES,
    DATATYPE_OF,
    DATATYPES,
    EXTENSIONS,
    MAX_DIMS,
    SERVER_NAME,
    VERSION,
    BadRequest,
    InferRequest,
    InferResponse,
    ServeError,
    TooLarge,
    Unauthorized,
    Unavailable,
    bytes_output,
    check_shape,
    json_bytes_input,
    one_line,
    unexpected_message,
)
from .statistics import model_config, model_statistics

PROTOCOL = "http"
LIVE_PATH = "/v2/health/live"  # the one route that needs no token
HEADER_LENGTH = "Inference-Header-Content-Length"
INDEX_BODY_BYTES = 1 << 16  # a repository index request's optional JSON body
# Work off the event loop (in the default executor) so one large request does not stall the others;
# below these sizes it stays inline (one step pays no thread hop). Off the loop, the GIL is handed
# over between pieces (Python number hooks; JSON data encoded in chunks): `_hand_over`.
OFFLOAD_BODY_BYTES = 1 << 20  # decoding a request body larger than this
OFFLOAD_COMPRESSED_BYTES = 1 << 16  # inflating a compressed body larger than this
INLINE_INFLATE_BYTES = 1 << 18  # inflated on the loop at most (a small body that inflates more: a thread)
INFLATE_SLICE_BYTES = 1 << 22  # inflated per thread call (the GIL changes hands between them)
OFFLOAD_JSON_ELEMENTS = 1 << 13  # encoding a response with more output elements as JSON than this
JSON_CHUNK_ELEMENTS = 1 << 10  # output values per json call when encoding off the loop

JSON_TYPE = b"application/json"
BINARY_TYPE = b"application/octet-stream"
_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()
RETRY_AFTER = (b"retry-after", b"1")
_ALLOWED_TYPES = {"f": (float, int), "i": (int,), "u": (int,), "b": (bool,)}  # JSON values per dtype kind


class UnsupportedEncoding(ServeError):
    status = 415


class RequestTimeout(ServeError):
    status = 408


class _Disconnected(Exception):
    """The client went away while its request body was being read: nothing to answer."""


# ---- wire helpers ----------------------------------------------------------------------------


def _no_constant(name: str) -> None:
    raise BadRequest(f"the request's JSON holds {name}, which JSON does not allow")


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # made once: json.dumps with options
_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # or json.loads with options makes one per call


def _hand_over() -> None:
    """The event loop takes the GIL if it waits (else a whole switch interval each time it wakes)."""
    time.sleep(0)


_NUMBERS_READ = itertools.count()  # by the yielding decoder, in every thread


def _handing_over(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:  # what the C decoder does, in Python: the GIL handed over every 1,024
        if not next(_NUMBERS_READ) & 1023:
            _hand_over()
        return convert(text)

    return parse


# off the loop only; integers too (FP32 data may be written 0,1,2,...)
_YIELDING_DECODER = json.JSONDecoder(
    parse_constant=_no_constant, parse_float=_handing_over(float), parse_int=_handing_over(int)
)


def _dumps(document: Any) -> bytes:
    return _ENCODER.encode(document).encode()


def _error_body(message: str) -> bytes:
    return _dumps({"error": message})


def _unexpected(error: BaseException, where: str) -> tuple[int, str]:
    """(500, one line) for a failure that is not the caller's; its traceback goes to the log."""
    return 500, unexpected_message(error, where)


async def _send(send: Callable, status: int, body: bytes, content_type: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_response(document: Any, status: int = 200) -> Response:
    return Response(_dumps(document), status, media_type="application/json")


def _error_response(status: int, message: str) -> Response:
    return Response(_error_body(message), status, media_type="application/json")


async def read_body(receive: Callable, declared: str | bytes | None, limit: int) -> bytes:
    """The request body, refused (TooLarge) once it passes ``limit`` bytes: at once when the
    Content-Length header says so, else while it streams in."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"header Content-Length must be a byte count, got {declared!r:.40}") from None
        if size > limit:
            raise TooLarge(f"the request body has {size} bytes, the limit is {limit}")
    chunks = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        if chunk:
            received += len(chunk)
            if received > limit:
                raise TooLarge(f"the request body has more than {limit} bytes, the limit")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _inflater(body: bytes, encoding: str) -> Any:
    """A zlib decompressor for a gzip or deflate (zlib or raw) body; None for identity."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r:.40} is not supported (gzip, deflate or none)")
    return zlib.decompressobj(wbits)


def _inflate(inflater: Any, body: bytes, parts: list[bytes], budget: int, limit: int, encoding: str) -> bool:
    """Inflates up to ``budget`` more bytes into ``parts`` (at most ``limit`` in all): True once
    the compressed data has ended, exactly at the body's end (trailing bytes or a second gzip
    member are a BadRequest)."""
    produced = sum(map(len, parts))
    try:
        while True:
            room = min(budget, limit + 1 - produced)
            source = inflater.unconsumed_tail if parts else body
            chunk = inflater.decompress(source, max(room, 1))
            parts.append(chunk)
            produced += len(chunk)
            budget -= len(chunk)
            if produced > limit:
                raise TooLarge(f"the request body inflates to more than {limit} bytes, the limit")
            if inflater.eof or (not inflater.unconsumed_tail and len(chunk) < room):
                break  # the end, or all of the input taken and nothing more to give
            if budget <= 0:
                return False
    except zlib.error as error:
        raise BadRequest(f"the request body is not valid {encoding} data: {error}") from None
    if not inflater.eof:
        raise BadRequest(f"the request body is truncated {encoding} data")
    if inflater.unused_data:
        raise BadRequest(
            f"the request body has {len(inflater.unused_data)} bytes after its {encoding} data "
            "(trailing bytes or a second gzip member, which this server does not take)"
        )
    return True


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib or raw) request body inflated to at most ``limit`` bytes, bounded
    as it streams; exactly one member, nothing after it."""
    inflater = _inflater(body, encoding)
    if inflater is None:
        return body
    parts: list[bytes] = []
    _inflate(inflater, body, parts, limit + 1, limit, encoding.strip().lower())
    return b"".join(parts)


async def inflate_body(body: bytes, encoding: str, limit: int) -> bytes:
    """`decompress` with at most INLINE_INFLATE_BYTES inflated on the event loop: the rest (a
    large body, or a small bomb) in a thread, a slice at a time."""
    inflater = _inflater(body, encoding)
    if inflater is None:
        return body
    name = encoding.strip().lower()
    parts: list[bytes] = []
    if len(body) <= OFFLOAD_COMPRESSED_BYTES and _inflate(inflater, body, parts, INLINE_INFLATE_BYTES, limit, name):
        return b"".join(parts)
    while not await asyncio.to_thread(_inflate, inflater, body, parts, INFLATE_SLICE_BYTES, limit, name):
        pass
    return b"".join(parts)


# ---- decoding an inference request -----------------------------------------------------------


def _split(body: bytes, header_length: bytes | None) -> tuple[bytes | memoryview, memoryview | None]:
    """(the JSON part, the binary part or None) of a request body."""
    if header_length is None:
        return body, None
    text = header_length.decode("latin-1").strip()
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"header {HEADER_LENGTH} must be a byte count, got {text!r:.40}")
    length = int(text)
    if length > len(body):
        raise BadRequest(f"header {HEADER_LENGTH} is {length} but the request body has only {len(body)} bytes")
    view = memoryview(body)
    return view[:length], view[length:]


def _parse(head: bytes | memoryview, decoder: json.JSONDecoder = _DECODER) -> dict[str, Any]:
    try:
        document = decoder.decode(str(head, "utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(f"the request's JSON is malformed: {one_line(error)}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"the request must be a JSON object, got {type(document).__name__}")
    return document


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{what} must be a JSON array, got {type(value).__name__}")
    return value


def _name(item: Any, what: str) -> str:
    if not isinstance(item, dict):
        raise BadRequest(f"each of '{what}' must be a JSON object, got {type(item).__name__}")
    name = item.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"each of '{what}' needs a string 'name'")
    return name


def _shape(name: str, value: Any, max_elements: int) -> tuple[list[int], int]:
    """An input's shape and element count, refused (TooLarge) past ``max_elements`` before its
    data is looked at."""
    if not isinstance(value, list):
        raise BadRequest(f"input '{name}' needs a 'shape': an array of at most {MAX_DIMS} sizes")
    for size in value:
        if type(size) is not int:
            raise BadRequest(f"input '{name}' shape must hold sizes >= 0, got {value!r:.80}")
    return value, check_shape(name, value, max_elements)


def _json_tensor(name: str, datatype: str, dtype: np.dtype, shape: list[int], count: int, data: Any) -> np.ndarray:
    """An input given as JSON ``data`` (flat or nested, row-major) as an array of ``dtype``."""
    if not isinstance(data, list):
        raise BadRequest(f"input '{name}' data must be a JSON array, got {type(data).__name__}")
    depth, probe = 0, data
    while isinstance(probe, list) and probe:  # numpy's arrays have at most 32 dimensions
        depth, probe = depth + 1, probe[0]
        if depth > MAX_DIMS:
            raise BadRequest(f"input '{name}' data is nested deeper than {MAX_DIMS} arrays")
    try:
        values = np.asarray(data, dtype=object)
    except ValueError:
        raise BadRequest(f"input '{name}' data is a ragged nested array") from None
    allowed = _ALLOWED_TYPES[dtype.kind]
    for kind in set(map(type, values.flat)):
        if kind is list:  # numpy leaves the lists of a ragged array as objects
            raise BadRequest(f"input '{name}' data is a ragged nested array")
        if kind not in allowed:
            wanted = {"f": "numbers", "i": "integers", "u": "integers", "b": "booleans"}[dtype.kind]
            got = "null" if kind is type(None) else kind.__name__
            raise BadRequest(f"input '{name}' is {datatype}: its data must be {wanted}, got {got}")
    if values.size != count:
        raise BadRequest(f"input '{name}' has {values.size} values but shape {shape} needs {count}")
    if count == 0:
        return np.empty(shape, dtype)
    try:
        if dtype.kind == "f":
            wide = values.astype(np.float64)
            if not np.isfinite(wide).all():
                raise BadRequest(f"input '{name}' holds a value that is not a finite number")
            if dtype != np.float64 and np.abs(wide).max() > np.finfo(dtype).max:
                raise BadRequest(f"input '{name}' holds a value out of the range of {datatype}")
            array = wide.astype(dtype)
        else:
            array = values.astype(dtype)
    except OverflowError as error:
        raise BadRequest(f"input '{name}' holds a value out of the range of {datatype}: {one_line(error)}") from None
    return array.reshape(shape)


def _binary_tensor(
    name: str, datatype: str, dtype: np.dtype, shape: list[int], count: int, size: Any, rest: memoryview, offset: int
) -> np.ndarray:
    if type(size) is not int or size < 0:
        raise BadRequest(f"input '{name}' parameter 'binary_data_size' must be a byte count, got {size!r:.40}")
    needed = count * dtype.itemsize
    if size != needed:
        raise BadRequest(
            f"input '{name}' has binary_data_size {size} but shape {shape} of {datatype} is {needed} bytes"
        )
    if offset + size > len(rest):
        raise BadRequest(
            f"input '{name}' needs bytes {offset} to {offset + size} of the binary data, which has {len(rest)} "
            f"(header {HEADER_LENGTH} or binary_data_size is wrong)"
        )
    array = np.frombuffer(rest, dtype, count, offset).reshape(shape)
    return array if array.flags.aligned else array.copy()


def decode_infer(
    model: str, body: bytes, header_length: bytes | None, max_elements: int
) -> tuple[InferRequest, bool, dict[str, bool]]:
    """A request body as (InferRequest, whether outputs are binary by default, per-output choice);
    an input of more than ``max_elements`` elements is refused from its shape, before its data."""
    head, rest = _split(body, header_length)
    document = _parse(head, _YIELDING_DECODER if len(head) > OFFLOAD_BODY_BYTES else _DECODER)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise BadRequest(f"the request 'id' must be a string, got {type(request_id).__name__}")
    parameters = _dict(document.get("parameters"), "the request 'parameters'")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequest(f"parameter 'binary_data_output' must be a boolean, got {type(binary_default).__name__}")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in _list(document.get("inputs"), "the request 'inputs'"):
        name = _name(item, "inputs")
        if name in inputs:
            raise BadRequest(f"input '{name}' is given twice")
        datatype = item.get("datatype")
        dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            if datatype == "BYTES":
                raise BadRequest(f"input '{name}' is BYTES, which this server does not support")
            raise BadRequest(f"input '{name}' has an unknown datatype {datatype!r:.40} (known: {', '.join(DATATYPES)})")
        shape, count = _shape(name, item.get("shape"), max_elements)
        tensor_parameters = _dict(item.get("parameters"), f"input '{name}' parameters")
        if "shared_memory_region" in tensor_parameters:
            raise BadRequest(f"input '{name}' is in shared memory, which this server does not support")
        size = tensor_parameters.get("binary_data_size")
        if datatype == BYTES:  # strings: JSON strings or 4-byte length-prefixed binary
            inputs[name], used = json_bytes_input(name, shape, count, item, size, rest, offset)
            offset += used
            continue
        if size is not None:
            if "data" in item:
                raise BadRequest(f"input '{name}' has both 'data' and binary_data_size")
            if rest is None:
                raise BadRequest(f"input '{name}' has binary_data_size but the request has no {HEADER_LENGTH} header")
            inputs[name] = _binary_tensor(name, datatype, dtype, shape, count, size, rest, offset)
            offset += size
        elif "data" in item:
            inputs[name] = _json_tensor(name, datatype, dtype, shape, count, item["data"])
        else:
            raise BadRequest(f"input '{name}' has no 'data' and no binary_data_size")
    if rest is not None and offset != len(rest):
        raise BadRequest(
            f"the binary data has {len(rest)} bytes but the inputs' binary_data_size add up to {offset} "
            f"(header {HEADER_LENGTH} or binary_data_size is wrong)"
        )
    outputs: list[str] | None = None
    binary: dict[str, bool] = {}
    if document.get("outputs") is not None:
        outputs = []
        for item in _list(document["outputs"], "the request 'outputs'"):
            name = _name(item, "outputs")
            output_parameters = _dict(item.get("parameters"), f"output '{name}' parameters")
            for unsupported in ("classification", "shared_memory_region"):
                if unsupported in output_parameters:
                    raise BadRequest(f"output '{name}' asks for {unsupported}, which this server does not support")
            choice = output_parameters.get("binary_data")
            if choice is not None:
                if not isinstance(choice, bool):
                    raise BadRequest(f"output '{name}' parameter 'binary_data' must be a boolean")
                binary[name] = choice
            outputs.append(name)
    return InferRequest(model, inputs, outputs, request_id, parameters), binary_default, binary


# ---- encoding an inference response ----------------------------------------------------------


def _json_values(array: np.ndarray) -> list[Any]:
    values = array.ravel().tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # JSON has no NaN or infinity
        values = [v if math.isfinite(v) else None for v in values]
    return values


def _json_elements(response: InferResponse, binary_default: bool, binary: dict[str, bool]) -> int:
    """How many output elements encode_infer writes as JSON numbers."""
    return sum(array.size for name, array in response.outputs if not binary.get(name, binary_default))


def _chunked_json(entry: dict[str, Any], array: np.ndarray) -> bytes:
    """An output ``entry`` with its ``data`` (last), encoded a chunk of values at a time."""
    flat = array.ravel()
    parts = [_dumps(entry)[:-1], b',"data":[']
    for start in range(0, flat.size, JSON_CHUNK_ELEMENTS):
        if start:
            parts.append(b",")
            _hand_over()
        parts.append(_dumps(_json_values(flat[start : start + JSON_CHUNK_ELEMENTS]))[1:-1])
    parts.append(b"]}")
    return b"".join(parts)


def encode_infer(response: InferResponse, binary_default: bool, binary: dict[str, bool]) -> tuple[bytes, int | None]:
    """(the response body, the length of its JSON part if binary outputs follow it, else None).
    Past OFFLOAD_JSON_ELEMENTS values as JSON, each output's data is encoded a chunk at a time
    (the same bytes; between chunks another thread can take the GIL)."""
    chunked = _json_elements(response, binary_default, binary) > OFFLOAD_JSON_ELEMENTS
    outputs: list[Any] = []
    spliced: list[bytes] = []
    blobs = []
    for name, array in response.outputs:
        entry: dict[str, Any] = {"name": name, "datatype": DATATYPE_OF[array.dtype], "shape": list(array.shape)}
        if entry["datatype"] == BYTES:  # strings: JSON strings or 4-byte length-prefixed binary
            blobs += bytes_output(entry, array, binary.get(name, binary_default))
            outputs.append(entry)
            continue
        if binary.get(name, binary_default):
            array = np.ascontiguousarray(array)
            entry["parameters"] = {"binary_data_size": array.nbytes}
            blobs.append(array)
        elif chunked:
            outputs.append(len(spliced))  # an int in the document marks where the output goes
            spliced.append(_chunked_json(entry, array))
            continue
        else:
            entry["data"] = _json_values(array)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model, "model_version": VERSION}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    if spliced:
        document["outputs"] = []
        start, end = _dumps(document).rsplit(b"[]", 1)
        items = [spliced[item] if isinstance(item, int) else _dumps(item) for item in outputs]
        head = b"".join([start, b"[", b",".join(items), b"]", end])
    else:
        document["outputs"] = outputs
        head = _dumps(document)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


class _Infer:
    """POST .../infer as a plain ASGI callable: read, decode, infer, encode, answer."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limits: Limits = engine.settings.limits
        self.encodings = {binary: Encoding(self.limits.max_body_bytes, binary) for binary in (False, True)}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        path = scope["path_params"]
        name = path["name"]
        declared = encoding = header_length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == _HEADER_LENGTH_KEY:
                header_length = value
            elif key == b"content-encoding":
                encoding = value
        engine = self.engine
        counted = False
        try:
            limits = self.limits
            body = await read_body(receive, declared, limits.max_body_bytes)
            if encoding is not None:
                body = await inflate_body(body, encoding.decode("latin-1"), limits.max_body_bytes)
            decode = (name, body, header_length, limits.max_elements)
            if len(body) > OFFLOAD_BODY_BYTES:
                request, binary_default, binary = await asyncio.to_thread(decode_infer, *decode)
            else:
                request, binary_default, binary = decode_infer(*decode)
            request.receive = receive  # a long call (a generation) stops when the client goes away
            version = path.get("version", "")
            written = self.encodings[binary_default]  # how the answer is written (JSON or binary outputs)
            if binary:
                written = Encoding(limits.max_body_bytes, binary_default, binary)
            check_answer(engine, request, version, written)  # one that could pass the limit: refused before it runs
            counted = True  # the engine counts its own answers
            response = await engine.infer(request, PROTOCOL, version)
            if _json_elements(response, binary_default, binary) > OFFLOAD_JSON_ELEMENTS:
                payload, json_length = await asyncio.to_thread(encode_infer, response, binary_default, binary)
            else:
                payload, json_length = encode_infer(response, binary_default, binary)
        except _Disconnected:
            return
        except Exception as error:
            if isinstance(error, ServeError):
                status, message = error.status, str(error)
            else:
                status, message = _unexpected(error, f"an inference request of model '{name}'")
            if not counted:
                model = name if name in engine.names else ""
                engine.metrics.request(model, PROTOCOL, status, time.perf_counter() - started)
            await _send(send, status, _error_body(message), JSON_TYPE)
            return
        if json_length is None:
            await _send(send, 200, payload, JSON_TYPE)
        else:
            await _send(send, 200, payload, BINARY_TYPE, [(_HEADER_LENGTH_KEY, str(json_length).encode())])


# ---- the other routes ------------------------------------------------------------------------


RouteHandler = Callable[[Request], Awaitable[Response]]  # a Starlette route's function


def _answers_errors(handler: RouteHandler) -> RouteHandler:
    """A route whose ServeError is a JSON error of its status and any other failure a logged 500."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except ServeError as error:
            return _error_response(error.status, str(error))
        except Exception as error:
            return _error_response(*_unexpected(error, f"{request.method} {request.url.path}"))

    return guarded


class _Auth:
    """Refuses (401) every request but liveness without ``Authorization: Bearer <token>`` of one of
    the server's tokens; the routes run with `callers.CALLER` set to that token's owner tag."""

    def __init__(self, app: Callable, tokens: Tokens) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] != LIVE_PATH:
            given = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    given = value
                    break
            owner = None if given is None else self.tokens.owner(given)
            if owner is None:
                why = "a wrong token" if given else "no token"
                error = Unauthorized(f"this server needs header 'Authorization: Bearer <token>'; the request has {why}")
                await _send(send, error.status, _error_body(str(error)), JSON_TYPE, [(b"www-authenticate", b"Bearer")])
                return
            CALLER.set(owner)  # this request's task and those it starts: whose sequences it reaches
        await self.app(scope, receive, send)


class Door:
    """What the HTTP front lets in at once, server-wide: ``max_active`` requests in progress
    (beyond: 503; liveness always answers; a connection that sends nothing is not a request, the
    server's header deadline closes it), ``max_inflight_bytes`` of request bodies held by them
    (a Content-Length beyond what is left, or a body that grows past it: 503 with Retry-After),
    and a body that stops arriving for ``body_timeout_s`` is a 408."""

    def __init__(self, max_active: int, max_inflight_bytes: int, body_timeout_s: float, max_body_bytes: int) -> None:
        self.max_active, self.max_inflight_bytes, self.body_timeout_s = max_active, max_inflight_bytes, body_timeout_s
        self.max_body_bytes = max_body_bytes  # a body declared larger: the route's 413, nothing held
        self.active = 0
        self.inflight_bytes = 0

    def take(self, size: int) -> None:
        """Holds ``size`` more bytes of request bodies, or Unavailable when the budget has no room."""
        if self.inflight_bytes + size > self.max_inflight_bytes:
            raise Unavailable(
                f"the server holds {self.inflight_bytes} bytes of request bodies in flight and this request needs "
                f"{size} more, past its budget of {self.max_inflight_bytes} (--max-inflight-bytes): retry shortly"
            )
        self.inflight_bytes += size


async def _deadline_receive(receive: Callable, timeout_s: float) -> dict:
    """The next ASGI message, or RequestTimeout after ``timeout_s``: a timer, not wait_for (no
    task per message, no extra turn of the loop before the route reads it)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await receive()
    except TimeoutError:
        raise RequestTimeout(f"the request body stopped arriving for {timeout_s:g} s") from None


class _Guard:
    """The `Door` as ASGI middleware around the routes, inside the token check (a request without
    the token is refused before any of its body is read or held)."""

    def __init__(self, app: Callable, door: Door) -> None:
        self.app, self.door = app, door

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] == LIVE_PATH:
            await self.app(scope, receive, send)
            return
        door = self.door
        held = 0
        try:
            if door.active >= door.max_active:
                raise Unavailable(f"the server has {door.active} requests in progress, its limit (--max-connections)")
            for key, value in scope["headers"]:
                if key == b"content-length" and value.isdigit() and int(value) <= door.max_body_bytes:
                    door.take(int(value))  # the whole declared body, before any of it is read
                    held = int(value)
        except ServeError as error:
            await _send(send, error.status, _error_body(str(error)), JSON_TYPE, [RETRY_AFTER])
            return
        received = 0
        complete = False

        async def guarded_receive() -> dict:
            nonlocal received, held, complete
            if complete:  # after the body: a wait for the client going away, no deadline
                return await receive()
            if getattr(getattr(receive, "__self__", None), "more_body", True) is False:
                message = await receive()  # uvicorn holds the whole body already (a small request): no wait, no timer
            else:
                message = await _deadline_receive(receive, door.body_timeout_s)
            received += len(message.get("body", b""))
            counted = min(received, door.max_body_bytes + 1)  # past the body limit: the route's 413
            if counted > held:
                door.take(counted - held)
                held = counted
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded_send(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                message = {**message, "headers": [*message.get("headers", []), RETRY_AFTER]}
            await send(message)

        door.active += 1
        try:
            await self.app(scope, guarded_receive, guarded_send)
        finally:
            door.active -= 1
            door.inflight_bytes -= held


@_answers_errors
async def _live(request: Request) -> Response:
    return Response(b"", 200)


def _extension_routes(engine: Engine, model: str, version: str) -> list[Route]:
    """Triton's model configuration and statistics extensions (`statistics`): GET .../config and
    .../stats of a model (and version), and /v2/models/stats of every served name."""

    @_answers_errors
    async def answer(request: Request) -> Response:
        path = request.path_params
        name, number = path.get("name", ""), path.get("version", "")
        if request.url.path.endswith("/config"):
            return _json_response(model_config(engine, engine.lookup(name, number)))
        return _json_response(model_statistics(engine, name, number))

    paths = ["/v2/models/stats", *(path + end for path in (model, version) for end in ("/config", "/stats"))]
    return [Route(path, answer, methods=["GET"]) for path in paths]


def create_app(engine: Engine, *, token: str | Iterable[str] | None, door: Door | None = None) -> Starlette:
    """The HTTP front of ``engine``: an ASGI app (run by `Server` on uvicorn); ``token``: one or several."""

    @_answers_errors
    async def server_metadata(request: Request) -> Response:
        return _json_response({"name": SERVER_NAME, "version": runtime.__version__, "extensions": list(EXTENSIONS)})

    @_answers_errors
    async def ready(request: Request) -> Response:
        if engine.ready:
            return Response(b"", 200)
        waiting = [f"'{s.name}' ({s.error})" for s in engine.served.values() if not s.ready]
        raise Unavailable(f"not every model is ready: {', '.join(waiting)}")

    @_answers_errors
    async def model_metadata(request: Request) -> Response:
        path = request.path_params
        return _json_response(engine.lookup(path["name"], path.get("version", "")).metadata())

    @_answers_errors
    async def model_ready(request: Request) -> Response:
        path = request.path_params
        named = engine.lookup(path["name"], path.get("version", ""))
        if not named.ready:
            raise Unavailable(f"model '{named.name}' is not ready: {named.served.error}")
        return Response(b"", 200)

    @_answers_errors
    async def repository_index(request: Request) -> Response:
        body = await read_body(request.receive, request.headers.get("content-length"), INDEX_BODY_BYTES)
        only_ready = _dict(_parse(body) if body.strip() else {}, "the index request").get("ready", False)
        if not isinstance(only_ready, bool):
            raise BadRequest("the index request's 'ready' must be a boolean")
        index = engine.repository_index()
        return _json_response([entry for entry in index if entry["state"] == "READY"] if only_ready else index)

    @_answers_errors
    async def metrics(request: Request) -> Response:
        return Response(engine.metrics.text(), 200, headers={"content-type": CONTENT_TYPE})

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            message = f"no route {request.url.path} (see the Open Inference Protocol's /v2 routes)"
        else:
            message = f"{request.method} {request.url.path}: {error.detail}"
        return Response(_error_body(message), error.status_code, media_type="application/json", headers=error.headers)

    infer = _Infer(engine)
    model = "/v2/models/{name}"
    version = model + "/versions/{version}"
    routes = [
        Route(model + "/infer", infer, methods=["POST"]),  # first: the hot path matches at once
        Route(version + "/infer", infer, methods=["POST"]),
        *_extension_routes(engine, model, version),  # before /v2/models/{name}: /v2/models/stats
        Route(LIVE_PATH, _live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route(model, model_metadata, methods=["GET"]),
        Route(version, model_metadata, methods=["GET"]),
        Route(model + "/ready", model_ready, methods=["GET"]),
        Route(version + "/ready", model_ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ] + generate_routes(engine)  # Triton's generate extension (sampled NAME-generate), after the hot path
    tokens = Tokens.of(token)
    middleware = [Middleware(_Auth, tokens=tokens)] if tokens else []
    middleware += [Middleware(_Guard, door=door)] if door else []
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
