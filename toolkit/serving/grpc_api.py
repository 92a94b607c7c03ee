"""The gRPC front of `rnn serve`: Triton's GRPCInferenceService (the Open Inference Protocol) on
grpcio's asyncio server, decoding each request for the `Engine` and encoding its answer.

The service's messages and its servicer base come from tritonclient's generated stubs (the
client users already have), so no proto is compiled here. Inputs arrive as ``raw_input_contents``
(what tritonclient sends) or typed ``contents``; outputs always go back raw, as Triton does.
A bidirectional stream answers its requests one at a time, in arrival order: its sequence
steps share batched runs with the steps of every other stream, and a failed request is
answered with its ``error_message`` while the stream goes on (Triton's behaviour).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as config_pb
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

import runtime

from .answer_size import Encoding, check_answer
from .callers import CALLER, Tokens
from .core import Engine
from .grpc_stream import stream_answers
from .protocol import (
    BYTES,
    DATATYPE_OF,
    DATATYPES,
    EXTENSIONS,
    MAX_REQUEST_ID_CHARS,
    SERVER_NAME,
    VERSION,
    BadRequest,
    InferRequest,
    NotFound,
    ServeError,
    bytes_tensor,
    check_request_id,
    check_shape,
    raw_contents,
    unexpected_message,
)
from .statistics import model_config, model_statistics

PROTOCOL = "grpc"  # the protocol label of the engine's request metrics
MESSAGE_SLACK_BYTES = 64 << 10  # room for a message's headers beyond limits.max_body_bytes of tensor data
SHARED_MEMORY = "shared_memory_region"
MAX_STREAMS_PER_CONNECTION = 1024  # calls at once on one connection (HTTP/2 streams), by default: a client
# may open a stream per sequence on one channel (tritonclient does); silent ones hold no place (`Admission`)

log = logging.getLogger("rnn.serve")

# The protocol's status of each `ServeError` status; anything else is INTERNAL.
CODE_OF_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,  # a sequence-version check failed (gRPC's word for it)
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

# The typed ``contents`` field of each datatype and the numpy dtype that field holds (FP16 has
# none: it travels raw only).
CONTENTS = {
    "BOOL": ("bool_contents", np.dtype(bool)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
}

InferOutputTensor = pb.ModelInferResponse.InferOutputTensor


# ---- decoding and encoding ---------------------------------------------------------------------


def _parameters(parameters: Any) -> dict[str, Any]:
    """A protobuf parameter map as plain Python values (int, str, bool or float)."""
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise BadRequest(f"parameter '{key}' has no value")
        values[key] = getattr(parameter, choice)
    return values


def _typed_contents(name: str, datatype: str, contents: Any, count: int) -> np.ndarray:
    if datatype not in CONTENTS:
        raise BadRequest(f"input '{name}' of datatype {datatype} must be sent in raw_input_contents")
    field, wide = CONTENTS[datatype]
    values = getattr(contents, field)
    if len(values) != count:
        raise BadRequest(f"input '{name}' has {len(values)} value(s) in contents.{field}, its shape needs {count}")
    array = np.fromiter(values, wide, count)
    dtype = DATATYPES[datatype]
    if dtype != wide:
        narrow = array.astype(dtype)
        if not np.array_equal(narrow, array):
            raise BadRequest(f"input '{name}' holds values out of the range of {datatype}")
        array = narrow
    return array


_OUTPUT_TENSORS: dict[tuple, Any] = {}  # (name, dtype, shape) -> its InferOutputTensor, made once


def _output_tensor(name: str, array: np.ndarray) -> Any:
    key = (name, array.dtype, array.shape)
    tensor = _OUTPUT_TENSORS.get(key)
    if tensor is None:
        tensor = InferOutputTensor(name=name, datatype=DATATYPE_OF[array.dtype], shape=array.shape)
        if len(_OUTPUT_TENSORS) < 4096:  # the shapes of steps repeat; those of long runs need not be kept
            _OUTPUT_TENSORS[key] = tensor
    return tensor


def decode_inputs(request: pb.ModelInferRequest, max_elements: int) -> dict[str, np.ndarray]:
    """The request's input tensors as numpy arrays (read-only views of the raw bytes)."""
    raw = request.raw_input_contents
    tensors = request.inputs
    if len(raw) == 1 and len(tensors) == 1:  # the hot path: one small raw FP32 tensor of rank 2
        tensor = tensors[0]
        shape = tuple(tensor.shape)
        if tensor.datatype == "FP32" and len(shape) == 2 and not tensor.parameters and not tensor.HasField("contents"):
            rows, columns = shape
            data = raw[0]
            if 0 < rows * columns <= max_elements and rows > 0 and columns > 0 and len(data) == 4 * rows * columns:
                return {tensor.name: np.frombuffer(data, np.float32).reshape(shape)}
    if raw and len(raw) != len(tensors):
        raise BadRequest(f"the request has {len(tensors)} input(s) but {len(raw)} raw_input_contents")
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        name, datatype = tensor.name, tensor.datatype
        if name in arrays:
            raise BadRequest(f"input '{name}' is sent twice")
        dtype = DATATYPES.get(datatype)
        if dtype is None:
            raise BadRequest(f"input '{name}' has datatype '{datatype}'; this server takes {', '.join(DATATYPES)}")
        if tensor.parameters and SHARED_MEMORY in tensor.parameters:
            raise BadRequest(f"input '{name}' is in shared memory, which this server does not support")
        shape = tuple(tensor.shape)
        count = check_shape(name, shape, max_elements)  # before numpy sees the shape or the data
        if datatype == BYTES:  # strings: raw 4-byte length-prefixed, or contents.bytes_contents
            arrays[name] = bytes_tensor(name, shape, count, raw[index] if raw else None, tensor.contents.bytes_contents)
            continue
        if raw:
            data = raw[index]
            if len(data) != count * dtype.itemsize:
                raise BadRequest(
                    f"input '{name}' has {len(data)} bytes of raw content, "
                    f"shape {list(shape)} of {datatype} needs {count * dtype.itemsize}"
                )
            if tensor.HasField("contents"):
                raise BadRequest(f"input '{name}' is sent both in contents and in raw_input_contents")
            arrays[name] = np.frombuffer(data, dtype).reshape(shape)
        else:
            arrays[name] = _typed_contents(name, datatype, tensor.contents, count).reshape(shape)
    return arrays


def _requested_outputs(request: pb.ModelInferRequest) -> list[str] | None:
    if not request.outputs:
        return None
    names = []
    for output in request.outputs:
        if output.parameters:
            for refused in (SHARED_MEMORY, "classification"):
                if refused in output.parameters:
                    raise BadRequest(f"output '{output.name}' asks for {refused}, which this server does not support")
        names.append(output.name)
    return names


def _status_code(error: BaseException) -> grpc.StatusCode:
    """The gRPC code of a ServeError's HTTP status; INTERNAL for any other failure (as the HTTP front's 500)."""
    status = error.status if isinstance(error, ServeError) else 500
    return CODE_OF_STATUS.get(status, grpc.StatusCode.INTERNAL)


def _message(error: BaseException, model: str) -> str:
    """The one line that answers a failed inference: a ServeError's message; for any other
    failure only its class (its traceback goes to the log), as the HTTP front answers."""
    if isinstance(error, ServeError):
        return str(error)
    return unexpected_message(error, f"a gRPC inference request of model '{model}'")


# ---- the service -------------------------------------------------------------------------------


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService on one `Engine`; with a ``token`` (or several), every RPC but
    ServerLive needs the metadata ``authorization: Bearer <token>`` of one of them."""

    def __init__(self, engine: Engine, token: str | Iterable[str] | None) -> None:
        self.engine = engine
        self.tokens = Tokens.of(token)
        self.max_elements = engine.settings.limits.max_elements
        self.max_body_bytes = engine.settings.limits.max_body_bytes
        # answers go back as raw contents: the tensor data of a message of at most the limit (and its headers)
        self.answers = Encoding(self.max_body_bytes, binary_default=True, limit_name="--max-body-bytes: gRPC's message")

    # ---- helpers ----

    def _refusal(self, context: grpc.aio.ServicerContext) -> str | None:
        """Why the call is not authorized (None: it is, and the call runs with `callers.CALLER` set
        to its token's owner tag)."""
        if self.tokens is None:
            return None
        given = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = value
                break
        owner = self.tokens.owner(given.encode()) if isinstance(given, str) else None  # as the HTTP front
        if owner is not None:
            CALLER.set(owner)  # this call's task (grpc.aio runs each call in its own) and those it starts
            return None
        why = "a wrong token" if given else "no token"
        return f"this server needs metadata 'authorization: Bearer <token>'; the request has {why}"

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        refusal = self._refusal(context)
        if refusal is not None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)

    async def _infer(self, request: pb.ModelInferRequest, response: pb.ModelInferResponse) -> None:
        """Answers ``request`` into ``response`` (filled in place: a stream's answer holds its
        response message, and building one to copy it in would cost a protobuf copy per step)."""
        engine = self.engine
        try:
            decoded = InferRequest(
                request.model_name,
                decode_inputs(request, self.max_elements),
                _requested_outputs(request),
                request.id,
                _parameters(request.parameters) if request.parameters else {},
            )
            check_answer(engine, decoded, request.model_version, self.answers)  # before the model runs
        except ServeError as error:  # counted as the engine counts the failures it finds
            name = request.model_name
            engine.metrics.request(name if name in engine.names else "", PROTOCOL, error.status, 0.0)
            raise
        answer = await engine.infer(decoded, protocol=PROTOCOL, version=request.model_version)
        outputs = answer.outputs
        response.model_name = answer.model
        response.model_version = VERSION
        if answer.id:
            response.id = answer.id
        for key, value in answer.parameters.items():  # sequence_version: an int; finish_reason: a string
            if isinstance(value, str):
                response.parameters[key].string_param = value
            else:
                response.parameters[key].int64_param = value
        response.outputs.extend([_output_tensor(name, array) for name, array in outputs])
        response.raw_output_contents.extend([raw_contents(array) for _, array in outputs])

    # ---- health and metadata ----

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        return pb.ServerReadyResponse(ready=self.engine.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        try:
            ready = self.engine.lookup(request.name, request.version).ready
        except NotFound:  # as Triton: an unknown model is not ready, not an error
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=runtime.__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        try:
            metadata = self.engine.lookup(request.name, request.version).metadata()
        except ServeError as error:
            await context.abort(_status_code(error), str(error))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[tensor(**spec) for spec in metadata["inputs"]],
            outputs=[tensor(**spec) for spec in metadata["outputs"]],
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext) -> Any:
        """Triton's model configuration (`statistics.model_config`, as HTTP's ``.../config``)."""
        await self._authorize(context)
        try:
            config = model_config(self.engine, self.engine.lookup(request.name, request.version))
        except ServeError as error:
            await context.abort(_status_code(error), str(error))
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, config_pb.ModelConfig()))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext) -> Any:
        """Triton's statistics extension (`statistics.model_statistics`, as HTTP's ``.../stats``)."""
        await self._authorize(context)
        try:
            statistics = model_statistics(self.engine, request.name, request.version)
        except ServeError as error:
            await context.abort(_status_code(error), str(error))
        return json_format.ParseDict(statistics, pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        if request.repository_name:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown repository '{request.repository_name}' (this server has one: '')"
            )
        index = self.engine.repository_index()
        if request.ready:
            index = [entry for entry in index if entry["state"] == "READY"]
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index])

    # ---- inference ----

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        try:
            response = pb.ModelInferResponse()
            await self._infer(request, response)
            return response
        except Exception as error:  # every failure answers with its status and one line
            code, message = _status_code(error), _message(error, request.model_name)
        await context.abort(code, message)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One answer per request, in arrival order; a failed request's answer holds its
        ``error_message`` (and its id) and the stream goes on. A sampled NAME-generate request is
        answered by several responses, Triton's decoupled mode (`grpc_stream.stream_answers`)."""
        await self._authorize(context)
        async for answer in stream_answers(self.engine, request_iterator, self._stream_answer, self._decoded):
            yield answer

    async def _stream_answer(self, request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
        answer = pb.ModelStreamInferResponse()
        try:
            await self._infer(request, answer.infer_response)
        except Exception as error:
            failed = pb.ModelInferResponse(model_name=request.model_name, id=request.id[:MAX_REQUEST_ID_CHARS])
            return pb.ModelStreamInferResponse(error_message=_message(error, request.model_name), infer_response=failed)
        return answer

    def _decoded(self, request: pb.ModelInferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A request's inputs and parameters (a sampled generation's, for `grpc_stream`)."""
        check_request_id(request.id)  # echoed in every message of the stream
        parameters = _parameters(request.parameters) if request.parameters else {}
        return decode_inputs(request, self.max_elements), parameters

    # ---- what this server does not offer ----

    async def _unimplemented(self, context: grpc.aio.ServicerContext, what: str) -> Any:
        await self._authorize(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"this server does not offer {what}")

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "loading models (it serves the folders it was started with)")

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "unloading models (it serves the folders it was started with)")

    async def SystemSharedMemoryStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "system shared memory")

    async def SystemSharedMemoryRegister(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "system shared memory")

    async def SystemSharedMemoryUnregister(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "system shared memory")

    async def CudaSharedMemoryStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "CUDA shared memory")

    async def CudaSharedMemoryRegister(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "CUDA shared memory")

    async def CudaSharedMemoryUnregister(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "CUDA shared memory")

    async def TraceSetting(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "trace settings")

    async def LogSettings(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._unimplemented(context, "log settings")


class Admission(grpc.aio.ServerInterceptor):
    """At most ``max_active`` calls at work at once (beyond: RESOURCE_EXHAUSTED), counted from
    their first message's arrival: a call or stream that sends nothing holds no place (grpcio's
    ``maximum_concurrent_rpcs`` counted them, so silent streams locked everyone out).
    ServerLive always answers."""

    def __init__(self, max_active: int) -> None:
        self.max_active = max_active
        self.active = 0
        self._handlers: dict[str, Any] = {}  # method -> its wrapped handler (made once)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = self._handlers.get(details.method)
        if handler is None:
            handler = self._wrapped(await continuation(details), details.method)
            self._handlers[details.method] = handler
        return handler

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        if self.active >= self.max_active:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server has {self.active} calls in progress, its limit (--max-connections): retry shortly",
            )
        self.active += 1

    def _wrapped(self, handler: Any, method: str) -> Any:
        if handler is None or method.endswith("/ServerLive"):
            return handler
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._admit(context)  # the message has arrived: now it is work
                try:
                    return await behavior(request, context)
                finally:
                    self.active -= 1

            return grpc.unary_unary_rpc_method_handler(unary, **options)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream), **options)
        return handler

    def _stream(self, behavior: Any) -> Any:
        async def stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            counted = False

            async def counting() -> AsyncIterator[Any]:
                nonlocal counted
                async for request in requests:
                    if not counted:
                        await self._admit(context)
                        counted = True
                    yield request

            try:
                async for answer in behavior(counting(), context):
                    yield answer
            finally:
                if counted:
                    self.active -= 1

        return stream


def create_grpc_server(
    engine: Engine,
    *,
    token: str | Iterable[str] | None,
    idle_s: float = 300.0,
    max_streams: int = MAX_STREAMS_PER_CONNECTION,
) -> grpc.aio.Server:
    """The gRPC server of ``engine`` (call on the engine's event loop); the caller adds its port
    (``add_insecure_port``), starts and stops it. A port in use fails to bind rather than being
    shared (no SO_REUSEPORT). A connection with no call for ``idle_s`` is closed; one connection
    carries at most ``max_streams`` calls at once (more: REFUSED_STREAM); calls at work are
    counted by `Admission`."""
    max_message = engine.settings.limits.max_body_bytes + MESSAGE_SLACK_BYTES
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", max_streams),
            ("grpc.max_connection_idle_ms", int(idle_s * 1000)),
            ("grpc.keepalive_time_ms", 60_000),  # a peer that has gone without a word is found and closed
            ("grpc.keepalive_timeout_ms", 20_000),
        ],
        interceptors=[Admission(engine.settings.limits.max_connections)],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(engine, token), server)
    return server
