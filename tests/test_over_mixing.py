"""Over-mixing toy (Barbero et al. 2025): exact identities and orderings, in float64."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proofs_numeric import mixing_toy as toy
from proofs_numeric.over_mixing import PRESETS, first_token, jacobian_bound, rank_collapse

SMALL = dataclasses.replace(
    PRESETS["quick"],
    seeds=2,
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
    assert out["violations"] == 0 and out["median_ratio"] >= 1.0


def test_tiny_sink_slows_collapse():
    """§2 in miniature: μ after L layers increases with the sink mass a."""
    rc = rank_collapse(SMALL)
    mu_end = [rc["mu_by_a"][a][-1] for a in SMALL.a_values]
    assert np.all(np.diff(mu_end) > 0)
    assert rc["required_a"][8] >= rc["required_a"][2]
