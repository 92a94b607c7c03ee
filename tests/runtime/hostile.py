"""Builds hostile artifact folders for the runtime's tests: rewritten manifests and step models
made with onnx.helper, re-hashed into the manifest so that only the runtime's own checks stand
between them and a wrong answer."""

from __future__ import annotations

import json
import shutil

import onnx
from onnx import TensorProto, helper

from runtime.manifest import MANIFEST_NAME, Manifest, file_entry, read_manifest, write_manifest

OPSET = 17
FLOAT = TensorProto.FLOAT


def copy_folder(source, target):
    """A private copy of an artifact folder (the session fixtures are read-only by convention)."""
    shutil.copytree(source, target)
    return target


def rehash(folder, extra=()):
    """Rewrites the manifest with fresh hashes of the listed files plus ``extra`` (name, role)."""
    manifest = read_manifest(folder)
    files = [file_entry(folder, f.name, f.role) for f in manifest.files]
    files += [file_entry(folder, name, role) for name, role in extra]
    write_manifest(folder, Manifest(**{**manifest.__dict__, "files": tuple(files)}))


def rewrite_manifest_json(folder, change):
    """Applies ``change`` to manifest.json's parsed JSON and writes it back as it is, unvalidated
    (NaN and all): a manifest no exporter would write."""
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def value_info(name, shape, elem_type=FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def step_model(
    nodes,
    *,
    y_shape=("batch", 1),
    h_out_shape=("batch", 6),
    y_type=FLOAT,
    initializers=(),
    input_names=("x", "h"),
    output_names=("y", "h_out"),
):
    """A step model with the exported seed model's interface (x (batch, 1), h (batch, 6) -> y,
    h_out) whose body is ``nodes``; the output declarations can be set to break the contract."""
    graph = helper.make_graph(
        list(nodes),
        "hostile_step",
        [value_info(input_names[0], ["batch", 1]), value_info(input_names[1], ["batch", 6])],
        [value_info(output_names[0], list(y_shape), y_type), value_info(output_names[1], list(h_out_shape))],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def install(folder, model, name="step.onnx"):
    """Writes ``model`` as ``folder/name`` and re-hashes the manifest so that the folder loads."""
    onnx.save(model, str(folder / name))
    rehash(folder)
    return folder


def endless_loop_step():
    """A step model whose state goes through a Loop of 2**63-1 iterations: a run never ends."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [value_info("i", [], TensorProto.INT64), value_info("cond_in", [], TensorProto.BOOL), value_info("v_in", None)],
        [value_info("cond_out", [], TensorProto.BOOL), value_info("v_out", None)],
    )
    return step_model(
        [
            helper.make_node("Constant", [], ["n"], value=helper.make_tensor("n", TensorProto.INT64, [], [2**63 - 1])),
            helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
            helper.make_node("Loop", ["n", "c", "h"], ["h_out"], body=body),
            helper.make_node("Identity", ["x"], ["y"]),
        ]
    )


def expanding_step(rows):
    """A step model that expands h to (rows, 6) float32 (rows * 24 bytes) before reducing it."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [rows, 6])
    return step_model(
        [
            helper.make_node("Constant", [], ["shape"], value=shape),
            helper.make_node("Expand", ["h", "shape"], ["big"]),
            helper.make_node("ReduceMax", ["big"], ["top"], axes=[0], keepdims=1),
            helper.make_node("Add", ["h", "top"], ["h_out"]),  # (batch, 6): what the contract asks
            helper.make_node("Identity", ["x"], ["y"]),
        ]
    )


def _constant(name, values, elem_type=TensorProto.INT64, dims=(1,)):
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, elem_type, list(dims), values))


def first_row_step(h_out_shape=("batch", 6)):
    """A step model whose new state is h's first row only, (1, 6) whatever the batch, through a
    Slice whose end comes from x's values (so no shape inference can tell); it declares
    ``h_out_shape``. y is x."""
    return step_model(
        [
            _constant("zero", [0.0], FLOAT, ()),
            _constant("one", [1.0], FLOAT, ()),
            helper.make_node("Mul", ["x", "zero"], ["x0"]),
            helper.make_node("ReduceMax", ["x0"], ["m"], keepdims=0),
            helper.make_node("Add", ["m", "one"], ["k"]),
            helper.make_node("Cast", ["k"], ["k64"], to=TensorProto.INT64),
            _constant("shape1", [1]),
            helper.make_node("Reshape", ["k64", "shape1"], ["ends"]),
            _constant("starts", [0]),
            _constant("axes", [0]),
            helper.make_node("Slice", ["h", "starts", "ends", "axes"], ["h_out"]),
            helper.make_node("Identity", ["x"], ["y"]),
        ],
        h_out_shape=h_out_shape,
    )


def batch_mean_step(h_out_shape=("batch", 6)):
    """A step model whose new state is the mean over the batch, (1, 6) whatever the batch (and
    onnxruntime's shape inference knows it), while it declares ``h_out_shape``; y is x."""
    return step_model(
        [
            helper.make_node("ReduceMean", ["h"], ["h_out"], axes=[0], keepdims=1),
            helper.make_node("Identity", ["x"], ["y"]),
        ],
        h_out_shape=h_out_shape,
    )


def folding_bomb_step(size):
    """A step model whose only heavy work is on constants: Expand(1.0, [size, size]) squared by
    MatMul, times zero. Constant folding would compute it while the session is built, where no
    run timeout reaches (size**3 multiply-adds); the runtime builds sessions without folding."""
    one = helper.make_tensor("one", FLOAT, [1, 1], [1.0])
    shape = helper.make_tensor("square", TensorProto.INT64, [2], [size, size])
    zero = helper.make_tensor("zero", FLOAT, [1, 1], [0.0])
    return step_model(
        [
            helper.make_node("Constant", [], ["one"], value=one),
            helper.make_node("Constant", [], ["square"], value=shape),
            helper.make_node("Constant", [], ["zero"], value=zero),
            helper.make_node("Expand", ["one", "square"], ["big"]),
            helper.make_node("MatMul", ["big", "big"], ["product"]),
            helper.make_node("ReduceSum", ["product"], ["total"], keepdims=1),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["x", "nothing"], ["y"]),
            helper.make_node("Identity", ["h"], ["h_out"]),
        ]
    )
