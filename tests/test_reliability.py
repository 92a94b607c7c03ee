"""Reliability and security: hostile artifact folders, killed writers, threads, property tests."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import external_data_helper

import runtime
from runtime.errors import ArtifactError, IntegrityError, ManifestError, ToolkitError
from runtime.manifest import Manifest, file_entry, read_manifest, write_manifest
from runtime.onnx_refs import external_data_locations

from .conftest import kill_inside


def rehash(folder, extra=()):
    """Rewrites the manifest with fresh hashes of the listed files plus ``extra`` (name, role)."""
    manifest = read_manifest(folder)
    files = [file_entry(folder, f.name, f.role) for f in manifest.files]
    files += [file_entry(folder, name, role) for name, role in extra]
    write_manifest(folder, Manifest(**{**manifest.__dict__, "files": tuple(files)}))


def to_external(folder, location="step.data"):
    """Moves step.onnx's weights into an external data file named ``location``."""
    model = onnx.load(str(folder / "step.onnx"))
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True,
                                                        location="step.data", size_threshold=0)
    onnx.save(model, str(folder / "step.onnx"))
    if location != "step.data":
        model = onnx.load(str(folder / "step.onnx"), load_external_data=False)
        for tensor in external_data_helper._get_all_tensors(model):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, str(folder / "step.onnx"))


# ---- external data ---------------------------------------------------------------------------

def test_the_walker_finds_external_data_in_subgraphs_too(exported_folder):
    plain = (exported_folder / "rollout_loop.onnx").read_bytes()
    assert external_data_locations(plain) == []
    model = onnx.load(str(exported_folder / "rollout_loop.onnx"))
    external_data_helper.convert_model_to_external_data(model, location="loop.data", size_threshold=0)
    found = external_data_locations(model.SerializeToString())
    assert found and set(found) == {"loop.data"}


def test_external_data_listed_in_the_manifest_loads(exported_copy):
    to_external(exported_copy)
    rehash(exported_copy, extra=[("step.data", "external_data")])
    model = runtime.load(exported_copy)
    assert model.step(0.5)[0].shape == (1, 1)


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.data", "sub/step.data", "unlisted.data"])
def test_external_data_outside_the_manifest_is_refused(exported_copy, location):
    to_external(exported_copy, location)
    (exported_copy / "step.data").rename(exported_copy / "unlisted.data")
    (exported_copy.parent / "outside.data").write_bytes((exported_copy / "unlisted.data").read_bytes())
    rehash(exported_copy)
    with pytest.raises(IntegrityError, match="not a file listed"):
        runtime.load(exported_copy)


def test_external_data_behind_a_symlink_leading_outside_is_refused(exported_copy, tmp_path):
    to_external(exported_copy)
    outside = tmp_path / "elsewhere.data"
    (exported_copy / "step.data").rename(outside)
    (exported_copy / "step.data").symlink_to(outside)
    rehash(exported_copy, extra=[("step.data", "external_data")])
    with pytest.raises(IntegrityError, match="regular file inside"):
        runtime.load(exported_copy)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.1])
def test_a_truncated_onnx_file_with_a_matching_manifest_is_refused(exported_copy, keep):
    # Without re-hashing, truncation is an IntegrityError (test_manifest). Re-hashed, the file
    # must still not load. (A cut exactly at the end of a trailing metadata field leaves a valid,
    # smaller protobuf; no check can tell it from a model written that way.)
    data = (exported_copy / "step.onnx").read_bytes()
    (exported_copy / "step.onnx").write_bytes(data[: int(len(data) * keep)])
    rehash(exported_copy)
    with pytest.raises(ArtifactError):
        runtime.load(exported_copy)


def test_garbage_in_place_of_a_model_is_refused(exported_copy):
    (exported_copy / "rollout_rnn.onnx").write_bytes(os.urandom(700))
    rehash(exported_copy)
    model = runtime.load(exported_copy)  # the step model is fine; the fused one fails when first used
    with pytest.raises(ArtifactError):
        model.generate(0.5, 100, form="rollout_rnn")
    assert model.generate(0.5, 100, form="step")[0].shape == (100, 1, 1)


def test_a_file_swapped_after_loading_is_refused_when_first_used(exported_copy, exported_folder):
    model = runtime.load(exported_copy)
    (exported_copy / "rollout_loop.onnx").write_bytes((exported_copy / "rollout_rnn.onnx").read_bytes())
    with pytest.raises(IntegrityError, match="changed after it was checked"):
        model.generate(np.zeros((64, 1), np.float32), 100, form="rollout_loop")


def test_values_beyond_float32_are_refused_not_turned_into_infinity(exported_folder):
    model = runtime.load(exported_folder)
    with pytest.raises(runtime.InputValueError, match="beyond float32"):
        model.step(np.array([[1e300]]))


# ---- killed writers ----------------------------------------------------------------------------

def test_sigkill_while_saving_a_training_run_leaves_the_old_folder(tmp_path, trained_folder):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    call = f"m.train_folder(m.TrainConfig(seed=9, epochs=3), {str(folder)!r})"
    kill_inside("rnn.train", "save_checkpoint", call, tmp_path / "saving")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-")]
    assert stale, "the killed run's staging folder is there, hidden"
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    train_folder(TrainConfig(seed=9, epochs=3), folder)  # the next write clears it away
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-")]


# ---- threads -----------------------------------------------------------------------------------

def _calls(count, seed):
    rng = np.random.default_rng(seed)
    calls = []
    for _ in range(count):
        kind = rng.choice(["step", "predict", "generate"])
        batch = int(rng.choice([1, 3, 17, 64]))
        state = rng.uniform(-1, 1, (batch, 6)).astype(np.float32)
        if kind == "step":
            calls.append(("step", rng.uniform(-1, 1, (batch, 1)).astype(np.float32), state, None))
        elif kind == "predict":
            steps = int(rng.choice([1, 5, 23]))
            calls.append(("predict", rng.uniform(-1, 1, (steps, batch, 1)).astype(np.float32), state, None))
        else:
            steps = int(rng.choice([1, 5, 23]))
            form = rng.choice([None, "step", "rollout_rnn", "rollout_loop"])
            calls.append(("generate", rng.uniform(-1, 1, (batch, 1)).astype(np.float32), state, (steps, form)))
    return calls


def _call(model, call):
    kind, first, state, extra = call
    if kind == "step":
        y, new = model.step(first, state)
    elif kind == "predict":
        y, new = model.predict(first, state)
    else:
        steps, form = extra
        y, new = model.generate(first, steps, state, form=None if form is None else str(form))
    return y, new[0]


STRESS_CALLS = 10_000
STRESS_THREADS = 8


def test_one_model_from_eight_threads_matches_sequential_calls_bit_for_bit(exported_folder):
    model = runtime.load(exported_folder)
    calls = _calls(STRESS_CALLS, seed=11)
    calls += [("generate", np.full((2100, 1), 0.3, np.float32), np.zeros((2100, 6), np.float32), (12, None))] * 8
    start = time.perf_counter()
    sequential = [_call(model, c) for c in calls]
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(STRESS_THREADS) as pool:
        concurrent = list(pool.map(lambda c: _call(model, c), calls))
    concurrent_s = time.perf_counter() - start
    mismatches = sum(not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))
                     for a, b in zip(sequential, concurrent))
    print(f"\nstress: {len(calls)} calls, sequential {sequential_s:.2f} s, {STRESS_THREADS} threads {concurrent_s:.2f} s")
    assert mismatches == 0


# ---- property-based ------------------------------------------------------------------------

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, np.complex64]
arrays = st.builds(
    lambda shape, dtype, fill, special: _array(shape, dtype, fill, special),
    st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
    st.sampled_from(DTYPES),
    st.floats(-3, 3, allow_nan=False),
    st.sampled_from([None, np.nan, np.inf, -np.inf, 1e39]),
)


def _array(shape, dtype, fill, special):
    array = np.full(shape, fill, dtype=np.float64)
    if special is not None and array.size:
        array.flat[0] = special
    with np.errstate(invalid="ignore", over="ignore"):
        return array.astype(dtype)


values = st.one_of(arrays, st.none(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=3),
                   st.lists(st.floats(-2, 2), max_size=4), st.lists(st.lists(st.integers(-2, 2), max_size=3), max_size=3))
steps = st.one_of(st.integers(-3, 40), st.floats(-1, 5), st.none(), st.booleans(), st.text(max_size=2))


@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(["step", "predict", "generate", "generate_iter"]), first=values, state=values,
       n=steps, form=st.sampled_from([None, "step", "rollout_rnn", "sequence_loop", "nope"]))
def test_any_input_gives_a_result_or_a_typed_error(committed_model, kind, first, state, n, form):
    try:
        if kind == "step":
            y, new = committed_model.step(first, state)
            assert y.shape[1] == 1 and new[0].shape == (y.shape[0], 6)
        elif kind == "predict":
            ys, new = committed_model.predict(first, state, form=form)
            assert ys.dtype == np.float32
        elif kind == "generate":
            ys, new = committed_model.generate(first, n, state, form=form)
            assert ys.shape[0] == n and ys.dtype == np.float32
        else:
            total = sum(len(ys) for ys, _ in committed_model.generate_iter(first, n, state, chunk=7, form=form))
            assert total == n
    except ToolkitError:
        pass
    assert committed_model.step(0.25)[0].shape == (1, 1)  # and the model keeps working


@pytest.fixture(scope="module")
def committed_model():
    from .conftest import COMMITTED

    return runtime.load(COMMITTED)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(path=st.lists(st.one_of(st.text(max_size=8), st.integers(0, 3)), min_size=1, max_size=3),
       value=json_values, delete=st.booleans())
def test_any_manifest_mutation_is_read_or_refused_with_a_manifest_error(path, value, delete):
    from .conftest import COMMITTED

    document = json.loads((COMMITTED / "manifest.json").read_text())
    _mutate(document, path, value, delete)
    try:
        manifest = Manifest.from_dict(document)
    except ManifestError:
        return
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest


def _pick(node, step):
    """The key (dict) or index (list) that ``step`` selects in ``node``; None for a leaf."""
    if isinstance(node, dict):
        if isinstance(step, str) and step in node or not node:
            return step if isinstance(step, str) else "extra"
        return sorted(node)[step % len(node)] if isinstance(step, int) else step
    if isinstance(node, list) and node:
        return step % len(node) if isinstance(step, int) else 0
    return None


def _mutate(document, path, value, delete):
    """Walks ``path`` down the document and replaces (or deletes) what it ends on."""
    node = document
    for step in path[:-1]:
        key = _pick(node, step)
        if key is None or not isinstance(node, (dict, list)) or (isinstance(node, dict) and key not in node):
            break
        node = node[key]
    key = _pick(node, path[-1])
    if key is None:
        return
    if delete:
        node.pop(key, None) if isinstance(node, dict) else node.pop(key)
    else:
        node[key] = value
