"""toolkit.serving.protocol: what both fronts share lives in one module, neither front imports the
other, and every failure maps to one status."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("grpc")
pytest.importorskip("starlette")

import runtime  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from toolkit.serving.protocol import (  # noqa: E402
    BadRequest,
    Conflict,
    NotFound,
    ServeError,
    TensorMetadata,
    TooLarge,
    Unauthorized,
    Unavailable,
    callers_error,
    check_shape,
    status_of,
)


def test_each_front_imports_the_protocol_not_the_other_front():
    """In a fresh interpreter: the gRPC front loads without the HTTP front, and the HTTP front
    without the gRPC front; both hold the protocol's own ServeError."""
    code = (
        "import sys, importlib; front, other = sys.argv[1:]; module = importlib.import_module(front); "
        "from toolkit.serving import protocol; "
        "assert other not in sys.modules, other; assert module.ServeError is protocol.ServeError; print('ok')"
    )
    for front, other in (
        ("toolkit.serving.grpc_api", "toolkit.serving.http_api"),
        ("toolkit.serving.http_api", "toolkit.serving.grpc_api"),
    ):
        result = subprocess.run(
            [sys.executable, "-c", code, front, other], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_every_failure_maps_to_one_status():
    statuses = {BadRequest: 400, Unauthorized: 401, NotFound: 404, Conflict: 409, TooLarge: 413, Unavailable: 503}
    for kind, status in statuses.items():
        assert status_of(kind("no")) == status and issubclass(kind, ServeError)
    for error in (runtime.ShapeError("s"), runtime.DtypeError("d"), runtime.InputValueError("v")):
        assert callers_error(error) and status_of(error) == 400  # the caller's input, refused by the runtime
    for error in (runtime.ArtifactError("a"), runtime.RunTimeoutError("t"), RuntimeError("r")):
        assert not callers_error(error) and status_of(error) == 500  # the server's own failure
    assert str(BadRequest("two\n  lines")) == "two lines"


def test_tensor_metadata_and_shape_checks():
    spec = TensorMetadata("x", "FP32", (-1, 1), optional=True)
    assert spec.metadata() == {"name": "x", "datatype": "FP32", "shape": [-1, 1]}
    assert check_shape("x", (3, 4), 12) == 12 and check_shape("x", (0, 5), 12) == 0
    with pytest.raises(TooLarge, match="13 elements, the limit is 12"):
        check_shape("x", (13,), 12)
    with pytest.raises(BadRequest, match="sizes >= 0"):
        check_shape("x", (2, -1), 12)
