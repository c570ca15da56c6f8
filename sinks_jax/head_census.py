"""Per-head census of a trained GPT: which heads sink, which write, and how the idle ones idle
(Barbero et al. 2025 §3–4: a head can approximate a no-op by attending to BOS, whose value
drains, or by shrinking its values; Guo et al. 2024 §3: active vs dormant).

For every (layer, head), on one batch:
- `bos_score`: mean attention to position 0 over the queries that see it (the first-position
  sink score of `metrics.sink_scores`);
- `out_norm`: mean ‖o_h‖ of the head's output (Σ_k A·W_o v_k, `Capture.head_outputs`) over the
  real query tokens, relative to the mean residual-stream norm entering that layer (so heads of
  different layers and models compare);
- `wov_norm`: ‖W_V,h W_O,h‖_F, the head's value-output circuit (Elhage et al. 2021), from the
  parameters;
- `kind`: "sink" when `bos_score` > ε; else "shrunk" when `out_norm` < `quiet` (the head idles by
  writing almost nothing without a sink); else "writes".

Per model: the number of sink heads (absolute and per layer) and the BOS mass weighted by each
head's output norm, Σ_h bos_h n_h / Σ_h n_h with n_h the absolute output norm (how much of what
the heads write comes from BOS-attending heads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sinks_jax import metrics
from sinks_jax.batch import Batch
from sinks_jax.model import GPT, Block, Capture, ModelOutput, captured

CENSUS_CAPTURE = Capture(attention=True, head_outputs=True, residual=True)


def _value_out_kernels(model: GPT) -> list[tuple[jax.Array, jax.Array] | None]:
    """Per layer (W_V [D, H·K], W_O [H·K, D]), None for a layer without attention."""
    if isinstance(model.blocks, Block):  # scanned: kernels carry a leading layer axis
        attn = captured(model.blocks.attn, "attention")
        w_v, w_o = attn.value.kernel[...], attn.out.kernel[...]
        return [(w_v[i], w_o[i]) for i in range(model.cfg.n_layers)]
    return [
        None if b.attn is None else (b.attn.value.kernel[...], b.attn.out.kernel[...])
        for b in model.blocks
    ]


def wov_norms(model: GPT) -> np.ndarray:
    """[L, H] ‖W_V,h W_O,h‖_F per head (biases left out; 0 for a layer without attention)."""
    cfg = model.cfg
    h, k, d = cfg.n_heads, cfg.d_head, cfg.d_model
    norms = []
    for kernels in _value_out_kernels(model):
        if kernels is None:
            norms.append(np.zeros(h))
            continue
        w_v_DxHxK = jnp.asarray(kernels[0]).reshape(d, h, k)
        w_o_HxKxD = jnp.asarray(kernels[1]).reshape(h, k, d)
        w_ov_HxDxD = jnp.einsum("dhk,hke->hde", w_v_DxHxK, w_o_HxKxD)
        norms.append(np.asarray(jnp.linalg.norm(w_ov_HxDxD, axis=(1, 2))))
    return np.stack(norms)


def census(
    model: GPT,
    batch: Batch,
    forward: Callable[[GPT, Batch, Capture], ModelOutput],
    mask_BxTxT: jax.Array,
    eps: float = 0.3,
    quiet: float = 0.05,
) -> dict[str, Any]:
    """The census of every head on `batch` (`forward(model, batch, capture)` runs the model;
    `mask_BxTxT` is its attention mask; output norms average over the tokens of
    `batch.loss_mask`, or all). Lists are [L][H]."""
    out = forward(model, batch, CENSUS_CAPTURE)
    real_BxT = batch.counted()
    wov = wov_norms(model)
    residual_in = [out.embeddings, *[obs.residual for obs in out.observed[:-1]]]
    bos, rel, absolute, kinds = [], [], [], []
    for obs, res_in in zip(out.observed, residual_in, strict=True):
        scores = np.asarray(metrics.sink_scores(captured(obs.attn_weights), mask_BxTxT))[
            :, 0
        ]  # [H]
        head_norm_BxHxT = np.linalg.norm(np.asarray(captured(obs.head_outputs)), axis=-1)
        n_abs = (head_norm_BxHxT * real_BxT[:, None]).sum((0, 2)) / max(real_BxT.sum(), 1)
        res_norm = float((np.linalg.norm(np.asarray(res_in), axis=-1) * real_BxT).sum())
        res_norm /= max(real_BxT.sum(), 1)
        n_rel = n_abs / max(res_norm, 1e-12)
        bos.append(scores)
        absolute.append(n_abs)
        rel.append(n_rel)
        kinds.append(
            [
                "sink" if s > eps else "shrunk" if r < quiet else "writes"
                for s, r in zip(scores, n_rel, strict=True)
            ]
        )
    bos_LxH, abs_LxH = np.stack(bos), np.stack(absolute)
    flat = [k for row in kinds for k in row]
    return {
        "bos_score": bos_LxH.tolist(),
        "out_norm": np.stack(rel).tolist(),
        "wov_norm": wov.tolist(),
        "kind": kinds,
        "sink_heads": int((bos_LxH > eps).sum()),
        "sink_heads_by_layer": [int(c) for c in (bos_LxH > eps).sum(1)],
        "shrunk_heads": flat.count("shrunk"),
        "writing_heads": flat.count("writes"),
        "bos_mass_weighted_by_output": float((bos_LxH * abs_LxH).sum() / max(abs_LxH.sum(), 1e-12)),
    }
