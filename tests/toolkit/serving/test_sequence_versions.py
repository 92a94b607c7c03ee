"""Sequence versions, for clients that hold the authoritative state (failover across replicas):
every answer of a sequence carries `sequence_version`; a request with `sequence_version` runs only
on exactly that version (else 409 / ABORTED, and nothing changes); a `sequence_start` may carry the
state inputs and a base version to resume a sequence elsewhere, bit-identically to the runtime."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import runtime
from tests.conftest import COMMITTED
from toolkit.serving.core import Engine, Settings
from toolkit.serving.protocol import BadRequest, Conflict, InferRequest

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient (dev extra) is not installed")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = runtime.load(COMMITTED)
XS = np.random.default_rng(11).uniform(-1, 1, (12, 1, 1)).astype(np.float32)  # 12 steps of x (1, 1)
H = np.random.default_rng(12).uniform(-1, 1, (1, 6)).astype(np.float32)  # a state of the sine model


def expected_run(xs, state=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(y, h_out) of every step of ``xs`` from ``state`` (None: the initial state), by the runtime."""
    answers = []
    for x in xs:
        y, state = MODEL.step(x, state)
        answers.append((y, state[0]))
    return answers


def engine(**settings) -> Engine:
    made = Engine([("sine", COMMITTED)], Settings(**settings))
    made.start()
    return made


async def step(made, key, x, state=None, model="sine", **parameters):
    """One request of sequence ``key``: (y, h_out, answered sequence_version)."""
    inputs = {"x": x} if state is None else {"x": x, "h": state}
    answer = await made.infer(InferRequest(model, inputs, parameters={"sequence_id": key, **parameters}), "test")
    outputs = dict(answer.outputs)
    return outputs["y"], outputs["h_out"], answer.parameters["sequence_version"]


def check(got, expected) -> None:
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


# ---- the engine --------------------------------------------------------------------------------


def test_versions_count_answers_and_a_start_may_set_state_and_base_version():
    async def go():
        made = engine()
        expected = expected_run(XS[:3])
        for t in range(3):
            got = await step(made, "a", XS[t], sequence_start=t == 0)
            check(got, expected[t])
            assert got[2] == t + 1
        # a start with a state and a version: of a new id, and of a live id (begun again)
        for key in ("b", "a"):
            resumed = expected_run(XS[3:6], (H,))
            got = await step(made, key, XS[3], H, sequence_start=True, sequence_version=7)
            check(got, resumed[0])
            assert got[2] == 8
            for t in (1, 2):
                got = await step(made, key, XS[3 + t], sequence_version=7 + t)
                check(got, resumed[t])
                assert got[2] == 9 + (t - 1)
        # a start with a version and no state begins from the initial state; one with neither at 1
        got = await step(made, "a", XS[0], sequence_start=True, sequence_version=40)
        check(got, expected[0])
        assert got[2] == 41
        assert (await step(made, "a", XS[0], sequence_start=True))[2] == 1
        # the predict form resumes from a given state too
        request = InferRequest(
            "sine-predict", {"x": XS[:5], "h": H}, parameters={"sequence_id": "p", "sequence_start": True}
        )
        answer = await made.infer(request, "test")
        ys, (h_out,) = MODEL.predict(XS[:5], (H,))
        np.testing.assert_array_equal(dict(answer.outputs)["y"], ys)
        np.testing.assert_array_equal(dict(answer.outputs)["h_out"], h_out)
        assert answer.parameters == {"sequence_version": 1}
        stateless = await made.infer(InferRequest("sine", {"x": XS[0]}), "test")
        assert stateless.parameters == {}

    asyncio.run(go())


def test_recovery_on_an_engine_that_never_saw_the_sequence_or_lost_it():
    uninterrupted = expected_run(XS)

    async def go():
        first, second = engine(), engine(sequence_idle_timeout_s=5.0)
        held = None
        for t in range(5):  # the client keeps every answer's state and version
            held = await step(first, 9, XS[t], sequence_start=t == 0)
            check(held, uninterrupted[t])
        assert held[2] == 5
        with pytest.raises(Conflict, match="holds no state of sequence 9.*it was never started.*sequence_start") as e:
            await step(second, 9, XS[5], sequence_version=5)
        assert e.value.status == 409
        got = await step(second, 9, XS[5], held[1], sequence_start=True, sequence_version=held[2])
        check(got, uninterrupted[5])
        assert got[2] == 6
        # a stale version (the old replica's view) and a version ahead are refused; nothing changes
        for wrong in (5, 7, 0):
            with pytest.raises(Conflict, match="is at version 6 here, the request expects") as e:
                await step(second, 9, XS[0], sequence_version=wrong)
            assert e.value.status == 409 and "sequence_start" in str(e.value)
        got = await step(second, 9, XS[6], sequence_version=6)
        check(got, uninterrupted[6])
        assert got[2] == 7
        got = await step(second, 9, XS[7])  # a request without a version is not checked
        check(got, uninterrupted[7])
        assert got[2] == 8
        # the sequence expires here: a versioned request is a conflict, an unversioned one a 400
        assert second.expire_idle(now=time.monotonic() + 10.0) == 1
        with pytest.raises(Conflict, match="it expired after 5 s idle.*sequence_start"):
            await step(second, 9, XS[8], sequence_version=8)
        with pytest.raises(BadRequest, match="no live sequence 9: it expired"):
            await step(second, 9, XS[8])
        got = await step(second, 9, XS[8], got[1], sequence_start=True, sequence_version=got[2])
        check(got, uninterrupted[8])
        assert got[2] == 9
        # an ended sequence stays a 400, with a version or without
        await step(second, 9, XS[9], sequence_version=9, sequence_end=True)
        with pytest.raises(BadRequest, match="no live sequence 9: it ended"):
            await step(second, 9, XS[10], sequence_version=10)
        # a failed start leaves no sequence: a versioned request after it is a conflict
        with pytest.raises(BadRequest):
            await step(second, "f", np.array([[np.nan]], np.float32), H, sequence_start=True, sequence_version=3)
        with pytest.raises(Conflict, match="its start request failed"):
            await step(second, "f", XS[0], sequence_version=3)

    asyncio.run(go())


BAD = [
    ({"sequence_id": 4}, "no live sequence 4: it was never started"),  # no version: unchanged
    ({"sequence_id": 1, "sequence_version": -1}, "'sequence_version' must be a non-negative integer"),
    ({"sequence_id": 1, "sequence_version": True}, "got True"),
    ({"sequence_id": 1, "sequence_version": "3"}, "got '3'"),
    ({"sequence_id": 1, "sequence_version": 1.0}, "got 1.0"),
    ({"sequence_id": 1, "sequence_version": 1 << 63}, "non-negative integer"),
    ({"sequence_version": 1}, "'sequence_version' need a 'sequence_id'"),
    ({"sequence_id": 1, "sequence_version": 1, "state": True}, "held by the server.*sequence_start"),
    ({"sequence_id": 1, "state": True}, "held by the server"),
    ({"sequence_id": 1, "sequence_start": True, "sequence_version": -2, "state": True}, "non-negative"),
]


def test_bad_versions_and_state_inputs_are_400_and_change_nothing():
    async def go():
        made = engine()
        expected = expected_run(XS)
        check(await step(made, 1, XS[0], sequence_start=True), expected[0])
        for t, (parameters, match) in enumerate(BAD, start=1):
            parameters = dict(parameters)
            inputs = {"x": XS[0], "h": H} if parameters.pop("state", False) else {"x": XS[0]}
            with pytest.raises(BadRequest, match=match):
                await made.infer(InferRequest("sine", inputs, parameters=parameters), "test")
            got = await step(made, 1, XS[t], sequence_version=t)
            check(got, expected[t])
            assert got[2] == t + 1

    asyncio.run(go())


# ---- through both fronts, with tritonclient --------------------------------------------------------


class Client:
    """A tritonclient of ``protocol`` ("http" or "grpc") to ``server``, stepping sequences of sine."""

    def __init__(self, protocol: str, server) -> None:
        self.protocol, self.module = protocol, httpclient if protocol == "http" else grpcclient
        port = server.http_port if protocol == "http" else server.grpc_port
        self.client = self.module.InferenceServerClient(f"127.0.0.1:{port}")
        self.conflict = "409" if protocol == "http" else "StatusCode.ABORTED"
        self.bad = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"

    def step(self, key, x, state=None, version=None, start=False, end=False):
        inputs = []
        for name, array in (("x", x), ("h", state)):
            if array is not None:
                inputs.append(self.module.InferInput(name, list(array.shape), "FP32"))
                inputs[-1].set_data_from_numpy(array)
        outputs = [self.module.InferRequestedOutput(name) for name in ("y", "h_out")]
        parameters = None if version is None else {"sequence_version": version}
        result = self.client.infer(
            "sine",
            inputs,
            outputs=outputs,
            sequence_id=key,
            sequence_start=start,
            sequence_end=end,
            parameters=parameters,
        )
        if self.protocol == "http":
            answered = result.get_response()["parameters"]["sequence_version"]
        else:
            answered = result.get_response().parameters["sequence_version"].int64_param
        return result.as_numpy("y"), result.as_numpy("h_out"), answered

    def refused(self, status: str, match: str, *args, **kwargs) -> None:
        with pytest.raises(InferenceServerException, match=match) as e:
            self.step(*args, **kwargs)
        assert e.value.status() == status, e.value


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_failover_to_a_fresh_server_through_the_fronts(protocol, sine_server, start_server):
    uninterrupted = expected_run(XS)
    key = 31 if protocol == "http" else "grpc-31"
    old, new = Client(protocol, sine_server), Client(protocol, start_server())
    held = None
    for t in range(4):
        held = old.step(key, XS[t], start=t == 0, version=None if t == 0 else t)
        check(held, uninterrupted[t])
        assert held[2] == t + 1
    new.refused(new.conflict, "holds no state of sequence.*sequence_start", key, XS[4], version=4)
    got = new.step(key, XS[4], held[1], version=held[2], start=True)
    check(got, uninterrupted[4])
    assert got[2] == 5
    old.refused(old.conflict, "is at version 4 here, the request expects 5", key, XS[5], version=5)
    new.refused(new.conflict, "is at version 5 here, the request expects 4", key, XS[5], version=4)
    for t in (5, 6):  # the refused requests changed nothing
        got = new.step(key, XS[t], version=t)
        check(got, uninterrupted[t])
        assert got[2] == t + 1
    # the 400s stay 400s: unknown without a version, state on a non-start, bad versions, no id
    new.refused(new.bad, "never started", f"{key}-unknown" if protocol == "grpc" else 32, XS[0])
    new.refused(new.bad, "held by the server", key, XS[7], H, version=7)
    for bad in (-1, True, "7"):
        new.refused(new.bad, "'sequence_version' must be a non-negative integer", key, XS[7], version=bad)
    new.refused(new.bad, "need a 'sequence_id'", 0, XS[7], version=7)
    got = new.step(key, XS[7], version=7, end=True)
    check(got, uninterrupted[7])
    assert got[2] == 8
    new.refused(new.bad, "it ended", key, XS[8], version=8)
    old.client.close()
    new.client.close()


# ---- SequenceClient: the reference client of the protocol ------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sequence_client_moves_to_a_server_that_never_saw_its_sequence(protocol, sine_server, start_server):
    """Half the steps on one server, the rest on another (as after a replica's death): the client
    is refused once (409 / ABORTED), resends its state and goes on bit for bit."""
    from toolkit.serving.client import SequenceClient

    other = start_server()

    def client_of(server):
        if protocol == "http":
            import tritonclient.http.aio as aio

            return aio.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        import tritonclient.grpc.aio as aio

        return aio.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

    async def go():
        first, second = client_of(sine_server), client_of(other)
        try:
            meta = await first.get_model_metadata("sine", **({"as_json": True} if protocol == "grpc" else {}))
            sequence = SequenceClient(first, "sine", f"moving-{protocol}", meta, backoff_s=0.0)
            ys = [await sequence.step(x) for x in XS[:6]]
            base = sequence.version - 6  # a start sends a random base version; answers count on from it
            assert 0 <= base < 2**62 and sequence.recoveries == 0
            sequence.client = second
            ys += [await sequence.step(x) for x in XS[6:-1]]
            assert sequence.recoveries == 1 and sequence.version != base + 11  # the resend took a new base
            ys.append(await sequence.step(XS[-1], end=True))
            assert sequence.state is None  # ended: a next step would start anew
            return np.concatenate(ys)
        finally:
            await first.close()
            await second.close()

    expected = np.concatenate([y for y, _ in expected_run(XS)])
    np.testing.assert_array_equal(asyncio.run(go()), expected)


def test_sequence_client_gives_up_with_sequence_lost_and_keeps_other_errors(sine_server):
    """Only retryable refusals are resent; past the retries SequenceLost; a 400 is raised as it is."""
    import tritonclient.http.aio as aio

    from toolkit.serving.client import SequenceClient, SequenceLost

    async def go():
        client = aio.InferenceServerClient(f"127.0.0.1:{sine_server.http_port}")
        try:
            meta = await client.get_model_metadata("sine")
            wrong = SequenceClient(client, "sine", "bad-x", meta, retries=3, backoff_s=0.0)
            with pytest.raises(InferenceServerException, match="400|shape"):  # a 400 is not resent
                await wrong.step(np.zeros((1, 2), np.float32))
            assert wrong.recoveries == 0

            class Refusing:  # answers every request 503
                async def infer(self, *args, **kwargs):
                    raise InferenceServerException("busy", status="503")

            lost = SequenceClient(Refusing(), "sine", "lost", meta, retries=3, backoff_s=0.0)
            lost._triton = wrong._triton  # the HTTP tensors
            with pytest.raises(SequenceLost, match="after 3 resends"):
                await lost.step(XS[0])
            assert lost.recoveries == 3
        finally:
            await client.close()

    asyncio.run(go())
