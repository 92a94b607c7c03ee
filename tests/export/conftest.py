"""Helpers of the export tests that run the self-check test data."""

from __future__ import annotations

import onnxruntime as ort

from export.verify import ROLLOUT_ATOL, SEQUENCE_ATOL


def tolerance(form):
    return ROLLOUT_ATOL if form.startswith("rollout") else SEQUENCE_ATOL


def session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
