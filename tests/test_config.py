import json

import pandas as pd
import pytest

from core.config import parse_overrides
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
