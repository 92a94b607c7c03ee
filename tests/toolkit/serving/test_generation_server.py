"""Sampled NAME-generate served by the real server on free loopback ports: tritonclient's HTTP
infer, Triton's generate extension (``/generate``, ``/generate_stream`` read as server-sent
events with the standard library), tritonclient's gRPC decoupled streaming; the same tokens as
the runtime for the same seed, stop tokens and text, clients that go away, sequences continued."""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

import runtime
from tests.conftest import COMMITTED
from toolkit.serving import Server, Settings
from toolkit.serving.generate_calls import SAMPLED
from toolkit.serving.generation_settings import GenerationSettings

from .test_generation import CATEGORY, reference

VOCABULARY = ["a", "b", "c", "d", "e", " ", "f", "g", "h", ".", "!"]  # the CharGRU's 11 ids as text
WAIT_S = 10.0  # the longest a test waits for a slot to be freed or a stream to answer


@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    """The tests' CharGRU with a vocabulary (token + category in, logits out, state (2, batch, 7))."""
    import torch

    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("generate-server") / "char"
    return export_module(make_char_gru(), folder, vocabulary=VOCABULARY, **CHAR_GRU_SIGNATURE)


@pytest.fixture(scope="module")
def model(char_folder):
    return runtime.load(char_folder)


@pytest.fixture(scope="module")
def server(char_folder):
    started = Server(
        [("char", char_folder), ("sine", COMMITTED)],
        http_port=0,
        grpc_port=0,
        settings=Settings(max_queue_delay_us=200),
        say=lambda message: None,
    ).start()
    yield started
    started.stop()


def generator_of(server):
    return SAMPLED.generator(server.engine, server.engine.served["char"])


def wait_until_free(server) -> int:
    deadline = time.monotonic() + WAIT_S
    while generator_of(server).live and time.monotonic() < deadline:
        time.sleep(0.01)
    return generator_of(server).live


def post(server, path, document, stream=False):
    """(status, content type, body or the open response) of a POST of ``document`` as JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=WAIT_S)
    connection.request("POST", path, json.dumps(document), {"Content-Type": "application/json"})
    response = connection.getresponse()
    if stream and response.status == 200:
        return response.status, response.getheader("content-type"), response
    return response.status, response.getheader("content-type"), json.loads(response.read())


def events(response, limit=None):
    """The JSON of each server-sent ``data:`` event (at most ``limit``)."""
    found = []
    while limit is None or len(found) < limit:
        line = response.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            found.append(json.loads(line[6:]))
        else:
            assert line == b"\n", line
    return found


def request_document(prompt=None, text=None, **parameters):
    document = {"category": CATEGORY[0].tolist(), "parameters": parameters}
    if text is not None:
        document["text_input"] = text
    else:
        document["token"] = list(prompt)
    return document


def test_metadata_shows_the_prompt_the_held_inputs_and_the_tokens(server):
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        metadata = client.get_model_metadata("char-generate")
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]}
    assert inputs == {
        "token": ("INT64", [1, -1]),
        "category": ("FP32", [1, 3]),
        "h": ("FP32", [2, -1, 7]),
        "text_input": ("BYTES", [1]),  # the model has a vocabulary: the prompt as text instead of token
    }
    assert metadata["outputs"] == [
        {"name": "tokens", "datatype": "INT64", "shape": [1, -1]},
        {"name": "text_output", "datatype": "BYTES", "shape": [1]},
    ]


def test_tritonclient_http_infer_gives_the_runtimes_tokens(server, model):
    settings = GenerationSettings("top_k", top_k=4, temperature=0.9, seed=7, max_tokens=33)
    inputs = [triton_http.InferInput("token", [1, 5], "INT64"), triton_http.InferInput("category", [1, 3], "FP32")]
    inputs[0].set_data_from_numpy(np.array([[4, 2, 7, 1, 1]], np.int64))
    inputs[1].set_data_from_numpy(CATEGORY)
    parameters = {"strategy": "top_k", "top_k": 4, "temperature": 0.9, "seed": 7, "max_tokens": 33}
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        result = client.infer("char-generate", inputs, parameters=parameters)
    tokens = result.as_numpy("tokens")
    assert tokens.shape == (1, 33)
    assert tokens[0].tolist() == reference(model, [4, 2, 7, 1, 1], settings)[0]
    assert result.get_response()["parameters"] == {"finish_reason": "length"}
    stop = int(tokens[0, 5])
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        answer = client.infer("char-generate", grpc_inputs([4, 2, 7, 1, 1]), parameters={**parameters, "stop": stop})
    assert answer.as_numpy("tokens")[0].tolist() == tokens[0, : tokens[0].tolist().index(stop) + 1].tolist()
    assert answer.get_response().parameters["finish_reason"].string_param == "stop"


def test_generate_answers_text_and_tokens_in_one_json(server, model):
    settings = GenerationSettings("temperature", temperature=0.8, seed=3, max_tokens=25)
    document = request_document(text="bad c", strategy="temperature", temperature=0.8, seed=3)
    document["max_tokens"] = 25  # a top-level field that names no input is a parameter (as in Triton)
    status, kind, answer = post(server, "/v2/models/char-generate/generate", document)
    assert status == 200 and kind.startswith("application/json"), answer
    expected = reference(model, model.vocabulary.encode("bad c"), settings)[0]
    assert answer["tokens"] == expected and answer["finish_reason"] == "length"
    assert answer["text_output"] == "".join(VOCABULARY[t] for t in expected)
    assert answer["model_name"] == "char-generate" and answer["model_version"] == "1"
    status, _, again = post(server, "/v2/models/char/versions/1/generate", document)  # NAME names it too
    assert status == 200 and again["tokens"] == expected


def test_generate_stream_sends_events_as_tokens_are_drawn_and_many_run_at_once(server, model):
    prompts = [[4], [1, 2], [3, 3, 3], [0, 9], [10], [5, 6, 7], [8], [2, 2]]
    results: dict[int, list] = {}

    def one(index):
        document = request_document(prompts[index], strategy="top_p", top_p=0.8, seed=100 + index, max_tokens=60)
        status, kind, response = post(server, "/v2/models/char-generate/generate_stream", document, stream=True)
        assert status == 200 and kind == "text/event-stream; charset=utf-8"
        results[index] = events(response)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 3)
    assert sorted(results) == list(range(len(prompts)))
    for index, found in results.items():
        settings = GenerationSettings("top_p", top_p=0.8, seed=100 + index, max_tokens=60)
        tokens = [t for event in found for t in event["tokens"]]
        assert tokens == reference(model, prompts[index], settings)[0]
        assert "".join(event["text_output"] for event in found) == "".join(VOCABULARY[t] for t in tokens)
        assert [event["finish_reason"] for event in found] == [None] * (len(found) - 1) + ["length"]
        assert len(found) > 1  # streamed, not one answer
    assert generator_of(server).largest_tick > 1  # generations shared batched steps


def test_stop_token_and_stop_text_end_a_generation_early(server, model):
    settings = GenerationSettings("temperature", temperature=1.2, seed=5, max_tokens=80)
    expected = reference(model, [6, 1], settings)[0]
    stop = expected[7]
    first = expected.index(stop)
    common = {"strategy": "temperature", "temperature": 1.2, "seed": 5, "max_tokens": 80}
    status, _, answer = post(server, "/v2/models/char-generate/generate", request_document([6, 1], stop=stop, **common))
    assert status == 200 and answer["tokens"] == expected[: first + 1] and answer["finish_reason"] == "stop"
    text = "".join(VOCABULARY[t] for t in expected)
    stop_text = text[9:11]
    document = request_document([6, 1], stop_text=stop_text, **common)
    status, _, response = post(server, "/v2/models/char-generate/generate_stream", document, stream=True)
    found = events(response)
    assert "".join(event["text_output"] for event in found) == text[: text.index(stop_text) + len(stop_text)]
    assert found[-1]["finish_reason"] == "stop"


def test_a_stream_whose_client_goes_away_frees_its_slot(server):
    document = request_document([1, 2], strategy="temperature", seed=1, max_tokens=100_000)
    status, _, response = post(server, "/v2/models/char-generate/generate_stream", document, stream=True)
    assert status == 200 and len(events(response, limit=3)) == 3
    assert generator_of(server).live == 1
    response.close()  # the client goes away mid-stream
    assert wait_until_free(server) == 0

    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=WAIT_S)
    connection.request("POST", "/v2/models/char-generate/generate", json.dumps(document))
    deadline = time.monotonic() + WAIT_S
    while generator_of(server).live == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert generator_of(server).live == 1
    connection.close()  # the client of the one-answer route goes away before its answer
    assert wait_until_free(server) == 0

    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer("char-generate", grpc_inputs([3]), parameters={"seed": 2, "max_tokens": 100_000})
    result, error = answers.get(timeout=WAIT_S)
    assert error is None and result.as_numpy("tokens").size >= 1
    client.stop_stream(cancel_requests=True)  # the gRPC client goes away mid-stream
    client.close()
    assert wait_until_free(server) == 0


def grpc_inputs(prompt, text=None):
    category = triton_grpc.InferInput("category", [1, 3], "FP32")
    category.set_data_from_numpy(CATEGORY)
    if text is not None:
        given = triton_grpc.InferInput("text_input", [1], "BYTES")
        given.set_data_from_numpy(np.array([text.encode()], dtype=object))
    else:
        given = triton_grpc.InferInput("token", [1, len(prompt)], "INT64")
        given.set_data_from_numpy(np.array([prompt], np.int64))
    return [given, category]


def stream_generations(server, requests, empty_final):
    """Sends every (inputs, parameters, id[, sequence options]) on one gRPC stream; returns each
    request id's responses (result, its final flag) up to the final one."""
    answers: queue.Queue = queue.Queue()
    by_id: dict[str, list] = {}
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for inputs, parameters, request_id, *sequence in requests:
            client.async_stream_infer(
                "char-generate",
                inputs,
                request_id=request_id,
                parameters=parameters,
                enable_empty_final_response=empty_final,
                **(sequence[0] if sequence else {}),
            )
        finals = 0
        while finals < len(requests):
            result, error = answers.get(timeout=WAIT_S)
            assert error is None, error
            final = result.get_response().parameters["triton_final_response"].bool_param
            by_id.setdefault(result.get_response().id, []).append((result, final))
            finals += final
        client.stop_stream()
    return by_id


@pytest.mark.parametrize("empty_final", [False, True])
def test_grpc_streaming_sends_several_responses_and_the_final_flag(server, model, empty_final):
    requests, expected = [], {}
    for index, prompt in enumerate(([4, 2], [9], [1, 5, 5])):
        settings = GenerationSettings("temperature", temperature=0.7, seed=40 + index, max_tokens=50)
        parameters = {"strategy": "temperature", "temperature": 0.7, "seed": 40 + index, "max_tokens": 50}
        requests.append((grpc_inputs(prompt), parameters, f"r{index}"))
        expected[f"r{index}"] = reference(model, prompt, settings)[0]
    by_id = stream_generations(server, requests, empty_final)
    for request_id, responses in by_id.items():
        tokens = [t for result, _ in responses for t in result.as_numpy("tokens")[0].tolist()]
        assert tokens == expected[request_id]
        assert [final for _, final in responses] == [False] * (len(responses) - 1) + [True]
        assert len(responses) > 1
        last = responses[-1][0]
        assert last.get_response().parameters["finish_reason"].string_param == "length"
        if empty_final:
            assert last.as_numpy("tokens").shape == (1, 0)
        text = b"".join(result.as_numpy("text_output")[0] for result, _ in responses).decode()
        assert text == "".join(VOCABULARY[t] for t in tokens)


def test_a_sequence_continues_from_where_its_generation_ended(server, model):
    first = GenerationSettings("temperature", temperature=0.9, seed=61, max_tokens=12)
    second = GenerationSettings("greedy", max_tokens=9)
    p1, p2 = [2, 5, 1], [9, 0]
    requests = [
        (grpc_inputs(p1), {"seed": 61, "temperature": 0.9, "max_tokens": 12}, {"sequence_start": True}),
        (grpc_inputs(p2), {"strategy": "greedy", "max_tokens": 9}, {}),
    ]
    answers = []
    for inputs, parameters, sequence in requests:  # one after the other: the second continues the first
        sequence = {"sequence_id": 77, **sequence}
        (responses,) = stream_generations(server, [(inputs, parameters, "s", sequence)], False).values()
        answers.append(responses)
    one = [t for result, _ in answers[0] for t in result.as_numpy("tokens")[0].tolist()]
    two = [t for result, _ in answers[1] for t in result.as_numpy("tokens")[0].tolist()]
    assert one == reference(model, p1, first)[0]
    assert two == reference(model, [*p1, *one, *p2], second)[0]
    versions = [responses[-1][0].get_response().parameters["sequence_version"].int64_param for responses in answers]
    assert versions == [1, 2]
    status, _, answer = post(
        server, "/v2/models/char-generate/generate", request_document(p2, strategy="greedy", sequence_id=78)
    )
    assert status == 400 and "78" in answer["error"]  # never started: refused before anything runs


def test_mistakes_are_answered_with_one_line(server):
    cases = [
        ("char-generate", request_document([11]), 400, "out of range"),
        ("char-generate", request_document([1], strategy="beam"), 400, "strategy"),
        ("char-generate", request_document([1], strategy="top_k"), 400, "top_k"),
        ("char-generate", request_document(text="xyz"), 400, "x"),
        ("char-generate", {"token": [1]}, 400, "category"),
        ("char-generate", request_document([1], max_tokens=10**9), 400, "max_tokens"),
        ("sine-generate", {"x": [0.5]}, 400, "does not sample"),
        ("nothing", request_document([1]), 404, "unknown model"),
    ]
    for name, document, status, words in cases:
        answered, kind, answer = post(server, f"/v2/models/{name}/generate_stream", document, stream=True)
        assert answered == status and kind.startswith("application/json"), (name, document, answer)
        assert words in answer["error"] and "\n" not in answer["error"], answer
    assert generator_of(server).live == 0


def test_a_grpc_stream_answers_other_requests_while_its_generation_runs(server, model):
    settings = GenerationSettings("temperature", seed=3, max_tokens=2000)
    step = [triton_grpc.InferInput("token", [1], "INT64"), triton_grpc.InferInput("category", [1, 3], "FP32")]
    step[0].set_data_from_numpy(np.array([2], np.int64))
    step[1].set_data_from_numpy(CATEGORY)
    answers: queue.Queue = queue.Queue()
    order = []
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer(
            "char-generate", grpc_inputs([1]), request_id="g", parameters={"seed": 3, "max_tokens": 2000}
        )
        client.async_stream_infer("char", step, request_id="step")
        while not order or order[-1][0] != "g" or not order[-1][2]:
            result, error = answers.get(timeout=WAIT_S)
            assert error is None, error
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            order.append((response.id, result, final))
        client.stop_stream()
    ids = [request_id for request_id, _, _ in order]
    assert ids.count("step") == 1 and ids.index("step") < len(ids) - 1  # answered while the generation ran
    logits, _ = model.step({"token": np.array([2]), "category": CATEGORY})
    assert np.array_equal(order[ids.index("step")][1].as_numpy("logits"), logits)
    tokens = [t for request_id, result, _ in order if request_id == "g" for t in result.as_numpy("tokens")[0].tolist()]
    assert tokens == reference(model, [1], settings)[0]


def test_a_generation_starts_from_the_state_it_is_given(server, model):
    start = np.random.default_rng(4).standard_normal((2, 1, 7)).astype(np.float32)  # (layers, batch, hidden)
    settings = GenerationSettings("temperature", temperature=0.7, seed=9, max_tokens=15)
    document = request_document([3, 8], strategy="temperature", temperature=0.7, seed=9, max_tokens=15)
    document["h"] = start.tolist()
    status, _, answer = post(server, "/v2/models/char-generate/generate", document)
    assert status == 200 and answer["tokens"] == reference(model, [3, 8], settings, (start,))[0]
    assert answer["tokens"] != reference(model, [3, 8], settings)[0]


def test_an_abandoned_generation_leaves_its_sequence_as_it_was(server, model):
    first = GenerationSettings("temperature", temperature=0.9, seed=71, max_tokens=10)
    last = GenerationSettings("top_k", top_k=3, seed=72, max_tokens=10)
    common = {"sequence_id": "chat-9"}
    document = request_document([4, 4], seed=71, temperature=0.9, max_tokens=10, sequence_start=True, **common)
    status, _, one = post(server, "/v2/models/char-generate/generate", document)
    assert status == 200 and one["sequence_version"] == 1
    endless = request_document([7], seed=1, max_tokens=100_000, **common)
    status, _, response = post(server, "/v2/models/char-generate/generate_stream", endless, stream=True)
    assert status == 200 and len(events(response, limit=2)) == 2
    response.close()  # gone mid-generation: nothing of the sequence changes
    assert wait_until_free(server) == 0
    document = request_document([2, 6], strategy="top_k", top_k=3, seed=72, max_tokens=10, **common)
    status, _, two = post(server, "/v2/models/char-generate/generate", document)  # waits for the sequence's lock
    assert status == 200 and two["sequence_version"] == 2, two
    assert two["tokens"] == reference(model, [4, 4, *one["tokens"], 2, 6], last)[0]
    assert one["tokens"] == reference(model, [4, 4], first)[0]


def test_grpc_streaming_takes_the_prompt_as_text(server, model):
    settings = GenerationSettings("top_p", top_p=0.85, seed=81, max_tokens=30)
    parameters = {"strategy": "top_p", "top_p": 0.85, "seed": 81, "max_tokens": 30}
    (responses,) = stream_generations(server, [(grpc_inputs(None, text="ca b"), parameters, "t")], False).values()
    tokens = [t for result, _ in responses for t in result.as_numpy("tokens")[0].tolist()]
    assert tokens == reference(model, model.vocabulary.encode("ca b"), settings)[0]
    text = b"".join(result.as_numpy("text_output")[0] for result, _ in responses).decode()
    assert text == model.vocabulary.decode(tokens)
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("char-generate", grpc_inputs(None, text="cxz"), request_id="bad")
        result, error = answers.get(timeout=WAIT_S)
        client.stop_stream()
    assert result is None and "x" in str(error) and "\n" not in str(error)  # the text's first unknown position


def test_a_fast_generation_streams_its_first_token_alone_then_fewer_responses_than_tokens(server, model):
    settings = GenerationSettings("temperature", temperature=0.8, seed=77, max_tokens=200)
    expected = reference(model, [2, 6], settings)[0]
    parameters = {"strategy": "temperature", "temperature": 0.8, "seed": 77, "max_tokens": 200}
    responses = stream_generations(server, [(grpc_inputs([2, 6]), parameters, "fast")], False)["fast"]
    groups = [result.as_numpy("tokens")[0].tolist() for result, _ in responses]
    document = request_document([2, 6], **parameters)
    status, _, response = post(server, "/v2/models/char-generate/generate_stream", document, stream=True)
    assert status == 200
    for found in (groups, [event["tokens"] for event in events(response)]):  # gRPC, then SSE
        assert [t for group in found for t in group] == expected
        assert found[0] == expected[:1]  # the first token is its own response
        assert 1 < len(found) < len(expected)  # grouped on purpose, not one response per token
