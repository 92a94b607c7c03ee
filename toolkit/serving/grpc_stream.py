"""Sampled ``NAME-generate`` over gRPC streaming: Triton's decoupled mode on ``ModelStreamInfer``.

`stream_answers` serves one bidirectional stream. A request of a sampled ``NAME-generate``
(`generate_calls`) starts its generation and is answered with several responses, one per group of
tokens as they are drawn (``tokens`` INT64 [1, n], and ``text_output`` BYTES [1] where the model has
a vocabulary, unless the request's outputs leave it out): the first token alone, at once, then a
response once `generation.STREAM_GROUP` tokens wait or GRPC_WAIT_S passed since the last;
a response is built only once the previous one was written, so the tokens drawn meanwhile go out
together; the last carries the parameter
``triton_final_response`` true (every other false), and ``finish_reason`` (and ``sequence_version``
in a sequence). With the request parameter ``triton_enable_empty_final_response`` (tritonclient's
``enable_empty_final_response=True``) the final flag comes alone in an empty response after the last
tokens, as Triton sends it. The prompt is the token input (INT64 [1, T]) or ``text_input`` (BYTES
[1]). Several generations of one stream run at once, their responses interleaved (each carries its
request's id); every other request is answered as before, one answer each in arrival order. At most
MAX_STREAM_GENERATIONS (64) generations of one stream run at once: a request beyond them is answered
with one error (RESOURCE_EXHAUSTED's status, 413) and the stream goes on. A stream that ends or is
cancelled by its client cancels its generations and frees their slots.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from .core import Engine, ServedName
from .generate_calls import SAMPLED, TEXT_OUTPUT, TOKENS_OUTPUT, words
from .generation import STREAM_GROUP
from .protocol import VERSION, ServeError, TooLarge, status_of, unexpected_message

PROTOCOL = "grpc"
FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"
Decode = Callable[[pb.ModelInferRequest], tuple[dict[str, np.ndarray], dict[str, Any]]]
MAX_STREAM_GENERATIONS = 64  # generations of one stream at once (the slots are every client's)
# The longest a token waits for its group (of generation.STREAM_GROUP) over gRPC: twice SSE's. A
# grpc.aio response costs the server ~2x an SSE event, so at 64 streams a tick took 2-3 ms and 5 ms
# groups held 2-3 tokens (60 responses per 200 tokens, 4.1-4.5x the FastAPI baseline); with 10 ms
# they hold ~7 (27-29 responses, 5.6-7.5x) and the inter-token p99 stays 10-15 ms, as the loop's lag
# already made it before the grouping (9.6-15.4 ms).
GRPC_WAIT_S = 0.010


def is_generation(engine: Engine, request: pb.ModelInferRequest) -> bool:
    """Whether ``request`` addresses a sampled NAME-generate (answered by several responses)."""
    named = engine.names.get(request.model_name)
    return named is not None and named.handler is SAMPLED


async def stream_answers(
    engine: Engine,
    requests: AsyncIterator[pb.ModelInferRequest],
    answer: Callable[[pb.ModelInferRequest], Awaitable[pb.ModelStreamInferResponse]],
    decode: Decode,
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """The responses of one stream: ``answer`` answers each ordinary request in order (the fast
    path, untouched while no generation runs); ``decode`` gives a generation request's inputs and
    parameters."""
    out: asyncio.Queue = asyncio.Queue()
    tasks: set[asyncio.Task] = set()
    iterator = requests.__aiter__()
    next_request: asyncio.Future | None = None
    getter: asyncio.Future | None = None
    reading = True
    try:
        while reading or tasks:
            if not tasks and next_request is None:  # no generation running: as an ordinary stream
                try:
                    request = await iterator.__anext__()
                except StopAsyncIteration:
                    break
            else:
                if reading and next_request is None:
                    next_request = asyncio.ensure_future(iterator.__anext__())
                getter = asyncio.ensure_future(out.get())
                waited = {getter, next_request} if next_request is not None else {getter}
                done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    item = getter.result()
                    if isinstance(item, asyncio.Task):
                        tasks.discard(item)
                    else:
                        response, sent = item
                        yield response
                        if not sent.done():
                            sent.set_result(None)  # its generation may build its next response
                    if next_request is None or not next_request.done():
                        continue  # else the request too (busy generations never starve the reading)
                else:
                    getter.cancel()
                finished, next_request = next_request, None
                try:
                    request = finished.result()
                except StopAsyncIteration:
                    reading = False
                    continue
            if is_generation(engine, request):
                if len(tasks) >= MAX_STREAM_GENERATIONS:
                    yield _refused(engine, request)
                    continue
                task = asyncio.ensure_future(_generate(engine, request, decode, out))
                task.add_done_callback(lambda done: out.put_nowait(done))
                tasks.add(task)
                continue
            yield await answer(request)
    finally:
        for task in tasks:
            task.cancel()
        for pending in (next_request, getter):
            if pending is not None:
                pending.cancel()  # a stream closed while it waited: nothing left pending


def _refused(engine: Engine, request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
    """The answer of a generation request beyond the stream's MAX_STREAM_GENERATIONS running ones."""
    error = TooLarge(
        f"this stream runs {MAX_STREAM_GENERATIONS} generations, the most one stream may run at once; "
        "wait for one to end or open another stream"
    )
    engine.metrics.request(request.model_name, PROTOCOL, error.status, 0.0)
    return _Responses(request, None).error(error)


class _Responses:
    """The responses of one generation request, each a copy of one prebuilt template (names, id,
    outputs) with its tokens, text and parameters filled in. ``tokens`` always; ``text_output`` (decoded
    only then) where the model has a vocabulary and the request names no outputs, or names it."""

    def __init__(self, request: pb.ModelInferRequest, vocabulary: Any) -> None:
        self.model, self.id, self.words = request.model_name, request.id, vocabulary
        self.template: pb.ModelStreamInferResponse | None = None
        self.text = False

    def prepare(self, named: ServedName, request: pb.ModelInferRequest) -> None:
        """Builds the template of ``request``'s responses (BadRequest for an output it does not
        have, or one named twice)."""
        wanted = Engine.wanted_outputs(named, [output.name for output in request.outputs] or None)
        template = pb.ModelStreamInferResponse()
        response = template.infer_response
        response.model_name, response.model_version = self.model, VERSION
        if self.id:
            response.id = self.id
        response.parameters[FINAL].bool_param = False
        response.outputs.add(name=TOKENS_OUTPUT, datatype="INT64", shape=[1, 0])
        response.raw_output_contents.append(b"")
        self.text = TEXT_OUTPUT in wanted
        if self.text:
            response.outputs.add(name=TEXT_OUTPUT, datatype="BYTES", shape=[1])
            response.raw_output_contents.append(b"")
        self.template = template

    def response(self, tokens: list[int], final: bool, parameters: dict[str, Any]) -> pb.ModelStreamInferResponse:
        assert self.template is not None
        answer = pb.ModelStreamInferResponse()
        answer.CopyFrom(self.template)
        response = answer.infer_response
        if final:
            response.parameters[FINAL].bool_param = True
        for key, value in parameters.items():
            if isinstance(value, str):
                response.parameters[key].string_param = value
            else:
                response.parameters[key].int64_param = value
        response.outputs[0].shape[1] = len(tokens)
        response.raw_output_contents[0] = struct.pack(f"<{len(tokens)}q", *tokens)
        if self.text:
            text = self.words.decode_drawn(tokens).encode("utf-8")  # ids the server drew: no checks
            response.raw_output_contents[1] = struct.pack("<I", len(text)) + text
        return answer

    def error(self, error: BaseException) -> pb.ModelStreamInferResponse:
        if isinstance(error, ServeError):
            message = str(error)
        elif status_of(error) == 400:
            message = " ".join(str(error).split())
        else:
            message = unexpected_message(error, f"a streamed generation of model '{self.model}'")
        return pb.ModelStreamInferResponse(
            error_message=message, infer_response=pb.ModelInferResponse(model_name=self.model, id=self.id)
        )


async def _generate(engine: Engine, request: pb.ModelInferRequest, decode: Decode, out: asyncio.Queue) -> None:
    """Runs one generation request, putting its responses into ``out`` (each with a future the
    stream sets once it wrote it). A response is built only after the previous one was written:
    the tokens drawn meanwhile go out together in the next (a reader that is behind gets fewer,
    fuller responses)."""
    responses = _Responses(request, None)
    started_at = time.perf_counter()
    generation = None
    loop = asyncio.get_running_loop()

    async def put(response: pb.ModelStreamInferResponse) -> None:
        sent = loop.create_future()
        out.put_nowait((response, sent))
        await sent

    try:
        named = engine.lookup(request.model_name, request.model_version)
        responses.words = words(named.served.model)
        responses.prepare(named, request)
        inputs, parameters = decode(request)  # the prompt as text too: text_input, BYTES
        empty_final = parameters.pop(EMPTY_FINAL, False) is True
        started = await SAMPLED.start(engine, named, inputs, parameters)
        generation = started.generation
        async for tokens in generation.chunks(STREAM_GROUP, GRPC_WAIT_S):  # the first alone, then groups
            last = generation.ended and not generation.keep_state and not empty_final
            await put(responses.response(tokens, last, {"finish_reason": generation.finish_reason} if last else {}))
        extra = await started.finished
        if empty_final or generation.keep_state:
            await put(responses.response([], True, {"finish_reason": generation.finish_reason, **extra}))
        engine.metrics.request(named.name, PROTOCOL, 200, time.perf_counter() - started_at)
    except asyncio.CancelledError:
        if generation is not None:
            generation.cancel()  # its stream ended: a no-op once it ended by itself
        raise
    except Exception as error:
        known = request.model_name if request.model_name in engine.names else ""
        engine.metrics.request(known, PROTOCOL, status_of(error), time.perf_counter() - started_at)
        out.put_nowait((responses.error(error), loop.create_future()))
