"""Mitigating extreme tokens: Adam vs SGD vs ReLU attention (Guo et al. 2024, arXiv 2410.13835,
§3.3, Fig. 6).

Three 3-layer models with the same initialisation train on Bigram-Backcopy: AdamW, SGD with
momentum, and ReLU attention (A = ReLU(scores) / #visible keys) with AdamW. With Adam the BOS
residual norm after layer 0 grows steadily (the residual-state peak); SGD keeps it flat, because
the small, shrinking gradient that pushes it barely moves plain gradient steps (see
`proofs_numeric.adam_vs_sgd_peak`); ReLU attention needs no sink at all, so neither the peak nor
the value drain forms. A one-layer ReLU-attention model shows that back-copy is still learned with
no BOS attention and no value drain. Outputs (results/optimizer_mitigations/<preset>/):
metrics.json with claims, the layer-0 ‖Res_<s>‖ curves of the three runs, per-layer dynamics and
the one-layer ReLU attention maps.

    python -m experiments.optimizer_mitigations --preset quick   # CPU, about 12 minutes
    python -m experiments.optimizer_mitigations --preset paper   # GPU, paper scale
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sinks_jax import plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import OptimConfig, TrainConfig, require, run_config
from sinks_jax.tasks.bigram_backcopy import analysis
from sinks_jax.tasks.bigram_backcopy.config import BBConfig
from sinks_jax.tasks.bigram_backcopy.runs import THREE_LAYER, BBRun, train_bb


@dataclasses.dataclass(frozen=True)
class MitigationSweep:
    """What the other runs change: SGD's rate and momentum, the 1-layer ReLU run's rate and
    steps."""

    sgd_lr: float = 0.03
    sgd_momentum: float = 0.9
    relu_one_layer_lr: float = 3e-3
    relu_one_layer_steps: int = 1000

    def __post_init__(self) -> None:
        require(self.sgd_lr > 0, "sweep.sgd_lr", self.sgd_lr, "> 0")
        require(0 <= self.sgd_momentum < 1, "sweep.sgd_momentum", self.sgd_momentum, "in [0, 1)")
        lr, steps = self.relu_one_layer_lr, self.relu_one_layer_steps
        require(lr > 0, "sweep.relu_one_layer_lr", lr, "> 0")
        require(steps > 0, "sweep.relu_one_layer_steps", steps, "> 0")


@dataclasses.dataclass(frozen=True)
class MitigationConfig(BBConfig):
    """`model`/`optim` are the AdamW softmax run; the others change only what their name says."""

    sweep: MitigationSweep = MitigationSweep()


PRESETS = {
    "quick": MitigationConfig(
        **THREE_LAYER["quick"],
        # 2000 steps, so that three 3-layer runs fit the CPU budget (the Adam peak is already
        # ×1.5 at 1500 steps).
        train=TrainConfig(steps=2000, eval_every=250, checkpoint_every=500),
    ),
    "paper": MitigationConfig(
        **THREE_LAYER["paper"],
        train=TrainConfig(steps=10_000, eval_every=500, checkpoint_every=1000),
        sweep=MitigationSweep(relu_one_layer_lr=3e-4, relu_one_layer_steps=10_000),
    ),
}
NOTES = {
    "quick": "CPU: d 64, T 64, batch 64, 3 layers × 3 runs of 2000 steps + 1-layer ReLU (≈ 12 min)",
    "paper": "GPU: d 256, T 256, batch 512, AdamW 3e-4 / SGD 0.03, 10k steps",
}
# Guo et al. 2024 (GPU scale): layer-0 ‖Res_<s>‖ at initialisation → 10k steps.
PAPER_RES = {"AdamW": (24.3, 140.7), "SGD": (24.3, 20.4), "ReLU attention": (23.4, 24.5)}


def run_configs(cfg: MitigationConfig) -> dict[str, BBConfig]:
    base = run_config(cfg)
    sgd = OptimConfig(
        name="sgd",
        lr=cfg.sweep.sgd_lr,
        momentum=cfg.sweep.sgd_momentum,
        weight_decay=cfg.optim.weight_decay,
    )
    relu_model = dataclasses.replace(cfg.model, attention="relu")
    return {
        "AdamW": base,
        "SGD": dataclasses.replace(base, optim=sgd),
        "ReLU attention": dataclasses.replace(base, model=relu_model),
        "ReLU attention, 1 layer": dataclasses.replace(
            base,
            model=dataclasses.replace(relu_model, n_layers=1),
            optim=dataclasses.replace(cfg.optim, lr=cfg.sweep.relu_one_layer_lr),
            train=dataclasses.replace(cfg.train, steps=cfg.sweep.relu_one_layer_steps),
        ),
    }


def growth(run: BBRun, start: int = 0) -> float:
    """Layer-0 ‖Res_<s>‖ at the last eval over its value at eval step `start` (0: init)."""
    res = run.series("res_first", 0)
    return res[-1] / res[run.steps.index(start)]


def half_step(run: BBRun) -> int:
    """The eval step nearest half of training (the second half excludes early transients)."""
    return min(run.steps, key=lambda s: abs(s - run.steps[-1] // 2))


def matched_comparison(runs: dict[str, BBRun]) -> list[str]:
    """Words for report.md: are the three runs compared at matched steps and loss?"""
    three = list(runs.items())[:3]
    parts = ", ".join(
        f"{name} {r.steps[-1]} steps, backcopy CE {r.evals[-1]['backcopy_risk']:.4f}, bigram "
        f"excess {r.evals[-1]['bigram_excess']:.3f}, growth ×{growth(r):.3f} "
        f"(×{growth(r, half_step(r)):.3f} from step {half_step(r)})"
        for name, r in three
    )
    return [
        f"Layer-0 growth is compared at the same step count and at the loss each run reached: "
        f"{parts}."
    ]


def run(cfg: MitigationConfig, ctx: RunContext) -> dict[str, Any]:
    configs = run_configs(cfg)  # every run's config is validated before any training starts
    runs = {
        name: train_bb(
            c, ctx.out_dir / "runs" / name.replace(", ", "_").replace(" ", "_"), ctx.resume
        )
        for name, c in configs.items()
    }
    adam, sgd, relu, relu1 = runs.values()
    relu1_final = relu1.evals[-1]
    claims = [
        check(
            "adam_layer0_bos_growth",
            growth(adam),
            ">=",
            1.35,
            "24.3 → 140.7 (×5.8)",
            kind="reproduction",
        ),
        check(
            "sgd_layer0_bos_growth",
            growth(sgd),
            "<=",
            1.05,
            "24.3 → 20.4 (×0.84)",
            kind="reproduction",
        ),
        check(
            "adam_minus_sgd_layer0_residual_ratio",
            adam.final("res_ratio", 0) - sgd.final("res_ratio", 0),
            ">=",
            0.25,
            "peak with Adam only",
            kind="reproduction",
        ),
        check(
            "relu_one_layer_backcopy_ce",
            relu1_final["backcopy_risk"],
            "<=",
            0.05,
            "≈ 0",
            kind="sanity",
        ),
        check(
            "relu_one_layer_attn_bos_non_trigger",
            relu1.final("attn_bos_non_trigger", 0, 0),
            "<=",
            0.01,
            "no attention sink",
            kind="reproduction",
        ),
        check(
            "relu_one_layer_value_ratio",
            relu1.final("value_ratio", 0, 0),
            ">=",
            0.4,
            "no value drain",
            kind="reproduction",
        ),
        # Ours: the 3-layer ReLU model grows no layer-0 peak either (paper 23.4 → 24.5).
        # a reproduction: the paper reports this run's growth (PAPER_RES); only the claim is ours
        check(
            "relu_layer0_bos_growth",
            growth(relu),
            "<=",
            1.05,
            "23.4 → 24.5 (×1.05)",
            kind="reproduction",
        ),
    ]
    table = []
    for name, r in list(runs.items())[:3]:
        res = r.series("res_first", 0)
        paper = PAPER_RES[name]
        table.append(
            {
                "run": name,
                "‖Res_<s>‖ init": res[0],
                f"‖Res_<s>‖ step {r.steps[-1]}": res[-1],
                "growth": res[-1] / res[0],
                "growth, second half": growth(r, half_step(r)),
                "residual ratio BOS/others": r.final("res_ratio", 0),
                "max Attn_<s> over layers": max(
                    r.final("attn_bos_non_trigger", l, 0) for l in range(cfg.model.n_layers)
                ),
                "backcopy CE": r.evals[-1]["backcopy_risk"],
                "bigram excess": r.evals[-1]["bigram_excess"],
                "paper init → 10k": f"{paper[0]} → {paper[1]}",
            }
        )
    figures = make_figures(ctx, cfg, runs)
    return {
        "claims": claims,
        "time_series": {
            name: {
                "step": r.steps,
                "layer0_res_first": r.series("res_first", 0),
                "layer0_res_others": r.series("res_others", 0),
            }
            for name, r in runs.items()
        },
        "relu_one_layer": {
            "backcopy_ce": relu1_final["backcopy_risk"],
            "bigram_excess": relu1_final["bigram_excess"],
            "attn_bos_non_trigger": relu1.final("attn_bos_non_trigger", 0, 0),
            "attn_prev_token_trigger": relu1.final("attn_prev_token_trigger", 0, 0),
            "value_ratio": relu1.final("value_ratio", 0, 0),
        },
        "tables": {"Layer-0 BOS residual norm, 3 layers": table},
        "notes": matched_comparison(runs),
        "train": {"wall_time_s": {k: r.result.wall_time_s for k, r in runs.items()}},
        "figures": figures,
    }


def make_figures(ctx, cfg, runs: dict[str, BBRun]) -> list[str]:
    plt = plotting.plt
    files: list[str] = []
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for name, r in list(runs.items())[:3]:
        (line,) = axes[0].plot(r.steps, r.series("res_first", 0), marker=".", label=name)
        axes[0].plot(r.steps, r.series("res_others", 0), ls=":", color=line.get_color())
        axes[1].plot(r.steps, r.series("res_ratio", 0), marker=".", label=name)
    axes[0].set(xlabel="step", ylabel="norm", title="layer-0 ‖Res_<s>‖ (dotted: others)")
    axes[1].set(xlabel="step", ylabel="ratio", title="layer-0 residual ratio BOS / others")
    axes[0].legend(frameon=False)
    fig.tight_layout()
    files += ctx.save_figure(fig, "layer0_bos_residual")

    layers = range(cfg.model.n_layers)
    panels = {}
    for name, r in list(runs.items())[:3]:
        panels[f"{name}: Attn_<s>"] = {
            f"layer {l}": r.series("attn_bos_non_trigger", l, 0) for l in layers
        }
        panels[f"{name}: value ratio"] = {
            f"layer {l}": r.series("value_ratio", l, 0) for l in layers
        }
    fig = plotting.dynamics(runs["AdamW"].steps, panels, ncols=2)
    files += ctx.save_figure(fig, "dynamics_per_layer")

    relu1 = runs["ReLU attention, 1 layer"]
    toks = np.asarray(relu1.evalset.batch.inputs[:1, :24])
    att = analysis.attention_weights(relu1.model(), toks)[:, 0]
    labels = [relu1.task.itos[int(t)] for t in toks[0]]
    triggers = [bool(relu1.task.trigger_mask[int(t)]) for t in toks[0]]
    fig = plotting.attention_grid(
        att, labels, "ReLU attention, 1 layer; triggers in red", highlight=triggers
    )
    files += ctx.save_figure(fig, "relu_attention_one_layer")
    return files


EXPERIMENT = Experiment("optimizer_mitigations", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
