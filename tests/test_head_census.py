"""The per-head census (sinks_jax.head_census) on a tiny untrained GPT."""

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import head_census
from sinks_jax.batch import Batch
from sinks_jax.config import ModelConfig
from sinks_jax.forward import apply
from sinks_jax.model import GPT, causal_mask, copy_parameters

CFG = ModelConfig(vocab_size=11, d_model=16, d_mlp=32, n_layers=2, n_heads=4, max_len=8)


def _forward(model, batch, capture):
    return apply(model, jnp.asarray(batch.inputs), capture=capture)


def test_wov_norms_are_the_per_head_value_output_products():
    model = GPT(CFG, rngs=nnx.Rngs(0))
    got = head_census.wov_norms(model)
    assert got.shape == (2, 4)
    k = CFG.d_model // CFG.n_heads
    attn = model.blocks[1].attn
    w_v = np.asarray(attn.value.kernel[...])[:, 2 * k : 3 * k]  # head 2
    w_o = np.asarray(attn.out.kernel[...])[2 * k : 3 * k]
    np.testing.assert_allclose(got[1, 2], np.linalg.norm(w_v @ w_o), rtol=1e-5)  # float32
    scanned = GPT(dataclasses.replace(CFG, scan_layers=True), rngs=nnx.Rngs(1))
    copy_parameters(model, scanned)
    np.testing.assert_allclose(head_census.wov_norms(scanned), got, rtol=1e-6)


def test_census_counts_and_kinds_agree():
    model = GPT(CFG, rngs=nnx.Rngs(0))
    tokens = np.random.default_rng(0).integers(0, 11, (3, 8)).astype(np.int32)
    batch = Batch(inputs=tokens, targets=tokens)
    mask = jnp.broadcast_to(causal_mask(8), (3, 8, 8))
    c = head_census.census(model, batch, _forward, mask, eps=0.3)
    bos = np.array(c["bos_score"])
    assert bos.shape == (2, 4)
    assert c["sink_heads"] == int((bos > 0.3).sum())
    assert c["sink_heads_by_layer"] == [int(r) for r in (bos > 0.3).sum(1)]
    kinds = [k for row in c["kind"] for k in row]
    assert kinds.count("sink") == c["sink_heads"]
    assert c["sink_heads"] + c["shrunk_heads"] + c["writing_heads"] == 8
    assert 0.0 <= c["bos_mass_weighted_by_output"] <= 1.0
    # every head of an untrained model writes something: nothing is "shrunk" at quiet = 0
    loud = head_census.census(model, batch, _forward, mask, eps=1.0, quiet=0.0)
    assert loud["writing_heads"] == 8
    # a head whose values are zeroed writes nothing: it is "shrunk"
    model.blocks[0].attn.out.kernel[...] = model.blocks[0].attn.out.kernel[...].at[:4].set(0.0)
    model.blocks[0].attn.out.bias[...] = jnp.zeros_like(model.blocks[0].attn.out.bias[...])
    quiet = head_census.census(model, batch, _forward, mask, eps=1.0, quiet=1e-6)
    assert quiet["kind"][0][0] == "shrunk"
    assert quiet["wov_norm"][0][0] == 0.0
