"""Config validation, overrides and serialisation."""

import pytest

from sinks_jax.config import ModelConfig, OptimConfig, apply_overrides, from_dict, to_dict
from sinks_jax.errors import ConfigError
from sinks_jax.tasks.bigram_backcopy.config import BBConfig


def test_invalid_values_name_field_value_and_allowed():
    with pytest.raises(ConfigError, match=r"model.positions='absolute'.*learned"):
        ModelConfig(positions="absolute")
    with pytest.raises(ConfigError, match=r"model.n_heads=3.*divisor"):
        ModelConfig(d_model=64, n_heads=3)
    with pytest.raises(ConfigError, match=r"optim.lr=-1"):
        OptimConfig(lr=-1)
    with pytest.raises(ConfigError, match=r"model.attention='linear'"):
        ModelConfig(attention="linear")


def test_overrides_parse_types_and_revalidate():
    cfg = apply_overrides(
        BBConfig(),
        [
            "model.n_layers=3",
            "optim.lr=3e-4",
            "train.progress=false",
            "model.layers_without_mlp=0,2",
            "seed=7",
        ],
    )
    assert cfg.model.n_layers == 3
    assert cfg.optim.lr == 3e-4
    assert cfg.train.progress is False
    assert cfg.model.layers_without_mlp == (0, 2)
    assert cfg.seed == 7
    with pytest.raises(ConfigError, match=r"unknown config field 'model\.depth'"):
        apply_overrides(cfg, ["model.depth=2"])
    with pytest.raises(ConfigError, match="cannot parse"):
        apply_overrides(cfg, ["model.n_layers=three"])
    with pytest.raises(ConfigError, match="field=value"):
        apply_overrides(cfg, ["model.n_layers"])
    with pytest.raises(ConfigError, match=r"layers_without_mlp"):
        apply_overrides(cfg, ["model.layers_without_mlp=5"])


def test_tuple_overrides_use_the_element_type():
    from proofs_numeric.over_mixing import OverMixingConfig

    cfg = apply_overrides(OverMixingConfig(), ["a_values=0,0.5,0.9", "bisect_depths=(8,16)"])
    assert cfg.a_values == (0.0, 0.5, 0.9)
    assert cfg.bisect_depths == (8, 16)
    with pytest.raises(ConfigError, match=r"as tuple\[int,...\]"):
        apply_overrides(cfg, ["bisect_depths=8.5"])


def test_optional_fields_parse_none_or_their_type_and_round_trip():
    from experiments.lm_phenomenology import PRESETS

    cfg = apply_overrides(PRESETS["quick"], ["sweep.split_ranks=1,4"])
    assert cfg.sweep.split_ranks == (1, 4)
    assert from_dict(type(cfg), to_dict(cfg)) == cfg  # a tuple again, not a JSON list
    assert apply_overrides(cfg, ["sweep.split_ranks=None"]).sweep.split_ranks is None
    with pytest.raises(ConfigError, match=r"sweep\.split_ranks"):
        apply_overrides(cfg, ["sweep.split_ranks=0"])  # validated, not a TypeError
    with pytest.raises(ConfigError, match=r"as tuple\[int,...\]"):
        apply_overrides(cfg, ["sweep.split_ranks=two"])


def test_round_trip():
    cfg = apply_overrides(BBConfig(), ["model.layers_without_attention=0"])
    assert from_dict(BBConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.steps=500", "sweep.ablation_steps=500"],
        ["data.seq_len=128", "model.max_len=128"],
    ],
)
def test_overrides_are_validated_once_on_the_final_config_whatever_their_order(overrides):
    from experiments.residual_peak import PRESETS

    forward = apply_overrides(PRESETS["quick"], overrides)
    assert apply_overrides(PRESETS["quick"], overrides[::-1]) == forward


def test_steps_is_applied_with_the_overrides():
    import argparse

    from experiments.residual_peak import EXPERIMENT
    from sinks_jax.cli import resolve_config

    args = argparse.Namespace(
        preset="quick", seed=None, steps=500, overrides=["sweep.ablation_steps=500"]
    )
    cfg = resolve_config(EXPERIMENT, args)
    assert cfg.train.steps == 500
    assert cfg.sweep.ablation_steps == 500
    args.overrides = []
    with pytest.raises(ConfigError, match=r"sweep.ablation_steps=1000.*train.steps=500"):
        resolve_config(EXPERIMENT, args)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("model.layers_without_attention=[[0]]", "model.layers_without_attention"),
        ("model.layers_without_attention=0,,1", "model.layers_without_attention"),
        ("optim.lr=inf", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("seed=9223372036854775807", "seed"),
        ("seed=-1", "seed"),
        ("data.n_triggers=65", "data.n_triggers"),
    ],
)
def test_values_accepted_before_are_refused_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        apply_overrides(BBConfig(), [override])


def test_tuple_overrides_accept_brackets_and_empty():
    cfg = apply_overrides(
        BBConfig(model=ModelConfig(n_layers=3)), ["model.layers_without_mlp=[0, 2]"]
    )
    assert cfg.model.layers_without_mlp == (0, 2)
    assert apply_overrides(cfg, ["model.layers_without_mlp=()"]).model.layers_without_mlp == ()
