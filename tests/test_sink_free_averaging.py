"""Trigger-at-query averaging and the sink-free averaging experiment's pieces (tiny, CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.errors import ConfigError
from sinks_jax.model import ModelOutput
from sinks_jax.tasks import averaging as av


class _Fixed(nnx.Module):
    """A stand-in model that returns fixed outputs (whatever its inputs)."""

    def __init__(self, output_BxNxX):
        self.output = nnx.Variable(jnp.asarray(output_BxNxX))

    def __call__(self, features, **options):
        return ModelOutput(logits=self.output[...])


def _oracle(output_BxNxX):
    return _Fixed(output_BxNxX)


def test_trigger_target_is_the_mean_of_the_preceding_content_and_zero_elsewhere():
    cfg = av.TriggerQueryConfig(seq_len=10, d_x=3)
    b = av.sample_trigger_query(cfg, jax.random.key(0), 64)
    f, y = np.asarray(b.features), np.asarray(b.targets)
    assert f.shape == (64, 11, 7)
    assert y.shape == (64, 11, 3)
    np.testing.assert_array_equal(f[:, :, 3:6].sum(-1), 1.0)  # one indicator per token
    np.testing.assert_array_equal(np.asarray(b.target_mask), 1.0)  # every position supervised
    has, query = np.asarray(b.has_trigger), np.asarray(b.query)
    assert 0 < has.mean() < 1
    assert query.min() >= 2
    assert query.max() <= 10
    for i in range(64):
        p = query[i]
        trigger = f[i, :, 3 + av.SEP] > 0
        if has[i]:
            assert np.flatnonzero(trigger).tolist() == [p]
            assert (f[i, p, :3] == 0).all()
            np.testing.assert_allclose(y[i, p], f[i, 1:p, :3].mean(0), rtol=1e-5, atol=1e-6)
            others = np.delete(y[i], p, axis=0)
        else:
            assert not trigger.any()
            assert f[i, p, 3 + av.CONTENT] == 1
            others = y[i]
        assert (others == 0).all()


def test_trigger_blind_baseline_is_one_minus_the_trigger_rate():
    for prob in (0.5, 0.25):
        cfg = av.TriggerQueryConfig(seq_len=12, d_x=4, trigger_prob=prob)
        b = av.sample_trigger_query(cfg, jax.random.key(1), 8192)
        assert abs(av.trigger_blind_baseline(b, cfg.d_x) - (1 - prob)) < 0.03
    # the closed form is the minimum over c of relMSE(c·m, y)
    y = jax.random.normal(jax.random.key(2), (50, 3)) * (jnp.arange(50) % 2)[:, None]
    m = y + 0.3 * jax.random.normal(jax.random.key(3), (50, 3))
    grid = [float(av.rel_mse(c * m, y)) for c in np.linspace(0, 1.5, 3001)]
    assert abs(av.blind_rel_mse(y, m) - min(grid)) < 1e-4


def test_query_and_masked_rel_mse_of_oracle_and_zero_predictors():
    cfg = av.TriggerQueryConfig(seq_len=8, d_x=2)
    b = av.sample_trigger_query(cfg, jax.random.key(4), 256)
    assert av.query_rel_mse(_oracle(b.targets), b) == 0.0
    assert av.query_rel_mse(_oracle(jnp.zeros_like(b.targets)), b) == pytest.approx(1.0)
    dense = av.AveragingConfig(seq_len=8, d_x=2, conditional=True, running_mean=True)
    d = av.sample(dense, jax.random.key(5), 256)
    assert float(d.target_mask[:, 1:].min()) == 1.0  # dense: every position t >= 1
    assert av.masked_rel_mse(_oracle(d.targets), d) == 0.0
    m = av.running_content_mean(d.features, 2)
    np.testing.assert_allclose(np.asarray(d.targets), np.where(d.targets != 0, m, 0), atol=1e-6)
    assert 0.5 < av.dense_blind_baseline(d, 2) < 1.0


def test_trigger_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="p_min"):
        av.TriggerQueryConfig(p_min=1)
    with pytest.raises(ConfigError, match="trigger_prob"):
        av.TriggerQueryConfig(trigger_prob=1.0)
    with pytest.raises(ConfigError, match="p_max"):
        av.TriggerQueryConfig(seq_len=10, p_max=11)


def test_trigger_sink_scores_and_claims_on_an_untrained_model():
    from experiments import sink_free_averaging as sf

    cfg = sf.SinkFreeConfig()
    task = cfg.trigger_task()
    model = av.make_model(
        av.AveragingExperimentConfig(data=task), nnx.Rngs(0)
    )  # untrained, softmax
    b = av.trigger_eval_batch(task, 0, 32)
    s = sf.trigger_sink_scores(model, b)
    assert set(s) == {"bos_sink", "bos_at_trigger", "sep_sink"}
    assert all(0.0 <= v <= 1.0 for v in s.values())
    row = {"best_rel_mse": 0.001, "trigger_blind_baseline": 0.5, "bos_sink": 0.99}
    row["bos_at_trigger"] = 0.001
    results = {("trigger", "softmax"): row, ("trigger", "relu"): {**row, "bos_sink": 0.01}}
    claims = {c.name: c.passed for c in sf.make_claims(results, 0.01)}
    assert claims == {
        "trigger_softmax_best_rel_mse": True,
        "trigger_softmax_bos_sink_non_trigger": True,
        "trigger_softmax_bos_at_trigger": True,
        "trigger_relu_best_rel_mse": True,
        "trigger_relu_bos_sink_non_trigger": True,
    }
    assert sf.solved_step([{"step": 0, "rel_mse": 1.0}, {"step": 50, "rel_mse": 0.005}], 0.01) == 50


def _short_run(tmp_path, tiny: bool):
    import dataclasses

    from experiments import sink_free_averaging as sf
    from sinks_jax.cli import RunContext
    from sinks_jax.config import TrainConfig

    cfg = sf.SinkFreeConfig(
        sweep=sf.SinkFreeSweep(dense_variants=("relu",)),
        train=TrainConfig(steps=10, eval_every=10, checkpoint_every=10, progress=False),
    )
    if tiny:  # T 8, d_x 4, d_model 16
        model = dataclasses.replace(cfg.model, d_model=16, d_mlp=16)
        cfg = dataclasses.replace(cfg, data=av.AveragingConfig(seq_len=8, d_x=4), model=model)
    out = sf.run(cfg, RunContext(tmp_path, "test", False, False))
    assert [(r["task"], r["attention"]) for r in out["results"]] == [
        *[("averaging", v) for v in sf.VARIANTS],
        *[("trigger", v) for v in sf.VARIANTS],
        ("dense", "relu"),
    ]
    trig = out["results"][4]
    assert trig["trigger_blind_baseline"] == 0.5
    assert trig["final_rel_mse_all_positions"] > 0
    assert (tmp_path / "sink_free_averaging.png").exists()


def test_tiny_run_reports_every_task_and_variant(tmp_path):
    _short_run(tmp_path, tiny=True)


@pytest.mark.slow
def test_short_run_reports_every_task_and_variant(tmp_path):
    _short_run(tmp_path, tiny=False)


def test_an_empty_dense_variant_list_is_refused_before_training():
    from experiments import sink_free_averaging as sf

    with pytest.raises(ConfigError, match="dense_variants"):
        sf.SinkFreeConfig(sweep=sf.SinkFreeSweep(dense_variants=()))
    with pytest.raises(ConfigError, match="trigger_prob"):
        sf.SinkFreeConfig(sweep=sf.SinkFreeSweep(trigger_prob=1.5))
