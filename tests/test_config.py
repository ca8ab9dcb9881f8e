import json

import pandas as pd
import pytest

from core.config import ConfigError, parse_overrides
from core.methods import REGISTRY
from core.runs import differing_settings
from core.train import RunConfig, TrainerConfig


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_knob_has_slider_metadata(name):
    for knob in REGISTRY[name].Config.knobs() + TrainerConfig.knobs():
        assert knob.help, f"{name}.{knob.name} has no help line"
        if knob.type is bool:  # a toggle needs no range
            continue
        assert knob.choices or (knob.min is not None and knob.max is not None), f"{name}.{knob.name} has no range"
        if knob.choices is None:
            assert knob.min <= knob.default <= knob.max, f"{name}.{knob.name} default outside its range"


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_config_round_trips_through_json(name, preset):
    config = RunConfig.build(name, "usps", seed=3, preset=preset)
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_overrides_are_coerced_to_field_types_and_reach_the_right_component():
    config = RunConfig.build("idec", overrides=parse_overrides(["alpha=1.5", "epochs=7", "optimizer_name=sgd"]))
    assert config.params.alpha == 1.5 and isinstance(config.params.alpha, float)
    assert config.trainer.epochs == 7 and isinstance(config.trainer.epochs, int)
    assert config.params.optimizer_name == "sgd"


def test_presets_are_applied_before_overrides():
    config = RunConfig.build("dec", "usps", preset="paper", overrides={"update_interval": "5"})
    assert config.params.update_interval == 5
    assert RunConfig.build("dec", "usps").params.update_interval == 30  # the reference code's USPS value
    assert RunConfig.build("dec", "mnist", preset="paper").params.update_interval == 140
    assert RunConfig.build("idec", "usps").params.optimizer_name == "sgd"


def test_unknown_setting_is_refused_with_its_name():
    with pytest.raises(ValueError, match="lambda_typo"):
        RunConfig.build("idec", overrides={"lambda_typo": "1"})


def test_bad_override_syntax():
    with pytest.raises(ValueError, match="name=value"):
        parse_overrides(["alpha"])


def test_cli_methods_listing_names_every_method_and_knob():
    from core.cli import describe_methods

    listing = describe_methods()
    for name, method in REGISTRY.items():
        assert f"{name}: {method.title}" in listing
        assert all(knob.name in listing for knob in method.Config.knobs())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_no_method_knob_is_named_like_a_trainer_knob(name):
    # flat_settings and the Train page's widget keys hold both kinds of knob under their bare names
    assert not REGISTRY[name].Config().field_names() & TrainerConfig().field_names()


def test_differing_settings_by_hand():
    idec = {"method": "idec", "data": "digits", "seed": 0, "trainer": {"epochs": 30},
            "params": {"alpha": 1.0, "gamma": 0.1}}
    configs = {"a": idec, "b": {**idec, "seed": 1}, "c": {**idec, "method": "dec", "params": {"alpha": 1.0}}}
    table = differing_settings(configs)
    # method: idec, idec, dec; seed: 0, 1, 0; gamma: 0.1, 0.1, none (DEC has no γ). The rest is the same.
    assert list(table.columns) == ["method", "seed", "gamma"] and list(table.index) == ["a", "b", "c"]
    assert table["method"].tolist() == ["idec", "idec", "dec"] and table["seed"].tolist() == [0, 1, 0]
    assert table.loc["a", "gamma"] == 0.1 and pd.isna(table.loc["c", "gamma"])
    assert differing_settings({"a": idec, "b": dict(idec)}).columns.empty


# -- hard limits: what a method can run, whoever builds the config ----------------------------------
@pytest.mark.parametrize("method, name, value, message", [
    ("idec", "alpha", "-1", "alpha=-1 is out of range: it must be > 0"),
    ("idec", "alpha", "nan", "alpha=nan is not a finite number"),
    ("idec", "alpha", "inf", "alpha=inf is not a finite number"),
    ("idec", "alpha", "one", "alpha: not a number: 'one'"),
    ("idec", "epochs", "-5", "epochs=-5 is out of range: it must be ≥ 0"),
    ("idec", "pretrain_epochs", "-3", "pretrain_epochs=-3 is out of range: it must be ≥ 0"),
    ("idec", "batch_size", "0", "batch_size=0 is out of range: it must be ≥ 1"),
    ("idec", "batch_size", "2.5", "batch_size: not an integer: '2.5'"),
    ("idec", "momentum", "1", r"momentum=1 is out of range: it must be in \[0, 1\)"),
    ("idec", "optimizer_name", "rmsprop", "optimizer_name='rmsprop' is not one of adam, sgd"),
    ("dcss", "m", "1", "m=1 is out of range: it must be > 1"),
    ("decs", "threshold", "1", r"threshold=1 is out of range: it must be in \(0, 1\)"),
    ("secu", "gamma", "1.5", r"gamma=1.5 is out of range: it must be in \[0, 1\]"),
])
def test_a_value_outside_the_hard_limits_is_refused_with_its_name_and_limit(method, name, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.build(method, overrides={name: value})


@pytest.mark.parametrize("name, value", [("epochs", "3000"), ("alpha", "5"), ("epochs", "0"), ("gamma", "0")])
def test_a_value_beyond_the_slider_but_within_the_limits_is_allowed(name, value):
    # the slider offers epochs up to 2,000 and α up to 2; a run can use more (a restored run, a paper budget)
    config = RunConfig.build("idec", overrides={name: value})
    assert getattr(config.trainer if name == "epochs" else config.params, name) == float(value)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_default_and_preset_lies_within_the_hard_limits(name):
    for data in ("digits", "usps", "mnist-test", "fashion-mnist"):
        for preset in [None, *REGISTRY[name].presets(data)]:
            RunConfig.build(name, data, preset=preset)  # raises ConfigError otherwise


def test_a_config_read_back_is_checked_too():
    values = RunConfig.build("idec").to_dict()
    values["params"]["alpha"] = -2.0
    with pytest.raises(ConfigError, match="alpha"):
        RunConfig.from_dict(values)


@pytest.mark.parametrize("n_clusters", [1, 0, -3])
def test_fewer_than_two_clusters_is_refused(n_clusters):
    with pytest.raises(ConfigError, match="K ≥ 2"):
        RunConfig.build("idec", n_clusters=n_clusters)


@pytest.mark.parametrize("n_samples, n_clusters, n_classes, ok", [
    (20, 10, None, True), (19, 10, None, False),   # 2·K = 20
    (30, 500, None, False), (30, None, 15, True), (29, None, 15, False),
    (19, None, None, False),                        # unlabelled, K unset: 10 clusters
])
def test_two_samples_per_cluster_rule(n_samples, n_clusters, n_classes, ok):
    config = RunConfig.build("idec", n_clusters=n_clusters)
    if ok:
        config.check_samples(n_samples, n_classes)
    else:
        with pytest.raises(ConfigError, match=f"the data has {n_samples} samples"):
            config.check_samples(n_samples, n_classes)


@pytest.mark.parametrize("args, message", [
    (["--set", "alpha=-1"], "alpha=-1 is out of range"),
    (["--set", "alpha=nan"], "alpha=nan is not a finite number"),
    (["--epochs", "-5", "--pretrain-epochs", "-3"], "is out of range"),
    (["--clusters", "1"], "K ≥ 2"),
    (["--batch-size", "0"], "batch_size=0 is out of range"),
])
def test_the_cli_refuses_bad_knobs_with_a_sentence_and_writes_no_run(args, message, capsys, tmp_path):
    from core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", "idec", "--data", "digits", "--runs-dir", str(tmp_path / "runs"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_cli_refuses_more_clusters_than_the_data_can_hold(capsys, tmp_path):
    import numpy as np

    from core.cli import main

    path = tmp_path / "tiny.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 255, (30, 8, 8), dtype=np.uint8))
    code = main(["train", "--method", "idec", "--data", str(path), "--clusters", "500", "--runs-dir",
                 str(tmp_path / "runs"), "--quiet"])
    assert code == 2
    assert "the data has 30 samples; clustering into K=500 needs at least 1000" in capsys.readouterr().err
    [run] = list((tmp_path / "runs").iterdir())
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
