"""The gRPC front of `rnn serve` against hostile clients (issue 23): streams that never send a
message hold no place, so they cannot lock anyone out; calls at work are still bounded by
--max-connections (RESOURCE_EXHAUSTED beyond), and ServerLive always answers. The real server on
a free loopback port, bounded counts."""

from __future__ import annotations

import asyncio
import queue
import threading

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio (serve extra) is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")

from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc  # noqa: E402

import runtime  # noqa: E402
from tests.conftest import COMMITTED  # noqa: E402
from toolkit.serving import Limits, Settings  # noqa: E402
from toolkit.serving.server import Doors  # noqa: E402

WAIT_S = 10


def _stub(server, own_connection: bool = True):
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []  # a connection of its own
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _step(key: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="sine")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    request.raw_input_contents.append(np.array([[0.5]], np.float32).tobytes())
    request.parameters["sequence_id"].int64_param = key
    request.parameters["sequence_start"].bool_param = True
    return request


def _requests(messages: queue.Queue):
    while (message := messages.get(timeout=WAIT_S * 3)) is not None:
        yield message


def test_silent_streams_beyond_the_limit_lock_no_one_out(start_server):
    """4 connections x 4 streams that never send a message, with --max-connections 5: every
    call still answers (before: RESOURCE_EXHAUSTED, liveness included)."""
    server = start_server(settings=Settings(limits=Limits(max_connections=5)), http_port=0)
    silent, channels, streams = [], [], []
    try:
        for _ in range(4):
            channel, stub = _stub(server)
            channels.append(channel)
            for _ in range(4):
                messages: queue.Queue = queue.Queue()
                silent.append(messages)
                streams.append(stub.ModelStreamInfer(_requests(messages)))
        channel, stub = _stub(server, own_connection=False)
        channels.append(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=WAIT_S).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=WAIT_S).ready
        answer = stub.ModelInfer(_step(1), timeout=WAIT_S)
        assert np.frombuffer(answer.raw_output_contents[0], np.float32).shape == (1,)
    finally:
        for messages in silent:
            messages.put(None)
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()


def test_calls_at_work_beyond_the_limit_are_resource_exhausted(start_server):
    """Two streams that have sent a message are at work (--max-connections 2): a third call is
    RESOURCE_EXHAUSTED naming the limit, ServerLive answers; when they end, calls answer again."""
    server = start_server(settings=Settings(limits=Limits(max_connections=2)), http_port=0)
    held, streams, channels = [], [], []
    try:
        for key in (11, 12):
            channel, stub = _stub(server)
            channels.append(channel)
            messages: queue.Queue = queue.Queue()
            messages.put(_step(key))
            held.append(messages)
            stream = stub.ModelStreamInfer(_requests(messages))
            streams.append(stream)
            assert not next(stream).error_message  # its first answer: the stream is at work
        channel, stub = _stub(server)
        channels.append(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ServerReady(pb.ServerReadyRequest(), timeout=WAIT_S)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 calls in progress, its limit (--max-connections)" in refused.value.details()
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=WAIT_S).live
        for messages in held:
            messages.put(None)
        for stream in streams:
            assert list(stream) == []  # ended by the client
        done = threading.Event()
        for _ in range(50):  # the ended streams give their places back
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=WAIT_S).ready:
                    done.set()
                    break
            except grpc.RpcError:
                done.wait(0.05)
        assert done.is_set()
    finally:
        for messages in held:
            messages.put(None)
        for channel in channels:
            channel.close()


async def _many_streams_on_one_channel(port: int, count: int) -> list[float]:
    """``count`` ModelStreamInfer streams open at once on one channel (one connection), each the
    start step of its own sequence (x = key / count); every stream stays open until all have
    answered. The answers' y, in key order."""
    answered = asyncio.Event()
    done = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def one(key: int) -> float:
            nonlocal done
            request = _step(1000 + key)
            request.raw_input_contents[0] = np.array([[key / count]], np.float32).tobytes()

            async def messages():
                yield request
                await answered.wait()  # held open: all ``count`` streams at once on the connection

            call = stub.ModelStreamInfer(messages())
            answer = await call.read()
            assert not answer.error_message, answer.error_message
            done += 1
            if done == count:
                answered.set()
            assert await call.read() is grpc.aio.EOF
            return float(np.frombuffer(answer.infer_response.raw_output_contents[0], np.float32)[0])

        return await asyncio.wait_for(asyncio.gather(*(one(key) for key in range(count))), WAIT_S * 3)


def test_one_channel_carries_256_streams_at_once(start_server):
    """256 streams on one connection (a stream per sequence, as tritonclient users open them): all
    answer, each its own sequence's first step as the runtime computes it (before: at most 100 a
    connection, REFUSED_STREAM beyond); the per-connection limit is a setting of the server."""
    assert Doors().grpc_streams_per_connection == 1024
    server = start_server(doors=Doors(grpc_streams_per_connection=300))
    ys = asyncio.run(_many_streams_on_one_channel(server.grpc_port, 256))
    model = runtime.load(COMMITTED)
    expected = [float(model.step(np.array([[key / 256]], np.float32))[0][0, 0]) for key in range(256)]
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-6)
    assert len(set(ys)) > 200  # distinct inputs, distinct answers: no stream answered another's step
