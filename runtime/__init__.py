"""Runs exported recurrent step models with onnxruntime. Imports numpy and onnxruntime only.

>>> import runtime
>>> model = runtime.load("artifacts/sine-elman")
>>> ys, state = model.generate(0.9, steps=100)   # (100, 1, 1), closed loop

Every folder loads as one `Model`, whatever its signature (named or token inputs, several
outputs, states of any rank, batch-first sequences, sampled generation): inputs are a dict
``{name: array}`` (a bare array for a model of one input), and a model that samples its next
token takes ``sampler=runtime.Sampler("temperature", temperature=0.8, seed=0)``; where its folder
carries a vocabulary, ``model.vocabulary`` (a `Vocabulary`) turns text into ids and back.
"""

from ._version import __version__
from .bound import BoundStep, State
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
from .loading import LoadOptions, load
from .manifest import CLASSIC_FORMAT_VERSION, FORMAT_VERSION, Manifest, manifest_digest, read_manifest
from .model import Model
from .sampling import Sampler
from .streams import Stream, StreamPool
from .vocabulary import Vocabulary

__all__ = [
    "__version__",
    "load",
    "LoadOptions",
    "Model",
    "BoundStep",
    "State",
    "Stream",
    "StreamPool",
    "Sampler",
    "Vocabulary",
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
