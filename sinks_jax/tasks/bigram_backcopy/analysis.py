"""Bigram-Backcopy analysis of a model on a fixed batch: every metric of Guo et al. 2024 §3 per
layer and head, computed in one jit-compiled forward pass that captures the observables."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import metrics
from sinks_jax.batch import Batch
from sinks_jax.forward import apply, jit_with_model
from sinks_jax.model import GPT, Capture, Interventions
from sinks_jax.tasks.bigram_backcopy.data import (
    BigramBackcopyTask,
    trigger_positions,
    true_next_distribution,
)

BB_CAPTURE = Capture(attention=True, values=True, residual=True)


@dataclasses.dataclass(frozen=True, eq=False)
class BBEvalSet:
    """A fixed evaluation batch with its oracle next-token distributions and trigger mask."""

    batch: Batch
    trigger_BxT: jax.Array
    true_next_BxTxV: jax.Array

    @classmethod
    def build(cls, task: BigramBackcopyTask, batch: Batch) -> BBEvalSet:
        return cls(
            batch, trigger_positions(task, batch.inputs), true_next_distribution(task, batch.inputs)
        )


def _analyse(model: nnx.Module, inputs, extra, interventions: Interventions):
    trigger_BxT, true_next_BxTxV = extra
    out = model(inputs, capture=BB_CAPTURE, interventions=interventions)
    per_layer = []
    for obs in out.layers:
        row: dict[str, Any] = {}
        if obs.attn_weights is not None:
            row.update(
                {
                    f"attn_{k}": v
                    for k, v in metrics.bb_attention(obs.attn_weights, trigger_BxT).items()
                }
            )
            row["delta_logit"] = metrics.delta_logit(obs.attn_logits, ~trigger_BxT)
            row["sink_score_first"] = metrics.sink_scores(obs.attn_weights)[:, 0]
            vals = metrics.value_summary(obs.head_values)
            row.update({f"value_{k}": v for k, v in vals.items()})
        res = metrics.residual_peak(obs.residual)
        row.update({f"res_{k}": v for k, v in res.items()})
        per_layer.append(row)
    risks = metrics.bb_risks(out.logits, true_next_BxTxV, trigger_BxT)
    return per_layer, risks


_analyse_jit = jit_with_model(_analyse, static_argnames=("interventions",))


def analyse(
    model: nnx.Module, evalset: BBEvalSet, interventions: Interventions = Interventions()
) -> dict[str, Any]:
    """Host-side dict: risks (floats) and `layers`, a list (per layer) of per-head lists."""
    per_layer, risks = _analyse_jit(
        model,
        evalset.batch.inputs,
        (evalset.trigger_BxT, evalset.true_next_BxTxV),
        interventions=interventions,
    )
    per_layer, risks = jax.device_get((per_layer, risks))
    return {
        **{k: float(v) for k, v in risks.items()},
        "layers": [{k: np.asarray(v).tolist() for k, v in row.items()} for row in per_layer],
    }


def attention_weights(
    model: GPT, tokens_BxT: jax.Array, interventions: Interventions = Interventions()
) -> np.ndarray:
    """[L, B, H, T, T] attention weights (layers without attention are all zeros)."""
    out = apply(
        model, jnp.asarray(tokens_BxT), capture=Capture(attention=True), interventions=interventions
    )
    b, t = tokens_BxT.shape
    h = model.cfg.n_heads
    return np.stack(
        [
            np.zeros((b, h, t, t)) if o.attn_weights is None else np.asarray(o.attn_weights)
            for o in out.observed
        ]
    )


def sink_head(summary: dict[str, Any]) -> tuple[int, int]:
    """(layer, head) with the largest BOS attention over non-trigger queries."""
    best, where = -1.0, (0, 0)
    for l, row in enumerate(summary["layers"]):
        for h, v in enumerate(row.get("attn_bos_non_trigger", [])):
            if v > best:
                best, where = v, (l, h)
    return where
