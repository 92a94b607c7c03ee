"""export.ort_format: every model also in onnxruntime's ORT format, passing the same test data."""

from __future__ import annotations

import numpy as np

import runtime
from export import export_folder
from export.test_data import read_test_data

from ..conftest import COMMITTED
from .conftest import session, tolerance


def test_ort_format_models_pass_the_same_test_data(tmp_path):
    out = export_folder(COMMITTED, tmp_path / "ort", ort_format=True)
    manifest = runtime.read_manifest(out)
    ort_files = {f.role[: -len("_ort")]: f.name for f in manifest.files if f.role.endswith("_ort")}
    assert set(ort_files) == {"step", "sequence_rnn", "sequence_loop", "rollout_rnn", "rollout_loop"}
    for form, name in ort_files.items():
        assert (out / name).read_bytes()[4:8] == b"ORTM"  # the flatbuffer file identifier
        inputs, expected = read_test_data(out / "test_data" / form / "test_data_set_0")
        got = session(out / name).run(list(expected), inputs)
        for value, (key, want) in zip(got, expected.items()):
            np.testing.assert_allclose(value, want, atol=tolerance(form), rtol=0, err_msg=f"{form} {key}")
    runtime.load(out)  # the .ort files are listed and hashed; the runtime runs the .onnx ones
