"""Scripts trained step modules with TorchScript, exports them to ONNX, and verifies parity.

Imports torch and onnx; the artifact format it writes is defined in `runtime.manifest`, its
typed errors (ExportError, VerificationFailed) in `runtime.errors`.
"""

from runtime.errors import ExportError, VerificationFailed

from .artifact import export_folder
from .custom import export_module
from .verify import VerifyReport, verify_folder

__all__ = ["export_folder", "export_module", "verify_folder", "VerifyReport", "VerificationFailed", "ExportError"]
