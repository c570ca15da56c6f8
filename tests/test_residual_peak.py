"""experiments.residual_peak: the layer-0 residual of BOS split into embedding, attention-0 and
MLP-0 parts (Guo et al. 2024 §3.3), and the growth comparison of its ablations."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import residual_peak as rp
from sinks_jax.config import ModelConfig
from sinks_jax.errors import ConfigError
from sinks_jax.model import GPT

CFG = ModelConfig(vocab_size=11, max_len=16, d_model=16, d_mlp=32, n_layers=3, n_heads=1)


def _tokens(b=4, t=12):
    return jax.random.randint(jax.random.key(1), (b, t), 0, CFG.vocab_size)


def _parts_and_residual(cfg: ModelConfig):
    out = GPT(cfg, rngs=nnx.Rngs(0))(_tokens(), capture=rp.PARTS_CAPTURE)
    return rp.layer0_parts(out), out.layers[0].residual


@pytest.mark.parametrize(
    "changes",
    [{}, {"layers_without_mlp": (0,)}, {"layers_without_attention": (0, 2)}],
)
def test_layer0_parts_sum_to_the_residual_and_shares_to_the_gap(changes):
    parts, residual = _parts_and_residual(dataclasses.replace(CFG, **changes))
    assert set(parts) == set(rp.PARTS)
    np.testing.assert_allclose(sum(parts.values()), residual, rtol=1e-5, atol=1e-5)
    shares = [float(rp.part_summary(p, residual)["share"]) for p in parts.values()]
    norms = np.linalg.norm(np.asarray(residual), axis=-1).mean(0)
    np.testing.assert_allclose(sum(shares), norms[0] - norms[1:].mean(), rtol=1e-4, atol=1e-5)


def test_a_removed_block_gives_a_zero_part():
    parts, _ = _parts_and_residual(dataclasses.replace(CFG, layers_without_mlp=(0,)))
    assert np.all(np.asarray(parts["mlp"]) == 0)
    assert np.any(np.asarray(parts["attention"]) != 0)
    parts, _ = _parts_and_residual(dataclasses.replace(CFG, layers_without_attention=(0,)))
    assert np.all(np.asarray(parts["attention"]) == 0)
    assert np.any(np.asarray(parts["mlp"]) != 0)


def test_layer0_summary_is_plain_floats_and_zero_for_a_removed_mlp():
    model = GPT(dataclasses.replace(CFG, layers_without_mlp=(0,)), rngs=nnx.Rngs(0))
    summary = rp.layer0_summary(model, _tokens())
    assert set(summary) == set(rp.PARTS)
    assert all(isinstance(v, float) for row in summary.values() for v in row.values())
    assert summary["mlp"] == {"bos": 0.0, "others": 0.0, "share": 0.0}
    assert summary["attention"]["bos"] > 0


def test_every_run_trains_as_long_as_the_main_run_in_the_presets():
    for cfg in rp.PRESETS.values():
        assert cfg.sweep.ablation_steps == cfg.train.steps
        assert {c.train.steps for c in rp.run_configs(cfg).values()} == {cfg.train.steps}


def test_growth_from_is_validated():
    quick = rp.PRESETS["quick"]
    for bad in (quick.sweep.ablation_steps, quick.train.eval_every + 1, -quick.train.eval_every):
        with pytest.raises(ConfigError, match="growth_from"):
            dataclasses.replace(quick, sweep=dataclasses.replace(quick.sweep, growth_from=bad))


class _Rows:
    """A stand-in for a TrainResult: eval rows with the layer-0 parts and gap."""

    def __init__(self, rows):
        self.rows = rows

    def evals(self):
        return self.rows


def _row(step, gap, mlp_share, mlp_bos=2.0):
    parts = {p: {"bos": 1.0, "others": 1.0, "share": 0.0} for p in rp.PARTS}
    parts["mlp"] = {"bos": mlp_bos, "others": 1.0, "share": mlp_share}
    return {"step": step, "layers": [{"res_peak": gap}], "layer0_parts": parts}


def test_growth_is_measured_between_growth_from_and_ablation_steps():
    cfg = dataclasses.replace(
        rp.PRESETS["quick"], sweep=rp.ResidualPeakSweep(growth_from=250, ablation_steps=1000)
    )
    rows = [_row(0, 0.0, 0.0), _row(250, 3.0, -1.0), _row(500, 9.0, 9.0), _row(1000, 5.0, 1.5)]
    g = rp.growth(rp.BBRun(cfg, None, None, _Rows(rows)), cfg)
    assert g["gap_change"] == 2.0
    assert g["mlp_share_change"] == 2.5
    assert g["mlp_bos@1000"] / g["mlp_others@1000"] == 2.0
    assert np.isnan(rp.ratio(1.0, 0.0))
    assert np.isnan(rp.ratio(1.0, -2.0))
