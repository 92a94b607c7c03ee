"""examples/web: the page in Debian's headless Chromium (puppeteer-core), served by `toolkit.web`
on a free loopback port, against the Python runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import runtime
from export.verify import ROLLOUT_ATOL
from toolkit.web import WebServer

from ..conftest import COMMITTED
from .conftest import CHROMIUM
from .worked_char import CHAR_PROMPT
from .worked_char import char_generator as worked_char_generator

STEPS = 200
STEPS_ON_LOAD = 60  # index.html's steps: what the page draws or streams when it opens a folder
char_generator = worked_char_generator  # the fixture, by the name the tests ask for
X0 = float(np.float32(np.sin(2.0)))  # the data's first point, as the other examples start
DRIVE_TIMEOUT_S = 180


def drive(web_page, folder, out_dir, spec: dict | None = None) -> dict:
    """Loads the page for ``folder`` in headless Chromium; what the page reports (drive.mjs)."""
    server = WebServer(folder, port=0).start()
    try:
        command = ["node", str(web_page / "test" / "drive.mjs"), server.url, str(out_dir), json.dumps(spec or {})]
        environment = {**os.environ, "CHROMIUM": CHROMIUM}
        result = subprocess.run(command, capture_output=True, text=True, timeout=DRIVE_TIMEOUT_S, env=environment)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def python_rollout(folder, steps=STEPS) -> np.ndarray:
    return runtime.load(folder).generate(np.float32(X0), steps)[0].reshape(-1)


def assert_chart(report, title, y_label, legend, values, steps):
    """The chart the page drew (its canvas's data-chart and aria-label, every text drawn): the
    title line, axis labels, tick numbers spanning ranges that hold every drawn value (``values``,
    the Python runtime's) and steps 0 to ``steps``, the legend."""
    chart = report["chart"]
    assert report["chartShown"] and json.loads(report["chartData"]) == chart
    assert (chart["title"], chart["xLabel"], chart["yLabel"], chart["legend"]) == (title, "time step", y_label, legend)
    assert {title, "time step", y_label, *legend, *chart["xTicks"], *chart["yTicks"]} <= set(chart["texts"])
    for ticks, (lo, hi) in ((chart["xTicks"], chart["xRange"]), (chart["yTicks"], chart["yRange"])):
        numbers = np.array([float(tick) for tick in ticks])
        assert len(numbers) >= 4 and numbers[0] == lo and numbers[-1] == hi
        np.testing.assert_allclose(np.diff(numbers), numbers[1] - numbers[0], rtol=1e-6)  # evenly spaced
    assert chart["xRange"][0] == 0 and steps <= chart["xRange"][1] < 2 * steps
    low, high = float(np.min(values)), float(np.max(values))
    assert chart["yRange"][0] <= low and high <= chart["yRange"][1]
    assert chart["yRange"][1] - chart["yRange"][0] < 3 * (high - low)  # the data fills the chart
    label = report["chartLabel"]
    assert label.startswith(title) and f"({chart['yTicks'][0]} to {chart['yTicks'][-1]})" in label
    assert f"time step ({chart['xTicks'][0]} to {chart['xTicks'][-1]})" in label


def test_page_runs_the_fused_rollout_and_the_step_loop_as_the_python_runtime(web_page, tmp_path):
    calls = [{"x0": X0, "steps": STEPS, "form": form} for form in ("rollout_rnn", "rollout_loop", "step")]
    report = drive(web_page, COMMITTED, tmp_path, {"generate": calls, "time": [{"x0": X0, "steps": 1000}]})
    assert report["error"] is None, report
    assert report["statusClass"] == "ok" and "self-check passed" in report["status"]
    assert report["form"].startswith("rollout_rnn")  # the manifest lists it: the page picks it
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    onnx_files = {entry["name"] for entry in manifest["files"] if entry["name"].endswith(".onnx")}
    assert onnx_files <= set(report["checkedFiles"])  # each checked against its sha256 before use
    forms = {entry["form"] for entry in report["selfCheck"]}
    assert forms == {"step", "rollout_rnn", "rollout_loop", "sequence_rnn", "sequence_loop"}
    assert all(entry["passed"] for entry in report["selfCheck"]), report["selfCheck"]
    expected = python_rollout(COMMITTED)
    for call, got in zip(calls, report["generated"]):
        error = np.max(np.abs(np.array(got) - expected))
        assert len(got) == STEPS and error <= ROLLOUT_ATOL, f"{call['form']}: max abs error {error:.3g}"
    assert not any(line.startswith("pageerror") for line in report["logs"]), report["logs"]
    # the chart of what the page drew on load: the data, its teacher-forced predictions, 60 steps
    model = runtime.load(COMMITTED)
    series = np.sin(2 + 8 * np.arange(21) / 20).astype(np.float32)  # the built-in data, as the page's
    predicted = model.predict(series.reshape(-1, 1, 1))[0].reshape(-1)[:-1]
    legend = ["data (actual)", "teacher-forced prediction of the next point", "closed loop from the start value"]
    title = "elman model (hidden 6, reference trainer, seed 0): x -> y"
    values = np.concatenate([series, predicted, python_rollout(COMMITTED, STEPS_ON_LOAD)])
    assert_chart(report, title, "y (output)", legend, values, STEPS_ON_LOAD)

    # the figures, reported not asserted: page load to the first drawn rollout, and 1000
    # closed-loop steps at batch 1 in the browser against the Python runtime's same call
    model.generate(np.float32(X0), 1000)
    started = time.perf_counter()
    for _ in range(20):  # as the page times it (rnn.time: one warm-up call, then 20)
        model.generate(np.float32(X0), 1000)
    python_ms = (time.perf_counter() - started) / 20 * 1e3
    browser_ms = report["timed"][0]
    print(
        f"\nweb page: first drawn rollout {report['timings']['firstDrawMs']:.0f} ms after load; 1000 closed-loop "
        f"steps at batch 1: browser {browser_ms:.2f} ms, Python runtime {python_ms:.2f} ms "
        f"({browser_ms / python_ms:.2f}x)",
        file=sys.stderr,
    )

    # the screenshot is not blank: a white page with the green closed loop, blue and red points
    import matplotlib.image

    pixels = matplotlib.image.imread(tmp_path / "page.png")[..., :3]
    assert pixels.std() > 0.05
    green = (pixels[..., 1] > 0.5) & (pixels[..., 0] < 0.3) & (pixels[..., 2] < 0.3)
    assert green.sum() > 500, "the closed loop is not drawn"


def test_a_tampered_file_is_refused_with_a_visible_message(web_page, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(COMMITTED, folder)
    data = bytearray((folder / "rollout_rnn.onnx").read_bytes())
    data[-5] ^= 0x01  # one bit of a weight
    (folder / "rollout_rnn.onnx").write_bytes(bytes(data))
    report = drive(web_page, folder, tmp_path)
    assert report["statusClass"] == "error"
    assert report["status"].startswith("refused rollout_rnn.onnx: its sha256 is"), report["status"]
    assert "rollout_rnn.onnx" not in report["checkedFiles"] and report["selfCheck"] == []


def test_a_folder_without_fused_forms_runs_the_step_loop(web_page, tmp_path):
    folder = tmp_path / "step-only"
    shutil.copytree(COMMITTED, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    fused = [entry for entry in manifest["files"] if entry["role"].startswith(("rollout_", "sequence_"))]
    manifest["files"] = [entry for entry in manifest["files"] if entry not in fused]
    for entry in fused:
        (folder / entry["name"]).unlink()
        shutil.rmtree(folder / "test_data" / entry["role"])
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    report = drive(web_page, folder, tmp_path, {"generate": [{"x0": X0, "steps": STEPS}]})
    assert report["error"] is None and report["form"].startswith("step"), report
    assert [entry["form"] for entry in report["selfCheck"]] == ["step"] and report["selfCheck"][0]["passed"]
    assert np.max(np.abs(np.array(report["generated"][0]) - python_rollout(folder))) <= ROLLOUT_ATOL


# ---- format 2 folders ---------------------------------------------------------------------------

VOCABULARY = ["a", "b", "c", "d", "e", " ", "th", "the", ".", "h", "!"]  # the char GRU's 11 ids
PROMPT = "the bad cab. th"  # "the" over "th" (longest first), and "th" where no "e" follows
CATEGORY = [2.0, -0.5, 0.7]
SAMPLE_STEPS = 60
SAMPLINGS = [  # (strategy, the runtime.Sampler settings, seed)
    ("greedy", {}, None),
    ("temperature", {"temperature": 0.8}, 3),
    ("top_k", {"temperature": 0.8, "top_k": 3}, 2**32 + 5),
    ("top_p", {"temperature": 0.8, "top_p": 0.6}, 42),
]


@pytest.fixture(scope="module")
def vocabulary_folder(tmp_path_factory):
    """The character GRU (a token and a category in, logits out, state (2, batch, 7)) exported with
    a vocabulary: one string per token id, some of more than one character."""
    from export import export_module

    from ..user_modules import CHAR_GRU_SIGNATURE, make_char_gru

    folder = tmp_path_factory.mktemp("vocabulary") / "char"
    return export_module(make_char_gru(), folder, vocabulary=VOCABULARY, **CHAR_GRU_SIGNATURE)


def python_tokens(folder, strategy, settings, seed, prompt=None, token=4, steps=SAMPLE_STEPS, held=True):
    """The Python runtime's tokens: the prompt fed teacher-forced (predict), then generate from its
    last token with runtime.Sampler(strategy, **settings, seed=seed), the category held (``held``)."""
    model = runtime.load(folder)
    name = model.feedback.input
    ids = model.vocabulary.encode(prompt) if prompt is not None else np.array([token])
    category = np.array(CATEGORY, np.float32)
    state = None
    if len(ids) > 1:
        xs = {name: ids[:-1].reshape(-1, 1)}
        xs.update({"category": np.tile(category, (len(ids) - 1, 1, 1))} if held else {})
        state = model.predict(xs)[1]
    x0 = {name: ids[-1:], **({"category": category.reshape(1, 3)} if held else {})}
    sampler = runtime.Sampler(strategy, **settings, seed=seed)
    return np.asarray(model.generate(x0, steps, state, sampler=sampler)[0]).reshape(-1)


def page_call(strategy, settings, seed, **extra):
    call = {"strategy": strategy, "steps": SAMPLE_STEPS, "inputs": {"category": CATEGORY}, **extra}
    call.update(temperature=settings.get("temperature", 1), topK=settings.get("top_k"), topP=settings.get("top_p"))
    return {**call, "seed": 0 if seed is None else str(seed)}


def test_page_streams_a_prompts_sampled_text_as_the_python_runtime(web_page, vocabulary_folder, tmp_path):
    """A token model with a vocabulary: the prompt fed teacher-forced, then the text streamed token
    by token; the tokens for a seed are the Python runtime's, for each strategy, in the step loop
    (streamed) and the fused rollout_sample form."""
    calls = [page_call(*sampling, prompt=PROMPT) for sampling in SAMPLINGS]
    calls.append(page_call(*SAMPLINGS[1], prompt=PROMPT, form="rollout_sample"))
    calls.append(page_call(*SAMPLINGS[1], prompt="the cat"))  # no "t" alone in the vocabulary
    report = drive(web_page, vocabulary_folder, tmp_path, {"sample": calls})
    assert report["error"] is None and report["statusClass"] == "ok", report
    assert all(entry["passed"] for entry in report["selfCheck"]), report["selfCheck"]
    assert {"step", "rollout_greedy", "rollout_sample"} <= {entry["form"] for entry in report["selfCheck"]}
    assert report["firstSample"] and len(report["firstSample"]["tokens"]) == STEPS_ON_LOAD  # streamed on load
    assert not report["chartShown"]  # text, no chart: a title line and the legend of the text
    assert report["textKey"].splitlines() == [
        "custom step module: token, category -> logits",
        "legend: prompt (fed teacher-forced) continuation (sampled, a token at a time)",
    ]
    vocabulary = runtime.load(vocabulary_folder).vocabulary
    for (strategy, settings, seed), got in zip([*SAMPLINGS, SAMPLINGS[1]], report["sampled"]):
        expected = python_tokens(vocabulary_folder, strategy, settings, seed, prompt=PROMPT)
        assert got["prompt"] == vocabulary.encode(PROMPT).tolist()
        np.testing.assert_array_equal(got["tokens"], expected, err_msg=f"{strategy}, seed {seed}")
        assert got["text"] == vocabulary.decode(expected) and got["shown"] == PROMPT + got["text"]
        assert len(set(expected.tolist())) >= 3  # not one token repeated
    streamed = report["sampled"][1]  # one page update a token, as each is drawn
    assert streamed["updates"] == SAMPLE_STEPS and not streamed["stopped"]
    assert np.all(np.diff(streamed["times"]) >= 0) and streamed["times"][0] < streamed["times"][-1]
    assert report["sampled"][-1] == {"error": 'no token of the vocabulary matches the text at position 6 ("t")'}
    with pytest.raises(runtime.InputValueError, match="6"):  # where the Python runtime's encode stops too
        vocabulary.encode("the cat")


CHAR_STEPS = 200


def test_page_streams_the_worked_char_generators_text(web_page, char_generator, tmp_path):
    """The worked example's folder in the page: a prompt, then 200 characters streamed one by one,
    the Python runtime's for the seed (its generate runs the fused rollout_sample form)."""
    settings = {"temperature": 0.8, "top_k": 5}
    call = {**page_call("top_k", settings, 11, prompt=CHAR_PROMPT), "steps": CHAR_STEPS, "inputs": {}}
    _, folder = char_generator
    report = drive(web_page, folder, tmp_path, {"sample": [call, call, {**call, "steps": 100000, "stopAfterMs": 300}]})
    assert report["error"] is None and report["statusClass"] == "ok", report
    expected = python_tokens(folder, "top_k", settings, 11, prompt=CHAR_PROMPT, steps=CHAR_STEPS, held=False)
    vocabulary = runtime.load(folder).vocabulary
    for got in report["sampled"][:2]:  # the same seed twice: the same text
        np.testing.assert_array_equal(got["tokens"], expected)
        assert got["shown"] == CHAR_PROMPT + vocabulary.decode(expected) and got["updates"] == CHAR_STEPS
    assert len(set(expected.tolist())) >= 8  # text, not one character repeated
    stopped = report["sampled"][2]  # 100000 tokens asked, Stop after 300 ms: the stream ends there
    assert stopped["stopped"] and 0 < len(stopped["tokens"]) < 100000, len(stopped["tokens"])
    many = python_tokens(folder, "top_k", settings, 11, prompt=CHAR_PROMPT, steps=len(stopped["tokens"]), held=False)
    np.testing.assert_array_equal(stopped["tokens"], many)  # uniforms drawn up front: the same prefix
    times = report["sampled"][1]["times"]
    assert report["sampled"][1]["frames"] >= 2, "the page did not paint while the text streamed"
    print(
        f"\nweb page, worked char GRU: {CHAR_STEPS} tokens streamed at batch 1 in {times[-1]:.0f} ms "
        f"({CHAR_STEPS / times[-1] * 1e3:.0f} tokens/s), first token after {times[0]:.1f} ms "
        f"(the prompt's {len(CHAR_PROMPT)} characters fed first), "
        f"{report['sampled'][1]['frames']} frames painted meanwhile",
        file=sys.stderr,
    )


def test_page_samples_token_ids_of_a_folder_without_vocabulary(web_page, general_folders, tmp_path):
    folder = general_folders["char"]
    calls = [page_call(*sampling, inputs={"token": 4, "category": CATEGORY}) for sampling in SAMPLINGS[1:3]]
    report = drive(web_page, folder, tmp_path, {"sample": calls})
    assert report["error"] is None and report["statusClass"] == "ok", report
    for (strategy, settings, seed), got in zip(SAMPLINGS[1:3], report["sampled"]):
        expected = python_tokens(folder, strategy, settings, seed)
        np.testing.assert_array_equal(got["tokens"], expected, err_msg=strategy)
        assert got["text"] is None and got["shown"] == " ".join(map(str, expected))


def test_page_runs_a_two_input_folder_fed_back_as_it_is(web_page, general_folders, tmp_path):
    """The two-input forecaster (a float value and a day token in, the value fed back): the fused
    rollout and the step loop against the Python runtime, the closed loop drawn."""
    folder = general_folders["two"]
    inputs = {"value": [0.5], "day": 3}
    calls = [{"inputs": inputs, "steps": SAMPLE_STEPS, "form": form} for form in (None, "rollout_loop", "step")]
    report = drive(web_page, folder, tmp_path, {"generate": calls})
    assert report["error"] is None and report["statusClass"] == "ok", report
    assert report["form"].startswith("rollout_loop") and report["selfCheck"][0]["passed"]
    model = runtime.load(folder)
    x0 = {"value": np.array([[0.5]], np.float32), "day": np.array([3])}
    expected = np.asarray(model.generate(x0, SAMPLE_STEPS)[0]).reshape(-1)
    for call, got in zip(calls, report["generated"]):
        assert np.max(np.abs(np.array(got) - expected)) <= 1e-5, call["form"]
    on_load = np.asarray(model.generate({"value": np.zeros((1, 1), np.float32), "day": np.array([0])}, 60)[0])
    title = "custom step module: value, day -> next_value"  # the page's fields start at 0
    assert_chart(report, title, "next_value (output)", ["closed loop from the start value"], on_load, STEPS_ON_LOAD)
    pixels = matplotlib_image(tmp_path / "page.png")
    green = (pixels[..., 1] > 0.5) & (pixels[..., 0] < 0.3) & (pixels[..., 2] < 0.3)
    assert green.sum() > 300, "the closed loop is not drawn"


def matplotlib_image(path):
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3]


def test_a_bad_vocabulary_or_a_newer_format_gets_a_visible_message(web_page, vocabulary_folder, tmp_path):
    for name, change, message in (
        ("short", {"vocabulary": VOCABULARY[:-1]}, "the manifest's vocabulary has 10 tokens, the token input 11 ids"),
        ("twice", {"vocabulary": ["a", *VOCABULARY[1:-1], "a"]}, "the manifest's vocabulary lists a token twice"),
        ("newer", {"format_version": 3}, "this page runs format versions 1 and 2"),
    ):
        folder = tmp_path / name
        shutil.copytree(vocabulary_folder, folder)
        manifest = {**json.loads((folder / "manifest.json").read_text()), **change}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        report = drive(web_page, folder, tmp_path)
        assert report["statusClass"] == "error" and report["status"].startswith(message), report["status"]
        assert report["selfCheck"] == [], name


def test_the_step_loop_keeps_every_state_tensor(web_page, lstm_folder, tmp_path):
    """An LSTM folder: two state tensors (h, c) carried between steps."""
    report = drive(web_page, lstm_folder, tmp_path, {"generate": [{"x0": X0, "steps": 60, "form": "step"}]})
    assert report["error"] is None, report
    assert all(entry["passed"] for entry in report["selfCheck"]), report["selfCheck"]
    np.testing.assert_allclose(report["generated"][0], python_rollout(lstm_folder, 60), atol=1e-5, rtol=0)


def test_rnn_web_serves_the_page_and_only_the_folders_files(web_page):
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "web", str(COMMITTED), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        with urllib.request.urlopen(url) as response:
            assert b"onnxruntime-web" in response.read()
        with urllib.request.urlopen(url + "model/manifest.json") as response:
            assert response.headers["Content-Type"] == "application/json"
        with urllib.request.urlopen(url + "ort/ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
        # COMMITTED is REPO/artifacts/sine-elman: ../../pyproject.toml exists, outside the folder
        for outside in ("model/../../pyproject.toml", "model/%2e%2e/%2e%2e/pyproject.toml", "model/%00"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url + outside)
            assert refused.value.code == 404, outside
        rebound = urllib.request.Request(url + "model/manifest.json", headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as refused:  # DNS rebinding: not a loopback name
            urllib.request.urlopen(rebound)
        assert refused.value.code == 403
    finally:
        process.terminate()
        process.wait(30)


def test_without_onnxruntime_web_rnn_web_says_what_to_install(tmp_path, monkeypatch):
    import toolkit.web

    monkeypatch.setattr(toolkit.web, "ORT_DIST", tmp_path / "nothing")
    with pytest.raises(runtime.MissingDependencyError, match="npm ci --ignore-scripts"):
        WebServer(COMMITTED, port=0)


def test_a_symlink_out_of_the_folder_is_not_served(tmp_path):
    folder = tmp_path / "linked"
    shutil.copytree(COMMITTED, folder)
    (tmp_path / "secret.txt").write_text("not a model file")
    (folder / "secret.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "outside").symlink_to(tmp_path, target_is_directory=True)
    try:
        server = WebServer(folder, port=0).start()
    except runtime.MissingDependencyError as error:  # the check of the page's files comes first
        pytest.skip(str(error))
    try:
        for path in ("model/secret.txt", "model/outside/secret.txt"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.url + path)
            assert refused.value.code == 404, path
        with urllib.request.urlopen(server.url + "model/manifest.json") as response:
            assert response.status == 200
    finally:
        server.stop()
