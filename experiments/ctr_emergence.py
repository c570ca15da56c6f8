"""Does training find catch, tag, release? (Zhang, Khan & Papyan 2025, arXiv 2502.00919, §4; the
task is our precise version, `sinks_jax.averaging`, since the paper's code is not public.)

A two-layer attention-only model (one head per layer, no MLP, no LayerNorm) is trained on the
averaging task over many seeds. Per seed we report relMSE, layer 1's SEP sink score (mean over
t > p of A¹[t, p]: SEP catches the span after it), the BOS sink score of queries before SEP, the
common-direction energy of the post-SEP layer-1 outputs (‖mean o‖² / mean ‖o‖², 1 = one common
tag), the same energy for the pre-SEP tokens, and layer 2's retrieval mass (the last query's
attention on the post-SEP tokens). Outputs (results/ctr_emergence/<preset>/): metrics.json with
per-seed rows and claims, both layers' attention maps for the best seed, and a scatter of SEP
sink score against relMSE.

    python -m experiments.ctr_emergence --preset quick   # CPU, about 4 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sinks_jax import averaging as av
from sinks_jax import plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require
from sinks_jax.model import Capture


@dataclasses.dataclass(frozen=True)
class EmergenceConfig(av.AveragingExperimentConfig):
    n_seeds: int = 10
    success_rel_mse: float = 0.01

    def __post_init__(self) -> None:
        require(self.n_seeds >= 1, "n_seeds", self.n_seeds, ">= 1")


PRESETS = {
    "quick": EmergenceConfig(),
    "paper": EmergenceConfig(
        n_seeds=20, train=TrainConfig(steps=20_000, eval_every=1000, checkpoint_every=5000)
    ),
}
NOTES = {
    "quick": "10 seeds × 3000 steps, T 24, d_x 8, d_model 32, Adam 3e-3 (about 4 minutes)",
    "paper": "20 seeds × 20k steps",
}


def run(cfg: EmergenceConfig, ctx: RunContext) -> dict[str, Any]:
    ev = av.eval_batch(cfg.data, cfg.seed, 1024)
    base = av.AveragingExperimentConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(av.AveragingExperimentConfig)}
    )
    rows, models = [], {}
    for i in range(cfg.n_seeds):
        seed = cfg.seed + i
        c = dataclasses.replace(base, seed=seed)
        result = av.train_averaging(c, ctx.out_dir / "runs" / f"seed_{seed}", ctx.resume)
        models[seed] = result.model()
        rows.append({"seed": seed, **av.ctr_metrics(models[seed], ev)})
    ok = [r for r in rows if r["rel_mse"] <= cfg.success_rel_mse]
    failed = [r for r in rows if r["rel_mse"] > cfg.success_rel_mse]

    def worst(rs, key, fn):
        return fn(r[key] for r in rs) if rs else None

    claims = [
        check("successful_seeds", len(ok), ">=", 1, "≤ 4 of 10 runs find it"),
        check("success_min_sep_sink", worst(ok, "sep_sink", min), ">=", 0.5, "SEP catches"),
        check("success_min_tag_energy", worst(ok, "tag_energy", min), ">=", 0.8, "common tag"),
        check(
            "success_min_retrieval_mass",
            worst(ok, "retrieval_mass", min),
            ">=",
            0.95,
            "release",
        ),
        check(
            "failed_max_sep_sink",
            worst(failed, "sep_sink", max),
            "<",
            0.2,
            "no sink, no success",
        ),
    ]
    best = min(rows, key=lambda r: r["rel_mse"])["seed"]
    figures = make_figures(ctx, cfg, rows, models[best], ev, best)
    return {
        "claims": claims,
        "per_seed": rows,
        "n_successful": len(ok),
        "tables": {"Per seed (eval batch of 1024)": rows},
        "figures": figures,
    }


def make_figures(ctx, cfg, rows, model, ev, seed) -> list[str]:
    plt = plotting.plt
    files: list[str] = []
    out = model(ev.features[:1], capture=Capture(attention=True))
    p = int(ev.sep[0])
    labels = ["BOS"] + [("SEP" if t == p else f"x{t}") for t in range(1, cfg.data.seq_len + 1)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    for l, ax in enumerate(axes):
        ax.imshow(np.asarray(out.layers[l].attn_weights[0, 0]), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=5, rotation=90)
        ax.set_yticks(range(len(labels)), labels, fontsize=5)
        ax.set_title(f"layer {l + 1}" + (" (catch + tag)" if l == 0 else " (release)"))
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    fig.suptitle(f"seed {seed}, [SEP] at position {p}")
    fig.tight_layout()
    files += ctx.save_figure(fig, "attention_best_seed")

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    rel = [max(r["rel_mse"], 1e-8) for r in rows]
    for ax, key, title in (
        (axes[0], "sep_sink", "layer-1 SEP sink score"),
        (axes[1], "bos_sink_before_sep", "layer-1 BOS sink, queries before SEP"),
    ):
        ax.scatter([r[key] for r in rows], rel)
        for r, y in zip(rows, rel, strict=True):
            ax.annotate(str(r["seed"]), (r[key], y), fontsize=6)
        ax.set_yscale("log")
        ax.axhline(cfg.success_rel_mse, color="gray", ls="--", lw=0.8)
        ax.set(xlabel=title, ylabel="relMSE")
    fig.tight_layout()
    files += ctx.save_figure(fig, "sink_vs_rel_mse")
    return files


EXPERIMENT = Experiment("ctr_emergence", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
