"""Finds the external data files an ONNX model refers to, reading the protobuf wire format
directly (the runtime does not depend on the onnx package).

Walks ModelProto.graph and .functions, every GraphProto's initializers, sparse initializers and
node attributes (tensors and subgraphs, so Loop/Scan/If bodies too), and returns the
``location`` of every tensor stored outside the file.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import ArtifactError

MAX_DEPTH = 64  # nested subgraphs deeper than this are not a model we wrote

# Field numbers from onnx.proto (stable since IR version 3).
MODEL_GRAPH, MODEL_FUNCTIONS = 7, 25
FUNCTION_NODE = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER = 1, 5, 15
NODE_ATTRIBUTE = 5
ATTRIBUTE_T, ATTRIBUTE_G, ATTRIBUTE_TENSORS, ATTRIBUTE_GRAPHS = 5, 6, 10, 11
ATTRIBUTE_SPARSE_TENSOR, ATTRIBUTE_SPARSE_TENSORS = 22, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14
ENTRY_KEY, ENTRY_VALUE = 1, 2
EXTERNAL = 1


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): varints as int, length-delimited as memoryview."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 1:
            value, position = None, position + 8
        elif wire == 5:
            value, position = None, position + 4
        elif wire == 2:
            length, position = _varint(data, position)
            value, position = data[position : position + length], position + length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if position > len(data):
            raise ValueError("truncated field")
        yield field, wire, value


def _tensor(data: memoryview, found: list[str]) -> None:
    location, external = None, False
    for field, wire, value in _fields(data):
        if field == TENSOR_DATA_LOCATION and wire == 0:
            external = external or value == EXTERNAL
        elif field == TENSOR_EXTERNAL_DATA and wire == 2:
            external = True
            key = entry = None
            for sub_field, sub_wire, sub_value in _fields(value):
                if sub_wire == 2 and sub_field == ENTRY_KEY:
                    key = bytes(sub_value).decode("utf-8", "replace")
                elif sub_wire == 2 and sub_field == ENTRY_VALUE:
                    entry = bytes(sub_value).decode("utf-8", "replace")
            if key == "location":
                location = entry
    if external:
        found.append(location if location is not None else "")


def _sparse(data: memoryview, found: list[str]) -> None:
    for field, wire, value in _fields(data):
        if wire == 2 and field in (SPARSE_VALUES, SPARSE_INDICES):
            _tensor(value, found)


def _graph(data: memoryview, found: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("subgraphs nested too deeply")
    for field, wire, value in _fields(data):
        if wire != 2:
            continue
        if field == GRAPH_INITIALIZER:
            _tensor(value, found)
        elif field == GRAPH_SPARSE_INITIALIZER:
            _sparse(value, found)
        elif field == GRAPH_NODE:
            _node(value, found, depth)


def _node(data: memoryview, found: list[str], depth: int) -> None:
    for field, wire, value in _fields(data):
        if field != NODE_ATTRIBUTE or wire != 2:
            continue
        for sub_field, sub_wire, sub_value in _fields(value):
            if sub_wire != 2:
                continue
            if sub_field in (ATTRIBUTE_T, ATTRIBUTE_TENSORS):
                _tensor(sub_value, found)
            elif sub_field in (ATTRIBUTE_SPARSE_TENSOR, ATTRIBUTE_SPARSE_TENSORS):
                _sparse(sub_value, found)
            elif sub_field in (ATTRIBUTE_G, ATTRIBUTE_GRAPHS):
                _graph(sub_value, found, depth + 1)


def external_data_locations(model_bytes: bytes, name: str = "model") -> list[str]:
    """Every external data ``location`` the serialized ModelProto refers to ('' if one has none).

    Raises ArtifactError if the bytes are not a well-formed protobuf message.
    """
    found: list[str] = []
    try:
        for field, wire, value in _fields(memoryview(model_bytes)):
            if wire != 2:
                continue
            if field == MODEL_GRAPH:
                _graph(value, found, 0)
            elif field == MODEL_FUNCTIONS:
                for sub_field, sub_wire, sub_value in _fields(value):
                    if sub_field == FUNCTION_NODE and sub_wire == 2:
                        _node(sub_value, found, 0)
    except ValueError as error:
        raise ArtifactError(f"{name} is not a valid ONNX file ({error})") from None
    return found
