"""Attention variants and masks.

A variant turns per-head queries, keys and values into attention logits and weights:

    k, v = variant.keys_values(k, v)            # may append virtual keys (e.g. a learned sink)
    logits = variant.logits(q, k, positions)    # [B,H,T,S], S = T + variant.n_virtual
    weights = variant.weights(logits, mask)     # [B,H,T,S]
    out = variant.gate(x, weights · v)          # per-head outputs [B,T,H,K]; x: the block input

To add one (softmax-off-by-one, ALiBi, a learned sink key/value, QK-norm...), subclass
`AttentionVariant`, override what differs (it is an `nnx.Module`, so it may own parameters), and
decorate it with `@register_attention("name")`; `ModelConfig(attention="name")` selects it. Virtual
keys come *after* the T real keys, so key 0 stays the first token; they are visible to every query.
"""

from __future__ import annotations

import math
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
    """Scaled dot-product logits over the real keys; subclasses choose how logits become weights
    and may add position biases (`logits`) or virtual keys (`keys_values`, `n_virtual`)."""

    n_virtual: int = 0  # keys appended after the real ones by `keys_values`

    def __init__(self, n_heads: int, d_head: int, *, rngs: nnx.Rngs):
        self.n_heads = n_heads
        self.d_head = d_head

    def keys_values(
        self, k_BxTxHxK: jax.Array, v_BxTxHxK: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Keys and values the queries attend over, [B,S,H,K] each (default: the real ones)."""
        return k_BxTxHxK, v_BxTxHxK

    def logits(
        self, q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, positions_BxT: jax.Array
    ) -> jax.Array:
        """score[b, h, t, s] = q_t · k_s / sqrt(d_head), in float32 (float64 if the inputs are;
        bf16 inputs are multiplied in bf16 with float32 accumulation)."""
        del positions_BxT  # content-only scores; see `AlibiAttention` for a position bias
        dtype = jnp.promote_types(q_BxTxHxK.dtype, jnp.float32)
        scores = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxSxHxK, preferred_element_type=dtype)
        return scores / jnp.sqrt(jnp.asarray(self.d_head, dtype))

    def weights(self, logits_BxHxTxS: jax.Array, mask_BxTxS: jax.Array) -> jax.Array:
        raise NotImplementedError

    def gate(self, x_BxTxD: jax.Array, heads_BxTxHxK: jax.Array) -> jax.Array:
        """The per-head outputs (weights · values) as the heads emit them (default: unchanged);
        `x` is the (normalised) block input at each query."""
        del x_BxTxD
        return heads_BxTxHxK


def _softmax(logits_BxHxTxS: jax.Array, mask_BxTxS: jax.Array) -> jax.Array:
    masked = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, MASK_VALUE)
    return jax.nn.softmax(masked, axis=-1)


@register_attention("softmax")
class SoftmaxAttention(AttentionVariant):
    """A = softmax(score + mask), rows sum to 1 (Vaswani et al. 2017)."""

    def weights(self, logits_BxHxTxS, mask_BxTxS):
        return _softmax(logits_BxHxTxS, mask_BxTxS)


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


@register_attention("softmax1")
class OffByOneSoftmaxAttention(AttentionVariant):
    """Softmax with an implicit zero logit ("softmax-off-by-one", Miller 2023):
    A[i, j] = exp(s_ij) / (1 + Σ_k exp(s_ik)); a row can sum to almost 0 without a sink key."""

    def weights(self, logits_BxHxTxS, mask_BxTxS):
        masked = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, MASK_VALUE)
        top = jnp.maximum(jax.lax.stop_gradient(masked.max(-1, keepdims=True)), 0.0)
        exp = jnp.exp(masked - top)
        return exp / (jnp.exp(-top) + exp.sum(-1, keepdims=True))


@register_attention("alibi")
class AlibiAttention(SoftmaxAttention):
    """Softmax with ALiBi biases (Press et al. 2022): score − m_h (t − s), head slopes
    m_h = 2^(−8 (h + 1) / H). Use with `positions='none'`."""

    def logits(self, q_BxTxHxK, k_BxSxHxK, positions_BxT):
        scores = super().logits(q_BxTxHxK, k_BxSxHxK, positions_BxT)
        slopes_H = 2.0 ** (-8.0 * (jnp.arange(self.n_heads) + 1) / self.n_heads)
        pos = positions_BxT.astype(scores.dtype)
        distance_BxTxS = pos[:, :, None] - pos[:, None, :]
        return scores - slopes_H[None, :, None, None] * distance_BxTxS[:, None]


@register_attention("sink_kv")
class LearnedSinkAttention(SoftmaxAttention):
    """Softmax over the real keys plus one learned key/value per head that every query sees
    (a "sink token" in the weights, cf. the gpt-oss attention sinks / Sun et al. 2024)."""

    n_virtual = 1

    def __init__(self, n_heads: int, d_head: int, *, rngs: nnx.Rngs):
        super().__init__(n_heads, d_head, rngs=rngs)
        init = nnx.initializers.normal(1.0 / math.sqrt(d_head))
        self.sink_key = nnx.Param(init(rngs.params(), (n_heads, d_head)))
        self.sink_value = nnx.Param(jnp.zeros((n_heads, d_head)))

    def keys_values(self, k_BxTxHxK, v_BxTxHxK):
        b = k_BxTxHxK.shape[0]
        k_sink = jnp.broadcast_to(self.sink_key[...], (b, 1, self.n_heads, self.d_head))
        v_sink = jnp.broadcast_to(self.sink_value[...], (b, 1, self.n_heads, self.d_head))
        k = jnp.concatenate([k_BxTxHxK, k_sink.astype(k_BxTxHxK.dtype)], axis=1)
        v = jnp.concatenate([v_BxTxHxK, v_sink.astype(v_BxTxHxK.dtype)], axis=1)
        return k, v


@register_attention("sink_logit")
class SinkLogitAttention(SoftmaxAttention):
    """Softmax over the real keys plus one virtual key per head with a learned logit b_h and a
    zero value (the "attention sink" parameter of gpt-oss-style models): mass on it is a no-op.
    b_h → −∞ is plain softmax; b_h = 0 fixed is `softmax1`. `init_logit` sets b_h at init."""

    n_virtual = 1
    init_logit: float = 0.0

    def __init__(self, n_heads: int, d_head: int, *, rngs: nnx.Rngs):
        super().__init__(n_heads, d_head, rngs=rngs)
        self.sink_logit = nnx.Param(jnp.full((n_heads,), self.init_logit, jnp.float32))

    def keys_values(self, k_BxTxHxK, v_BxTxHxK):
        zero = jnp.zeros_like(k_BxTxHxK[:, :1])  # the virtual key: its logit is set below
        return (
            jnp.concatenate([k_BxTxHxK, zero], axis=1),
            jnp.concatenate([v_BxTxHxK, jnp.zeros_like(v_BxTxHxK[:, :1])], axis=1),
        )

    def logits(self, q_BxTxHxK, k_BxSxHxK, positions_BxT):
        scores = super().logits(q_BxTxHxK, k_BxSxHxK, positions_BxT)  # [B,H,T,T+1]
        b_H = self.sink_logit[...].astype(scores.dtype)
        return scores.at[..., -1].set(jnp.broadcast_to(b_H[None, :, None], scores.shape[:3]))


@register_attention("gated")
class GatedAttention(SoftmaxAttention):
    """Softmax attention whose per-head output is multiplied element-wise by sigmoid(x W_g + b)
    of the query token (Qiu et al. 2025, "Gated attention for large language models"), so a
    head can output ~0 without parking its mass on a sink."""

    def __init__(self, n_heads: int, d_head: int, *, rngs: nnx.Rngs):
        super().__init__(n_heads, d_head, rngs=rngs)
        d = n_heads * d_head  # = d_model for the library's models
        self.gate_proj = nnx.Linear(d, d, rngs=rngs)

    def gate(self, x_BxTxD, heads_BxTxHxK):
        g = jax.nn.sigmoid(self.gate_proj(x_BxTxD.astype(jnp.float32)))
        return heads_BxTxHxK * g.reshape(heads_BxTxHxK.shape).astype(heads_BxTxHxK.dtype)


@register_attention("qk_norm")
class QKNormAttention(SoftmaxAttention):
    """Softmax over RMS-normalised queries and keys (per head, learned scale; as in OLMo 2,
    Gemma 3): the logits' scale is set by the learned gains, not the residual norms."""

    def __init__(self, n_heads: int, d_head: int, *, rngs: nnx.Rngs):
        super().__init__(n_heads, d_head, rngs=rngs)
        self.q_norm = nnx.RMSNorm(d_head, epsilon=1e-6, rngs=rngs)
        self.k_norm = nnx.RMSNorm(d_head, epsilon=1e-6, rngs=rngs)

    def logits(self, q_BxTxHxK, k_BxSxHxK, positions_BxT):
        q = self.q_norm(q_BxTxHxK.astype(jnp.float32))
        k = self.k_norm(k_BxSxHxK.astype(jnp.float32))
        return super().logits(q, k, positions_BxT)


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


def with_virtual_keys(mask_BxTxT: jax.Array, n_virtual: int) -> jax.Array:
    """[B, T, T + n_virtual]: virtual keys (appended after the real ones) are visible to all."""
    if not n_virtual:
        return mask_BxTxT
    b, t, _ = mask_BxTxT.shape
    return jnp.concatenate([mask_BxTxT, jnp.ones((b, t, n_virtual), bool)], axis=-1)
