"""Issue-5 experiment modules at small scale: configs, data, and the mechanism a short run shows."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import optimizer_mitigations as om
from experiments import residual_peak as rp
from experiments import two_domain_heads as td
from sinks_jax.cli import RunContext
from sinks_jax.config import ModelConfig, OptimConfig, TrainConfig
from sinks_jax.errors import ConfigError
from sinks_jax.model import GPT
from sinks_jax.tasks.bigram_backcopy.config import BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import make_task

TINY_MODEL = ModelConfig(d_model=32, d_mlp=64, n_layers=3, n_heads=1, max_len=32)
TINY_DATA = BBDataConfig(seq_len=32, batch_size=32, eval_batch_size=64)
# the default run's end-to-end runs (the TINY_* sizes above: the same tests in the slow set)
TINIER_MODEL = ModelConfig(d_model=16, d_mlp=32, n_layers=3, n_heads=1, max_len=16)
TINIER_DATA = BBDataConfig(seq_len=16, batch_size=16, eval_batch_size=32)


def test_residual_peak_config_is_validated():
    quick = rp.PRESETS["quick"]
    with pytest.raises(ConfigError, match="n_layers"):
        dataclasses.replace(quick, model=dataclasses.replace(quick.model, n_layers=2))
    with pytest.raises(ConfigError, match=r"sweep\.ablation_steps"):
        dataclasses.replace(rp.PRESETS["quick"], sweep=rp.ResidualPeakSweep(ablation_steps=333))


def test_residual_peak_ablation_configs_change_only_the_named_parts():
    cfg = rp.PRESETS["quick"]
    for changes in rp.ABLATIONS.values():
        run = rp.base_config(cfg, cfg.sweep.ablation_steps, **changes)
        assert run.train.steps == cfg.sweep.ablation_steps
        assert run.optim == cfg.optim
        assert run.data == cfg.data
        for name, value in changes.items():
            assert getattr(run.model, name) == value


def test_mitigation_runs_share_the_initialisation():
    cfgs = om.run_configs(om.PRESETS["quick"])
    params = {
        name: nnx.state(GPT(c.model, rngs=nnx.Rngs(c.seed)), nnx.Param)
        for name, c in cfgs.items()
        if c.model.n_layers == 3
    }
    ref = jax.tree.leaves(params["AdamW"])
    for name in ("SGD", "ReLU attention"):
        for a, b in zip(ref, jax.tree.leaves(params[name]), strict=True):
            np.testing.assert_array_equal(a, b)
    assert cfgs["SGD"].optim.name == "sgd"
    assert cfgs["SGD"].optim.lr == 0.03
    assert cfgs["ReLU attention"].model.attention == "relu"


@pytest.mark.parametrize("marker", td.MARKERS)
def test_two_domains_share_the_vocabulary_and_differ_as_described(marker):
    task = make_task(BBDataConfig(), 0)
    dom = td.make_domains(task, marker, 0)
    assert dom.b.vocab_size == task.vocab_size
    assert dom.b.triggers == ()
    np.testing.assert_allclose(dom.b.cond.sum(1)[dom.b.marginal > 0], 1.0, atol=1e-6)
    batch = td.mixed_batch(dom, 0, 0, 256, 16, 0.5)
    first = np.asarray(batch.inputs[:, 0])
    if marker == "first_token":
        assert set(first) == {task.bos_id, task.delimiter_id}
        assert 0.35 < (first == task.delimiter_id).mean() < 0.65
        np.testing.assert_array_equal(dom.b.cond, task.cond)
    else:
        assert set(first) == {task.bos_id}
        assert not np.allclose(dom.b.cond, task.cond)
        # a relabelling: the multiset of transition probabilities is unchanged
        np.testing.assert_allclose(np.sort(dom.b.cond.ravel()), np.sort(task.cond.ravel()))


def _mitigations(tmp_path, model, data, steps):
    cfg = om.MitigationConfig(
        model=model,
        data=data,
        optim=OptimConfig(name="adamw", lr=3e-3, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(
            steps=steps, eval_every=steps // 2, checkpoint_every=steps, progress=False
        ),
        sweep=om.MitigationSweep(relu_one_layer_steps=steps // 2),
    )
    out = om.run(cfg, RunContext(tmp_path, "test", False, False))
    claims = {c.name: c for c in out["claims"]}
    assert claims["adam_layer0_bos_growth"].measured > claims["sgd_layer0_bos_growth"].measured
    assert (tmp_path / "layer0_bos_residual.png").exists()
    # the growth comparison states the steps and losses it is made at (report.md's notes)
    assert f"AdamW {steps} steps, backcopy CE" in out["notes"][0]


def test_optimizer_mitigations_tiny_run_adam_grows_the_bos_residual_more_than_sgd(tmp_path):
    """d 16, T 16, 40 steps: AdamW ×1.73, SGD ×1.29."""
    _mitigations(tmp_path, TINIER_MODEL, TINIER_DATA, steps=40)


@pytest.mark.slow
def test_optimizer_mitigations_short_run_adam_grows_the_bos_residual_more_than_sgd(tmp_path):
    _mitigations(tmp_path, TINY_MODEL, TINY_DATA, steps=200)


def _residual_peak(tmp_path, model, data, steps):
    cfg = rp.ResidualPeakConfig(
        model=model,
        data=data,
        optim=OptimConfig(name="adamw", lr=3e-3, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(
            steps=steps, eval_every=steps // 2, checkpoint_every=steps, progress=False
        ),
        sweep=rp.ResidualPeakSweep(ablation_steps=steps // 2),
    )
    out = rp.run(cfg, RunContext(tmp_path, "test", False, False))
    assert len(out["claims"]) == 13
    assert set(out["layer0_gap_at_ablation_steps"]) == {"1 layer", "3 layers", *rp.ABLATIONS}
    res = out["time_series"]["layer0_res_first"]
    assert res[-1] > res[0]  # Adam pushes the layer-0 BOS residual up from the start
    for name in ("dynamics_per_layer", "attention_3_layers", "ablation_layer0_gap"):
        assert (tmp_path / f"{name}.png").exists()


def test_residual_peak_tiny_run_writes_every_output(tmp_path):
    _residual_peak(tmp_path, TINIER_MODEL, TINIER_DATA, steps=20)


@pytest.mark.slow
def test_residual_peak_short_run_writes_every_output(tmp_path):
    _residual_peak(tmp_path, TINY_MODEL, TINY_DATA, steps=100)


def _two_domains(tmp_path, model, data, steps):
    cfg = td.TwoDomainConfig(
        model=dataclasses.replace(model, n_layers=2),
        data=data,
        optim=OptimConfig(name="adamw", lr=3e-3, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(
            steps=steps, eval_every=steps // 2, checkpoint_every=steps, progress=False
        ),
    )
    out = td.run(cfg, RunContext(tmp_path, "test", False, False))
    assert set(out["per_marker"]) == set(td.MARKERS)
    assert len(out["claims"]) == 8 * len(td.MARKERS)
    for marker in td.MARKERS:
        assert (tmp_path / f"head_maps_{marker}.png").exists()


def test_two_domain_tiny_run_reports_each_marker(tmp_path):
    _two_domains(tmp_path, TINIER_MODEL, TINIER_DATA, steps=20)


@pytest.mark.slow
def test_two_domain_short_run_reports_each_marker(tmp_path):
    _two_domains(tmp_path, TINY_MODEL, TINY_DATA, steps=60)
