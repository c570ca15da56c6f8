"""How the training context length shapes the sink (Barbero et al. 2025, arXiv 2504.02732, §4,
Fig. 5: "sinks become stronger as the pre-training context grows").

One small GPT per (context, seed), tokens per step held constant, the same number of steps.
Each model is measured on its own context *and* on common-length windows (the shortest
context), because the first-position score is an average over the queries that see key 0 and so
is biased toward short windows. Steps-to-sink: the first eval step at which the largest
first-position head score exceeds `sink_threshold`. The first `long_seeds` seeds are trained for
`long_factor` × the steps; with a constant learning rate and batches that are pure functions of
(seed, step), their eval at the short budget is exactly a short run, so one sweep reports both
budgets and whether the longer one flips the direction.

Claims: (i) the paper's direction, seed-mean sink rate (ε = 0.3) rising with context (Spearman
ρ ≥ 0.8), at the short and the long budget and on common-length windows; (ii) steps-to-sink
growing with context (ρ ≥ 0.8; measured on the longest budget, 'never' ranked last).
Outputs (results/context_length_sweep/<preset>/): metrics.json with per-run rows,
`sink_vs_context.png`, `sink_over_training.png`, `steps_to_sink.png`.

    python -m experiments.context_length_sweep --preset quick   # CPU, about 12 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sinks_jax import metrics, plotting, run_dir
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require
from sinks_jax.config import run_config as plain_run_config
from sinks_jax.errors import ConfigError
from sinks_jax.tasks import corpus, lm, lm_presets
from sinks_jax.train import eval_schedule

PAPER_STATEMENT = (
    "Barbero et al. 2025, Fig. 5: models pre-trained with a longer context develop stronger "
    "attention sinks (the sink metric rises with the context length, 128 → 2048)."
)


@dataclasses.dataclass(frozen=True)
class ContextSweep:
    """Training contexts (`data.seq_len` and `data.batch_size` are set per run from `contexts`
    and `tokens_per_step`), `n_seeds` each; the first `long_seeds` seeds train `long_factor`
    times longer; a sink has formed once the largest first-position score ≥ `sink_threshold`."""

    contexts: tuple[int, ...] = (16, 32, 64, 128)
    tokens_per_step: int = 2048
    n_seeds: int = 3
    long_factor: int = 4
    long_seeds: int = 1
    sink_threshold: float = 0.5

    def __post_init__(self) -> None:
        require(
            len(self.contexts) >= 2 and list(self.contexts) == sorted(set(self.contexts)),
            "sweep.contexts",
            self.contexts,
            "at least two increasing context lengths",
        )
        require(min(self.contexts) >= 4, "sweep.contexts", self.contexts, "lengths >= 4")
        require(self.n_seeds >= 1, "sweep.n_seeds", self.n_seeds, ">= 1")
        require(self.long_factor >= 1, "sweep.long_factor", self.long_factor, ">= 1")
        require(
            0 <= self.long_seeds <= self.n_seeds,
            "sweep.long_seeds",
            self.long_seeds,
            f"in [0, sweep.n_seeds={self.n_seeds}]",
        )
        require(
            self.tokens_per_step >= max(self.contexts),
            "sweep.tokens_per_step",
            self.tokens_per_step,
            f">= the longest context ({max(self.contexts)})",
        )


@dataclasses.dataclass(frozen=True)
class ContextSweepConfig(lm.LMConfig):
    sweep: ContextSweep = ContextSweep()

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.sweep.long_factor == 1 or self.optim.schedule == "constant",
            "optim.schedule",
            self.optim.schedule,
            "'constant' when sweep.long_factor > 1 (the short budget is read from the long runs)",
        )


def _sweep_corpus(data: corpus.CorpusConfig, longest: int) -> corpus.CorpusConfig:
    """Documents long enough to fill the longest context from BOS."""
    return dataclasses.replace(
        data, doc_len_min=longest + 1, doc_len_max=max(data.doc_len_max, 2 * longest)
    )


PRESETS = {
    "quick": ContextSweepConfig(
        model=lm_presets.SMALL,
        data=_sweep_corpus(lm_presets.SYNTHETIC, 128),
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=600, eval_every=100, checkpoint_every=600, progress=False),
    ),
    "text": ContextSweepConfig(
        model=lm_presets.TEXT_MODEL,
        data=lm_presets.BUILTIN_TEXT,
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=1200, eval_every=200, checkpoint_every=1200, progress=False),
        sweep=ContextSweep(long_seeds=0),
    ),
    "paper": ContextSweepConfig(
        model=lm_presets.PAPER_MODEL,
        data=lm_presets.YOUR_CORPUS,
        optim=dataclasses.replace(lm_presets.PAPER_OPTIM, schedule="constant"),
        train=lm_presets.PAPER_TRAIN,
        sweep=ContextSweep(
            contexts=(128, 256, 512, 1024, 2048),
            tokens_per_step=262_144,
            n_seeds=1,
            long_factor=1,
            long_seeds=0,
        ),
    ),
    # One GPU (bf16, fused attention), synthetic documents (no corpus to supply): contexts
    # 32–256 at 8192 tokens/step, 3 seeds × 2000 steps. Sized from the Bigram-Backcopy paper step
    # on an H100 (8.8 ms for 131k tokens) to take a few minutes; not yet timed.
    "gpu": ContextSweepConfig(
        model=lm_presets.on_gpu(lm_presets.SMALL, max_len=256),
        data=_sweep_corpus(lm_presets.SYNTHETIC, 256),
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=2000, eval_every=250, checkpoint_every=2000, progress=False),
        sweep=ContextSweep(
            contexts=(32, 64, 128, 256), tokens_per_step=8192, long_factor=1, long_seeds=0
        ),
    ),
}
NOTES = {
    "quick": "synthetic BB documents, d 64, 2 layers × 4 heads, contexts 16–128, 2048 tokens/step, "
    "3 seeds × 600 steps, seed 0 on to 2400 (about 12 minutes)",
    "text": "built-in Python docs, 4 layers, contexts 16–128, 2048 tokens/step, 3 seeds × 1200 "
    "steps (≈ 25 min on 2 cores, estimated from lm_sinks text's 12 steps/s)",
    "paper": "GPU: the lm_sinks paper model at contexts 128–2048, 256k tokens/step, 2000 steps "
    "(--set data.path=YOUR_CORPUS)",
    "gpu": "GPU: synthetic BB documents, d 64, 2 layers × 4 heads, contexts 32–256, 8192 "
    "tokens/step, 3 seeds × 2000 steps (a few minutes on one H100, estimated; not yet timed)",
}


def run_config(cfg: ContextSweepConfig, context: int, seed: int) -> lm.LMConfig:
    base = plain_run_config(cfg)
    base = lm.with_context(base, context, cfg.sweep.tokens_per_step)
    long = seed - cfg.seed < cfg.sweep.long_seeds
    steps = cfg.train.steps * (cfg.sweep.long_factor if long else 1)
    return dataclasses.replace(base, seed=seed, train=dataclasses.replace(cfg.train, steps=steps))


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    common = row["extra"]["common"]
    return {
        "val_loss": row["val_loss"],
        "sink_rate_0.3": row["sink_rate_0.3"],
        "sink_rate_0.8": row["sink_rate_0.8"],
        "max_head_score": row["max_head_score"],
        "common_sink_rate_0.3": common["sink_rate_0.3"],
        "common_max_head_score": common["max_head_score"],
    }


def check_resume_budget(cfg: ContextSweepConfig, ctx: RunContext) -> None:
    """ConfigError before any training when `--resume` changes `train.steps` under
    `long_factor` > 1: the short budget is read from the long runs' evals, and those runs have
    no eval at a new short budget that falls inside the steps they already trained."""
    if not ctx.resume or cfg.sweep.long_factor == 1 or not run_dir.is_run_dir(ctx.out_dir):
        return
    saved = run_dir.read_mark(ctx.out_dir).get("config", {}).get("train", {}).get("steps")
    if saved is not None and saved != cfg.train.steps:
        raise ConfigError(
            f"cannot resume {ctx.out_dir} with train.steps {saved} -> {cfg.train.steps}: with "
            f"sweep.long_factor={cfg.sweep.long_factor} the short budget is read from the long "
            "runs, which have no eval at the new one; start a fresh run (or resume with "
            f"train.steps={saved})"
        )


def run(cfg: ContextSweepConfig, ctx: RunContext) -> dict[str, Any]:
    check_resume_budget(cfg, ctx)
    short = cfg.train.steps
    long = short * cfg.sweep.long_factor
    for context in cfg.sweep.contexts:  # every run's config is validated before any training starts
        run_config(cfg, context, cfg.seed)
    rows, curves = [], {}
    for context in cfg.sweep.contexts:
        for i in range(cfg.sweep.n_seeds):
            c = run_config(cfg, context, cfg.seed + i)
            store = corpus.build_store(c.data, c.corpus_seed)
            common = corpus.eval_rows(store, c.data, c.corpus_seed, seq_len=min(cfg.sweep.contexts))
            steps = sorted(set(eval_schedule(c.train.steps, c.train.eval_every)) | {short})
            print(f"[context_length_sweep] context {context}, seed {c.seed}: {c.train.steps} steps")
            r = lm.train_lm(
                c,
                ctx.out_dir / "runs" / f"ctx{context}_seed{c.seed}",
                ctx.resume,
                extra_batches={"common": common},
                eval_steps=steps,
                store=store,
            )
            within = [e for e in r.evals if e["step"] <= short]
            sink_step = lm.steps_to_sink(within, cfg.sweep.sink_threshold)
            row = {
                "context": context,
                "seed": c.seed,
                "budget": short,
                **_summary(r.at_step(short)),
                "steps_to_sink": sink_step,
            }
            rows.append(row)
            if c.train.steps == long and long != short:
                late = lm.steps_to_sink(r.evals, cfg.sweep.sink_threshold)
                rows.append(
                    {**row, "budget": long, **_summary(r.at_step(long)), "steps_to_sink": late}
                )
            if i == 0:
                curves[context] = [
                    (e["step"], e["sink_rate_0.3"], e["max_head_score"]) for e in r.evals
                ]
    summary = summarise(cfg, rows)
    claims = make_claims(cfg, summary)
    print(PAPER_STATEMENT)
    figures = make_figures(ctx, cfg, rows, summary, curves)
    return {
        "claims": claims,
        "paper_statement": PAPER_STATEMENT,
        "corpus": store.info,
        "runs": rows,
        "summary": summary,
        "tables": {
            "Per context (seed mean)": summary["table"],
            "Spearman ρ with context": summary["spearman_table"],
        },
        "figures": figures,
    }


def _never(value: int | None, budget: int) -> float:
    """Steps-to-sink with 'never within the budget' ranked after every finite value (ties among
    'never' share their rank)."""
    return float(value) if value is not None else 10.0 * budget


def summarise(cfg: ContextSweepConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    short, long = cfg.train.steps, cfg.train.steps * cfg.sweep.long_factor
    budgets = [short] + ([long] if cfg.sweep.long_seeds and long != short else [])
    table, by_budget = [], {}
    for budget in budgets:
        means = {}
        for context in cfg.sweep.contexts:
            rs = [r for r in rows if r["context"] == context and r["budget"] == budget]
            mean = {
                k: float(np.mean([r[k] for r in rs]))
                for k in ("sink_rate_0.3", "common_sink_rate_0.3", "max_head_score", "val_loss")
            }
            mean["steps_to_sink"] = float(
                np.median([_never(r["steps_to_sink"], budget) for r in rs])
            )
            means[context] = mean
            shown = mean["steps_to_sink"] if mean["steps_to_sink"] <= budget else "never"
            table.append(
                {
                    "budget": budget,
                    "context": context,
                    "seeds": len(rs),
                    **mean,
                    "steps_to_sink": shown,  # seed median
                }
            )
        by_budget[budget] = means
    xs = list(cfg.sweep.contexts)

    def rho(budget: int, key: str) -> float:
        return metrics.spearman(xs, [by_budget[budget][c][key] for c in xs])

    spearman = {
        "own_short": rho(short, "sink_rate_0.3"),
        "common_short": rho(short, "common_sink_rate_0.3"),
        "steps_to_sink": rho(budgets[-1], "steps_to_sink"),  # the longest budget sees the most
    }
    if long in by_budget and long != short:
        spearman["own_long"] = rho(long, "sink_rate_0.3")
        spearman["common_long"] = rho(long, "common_sink_rate_0.3")
    spearman_table = [{"quantity": k, "spearman": v} for k, v in spearman.items()]
    flipped = None
    if "own_long" in spearman and np.isfinite(spearman["own_long"]):
        flipped = bool(np.sign(spearman["own_long"]) != np.sign(spearman["own_short"]))
    return {
        "table": table,
        "by_budget": {str(b): v for b, v in by_budget.items()},
        "spearman": spearman,
        "spearman_table": spearman_table,
        "long_budget_flips_direction": flipped,
    }


def make_claims(cfg: ContextSweepConfig, summary: dict[str, Any]) -> list:
    s = summary["spearman"]
    paper = "sinks stronger with longer context (Fig. 5)"
    claims = [
        check(
            "(i) sink rate rises with context, own windows",
            s["own_short"],
            ">=",
            0.8,
            paper,
            kind="reproduction",
        ),
        check(
            "(i) sink rate rises with context, common windows",
            s["common_short"],
            ">=",
            0.8,
            paper,
            kind="reproduction",
        ),
    ]
    if "own_long" in s:
        claims += [
            check(
                f"(i) at {cfg.sweep.long_factor}x budget, own windows",
                s["own_long"],
                ">=",
                0.8,
                paper,
                kind="reproduction",
            ),
            check(
                f"(i) at {cfg.sweep.long_factor}x budget, common windows",
                s["common_long"],
                ">=",
                0.8,
                paper,
                kind="reproduction",
            ),
        ]
    claims.append(
        # extension: the papers report sink strength vs context, not when the sink forms
        check(
            "(ii) steps-to-sink grows with context",
            s["steps_to_sink"],
            ">=",
            0.8,
            "longer contexts need a larger logit gap (over-mixing law, b ∝ ln n)",
            kind="extension",
        )
    )
    return claims


def make_figures(ctx, cfg, rows, summary, curves) -> list[str]:
    plt = plotting.plt
    files: list[str] = []
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    for ax, key, title in (
        (axes[0], "sink_rate_0.3", "own context"),
        (axes[1], "common_sink_rate_0.3", f"common windows (length {min(cfg.sweep.contexts)})"),
    ):
        for budget in sorted({r["budget"] for r in rows}):
            rs = [r for r in rows if r["budget"] == budget]
            mean = [np.mean([r[key] for r in rs if r["context"] == c]) for c in cfg.sweep.contexts]
            std = [np.std([r[key] for r in rs if r["context"] == c]) for c in cfg.sweep.contexts]
            ax.errorbar(
                cfg.sweep.contexts, mean, yerr=std, marker="o", capsize=3, label=f"{budget} steps"
            )
        ax.set(xscale="log", xlabel="training context", title=title)
        ax.set_xticks(cfg.sweep.contexts, [str(c) for c in cfg.sweep.contexts])
        ax.minorticks_off()
        ax.legend()
    axes[0].set_ylabel("sink rate (ε = 0.3)")
    fig.suptitle("sink rate vs training context (seed mean ± std)")
    fig.tight_layout()
    files += ctx.save_figure(fig, "sink_vs_context")

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for context, curve in curves.items():
        steps = [max(s, 1) for s, _, _ in curve]
        axes[0].plot(steps, [m for _, _, m in curve], label=f"context {context}")
        axes[1].plot(steps, [r for _, r, _ in curve], label=f"context {context}")
    axes[0].axhline(cfg.sweep.sink_threshold, color="gray", ls="--", lw=0.8)
    axes[0].set(xscale="log", xlabel="step", ylabel="largest first-position head score")
    axes[1].set(xscale="log", xlabel="step", ylabel="sink rate (ε = 0.3)")
    axes[0].legend()
    fig.suptitle(f"over training (seed {cfg.seed})")
    fig.tight_layout()
    files += ctx.save_figure(fig, "sink_over_training")

    fig, ax = plt.subplots(figsize=(4, 3))
    longest = max(r["budget"] for r in rows)
    for r in [r for r in rows if r["budget"] == longest]:
        y = r["steps_to_sink"]
        ax.scatter(r["context"], y if y is not None else longest, color="C0" if y else "C3")
        if y is None:
            ax.annotate("never", (r["context"], longest), fontsize=6, color="C3")
    ax.set_title(f"within {longest} steps")
    ax.set(
        xscale="log",
        xlabel="training context",
        ylabel=f"steps until a head score > {cfg.sweep.sink_threshold}",
    )
    ax.set_xticks(cfg.sweep.contexts, [str(c) for c in cfg.sweep.contexts])
    ax.minorticks_off()
    fig.tight_layout()
    files += ctx.save_figure(fig, "steps_to_sink")
    return files


EXPERIMENT = Experiment("context_length_sweep", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
