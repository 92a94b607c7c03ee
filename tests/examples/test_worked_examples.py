"""examples/char_generator and examples/two_inputs: the README's worked examples for a token
model with sampling and a model with two inputs, end to end (train briefly, export, verify on
their own data, run with the torch-free runtime)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np

import runtime

from ..conftest import REPO


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_char_generator_samples_reproducibly_from_its_fused_rollout(tmp_path, capsys):
    example = load_example("char_generator")
    folder = tmp_path / "chars"
    assert example.main(["--out", str(folder), "--epochs", "30", "--length", "120", "--seed", "4"]) == 0
    report = json.loads((folder / "verify.json").read_text())
    assert report["passed"] and report["user_data"]["shape"] == [200, 1]
    checks = {c["check"] for c in report["comparisons"] if c["form"] == "rollout_sample"}
    assert "temperature 0.8 b=3 T=200" in checks
    vocabulary = len(example.ALPHABET)
    assert f"every id of char (V={vocabulary}), one step" in {c["check"] for c in report["comparisons"]}
    text = capsys.readouterr().out.removesuffix("\n")  # a sampled space may end the text
    assert text.startswith("Alice was ") and len(text) == len("Alice was ") + 120
    model = runtime.load(folder)
    assert model.forms == ("step", "sequence_loop", "rollout_greedy", "rollout_sample")
    # the printed text is what the runtime's fused form and its step loop both sample for that seed
    prompt = example.encode("Alice was ")
    _, state = model.predict({"char": prompt[:-1].reshape(-1, 1)})
    sampler = lambda: runtime.Sampler("temperature", temperature=0.8, seed=4)  # noqa: E731
    fused, _ = model.generate({"char": prompt[-1:]}, 120, state, sampler=sampler())
    loop, _ = model.generate({"char": prompt[-1:]}, 120, state, sampler=sampler(), form="step")
    np.testing.assert_array_equal(fused, loop)
    assert text == "Alice was " + example.decode(fused[:, 0])


def test_the_two_input_model_draws_the_wave_its_token_names(tmp_path, capsys):
    example = load_example("two_inputs")
    folder = tmp_path / "waves"
    assert example.main(["--out", str(folder), "--epochs", "150"]) == 0
    report = json.loads((folder / "verify.json").read_text())
    assert report["passed"] and report["user_data"]["inputs"]["wave"]["dtype"] == "int64"
    manifest = runtime.read_manifest(folder)
    assert [t.name for t in manifest.inputs] == ["value", "wave"] and manifest.layout == "batch_first"
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "step,sine,triangle" and len(lines) == 76
    values = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])  # (75, 2)
    truth = example.waves(125)[:, 50:].T  # the waves past the 50 warm-up points
    # one exported model, two waves by the held token: each stays closer to its own wave than to the other
    error = np.abs(values[:, :, None] - truth[:, None, :]).mean(axis=0)  # (generated wave, true wave)
    assert error[0, 0] < error[0, 1] and error[1, 1] < error[1, 0], error
