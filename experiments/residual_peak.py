"""Residual-state peaks in a three-layer model on Bigram-Backcopy (Guo et al. 2024, arXiv
2410.13835, §3.3, Fig. 5 and the ablations of App. B).

With three layers the sink/back-copy head sits in layer 1, and the BOS token's residual norm after
layer 0 grows far above every other token's: a residual-state peak. Ablations locate its source:
the peak needs layer 0 (its attention and its MLP) and a later sink head to feed; removing the
attention of layer 2 keeps it. Outputs (results/residual_peak/<preset>/): metrics.json with
claims, per-layer training dynamics, the layer-0 residual norm of BOS vs the others over training,
the 3-layer attention maps, and a bar chart of the layer-0 residual gap across ablations next to
the paper's values.

    python -m experiments.residual_peak --preset quick   # CPU, 12–18 minutes
    python -m experiments.residual_peak --preset paper   # GPU, paper scale
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sinks_jax import analysis, plotting
from sinks_jax.bb_runs import THREE_LAYER, BBRun, train_bb
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import (
    ExperimentConfig,
    TrainConfig,
    require,
)


@dataclasses.dataclass(frozen=True)
class ResidualPeakConfig(ExperimentConfig):
    """The 3-layer model is `model`; ablations change its layers and train `ablation_steps`."""

    ablation_steps: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.model.n_layers == 3, "model.n_layers", self.model.n_layers, "3 (ablations)")
        require(
            0 < self.ablation_steps <= self.train.steps,
            "ablation_steps",
            self.ablation_steps,
            f"in [1, train.steps={self.train.steps}]",
        )
        require(
            self.ablation_steps % self.train.eval_every == 0,
            "ablation_steps",
            self.ablation_steps,
            f"a multiple of train.eval_every={self.train.eval_every}",
        )


PRESETS = {
    "quick": ResidualPeakConfig(
        **THREE_LAYER["quick"],
        train=TrainConfig(steps=3000, eval_every=250, checkpoint_every=500),
        # Ablations are compared at 1000 steps (the 3-layer gap is already 70 % of its 3000-step
        # value) so that the five extra runs fit the CPU budget.
        ablation_steps=1000,
    ),
    "paper": ResidualPeakConfig(
        **THREE_LAYER["paper"],
        train=TrainConfig(steps=10_000, eval_every=500, checkpoint_every=1000),
        ablation_steps=10_000,
    ),
}
NOTES = {
    "quick": "CPU: d 64, T 64, batch 64, AdamW 1e-3; 3 layers 3000 steps, ablations 1000 "
    "(12–18 min)",
    "paper": "GPU: d 256, T 256, batch 512, AdamW 3e-4, 10k steps for every run",
}

# Guo et al. 2024: layer-0 residual gap ‖Res_<s>‖ − mean ‖Res_others‖ at 10k steps (GPU scale).
PAPER_GAP = {
    "2 layers": 14.7,
    "3 layers": 114.6,
    "3 layers, no attention in layer 2": 106.1,
    "3 layers, no attention in layers 0, 2": 10.8,
    "3 layers, no MLP in layer 0, no attention in layer 2": -1.3,
}
ABLATIONS = {  # name -> ModelConfig changes (trained for ablation_steps)
    "2 layers": {"n_layers": 2},
    "3 layers, no attention in layer 2": {"layers_without_attention": (2,)},
    "3 layers, no attention in layers 0, 2": {"layers_without_attention": (0, 2)},
    "3 layers, no MLP in layer 0, no attention in layer 2": {
        "layers_without_mlp": (0,),
        "layers_without_attention": (2,),
    },
}


def base_config(cfg: ResidualPeakConfig, steps: int, **model_changes) -> ExperimentConfig:
    """The plain ExperimentConfig of one run."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ExperimentConfig)}
    fields["model"] = dataclasses.replace(cfg.model, **model_changes)
    fields["train"] = dataclasses.replace(cfg.train, steps=steps)
    return ExperimentConfig(**fields)


def layer0_gap_at(run: BBRun, step: int) -> float:
    return run.series("res_peak", 0)[run.steps.index(step)]


def run_configs(cfg: ResidualPeakConfig) -> dict[str, ExperimentConfig]:
    """Every run's config (built, so validated, before any training starts)."""
    configs = {
        "3 layers": base_config(cfg, cfg.train.steps),
        "1 layer": base_config(cfg, cfg.train.steps, n_layers=1),
    }
    for name, changes in ABLATIONS.items():
        configs[name] = base_config(cfg, cfg.ablation_steps, **changes)
    return configs


def run(cfg: ResidualPeakConfig, ctx: RunContext) -> dict[str, Any]:
    runs_dir = ctx.out_dir / "runs"
    configs = run_configs(cfg)
    main_run = train_bb(configs.pop("3 layers"), runs_dir / "3_layers", ctx.resume)
    one = train_bb(configs.pop("1 layer"), runs_dir / "1_layer", ctx.resume)
    ablations = {
        name: train_bb(c, runs_dir / name.replace(", ", "_").replace(" ", "_"), ctx.resume)
        for name, c in configs.items()
    }
    gaps = {"1 layer": layer0_gap_at(one, cfg.ablation_steps)}
    gaps["2 layers"] = layer0_gap_at(ablations["2 layers"], cfg.ablation_steps)
    gaps["3 layers"] = layer0_gap_at(main_run, cfg.ablation_steps)
    for name in list(ABLATIONS)[1:]:
        gaps[name] = layer0_gap_at(ablations[name], cfg.ablation_steps)

    final = main_run.evals[-1]
    sink_layer, sink_head = analysis.sink_head(final)
    n_layers = cfg.model.n_layers
    per_layer = [
        {
            "layer": l,
            "Attn_<s> non-trigger": main_run.final("attn_bos_non_trigger", l, 0),
            "prev-token attn on triggers": main_run.final("attn_prev_token_trigger", l, 0),
            "value ratio BOS/others": main_run.final("value_ratio", l, 0),
            "‖Res_<s>‖": main_run.final("res_first", l),
            "mean ‖Res_others‖": main_run.final("res_others", l),
            "residual ratio": main_run.final("res_ratio", l),
        }
        for l in range(n_layers)
    ]
    copy_layer = int(np.argmax([row["prev-token attn on triggers"] for row in per_layer]))
    ratio3 = main_run.final("res_ratio", 0)
    ratio1 = one.final("res_ratio", 0)
    g3 = gaps["3 layers"]
    claims = [
        check("sink_layer", sink_layer, "==", 1, "layer 1 (0-indexed) holds the sink head"),
        check("backcopy_layer", copy_layer, "==", 1, "the sink head is the back-copy head"),
        check(
            "sink_head_attn_bos_non_trigger",
            per_layer[1]["Attn_<s> non-trigger"],
            ">=",
            0.8,
            "dormant head on non-trigger tokens",
        ),
        check("backcopy_ce", final["backcopy_risk"], "<=", 0.05, "≈ 0"),
        check(
            "one_layer_layer0_residual_ratio",
            ratio1,
            "<=",
            1.5,
            "no BOS-specific residual peak with 1 layer",
        ),
        check(
            "three_layer_layer0_residual_ratio",
            ratio3,
            ">=",
            1.5,
            "residual peak after layer 0 (gap 114.6 at 10k)",
        ),
        check(
            "layer0_gap_grows_over_training",
            main_run.final("res_peak", 0) - g3,
            ">",
            0.0,
            "‖Res_<s>‖ keeps growing with Adam",
        ),
        # Ablation pattern of the paper (our thresholds: half of the 3-layer gap).
        check(
            "ablation_3_layers_over_2_layers",
            g3 - gaps["2 layers"],
            ">",
            0.0,
            "114.6 vs 14.7",
        ),
        check(
            "ablation_no_attn_l2_keeps_peak",
            gaps["3 layers, no attention in layer 2"] / g3,
            ">=",
            0.5,
            "106.1 / 114.6 = 0.93",
        ),
        check(
            "ablation_no_attn_l0_l2_loses_peak",
            gaps["3 layers, no attention in layers 0, 2"] / g3,
            "<",
            0.5,
            "10.8 / 114.6 = 0.09",
        ),
        check(
            "ablation_no_mlp_l0_loses_peak",
            gaps["3 layers, no MLP in layer 0, no attention in layer 2"] / g3,
            "<",
            0.5,
            "−1.3 / 114.6 = −0.01",
        ),
    ]
    figures = make_figures(ctx, cfg, main_run, one, gaps)
    return {
        "claims": claims,
        "layer0_gap_at_ablation_steps": gaps,
        "sink_head": [sink_layer, sink_head],
        "per_layer_final": per_layer,
        "time_series": {
            "step": main_run.steps,
            **{
                f"layer{l}_{k}": main_run.series(k, l, 0)
                for l in range(n_layers)
                for k in ("attn_bos_non_trigger", "attn_prev_token_trigger", "value_ratio")
            },
            **{
                f"layer{l}_{k}": main_run.series(k, l)
                for l in range(n_layers)
                for k in ("res_first", "res_others")
            },
        },
        "tables": {
            f"3 layers, per layer at step {cfg.train.steps}": per_layer,
            f"Layer-0 residual gap ‖Res_<s>‖ − mean ‖Res_others‖ at step {cfg.ablation_steps} "
            "(paper: GPU scale, 10k steps)": [
                {"model": k, "ours": v, "paper": PAPER_GAP.get(k)} for k, v in gaps.items()
            ],
        },
        "train": {
            "wall_time_s": {
                "3 layers": main_run.result.wall_time_s,
                "1 layer": one.result.wall_time_s,
                **{k: r.result.wall_time_s for k, r in ablations.items()},
            }
        },
        "figures": figures,
    }


def make_figures(ctx, cfg, main_run: BBRun, one: BBRun, gaps: dict[str, float]) -> list[str]:
    files: list[str] = []
    n_layers = cfg.model.n_layers
    steps = main_run.steps
    layers = range(n_layers)
    fig = plotting.dynamics(
        steps,
        {
            "risk (nats)": {
                "backcopy": [r["backcopy_risk"] for r in main_run.evals],
                "bigram excess": [r["bigram_excess"] for r in main_run.evals],
            },
            "Attn_<s> (non-trigger queries)": {
                f"layer {l}": main_run.series("attn_bos_non_trigger", l, 0) for l in layers
            },
            "prev-token attention (triggers)": {
                f"layer {l}": main_run.series("attn_prev_token_trigger", l, 0) for l in layers
            },
            "value ratio BOS/others": {
                f"layer {l}": main_run.series("value_ratio", l, 0) for l in layers
            },
            "layer-0 residual norm": {
                "BOS": main_run.series("res_first", 0),
                "others": main_run.series("res_others", 0),
                "BOS, 1-layer model": one.series("res_first", 0),
            },
            "residual ratio BOS/others": {
                f"after layer {l}": main_run.series("res_ratio", l) for l in layers
            },
        },
    )
    files += ctx.save_figure(fig, "dynamics_per_layer")

    toks = np.asarray(main_run.evalset.batch.inputs[:1, :24])
    att = analysis.attention_weights(main_run.model(), toks)[:, 0]
    labels = [main_run.task.itos[int(t)] for t in toks[0]]
    triggers = [bool(main_run.task.trigger_mask[int(t)]) for t in toks[0]]
    fig = plotting.attention_grid(att, labels, "3 layers; triggers in red", highlight=triggers)
    files += ctx.save_figure(fig, "attention_3_layers")

    plt = plotting.plt
    names = list(gaps)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].bar(range(len(names)), [gaps[n] for n in names], color="tab:blue")
    axes[0].set_title(f"ours ({ctx.preset}, step {cfg.ablation_steps})")
    paper_names = [n for n in names if n in PAPER_GAP]
    axes[1].bar(range(len(paper_names)), [PAPER_GAP[n] for n in paper_names], color="tab:gray")
    axes[1].set_title("Guo et al. 2024 (GPU, 10k steps)")
    for ax, ns in ((axes[0], names), (axes[1], paper_names)):
        short = [n.replace("3 layers, ", "").replace("attention", "attn") for n in ns]
        ax.set_xticks(range(len(ns)), short, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("layer-0 ‖Res_<s>‖ − mean others")
        ax.axhline(0, color="black", lw=0.6)
    fig.tight_layout()
    files += ctx.save_figure(fig, "ablation_layer0_gap")
    return files


EXPERIMENT = Experiment("residual_peak", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
