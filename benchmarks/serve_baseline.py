"""The serving benchmarks' baseline: what a user writes by hand. FastAPI endpoints that parse the
request body with pydantic, keep each sequence's state in a dict and call
`onnxruntime.InferenceSession.run` of the step model once per step. Not part of the toolkit.

- ``create_app``: one step per request (`/v2/models/{name}/infer`, KServe v2 JSON), for the seed's
  sine model (float x) and for a token model (int64 token ids): `benchmarks/serve.py`.
- ``create_token_app``: sampled text generation streamed as server-sent events
  (`/v2/models/{name}/generate_stream`, the request and event JSON of Triton's generate extension):
  a `StreamingResponse` over a generator that runs the prompt and every new token through the step
  model and samples the next token in numpy (softmax with a temperature, ``Generator.choice``):
  `benchmarks/token_streaming.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

STEP_FILE = "step.onnx"
# What a hand-written server hard-codes about its model: the input, the state's shape at batch 1,
# the outputs. The sine model's h (1, 6); the character GRU's h (layers 2, batch 1, hidden 64).
SINE = {"input": "x", "dtype": np.float32, "shape": (1, 1), "state": (1, 6), "outputs": ("y", "h_out")}
CHAR = {"input": "char", "dtype": np.int64, "shape": (1,), "state": (2, 1, 64), "outputs": ("logits", "h_out")}
MODELS = {"sine": SINE, "char": CHAR}


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class Parameters(BaseModel):
    sequence_id: int
    sequence_start: bool = False
    sequence_end: bool = False


class InferBody(BaseModel):
    inputs: list[Tensor]
    parameters: Parameters
    id: str | None = None


class GenerateParameters(BaseModel):
    strategy: str = "temperature"  # "temperature" or "greedy"
    temperature: float = 1.0
    seed: int | None = None
    max_tokens: int = 100


class GenerateBody(BaseModel):
    text_input: str
    parameters: GenerateParameters = GenerateParameters()


def step_session(folder: str | os.PathLike) -> ort.InferenceSession:
    """The step model on one intra-op thread, as our server uses (onnxruntime's default, one per
    core, spins threads that fight the load generator for the two cores and is slower for a model
    this small)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(Path(folder) / STEP_FILE), options, providers=["CPUExecutionProvider"])


def new_app() -> FastAPI:
    """A FastAPI app with the readiness route the benchmarks wait for."""
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready():
        return {}

    return app


def create_app(folder: str | os.PathLike, model: str = "sine") -> FastAPI:
    """The baseline app serving ``folder``'s step model as ``/v2/models/{name}/infer``; ``model``
    says which hard-coded shapes it has (`MODELS`)."""
    spec = MODELS[model]
    session = step_session(folder)
    input_name, dtype, shape, state_shape = spec["input"], spec["dtype"], spec["shape"], spec["state"]
    output_names = list(spec["outputs"])
    states: dict[int, np.ndarray] = {}
    app = new_app()

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, body: InferBody):
        sequence = body.parameters
        if sequence.sequence_start:
            states[sequence.sequence_id] = np.zeros(state_shape, np.float32)
        h = states.get(sequence.sequence_id)
        if h is None:
            raise HTTPException(400, f"no live sequence {sequence.sequence_id}")
        x = np.asarray(body.inputs[0].data, dtype).reshape(shape)
        y, h_out = session.run(output_names, {input_name: x, "h": h})
        if sequence.sequence_end:
            del states[sequence.sequence_id]
        else:
            states[sequence.sequence_id] = h_out
        return {
            "model_name": model_name,
            "id": body.id or "",
            "outputs": [
                {"name": name, "datatype": "FP32", "shape": list(value.shape), "data": value.ravel().tolist()}
                for name, value in zip(output_names, (y, h_out))
            ],
        }

    return app


def create_token_app(folder: str | os.PathLike, vocabulary: list[str], threaded: bool = False) -> FastAPI:
    """The baseline app streaming sampled text from ``folder``'s character model (`CHAR`'s shapes;
    one character per token of ``vocabulary``) as ``/v2/models/{name}/generate_stream``.

    The events come from a plain generator. By default an async generator walks it on the event
    loop, yielding to the other streams after each token (``await asyncio.sleep(0)``); with
    ``threaded`` the plain generator goes to the `StreamingResponse` as it is, and Starlette runs
    each of its steps in its thread pool (what FastAPI's documentation suggests for blocking code)."""
    session = step_session(folder)
    index = {token: at for at, token in enumerate(vocabulary)}
    app = new_app()

    @app.post("/v2/models/{model_name}/generate_stream")
    async def generate_stream(model_name: str, body: GenerateBody):
        try:
            prompt = [index[character] for character in body.text_input]
        except KeyError as error:
            raise HTTPException(400, f"no token for {error.args[0]!r}") from None
        if not prompt:
            raise HTTPException(400, "an empty text_input")
        settings = body.parameters
        rng = np.random.default_rng(settings.seed)

        def events():
            h = np.zeros(CHAR["state"], np.float32)
            for token in prompt:  # the prompt, one step per character
                logits, h = session.run(None, {"char": np.array([token], np.int64), "h": h})
            for produced in range(settings.max_tokens):
                if settings.strategy == "greedy":
                    token = int(np.argmax(logits[0]))
                else:
                    z = logits[0].astype(np.float64) / settings.temperature
                    p = np.exp(z - z.max())
                    token = int(rng.choice(len(vocabulary), p=p / p.sum()))
                event = {
                    "model_name": model_name,
                    "model_version": "1",
                    "tokens": [token],
                    "text_output": vocabulary[token],
                    "finish_reason": "length" if produced + 1 == settings.max_tokens else None,
                }
                yield f"data: {json.dumps(event)}\n\n"
                if produced + 1 < settings.max_tokens:
                    logits, h = session.run(None, {"char": np.array([token], np.int64), "h": h})

        async def interleaved():
            for event in events():
                yield event
                await asyncio.sleep(0)  # let the other streams (and new requests) in between tokens

        return StreamingResponse(events() if threaded else interleaved(), media_type="text/event-stream")

    return app


def serve(
    folder: str | os.PathLike,
    sock: socket.socket,
    model: str = "sine",
    vocabulary: list[str] | None = None,
    threaded: bool = False,
) -> None:
    """Serves the baseline on a listening socket with the settings of `rnn serve`'s HTTP front:
    uvicorn, httptools, uvloop, no access log, one worker. With ``vocabulary`` the token streaming
    app (``threaded``: its generator in Starlette's thread pool), else the step app for ``model``."""
    import uvicorn

    app = create_app(folder, model) if vocabulary is None else create_token_app(folder, vocabulary, threaded)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        lifespan="off",
        workers=1,
    )
    uvicorn.Server(config).run(sockets=[sock])
