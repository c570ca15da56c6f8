"""One table for every attention variant: which ones still make a first-position sink, massive
activations and a value drain, on the same model, documents, packing, budget and seeds.

Variants (`sinks_jax.attention`): `softmax` (baseline); `relu` (Guo et al. 2024: ReLU(score) /
number of visible keys); `sigmoid`; `softmax1` (an extra 1 in the denominator: a zero-logit,
zero-value virtual key); `sink_logit` (a learned per-head logit for a zero-value virtual key, the
"attention sink" parameter of current open-weight models); `sink_kv` (a learned key and value per
head, Gu et al.'s key/value bias); `gated` (Qiu et al. 2025: the head's output times sigmoid(x W_g)
of the query: first-token attention 0.467 → 0.048 in their 1.7B model); `qk_norm` (RMS-normalised
queries and keys). Two optimiser rows for the baseline: AdamW and SGD with momentum (Guo et al.'s
remedy for the residual peak).

Per run, on the fixed validation rows after training: validation loss; the first-position sink
rate at ε = 0.3 and the largest first-position head score; the attention mass off the real keys
(`metrics.virtual_mass`: the virtual key's share, for `softmax1`, `sink_logit`, `sink_kv`); the
largest |h| of the residual stream over its median (massive activations, Sun et al. 2024) and the
first position's residual norm over the others' mean (largest over layers); the value drain, the
first position's value norm ‖W_o v_0‖ over the other positions' mean at the head with the largest
first-position score; the kurtosis of the residual stream's entries (largest over layers; Kaul et
al. 2024: Adam 140 vs SGD 5 at their scale).

Prediction and claims (seed means, quick: Bigram-Backcopy documents, where a head needs a no-op):
`sigmoid` does not need the softmax budget to sum to one, so it makes no first-position sink (sink
rate ≤ 0.05); `gated` can output zero through its gate, so its sink rate is below `softmax`'s;
`qk_norm` changes only the logits' scale, so it keeps ≥ 50 % of the baseline's sink rate (both
ratios read only when the baseline's sink rate is ≥ 0.2, else undefined); every variant trains to
within 5 % of the baseline's validation loss. A diverged seed is a row of its own; seed means are
over the seeds that trained, and a claim about a variant with a diverged seed is undefined. The SGD
row runs without weight decay (with AdamW's 0.1 as L2 the weights vanished), so its kurtosis and
massive activations compare optimiser and decay together. Report-only (open at small scale):
whether `softmax1`, `sink_logit` and `sink_kv` move the no-op's mass from BOS to the virtual key,
and whether a sink logit that starts at ln T (`sink_logit_ln32`, registered here through the
library's extension point) does. Prediction for it (written before `quick4x` ran): the virtual key
is an exact no-op from the first step while BOS becomes one only once its value drains, so the
virtual key should end with more of the no-op's mass than BOS, more so with 4× the steps, and
most with the ln T start (at zero real logits the virtual key then holds 32 / (33 + t) of query
t's mass: 0.5 at the last query, 0.68 on average).

Presets: `quick` (the table above, 2 cores), `quick4x` (the baseline and the virtual-key variants
at 4× the steps, 2 cores), `text` (every row on real text: the lm_phenomenology model and corpus,
one document per row; if the baseline forms few sink heads there, the sink-rate ratios are
undefined),
`paper` (quick at 4× the steps, GPU) and `gpu` (real text at 20 000 steps, GPU).

Outputs (results/attention_variants/<preset>/): metrics.json, `variants_table.png`.

    python -m experiments.attention_variants --preset quick   # CPU
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from sinks_jax import metrics, plotting
from sinks_jax.attention import SinkLogitAttention, register_attention
from sinks_jax.claims import check_if, ratio
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import OptimConfig, TrainConfig, require
from sinks_jax.config import run_config as plain_run_config
from sinks_jax.errors import TrainingDivergedError
from sinks_jax.model import Capture
from sinks_jax.tasks import lm, lm_presets


@register_attention("sink_logit_ln32")
class SinkLogitLn32(SinkLogitAttention):
    """`sink_logit` with b_h = ln 32 at init: at the quick context T = 32 the virtual key starts
    with as much mass as all real keys together would at zero logits (the issue's "ln T" init)."""

    init_logit = math.log(32)


VARIANTS = (
    "softmax",
    "relu",
    "sigmoid",
    "softmax1",
    "sink_logit",
    "sink_kv",
    "gated",
    "qk_norm",
    "sink_logit_ln32",
)
BASELINE_SINK_RATE = 0.2  # the softmax baseline must have this many sink heads for a ratio
VIRTUAL = (
    "softmax1",
    "sink_logit",
    "sink_kv",
    "sink_logit_ln32",
)  # a virtual key whose mass `virtual_mass` reads
PAPER_STATEMENT = (
    "Guo et al. 2024 (ReLU attention and SGD remove parts of the sink), Qiu et al. 2025 (gated "
    "attention: first-token attention 0.467 → 0.048), Gu et al. 2025 (sigmoid attention without "
    "normalisation makes no sink; QK-norm keeps it; a learned key/value bias takes the sink)."
)
MEASURE_CAPTURE = Capture(attention=True, values=True, residual=True)


@dataclasses.dataclass(frozen=True)
class VariantSweep:
    """`variants` (names in `sinks_jax.attention.ATTENTION_VARIANTS`) trained with the preset's
    optimiser, `n_seeds` each; with `sgd`, the `softmax` baseline again with SGD + momentum."""

    variants: tuple[str, ...] = VARIANTS
    n_seeds: int = 3
    sgd: bool = True
    # calibrated at quick on seed 0 (also in the table): 0.3 trains to AdamW's loss, 1.0 diverges
    sgd_lr: float = 0.3
    sgd_momentum: float = 0.9
    # SGD's L2 decay acts as lr × wd / (1 − momentum) a step (0.1 a step with AdamW's 0.1: the
    # weights vanished within 1000 steps in a calibration run), so SGD has its own, default none.
    sgd_weight_decay: float = 0.0
    loss_tolerance: float = 0.05  # a variant's loss within this fraction of the baseline's

    def __post_init__(self) -> None:
        from sinks_jax.attention import ATTENTION_VARIANTS

        require(
            "softmax" in self.variants
            and set(self.variants) <= set(ATTENTION_VARIANTS)
            and len(set(self.variants)) == len(self.variants),
            "sweep.variants",
            self.variants,
            f"distinct names among {tuple(ATTENTION_VARIANTS)}, including the baseline 'softmax'",
        )
        require(self.n_seeds >= 1, "sweep.n_seeds", self.n_seeds, ">= 1")
        require(self.sgd_lr > 0, "sweep.sgd_lr", self.sgd_lr, "> 0")
        require(0 <= self.sgd_momentum < 1, "sweep.sgd_momentum", self.sgd_momentum, "in [0, 1)")
        require(self.sgd_weight_decay >= 0, "sweep.sgd_weight_decay", self.sgd_weight_decay, ">= 0")
        require(self.loss_tolerance > 0, "sweep.loss_tolerance", self.loss_tolerance, "> 0")


@dataclasses.dataclass(frozen=True)
class VariantsConfig(lm.LMConfig):
    sweep: VariantSweep = VariantSweep()

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.3 in self.sink_eps, "sink_eps", self.sink_eps, "a tuple that holds 0.3")
        require(
            not (self.sweep.sgd and self.optim.name == "sgd"),
            "sweep.sgd",
            self.sweep.sgd,
            "False when optim.name='sgd' (the SGD row would replace the softmax baseline's)",
        )


QUICK_TRAIN = TrainConfig(steps=1000, eval_every=250, checkpoint_every=1000, progress=False)
TEXT_TRAIN = TrainConfig(steps=3000, eval_every=1000, checkpoint_every=3000, progress=False)
TEXT_ROWS = dataclasses.replace(lm_presets.BUILTIN_TEXT, packing="one_doc_per_row")
PRESETS = {
    # Bigram-Backcopy documents, one per row from BOS (the lm_sinks quick model and budget).
    "quick": VariantsConfig(
        model=lm_presets.SMALL,
        data=lm_presets.SYNTHETIC,
        optim=lm_presets.QUICK_OPTIM,
        train=QUICK_TRAIN,
    ),
    # The "4× budget" question on 2 cores: the baseline and the virtual-key variants at
    # 4× quick's steps, 2 seeds (the whole table at 4× is the GPU `paper` preset).
    "quick4x": VariantsConfig(
        model=lm_presets.SMALL,
        data=lm_presets.SYNTHETIC,
        optim=lm_presets.QUICK_OPTIM,
        train=dataclasses.replace(QUICK_TRAIN, steps=4000, eval_every=1000, checkpoint_every=4000),
        sweep=VariantSweep(
            variants=("softmax", "softmax1", "sink_logit", "sink_logit_ln32"), n_seeds=2, sgd=False
        ),
    ),
    # Real text (the lm_phenomenology quick model and budget, one document per row from BOS as
    # in quick; text_sink_search, with BOS at window starts, found no sink on 2 cores; a one-seed
    # subset here had one sink head of 16, rate 0.0625, so the rate ratios were undefined).
    # `sink_logit_ln32` starts at ln(T/4) here.
    "text": VariantsConfig(
        model=lm_presets.TEXT_MODEL,
        data=TEXT_ROWS,
        optim=lm_presets.QUICK_OPTIM,
        train=TEXT_TRAIN,
    ),
    # One GPU: the quick design with 4× the steps (the "4× budget" question).
    "paper": VariantsConfig(
        model=lm_presets.SMALL,
        data=lm_presets.SYNTHETIC,
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=4000, eval_every=1000, checkpoint_every=4000, progress=False),
    ),
    # One GPU, real text: the text model for lm_phenomenology's paper budget, bf16.
    "gpu": VariantsConfig(
        model=lm_presets.on_gpu(lm_presets.TEXT_MODEL),
        data=TEXT_ROWS,
        optim=lm_presets.QUICK_OPTIM,
        train=dataclasses.replace(TEXT_TRAIN, steps=20_000, eval_every=5000, checkpoint_every=5000),
    ),
}
NOTES = {
    "quick": "synthetic BB documents, d 64, 2 layers × 4 heads, context 32, 4096 tokens/step, "
    "9 variants (with sink_logit_ln32) + the SGD row × 3 seeds × 1000 steps (40 min on 2 cores)",
    "quick4x": "the quick design at 4000 steps for softmax, softmax1, sink_logit and "
    "sink_logit_ln32, 2 seeds, no SGD row",
    "text": "built-in Python docs, bytes, one document per row, d 64, 4 layers × 4 heads, context "
    "128, 2048 tokens/step, "
    "3000 steps, every variant + SGD × 3 seeds (about 2.5 h on 2 cores: 4.6 min a run in a "
    "one-seed subset; not yet run in full)",
    "paper": "the quick design at 4000 steps (GPU; not yet run or timed)",
    "gpu": "real text: the text preset at 20 000 steps in bf16 (GPU; not yet run or timed)",
}


def run_configs(cfg: VariantsConfig) -> dict[tuple[str, str], lm.LMConfig]:
    """{(variant, optimiser): the seed-`cfg.seed` run config}: every variant with the preset's
    optimiser, and (`softmax`, 'sgd') with SGD + momentum when `sweep.sgd`."""
    base = plain_run_config(cfg)
    out = {
        (v, cfg.optim.name): dataclasses.replace(
            base, model=dataclasses.replace(cfg.model, attention=v)
        )
        for v in cfg.sweep.variants
    }
    if cfg.sweep.sgd:
        sgd = OptimConfig(
            name="sgd",
            lr=cfg.sweep.sgd_lr,
            momentum=cfg.sweep.sgd_momentum,
            weight_decay=cfg.sweep.sgd_weight_decay,
            decay_params=cfg.optim.decay_params,
        )
        out[("softmax", "sgd")] = dataclasses.replace(
            base, model=dataclasses.replace(cfg.model, attention="softmax"), optim=sgd
        )
    return out


def kurtosis(x: np.ndarray) -> float:
    """E[(x − μ)^4] / σ^4 over all entries (3 for a Gaussian); pooled over tokens × dimensions,
    so a few massive entries raise it (it is not independent of max |h| / median)."""
    x = np.asarray(x, np.float64).ravel()
    d = x - x.mean()
    var = (d**2).mean()
    return float((d**4).mean() / var**2) if var > 0 else float("nan")


def measure(run: lm.LMRun) -> dict[str, Any]:
    """The table's columns for one trained run, on its validation rows."""
    last = run.evals[-1]
    out = lm.forward(run.model(), run.batch, MEASURE_CAPTURE)
    t = run.batch.inputs.shape[1]
    real_BxT = run.batch.counted()
    scores_LxH = np.asarray(last["first_scores"], dtype=float)  # NaN: a layer without attention
    layer, head = np.unravel_index(np.nanargmax(scores_LxH), scores_LxH.shape)
    virtual, peak, first_vs_others, kurt = [], [], [], []
    for obs in out.layers:
        if obs.attn_weights is not None:
            virtual.append(np.asarray(metrics.virtual_mass(obs.attn_weights, real_BxT)))
        h_NxD = np.asarray(obs.residual)[real_BxT]
        peak.append(float(np.abs(h_NxD).max() / max(np.median(np.abs(h_NxD)), 1e-12)))
        norms_BxT = np.linalg.norm(np.asarray(obs.residual), axis=-1)
        first_vs_others.append(
            ratio(float(norms_BxT[:, 0].mean()), float(norms_BxT[:, 1:][real_BxT[:, 1:]].mean()))
        )
        kurt.append(kurtosis(h_NxD))
    v_BxHxT = np.linalg.norm(np.asarray(out.layers[layer].head_values), axis=-1)[:, :, :t]
    v_BxT = v_BxHxT[:, head]
    drain = ratio(float(v_BxT[:, 0].mean()), float(v_BxT[:, 1:][real_BxT[:, 1:]].mean()))
    virtual_LxH = np.stack(virtual)
    return {
        "val_loss": last["val_loss"],
        "sink_rate_0.3": last["sink_rate_0.3"],
        "max_first_score": float(np.nanmax(scores_LxH)),
        "virtual_mass_mean": float(virtual_LxH.mean()),
        "virtual_mass_max": float(virtual_LxH.max()),
        "massive_ratio": max(peak),
        "first_residual_vs_others": max(first_vs_others),
        "value_drain_at_sink_head": drain,
        "sink_head": [int(layer), int(head)],
        "kurtosis": max(kurt),
    }


MEASURED = (
    "val_loss",
    "sink_rate_0.3",
    "max_first_score",
    "virtual_mass_mean",
    "virtual_mass_max",
    "massive_ratio",
    "first_residual_vs_others",
    "value_drain_at_sink_head",
    "kurtosis",
)
COLUMNS = (
    ("val loss", "val_loss"),
    ("sink rate ε=0.3", "sink_rate_0.3"),
    ("max first-position score", "max_first_score"),
    ("virtual-key mass (mean / max head)", None),
    ("max |h| / median", "massive_ratio"),
    ("first residual norm / others", "first_residual_vs_others"),
    ("value norm at position 0 / others (sink head)", "value_drain_at_sink_head"),
    ("residual kurtosis", "kurtosis"),
)


def seed_mean(rows: list[dict[str, Any]], variant: str, opt: str, key: str) -> float:
    """Mean of `key` over the seeds of (variant, optimiser) that trained (nan if none did)."""
    trained = [
        r[key]
        for r in rows
        if (r["variant"], r["optimizer"]) == (variant, opt) and r["diverged"] is None
    ]
    return float(np.mean(trained)) if trained else float("nan")


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seed means per (variant, optimiser), in the order the rows came."""
    keys = list(dict.fromkeys((r["variant"], r["optimizer"]) for r in rows))
    table = []
    for variant, opt in keys:
        sel = [r for r in rows if (r["variant"], r["optimizer"]) == (variant, opt)]

        def mean(k: str, variant=variant, opt=opt) -> float:
            return seed_mean(rows, variant, opt, k)

        row: dict[str, Any] = {
            "variant": variant,
            "optimizer": opt,
            "seeds": len(sel),
            "diverged": sum(r["diverged"] is not None for r in sel),
        }
        for label, key in COLUMNS:
            if key is None:
                row[label] = (
                    f"{mean('virtual_mass_mean'):.3f} / {mean('virtual_mass_max'):.3f}"
                    if variant in VIRTUAL
                    else "—"
                )
            else:
                row[label] = mean(key)
        table.append(row)
    return table


def baseline(table: list[dict[str, Any]], optimizer: str) -> dict[str, Any]:
    """The table's `softmax` row with the preset's optimiser (`sweep.variants` always holds it)."""
    return next(r for r in table if (r["variant"], r["optimizer"]) == ("softmax", optimizer))


def make_claims(cfg: VariantsConfig, table: list[dict[str, Any]]) -> list:
    adam = {r["variant"]: r for r in table if r["optimizer"] == cfg.optim.name}
    base = baseline(table, cfg.optim.name)
    rate = "sink rate ε=0.3"
    stable = {v: row["diverged"] == 0 for v, row in adam.items()}
    claims = []
    if "sigmoid" in adam:
        claims.append(
            check_if(
                stable["sigmoid"],
                "a sigmoid seed diverged",
                "sigmoid: first-position sink rate (ε = 0.3, seed mean)",
                adam["sigmoid"][rate],
                "<=",
                0.05,
                "no sink without the softmax normalisation (Gu et al. 2025)",
                kind="reproduction",
            )
        )
    # A ratio of sink rates is read only when the baseline has a few sink heads (one head of
    # eight would make the ratio move in steps of 1).
    has_sink = stable["softmax"] and base[rate] >= BASELINE_SINK_RATE
    reason = f"the softmax baseline's sink rate is below {BASELINE_SINK_RATE} (or it diverged)"
    if "gated" in adam:
        claims.append(
            # reproduction: Qiu et al. 2025 report the gate removes the first-token sink
            check_if(
                has_sink and stable["gated"],
                reason + " or a gated seed diverged",
                "gated / softmax: first-position sink rate",
                ratio(adam["gated"][rate], base[rate]),
                "<",
                1.0,
                "first-token attention 0.467 → 0.048 (Qiu et al. 2025)",
                kind="reproduction",
            )
        )
    if "qk_norm" in adam:
        claims.append(
            # extension: no cited paper compares QK-norm's sinks; the prediction is ours
            check_if(
                has_sink and stable["qk_norm"],
                reason + " or a qk_norm seed diverged",
                "qk_norm / softmax: first-position sink rate",
                ratio(adam["qk_norm"][rate], base[rate]),
                ">=",
                0.5,
                "sinks stay as prevalent with QK-norm",
                kind="extension",
            )
        )
    for v, row in adam.items():
        if v == "softmax":
            continue
        claims.append(
            check_if(
                stable[v] and stable["softmax"],
                "a seed diverged (the claim covers the variants that train stably)",
                f"{v}: validation loss / softmax's",
                ratio(row["val loss"], base["val loss"]),
                "<=",
                1.0 + cfg.sweep.loss_tolerance,
                "the remedies cost little loss",
                kind="sanity",  # loss parity between variants
            )
        )
    return claims


def run(cfg: VariantsConfig, ctx: RunContext) -> dict[str, Any]:
    configs = run_configs(cfg)  # every run's config is built and checked before any training
    rows = []
    for (variant, opt), c in configs.items():
        for i in range(cfg.sweep.n_seeds):
            seed_cfg = dataclasses.replace(c, seed=cfg.seed + i)
            print(f"[attention_variants] {variant}, {opt}, seed {seed_cfg.seed}")
            row = {"variant": variant, "optimizer": opt, "seed": seed_cfg.seed}
            try:
                r = lm.train_lm(
                    seed_cfg,
                    ctx.out_dir / "runs" / f"{variant}_{opt}_seed{seed_cfg.seed}",
                    ctx.resume,
                )
            except TrainingDivergedError as e:  # a row of its own, not the end of the table
                print(f"[attention_variants] {variant}, {opt}, seed {seed_cfg.seed}: {e}")
                rows.append({**row, "diverged": str(e), **dict.fromkeys(MEASURED, float("nan"))})
                continue
            rows.append({**row, "diverged": None, **measure(r)})
    table = summarise(rows)
    return {
        "claims": make_claims(cfg, table),
        "paper_statement": PAPER_STATEMENT,
        "runs": rows,
        "tables": {"Attention variants (seed means)": table},
        "figures": make_figures(ctx, table, rows, cfg.optim.name),
    }


def make_figures(
    ctx: RunContext, table: list[dict[str, Any]], rows: list[dict[str, Any]], optimizer: str
) -> list[str]:
    """One bar panel per measure, a bar per table row; losses relative to `baseline` (the
    softmax row with the preset's `optimizer`, wherever it stands in the table)."""
    plt = plotting.plt

    def virtual_mass(variant: str, opt: str) -> float:
        return seed_mean(rows, variant, opt, "virtual_mass_mean") if variant in VIRTUAL else 0.0

    labels = [
        r["variant"] + ("" if r["optimizer"] == optimizer else f" ({r['optimizer']})")
        for r in table
    ]
    base = baseline(table, optimizer)["val loss"]
    panels = (
        ("first-position sink rate (ε = 0.3)", [r["sink rate ε=0.3"] for r in table]),
        (
            "virtual-key mass (mean over heads)",
            [virtual_mass(r["variant"], r["optimizer"]) for r in table],
        ),
        ("max |h| / median |h|", [r["max |h| / median"] for r in table]),
        ("validation loss vs softmax (%)", [100 * (r["val loss"] / base - 1) for r in table]),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 0.32 * len(table) + 1.2), sharey=True)
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.barh(labels, values, color="tab:blue")
        ax.set_title(title, fontsize=9)
    axes[0].invert_yaxis()
    axes[2].set_xscale("log")
    axes[3].axvline(0, color="gray", lw=0.8)
    fig.tight_layout()
    return ctx.save_figure(fig, "variants_table")


EXPERIMENT = Experiment("attention_variants", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
