"""Attention variants and masks.

A variant turns per-head queries and keys into attention logits and weights. To add one (e.g.
softmax-off-by-one, sigmoid, a learned sink logit, QK-norm), subclass `AttentionVariant`, override
`logits` and/or `weights` (it is an `nnx.Module`, so it may own parameters), and decorate it with
`@register_attention("name")`; `ModelConfig(attention="name")` then selects it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

MASK_VALUE = -1e9  # "large negative constant" added to masked logits (fp32)

ATTENTION_VARIANTS: dict[str, type[AttentionVariant]] = {}


def register_attention(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        ATTENTION_VARIANTS[name] = cls
        return cls

    return decorate


class AttentionVariant(nnx.Module):
    """Scaled dot-product logits; subclasses choose how logits become weights."""

    def __init__(self, n_heads: int, d_head: int, *, rngs: nnx.Rngs):
        self.n_heads = n_heads
        self.d_head = d_head

    def logits(self, q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array) -> jax.Array:
        """score[b, h, t, s] = q_t · k_s / sqrt(d_head), in float32 (float64 if the inputs are)."""
        dtype = jnp.promote_types(q_BxTxHxK.dtype, jnp.float32)
        q, k = q_BxTxHxK.astype(dtype), k_BxSxHxK.astype(dtype)
        return jnp.einsum("bthk,bshk->bhts", q, k) / jnp.sqrt(jnp.asarray(self.d_head, dtype))

    def weights(self, logits_BxHxTxS: jax.Array, mask_BxTxS: jax.Array) -> jax.Array:
        raise NotImplementedError


@register_attention("softmax")
class SoftmaxAttention(AttentionVariant):
    """A = softmax(score + mask), rows sum to 1 (Vaswani et al. 2017)."""

    def weights(self, logits_BxHxTxS, mask_BxTxS):
        masked = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, MASK_VALUE)
        return jax.nn.softmax(masked, axis=-1)


@register_attention("relu")
class ReluAttention(AttentionVariant):
    """Guo et al. 2024, §3.3: A[i, j] = ReLU(score[i, j]) / (number of keys visible to i).

    Rows need not sum to 1, so a head can output (near) zero without a sink.
    """

    def weights(self, logits_BxHxTxS, mask_BxTxS):
        visible = mask_BxTxS.sum(-1, keepdims=True).astype(jnp.float32)  # [B, T, 1]
        relu = jnp.where(mask_BxTxS[:, None], jax.nn.relu(logits_BxHxTxS), 0.0)
        return relu / jnp.maximum(visible[:, None], 1.0)


@register_attention("sigmoid")
class SigmoidAttention(AttentionVariant):
    """Ramapuram et al. 2024 (arXiv 2409.04431): A[i, j] = sigmoid(score[i, j] − ln n_i), with
    n_i the number of keys visible to i, so that rows start near sum 1 but need not sum to 1."""

    def weights(self, logits_BxHxTxS, mask_BxTxS):
        visible = mask_BxTxS.sum(-1, keepdims=True).astype(jnp.float32)  # [B, T, 1]
        bias = -jnp.log(jnp.maximum(visible, 1.0))[:, None]
        return jnp.where(mask_BxTxS[:, None], jax.nn.sigmoid(logits_BxHxTxS + bias), 0.0)


# ---------------------------------------------------------------------------------------------
# Masks (True = key visible to query)


def causal_mask(seq_len: int) -> jax.Array:
    """[1, T, T] lower-triangular mask."""
    return jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))[None]


def document_mask(segment_ids_BxT: jax.Array) -> jax.Array:
    """[B, T, T] causal mask restricted to keys of the same document (segment id).

    Segment id 0 marks padding: padding keys are never visible to other tokens (a padding
    query sees only itself, so its softmax row stays well defined).
    """
    seq_len = segment_ids_BxT.shape[-1]
    same = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
    not_pad = (segment_ids_BxT[:, None, :] != 0) | jnp.eye(seq_len, dtype=bool)[None]
    return causal_mask(seq_len) & same & not_pad
