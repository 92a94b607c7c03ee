"""`rnn serve`: artifact folders over the Open Inference Protocol (KServe v2, as Triton speaks
it), HTTP and gRPC, with server-held sequences and dynamic batching. Needs the ``serve`` extra
(``pip install 'rnn-toolkit[serve]'``); the runtime never imports this package."""

from . import generate_calls  # noqa: F401  (registers sampled NAME-generate with core.plug)
from .core import Engine, Limits, Settings, artifact_folders
from .protocol import InferRequest, InferResponse
from .server import Server

__all__ = ["Server", "Engine", "Settings", "Limits", "InferRequest", "InferResponse", "artifact_folders"]
