"""Scripts trained step modules with TorchScript, exports them to ONNX, and verifies parity.

Imports torch and onnx; the artifact format it writes is defined in `runtime.manifest`.
"""

from .artifact import export_folder
from .custom import ExportError, export_module
from .verify import VerificationFailed, VerifyReport, verify_folder

__all__ = ["export_folder", "export_module", "verify_folder", "VerifyReport", "VerificationFailed", "ExportError"]
