"""Sequences of several tenants (issue 23, point 9): a start without an id gets an unguessable id
from the server; with several tokens a sequence belongs to the token that started it, and another
token's requests get exactly the answer an unknown sequence gets (infer, sequence_end, versions,
the generate routes), leaving the owner's next answers bit for bit as an undisturbed run's; the
owner survives a --state-dir restart; --refuse-client-sequence-ids refuses a start that names its
id. Real servers on free loopback ports, tritonclient over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
from types import SimpleNamespace

import numpy as np
import pytest

import runtime
from tests.conftest import COMMITTED
from toolkit.serving import Settings
from toolkit.serving.callers import CALLER, Tokens
from toolkit.serving.protocol import BadRequest, InferRequest
from toolkit.serving.server import read_token_file

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient (dev extra) is not installed")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = runtime.load(COMMITTED)
XS = np.random.default_rng(23).uniform(-1, 1, (8, 1, 1)).astype(np.float32)  # 8 steps of x (1, 1)
A, B = "tenant-a-7f3c", "tenant-b-91d2"  # two tenants' tokens
MIN_ID_CHARS = 22  # 128 bits in URL-safe base64


def expected_run(xs) -> list[tuple[np.ndarray, np.ndarray]]:
    """(y, h_out) of every step of ``xs`` from the initial state, by the runtime."""
    answers, state = [], None
    for x in xs:
        y, state = MODEL.step(x, state)
        answers.append((y, state[0]))
    return answers


class Client:
    """A tritonclient of ``protocol`` to ``server`` with ``token`` (None: none), stepping sine."""

    def __init__(self, protocol: str, server, token: str | None = None) -> None:
        self.protocol, self.module = protocol, httpclient if protocol == "http" else grpcclient
        port = server.http_port if protocol == "http" else server.grpc_port
        self.client = self.module.InferenceServerClient(f"127.0.0.1:{port}")
        self.auth = {"authorization": f"Bearer {token}"} if token else None
        self.bad = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
        self.conflict = "409" if protocol == "http" else "StatusCode.ABORTED"

    def step(self, key, x, *, start=False, end=False, version=None, assign=False):
        """(y, h_out, the answer's parameters) of one request of sequence ``key`` (0: none)."""
        tensor = self.module.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        parameters = {"sequence_version": version} if version is not None else {}
        if assign:
            parameters["assign_sequence_id"] = True  # tritonclient sends sequence_start only with an id
        options = {"headers": self.auth} if self.auth else {}
        result = self.client.infer(
            "sine",
            [tensor],
            outputs=[self.module.InferRequestedOutput(name) for name in ("y", "h_out")],
            sequence_id=key,
            sequence_start=start,
            sequence_end=end,
            parameters=parameters or None,
            **options,
        )
        if self.protocol == "http":
            answered = result.get_response()["parameters"]
        else:
            given = result.get_response().parameters
            answered = {name: getattr(p, p.WhichOneof("parameter_choice")) for name, p in given.items()}
        return result.as_numpy("y"), result.as_numpy("h_out"), answered

    def refusal(self, *args, **kwargs) -> tuple[str, str]:
        """(status, message) of a request that must be refused."""
        with pytest.raises(InferenceServerException) as caught:
            self.step(*args, **kwargs)
        return caught.value.status(), caught.value.message()

    def close(self) -> None:
        self.client.close()


def same(got, expected) -> None:
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def post(server, path: str, document: dict, token: str | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    connection.request("POST", path, json.dumps(document), headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.getheader("content-type", "").startswith("text/event-stream"):  # server-sent events
        lines = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
        return response.status, {"events": [json.loads(line) for line in lines]}
    return response.status, json.loads(body)


# ---- server-assigned ids -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_start_without_an_id_gets_a_long_random_one_that_continues_like_a_chosen_one(protocol, start_server):
    server = start_server()
    client = Client(protocol, server)
    expected = expected_run(XS[:4])
    first = client.step(0, XS[0], assign=True)
    key = first[2]["sequence_id"]
    assert isinstance(key, str) and len(key) >= MIN_ID_CHARS and first[2]["sequence_version"] == 1
    same(first, expected[0])
    for t in (1, 2, 3):
        got = client.step(key, XS[t], end=t == 3)
        same(got, expected[t])
        assert got[2] == {"sequence_version": t + 1}  # the id is given once, by the start
    chosen = [client.step("mine", XS[t], start=t == 0) for t in range(4)]  # a client-chosen id: the same values
    for got, want in zip(chosen, expected):
        same(got, want)
    assert "sequence_id" not in chosen[0][2]
    others = {client.step(0, XS[0], assign=True)[2]["sequence_id"] for _ in range(3)}
    assert len(others | {key}) == 4  # every start its own id
    client.close()


def test_a_raw_start_without_an_id_or_with_id_0_gets_one_over_http(start_server):
    server = start_server(grpc_port=None)
    x = {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.25]}
    keys = []
    for parameters in ({"sequence_start": True}, {"sequence_start": True, "sequence_id": 0}, {"sequence_id": ""}):
        status, answer = post(server, "/v2/models/sine/infer", {"inputs": [x], "parameters": parameters})
        if parameters.get("sequence_start"):
            assert status == 200 and answer["parameters"]["sequence_version"] == 1, answer
            keys.append(answer["parameters"]["sequence_id"])
        else:  # "" is no sequence, as in Triton: a stateless request, no id
            assert status == 200 and "parameters" not in answer or "sequence_id" not in answer["parameters"]
    assert len(set(keys)) == 2 and all(len(key) >= MIN_ID_CHARS for key in keys)
    status, answer = post(server, "/v2/models/sine/infer", {"inputs": [x], "parameters": {"sequence_end": True}})
    assert status == 400 and "need a 'sequence_id'" in answer["error"]
    both = {"assign_sequence_id": True, "sequence_id": "x"}
    status, answer = post(server, "/v2/models/sine/infer", {"inputs": [x], "parameters": both})
    assert status == 400 and "send it without 'sequence_id'" in answer["error"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_refusing_client_ids_is_one_400_line_and_assigned_ids_still_work(protocol, start_server):
    server = start_server(settings=Settings(client_sequence_ids=False))
    client = Client(protocol, server)
    status, message = client.refusal("mine", XS[0], start=True)
    assert status == client.bad and "--refuse-client-sequence-ids" in message and "\n" not in message
    expected = expected_run(XS[:3])
    first = client.step(0, XS[0], assign=True)
    same(first, expected[0])
    key = first[2]["sequence_id"]
    status, message = client.refusal(key, XS[1], start=True)  # no restart under a named id either
    assert status == client.bad and "--refuse-client-sequence-ids" in message
    for t in (1, 2):
        same(client.step(key, XS[t]), expected[t])
    client.close()


# ---- several tokens ----------------------------------------------------------------------------


def unknown_answers(client: Client, key) -> list[tuple[str, str]]:
    """What ``client`` is answered for sequence ``key`` without starting it: a step, a step
    with a version, an end."""
    return [
        client.refusal(key, XS[0]),
        client.refusal(key, XS[0], version=2),
        client.refusal(key, XS[0], end=True),
    ]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_another_token_cannot_read_advance_or_end_a_sequence_and_learns_nothing(protocol, start_server):
    server = start_server(token=[A, B])
    owner, other = Client(protocol, server, A), Client(protocol, server, B)
    expected = expected_run(XS)
    key = f"shared-{protocol}"
    before = unknown_answers(other, key)  # the answers to an id nobody started
    assert [status for status, _ in before] == [owner.bad, owner.conflict, owner.bad]
    same(owner.step(key, XS[0], start=True), expected[0])
    same(owner.step(key, XS[1], version=1), expected[1])
    assert unknown_answers(other, key) == before  # exactly the unknown sequence's answers
    # the other token's start of the same id is its own sequence, from the initial state
    for t in range(3):
        same(other.step(key, XS[4 + t], start=t == 0), expected_run(XS[4:7])[t])
    for t in (2, 3, 4):  # the owner's answers as an undisturbed run's, bit for bit
        got = owner.step(key, XS[t], version=t)
        same(got, expected[t])
        assert got[2]["sequence_version"] == t + 1
    same(owner.step(key, XS[5], end=True), expected[5])
    gone = f"{key}-ended-by-b"
    other.step(gone, XS[0], start=True, end=True)  # an id B ended: A still sees an unknown one
    assert unknown_answers(owner, gone) == [(s, m.replace(key, gone)) for s, m in before]
    owner.close()
    other.close()


def test_the_sequence_of_an_assigned_id_is_its_owners_alone(start_server):
    server = start_server(token=[A, B], grpc_port=None)
    owner, other = Client("http", server, A), Client("http", server, B)
    expected = expected_run(XS[:3])
    first = owner.step(0, XS[0], assign=True)
    key = first[2]["sequence_id"]
    stranger = "Z" * len(key)
    assert [m.replace(key, stranger) for _, m in unknown_answers(other, key)] == [
        m for _, m in unknown_answers(other, stranger)
    ]
    for t in (1, 2):
        same(owner.step(key, XS[t]), expected[t])
    assert Client("http", server).refusal(key, XS[0])[0] == "401"  # and without a token nothing at all
    owner.close()
    other.close()


def test_the_owner_survives_a_state_dir_restart(tmp_path, start_server):
    state_dir = tmp_path / "state"
    expected = expected_run(XS)
    first = start_server(token=[A, B], grpc_port=None, state_dir=state_dir)
    owner = Client("http", first, A)
    for t in range(3):
        same(owner.step("kept", XS[t], start=t == 0), expected[t])
    Client("http", first, B).step("theirs", XS[0], start=True)
    first.stop()
    text = (state_dir / "sine.sequences.json").read_text()
    document = json.loads(text)
    assert document["format_version"] == 2 and A not in text and B not in text  # digests, never tokens
    owners = {entry["id"]: entry["owner"] for entry in document["sequences"]}
    assert owners == {key: hashlib.sha256(token.encode()).hexdigest() for key, token in (("kept", A), ("theirs", B))}
    said = []
    second = start_server(token=[B, A], grpc_port=None, state_dir=state_dir, say=said.append)
    assert any("resumed 2 sequence(s)" in line and "belong to a token" not in line for line in said), said
    owner, other = Client("http", second, A), Client("http", second, B)
    status, message = other.refusal("kept", XS[3])
    assert status == "400" and "never started" in message
    for t in range(3, 6):
        same(owner.step("kept", XS[t], version=t), expected[t])
    owner.close()
    other.close()


def test_one_token_and_no_token_write_the_state_file_as_before(tmp_path, start_server):
    for token in ("only-one", None):
        state_dir = tmp_path / f"state-{token}"
        server = start_server(token=token, grpc_port=None, state_dir=state_dir)
        Client("http", server, token).step(5, XS[0], start=True)
        server.stop()
        document = json.loads((state_dir / "sine.sequences.json").read_text())
        assert document["format_version"] == 1 and set(document["sequences"][0]) == {"id", "state", "version"}


def test_a_sequence_no_configured_token_owns_is_resumed_and_said(tmp_path, start_server):
    state_dir = tmp_path / "state"
    server = start_server(token=[A, B], grpc_port=None, state_dir=state_dir)
    Client("http", server, A).step(9, XS[0], start=True)
    server.stop()
    said = []
    server = start_server(token="someone-else", grpc_port=None, state_dir=state_dir, say=said.append)
    assert any("1 of them belong to a token this server is not given" in line for line in said), said
    assert A not in " ".join(said)
    assert Client("http", server, "someone-else").refusal(9, XS[1])[0] == "400"


# ---- the generate routes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    """The tests' CharGRU with a vocabulary (a sampled NAME-generate)."""
    import torch

    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("owners") / "char"
    return export_module(make_char_gru(), folder, **CHAR_GRU_SIGNATURE)


def test_generate_routes_assign_ids_and_keep_them_to_their_token(char_folder, start_server):
    server = start_server([("char", char_folder)], token=[A, B], grpc_port=None)
    category = [0.4, -1.0, 0.9]

    def generate(token, prompt, route="generate", **parameters):
        document = {"token": prompt, "category": category, "parameters": {"seed": 5, "max_tokens": 6, **parameters}}
        return post(server, f"/v2/models/char-generate/{route}", document, token)

    status, one = generate(A, [3, 1], sequence_start=True)
    assert status == 200 and len(one["sequence_id"]) >= MIN_ID_CHARS and one["sequence_version"] == 1, one
    key = one["sequence_id"]
    status, chosen = generate(A, [3, 1], sequence_start=True, sequence_id="a-chosen")  # an undisturbed twin
    assert status == 200 and chosen["tokens"] == one["tokens"]
    stranger = "Q" * len(key)
    status, refused = generate(B, [2], sequence_id=key)
    status_unknown, unknown = generate(B, [2], sequence_id=stranger)
    assert status == status_unknown == 400 and refused["error"].replace(key, stranger) == unknown["error"]
    status, refused = generate(B, [2], "generate_stream", sequence_id=key, sequence_version=1)
    status_unknown, unknown = generate(B, [2], "generate_stream", sequence_id=stranger, sequence_version=1)
    assert status == status_unknown == 409 and refused["error"].replace(key, stranger) == unknown["error"]
    status, stolen = generate(B, [2], sequence_id=key, sequence_start=True)  # B's own sequence of that id
    assert status == 200 and "sequence_id" not in stolen
    status, two = generate(A, [2], sequence_id=key, sequence_version=1)
    status_twin, twin = generate(A, [2], sequence_id="a-chosen", sequence_version=1)
    assert status == status_twin == 200 and two["tokens"] == twin["tokens"] and two["sequence_version"] == 2
    status, streamed = generate(A, [3, 1], "generate_stream", sequence_start=True)  # the id in the last event
    last = streamed["events"][-1]
    assert status == 200 and len(last["sequence_id"]) >= MIN_ID_CHARS and last["sequence_id"] != key
    assert [t for event in streamed["events"] for t in event["tokens"]] == one["tokens"]


def test_rnn_serve_with_a_file_of_tokens_and_refused_client_ids(tmp_path):
    """The options as users give them: `rnn serve --token-file` with two tokens (a comment, a blank
    line) and --refuse-client-sequence-ids; what it prints and /metrics hold no token."""
    from tests.toolkit.serving.test_serve_cli import Served

    path = tmp_path / "tokens"
    path.write_text(f"# two tenants\n{A}\n\n{B}\n")
    path.chmod(0o600)
    served = Served(f"sine={COMMITTED}", "--token-file", str(path), "--refuse-client-sequence-ids")
    server = SimpleNamespace(http_port=served.http, grpc_port=served.grpc)
    text = ""
    try:
        assert any("2 tokens: each sequence belongs to the token that started it" in line for line in served.lines)
        owner, other = Client("grpc", server, A), Client("http", server, B)
        status, message = owner.refusal("mine", XS[0], start=True)
        assert status == owner.bad and "--refuse-client-sequence-ids" in message
        expected = expected_run(XS[:2])
        first = owner.step(0, XS[0], assign=True)
        same(first, expected[0])
        key = first[2]["sequence_id"]
        assert other.refusal(key, XS[1])[0] == "400"
        same(owner.step(key, XS[1]), expected[1])
        connection = http.client.HTTPConnection("127.0.0.1", served.http, timeout=10)
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {B}"})
        text = connection.getresponse().read().decode()
        connection.close()
        owner.close()
        other.close()
    finally:
        code, lines = served.stop()
    printed = "\n".join(served.lines + lines) + text
    tags = [hashlib.sha256(token.encode()).hexdigest() for token in (A, B)]
    assert code == 0 and "rnn_" in text and not any(secret in printed for secret in (A, B, *tags))


# ---- on Ray: the front draws the id, the replica keeps the owner ---------------------------------


def test_on_ray_the_front_draws_the_id_and_the_replica_keeps_the_caller():
    """`RoutedEngine` (the --ray front) over a real `Stepper` called in process, as Ray's handle
    would call it: the start's id is drawn in the front (so its requests route to one replica),
    client ids are refused there, and the caller's owner tag travels to the replica."""
    ray_serve = pytest.importorskip("toolkit.serving.ray_serve", reason="the ray extra is not installed")
    refusing = Settings(client_sequence_ids=False)
    stepper = ray_serve.Stepper([ray_serve.ship_folder("sine", COMMITTED)], refusing, "cpu")
    handle = SimpleNamespace(infer_many=SimpleNamespace(remote=stepper.infer_many))
    handle.options = lambda **routing: handle  # the router's choice: the one replica
    front = ray_serve.RoutedEngine([("sine", COMMITTED)], refusing, runtime.load, handle, "owners-test")
    tag_a, tag_b = (hashlib.sha256(token.encode()).hexdigest() for token in (A, B))
    expected = expected_run(XS[:3])

    async def step(caller, t, **parameters):
        CALLER.set(caller)
        answer = await front.infer(InferRequest("sine", {"x": XS[t]}, parameters=parameters), "test")
        return dict(answer.outputs), answer.parameters

    async def go():
        front.start()
        outputs, answered = await step(tag_a, 0, sequence_start=True)
        key = answered["sequence_id"]
        assert len(key) >= MIN_ID_CHARS and answered["sequence_version"] == 1
        np.testing.assert_array_equal(outputs["y"], expected[0][0])
        with pytest.raises(BadRequest, match="--refuse-client-sequence-ids"):
            await step(tag_a, 1, sequence_id="mine", sequence_start=True)
        with pytest.raises(BadRequest, match="never started"):
            await step(tag_b, 1, sequence_id=key)  # another token on the replica: an unknown sequence
        for t in (1, 2):
            outputs, answered = await step(tag_a, t, sequence_id=key)
            np.testing.assert_array_equal(outputs["h_out"], expected[t][1])
            assert answered == {"sequence_version": t + 1}

    try:
        asyncio.run(go())
    finally:
        front.close()
        stepper.engine.close()


# ---- tokens ------------------------------------------------------------------------------------


def test_a_token_file_holds_one_token_or_several(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("  only \n")
    assert read_token_file(path) == "only"  # one token: as before
    path.write_text(f"# tenants\n{A}\n\n  {B}  \n# {A} retired\n{A}\n")
    assert read_token_file(path) == (A, B)
    path.write_text("# nothing but comments\n\n")
    with pytest.raises(runtime.InputValueError, match="is empty"):
        read_token_file(path)
    path.write_text(f"{A}\nold token below, do not use\n")  # a file of one token with a note under it
    with pytest.raises(runtime.InputValueError, match="line 2 of the token file .* holds a space"):
        read_token_file(path)


def test_tokens_give_owner_tags_and_one_token_owns_nothing():
    several = Tokens([A, B])
    assert several.owner(f"Bearer {A}".encode()) == hashlib.sha256(A.encode()).hexdigest()
    assert several.owner(f"bearer  {B} ".encode()) == hashlib.sha256(B.encode()).hexdigest()
    assert several.owner(b"Bearer tenant-c") is None and several.owner(f"Basic {A}".encode()) is None
    one = Tokens.of(A)
    assert one is not None and one.owner(f"Bearer {A}".encode()) == "" and one.owner(b"Bearer x") is None
    assert Tokens.of([A, A]).owners == frozenset({""})  # a token listed twice is one token
    with pytest.raises(runtime.InputValueError, match="the token is empty"):
        Tokens([A, " "])
