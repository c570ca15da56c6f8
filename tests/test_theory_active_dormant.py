"""Guo et al. 2024 theory toys: mutual reinforcement (§3.2) and Adam's residual peak (§3.3)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from proofs_numeric import adam_vs_sgd_peak as peak
from proofs_numeric import mutual_reinforcement as mr
from sinks_jax.cli import RunContext


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_adam_grows_m_and_gradient_steps_do_not():
    cfg = peak.PRESETS["quick"]
    adam = peak.trajectory(optax.adam(cfg.lr, b1=cfg.b1, b2=cfg.b2), cfg.m0, 2000)
    sgd = peak.trajectory(optax.sgd(cfg.lr), cfg.m0, 2000)
    assert adam.dtype == jnp.float64
    assert float(adam[-1]) > 20.0  # Adam moves ≈ lr per step early on
    assert float(sgd[-1]) - cfg.m0 < 0.02  # Σ lr·g over 2000 steps is ≈ 0.3·Σ ln t/(1000 t)
    assert np.all(np.diff(np.asarray(adam)) >= 0)  # g > 0: m never decreases


def test_reduced_model_loss_is_zero_iff_the_head_is_a_no_op():
    cfg = mr.ReinforcementConfig()
    problem = mr.Problem.sample(cfg)
    ns = jnp.arange(1.0, 33.0)
    # an infinite sink with β_⊥ = 0 is a no-op: KL = 0 up to e^{-α} n |z̄| terms
    a = jnp.full(cfg.n_tokens, 40.0)
    b = jnp.full(cfg.vocab, 3.0)  # a constant β is a softmax no-op
    assert float(mr.loss(a, b, problem, ns)) < 1e-12  # float64
    # with one fixed n a finite α suffices: β_⊥ = −n z̄ e^{−α} cancels the other keys exactly
    a0 = jnp.zeros(cfg.n_tokens)
    cancel = -4.0 * problem.zbar_K
    assert float(mr.loss(a0, cancel, problem, jnp.asarray([4.0]))) < 1e-14
    assert float(mr.loss(a0, cancel, problem, ns)) > 1e-3  # …but not for every n at once


def test_descend_matches_manual_gradient_steps():
    cfg = mr.ReinforcementConfig()
    problem = mr.Problem.sample(cfg)
    ns = jnp.arange(1.0, 9.0)
    a, b = jnp.zeros(cfg.n_tokens), jnp.zeros(cfg.vocab)
    alphas, perps, beta = mr.descend(a, b, problem, ns, 0.5, 3)
    for _ in range(3):
        ga, gb = jax.grad(mr.loss, argnums=(0, 1))(a, b, problem, ns)
        a, b = a - 0.5 * ga, b - 0.5 * gb
    np.testing.assert_allclose(alphas[-1], a, rtol=1e-12)  # float64, same ops
    np.testing.assert_allclose(beta, b, rtol=1e-12)
    np.testing.assert_allclose(perps[-1], mr.beta_perp_norm(b), rtol=1e-12)


def test_mutual_reinforcement_short_run_shows_the_sink(tmp_path):
    """20k steps instead of 2·10^5: α is already growing with ln t, β_⊥ shrinking."""
    cfg = dataclasses.replace(
        mr.PRESETS["quick"],
        steps=20_000,
        fit_from=2_000,
        freeze_at=2_000,
        freeze_steps=5_000,
        control_n=(1, 16),
    )
    out = mr.run(cfg, RunContext(tmp_path, "test", False, False))
    claims = {c.name: c for c in out["claims"]}
    assert claims["alpha_slope_per_ln_t"].passed, claims["alpha_slope_per_ln_t"]
    assert claims["beta_perp_loglog_slope"].measured < -0.3
    assert claims["fixed_n_max_alpha_slope_per_ln_t"].passed
    assert claims["frozen_larger_beta_slows_alpha_growth"].passed
    assert claims["frozen_larger_alpha_speeds_beta_decay"].passed
    assert (tmp_path / "mutual_reinforcement.png").exists()
