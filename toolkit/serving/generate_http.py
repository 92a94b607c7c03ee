"""Triton's generate extension over HTTP for sampled ``NAME-generate``:
``POST /v2/models/NAME-generate[/versions/1]/generate`` (one JSON answer) and ``.../generate_stream``
(server-sent events: one ``data: {...}`` event per group of tokens, as they are drawn: the first
token alone, then a group once `generation.STREAM_GROUP` tokens wait or `generation.STREAM_WAIT_S`
passed).

The request is one JSON object: ``text_input`` (the prompt as text, for a model with a
vocabulary) or the token input by its manifest name (a list of ids), the model's other inputs for
one stream by name (held for every step), optionally its state tensors, and ``parameters``
(`generate_calls`: strategy, temperature, top_k, top_p, seed, max_tokens, stop, stop_text and the
sequence parameters); any other top-level field is taken as a parameter, as Triton does. Each
answer (and each event) is ``{"model_name", "model_version", "tokens": [ids], "text_output"
(with a vocabulary), "finish_reason"}`` (``finish_reason`` null until the last; a sequence's last
answer adds ``sequence_version``). A request refused before its generation starts is answered
with its status and ``{"error": "<one line>"}``; a failure after the stream began is one event
``{"error": ...}``. A client that goes away ends its generation and frees its slot. A
``/generate`` request whose one answer could pass --max-body-bytes (``max_tokens`` ids and their
text, `answer_size.check_generated`) is refused (413) before its generation starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .answer_size import check_generated
from .core import Engine, ServedName
from .generate_calls import (
    SAMPLED,
    TEXT_INPUT,
    TEXT_OUTPUT,
    TOKENS_OUTPUT,
    Abandoned,
    Started,
    disconnected,
    until_gone,
    words,
)
from .generation import STREAM_GROUP, STREAM_WAIT_S
from .protocol import (
    VERSION,
    BadRequest,
    NotFound,
    ServeError,
    TooLarge,
    Unavailable,
    one_line,
    status_of,
    unexpected_message,
)

PROTOCOL = "http"
EVENT_STREAM = "text/event-stream; charset=utf-8"
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _json(document: Any) -> bytes:
    return _ENCODER.encode(document).encode()


def _error(status: int, message: str) -> Response:
    return Response(_json({"error": message}), status, media_type="application/json")


def generated_name(engine: Engine, name: str, version: str) -> ServedName:
    """The sampled NAME-generate a generate route addresses (``NAME`` itself names it too)."""
    try:
        named = engine.lookup(name, version)
    except NotFound:
        named = None
    other = engine.names.get(name + "-generate")
    for unready in (named, other):  # an unloaded model's calls are unknown: not ready, whichever it is
        if unready is not None and not unready.ready:
            raise Unavailable(f"model '{unready.served.name}' is not ready: {unready.served.error}")
    if named is None or named.handler is not SAMPLED:
        if other is not None and other.handler is SAMPLED:
            return engine.lookup(other.name, version)
        if named is None:
            raise NotFound(f"unknown model '{name}'")
        raise BadRequest(
            f"model '{name}' does not sample tokens: the generate extension serves NAME-generate of a model whose "
            "feedback samples its next token"
        )
    return named


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body has {declared} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body passes the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _array(named: ServedName, name: str, value: Any) -> np.ndarray:
    """A JSON value of input ``name`` as its wire tensor: the prompt [1, T], the others at batch 1."""
    spec = next(s for s in named.inputs if s.name == name)
    integers = spec.datatype == "INT64"
    try:
        array = np.asarray(value)
    except ValueError:
        raise BadRequest(f"input '{name}' must be a (nested) list of numbers") from None
    if array.dtype.kind not in ("iu" if integers else "iuf") or array.dtype == np.bool_:
        raise BadRequest(f"input '{name}' must hold {'integers' if integers else 'numbers'}")
    array = array.astype(np.int64 if integers else np.float32)
    if name == named.inputs[0].name:
        return array.reshape(1, -1)
    shape = tuple(1 if d == -1 else d for d in spec.shape)
    if array.size != int(np.prod(shape)):
        raise BadRequest(
            f"input '{name}' must hold {int(np.prod(shape))} values (shape {list(shape)}), got {array.size}"
        )
    return array.reshape(shape)


def parse_request(named: ServedName, body: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any], str | None]:
    """(inputs, parameters, text_input) of a generate request's JSON body."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the request body is not JSON: {one_line(error)}") from None
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object")
    parameters = document.pop("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be a JSON object")
    text = document.pop(TEXT_INPUT, None)
    if text is not None and not isinstance(text, str):
        raise BadRequest(f"'{TEXT_INPUT}' must be a string")
    document.pop("id", None)
    names = {spec.name for spec in named.inputs}
    inputs = {key: _array(named, key, value) for key, value in document.items() if key in names}
    extra = {key: value for key, value in document.items() if key not in names}
    return inputs, {**extra, **parameters}, text


class _Answerer:
    """What a generation's answers share: the model's names and its vocabulary's text."""

    def __init__(self, named: ServedName) -> None:
        self.head = {"model_name": named.name, "model_version": VERSION}
        self.words = words(named.served.model)
        self.prefix = b"data: " + _json(self.head)[:-1] + b',"' + TOKENS_OUTPUT.encode() + b'":['

    def document(self, tokens: list[int], reason: str | None, extra: dict | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {**self.head, TOKENS_OUTPUT: tokens}
        if self.words is not None:
            document[TEXT_OUTPUT] = self.words.decode_drawn(tokens)  # ids the server drew: no checks
        document["finish_reason"] = reason
        if extra:
            document.update(extra)
        return document

    def event(self, tokens: list[int], reason: str | None) -> dict[str, Any]:
        """The SSE event of ``document(tokens, reason)``, its bytes joined from a prebuilt head."""
        parts = [self.prefix, ",".join(map(str, tokens)).encode(), b"]"]
        if self.words is not None:
            parts += [b',"', TEXT_OUTPUT.encode(), b'":', _json(self.words.decode_drawn(tokens))]
        parts += [b',"finish_reason":', _json(reason), b"}\n\n"]
        return {"type": "http.response.body", "body": b"".join(parts), "more_body": True}


class EventStream(Response):
    """The SSE answer of a running generation: an event per group of tokens; the client going away
    (``http.disconnect``) cancels the generation."""

    def __init__(self, named: ServedName, started: Started, done: Callable[[int], None]) -> None:
        self.named, self.started, self.done = named, started, done
        self.answerer = _Answerer(named)
        self.background = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = [(b"content-type", EVENT_STREAM.encode()), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        watcher = asyncio.ensure_future(disconnected(receive))
        writer = asyncio.ensure_future(self._events(send))
        try:
            await asyncio.wait({watcher, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, writer):
                task.cancel()
            self.started.generation.cancel()  # a no-op once it ended
        status = 200 if writer.done() and not writer.cancelled() and writer.exception() is None else 499
        self.done(status)

    async def _events(self, send: Callable) -> None:
        generation = self.started.generation
        try:
            async for tokens in generation.chunks(STREAM_GROUP, STREAM_WAIT_S):  # the first alone, then groups
                ended = generation.finish_reason if generation.ended and not generation.keep_state else None
                await send(self.answerer.event(tokens, ended))
            extra = await self.started.finished
            if generation.keep_state or extra:
                await send(_event(self.answerer.document([], generation.finish_reason, extra)))
        except Exception as error:
            message = str(error) if isinstance(error, ServeError) else _message(error)
            await send(_event({"error": message}))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _event(document: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event of ``document`` as an ASGI body message."""
    return {"type": "http.response.body", "body": b"data: " + _json(document) + b"\n\n", "more_body": True}


def _message(error: BaseException) -> str:
    if status_of(error) == 400:
        return one_line(error)
    return unexpected_message(error, "a streamed generation")


def generate_routes(engine: Engine) -> list[Route]:
    """The generate extension's routes over ``engine`` (with and without a version)."""

    async def answer(request: Request, stream: bool) -> Response:
        started_at = time.perf_counter()
        path = request.path_params
        name = path["name"]
        try:
            named = generated_name(engine, name, path.get("version", ""))
            name = named.name
            body = await _body(request, engine.settings.limits.max_body_bytes)
            inputs, parameters, text = parse_request(named, body)
            if not stream:  # one JSON answer holds every token: refused before it starts if it could pass the limit
                check_generated(engine, named, parameters)
            started = await until_gone(SAMPLED.start(engine, named, inputs, parameters, text), request.receive)
            if stream:
                return EventStream(named, started, lambda status: _count(engine, name, status, started_at))
            tokens = await until_gone(started.generation.result(), request.receive)
            extra = await started.finished
        except (ClientDisconnect, Abandoned):
            _count(engine, name, 499, started_at)
            return Response(b"", 499)
        except Exception as error:
            status = status_of(error)
            _count(engine, name, status, started_at)
            if status == 500 and not isinstance(error, ServeError):
                return _error(500, unexpected_message(error, f"POST {request.url.path}"))
            return _error(status, one_line(error) if not isinstance(error, ServeError) else str(error))
        _count(engine, name, 200, started_at)
        generation = started.generation
        document = _Answerer(named).document(tokens, generation.finish_reason, extra)
        return Response(_json(document), 200, media_type="application/json")

    async def generate(request: Request) -> Response:
        return await answer(request, False)

    async def generate_stream(request: Request) -> Response:
        return await answer(request, True)

    model = "/v2/models/{name}"
    version = model + "/versions/{version}"
    return [
        Route(model + "/generate", generate, methods=["POST"]),
        Route(version + "/generate", generate, methods=["POST"]),
        Route(model + "/generate_stream", generate_stream, methods=["POST"]),
        Route(version + "/generate_stream", generate_stream, methods=["POST"]),
    ]


def _count(engine: Engine, name: str, status: int, started_at: float) -> None:
    known = name if name in engine.names else ""
    engine.metrics.request(known, PROTOCOL, status, time.perf_counter() - started_at)
