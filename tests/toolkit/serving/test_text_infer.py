"""Text through the infer route of sampled NAME-generate (the real server, tritonclient): BYTES
``text_input`` in and ``text_output`` out over HTTP (JSON and the binary extension's 4-byte
length-prefixed strings) and gRPC, malformed strings refused in one line, and a client that
leaves the unary infer route (HTTP connection closed, gRPC deadline) cancels its generation."""

from __future__ import annotations

import json
import socket
import struct
import time

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from toolkit.serving.generation_settings import GenerationSettings

from . import test_generation_server as served
from .test_generation import CATEGORY, reference
from .test_generation_server import generator_of, wait_until_free

char_folder, model, server = served.char_folder, served.model, served.server  # its fixtures (a server of this module)

PARAMETERS = {"strategy": "top_k", "top_k": 5, "temperature": 0.9, "seed": 17, "max_tokens": 24}
SETTINGS = GenerationSettings("top_k", top_k=5, temperature=0.9, seed=17, max_tokens=24)
LONG = 100_000  # max_tokens of a generation that runs until its client leaves (the server's max_steps)


def text_inputs(client_module, text: str, binary: bool = True) -> list:
    prompt = client_module.InferInput("text_input", [1], "BYTES")
    category = client_module.InferInput("category", [1, 3], "FP32")
    if client_module is triton_http:
        prompt.set_data_from_numpy(np.array([text.encode()], object), binary_data=binary)
        category.set_data_from_numpy(CATEGORY, binary_data=binary)
    else:
        prompt.set_data_from_numpy(np.array([text.encode()], object))
        category.set_data_from_numpy(CATEGORY)
    return [prompt, category]


def cancelled_count(server) -> float:
    value = server.engine.metrics.value("rnn_generations_finished_total", {"model": "char", "reason": "cancelled"})
    return value or 0.0


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_takes_text_input_and_answers_text_output(server, model, binary):
    expected = reference(model, model.vocabulary.encode("bad c"), SETTINGS)[0]
    outputs = [triton_http.InferRequestedOutput(name, binary_data=binary) for name in ("tokens", "text_output")]
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        result = client.infer(
            "char-generate", text_inputs(triton_http, "bad c", binary), outputs=outputs, parameters=PARAMETERS
        )
        only_tokens = client.infer(
            "char-generate",
            text_inputs(triton_http, "bad c", binary),
            outputs=[triton_http.InferRequestedOutput("tokens", binary_data=binary)],
            parameters=PARAMETERS,
        )
    assert result.as_numpy("tokens")[0].tolist() == expected
    text = result.as_numpy("text_output")
    assert text.shape == (1,)
    decoded = text[0].decode() if isinstance(text[0], bytes) else text[0]
    assert decoded == model.vocabulary.decode(expected)
    assert only_tokens.as_numpy("tokens")[0].tolist() == expected and only_tokens.as_numpy("text_output") is None


def test_grpc_infer_takes_text_input_and_answers_text_output(server, model):
    expected = reference(model, model.vocabulary.encode("h.a"), SETTINGS)[0]
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        result = client.infer("char-generate", text_inputs(triton_grpc, "h.a"), parameters=PARAMETERS)
    assert result.as_numpy("tokens")[0].tolist() == expected
    assert result.as_numpy("text_output")[0] == model.vocabulary.decode(expected).encode()


def raw_infer(server, head: dict, binary: bytes = b"") -> tuple[int, dict]:
    """(status, JSON answer) of a POST of the infer route with ``binary`` after the JSON ``head``."""
    import http.client

    body = json.dumps(head).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(body))}
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    connection.request("POST", "/v2/models/char-generate/infer", body + binary, headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_malformed_strings_are_refused_in_one_line(server):
    category = {"name": "category", "datatype": "FP32", "shape": [1, 3], "data": CATEGORY[0].tolist()}

    def prompt(size: int) -> dict:
        return {"name": "text_input", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": size}}

    cases = [
        (struct.pack("<I", 9) + b"abc", "past its data's end"),  # a length past the data
        (b"\x01\x00", "4-byte length"),  # cut inside the length
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b", "needs 1"),  # two strings for shape [1]
        (struct.pack("<I", 2) + b"\xff\xfe", "not UTF-8"),
        (struct.pack("<I", 2) + b"zq", "starts no token"),  # text the vocabulary cannot split
    ]
    for binary, match in cases:
        status, answer = raw_infer(server, {"inputs": [prompt(len(binary)), category]}, binary)
        assert status == 400 and match in answer["error"] and "\n" not in answer["error"], answer
    both = {"name": "token", "datatype": "INT64", "shape": [1, 1], "data": [1]}
    text = {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["ab"]}
    status, answer = raw_infer(server, {"inputs": [text, both, category]})
    assert status == 400 and "not both" in answer["error"], answer
    status, answer = raw_infer(server, {"inputs": [{**text, "data": [3]}, category]})
    assert status == 400 and "must be strings" in answer["error"], answer
    status, answer = raw_infer(server, {"inputs": [text, category], "outputs": [{"name": "logits"}]})
    assert status == 400 and "no output 'logits'" in answer["error"], answer


def test_a_client_that_leaves_the_http_infer_route_cancels_its_generation(server):
    before = cancelled_count(server)
    body = json.dumps(
        {
            "inputs": [
                {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["abc"]},
                {"name": "category", "datatype": "FP32", "shape": [1, 3], "data": CATEGORY[0].tolist()},
            ],
            "parameters": {"max_tokens": LONG, "seed": 3},
        }
    ).encode()
    head = (
        f"POST /v2/models/char-generate/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as connection:
        connection.sendall(head + body)
        deadline = time.monotonic() + 10
        while not generator_of(server).live and time.monotonic() < deadline:
            time.sleep(0.005)
        assert generator_of(server).live == 1  # running (100,000 tokens would take seconds)
    assert wait_until_free(server) == 0
    assert cancelled_count(server) == before + 1


def test_a_client_that_leaves_the_grpc_infer_route_cancels_its_generation(server):
    before = cancelled_count(server)
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        with pytest.raises(InferenceServerException, match="(?i)deadline"):
            client.infer(
                "char-generate", text_inputs(triton_grpc, "abc"), parameters={"max_tokens": LONG}, client_timeout=0.3
            )
    assert wait_until_free(server) == 0
    assert cancelled_count(server) == before + 1
