"""Sink metrics: pure functions over observables (`sinks_jax.model.LayerObservables`).

Shapes follow the model: attention [B,H,T,T] (query t, key s), per-head values [B,H,T,D],
residual stream [B,T,D]. Position 0 is the first token (BOS where the data has one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------------
# Sink score and sink rate (Gu et al. 2024/2025)


def sink_scores(
    att_BxHxTxT: jax.Array, mask_BxTxT: jax.Array | None = None, *, per_sequence: bool = False
) -> jax.Array:
    """The sink score α_k of every key (Gu et al. 2025): the mean over the queries that see key
    k of A[q, k] — [H,T] pooled over the batch (sum over sequences and queries / their number),
    or [B,H,T] per sequence. With a document mask, "queries that see k" are those whose mask row
    includes k; without one, the causal queries t >= k. Virtual keys that a variant appends
    after the T real ones (`sink_logit`, `sink_kv`, …: weights [B,H,T,T+n]) are left out; see
    `virtual_mass`.
    """
    chex.assert_rank(att_BxHxTxT, 4)
    t = att_BxHxTxT.shape[-2]
    att_BxHxTxT = att_BxHxTxT[..., :t]
    if mask_BxTxT is None:
        mask_BxTxT = jnp.tril(jnp.ones((t, t), bool))[None]
    chex.assert_rank(mask_BxTxT, 3)
    dtype = jnp.promote_types(att_BxHxTxT.dtype, jnp.float32)
    sees = jnp.broadcast_to(mask_BxTxT, (att_BxHxTxT.shape[0], t, t))[:, None].astype(dtype)
    axes = 2 if per_sequence else (0, 2)
    total = (att_BxHxTxT * sees).sum(axis=axes)
    count = sees.sum(axis=axes)
    return total / jnp.maximum(count, 1.0)


def virtual_mass(att_BxHxTxS: jax.Array, query_mask_BxT: jax.Array | None = None) -> jax.Array:
    """[H] mean attention mass each head puts off the T real keys, 1 − Σ_{s<T} A[t, s], over the
    queries of `query_mask` (default all): the virtual keys' share for the softmax variants that
    have one (`sink_logit`, `sink_kv`: weights [B,H,T,T+1]; `softmax1`: its implicit zero-logit
    key, rows summing to < 1). Not a mass for `relu` / `sigmoid`, whose rows need not sum to 1."""
    chex.assert_rank(att_BxHxTxS, 4)
    b, _, t, _ = att_BxHxTxS.shape
    off_BxHxT = 1.0 - att_BxHxTxS[..., :t].sum(-1)
    q_BxT = jnp.ones((b, t), off_BxHxT.dtype)
    if query_mask_BxT is not None:
        q_BxT = jnp.asarray(query_mask_BxT, off_BxHxT.dtype)
    return (off_BxHxT * q_BxT[:, None]).sum((0, 2)) / jnp.maximum(q_BxT.sum(), 1.0)


def sink_rate(
    first_key_scores: Sequence[jax.Array] | jax.Array | np.ndarray, eps: float = 0.3
) -> float:
    """Fraction of (layer, head) whose first-key sink score α_1 exceeds `eps`.

    `first_key_scores`: per layer an [H] array (or one [L,H] array) of α at key 0.
    """
    scores = np.concatenate([np.ravel(np.asarray(s)) for s in first_key_scores])
    return float((scores > eps).mean())


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation with average ranks for ties; NaN when either input is constant
    (it carries no order) or has fewer than two points."""
    x_N, y_N = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x_N.size < 2 or np.ptp(x_N) == 0 or np.ptp(y_N) == 0:
        return float("nan")

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size, dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    return float(np.corrcoef(ranks(x_N), ranks(y_N))[0, 1])


# ---------------------------------------------------------------------------------------------
# Bigram-Backcopy observables (Guo et al. 2024, §3)


def _masked_mean(x: jax.Array, mask: jax.Array, axis) -> jax.Array:
    mask = mask.astype(x.dtype)
    return (x * mask).sum(axis) / jnp.maximum(mask.sum(axis), 1.0)


def bb_attention(att_BxHxTxT: jax.Array, trigger_BxT: jax.Array) -> dict[str, jax.Array]:
    """Per head [H]: `Attn_<s>` = attention on key 0 over non-trigger queries t >= 1; the same
    over trigger queries; previous-token attention A[t, t-1] over trigger queries."""
    chex.assert_rank(att_BxHxTxT, 4)
    chex.assert_rank(trigger_BxT, 2)
    _, _, t, _ = att_BxHxTxT.shape
    bos_BxHxT = att_BxHxTxT[..., 0]
    prev_BxHxT = jnp.concatenate(
        [
            jnp.zeros_like(bos_BxHxT[..., :1]),
            jnp.diagonal(att_BxHxTxT, offset=-1, axis1=-2, axis2=-1),
        ],
        axis=-1,
    )
    not_first = jnp.arange(t)[None] >= 1
    non_trigger = (~trigger_BxT & not_first)[:, None]
    trigger = (trigger_BxT & not_first)[:, None]
    return {
        "bos_non_trigger": _masked_mean(bos_BxHxT, non_trigger, (0, 2)),
        "bos_trigger": _masked_mean(bos_BxHxT, trigger, (0, 2)),
        "prev_token_trigger": _masked_mean(prev_BxHxT, trigger, (0, 2)),
    }


def delta_logit(logits_BxHxTxT: jax.Array, query_mask_BxT: jax.Array | None = None) -> jax.Array:
    """[H] Δlogit: logit to key 0 minus the mean logit over keys 1..t-1, averaged over queries
    t >= 2 (optionally only those in `query_mask_BxT`)."""
    chex.assert_rank(logits_BxHxTxT, 4)
    t = logits_BxHxTxT.shape[-1]
    keys = jnp.arange(t)
    others_TxT = (keys[None, :] >= 1) & (keys[None, :] <= keys[:, None] - 1)
    mean_others = _masked_mean(logits_BxHxTxT, others_TxT[None, None], -1)  # [B,H,T]
    gap_BxHxT = logits_BxHxTxT[..., 0] - mean_others
    queries = jnp.broadcast_to(keys[None] >= 2, gap_BxHxT.shape[::2])
    if query_mask_BxT is not None:
        queries = queries & query_mask_BxT
    return _masked_mean(gap_BxHxT, queries[:, None], (0, 2))


def value_norms(head_values_BxHxTxD: jax.Array) -> jax.Array:
    """[B,H,T] ‖W_o v_k‖ per head and key."""
    chex.assert_rank(head_values_BxHxTxD, 4)
    return jnp.linalg.norm(head_values_BxHxTxD, axis=-1)


def value_summary(head_values_BxHxTxD: jax.Array) -> dict[str, jax.Array]:
    """Per head [H]: ‖Val_<s>‖ (key 0), mean norm of the other keys, and their ratio."""
    norms = value_norms(head_values_BxHxTxD).mean(0)  # [H,T]
    bos, others = norms[:, 0], norms[:, 1:].mean(-1)
    return {"bos": bos, "others": others, "ratio": bos / others}


def residual_norms(residual_BxTxD: jax.Array) -> jax.Array:
    """[T] mean over batch of ‖Res_t‖ (block output, before the final LN)."""
    chex.assert_rank(residual_BxTxD, 3)
    return jnp.linalg.norm(residual_BxTxD, axis=-1).mean(0)


def residual_peak(residual_BxTxD: jax.Array) -> dict[str, jax.Array]:
    """‖Res_0‖, mean_{i>=1} ‖Res_i‖, peak = their difference, ratio = their quotient."""
    norms = residual_norms(residual_BxTxD)
    first, others = norms[0], norms[1:].mean()
    return {"first": first, "others": others, "peak": first - others, "ratio": first / others}


def massive_activations(
    h_BxTxD: jax.Array, abs_threshold: float = 100.0, median_ratio: float = 1000.0
) -> dict[str, object]:
    """Sun et al. 2024: entries with |h| > abs_threshold and > median_ratio × median |h| of the
    layer. Returns the count, the feature dimensions and the positions where they sit."""
    h = np.abs(np.asarray(h_BxTxD))
    median = float(np.median(h))
    hits = (h > abs_threshold) & (h > median_ratio * median)
    _, pos, dims = np.nonzero(hits)
    return {
        "count": int(hits.sum()),
        "dims": sorted(set(dims.tolist())),
        "positions": sorted(set(pos.tolist())),
        "median_abs": median,
        "max_abs": float(h.max()) if h.size else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Risks against the oracle


def bb_risks(
    logits_BxTxV: jax.Array, true_next_BxTxV: jax.Array, trigger_BxT: jax.Array
) -> dict[str, jax.Array]:
    """Backcopy risk: CE against the copy target at trigger positions. Bigram risk: CE against
    the true bigram row at non-trigger positions t >= 1; excess = risk minus the rows' entropy."""
    chex.assert_equal_shape([logits_BxTxV, true_next_BxTxV])
    logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    ce_BxT = -(true_next_BxTxV * logp).sum(-1)
    entropy_BxT = -(
        true_next_BxTxV * jnp.log(jnp.where(true_next_BxTxV > 0, true_next_BxTxV, 1.0))
    ).sum(-1)
    not_first = jnp.arange(trigger_BxT.shape[1])[None] >= 1
    non_trigger = ~trigger_BxT & not_first
    bigram = _masked_mean(ce_BxT, non_trigger, None)
    return {
        "backcopy_risk": _masked_mean(ce_BxT, trigger_BxT, None),
        "bigram_risk": bigram,
        "bigram_excess": bigram - _masked_mean(entropy_BxT, non_trigger, None),
    }


# ---------------------------------------------------------------------------------------------
# Active / dormant probe (Guo et al. 2024, §3.1)


def probe_sequences(
    non_trigger_tokens: np.ndarray, bos_id: int, vocab: Sequence[int]
) -> np.ndarray:
    """[len(vocab), n+2] rows [BOS] + all non-trigger tokens + [v], one row per probed v."""
    body = np.concatenate([[bos_id], non_trigger_tokens])
    return np.stack([np.concatenate([body, [v]]) for v in vocab]).astype(np.int32)


def active_dormant(
    attention_fn: Callable[[jax.Array], jax.Array],
    probes_NxT: np.ndarray,
    head: int = 0,
    threshold: float = 0.89,
) -> dict[str, np.ndarray]:
    """Last-position attention on BOS for each probe row; v is *active* where it is < threshold.

    `attention_fn(tokens_NxT) -> [N,H,T,T]` attention weights of the layer being probed.
    """
    att = np.asarray(attention_fn(jnp.asarray(probes_NxT)))
    bos_attention = att[:, head, -1, 0]
    return {"bos_attention": bos_attention, "active": bos_attention < threshold}
