"""What the sinks of a trained small GPT do: the phenomenology the three papers report in large
LLMs, measured on our own model (issue 17 §3).

One GPT is trained on a corpus (quick: the built-in Python documentation as bytes, BOS at the
start of every window) and measured on its fixed validation rows:

- **Delimiter sinks** (Zhang et al. 2025: sinks on punctuation): per head, the mean attention from
  each token to the most recent newline / period / space strictly before it, beside the attention
  to BOS (position 0); the heads whose top sink is a delimiter.
- **Catch, tag, release** (Zhang et al. 2025): for every head whose top sink (BOS or a delimiter)
  holds ≥ `catch_min` of its attention, the tokens it *catches* (≥ `caught_min` of their attention
  on that sink; at least 2 × d_model of them); the share of the variance of what the head writes
  on them (Σ_k A W_o v_k) along its top principal direction (the issue's measure), beside a null
  (the same share on as many uncaught tokens) and the uncentred share (a common perturbation, the
  *tag*, gives ≈ 1 there: a head that reads one key writes one vector); the tag's size relative to
  the residual stream; and release: the largest |correlation| between a later head's attention
  logits (centred per query) to key s and the tag coordinate of s, beside the same with the
  coordinates shuffled. Delimiter spans are pooled (one direction per head, not per span).
- **Massive activations** (Sun et al. 2024): per layer, max |h| / median |h| of the residual
  stream and where the largest entries sit (dimension, position class); Sun et al.'s intervention
  in every layer that has entries above `massive_factor` × median: each set to the mean of its
  dimension's massive entries, and, for contrast, to 0; the change in loss and in the
  first-position sink rate.
- **Active / dormant heads on real text** (Guo et al. 2024 §4): per head and row, the BOS mass;
  heads dormant (≥ `dormant`) on some rows and active (≤ `active`) on others; one such head's
  maps on two rows.
- **Low-rank sink circuits** (Zhang et al. 2025): every layer's joint query-key form (the query
  bias included, [x 1] [W_Q; b_Q] W_Kᵀ [x 1]ᵀ per head) truncated to rank r = 1, 2, 4, …,
  d_head: sink rate and validation loss. And the rank-r + sparse split (in the spirit of OATS,
  without its input scaling) at a fixed budget of 2 r (D+1) numbers per head: rank r alone,
  rank r/2 plus the largest entries of the rest, and magnitude pruning alone (a kept entry
  counts as one number, its index not at all; those forms do not factor through d_head, so
  their logits are patched in layer by layer at `attn_logits`). The forms leave out the key
  bias (softmax ignores it). Prediction: a sink needs only a few directions (the query bias's
  term b_Q · k_s is one), so the low-rank terms keep the loss and any sink better than pruning.

Claims: at least one catching head writes a tag: its top direction holds ≥ 50 % of the variance
of its outputs on the tokens it catches (the issue's measure; undefined when no head catches);
and, added with the null because a head's outputs lie in its d_head-wide span of W_o (so a top
direction can hold half their variance on any tokens), some head that passes the first claim
has a tag share ≥ 0.1 above its null: the share on uncaught tokens, both on equal samples (as
many tokens as the smaller set holds), each the mean of 5 random draws.

Outputs (results/lm_phenomenology/<preset>/): metrics.json, `delimiter_sinks.png`,
`active_dormant_head.png`, `low_rank_qk.png`.

    python -m experiments.lm_phenomenology --preset quick   # CPU
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import metrics, plotting
from sinks_jax.batch import Batch
from sinks_jax.claims import check_if
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require
from sinks_jax.config import run_config as plain_run_config
from sinks_jax.forward import jit_with_model
from sinks_jax.model import GPT, Capture, Edit, Interventions, ModelOutput
from sinks_jax.tasks import corpus, lm, lm_presets

DELIMITERS = {"newline": (10,), "period": (46,), "space": (32,)}
SINKS = ("BOS", *DELIMITERS)
PAPER_STATEMENT = (
    "Zhang et al. 2025: sinks catch a span (BOS or a delimiter), tag it with a common "
    "perturbation that a later head releases, through low-rank query-key forms; Sun et al. 2024: "
    "massive activations sit at the sink; Guo et al. 2024 §4: heads are dormant on some inputs and "
    "active on others."
)
CAPTURE = Capture(attention=True, head_outputs=True, residual=True)
NULL_DRAWS = 5  # random samples behind each tag-share null


@dataclasses.dataclass(frozen=True)
class Phenomenology:
    catch_min: float = 0.3  # a head catches when its top sink holds this much attention
    caught_min: float = 0.5  # a token is caught when this much of its attention is on the sink
    tag_share: float = 0.5  # the claim's threshold
    tag_margin: float = 0.1  # caught tokens' share above the uncaught null (second claim)
    # The split sweep's budgets, as distinct ranks r in [1, d_head] (2 r (D+1) numbers per head);
    # None: 1, 2, 4, …, d_head.
    split_ranks: tuple[int, ...] | None = None
    massive_factor: float = 20.0  # entries above this × median |h| count as massive
    dormant: float = 0.9
    active: float = 0.5

    def __post_init__(self) -> None:
        for name in ("catch_min", "caught_min", "tag_share", "tag_margin", "dormant", "active"):
            value = getattr(self, name)
            require(0 < value <= 1, f"sweep.{name}", value, "in (0, 1]")
        require(self.massive_factor > 1, "sweep.massive_factor", self.massive_factor, "> 1")
        require(
            self.split_ranks is None
            or (
                bool(self.split_ranks)
                and min(self.split_ranks) >= 1
                and len(set(self.split_ranks)) == len(self.split_ranks)
            ),
            "sweep.split_ranks",
            self.split_ranks,
            "None or a non-empty tuple of distinct ranks >= 1",
        )


@dataclasses.dataclass(frozen=True)
class PhenomenologyConfig(lm.LMConfig):
    sweep: Phenomenology = Phenomenology()

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.model.positions != "rope",
            "model.positions",
            self.model.positions,
            "not 'rope' (the low-rank forms are of position-free queries and keys)",
        )
        require(
            not self.model.scan_layers,
            "model.scan_layers",
            self.model.scan_layers,
            "False (the low-rank forms are edited per layer)",
        )
        require(
            self.model.attention == "softmax",
            "model.attention",
            self.model.attention,
            "'softmax' (the measurements read one weight per real key)",
        )
        require(
            not self.model.layers_without_attention,
            "model.layers_without_attention",
            self.model.layers_without_attention,
            "() (the measurements read every layer's attention)",
        )
        d_head = self.model.d_head
        require(
            self.sweep.split_ranks is None or max(self.sweep.split_ranks) <= d_head,
            "sweep.split_ranks",
            self.sweep.split_ranks,
            f"ranks <= the head dimension model.d_model / model.n_heads = {d_head} (a head's "
            "query-key form has rank at most d_head: a larger rank is the whole form again)",
        )


PRESETS = {
    "quick": PhenomenologyConfig(
        model=lm_presets.TEXT_MODEL,
        data=lm_presets.BUILTIN_TEXT,
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=3000, eval_every=1000, checkpoint_every=3000, progress=False),
    ),
    "paper": PhenomenologyConfig(
        model=lm_presets.TEXT_MODEL,
        data=lm_presets.BUILTIN_TEXT,
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=20_000, eval_every=2000, checkpoint_every=5000, progress=False),
    ),
}
# One GPU: the paper budget on the GPU's fast paths (bf16 matmuls; fused attention in training,
# the explicit path wherever the measurements capture attention).
PRESETS["gpu"] = dataclasses.replace(
    PRESETS["paper"], model=lm_presets.on_gpu(PRESETS["paper"].model)
)
NOTES = {
    "quick": "built-in Python docs, bytes, d 64, 4 layers × 4 heads, context 128, 2048 "
    "tokens/step, 3000 steps (5 min on 2 cores)",
    "paper": "the quick model for 20 000 steps (GPU; not yet run or timed)",
    "gpu": "the paper preset in bf16 with fused attention in training (GPU; not yet run or timed)",
}


# ---------------------------------------------------------------------------------------------
# Delimiter sinks


def previous_position(inputs_BxT: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    """[B,T] index of the most recent token among `ids` strictly before t (−1: none)."""
    x = np.asarray(inputs_BxT)
    at = np.where(np.isin(x, ids), np.arange(x.shape[1])[None], -1)
    last = np.maximum.accumulate(at, axis=1)
    return np.concatenate([np.full((x.shape[0], 1), -1), last[:, :-1]], axis=1)


def sink_positions(inputs_BxT: np.ndarray) -> dict[str, np.ndarray]:
    """Per sink class, [B,T] the key each query would sink on (−1: none; BOS: position 0)."""
    x = np.asarray(inputs_BxT)
    bos = np.zeros(x.shape, int)
    bos[:, 0] = -1  # the BOS query itself has no earlier key
    out = {"BOS": bos}
    out.update({name: previous_position(x, ids) for name, ids in DELIMITERS.items()})
    return out


def mass_on(att_BxHxTxS: np.ndarray, pos_BxT: np.ndarray) -> np.ndarray:
    """[B,H,T] attention of each query on its key `pos` (0 where pos < 0)."""
    h = att_BxHxTxS.shape[1]
    idx = np.clip(pos_BxT, 0, None)[:, None, :, None].repeat(h, 1)
    got = np.take_along_axis(np.asarray(att_BxHxTxS), idx, axis=-1)[..., 0]
    return np.where(pos_BxT[:, None] >= 0, got, 0.0)


def delimiter_scores(
    out: ModelOutput, inputs_BxT: np.ndarray, real_BxT: np.ndarray
) -> dict[str, np.ndarray]:
    """Per sink class, [L,H] mean attention to it over the real queries that have one."""
    scores = {}
    for name, pos_BxT in sink_positions(inputs_BxT).items():
        q_BxT = (pos_BxT >= 0) & real_BxT
        per_layer = []
        for obs in out.layers:
            m_BxHxT = mass_on(obs.attn_weights, pos_BxT)
            per_layer.append((m_BxHxT * q_BxT[:, None]).sum((0, 2)) / max(q_BxT.sum(), 1))
        scores[name] = np.stack(per_layer)
    return scores


# ---------------------------------------------------------------------------------------------
# Catch, tag, release


def top_share(o_NxD: np.ndarray, centred: bool = True) -> tuple[float, np.ndarray]:
    """Share of the variance (or, uncentred, of Σ‖o‖²) along the top principal direction, and
    that direction."""
    o = np.asarray(o_NxD, np.float64)
    if centred:
        o = o - o.mean(0)
    _, s, vt = np.linalg.svd(o, full_matrices=False)
    total = float((s**2).sum())
    return (float(s[0] ** 2 / total) if total > 0 else float("nan")), vt[0]


def release_correlation(logits_BxHxTxS: np.ndarray, tau_BxT: np.ndarray, real_BxT: np.ndarray):
    """[H] correlation, per later head, between its attention logit from query t to key s and
    the tag coordinate of s, over real pairs 1 ≤ s < t, both centred over each query's keys
    (softmax ignores a per-query offset)."""
    t = tau_BxT.shape[1]
    pairs_BxTxT = (
        np.tril(np.ones((t, t), bool), -1)[None] & real_BxT[:, :, None] & real_BxT[:, None]
    )
    pairs_BxTxT[:, :, 0] = False  # BOS left out: its logit scale is its own
    n = np.maximum(pairs_BxTxT.sum(-1, keepdims=True), 1)

    def within_query(x_BxTxS: np.ndarray) -> np.ndarray:  # centred over each query's keys
        return (x_BxTxS - (x_BxTxS * pairs_BxTxT).sum(-1, keepdims=True) / n)[pairs_BxTxT]

    tau = within_query(np.broadcast_to(tau_BxT[:, None, :], pairs_BxTxT.shape))
    corr = []
    for lg_BxTxS in np.asarray(logits_BxHxTxS)[..., :t].transpose(1, 0, 2, 3):
        x = within_query(lg_BxTxS)
        ok = x.std() > 0 and tau.std() > 0
        corr.append(float(np.corrcoef(x, tau)[0, 1]) if ok else float("nan"))
    return np.asarray(corr)


def catch_tag_release(
    out: ModelOutput,
    inputs_BxT: np.ndarray,
    real_BxT: np.ndarray,
    scores: dict[str, np.ndarray],
    sweep: Phenomenology,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per catching head (see the module docstring); `scores` are `delimiter_scores` of
    `out`. The tag share is the centred
    variance share on the caught tokens (the claim), beside the uncentred share and a null: the
    centred share on as many uncaught tokens. Release: per later head, the correlation of its
    centred logits with the tag coordinate of the keys, and the same with the coordinates
    shuffled across keys (null)."""
    rng = np.random.default_rng(seed)
    positions = sink_positions(inputs_BxT)
    stacked = np.stack([scores[s] for s in SINKS])  # [C,L,H]
    rows = []
    n_layers, n_heads = stacked.shape[1:]
    for layer in range(n_layers):
        h_in = np.asarray(out.embeddings if layer == 0 else out.layers[layer - 1].residual)
        scale = float(np.linalg.norm(h_in, axis=-1)[real_BxT].mean())
        o_BxHxTxD = np.asarray(out.layers[layer].head_outputs)
        att_BxHxTxS = np.asarray(out.layers[layer].attn_weights)
        min_caught = 2 * o_BxHxTxD.shape[-1]  # enough tokens for a D-dimensional variance
        for head in range(n_heads):
            c = int(np.argmax(stacked[:, layer, head]))
            if stacked[c, layer, head] < sweep.catch_min:
                continue
            sink = SINKS[c]
            m_BxT = mass_on(att_BxHxTxS, positions[sink])[:, head]
            caught_BxT = (m_BxT >= sweep.caught_min) & real_BxT
            uncaught = np.flatnonzero(((m_BxT < sweep.caught_min) & real_BxT).ravel())
            o_BxTxD = o_BxHxTxD[:, head]
            row: dict[str, Any] = {
                "layer": layer,
                "head": head,
                "sink": sink,
                "sink_mass": float(stacked[c, layer, head]),
                "caught_tokens": int(caught_BxT.sum()),
            }
            if caught_BxT.sum() < min_caught:
                rows.append(row)
                continue
            caught_NxD = o_BxTxD[caught_BxT]
            share, _ = top_share(caught_NxD)
            null = matched = float("nan")
            if len(uncaught) >= min_caught:  # equal samples of both, mean over NULL_DRAWS draws
                o_NxD = o_BxTxD.reshape(-1, o_BxTxD.shape[-1])
                caught = np.flatnonzero(caught_BxT.ravel())
                n = min(len(uncaught), len(caught))
                draws = [
                    (
                        top_share(o_NxD[rng.choice(caught, n, replace=False)])[0],
                        top_share(o_NxD[rng.choice(uncaught, n, replace=False)])[0],
                    )
                    for _ in range(NULL_DRAWS)
                ]
                matched, null = (float(np.mean(d)) for d in zip(*draws, strict=True))
            uncentred, u_common = top_share(caught_NxD, centred=False)
            tau_BxT = o_BxTxD @ u_common  # every token's coordinate on the common direction
            release, release_null = [], []
            for later in range(layer + 1, n_layers):
                logits = np.asarray(out.layers[later].attn_logits)
                release += [((later, h), r) for h, r in enumerate(release_correlation(
                    logits, tau_BxT, real_BxT))]  # fmt: skip
                shuffled = rng.permuted(tau_BxT, axis=1)
                release_null += list(release_correlation(logits, shuffled, real_BxT))
            best = max(release, key=lambda x: abs(x[1]) if np.isfinite(x[1]) else -1, default=None)
            row.update(
                {
                    "tag_share": share,
                    "tag_share_null_uncaught": null,
                    "tag_share_matched": matched,  # on as many caught tokens as the null's
                    "tag_share_uncentred": uncentred,
                    "tag_norm_vs_residual": float(
                        np.abs(caught_NxD @ u_common).mean() / max(scale, 1e-12)
                    ),
                    "release_corr": None if best is None else best[1],
                    "release_head": None if best is None else list(best[0]),
                    "release_corr_null_max": float(np.nanmax(np.abs(release_null)))
                    if release_null
                    else None,
                }
            )
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Massive activations


@dataclasses.dataclass(frozen=True, eq=False)
class MeanPatch(Edit):
    """Sun et al. 2024's intervention: in `dims`, residual entries above `threshold` in
    magnitude are set to `mean_D` (the mean of that dimension's massive entries; 0 to zero
    them)."""

    site: ClassVar[str] = "residual"
    dims: tuple[int, ...] = ()
    threshold: float = 0.0
    mean_D: Any = None

    def __call__(self, x_BxTxD, layer):
        in_D = jnp.isin(jnp.arange(x_BxTxD.shape[-1]), jnp.asarray(self.dims, jnp.int32))
        hit = (jnp.abs(x_BxTxD) > self.threshold) & in_D
        return jnp.where(hit, jnp.asarray(self.mean_D, x_BxTxD.dtype), x_BxTxD)


def position_class(inputs_BxT: np.ndarray, b: int, t: int) -> str:
    x = int(inputs_BxT[b, t])
    if t == 0:
        return "BOS" if x == corpus.BOS else "first token"
    if t == 1 and int(inputs_BxT[b, 0]) == corpus.BOS:
        return "first token"
    for name, ids in DELIMITERS.items():
        if x in ids:
            return name
    return "other"


def first_sink_rate(out: ModelOutput, mask, eps: float) -> float:
    scores = [np.asarray(metrics.sink_scores(o.attn_weights, mask))[:, 0] for o in out.layers]
    return metrics.sink_rate(scores, eps)


def massive_activations(
    model: GPT, batch: Batch, out: ModelOutput, real_BxT: np.ndarray, sweep: Phenomenology, eps
) -> dict[str, Any]:
    """Per layer: max |h| / median |h|, the largest entries (distinct (dimension, position
    class) pairs) and the massive entries (> `massive_factor` × median). Then Sun et al.'s
    intervention in every layer that has massive entries: each set to the mean of that
    dimension's massive entries (the value it "should" have), and, for contrast, to 0."""
    inputs = np.asarray(batch.inputs)
    per_layer, means, zeros = [], [], []
    for layer, obs in enumerate(out.layers):
        h_BxTxD = np.asarray(obs.residual)
        a = np.abs(h_BxTxD) * real_BxT[..., None]
        median = float(np.median(np.abs(h_BxTxD)[real_BxT]))
        top: dict[tuple[int, str], float] = {}
        for flat in np.argsort(a.ravel())[::-1][:256]:
            b, t, d = np.unravel_index(flat, a.shape)
            key = (int(d), position_class(inputs, b, t))
            top.setdefault(key, float(a[b, t, d]))
            if len(top) == 4:
                break
        threshold = sweep.massive_factor * median
        hits = a > threshold
        dims = tuple(int(d) for d in np.flatnonzero(hits.any((0, 1))))
        per_layer.append(
            {
                "layer": layer,
                "max_abs": float(a.max()),
                "ratio_to_median": float(a.max() / max(median, 1e-12)),
                "massive_entries": int(hits.sum()),
                "massive_dims": list(dims),
                "top_entries": [{"dim": d, "class": c, "abs": v} for (d, c), v in top.items()],
            }
        )
        if dims:
            mean_D = np.where(hits.any((0, 1)), (h_BxTxD * hits).sum((0, 1)), 0.0) / np.maximum(
                hits.sum((0, 1)), 1
            )
            means.append(MeanPatch(layers=(layer,), dims=dims, threshold=threshold, mean_D=mean_D))
            zeros.append(
                MeanPatch(
                    layers=(layer,), dims=dims, threshold=threshold, mean_D=np.zeros_like(mean_D)
                )
            )
    result: dict[str, Any] = {
        "per_layer": per_layer,
        "patched_layers": [e.layers[0] for e in means],
    }
    if means:
        mask = lm.attention_mask(batch)
        before = lm.val_loss(out, batch)
        patch = Capture(attention=True)
        to_mean = lm.forward(model, batch, patch, Interventions(edits=tuple(means)))
        to_zero = lm.forward(model, batch, patch, Interventions(edits=tuple(zeros)))
        result.update(
            {
                "sink_rate_before": first_sink_rate(out, mask, eps),
                "loss_change_mean_patch": lm.val_loss(to_mean, batch) - before,
                "sink_rate_mean_patch": first_sink_rate(to_mean, mask, eps),
                "loss_change_zero_patch": lm.val_loss(to_zero, batch) - before,
                "sink_rate_zero_patch": first_sink_rate(to_zero, mask, eps),
            }
        )
    return result


# ---------------------------------------------------------------------------------------------
# Active / dormant heads


def row_bos_mass(out: ModelOutput, real_BxT: np.ndarray) -> np.ndarray:
    """[L,B,H] mean attention to position 0 over each row's real queries t ≥ 1."""
    q_BxT = real_BxT.copy()
    q_BxT[:, 0] = False
    return np.stack(
        [
            (np.asarray(o.attn_weights)[..., 0] * q_BxT[:, None]).sum(-1)
            / np.maximum(q_BxT.sum(-1), 1)[:, None]
            for o in out.layers
        ]
    )


def active_dormant(mass_LxBxH: np.ndarray, sweep: Phenomenology) -> dict[str, Any]:
    dormant = (mass_LxBxH >= sweep.dormant).any(1)
    active = (mass_LxBxH <= sweep.active).any(1)
    both = dormant & active
    spread = mass_LxBxH.max(1) - mass_LxBxH.min(1)
    layer, head = np.unravel_index(np.argmax(spread), spread.shape)
    return {
        "share_dormant_and_active": float(both.mean()),
        "heads_dormant_and_active": [[int(a), int(b)] for a, b in np.argwhere(both)],
        "row_mass_min": mass_LxBxH.min(1).tolist(),
        "row_mass_max": mass_LxBxH.max(1).tolist(),
        "widest_head": [int(layer), int(head)],
        "widest_rows": [
            int(np.argmax(mass_LxBxH[layer, :, head])),
            int(np.argmin(mass_LxBxH[layer, :, head])),
        ],
    }


# ---------------------------------------------------------------------------------------------
# Low-rank query-key forms


def joint_factors(block) -> tuple[np.ndarray, np.ndarray]:
    """[D+1, H·K] a layer's query and key maps with the query bias as a last row (and zeros
    for the key bias): head h's joint form is aq[:, h] ak[:, h]ᵀ, and its logit from t to s is
    [x_t 1] form [x_s 1]ᵀ / √K up to a term in t alone. The key bias only adds
    q_t · b_K, the same for every key, which softmax ignores, so no rank or entry is spent on
    it; the query bias's term b_Q · k_s (the last row) is one a sink can use."""
    q, k = block.attn.query, block.attn.key
    wq, wk = np.asarray(q.kernel[...]), np.asarray(k.kernel[...])
    bq = np.asarray(q.bias[...]) if q.bias is not None else np.zeros(wq.shape[1])
    return np.vstack([wq, bq[None]]), np.vstack([wk, np.zeros((1, wk.shape[1]))])


def qk_forms(model: GPT) -> dict[int, np.ndarray]:
    """{layer: [H, D+1, D+1] every head's joint query-key form (query bias included, the
    softmax-invariant key-bias column left out: `joint_factors`)}."""
    k = model.cfg.d_head
    forms = {}
    for layer, block in enumerate(model.blocks):
        if block.attn is None:  # a layer without attention
            continue
        aq, ak = joint_factors(block)
        forms[layer] = np.stack(
            [
                aq[:, h * k : (h + 1) * k] @ ak[:, h * k : (h + 1) * k].T
                for h in range(model.cfg.n_heads)
            ]
        )
    return forms


def with_qk_rank(model: GPT, r: int) -> GPT:
    """A copy of `model` in which every head's joint form [W_Q; b_Q] [W_K; 0]ᵀ ((D+1)², the
    query bias as a row; `joint_factors`) is replaced by its rank-r truncation, refactored into
    the same shapes (the key bias becomes 0: softmax ignores it)."""
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))
    k = model.cfg.d_head
    for block in copy.blocks:
        if block.attn is None:  # a layer without attention
            continue
        q, kk = block.attn.query, block.attn.key
        aq, ak = joint_factors(block)  # [D+1, H·K]
        for h in range(model.cfg.n_heads):
            cols = slice(h * k, (h + 1) * k)
            u, s, vt = np.linalg.svd(aq[:, cols] @ ak[:, cols].T)
            n = min(r, k)
            new_q, new_k = np.zeros_like(aq[:, cols]), np.zeros_like(ak[:, cols])
            new_q[:, :n] = u[:, :n] * np.sqrt(s[:n])
            new_k[:, :n] = vt[:n].T * np.sqrt(s[:n])
            aq[:, cols], ak[:, cols] = new_q, new_k
        q.kernel.set_value(jnp.asarray(aq[:-1], q.kernel[...].dtype))
        kk.kernel.set_value(jnp.asarray(ak[:-1], kk.kernel[...].dtype))
        if q.bias is not None:
            q.bias.set_value(jnp.asarray(aq[-1], q.bias[...].dtype))
        if kk.bias is not None:
            kk.bias.set_value(jnp.zeros_like(kk.bias[...]))
    return copy


def low_rank_plus_sparse(form_NxN: np.ndarray, rank: int, n_sparse: int) -> np.ndarray:
    """The rank-`rank` truncation of `form` plus the `n_sparse` largest-magnitude entries of what
    it leaves (a low-rank plus sparse split in the spirit of OATS, without its input scaling or
    alternating refits; rank 0 is magnitude pruning alone)."""
    u, s, vt = np.linalg.svd(form_NxN)
    low = (u[:, :rank] * s[:rank]) @ vt[:rank]
    rest = form_NxN - low
    keep = np.zeros(rest.size, bool)
    if n_sparse > 0:
        keep[np.argsort(np.abs(rest).ravel())[::-1][:n_sparse]] = True
    return low + np.where(keep.reshape(rest.shape), rest, 0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class PatchLogits(Edit):
    """Replace a layer's attention logits (before the mask) by given ones."""

    site: ClassVar[str] = "attn_logits"
    logits_BxHxTxS: Any = None

    def __call__(self, x_BxHxTxS, layer):
        return jnp.asarray(self.logits_BxHxTxS, x_BxHxTxS.dtype)


def _forward_with_forms(
    model: GPT,
    inputs_BxT: jax.Array,
    forms_LxHxNxN: jax.Array,
    segment_ids_BxT: jax.Array | None,
    positions_BxT: jax.Array | None,
    *,
    layers: tuple[int, ...],
    capture: Capture,
) -> ModelOutput:
    def run(edits: list[Edit], capture: Capture) -> ModelOutput:
        return model(
            inputs_BxT,
            segment_ids_BxT=segment_ids_BxT,
            positions_BxT=positions_BxT,
            capture=capture,
            interventions=Interventions(edits=tuple(edits)),
        )

    edits: list[Edit] = []
    for form_HxNxN, layer in zip(forms_LxHxNxN, layers, strict=True):
        out = run(edits, Capture(residual=True))
        h_BxTxD = out.embeddings if layer == 0 else out.layers[layer - 1].residual
        block = model.blocks[layer]
        pre_ln = model.cfg.norm == "pre" and block.ln_attn is not None
        x_BxTxD = block.ln_attn(h_BxTxD) if pre_ln else h_BxTxD  # the attention's input
        xa_BxTxN = jnp.concatenate([x_BxTxD, jnp.ones((*x_BxTxD.shape[:2], 1))], axis=-1)
        logits = jnp.einsum("btn,hnm,bsm->bhts", xa_BxTxN, form_HxNxN, xa_BxTxN)
        edits.append(PatchLogits(layers=(layer,), logits_BxHxTxS=logits / model.cfg.d_head**0.5))
    return run(edits, capture)


_forward_with_forms_jit = jit_with_model(_forward_with_forms, static_argnames=("layers", "capture"))


def forward_with_forms(
    model: GPT, batch: Batch, forms: dict[int, np.ndarray], capture: Capture
) -> ModelOutput:
    """The model with each layer's query-key forms replaced by `forms` ([H, D+1, D+1], of any
    rank, so not refactorable into d_head-wide maps): layer by layer, the logits
    [x̂_t 1] F [x̂_s 1]ᵀ / √d_head from the attention input x̂ of a pass in which the earlier
    layers are already replaced, patched in at `attn_logits`. One compiled program for any
    forms of these shapes (they are an input, not constants)."""
    layers = tuple(sorted(forms))
    seg = None if batch.segment_ids is None else jnp.asarray(batch.segment_ids)
    pos = None if batch.positions is None else jnp.asarray(batch.positions)
    forms_LxHxNxN = jnp.asarray(np.stack([forms[layer] for layer in layers]), jnp.float32)
    return _forward_with_forms_jit(
        model, jnp.asarray(batch.inputs), forms_LxHxNxN, seg, pos, layers=layers, capture=capture
    )


def split_sweep(
    model: GPT, batch: Batch, eps: float, ranks: tuple[int, ...] | None = None
) -> list[dict[str, Any]]:
    """At the parameter budget of rank r (2 r (D+1) numbers per head, r = 1, 2, 4, …, d_head):
    each head's form as rank r; as rank r/2 plus as many sparse entries as the other half of the
    budget (r ≥ 2); and as that many of its largest entries alone (magnitude pruning). A sparse
    entry counts as one number (its index is not counted)."""
    mask = lm.attention_mask(batch)
    forms = qk_forms(model)
    n = model.cfg.d_model + 1
    if ranks is None:
        ranks = tuple(
            sorted({2**i for i in range(int(np.log2(model.cfg.d_head)) + 1)} | {model.cfg.d_head})
        )
    rows = []
    for r in ranks:
        budget = 2 * r * n
        splits = [("rank r", r, 0), ("magnitude pruning", 0, budget)]
        if r >= 2:
            splits.insert(1, ("rank r/2 + sparse", r // 2, budget - 2 * (r // 2) * n))
        for method, rank, n_sparse in splits:
            new = {
                layer: np.stack([low_rank_plus_sparse(f, rank, n_sparse) for f in f_HxNxN])
                for layer, f_HxNxN in forms.items()
            }
            out = forward_with_forms(model, batch, new, Capture(attention=True))
            rows.append(
                {
                    "budget per head": budget,
                    "method": method,
                    "rank": rank,
                    "sparse entries": n_sparse,
                    "val_loss": lm.val_loss(out, batch),
                    "sink_rate": first_sink_rate(out, mask, eps),
                }
            )
    return rows


def low_rank_sweep(model: GPT, batch: Batch, eps: float) -> list[dict[str, Any]]:
    mask = lm.attention_mask(batch)
    ranks = sorted({2**i for i in range(int(np.log2(model.cfg.d_head)) + 1)} | {model.cfg.d_head})
    rows = []
    for r in ranks:
        out = lm.forward(with_qk_rank(model, r), batch, Capture(attention=True))
        rows.append(
            {
                "rank": r,
                "val_loss": lm.val_loss(out, batch),
                "sink_rate": first_sink_rate(out, mask, eps),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# The experiment


def run(cfg: PhenomenologyConfig, ctx: RunContext) -> dict[str, Any]:
    r = lm.train_lm(plain_run_config(cfg), ctx.out_dir, ctx.resume)
    model, batch = r.model(), r.batch
    eps = cfg.sink_eps[0]
    inputs = np.asarray(batch.inputs)
    real_BxT = batch.counted() & (inputs != corpus.PAD)
    out = lm.forward(model, batch, CAPTURE)
    scores = delimiter_scores(out, inputs, real_BxT)
    top_LxH = np.argmax(np.stack([scores[s] for s in SINKS]), axis=0)
    delimiter_heads = [
        {"layer": int(l), "head": int(h), "sink": SINKS[top_LxH[l, h]], "mass": float(m)}
        for (l, h), m in np.ndenumerate(np.max(np.stack([scores[s] for s in SINKS]), 0))
        if top_LxH[l, h] > 0 and m >= cfg.sweep.catch_min
    ]
    ctr = catch_tag_release(out, inputs, real_BxT, scores, cfg.sweep)
    massive = massive_activations(model, batch, out, real_BxT, cfg.sweep, eps)
    dormancy = active_dormant(row_bos_mass(out, real_BxT), cfg.sweep)
    low_rank = low_rank_sweep(model, batch, eps)
    split = split_sweep(model, batch, eps, cfg.sweep.split_ranks)
    shares = [c["tag_share"] for c in ctr if np.isfinite(c.get("tag_share", np.nan))]
    compared = [c for c in ctr if np.isfinite(c.get("tag_share_null_uncaught", np.nan))]
    margins = [  # the same head must also pass the first claim
        c["tag_share_matched"] - c["tag_share_null_uncaught"]
        for c in compared
        if c["tag_share"] >= cfg.sweep.tag_share
    ]
    claims = [
        check_if(
            bool(shares),
            "no head catches tokens (no top sink holds catch_min of a head's attention)",
            "largest tag share: top direction's part of a catching head's outputs on caught tokens",
            max(shares) if shares else float("nan"),
            ">=",
            cfg.sweep.tag_share,
            "sinks tag the tokens they catch with a common perturbation (Zhang et al. 2025)",
            kind="reproduction",
        ),
        # Added with the null: a head's outputs lie in its d_head-wide span of W_o, so a top
        # direction can hold half their variance on any tokens; a tag is a direction that the
        # caught tokens share more than the uncaught ones do.
        check_if(
            bool(compared),
            "no catching head has enough caught and uncaught tokens for the comparison",
            "largest margin of a tag share ≥ the first claim's over its uncaught-token null "
            "(same head, equal samples)",
            max(margins) if margins else float("nan"),
            ">=",
            cfg.sweep.tag_margin,
            "the tag marks the caught tokens, not any of the head's outputs (Zhang et al. 2025)",
            kind="reproduction",
        ),
    ]
    tables = {
        "Sink scores by class ([layer, head] rows)": [
            {"layer": l, "head": h, **{s: float(scores[s][l, h]) for s in SINKS}}
            for l in range(scores["BOS"].shape[0])
            for h in range(scores["BOS"].shape[1])
        ],
        "Catching heads": [dict(c) for c in ctr],
        "Massive activations per layer": [
            {k: v for k, v in m.items() if k != "top_entries"} for m in massive["per_layer"]
        ],
        "Low-rank query-key forms": low_rank,
        "Rank-r + sparse split at a fixed budget": split,
    }
    return {
        "claims": claims,
        "paper_statement": PAPER_STATEMENT,
        "final_eval": r.evals[-1],
        "delimiter_heads": delimiter_heads,
        "catch_tag_release": ctr,
        "massive_activations": massive,
        "active_dormant": dormancy,
        "low_rank": low_rank,
        "low_rank_sparse_split": split,
        "tables": tables,
        "figures": make_figures(ctx, scores, out, inputs, dormancy, low_rank, split),
    }


def make_figures(ctx, scores, out, inputs, dormancy, low_rank, split) -> list[str]:
    plt = plotting.plt
    files: list[str] = []
    fig, axes = plt.subplots(1, len(SINKS), figsize=(3 * len(SINKS), 2.8))
    for ax, s in zip(axes, SINKS, strict=True):
        im = ax.imshow(scores[s], vmin=0, vmax=1, cmap="viridis")
        ax.set(title=s, xlabel="head", ylabel="layer")
    fig.colorbar(im, ax=axes, shrink=0.8)
    files += ctx.save_figure(fig, "delimiter_sinks")

    layer, head = dormancy["widest_head"]
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    for ax, row, label in zip(
        axes, dormancy["widest_rows"], ("most BOS", "least BOS"), strict=True
    ):
        ax.imshow(np.asarray(out.layers[layer].attn_weights)[row, head], cmap="viridis", vmin=0)
        ax.set(title=f"L{layer}H{head}, row {row} ({label})", xlabel="key", ylabel="query")
    fig.tight_layout()
    files += ctx.save_figure(fig, "active_dormant_head")

    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(9, 3.2))
    ranks = [r["rank"] for r in low_rank]
    ax1.plot(ranks, [r["sink_rate"] for r in low_rank], "o-", label="sink rate")
    ax1.set(xscale="log", xlabel="rank of each head's query-key form", ylabel="sink rate (ε = 0.3)")
    ax2 = ax1.twinx()
    ax2.plot(ranks, [r["val_loss"] for r in low_rank], "s--", color="tab:orange", label="loss")
    ax2.set_ylabel("validation loss")
    for method in dict.fromkeys(r["method"] for r in split):
        sel = [r for r in split if r["method"] == method]
        ax3.plot(
            [r["budget per head"] for r in sel], [r["val_loss"] for r in sel], "o-", label=method
        )
    ax3.axhline(low_rank[-1]["val_loss"], color="gray", lw=0.8, ls=":", label="full form")
    budgets = sorted({r["budget per head"] for r in split})
    ax3.set(xscale="log", xlabel="numbers per head's form", ylabel="validation loss")
    ax3.set_xticks(budgets, [str(b) for b in budgets], minor=False)
    ax3.set_xticks([], minor=True)
    ax3.legend(fontsize=7)
    fig.tight_layout()
    files += ctx.save_figure(fig, "low_rank_qk")
    return files


EXPERIMENT = Experiment("lm_phenomenology", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
