"""Over-mixing toy (Barbero et al. 2025): exact identities and orderings, in float64."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proofs_numeric import mixing_toy as toy
from proofs_numeric.over_mixing import (
    PRESETS,
    depth_to_reach,
    first_token,
    jacobian_bound,
    median_ci,
    pure_attention,
    rank_collapse,
)

SMALL = dataclasses.replace(
    PRESETS["quick"],
    draws=3,
    pure_depth=8,
    early_depth=2,
    influence_draws=2,
    n_boot=200,
    d=8,
    n=12,
    max_depth=8,
    bisect_depths=(2, 8),
    a_values=(0.0, 0.5, 0.9),
    b_values=(4.0,),
    influence_depths=(1, 2, 4, 8),
    bound_instances=20,
)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_l1_attention_jacobian_scales_exactly_by_one_minus_a():
    """§4 identity: at L = 1, ∂y_n/∂x_i (i < n) with sink mass a is (1 − a) × its a = 0 value."""
    w = toy.random_weights(jax.random.key(0), 8, 1)
    x = jax.random.normal(jax.random.key(1), (10, 8))
    base = toy.last_token_jacobian(x, w, toy.NO_SINK, depth=1)[:-1]
    for a in (0.3, 0.9):
        scaled = toy.last_token_jacobian(x, w, toy.Sink("mass", a), depth=1)[:-1]
        np.testing.assert_allclose(scaled, (1 - a) * base, rtol=0, atol=1e-12)  # float64


def test_mass_sink_rows_and_zero_value():
    z = toy.layer_norm(jax.random.normal(jax.random.key(2), (6, 8)))
    w = toy.random_weights(jax.random.key(3), 8, 1)
    att = toy.attention_weights(z, w["wq"][0], w["wk"][0], toy.Sink("mass", 0.25))
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(att[1:, 0], 0.25, atol=1e-12)
    assert float(jnp.abs(jnp.triu(att, 1)).max()) == 0.0


def test_linear_uniform_influence_is_exact_and_ordered():
    """§6: x <- x + A x with uniform causal A: ratio 1.0, 3.3, 24.5, 654 at L = 1, 2, 4, 8."""
    res = first_token(dataclasses.replace(SMALL, n=64))["linear"]
    np.testing.assert_allclose(
        [res[d]["ratio"] for d in (1, 2, 4, 8)], [1.0, 3.3197, 24.5206, 654.279], rtol=1e-4
    )
    assert all(res[d]["spearman"] == pytest.approx(-1.0) for d in (2, 4, 8))


def test_jacobian_bound_holds_on_random_instances():
    """§8: measured ≤ bound (0 violations) on a few instances."""
    out = jacobian_bound(SMALL)
    assert out["violations"] == 0
    assert out["median_ratio"] >= 1.0


def test_tiny_sink_slows_collapse():
    """§2 in miniature: μ after L layers increases with the sink mass a."""
    rc = rank_collapse(SMALL)
    mu_end = [np.median(rc["mu_by_a_NxL"][a][:, -1]) for a in SMALL.a_values]
    assert np.all(np.diff(mu_end) > 0)
    assert rc["required_a"][8] >= rc["required_a"][2]


def test_pure_stack_collapses_and_a_sink_leaves_mu_unchanged():
    """§0: without residual, μ falls with depth; a mass-a sink gives x_L = (1 − a)^L x_L(0)."""
    out = pure_attention(SMALL)
    med = np.median(out["mu_by_a_NxL"][0.0], axis=0)
    assert np.all(np.diff(med) < 0)
    assert med[-1] / med[0] < 0.1
    assert out["max_abs_diff_with_sink"] <= 1e-10
    w = toy.random_weights(jax.random.key(4), 8, 6)
    x = jax.random.normal(jax.random.key(5), (10, 8))
    y0 = toy.forward(x, w, toy.NO_SINK, residual=False)
    ya = toy.forward(x, w, toy.Sink("mass", 0.7), residual=False)
    np.testing.assert_allclose(ya, 0.3**6 * y0, rtol=1e-10, atol=0)


def test_sink_is_an_euler_step_of_size_one_minus_a():
    """§2 at first order: one layer with sink mass a is x + (1 − a) f(x) exactly, and with shared
    weights the depth·(1 − a) to reach μ* converges at first order in h = 1 − a (the successive
    differences halve when h halves)."""
    w = toy.random_weights(jax.random.key(6), 8, 120, shared=True)
    x = jax.random.normal(jax.random.key(7), (13, 8))
    f = toy.forward(x, w, toy.NO_SINK, depth=1) - x
    fa = toy.forward(x, w, toy.Sink("mass", 0.6), depth=1) - x
    np.testing.assert_allclose(fa, 0.4 * f, rtol=0, atol=1e-12)
    t = []
    for a in (0.9, 0.95, 0.975):
        _, stream = toy.forward(x, w, toy.Sink("mass", a), collect=True)
        mu = np.asarray(jax.vmap(lambda s: toy.token_uniformity(s[1:]))(stream))
        t.append(depth_to_reach(mu, 0.8) * (1 - a))
    assert np.isfinite(t).all()
    assert (t[0] - t[1]) / (t[1] - t[2]) == pytest.approx(2.0, abs=0.2)


def test_median_ci_and_depth_to_reach():
    med, lo, hi = median_ci(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), 500, seed=0)
    assert med == 3.0
    assert 1.0 <= lo <= med <= hi <= 100.0
    again = median_ci(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), 500, seed=0)
    assert (lo, hi) == (again[1], again[2])  # seeded
    med2, _, _ = median_ci(np.array([[1.0, np.nan], [2.0, np.inf], [3.0, 5.0]]), 50, seed=1)
    assert med2[0] == 2.0
    assert med2[1] == np.inf  # non-finite counts as never reached
    assert depth_to_reach(np.array([1.0, 0.9, 0.7, 0.5]), 0.8) == pytest.approx(1.5)
    assert depth_to_reach(np.array([1.0, 0.9]), 0.8) == np.inf
