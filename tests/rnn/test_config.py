"""rnn.config: the typed config.json (Config, ModelConfig, TrainConfig) and the training series."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from rnn.config import (
    CUSTOM,
    HIDDEN_SIZE,
    MAX_SEED,
    MAX_SEQ_LENGTH,
    MAX_SIZE,
    TRAINER_DEFAULTS,
    Config,
    ModelConfig,
    StateConfig,
    TrainConfig,
    read_config,
    training_series,
)
from runtime.errors import ArtifactError, DataError, InputValueError
from runtime.manifest import CONFIG_NAME

from ..conftest import COMMITTED
from ..user_modules import MAKE_TWO_STATE


def through_json(document):
    return json.loads(json.dumps(document))


def custom_model() -> ModelConfig:
    return ModelConfig(
        CUSTOM,
        1,
        1,
        (StateConfig("fast", (0.0,) * 4), StateConfig("slow", (0.25,) * 4)),
        factory=MAKE_TWO_STATE,
        class_name="TwoStateLeaky",
    )


def test_config_round_trips_through_json_and_is_frozen():
    train = TrainConfig(trainer="bptt", cell="gru", seed=3, epochs=7, lr=0.02, hidden_size=5, data="/x.csv")
    config = Config(train.model_config(), train, (0.5, 0.25, 0.125), {"teacher_forced_mse": 0.01})
    assert Config.from_dict(through_json(config.to_dict())) == config
    assert TrainConfig.from_dict(through_json(train.to_dict())) == train
    assert ModelConfig.from_dict(through_json(config.model.to_dict())) == config.model
    assert config.final_loss == 0.125 and config.model.state_names == ("h",) and config.model.hidden_size == 5
    for value, name in ((config, "loss_history"), (train, "seed"), (config.model, "kind")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)


def test_the_committed_config_reads_into_the_typed_config():
    config = read_config(COMMITTED)
    assert config.model == ModelConfig.cell("elman", hidden_size=6)
    assert (config.model.kind, config.model.hidden_size, config.model.state_sizes) == ("elman", 6, (6,))
    assert config.train is not None and config.train.seed == 0 and config.train.trainer == "reference"
    assert len(config.loss_history) == 300 and config.final_loss == config.loss_history[-1]
    assert set(config.metrics) == {"teacher_forced_mse", "rollout_max_error"}
    # one definition reads and writes it: writing it again gives the committed document
    assert config.to_dict() == json.loads((COMMITTED / CONFIG_NAME).read_text())


def test_a_custom_model_config_keeps_its_states_initial_values_and_factory(tmp_path):
    model = custom_model()
    document = through_json(model.to_dict())
    assert document["factory"] == MAKE_TWO_STATE and document["class"] == "TwoStateLeaky"
    assert [s["name"] for s in document["states"]] == ["fast", "slow"]
    read = ModelConfig.from_dict(document)
    assert read == model
    assert read.state_names == ("fast", "slow") and read.state_sizes == (4, 4)
    assert read.initial == ((0.0,) * 4, (0.25,) * 4) and read.factory == MAKE_TWO_STATE
    Config(model).write(tmp_path)  # a user's module has no training record
    config = read_config(tmp_path)
    assert config == Config(model) and config.train is None and config.final_loss is None


def _valid():
    return Config(ModelConfig.cell("elman"), TrainConfig().resolved(), (1.0, 0.5)).to_dict()


def _change(path, value):
    def change(document):
        *parents, last = path
        node = document
        for key in parents:
            node = node[key]
        node[last] = value
        return document

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("model") and d, "missing the field 'model'"),
        (_change(["model", "kind"], "transformer"), "model kind 'transformer' is not supported"),
        (_change(["model", "hidden_size"], 0), "must be positive integers"),
        (_change(["model", "input_size"], 0), "must be positive integers"),
        (_change(["model", "output_size"], 1.5), "must be positive integers"),
        (_change(["model", "kind"], CUSTOM), "a custom model needs 'states'"),
        (_change(["train", "seed"], "0"), "train.seed must be an integer"),
        (_change(["train", "seed"], True), "train.seed must be an integer"),
        (_change(["train", "lr"], "fast"), "train.lr must be a positive number"),
        (_change(["loss_history"], [1.0, "0.5"]), "loss_history must be a list of numbers"),
        (_change(["metrics"], {"mse": "small"}), "metrics must map names to numbers"),
        (lambda d: [d], "must be a JSON object"),
    ],
)
def test_invalid_config_documents_are_artifact_errors(change, message):
    with pytest.raises(ArtifactError, match=message):
        Config.from_dict(change(through_json(_valid())))


def test_read_config_refuses_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_config(tmp_path / "missing")
    with pytest.raises(ArtifactError, match=f"has no {CONFIG_NAME}"):
        read_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        read_config(tmp_path)


def test_resolved_fills_in_the_trainers_defaults():
    for trainer, defaults in TRAINER_DEFAULTS.items():
        config = TrainConfig(trainer=trainer)
        assert (config.epochs, config.lr) == (None, None)  # None: the trainer's default
        resolved = config.resolved()
        assert (resolved.epochs, resolved.lr) == (defaults["epochs"], defaults["lr"])
        assert resolved.hidden_size == HIDDEN_SIZE and resolved.trainer == trainer
        assert config.epochs is None, "resolved() returns a copy"
    assert TRAINER_DEFAULTS["reference"] == {"epochs": 300, "lr": 0.1}  # the tutorial's
    explicit = TrainConfig(trainer="bptt", epochs=3, lr=0.5).resolved()
    assert (explicit.epochs, explicit.lr) == (3, 0.5)
    assert explicit.resolved() == explicit


@pytest.mark.parametrize(
    "config, message",
    [
        (TrainConfig(trainer="adam"), "trainer must be one of"),
        (TrainConfig(epochs=0), "epochs must be >= 1"),
        (TrainConfig(lr=-1.0), "lr must be a positive number"),
        (TrainConfig(lr=float("nan")), "lr must be a positive number"),
        (TrainConfig(hidden_size=0), "hidden_size must be >= 1"),
    ],
)
def test_bad_training_settings_are_refused(config, message):
    with pytest.raises(InputValueError, match=message):
        config.resolved()


def test_the_training_series_is_the_sine_or_the_users_file(tmp_path):
    sine = training_series(None)
    assert sine.is_sine and len(sine.values) == 21 and sine.times[0] == 2.0 and sine.times[-1] == 10.0
    np.testing.assert_allclose(sine.values, np.sin(sine.times))
    data = tmp_path / "series.csv"
    data.write_text("1\n2\n3\n")
    for train, folder, recorded in (
        (TrainConfig(data=str(data)), tmp_path, True),  # an absolute path inside the folder
        (TrainConfig(data="series.csv"), tmp_path, True),  # relative to the folder, as train_folder records
        (TrainConfig(data=str(data)), None, False),  # the user's own file, wherever it is
    ):
        series = training_series(train, folder, recorded=recorded)
        assert not series.is_sine and series.values.tolist() == [1.0, 2.0, 3.0] and series.times.tolist() == [0, 1, 2]


def test_a_moved_data_file_is_named_as_the_training_data_only_when_recorded(tmp_path):
    data = tmp_path / "series.csv"
    data.write_text("1\n2\n3\n")
    train = TrainConfig(data=str(data))
    data.rename(tmp_path / "moved.csv")
    with pytest.raises(ArtifactError, match="this model was trained on is no longer there"):
        training_series(train, tmp_path, recorded=True)
    with pytest.raises(DataError, match="does not exist") as refused:
        training_series(train, recorded=False)
    assert "trained on" not in str(refused.value) and "recorded" not in str(refused.value)


# ---- a config.json is not trusted (issue 10) ------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def _raw(path, value_text):
    """The valid document as text with the value at ``path`` replaced by raw JSON text."""
    document = _change(path, "__RAW__")(through_json(_valid()))
    return json.dumps(document).replace('"__RAW__"', value_text)


@pytest.mark.parametrize(
    "text, message",
    [
        (_raw(["train", "seq_length"], "-5"), "train.seq_length must be between 1 and"),
        (_raw(["train", "seq_length"], '"abc"'), "train.seq_length must be an integer"),
        (_raw(["train", "seq_length"], "3e9"), "train.seq_length must be an integer"),
        (_raw(["train", "seq_length"], "3000000000"), f"must be between 1 and {MAX_SEQ_LENGTH}"),
        (_raw(["train", "hidden_size"], "1000000"), f"must be between 1 and {MAX_SIZE}"),
        (_raw(["model", "hidden_size"], "1000000"), f"must be at most {MAX_SIZE}"),
        (_raw(["train", "seed"], str(2**64)), f"must be between 0 and {MAX_SEED}"),
        (_raw(["train"], "[1, 2]"), "train must be an object, got list"),
        (_raw(["train", "lr"], "NaN"), "train.lr must be a positive number"),
        (_raw(["train", "lr"], "1" * 4000), "train.lr must be a positive number, got an integer of"),
        (_raw(["loss_history"], "[" + "9" * 4000 + "]"), "loss_history must be a list of numbers"),
        (_raw(["model", "hidden_size"], DEEP), "nested too deeply"),
        (DEEP, "nested too deeply"),
        (_raw(["train", "seed"], "1" * 5000), "is not valid JSON"),  # beyond int()'s digit limit
        ("[1, 2]", "must be a JSON object, got list"),
        ('{"model": ', "is not valid JSON"),
    ],
    ids=lambda value: value[:30] if isinstance(value, str) else None,
)
def test_hostile_config_documents_are_one_artifact_error(tmp_path, text, message):
    (tmp_path / CONFIG_NAME).write_text(text)
    with pytest.raises(ArtifactError, match=message) as refused:
        read_config(tmp_path)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 400


def test_a_custom_models_states_must_be_finite_and_bounded():
    document = through_json(custom_model().to_dict())
    document["states"][0]["initial"] = [float("nan")]
    with pytest.raises(ArtifactError, match="a custom model needs 'states'"):
        ModelConfig.from_dict(document)
    document["states"][0]["initial"] = [10**400]  # an integer no float holds
    with pytest.raises(ArtifactError, match="a custom model needs 'states'"):
        ModelConfig.from_dict(document)
    document["states"][0]["initial"] = [0.0] * (MAX_SIZE + 1)
    with pytest.raises(ArtifactError, match="a custom model needs 'states'"):
        ModelConfig.from_dict(document)


def test_a_config_json_that_is_not_utf8_or_not_a_regular_file_is_refused(tmp_path):
    (tmp_path / CONFIG_NAME).write_bytes(b'{"model": "\xff\xfe"}')
    with pytest.raises(ArtifactError, match="is not UTF-8"):
        read_config(tmp_path)
    (tmp_path / CONFIG_NAME).unlink()
    os.mkfifo(tmp_path / CONFIG_NAME)  # reading it would block for ever
    with pytest.raises(ArtifactError, match="is not a regular file"):
        read_config(tmp_path)


@pytest.mark.parametrize(
    "config, message",
    [
        (TrainConfig(seed=2**64), f"seed must be at most {MAX_SEED}"),
        (TrainConfig(seed=-1), "seed must be >= 0"),
        (TrainConfig(hidden_size=100_000), f"hidden_size must be at most {MAX_SIZE}"),
        (TrainConfig(seq_length=10**10), f"seq_length must be at most {MAX_SEQ_LENGTH}"),
        (TrainConfig(lr=10**400), "lr must be a positive number, got an integer of"),
    ],
)
def test_settings_beyond_the_bounds_are_refused_before_training(config, message):
    with pytest.raises(InputValueError, match=message):
        config.resolved()


# ---- a recorded data path is read only inside its folder (issue 10, item 8) ----------------

SECRET = "hunter2:x:0:0:zq-token"  # stands for a line of /etc/passwd


@pytest.fixture()
def outside(tmp_path):
    """A file outside the model's folder, that the folder must not make us read."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "passwd.csv").write_text(f"{SECRET}\nroot:x:0:0\n")
    return folder / "passwd.csv"


@pytest.mark.parametrize("how", ["symlink", "absolute", "dotdot", "symlinked-folder"])
def test_recorded_data_leaving_the_folder_is_refused_unread(tmp_path, outside, how):
    folder = tmp_path / "model"
    folder.mkdir()
    if how == "symlink":  # an unlisted symlink in the folder, pointing out
        (folder / "data.csv").symlink_to(outside)
        data = "data.csv"
    elif how == "absolute":
        data = str(outside)
    elif how == "dotdot":
        data = "../elsewhere/passwd.csv"
    else:
        (folder / "sub").symlink_to(outside.parent)
        data = "sub/passwd.csv"
    train = TrainConfig(data=data)
    with pytest.raises(ArtifactError, match="outside that folder; it is not read") as refused:
        training_series(train, folder)
    assert "hunter2" not in str(refused.value) and "zq-token" not in str(refused.value)
    with pytest.raises(ArtifactError, match="not in which folder"):  # a recorded path needs its folder
        training_series(train)


def test_recorded_data_inside_the_folder_is_read_through_a_symlink_too(tmp_path):
    folder = tmp_path / "model"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "series.csv").write_text("1\n2\n3\n")
    (folder / "link.csv").symlink_to(folder / "data" / "series.csv")
    for data in ("data/series.csv", "link.csv", str(folder / "link.csv")):
        assert training_series(TrainConfig(data=data), folder).values.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ArtifactError, match="no longer there"):
        training_series(TrainConfig(data="gone.csv"), folder)
