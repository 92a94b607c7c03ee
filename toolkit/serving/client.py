"""`SequenceClient`: one sequence of a model served by `rnn serve` (one process or Ray replicas),
driven through tritonclient's asyncio clients (HTTP or gRPC), holding the last acknowledged
state so that the sequence survives the loss of the server process or replica that held it.

The protocol (any client can speak it; this is the reference):

- every request of the sequence sends ``sequence_id`` and ``sequence_version`` (the
  ``sequence_version`` of the last answer) and asks for every output; a start sends a fresh
  random version as the base (the server counts on from it), so a copy of the sequence left on
  another replica by an earlier start can never match by chance of an equal count;
- every answer carries the step's output, the new state (the model's state outputs, in the order
  of its state inputs) and ``sequence_version``: the client keeps them as its acknowledged state;
- an answer of 409 (gRPC ABORTED: the server does not hold that version of the sequence), 503
  (gRPC UNAVAILABLE: e.g. the replica running the request died), gRPC RESOURCE_EXHAUSTED (too
  many connections) or a lost connection is followed by the same request with
  ``sequence_start``, the acknowledged state as the state inputs and a fresh base version:
  wherever it lands, the sequence goes on from the state the client last saw.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import numpy as np

RETRY_STATUSES = {"409", "503", "StatusCode.ABORTED", "StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"}
try:  # tritonclient.http.aio's transport
    from aiohttp import ClientError as _HttpError
except ImportError:  # pragma: no cover (gRPC only)
    _HttpError = OSError
CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, _HttpError)
VERSION_BITS = 62  # a start's random base version (the server takes any below 2**63 - 1)


def _state_count(metadata: dict[str, Any]) -> int:
    """How many of a model's metadata tensors are states: those its parameters give a batch axis
    (`toolkit.serving.tensors.model_parameters`), else every input after the first."""
    parameters = metadata.get("parameters") or {}
    named = [item for item in metadata["inputs"] if f"batch_axis.{item['name']}" in parameters]
    return len(named) if parameters else len(metadata["inputs"]) - 1


class SequenceLost(Exception):
    """The sequence could not be continued within the retries."""


class SequenceClient:
    """One sequence of ``model`` (its step name, ``NAME``) through ``client``, a
    ``tritonclient.http.aio`` or ``tritonclient.grpc.aio`` InferenceServerClient. Any signature:
    the model's inputs by name (token ids INT64, values FP32), its outputs, any number of states.

    ``metadata``: the model's metadata (``await client.get_model_metadata(model)``; for gRPC
    pass ``as_json=True``), read once and shared by the sequences of a model. Its last tensors are
    the states: the HTTP metadata of a model beyond the classic signature names them in its
    ``parameters`` (``batch_axis.NAME``); otherwise ``states`` says how many there are (default:
    every input after the first, the classic signature)."""

    def __init__(
        self,
        client: Any,
        model: str,
        sequence_id: int | str,
        metadata: dict[str, Any],
        *,
        retries: int = 20,
        backoff_s: float = 0.05,
        headers: dict[str, str] | None = None,
        states: int | None = None,
    ) -> None:
        self.client, self.model, self.sequence_id = client, model, sequence_id
        self.retries, self.backoff_s, self.headers = retries, backoff_s, headers
        self._grpc = type(client).__module__.startswith("tritonclient.grpc")
        if self._grpc:
            import tritonclient.grpc as triton
        else:
            import tritonclient.http as triton
        self._triton = triton
        inputs, outputs = metadata["inputs"], metadata["outputs"]
        count = _state_count(metadata) if states is None else states
        self.input_names = [item["name"] for item in inputs[: len(inputs) - count]]
        self.datatypes = {item["name"]: item["datatype"] for item in inputs}
        self.state_inputs = [item["name"] for item in inputs[len(inputs) - count :]]
        self.output_names = [item["name"] for item in outputs[: len(outputs) - count]]
        self.state_outputs = [item["name"] for item in outputs[len(outputs) - count :]]
        self.input_name, self.output_name = self.input_names[0], self.output_names[0]
        self.state: list[np.ndarray] | None = None  # the last acknowledged state (None: not started)
        self.version = 0
        self.recoveries = 0  # requests resent from the acknowledged state

    def _request(self, x: Any, start: bool) -> tuple[list, list]:
        triton = self._triton
        given = x if isinstance(x, dict) else {self.input_name: x}
        tensors = [(name, given[name]) for name in self.input_names]
        if start and self.state is not None:
            tensors += list(zip(self.state_inputs, self.state))
        inputs = []
        for name, array in tensors:
            datatype = self.datatypes[name]
            tensor = triton.InferInput(name, list(np.shape(array)), datatype)
            tensor.set_data_from_numpy(
                np.ascontiguousarray(array, dtype=np.int64 if datatype == "INT64" else np.float32)
            )
            inputs.append(tensor)
        outputs = [triton.InferRequestedOutput(name) for name in (*self.output_names, *self.state_outputs)]
        return inputs, outputs

    def _answered_version(self, result: Any) -> int:
        response = result.get_response()
        if self._grpc:
            return int(response.parameters["sequence_version"].int64_param)
        return int(response["parameters"]["sequence_version"])

    async def step(self, x: Any, *, end: bool = False) -> Any:
        """One step: x the model's inputs at batch 1 (an array of shape (1, input_size) for a model
        of one input, else a dict by name; token ids (1,) int64); returns its output at batch 1 (a
        dict by name for several outputs). After a step with ``end`` the sequence is over: the
        next step starts it again from the initial state. `SequenceLost` when the retries are spent."""
        from tritonclient.utils import InferenceServerException

        start = self.state is None
        error: BaseException | None = None
        for attempt in range(self.retries + 1):
            if start:
                self.version = secrets.randbits(VERSION_BITS)
            inputs, outputs = self._request(x, start)
            try:
                result = await self.client.infer(
                    self.model,
                    inputs,
                    outputs=outputs,
                    sequence_id=self.sequence_id,
                    sequence_start=start,
                    sequence_end=end,
                    parameters={"sequence_version": self.version},
                    headers=self.headers,
                )
            except InferenceServerException as failure:
                if str(failure.status()) not in RETRY_STATUSES:
                    raise
                error = failure
            except CONNECTION_ERRORS as failure:  # a lost connection or a timeout
                error = failure
            else:
                ys = {name: result.as_numpy(name) for name in self.output_names}
                y = ys[self.output_name] if len(ys) == 1 else ys
                if end:  # over: the next step starts anew
                    self.state, self.version = None, 0
                else:
                    self.state = [result.as_numpy(name) for name in self.state_outputs]
                    self.version = self._answered_version(result)
                return y
            if attempt < self.retries:
                start = True  # resend from the acknowledged state (the initial one if none yet)
                self.recoveries += 1
                await asyncio.sleep(self.backoff_s * min(attempt, 10))
        raise SequenceLost(
            f"sequence {self.sequence_id} of model '{self.model}' could not go on after {self.retries} resends"
        ) from error
