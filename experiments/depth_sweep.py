"""How depth shapes the sink (Barbero et al. 2025, arXiv 2504.02732, §4 and Table 1: deeper and
larger models have more sink heads; sinks let deep models avoid over-mixing).

One small GPT per (depth, seed), same data, steps and width. Per model: the sink rate (ε = 0.3 and
0.8) overall and per layer, and the over-mixing measurements of `sinks_jax.mixing` on validation
documents read from their start with and without BOS: the token uniformity μ of the last layer's
residual stream (Barbero §3, 1 = no collapse) and the last token's mixing ratio M (the summed
sensitivity to the other input tokens over the sensitivity to itself, exact Jacobians).

Claim: Spearman ρ ≥ 0.8 between depth and the seed-mean sink rate (ε = 0.3). Outputs
(results/depth_sweep/<preset>/): metrics.json with per-run rows, `sink_vs_depth.png`,
`sink_by_layer.png`, `mixing_vs_depth.png`.

    python -m experiments.depth_sweep --preset quick   # CPU, about 10 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import metrics, mixing, plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require
from sinks_jax.config import run_config as plain_run_config
from sinks_jax.forward import jit_with_model
from sinks_jax.tasks import corpus, lm, lm_presets

BARBERO_TABLE_1 = [
    {"model": "Llama 3.1 8B", "layers": 32, "sink rate (ε = 0.8)": "45.97 %"},
    {"model": "Llama 3.1 70B", "layers": 80, "sink rate (ε = 0.8)": "73.49 %"},
    {"model": "Llama 3.1 405B", "layers": 126, "sink rate (ε = 0.8)": "78.29 %"},
]


def require_depths(depths: tuple[int, ...], n_seeds: int) -> None:
    """A depth sweep's depths (at least two, increasing, >= 1) and seeds per depth (>= 1)."""
    require(
        len(depths) >= 2 and list(depths) == sorted(set(depths)),
        "sweep.depths",
        depths,
        "at least two increasing depths",
    )
    require(min(depths) >= 1, "sweep.depths", depths, "depths >= 1")
    require(n_seeds >= 1, "sweep.n_seeds", n_seeds, ">= 1")


@dataclasses.dataclass(frozen=True)
class DepthSweep:
    """`model.n_layers` is set per run from `depths`, `n_seeds` each; μ and the mixing ratio M
    are measured on `mixing_sequences` validation documents of `mixing_length` tokens."""

    depths: tuple[int, ...] = (1, 2, 4, 8)
    n_seeds: int = 3
    mixing_sequences: int = 8
    mixing_length: int = 32  # BOS included when present

    def __post_init__(self) -> None:
        require_depths(self.depths, self.n_seeds)
        n = self.mixing_sequences
        require(n >= 1, "sweep.mixing_sequences", n, ">= 1")


@dataclasses.dataclass(frozen=True)
class DepthSweepConfig(lm.LMConfig):
    sweep: DepthSweep = DepthSweep()

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            3 <= self.sweep.mixing_length <= self.data.seq_len,
            "sweep.mixing_length",
            self.sweep.mixing_length,
            f"in [3, data.seq_len={self.data.seq_len}]",
        )


PRESETS = {
    "quick": DepthSweepConfig(
        model=lm_presets.SMALL,
        data=dataclasses.replace(lm_presets.SYNTHETIC, batch_size=64),
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=800, eval_every=200, checkpoint_every=800, progress=False),
    ),
    "text": DepthSweepConfig(
        model=lm_presets.TEXT_MODEL,
        data=lm_presets.BUILTIN_TEXT,
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=1600, eval_every=400, checkpoint_every=1600, progress=False),
    ),
    "paper": DepthSweepConfig(
        model=lm_presets.PAPER_MODEL,
        data=lm_presets.YOUR_CORPUS,
        optim=lm_presets.PAPER_OPTIM,
        train=lm_presets.PAPER_TRAIN,
        sweep=DepthSweep(depths=(2, 4, 8, 12, 16), n_seeds=1, mixing_length=256),
    ),
}
NOTES = {
    "quick": "synthetic BB documents, d 64, 4 heads, depths 1/2/4/8, context 32, 2048 tokens/step, "
    "3 seeds × 800 steps (about 12 minutes)",
    "text": "built-in Python docs, depths 1/2/4/8, context 128, 2048 tokens/step, 3 seeds × 1600 "
    "steps (≈ 25 min on 2 cores, estimated from lm_sinks text's 12 steps/s at 4 layers)",
    "paper": "GPU: the lm_sinks paper model at depths 2–16 (--set data.path=YOUR_CORPUS)",
}


def run_config(cfg: DepthSweepConfig, depth: int, seed: int) -> lm.LMConfig:
    base = plain_run_config(cfg)
    return dataclasses.replace(
        base, seed=seed, model=dataclasses.replace(cfg.model, n_layers=depth)
    )


def mixing_inputs(store: corpus.TokenStore, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` validation documents from their start: [BOS, x_1..x_{length-1}] and the same
    [x_1..x_{length-1}] without BOS (documents shorter than that are skipped)."""
    docs = [store.doc(int(i)) for i in store.val_docs]
    docs = [d[: length - 1] for d in docs if len(d) >= length - 1][:n]
    if not docs:
        raise ValueError(f"no validation document has {length - 1} tokens; lower mixing_length")
    without = np.stack(docs).astype(np.int32)
    with_bos = np.concatenate([np.full((len(docs), 1), corpus.BOS, np.int32), without], axis=1)
    return with_bos, without


def _mu_and_mixing(model: nnx.Module, tokens_NxT, skip_first: bool):
    """(μ of the last layer, [N] mixing ratios of the last token), compiled once per shape."""
    mu = mixing.token_uniformity_by_layer(model, tokens_NxT, skip_first)[-1]
    ratios = jax.vmap(lambda x: mixing.mixing_ratio(model, x[None]))(tokens_NxT)
    return mu, ratios


_mu_and_mixing_jit = jit_with_model(_mu_and_mixing, static_argnames=("skip_first",))


def over_mixing(model, with_bos: np.ndarray, without: np.ndarray) -> dict[str, float]:
    """μ of the last layer (over the content tokens) and the last token's mixing ratio M, with
    and without BOS (means over the sequences)."""
    mu_with, m_with = _mu_and_mixing_jit(model, jnp.asarray(with_bos), skip_first=True)
    mu_without, m_without = _mu_and_mixing_jit(model, jnp.asarray(without), skip_first=False)
    return {
        "mu_with_bos": float(mu_with),
        "mu_without_bos": float(mu_without),
        "mixing_with_bos": float(m_with.mean()),
        "mixing_without_bos": float(m_without.mean()),
    }


def run(cfg: DepthSweepConfig, ctx: RunContext) -> dict[str, Any]:
    for depth in cfg.sweep.depths:  # every run's config is validated before any training starts
        run_config(cfg, depth, cfg.seed)
    rows = []
    for depth in cfg.sweep.depths:
        for i in range(cfg.sweep.n_seeds):
            c = run_config(cfg, depth, cfg.seed + i)
            print(f"[depth_sweep] {depth} layers, seed {c.seed}")
            r = lm.train_lm(c, ctx.out_dir / "runs" / f"L{depth}_seed{c.seed}", ctx.resume)
            last = r.evals[-1]
            with_bos, without = mixing_inputs(
                r.store, cfg.sweep.mixing_sequences, cfg.sweep.mixing_length
            )
            rows.append(
                {
                    "depth": depth,
                    "seed": c.seed,
                    "val_loss": last["val_loss"],
                    "sink_rate_0.3": last["sink_rate_0.3"],
                    "sink_rate_0.8": last["sink_rate_0.8"],
                    "max_head_score": last["max_head_score"],
                    "sink_rate_by_layer_0.3": last["sink_rate_by_layer_0.3"],
                    **over_mixing(r.model(), with_bos, without),
                }
            )
    keys = (
        "sink_rate_0.3",
        "sink_rate_0.8",
        "val_loss",
        "mu_with_bos",
        "mu_without_bos",
        "mixing_with_bos",
        "mixing_without_bos",
    )
    table = [
        {
            "depth": d,
            **{k: float(np.mean([r[k] for r in rows if r["depth"] == d])) for k in keys},
        }
        for d in cfg.sweep.depths
    ]
    rho = metrics.spearman(cfg.sweep.depths, [t["sink_rate_0.3"] for t in table])
    rho_08 = metrics.spearman(cfg.sweep.depths, [t["sink_rate_0.8"] for t in table])
    claims = [
        check(
            "depth vs seed-mean sink rate (ε = 0.3), Spearman",
            rho,
            ">=",
            0.8,
            "deeper/larger models sink more (Table 1: 45.97 → 73.49 → 78.29 %)",
            kind="reproduction",
        )
    ]
    figures = make_figures(ctx, cfg, rows, table)
    return {
        "claims": claims,
        "corpus": r.store.info,
        "runs": rows,
        "spearman_0.3": rho,
        "spearman_0.8": rho_08,
        "barbero_table_1": BARBERO_TABLE_1,
        "tables": {
            "Per depth (seed mean)": table,
            "Barbero et al. 2025, Table 1 (for comparison)": BARBERO_TABLE_1,
        },
        "figures": figures,
    }


def make_figures(ctx, cfg, rows, table) -> list[str]:
    plt = plotting.plt
    files: list[str] = []
    fig, ax = plt.subplots(figsize=(4, 3))
    for key, label in (("sink_rate_0.3", "ε = 0.3"), ("sink_rate_0.8", "ε = 0.8")):
        mean = [t[key] for t in table]
        std = [np.std([r[key] for r in rows if r["depth"] == d]) for d in cfg.sweep.depths]
        ax.errorbar(cfg.sweep.depths, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set(xscale="log", xlabel="layers", ylabel="sink rate", ylim=(-0.02, 1.02))
    ax.set_xticks(cfg.sweep.depths, [str(d) for d in cfg.sweep.depths])
    ax.minorticks_off()
    ax.legend()
    fig.tight_layout()
    files += ctx.save_figure(fig, "sink_vs_depth")

    grid = np.full((len(cfg.sweep.depths), max(cfg.sweep.depths)), np.nan)
    for i, d in enumerate(cfg.sweep.depths):
        per_layer = [r["sink_rate_by_layer_0.3"] for r in rows if r["depth"] == d]
        grid[i, :d] = np.mean(np.asarray(per_layer, dtype=float), axis=0)  # NaN: no attention
    fig, ax = plt.subplots(
        figsize=(1.5 + 0.45 * max(cfg.sweep.depths), 0.8 + 0.45 * len(cfg.sweep.depths))
    )
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(cfg.sweep.depths)), [f"{d} layers" for d in cfg.sweep.depths])
    ax.set_xticks(range(max(cfg.sweep.depths)))
    ax.set(xlabel="layer", title="sink rate (ε = 0.3) per layer, seed mean")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    files += ctx.save_figure(fig, "sink_by_layer")

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, (k_with, k_without, label) in zip(
        axes,
        (
            ("mu_with_bos", "mu_without_bos", "token uniformity μ, last layer"),
            ("mixing_with_bos", "mixing_without_bos", "mixing ratio M, last token"),
        ),
        strict=True,
    ):
        ax.plot(cfg.sweep.depths, [t[k_with] for t in table], marker="o", label="with BOS")
        ax.plot(cfg.sweep.depths, [t[k_without] for t in table], marker="s", label="without BOS")
        ax.set(xscale="log", xlabel="layers", ylabel=label)
        ax.set_xticks(cfg.sweep.depths, [str(d) for d in cfg.sweep.depths])
        ax.minorticks_off()
        ax.legend()
    fig.tight_layout()
    files += ctx.save_figure(fig, "mixing_vs_depth")
    return files


EXPERIMENT = Experiment("depth_sweep", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
