"""rnn.config: the typed config.json (Config, ModelConfig, TrainConfig) and the training series."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from rnn.config import (
    CUSTOM,
    HIDDEN_SIZE,
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
        (_change(["train", "lr"], "fast"), "train.lr must be a number"),
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
    train = TrainConfig(data=str(data))
    for recorded in (True, False):
        series = training_series(train, recorded=recorded)
        assert not series.is_sine and series.values.tolist() == [1.0, 2.0, 3.0] and series.times.tolist() == [0, 1, 2]


def test_a_moved_data_file_is_named_as_the_training_data_only_when_recorded(tmp_path):
    data = tmp_path / "series.csv"
    data.write_text("1\n2\n3\n")
    train = TrainConfig(data=str(data))
    data.rename(tmp_path / "moved.csv")
    with pytest.raises(ArtifactError, match="this model was trained on is no longer there"):
        training_series(train, recorded=True)
    with pytest.raises(DataError, match="does not exist") as refused:
        training_series(train, recorded=False)
    assert "trained on" not in str(refused.value) and "recorded" not in str(refused.value)
