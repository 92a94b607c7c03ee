"""Sampled generation inside the engine, driven on an asyncio loop without a server: `Engine.close`
ends running generations with Unavailable, gRPC streaming sends a reader that is behind the tokens
drawn meanwhile in one response, and the generation metrics count what ran."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from toolkit.serving import Settings
from toolkit.serving.core import Engine
from toolkit.serving.generate_calls import SAMPLED
from toolkit.serving.generation import Generator
from toolkit.serving.generation_settings import GenerationSettings
from toolkit.serving.grpc_api import _parameters, decode_inputs
from toolkit.serving.grpc_stream import FINAL, stream_answers
from toolkit.serving.metrics import Metrics
from toolkit.serving.protocol import Unavailable

from . import test_generation_server as served
from .test_generation import CATEGORY, reference

char_folder, model = served.char_folder, served.model  # the fixtures: the CharGRU with a vocabulary
WAIT_S = 10.0


def engine_of(folder) -> Engine:
    engine = Engine([("char", folder)], Settings())
    engine.start()
    return engine


def stream_request(prompt: list[int], **parameters) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="char-generate", id="g")
    request.inputs.add(name="token", datatype="INT64", shape=[1, len(prompt)])
    request.raw_input_contents.append(np.asarray(prompt, np.int64).tobytes())
    request.inputs.add(name="category", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(CATEGORY.tobytes())
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    return request


def decode(request: pb.ModelInferRequest):
    return decode_inputs(request, 1 << 20), _parameters(request.parameters)


async def until(condition) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)


def test_closing_the_engine_ends_running_generations_with_unavailable(char_folder):
    async def run():
        engine = engine_of(char_folder)
        named = engine.lookup("char-generate")
        inputs = {"token": np.array([[1, 2]], np.int64), "category": CATEGORY}
        started = await SAMPLED.start(engine, named, inputs, {"max_tokens": 100_000, "seed": 1})
        chunks = started.generation.chunks()
        first = await chunks.__anext__()
        engine.close()
        with pytest.raises(Unavailable, match="stopping"):
            async for _ in chunks:
                pass
        with pytest.raises(Unavailable, match="closed"):  # nothing new starts
            await SAMPLED.start(engine, named, inputs, {"max_tokens": 3})
        return first, started.generation, SAMPLED.generator(engine, engine.served["char"])

    first, generation, generator = asyncio.run(run())
    assert len(first) >= 1 and len(generation.tokens) < 100_000
    assert generator.live == 0 and len(generator.pool) == 0


def test_a_grpc_reader_that_is_behind_gets_the_tokens_drawn_meanwhile_in_one_response(char_folder, model):
    settings = GenerationSettings("temperature", seed=9, max_tokens=300)  # temperature 1, the default
    expected = reference(model, [3, 1, 4], settings)[0]

    async def run():
        engine = engine_of(char_folder)

        async def requests():
            yield stream_request([3, 1, 4], seed=9, max_tokens=300)

        answers = stream_answers(engine, requests(), None, decode)  # no ordinary request: answer unused
        first = await answers.__anext__()  # the first token; then the reader stops reading a while
        generator = SAMPLED.generator(engine, engine.served["char"])
        await until(lambda: generator.live == 0)  # every token drawn meanwhile
        rest = [answer async for answer in answers]
        engine.close()
        return first, rest

    first, rest = asyncio.run(run())
    answers = [first, *rest]
    assert len(answers) <= 2  # the tokens drawn while the reader was away: one response, not one per tick
    tokens = [np.frombuffer(a.infer_response.raw_output_contents[0], np.int64).tolist() for a in answers]
    assert sum(tokens, []) == expected
    assert [a.infer_response.parameters[FINAL].bool_param for a in answers] == [False] * (len(answers) - 1) + [True]
    text = b"".join(a.infer_response.raw_output_contents[1][4:] for a in answers)
    assert text.decode() == model.vocabulary.decode(expected)


def test_the_generation_metrics_count_what_ran(model):
    metrics = Metrics()
    generator = Generator(model, metrics=metrics, name="char")
    stop_settings = GenerationSettings("greedy", max_tokens=30)
    stop = reference(model, [2, 2], stop_settings)[0][4]  # ends at its first occurrence
    runs = [([1, 2], GenerationSettings("temperature", seed=4, max_tokens=11)), ([2, 2], stop_settings)]

    async def run():
        generations = [generator.submit(np.asarray(p), {"category": CATEGORY[0]}, None, s) for p, s in runs[:1]]
        stopped = GenerationSettings("greedy", max_tokens=30, stop=(stop,))
        generations.append(generator.submit(np.asarray([2, 2]), {"category": CATEGORY[0]}, None, stopped))
        left = generator.submit(np.asarray([5]), {"category": CATEGORY[0]}, None, GenerationSettings(max_tokens=500))
        await asyncio.gather(*(g.result() for g in generations))
        left.cancel()
        await until(lambda: generator.live == 0)
        return [g.tokens for g in (*generations, left)]

    try:
        tokens = asyncio.run(run())
    finally:
        generator.close()

    def value(name, **labels):
        return metrics.value(name, {"model": "char", **labels})

    assert value("rnn_generations_started_total") == 3
    assert value("rnn_generations_finished_total", reason="length") == 1
    assert value("rnn_generations_finished_total", reason="stop") == 1
    assert value("rnn_generations_finished_total", reason="cancelled") == 1
    assert value("rnn_generated_tokens_total") >= sum(map(len, tokens))  # the cancelled one's last may be undelivered
    assert value("rnn_generation_tick_size_count") == generator.ticks
    assert value("rnn_generation_tick_size_bucket", le="+Inf") == generator.ticks
    assert value("rnn_time_to_first_token_seconds_count") == 3
    assert 0 < value("rnn_time_to_first_token_seconds_sum") < WAIT_S
    assert b"rnn_generations_finished_total" in metrics.text()


def test_decoding_drawn_ids_without_checks_equals_decode(model):
    words = model.vocabulary
    ids = np.random.default_rng(5).integers(0, words.size, 300).tolist()
    assert words.decode_drawn(ids) == words.decode(ids) and words.decode_drawn([]) == ""
