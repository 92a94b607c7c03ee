"""The typed errors a user of the toolkit can meet, every package's in one place. Torch-free.

The CLI turns any `ToolkitError` into one line and exit code 2 (a failed verification: exit 1).
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
    """A valid model or call that this part of the runtime does not run (for example a model with
    named or token inputs in a `StreamPool`, which serves the classic signature only)."""


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

    ``report`` is the `export.verify.VerifyReport` with every comparison."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report
