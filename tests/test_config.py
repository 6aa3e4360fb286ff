"""Experiment config resolution: YAML < options < -s overrides, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mnr.config import (
    SHIPPED_EXPERIMENTS,
    experiments_dir,
    flatten,
    load_config,
    resolve_config,
    to_dict,
    to_yaml,
)
from mnr.errors import MnrError
from mnr.models import describe_models, list_models


def test_baseline_yaml_reproduces_the_seed() -> None:
    config = resolve_config(model="baseline_cnn")
    assert config.model.name == "baseline_cnn"
    assert (config.optim.name, config.optim.lr, config.optim.momentum) == ("sgd", 0.005, 0.9)
    assert (config.train.batch_size, config.train.epochs, config.train.label_smoothing) == (
        64,
        45,
        0.0,
    )
    assert config.train.augment.enabled is False and config.scheduler.name == "none"


@pytest.mark.parametrize("path", sorted(experiments_dir().glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.model.name in list_models()


def test_every_builtin_model_has_an_experiment() -> None:
    builtin = [row["name"] for row in describe_models() if row["module"].startswith("mnr.models.")]
    assert sorted(builtin) == sorted(SHIPPED_EXPERIMENTS)
    for name in SHIPPED_EXPERIMENTS:
        assert (experiments_dir() / f"{name}.yaml").is_file()


def test_a_named_config_resolves_and_a_missing_one_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_config(config="baseline_cnn_tuned").train.batch_size == 16  # a shipped name
    with pytest.raises(
        MnrError, match=r"looked for the file .*nope.* and for a shipped experiment .*nope\.yaml"
    ):
        resolve_config(config="nope")
    # as if a wheel had lost them
    monkeypatch.setattr("mnr.config.experiments_dir", lambda: tmp_path)
    with pytest.raises(
        MnrError, match=rf"experiment config of 'bn_cnn' is missing: looked for {tmp_path}"
    ):
        resolve_config(model="bn_cnn")
    assert resolve_config(model="my_own_net").model.name == "my_own_net"  # ships none: defaults


def test_precedence_yaml_then_options_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("optim: {lr: 0.1}\ntrain: {epochs: 3, batch_size: 16}\n")
    config = resolve_config(
        config=path,
        options={"optim.lr": 0.2, "train.epochs": None},
        overrides=["optim.lr=0.3", "train.augment.enabled=true"],
    )
    assert config.optim.lr == 0.3
    assert config.train.epochs == 3  # an option left None does not override
    assert config.train.batch_size == 16
    assert config.train.augment.enabled is True


def test_unknown_keys_and_wrong_types_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(MnrError, match="unknown config key train.epoch"):
        resolve_config(overrides=["train.epoch=3"])
    with pytest.raises(MnrError, match="train.epochs: expected an integer"):
        resolve_config(overrides=["train.epochs=three"])
    with pytest.raises(MnrError, match="optim.name: 'rmsprop' is not one of"):
        resolve_config(overrides=["optim.name=rmsprop"])
    with pytest.raises(MnrError, match="train.augment.enabled: expected true or false"):
        resolve_config(overrides=["train.augment.enabled=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    with pytest.raises(MnrError, match="bad.yaml:.*invalid YAML"):
        resolve_config(config=bad)
    with pytest.raises(MnrError, match="key=value"):
        resolve_config(overrides=["nonsense"])


def test_values_are_never_evaluated_as_code() -> None:
    config = resolve_config(overrides=["tracking.run_name=__import__('os').system('false')"])
    assert config.tracking.run_name == "__import__('os').system('false')"
    with pytest.raises(MnrError):
        resolve_config(overrides=["train.epochs=!!python/object/apply:os.system ['false']"])


def test_dump_round_trips_and_flattens(tmp_path: Path) -> None:
    config = resolve_config(
        model="baseline_cnn",
        overrides=["model.kwargs={dropout: 0.2}", "train.target=0.9", "data.path=~/notes"],
    )
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(to_yaml(config))
    assert load_config(dumped) == config  # every value back, with its type
    assert resolve_config(config=dumped) == config
    assert yaml.safe_load(to_yaml(config)) == to_dict(config)
    assert load_config(dumped) != resolve_config(model="baseline_cnn")  # the comparison can fail
    flat = flatten(to_dict(config))
    assert (
        flat["optim.lr"] == 0.005
        and flat["model.kwargs.dropout"] == 0.2
        and flat["train.augment.enabled"] is False
    )


def test_register_without_a_logged_model_is_refused_by_name() -> None:
    with pytest.raises(MnrError, match=r"--register 'piano'.*tracking.log_model is false"):
        resolve_config(
            options={"tracking.register": "piano"}, overrides=["tracking.log_model=false"]
        )
    assert resolve_config(options={"tracking.register": "piano"}).tracking.register == "piano"

    from click.testing import CliRunner

    from mnr.cli import main

    result = CliRunner().invoke(
        main, ["train", "--register", "piano", "-s", "tracking.log_model=false"]
    )
    assert result.exit_code == 2 and "tracking.log_model is false" in result.output, result.output
    assert "Traceback" not in result.output
