"""Scripts trained step modules with TorchScript, exports them to ONNX, and verifies parity.

Imports torch and onnx; the artifact format it writes is defined in `runtime.manifest`.
"""

from .artifact import export_folder
from .verify import VerificationFailed, VerifyReport, verify_folder

__all__ = ["export_folder", "verify_folder", "VerifyReport", "VerificationFailed"]
