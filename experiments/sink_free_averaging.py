"""Can attention average without a sink? (Zhang, Khan & Papyan 2025, arXiv 2502.00919, and the
sink-free attention literature: Guo et al. 2024 ReLU attention; Ramapuram et al. 2024 sigmoid
attention. Tasks are our precise versions, `sinks_jax.averaging`.)

Two tasks: the averaging task (mean of the tokens after [SEP]) and its trigger-conditional variant
(once the trigger has been seen, the mean of the content so far; otherwise 0). Four two-layer,
one-head-per-layer attention-only models: softmax; softmax with an anti-sink penalty (λ × the
largest column mean of each attention matrix, added to the loss); ReLU attention (÷ visible keys);
sigmoid attention (bias −ln n). We report the best relMSE reached over training and the sink
scores of the final model: BOS attention of queries t ≥ 1 (on no-trigger inputs for the
conditional task) and the SEP sink score (mean over t > p of A[t, p]), each the largest over
layers. Outputs (results/sink_free_averaging/<preset>/): metrics.json, a table, a bar chart.

    python -m experiments.sink_free_averaging --preset quick   # CPU, about 4 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax import averaging as av
from sinks_jax import plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require
from sinks_jax.model import Capture
from sinks_jax.train import train

VARIANTS = ("softmax", "softmax + anti-sink penalty", "relu", "sigmoid")


@dataclasses.dataclass(frozen=True)
class SinkFreeConfig(av.AveragingExperimentConfig):
    penalty: float = 1.0  # λ of the anti-sink penalty
    solved_rel_mse: float = 0.01

    def __post_init__(self) -> None:
        require(self.penalty >= 0, "penalty", self.penalty, ">= 0")


PRESETS = {
    "quick": SinkFreeConfig(),
    "paper": SinkFreeConfig(
        train=TrainConfig(steps=20_000, eval_every=1000, checkpoint_every=5000)
    ),
}
NOTES = {
    "quick": "2 tasks × 4 attention variants × 3000 steps, T 24, d_model 32 (about 4 minutes)",
    "paper": "20k steps per model",
}


def penalised_loss(penalty: float):
    """MSE + λ Σ_layers,heads max_s mean_{b,t} A[b,h,t,s] (penalise the largest column mean)."""

    def loss_fn(model: nnx.Module, batch: av.AveragingBatch) -> jax.Array:
        out = model(batch.features, capture=Capture(attention=True))
        err = ((out.logits - batch.targets) ** 2).sum(-1)
        mse = (err * batch.target_mask).sum() / jnp.maximum(batch.target_mask.sum(), 1.0)
        col = sum(o.attn_weights.mean(axis=(0, 2)).max(-1).sum() for o in out.layers)
        return mse + penalty * col

    return loss_fn


def sink_scores(model: nnx.Module, batch: av.AveragingBatch, conditional: bool) -> dict[str, float]:
    """Largest over layers (head 0) of: BOS attention of queries t ≥ 1 on inputs without a
    trigger (all inputs for the plain task), and SEP attention of queries after SEP."""
    out = model(batch.features, capture=Capture(attention=True))
    n = batch.features.shape[1]
    pos = jnp.arange(n)[None]
    no_trigger = ~batch.has_sep[:, None] if conditional else jnp.ones_like(batch.has_sep)[:, None]
    q_bos = (pos >= 1) & no_trigger  # [B, n]
    after = (pos > batch.sep[:, None]) & batch.has_sep[:, None]
    bos, sep = [], []
    for o in out.layers:
        a = o.attn_weights[:, 0]
        bos.append(float((a[..., 0] * q_bos).sum() / jnp.maximum(q_bos.sum(), 1)))
        idx = jnp.broadcast_to(jnp.minimum(batch.sep, n - 1)[:, None, None], (a.shape[0], n, 1))
        to_sep = jnp.take_along_axis(a, idx, 2)[..., 0]
        sep.append(float((to_sep * after).sum() / jnp.maximum(after.sum(), 1)))
    return {"bos_sink": max(bos), "sep_sink": max(sep)}


def run(cfg: SinkFreeConfig, ctx: RunContext) -> dict[str, Any]:
    base = av.AveragingExperimentConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(av.AveragingExperimentConfig)}
    )
    results: dict[tuple[str, str], dict[str, float]] = {}
    for task_name, conditional in (("averaging", False), ("conditional", True)):
        data = dataclasses.replace(cfg.data, conditional=conditional)
        ev = av.eval_batch(data, cfg.seed, 1024)
        for variant in VARIANTS:
            attention = "softmax" if variant.startswith("softmax") else variant
            c = dataclasses.replace(
                base, data=data, model=dataclasses.replace(cfg.model, attention=attention)
            )
            loss = penalised_loss(cfg.penalty) if "penalty" in variant else av.mse_loss
            result = train(
                c,
                lambda rngs, c=c: av.make_model(c, rngs),
                lambda step, c=c: av.batch_for_step(c.data, c.seed, step),
                out_dir=ctx.out_dir
                / "runs"
                / f"{task_name}_{variant.replace(' ', '').replace('+', '_')}",
                resume=ctx.resume,
                eval_fn=lambda model, step, ev=ev: {"rel_mse": av.last_position_rel_mse(model, ev)},
                loss_fn=loss,
            )
            best = min(r["rel_mse"] for r in result.evals())
            results[(task_name, variant)] = {
                "best_rel_mse": best,
                "final_rel_mse": result.evals()[-1]["rel_mse"],
                **sink_scores(result.model(), ev, conditional),
            }
    solved = cfg.solved_rel_mse
    cond_soft = results[("conditional", "softmax")]
    cond_relu = results[("conditional", "relu")]
    claims = [
        check(
            "conditional_softmax_best_rel_mse", cond_soft["best_rel_mse"], "<=", solved, "solves"
        ),
        check(
            "conditional_softmax_bos_sink_no_trigger",
            cond_soft["bos_sink"],
            ">=",
            0.5,
            "softmax solves it only with a sink",
        ),
        check("conditional_relu_best_rel_mse", cond_relu["best_rel_mse"], "<=", solved, "solves"),
        check(
            "conditional_relu_bos_sink_no_trigger",
            cond_relu["bos_sink"],
            "<=",
            0.2,
            "ReLU attention needs no sink",
        ),
    ]
    table = [{"task": t, "attention": v, **r} for (t, v), r in results.items()]
    figures = make_figures(ctx, results)
    return {
        "claims": claims,
        "results": [{"task": t, "attention": v, **r} for (t, v), r in results.items()],
        "tables": {"Best relMSE and final sink scores": table},
        "figures": figures,
    }


def make_figures(ctx, results) -> list[str]:
    plt = plotting.plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, task in zip(axes, ("averaging", "conditional"), strict=True):
        rel = [max(results[(task, v)]["best_rel_mse"], 1e-6) for v in VARIANTS]
        sink = [results[(task, v)]["bos_sink"] for v in VARIANTS]
        x = range(len(VARIANTS))
        ax.bar([i - 0.2 for i in x], rel, 0.4, label="best relMSE", color="tab:blue")
        ax.set_yscale("log")
        ax.set_ylabel("best relMSE")
        ax2 = ax.twinx()
        ax2.bar([i + 0.2 for i in x], sink, 0.4, label="BOS sink score", color="tab:orange")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("BOS sink score")
        ax.set_xticks(list(x), [v.replace(" + ", "\n+ ") for v in VARIANTS], fontsize=7)
        ax.set_title(f"{task} task")
    fig.legend(frameon=False, loc="upper center", ncol=2)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return ctx.save_figure(fig, "sink_free_averaging")


EXPERIMENT = Experiment("sink_free_averaging", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
