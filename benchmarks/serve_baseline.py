"""The serving benchmark's baseline: what a user writes by hand. A FastAPI endpoint that parses the
KServe v2 JSON body with pydantic, keeps each sequence's state in a dict and calls
`onnxruntime.InferenceSession.run` once per request. Not part of the toolkit."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

STEP_FILE = "step.onnx"
HIDDEN_SIZE = 6  # the sine model's h (1, 6); a hand-written server hard-codes it like this


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


def create_app(folder: str | os.PathLike) -> FastAPI:
    """The baseline app serving ``folder``'s step model as ``/v2/models/{name}/infer``.

    One intra-op thread, as our server uses (onnxruntime's default, one per core, spins threads
    that fight the load generator for the two cores and is slower for a model this small)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(Path(folder) / STEP_FILE), options, providers=["CPUExecutionProvider"])
    states: dict[int, np.ndarray] = {}
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready():
        return {}

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, body: InferBody):
        sequence = body.parameters
        if sequence.sequence_start:
            states[sequence.sequence_id] = np.zeros((1, HIDDEN_SIZE), np.float32)
        h = states.get(sequence.sequence_id)
        if h is None:
            raise HTTPException(400, f"no live sequence {sequence.sequence_id}")
        x = np.asarray(body.inputs[0].data, np.float32).reshape(1, 1)
        y, h_out = session.run(["y", "h_out"], {"x": x, "h": h})
        if sequence.sequence_end:
            del states[sequence.sequence_id]
        else:
            states[sequence.sequence_id] = h_out
        return {
            "model_name": model_name,
            "id": body.id or "",
            "outputs": [
                {"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()},
                {"name": "h_out", "datatype": "FP32", "shape": list(h_out.shape), "data": h_out.ravel().tolist()},
            ],
        }

    return app


def serve(folder: str | os.PathLike, sock: socket.socket) -> None:
    """Serves the baseline on a listening socket with the settings of `rnn serve`'s HTTP front:
    uvicorn, httptools, uvloop, no access log, one worker."""
    import uvicorn

    config = uvicorn.Config(
        create_app(folder),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        lifespan="off",
        workers=1,
    )
    uvicorn.Server(config).run(sockets=[sock])
