"""The typed errors a user of the toolkit can meet, every package's in one place. Torch-free.

The tree, and what each error becomes at the edges (the CLI: `toolkit.cli.main`; the server:
`toolkit.serving.protocol.status_of` maps to an HTTP status, and `toolkit.serving.grpc_api` maps
that status to a gRPC code):

    ToolkitError                       CLI: one line, exit 2      server: 500 / INTERNAL
    |-- ShapeError      (ValueError)   exit 2                     400 / INVALID_ARGUMENT
    |-- DtypeError      (TypeError)    exit 2                     400 / INVALID_ARGUMENT
    |-- InputValueError (ValueError)   exit 2                     400 / INVALID_ARGUMENT
    |-- UnsupportedError (ValueError)  exit 2                     500 / INTERNAL (a server bug)
    |-- ArtifactError                  exit 2                     at load: "not ready" (503); in a run: 500
    |   |-- ManifestError              exit 2                     as ArtifactError
    |   |   `-- VersionError           exit 2                     as ArtifactError
    |   `-- IntegrityError             exit 2                     as ArtifactError
    |-- RunTimeoutError                exit 2                     500 / INTERNAL
    |-- DeviceError                    exit 2                     the model is "not ready"
    |-- DataError                      exit 2                     (CLI only: data files)
    |-- MissingDependencyError         exit 2                     (CLI only: an extra not installed)
    |-- ExportError                    exit 2                     (export only)
    `-- VerificationFailed             exit 1: the report is printed, the tolerance failed

The server's own refusals (`toolkit.serving.protocol.ServeError`: 400, 401, 404, 409 sequence
version, 413 too large, 415 encoding, 503 unavailable) are not ToolkitErrors: they are about the
request, not the model. A 5xx is only ever the server's own failure. Raise the narrowest class that
says what went wrong; its message says what was expected and what came, in one line.
"""


class ToolkitError(Exception):
    """Base of every error the toolkit raises for a user's mistake or a bad artifact."""


class ShapeError(ToolkitError, ValueError):
    """An array has the wrong rank or shape."""


class DtypeError(ToolkitError, TypeError):
    """An input has a type or dtype that cannot be converted safely to float32."""


class InputValueError(ToolkitError, ValueError):
    """An input has the right shape and type but a value that is refused (NaN, steps < 1, ...)."""


class UnsupportedError(ToolkitError, ValueError):
    """A valid model or call that this part of the toolkit does not run (for example a command
    that serves only some signatures, such as a benchmark written for the classic one)."""


class ArtifactError(ToolkitError):
    """An artifact folder or one of its files is missing or unreadable."""


class ManifestError(ArtifactError):
    """manifest.json is not valid: not JSON, missing fields, wrong types."""


class VersionError(ManifestError):
    """The manifest's format version is not one this runtime reads."""


class IntegrityError(ArtifactError):
    """A file's size or sha256 differs from what the manifest records."""


class RunTimeoutError(ToolkitError):
    """An onnxruntime run took longer than the model's ``run_timeout`` and was stopped."""


class DeviceError(ToolkitError):
    """The requested device cannot be used (for example CUDA without onnxruntime-gpu)."""


class DataError(ToolkitError):
    """A data file given by the user cannot be read as a one-column series."""


class MissingDependencyError(ToolkitError):
    """A command needs a package that is not installed (for example torch)."""


class ExportError(ToolkitError):
    """A module cannot be scripted or exported; the message names the construct that failed."""


class VerificationFailed(ToolkitError):
    """At least one exported form disagrees with eager PyTorch beyond its tolerance.

    ``report`` is the `export.verify_report.VerifyReport` with every comparison."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report
