"""Catch, tag, release (Zhang, Khan & Papyan 2025): task, construction, rank argument, training."""

import dataclasses

import jax
import numpy as np
import pytest

from proofs_numeric import ctr_construction as cc
from proofs_numeric import one_layer_cannot_average as ol
from sinks_jax.config import TrainConfig
from sinks_jax.errors import ConfigError
from sinks_jax.tasks import averaging as av


def test_averaging_task_features_and_targets():
    cfg = av.AveragingConfig(seq_len=10, d_x=3)
    b = av.sample(cfg, jax.random.key(0), 16)
    f = np.asarray(b.features)
    assert f.shape == (16, 11, 7)
    np.testing.assert_array_equal(f[:, :, 3:6].sum(-1), 1.0)  # exactly one indicator per token
    assert (f[:, :, 6] == 0).all()  # the tag slot is empty
    for i in range(16):
        p = int(b.sep[i])
        assert f[i, p, 4] == 1
        assert f[i, 0, 3] == 1
        np.testing.assert_allclose(b.targets[i, -1], f[i, p + 1 :, :3].mean(0), rtol=1e-5)
    assert float(b.target_mask.sum()) == 16  # last position only


def test_running_mean_and_conditional_variants():
    cfg = av.AveragingConfig(seq_len=8, d_x=2, running_mean=True)
    b = av.sample(cfg, jax.random.key(1), 4)
    for i in range(4):
        p = int(b.sep[i])
        np.testing.assert_array_equal(np.asarray(b.target_mask[i]) > 0, np.arange(9) > p)
        np.testing.assert_allclose(b.targets[i, p + 1], b.features[i, p + 1, :2], rtol=1e-6)
    cond = av.AveragingConfig(seq_len=8, d_x=2, conditional=True)
    b = av.sample(cond, jax.random.key(2), 64)
    has = np.asarray(b.has_sep)
    assert 0 < has.mean() < 1
    assert np.abs(np.asarray(b.targets)[~has]).max() == 0.0
    i = int(np.argmax(has))
    content = np.asarray(b.features[i, :, 2 + av.CONTENT]) > 0
    np.testing.assert_allclose(
        b.targets[i, -1], np.asarray(b.features[i, content, :2]).mean(0), rtol=1e-5
    )


def test_averaging_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="p_max"):
        av.AveragingConfig(seq_len=10, p_max=12)


def test_construction_error_and_sink_match_the_theory():
    with jax.enable_x64(True):
        data = cc.sample_sequences(jax.random.key(0), 64, 8, 64, 8)
        cfg = cc.ConstructionConfig()
        err16, sink16 = cc.median_error(cfg, 16.0, data)
        err32, _ = cc.median_error(cfg, 32.0, data)
        err8, sink8 = cc.median_error(cfg, 8.0, data)
    # float64
    assert err16 <= 1e-6
    assert err32 <= 1e-12
    assert err8 > err16
    # ε₁ = (e^{α a_B} + T) e^{−α a_S} bounds the attention leaving SEP (T ≤ 64, a_S = 2, a_B = 1)
    eps8 = (np.exp(8.0) + 64) * np.exp(-16.0)
    assert sink8 >= 1 - eps8 - 1e-12
    assert sink16 > sink8
    w = cc.construction(8, 16.0, 16.0, 2.0, 1.0)
    assert np.linalg.matrix_rank(w.q1 @ w.k1.T) == 1
    assert np.linalg.matrix_rank(w.q2 @ w.k2.T) == 1


def test_target_jacobian_rank_and_eckart_young_residual():
    m = ol.target_submatrix(24)
    assert np.linalg.matrix_rank(m) == 11
    assert abs(ol.rank_residual(m, 2) - 0.389) < 1e-3  # reference value
    assert ol.rank_residual(m, 22) == 0.0


def test_one_layer_jacobian_rank_is_at_most_2h_even_untrained():
    """The rank bound is structural: it holds for any one-layer weights (float64 autodiff)."""
    from flax import nnx

    base = av.AveragingExperimentConfig(data=av.AveragingConfig(seq_len=16))
    for heads in (1, 2):
        c = ol.model_config(base, 1, heads)
        model = av.make_model(c, nnx.Rngs(0))
        with jax.enable_x64(True):
            j = ol.jacobian_matrix(model, c.data, 0)
            sv = np.linalg.svd(j, compute_uv=False)
        assert (sv > 1e-9 * sv[0]).sum() <= 2 * heads  # float64 round-off ≈ 1e-16


def _two_layers_beat_one_layer(base: av.AveragingExperimentConfig) -> None:
    ev = av.eval_batch(base.data, 0, 512)
    rel, models = {}, {}
    for n_layers in (1, 2):
        c = ol.model_config(base, n_layers, 1)
        models[n_layers] = av.train_averaging(c, None).model()
        rel[n_layers] = av.last_position_rel_mse(models[n_layers], ev)
    assert rel[1] > 0.3, rel
    assert rel[2] < 0.1, rel
    metrics = av.ctr_metrics(models[2], ev)
    assert metrics["retrieval_mass"] > 0.8
    assert set(metrics) >= {"sep_sink", "bos_sink_before_sep", "tag_energy", "rel_mse"}


def test_tiny_training_two_layers_beat_one_layer():
    """T 8, d_x 4, d_model 16, Adam 1e-2, 300 steps: the two-layer model solves the task
    (relMSE 1e-4, retrieval mass 0.996; 0.025 and 0.98 at 200 steps), the one-layer one stays at
    0.45."""
    base = av.AveragingExperimentConfig(
        data=av.AveragingConfig(seq_len=8, d_x=4),
        train=TrainConfig(steps=300, eval_every=300, checkpoint_every=300, progress=False),
    )
    model = dataclasses.replace(base.model, d_model=16, d_mlp=16)
    optim = dataclasses.replace(base.optim, lr=1e-2)
    _two_layers_beat_one_layer(dataclasses.replace(base, model=model, optim=optim))


@pytest.mark.slow
def test_short_training_two_layers_beat_one_layer():
    """2000 steps at the default size: the two-layer model is far below the one-layer plateau."""
    _two_layers_beat_one_layer(
        av.AveragingExperimentConfig(
            train=TrainConfig(steps=2000, eval_every=2000, checkpoint_every=2000, progress=False)
        )
    )


def test_low_rank_surgery_full_rank_reproduces_the_model_and_rank1_is_rank1():
    from flax import nnx

    from experiments import ctr_low_rank as lr

    cfg = av.AveragingExperimentConfig()
    model = av.make_model(cfg, nnx.Rngs(3))
    ev = av.eval_batch(cfg.data, 0, 32)
    form = lr.layer1_form(model)
    same = lr.with_layer1_form(model, form)
    np.testing.assert_allclose(
        same(ev.features).logits, model(ev.features).logits, rtol=1e-4, atol=1e-5
    )  # float32 SVD round trip
    one = lr.with_layer1_form(model, lr.truncate(form, 1))
    assert np.linalg.matrix_rank(lr.layer1_form(one), tol=1e-5 * np.linalg.norm(form)) == 1
    np.testing.assert_array_equal(lr.layer1_form(model), form)  # the original is untouched


def test_ctr_emergence_short_run_reports_every_seed(tmp_path):
    from experiments import ctr_emergence as ce
    from sinks_jax.cli import RunContext

    cfg = ce.EmergenceConfig(
        sweep=ce.EmergenceSweep(n_seeds=2, lrs=(1e-4,), seeds_per_lr=1),
        train=TrainConfig(steps=50, eval_every=50, checkpoint_every=50, progress=False),
    )
    out = ce.run(cfg, RunContext(tmp_path, "test", False, False))
    assert [(r["setting"], r["seed"]) for r in out["per_seed"]] == [
        ("adam 0.003", 0),
        ("adam 0.003", 1),
        ("adam 0.0001", 0),
    ]
    assert [r["seeds"] for r in out["success_rate_vs_lr"]] == [2, 1]
    # 50 steps solve nothing: every run, the sweep's included, is a failed run to test
    assert out["n_failed_runs_tested"] == 3
    assert out["notes"][0].startswith("adam 0.003: 2 of 2 seeds failed")
    assert {c.name for c in out["claims"]} >= {"successful_seeds", "failed_max_sep_sink"}
    assert (tmp_path / "attention_best_seed.png").exists()


def test_ctr_emergence_sweep_is_set_from_the_command_line():
    from experiments import ctr_emergence as ce
    from sinks_jax.config import apply_overrides

    cfg = apply_overrides(ce.PRESETS["quick"], ["sweep.lrs=[0.001, 0.003]", "sweep.seeds_per_lr=2"])
    # a swept rate equal to the main one is not trained twice
    assert list(ce.settings(cfg)) == ["adam 0.003", "adam 0.001"]
    swept, n_seeds = ce.settings(cfg)["adam 0.001"]
    assert (swept.optim.name, swept.optim.lr, n_seeds) == ("adam", 0.001, 2)
    with pytest.raises(ConfigError, match=r"sweep\.lrs"):
        apply_overrides(ce.PRESETS["quick"], ["sweep.lrs=[-1.0]"])


def test_anti_sink_penalty_adds_the_largest_column_mean():
    from flax import nnx

    from experiments import sink_free_averaging as sf

    cfg = av.AveragingExperimentConfig()
    model = av.make_model(cfg, nnx.Rngs(0))
    batch = av.eval_batch(cfg.data, 0, 16)
    base = float(av.mse_loss(model, batch))
    pen = float(sf.penalised_loss(1.0)(model, batch))
    # two layers, one head each; a column mean is in (0, 1] and column 0 is seen by every query
    assert base + 2 / (cfg.data.seq_len + 1) < pen <= base + 2.0
