"""Converts exported ONNX models to onnxruntime's ORT format, for mobile and minimal builds."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from runtime.manifest import form_file_name


def convert_to_ort(folder: str | os.PathLike, models: dict[str, str]) -> dict[str, str]:
    """Writes ``<form>.ort`` beside each ``{form: onnx name}``; returns {form: ort name}.

    Uses basic graph optimizations only, as onnxruntime's own converter does for portable ORT
    files (extended optimizations may insert kernels a minimal build lacks).
    """
    written = {}
    for form, name in models.items():
        target = Path(folder) / form_file_name(form, ".ort")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        options.add_session_config_entry("session.save_model_format", "ORT")
        options.log_severity_level = 3
        ort.InferenceSession(str(Path(folder) / name), options, providers=["CPUExecutionProvider"])
        written[form] = target.name
    return written


def open_ort(path: str | os.PathLike) -> ort.InferenceSession:
    """An onnxruntime CPU session of the ORT-format model at ``path`` (how a deployment opens it)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
