"""Runs exported recurrent step models with onnxruntime. Imports numpy and onnxruntime only.

>>> import runtime
>>> model = runtime.load("artifacts/sine-elman")
>>> ys, state = model.generate(0.9, steps=100)   # (100, 1, 1), closed loop

A format 2 folder (named or token inputs, several outputs, states of any rank, batch-first
sequences, sampled generation) loads as a `GeneralModel` (``model.classic`` is False): inputs
are a dict ``{name: array}``, and a model that samples its next token takes
``sampler=runtime.Sampler("temperature", temperature=0.8, seed=0)``.
"""

from ._version import __version__
from .errors import (
    ArtifactError,
    DataError,
    DeviceError,
    DtypeError,
    ExportError,
    InputValueError,
    IntegrityError,
    ManifestError,
    MissingDependencyError,
    RunTimeoutError,
    ShapeError,
    ToolkitError,
    UnsupportedError,
    VerificationFailed,
    VersionError,
)
from .manifest import CLASSIC_FORMAT_VERSION, FORMAT_VERSION, Manifest, manifest_digest, read_manifest
from .model import BatchFirstModel, BoundStep, GeneralModel, Model, State, load
from .sampling import Sampler
from .streams import GeneralStream, GeneralStreamPool, Stream, StreamPool

__all__ = [
    "__version__",
    "load",
    "Model",
    "GeneralModel",
    "BatchFirstModel",
    "BoundStep",
    "State",
    "Stream",
    "StreamPool",
    "GeneralStream",
    "GeneralStreamPool",
    "Sampler",
    "Manifest",
    "read_manifest",
    "manifest_digest",
    "CLASSIC_FORMAT_VERSION",
    "FORMAT_VERSION",
    "ToolkitError",
    "UnsupportedError",
    "ShapeError",
    "DtypeError",
    "InputValueError",
    "ArtifactError",
    "ManifestError",
    "VersionError",
    "IntegrityError",
    "RunTimeoutError",
    "DeviceError",
    "DataError",
    "MissingDependencyError",
    "ExportError",
    "VerificationFailed",
]
