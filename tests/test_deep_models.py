"""Layers run by one scanned block, and remat (issue 15 §3): the same model as the unrolled one."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.batch import Batch
from sinks_jax.config import ModelConfig, OptimConfig
from sinks_jax.errors import ConfigError
from sinks_jax.model import GPT, Capture, Interventions, copy_parameters
from sinks_jax.train import init_state, make_optimizer, make_train_step, next_token_loss

UNROLLED = ModelConfig(vocab_size=20, max_len=16, d_model=16, n_layers=3, n_heads=2, d_mlp=32)


def _tokens() -> jax.Array:
    return jax.random.randint(jax.random.key(0), (2, 10), 0, UNROLLED.vocab_size)


def _grads(model: GPT, batch: Batch):
    graphdef, params = nnx.split(model, nnx.Param)
    return jax.grad(lambda p: next_token_loss(nnx.merge(graphdef, p), batch))(params)


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_layers_compute_what_the_unrolled_model_computes(remat):
    unrolled = GPT(UNROLLED, rngs=nnx.Rngs(0))
    scanned_cfg = dataclasses.replace(UNROLLED, scan_layers=True, remat=remat)
    scanned = GPT(scanned_cfg, rngs=nnx.Rngs(1))
    copy_parameters(unrolled, scanned)
    toks = _tokens()
    a, b = unrolled(toks, capture=Capture.all()), scanned(toks, capture=Capture.all())
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)  # fp32 reassociation
    for layer_a, layer_b in zip(a.observed, b.observed, strict=True):  # per layer, as unrolled
        np.testing.assert_allclose(layer_a.attn_weights, layer_b.attn_weights, atol=1e-5)
        np.testing.assert_allclose(layer_a.residual, layer_b.residual, rtol=1e-5, atol=1e-5)
    batch = Batch(inputs=toks, targets=jnp.roll(toks, -1, 1))
    g_unrolled = nnx.to_pure_dict(_grads(unrolled, batch))
    g_scanned = nnx.to_pure_dict(_grads(scanned, batch))
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *[g_unrolled["blocks"][i] for i in range(3)])
    for x, y in zip(jax.tree.leaves(stacked), jax.tree.leaves(g_scanned["blocks"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_copy_parameters_round_trip_is_exact():
    scanned = GPT(dataclasses.replace(UNROLLED, scan_layers=True), rngs=nnx.Rngs(2))
    unrolled = GPT(UNROLLED, rngs=nnx.Rngs(3))
    copy_parameters(scanned, unrolled)
    back = GPT(dataclasses.replace(UNROLLED, scan_layers=True), rngs=nnx.Rngs(4))
    copy_parameters(unrolled, back)
    for x, y in zip(
        jax.tree.leaves(nnx.state(scanned, nnx.Param)),
        jax.tree.leaves(nnx.state(back, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)


def test_scanned_model_trains_and_refuses_what_needs_distinct_layers():
    cfg = dataclasses.replace(UNROLLED, scan_layers=True, remat=True)
    optimizer = make_optimizer(OptimConfig(), 10)
    graphdef, state = init_state(GPT(cfg, rngs=nnx.Rngs(0)), optimizer, 0)  # the step donates it
    step = make_train_step(graphdef, optimizer)
    toks = _tokens()
    state, metrics = step(state, Batch(inputs=toks, targets=jnp.roll(toks, -1, 1)))
    assert bool(jnp.isfinite(metrics["loss"]))
    model = GPT(cfg, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="copy_parameters"):
        model(toks, interventions=Interventions(zero_mlp=(1,)))
    with pytest.raises(ValueError, match="copy_parameters"):
        model(toks, capture=Capture(attention=True, layers=(0,)))
    with pytest.raises(ConfigError, match=r"model\.scan_layers"):
        dataclasses.replace(cfg, layers_without_mlp=(1,))
