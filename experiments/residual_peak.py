"""Residual-state peaks in a three-layer model on Bigram-Backcopy (Guo et al. 2024, arXiv
2410.13835, §3.3, Fig. 5 and the ablations of App. B).

With three layers the sink/back-copy head sits in layer 1, and the BOS token's residual norm after
layer 0 grows far above every other token's: a residual-state peak, written (the paper says) by an
early MLP, which lets later layers make BOS a sink. The gap ‖Res_<s>‖ − mean ‖Res_others‖ alone
cannot locate that source: in layer 0 BOS attends only to itself and receives one undiluted value
vector while other tokens receive an average, a structural gap present in every ablation. So the
layer-0 residual (pre-LN: embedding + attention-0 output + MLP-0 output) is split into the three
parts; each part's projection on the residual direction gives an exact additive split of the gap.
The ablations (trained as long as the main run) are compared on how MLP-0's share grew between
two steps, `growth_from` and `ablation_steps`, not on the level of the gap.

Outputs (results/residual_peak/<preset>/): metrics.json with claims, per-layer training dynamics,
the layer-0 parts of every run over training, the 3-layer attention maps, and the gap of each
ablation split into its parts next to the paper's gaps.

    python -m experiments.residual_peak --preset quick   # CPU, about 8 minutes
    python -m experiments.residual_peak --preset paper   # GPU, paper scale
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import plotting
from sinks_jax.claims import check, check_if, ratio
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require, run_config
from sinks_jax.forward import jit_with_model
from sinks_jax.model import Capture, ModelOutput
from sinks_jax.tasks.bigram_backcopy import analysis
from sinks_jax.tasks.bigram_backcopy.config import BBConfig
from sinks_jax.tasks.bigram_backcopy.runs import THREE_LAYER, BBRun, train_bb


@dataclasses.dataclass(frozen=True)
class ResidualPeakSweep:
    """Ablations train `ablation_steps`; growth of the layer-0 parts is measured between the
    evals at `growth_from` and `ablation_steps`, the same steps in every run."""

    ablation_steps: int = 1000
    growth_from: int = 0


@dataclasses.dataclass(frozen=True)
class ResidualPeakConfig(BBConfig):
    """The 3-layer model is `model`; ablations change its layers (see `ResidualPeakSweep`)."""

    sweep: ResidualPeakSweep = ResidualPeakSweep()

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.model.n_layers == 3, "model.n_layers", self.model.n_layers, "3 (ablations)")
        steps, start, every = (
            self.sweep.ablation_steps,
            self.sweep.growth_from,
            self.train.eval_every,
        )
        require(
            0 < steps <= self.train.steps,
            "sweep.ablation_steps",
            steps,
            f"in [1, train.steps={self.train.steps}]",
        )
        require(
            steps % every == 0,
            "sweep.ablation_steps",
            steps,
            f"a multiple of train.eval_every={every}",
        )
        require(
            0 <= start < steps and start % every == 0,
            "sweep.growth_from",
            start,
            f"a multiple of train.eval_every={every} below sweep.ablation_steps={steps}",
        )


PRESETS = {
    "quick": ResidualPeakConfig(
        **THREE_LAYER["quick"],
        # Every run trains as long as the main run: 1000 steps (the main run had 3000, the
        # ablations 1000; six runs of 3000 would take about 24 minutes on 2 cores). The MLP-0
        # claims are therefore judged at 1000 steps; growth is measured from step 250.
        train=TrainConfig(steps=1000, eval_every=250, checkpoint_every=500),
        sweep=ResidualPeakSweep(ablation_steps=1000, growth_from=250),
    ),
    "paper": ResidualPeakConfig(
        **THREE_LAYER["paper"],
        train=TrainConfig(steps=10_000, eval_every=500, checkpoint_every=1000),
        sweep=ResidualPeakSweep(ablation_steps=10_000, growth_from=1000),
    ),
}
NOTES = {
    "quick": "CPU: d 64, T 64, batch 64, AdamW 1e-3; every run 1000 steps (about 8 min)",
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
NO_MLP0 = "3 layers, no MLP in layer 0, no attention in layer 2"


# ---------------------------------------------------------------------------------------------
# The BOS residual after layer 0, split by what wrote it


PARTS = ("embedding", "attention", "mlp")  # embedding, attention-0 output, MLP-0 output
PARTS_CAPTURE = Capture(blocks=True, residual=True)


def layer0_parts(out: ModelOutput) -> dict[str, jax.Array]:
    """[B,T,D] each: the embeddings, attention-0 and MLP-0 outputs. With pre-LN they sum to the
    residual after layer 0; a removed block contributes zeros. Needs `PARTS_CAPTURE`."""
    obs = out.layers[0]
    return {"embedding": out.embeddings, "attention": obs.attn_out, "mlp": obs.mlp_out}


def part_summary(part_BxTxD: jax.Array, residual_BxTxD: jax.Array) -> dict[str, jax.Array]:
    """‖part‖ at BOS (position 0) and its mean over the other positions, and `share`: the part's
    projection on the residual direction, BOS minus the mean of the others. The projections of
    the parts sum to ‖Res‖, so the shares sum to the gap ‖Res_<s>‖ − mean ‖Res_others‖."""
    norm_BxT = jnp.linalg.norm(part_BxTxD, axis=-1)
    unit_BxTxD = residual_BxTxD / jnp.linalg.norm(residual_BxTxD, axis=-1, keepdims=True)
    along_BxT = jnp.sum(part_BxTxD * unit_BxTxD, axis=-1)
    return {
        "bos": norm_BxT[:, 0].mean(),
        "others": norm_BxT[:, 1:].mean(),
        "share": along_BxT[:, 0].mean() - along_BxT[:, 1:].mean(),
    }


@jit_with_model
def _layer0_summary(model: nnx.Module, tokens_BxT):
    out = model(tokens_BxT, capture=PARTS_CAPTURE)
    residual_BxTxD = out.layers[0].residual
    return {k: part_summary(p, residual_BxTxD) for k, p in layer0_parts(out).items()}


def layer0_summary(model: nnx.Module, tokens_BxT: jax.Array) -> dict[str, dict[str, float]]:
    """Host-side `part_summary` of each layer-0 part (Guo et al. §3.3: which block writes the
    BOS peak)."""
    return jax.tree.map(float, jax.device_get(_layer0_summary(model, tokens_BxT)))


def train_run(cfg: BBConfig, out_dir: Path | None, resume: Any = False) -> BBRun:
    """`tasks.bigram_backcopy.runs.train_bb` with the layer-0 decomposition in every eval row."""

    def parts(model: nnx.Module, evalset: analysis.BBEvalSet) -> dict[str, Any]:
        return {"layer0_parts": layer0_summary(model, evalset.batch.inputs)}

    return train_bb(cfg, out_dir, resume, extra_eval=parts)


def part_series(run: BBRun, part: str, key: str) -> list[float]:
    return [row["layer0_parts"][part][key] for row in run.evals]


def part_at(run: BBRun, part: str, key: str, step: int) -> float:
    return part_series(run, part, key)[run.steps.index(step)]


def base_config(cfg: ResidualPeakConfig, steps: int, **model_changes) -> BBConfig:
    """The plain BBConfig of one run."""
    return dataclasses.replace(
        run_config(cfg),
        model=dataclasses.replace(cfg.model, **model_changes),
        train=dataclasses.replace(cfg.train, steps=steps),
    )


def layer0_gap_at(run: BBRun, step: int) -> float:
    return run.series("res_peak", 0)[run.steps.index(step)]


def run_configs(cfg: ResidualPeakConfig) -> dict[str, BBConfig]:
    """Every run's config (built, so validated, before any training starts)."""
    configs = {
        "3 layers": base_config(cfg, cfg.train.steps),
        "1 layer": base_config(cfg, cfg.train.steps, n_layers=1),
    }
    for name, changes in ABLATIONS.items():
        configs[name] = base_config(cfg, cfg.sweep.ablation_steps, **changes)
    return configs


def growth(run: BBRun, cfg: ResidualPeakConfig) -> dict[str, float]:
    """Each layer-0 part of BOS (norm and share of the gap) at `growth_from` and
    `ablation_steps`, and its change between them; the same for the whole gap."""
    t0, t1 = cfg.sweep.growth_from, cfg.sweep.ablation_steps
    row: dict[str, float] = {}
    for part in PARTS:
        for key in ("bos", "others", "share"):
            a, b = part_at(run, part, key, t0), part_at(run, part, key, t1)
            row[f"{part}_{key}@{t0}"], row[f"{part}_{key}@{t1}"] = a, b
        row[f"{part}_share_change"] = row[f"{part}_share@{t1}"] - row[f"{part}_share@{t0}"]
    a, b = layer0_gap_at(run, t0), layer0_gap_at(run, t1)
    row[f"gap@{t0}"], row[f"gap@{t1}"], row["gap_change"] = a, b, b - a
    return row


def run(cfg: ResidualPeakConfig, ctx: RunContext) -> dict[str, Any]:
    runs_dir = ctx.out_dir / "runs"
    configs = run_configs(cfg)
    runs = {
        name: train_run(c, runs_dir / name.replace(", ", "_").replace(" ", "_"), ctx.resume)
        for name, c in configs.items()
    }
    main_run, one = runs["3 layers"], runs["1 layer"]
    t0, t1 = cfg.sweep.growth_from, cfg.sweep.ablation_steps
    gaps = {name: layer0_gap_at(runs[name], t1) for name in runs}
    grown = {name: growth(r, cfg) for name, r in runs.items()}

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
    g3 = grown["3 layers"]
    mlp3 = g3["mlp_share_change"]  # MLP-0's part of the growth of the gap, 3 layers
    no_growth = f"MLP-0's share of the 3-layer gap did not grow between steps {t0} and {t1}"
    claims = [
        check(
            "sink_layer",
            sink_layer,
            "==",
            1,
            "layer 1 (0-indexed) holds the sink head",
            kind="reproduction",
        ),
        check(
            "backcopy_layer",
            copy_layer,
            "==",
            1,
            "the sink head is the back-copy head",
            kind="reproduction",
        ),
        check(
            "sink_head_attn_bos_non_trigger",
            per_layer[1]["Attn_<s> non-trigger"],
            ">=",
            0.8,
            "dormant head on non-trigger tokens",
            kind="reproduction",
        ),
        check("backcopy_ce", final["backcopy_risk"], "<=", 0.05, "≈ 0", kind="sanity"),
        check(
            "one_layer_layer0_residual_ratio",
            one.final("res_ratio", 0),
            "<=",
            1.5,
            "no BOS-specific residual peak with 1 layer",
            kind="reproduction",
        ),
        check(
            "three_layer_layer0_residual_ratio",
            main_run.final("res_ratio", 0),
            ">=",
            1.5,
            "residual peak after layer 0 (gap 114.6 at 10k); ours is mostly attention-0",
            kind="reproduction",
        ),
        check(
            "layer0_gap_grows_over_training",
            g3["gap_change"],
            ">",
            0.0,
            f"‖Res_<s>‖ keeps growing with Adam (gap, step {t0} -> {t1})",
            kind="reproduction",
        ),
        # Guo et al. §3.3: an early MLP writes the BOS peak. MLP-0's own output at BOS ...
        check(
            "mlp0_bos_over_others",
            ratio(g3[f"mlp_bos@{t1}"], g3[f"mlp_others@{t1}"]),
            ">=",
            1.5,
            "massive ‖MLP-0 out‖ at BOS only",
            kind="reproduction",
        ),
        # ... and most of the gap's growth is MLP-0's (the shares sum to the gap).
        check(
            "mlp0_share_of_gap_growth",
            ratio(mlp3, g3["gap_change"]),
            ">=",
            0.5,
            "the growing peak is written by the MLP",
            kind="reproduction",
        ),
        # Ablations, on MLP-0's part of the gap's growth between the same two steps; a ratio
        # to the 3-layer growth is undefined when that did not grow.
        check(
            "ablation_3_layers_over_2_layers",
            mlp3 - grown["2 layers"]["mlp_share_change"],
            ">",
            0.0,
            "gap 114.6 vs 14.7",
            kind="reproduction",
        ),
        check_if(
            mlp3 > 0,
            no_growth,
            "ablation_no_attn_l2_keeps_peak",
            ratio(grown["3 layers, no attention in layer 2"]["mlp_share_change"], mlp3),
            ">=",
            0.5,
            "106.1 / 114.6 = 0.93",
            kind="reproduction",
        ),
        check_if(
            mlp3 > 0,
            no_growth,
            "ablation_no_attn_l0_l2_loses_peak",
            ratio(grown["3 layers, no attention in layers 0, 2"]["mlp_share_change"], mlp3),
            "<",
            0.5,
            "10.8 / 114.6 = 0.09",
            kind="reproduction",
        ),
        # Without MLP-0 its part is zero by construction: does anything else grow the gap?
        check_if(
            g3["gap_change"] > 0,
            f"the 3-layer gap did not grow between steps {t0} and {t1}",
            "ablation_no_mlp_l0_loses_peak",
            ratio(grown[NO_MLP0]["gap_change"], g3["gap_change"]),
            "<",
            0.5,
            "−1.3 / 114.6 = −0.01",
            kind="reproduction",
        ),
    ]
    figures = make_figures(ctx, cfg, main_run, runs, gaps)
    return {
        "claims": claims,
        "notes": notes(cfg, grown, claims, (sink_layer, sink_head), copy_layer),
        "layer0_gap_at_ablation_steps": gaps,
        "layer0_growth": grown,
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
        "layer0_parts_over_training": {
            name: {
                "step": r.steps,
                "gap": r.series("res_peak", 0),
                **{
                    f"{part}_{key}": part_series(r, part, key)
                    for part in PARTS
                    for key in ("bos", "others", "share")
                },
            }
            for name, r in runs.items()
        },
        "tables": {
            f"3 layers, per layer at step {cfg.train.steps}": per_layer,
            f"Layer-0 residual gap ‖Res_<s>‖ − mean ‖Res_others‖ at step {t1} "
            "(paper: GPU scale, 10k steps)": [
                {"model": k, "ours": v, "paper": PAPER_GAP.get(k)} for k, v in gaps.items()
            ],
            f"The gap split into embedding / attention-0 / MLP-0 shares at step {t1}, and "
            f"their change since step {t0}": [
                {
                    "model": k,
                    "gap": g[f"gap@{t1}"],
                    **{f"{p} share": g[f"{p}_share@{t1}"] for p in PARTS},
                    "gap change": g["gap_change"],
                    **{f"{p} share change": g[f"{p}_share_change"] for p in PARTS},
                    "‖MLP-0_<s>‖ / others": ratio(g[f"mlp_bos@{t1}"], g[f"mlp_others@{t1}"]),
                }
                for k, g in grown.items()
            ],
        },
        "train": {"wall_time_s": {k: r.result.wall_time_s for k, r in runs.items()}},
        "figures": figures,
    }


def notes(
    cfg: ResidualPeakConfig,
    grown: dict[str, dict[str, float]],
    claims: list,
    sink: tuple[int, int],
    copy_layer: int,
) -> list[str]:
    """What was seen, in words, from the measured values."""
    t0, t1 = cfg.sweep.growth_from, cfg.sweep.ablation_steps
    g3 = grown["3 layers"]
    out = [
        f"3 layers, step {t1}: the layer-0 gap {g3[f'gap@{t1}']:.2f} = embedding "
        f"{g3[f'embedding_share@{t1}']:.2f} + attention-0 {g3[f'attention_share@{t1}']:.2f} "
        f"+ MLP-0 {g3[f'mlp_share@{t1}']:.2f}; ‖MLP-0 out‖ at BOS is "
        f"{ratio(g3[f'mlp_bos@{t1}'], g3[f'mlp_others@{t1}']):.2f}× the other tokens' mean.",
        f"Growth from step {t0} to {t1} (gap; MLP-0 share): "
        + "; ".join(
            f"{k}: {g['gap_change']:+.2f}; {g['mlp_share_change']:+.2f}" for k, g in grown.items()
        )
        + ".",
    ]
    failed = {c.name for c in claims if not c.passed and c.undefined is None}
    if failed & {"sink_layer", "backcopy_layer"}:
        out.append(
            f"The sink head sits in layer {sink[0]} and the back-copy head in layer {copy_layer} "
            "(Guo et al.: both in layer 1 of 3): the claims on layer 1 test another head."
        )
    mlp_failed = sorted(n for n in failed if n.startswith(("mlp0_", "ablation_")))
    if mlp_failed:
        out.append(
            "Not reproduced at this scale: "
            + ", ".join(mlp_failed)
            + ". Guo et al. measure the peak at 10k steps on a d 256 model and attribute it to "
            "an early MLP; a claim that fails here says that MLP-0 has not (yet) become the "
            f"BOS-specific writer of this model by step {t1}, not that it never does."
        )
    return out


def make_figures(
    ctx: RunContext,
    cfg: ResidualPeakConfig,
    main_run: BBRun,
    runs: dict[str, BBRun],
    gaps: dict[str, float],
) -> list[str]:
    files: list[str] = []
    one = runs["1 layer"]
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

    files += ctx.save_figure(ablation_figure(ctx, cfg, runs, gaps), "ablation_layer0_gap")
    return files


def _short(name: str) -> str:
    return name.replace("3 layers, ", "").replace("attention", "attn")


def ablation_figure(ctx: RunContext, cfg: ResidualPeakConfig, runs: dict[str, BBRun], gaps):
    """The gap at `ablation_steps` split into its embedding / attention-0 / MLP-0 shares, MLP-0's
    share over training in every run, and the paper's gaps."""
    plt = plotting.plt
    t1 = cfg.sweep.ablation_steps
    names = list(gaps)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    x = np.arange(len(names))
    for i, part in enumerate(PARTS):
        shares = [part_at(runs[n], part, "share", t1) for n in names]
        axes[0].bar(x + (i - 1) * 0.27, shares, 0.27, label=f"{part} share")
    axes[0].plot(x, [gaps[n] for n in names], "k_", ms=14, mew=2, label="gap")
    axes[0].set_title(f"ours ({ctx.preset}): layer-0 gap and its parts, step {t1}")
    axes[0].legend(fontsize=7)
    for n, r in runs.items():
        if n != "1 layer":  # its only MLP feeds the logits: shares of another scale
            axes[1].plot(r.steps, part_series(r, "mlp", "share"), marker=".", label=_short(n))
    axes[1].axvline(cfg.sweep.growth_from, color="gray", lw=0.6, ls="--")
    axes[1].set_xlabel("step")
    axes[1].set_title("MLP-0 share of the gap over training")
    axes[1].legend(fontsize=6)
    paper_names = [n for n in names if n in PAPER_GAP]
    axes[2].bar(range(len(paper_names)), [PAPER_GAP[n] for n in paper_names], color="tab:gray")
    axes[2].set_title("Guo et al. 2024: gap (GPU, 10k steps)")
    for ax, ns in ((axes[0], names), (axes[2], paper_names)):
        ax.set_xticks(range(len(ns)), [_short(n) for n in ns], rotation=30, ha="right", fontsize=7)
    for ax in axes:
        ax.set_ylabel("BOS − mean others")
        ax.axhline(0, color="black", lw=0.6)
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment("residual_peak", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
