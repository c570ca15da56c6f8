"""Masks and attention variants."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sinks_jax.attention import (
    ReluAttention,
    SigmoidAttention,
    SoftmaxAttention,
    causal_mask,
    document_mask,
)


def test_causal_mask():
    m = np.asarray(causal_mask(4))[0]
    np.testing.assert_array_equal(m, np.tril(np.ones((4, 4), bool)))


def test_document_mask_blocks_other_documents_and_padding():
    seg = jnp.array([[1, 1, 2, 2, 0]])
    m = np.asarray(document_mask(seg))[0]
    assert m[1, 0]
    assert not m[2, 1]
    assert m[3, 2]
    assert not m[2, 0]
    assert not m[3, 1]
    assert m[4].tolist() == [False, False, False, False, True]  # padding sees only itself


POS = jnp.broadcast_to(jnp.arange(6), (2, 6))


def _logits(key, b=2, h=3, t=6):
    q = jax.random.normal(key, (b, t, h, 4))
    k = jax.random.normal(jax.random.fold_in(key, 1), (b, t, h, 4))
    return q, k


def test_softmax_rows_sum_to_one_and_respect_mask():
    variant = SoftmaxAttention(3, 4, rngs=None)
    q, k = _logits(jax.random.key(0))
    mask = jnp.broadcast_to(causal_mask(6), (2, 6, 6))
    att = np.asarray(variant.weights(variant.logits(q, k, POS), mask))
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-6)
    assert np.abs(np.triu(att, 1)).max() == 0.0


def test_relu_rows_follow_the_visible_key_rule():
    """Guo et al.: A[i, j] = ReLU(score[i, j]) / (i + 1) under a causal mask."""
    variant = ReluAttention(3, 4, rngs=None)
    q, k = _logits(jax.random.key(1))
    mask = jnp.broadcast_to(causal_mask(6), (2, 6, 6))
    logits = variant.logits(q, k, POS)
    att = np.asarray(variant.weights(logits, mask))
    expected = np.maximum(np.asarray(logits), 0) * np.tril(np.ones((6, 6)))
    expected = expected / (np.arange(6) + 1)[:, None]
    np.testing.assert_allclose(att, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        np.asarray(logits), np.einsum("bthk,bshk->bhts", q, k) / 2.0, rtol=1e-5
    )


def test_sigmoid_follows_the_length_bias_rule():
    """Ramapuram et al. 2024: A[i, j] = sigmoid(score[i, j] − ln(i + 1)) under a causal mask."""
    variant = SigmoidAttention(3, 4, rngs=None)
    q, k = _logits(jax.random.key(2))
    mask = jnp.broadcast_to(causal_mask(6), (2, 6, 6))
    logits = np.asarray(variant.logits(q, k, POS))
    att = np.asarray(variant.weights(jnp.asarray(logits), mask))
    expected = 1 / (1 + np.exp(-(logits - np.log(np.arange(6) + 1)[:, None])))
    np.testing.assert_allclose(att, expected * np.tril(np.ones((6, 6))), rtol=1e-5, atol=1e-7)


def test_norm_none_model_has_no_layer_norm():
    from flax import nnx

    from sinks_jax.config import ModelConfig
    from sinks_jax.model import GPT

    cfg = ModelConfig(vocab_size=5, d_model=8, d_mlp=16, n_layers=2, n_heads=2, max_len=8)
    model = GPT(dataclasses.replace(cfg, norm="none", final_norm=False), rngs=nnx.Rngs(0))
    names = {type(m).__name__ for _, m in nnx.iter_graph(model)}
    assert "LayerNorm" not in names
    out = model(jnp.zeros((1, 4), jnp.int32))
    assert out.logits.shape == (1, 4, 5)
