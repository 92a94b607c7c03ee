"""The gRPC stack's floor for `benchmarks/serve.py` (its ``grpc-floor`` cell): a bare grpc.aio
server with our server's options and event loop whose ModelStreamInfer answers every request with
one prebuilt response of our answers' shape and does nothing else. Not ours: a reference."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import numpy as np
from serve_load import HOST, ROOT, grpc_modules

Outputs = tuple[tuple[str, tuple[int, ...]], ...]  # one step's outputs: (name, shape), FP32


def floor_response(service_pb2: Any, model: str, outputs: Outputs) -> Any:
    """The answer our server streams for one step of ``model`` (for 'sine' y [1,1] and h_out [1,6],
    FP32, as raw_output_contents), built once."""
    answer = service_pb2.ModelStreamInferResponse()
    response = answer.infer_response
    response.model_name, response.model_version = model, "1"
    for name, shape in outputs:
        tensor = response.outputs.add()
        tensor.name, tensor.datatype = name, "FP32"
        tensor.shape.extend(shape)
        response.raw_output_contents.append(np.zeros(shape, np.float32).tobytes())
    return answer


def serve_floor(grpc_port: int, model: str, outputs: Outputs) -> None:
    """The gRPC stack's floor: grpc.aio with our server's options (toolkit/serving/grpc_api.py
    create_grpc_server) on our event loop (uvloop through asyncio.Runner), the generated servicer,
    and a ModelStreamInfer that answers each request with the same prebuilt response: no decoding,
    no engine, no model."""
    sys.path.insert(0, str(ROOT))
    import grpc
    import uvloop

    from toolkit.serving import Settings
    from toolkit.serving.grpc_api import MESSAGE_SLACK_BYTES

    service_pb2, service_pb2_grpc = grpc_modules()
    limits = Settings().limits
    answer = floor_response(service_pb2, model, outputs)

    class Floor(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Any:
            async for _ in request_iterator:
                yield answer

    async def main() -> None:
        max_message = limits.max_body_bytes + MESSAGE_SLACK_BYTES
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=limits.max_connections,
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
        server.add_insecure_port(f"{HOST}:{grpc_port}")
        await server.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
        await server.stop(1.0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
