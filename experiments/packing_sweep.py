"""How data packing decides where sinks form (Barbero et al. 2025, arXiv 2504.02732, §5), and how
far a one-token perturbation spreads with and without BOS (their Gemma 7B figure, §4).

One small GPT per packing strategy (`sinks_jax.corpus.PACKINGS`), same budget. Each is evaluated
under three inference formats: BOS + a document from its start; the document from its start
without BOS (both scored on the same tokens x_2..x_T); a window starting mid-document without
BOS. Reported: validation loss per (training strategy × inference format), the first-position
sink rate (ε = 0.3) per format, and sink scores by token class on the strategy's own windows
(where `bos_per_doc_causal` puts its sinks: the first BOS, mid-window BOS, EOS, the first token).

Perturbation spread: in the `one_doc_per_row` model (always trained with BOS first), one token in
the middle of a validation document is changed and ‖Δh_t‖ is measured for every later position t
and every layer, with BOS present and with BOS removed.

Claims: trained with BOS always first (`bos_per_doc_masked`, `one_doc_per_row`), removing BOS at
inference raises the loss by ≥ 0.05 nats/token and at least halves the first-position sink rate;
trained without BOS (`no_bos`), a first-position sink still forms (sink rate ≥ half of the
BOS-trained models'); with BOS the perturbation spreads less at the last layer. Outputs
(results/packing_sweep/<preset>/): metrics.json, `loss_table.png`, `sink_locations.png`,
`perturbation_spread.png`.

    python -m experiments.packing_sweep --preset quick   # CPU, about 6 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from experiments import lm_sinks
from sinks_jax import corpus, lm, plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require
from sinks_jax.model import Capture

BOS_FIRST = ("bos_per_doc_masked", "one_doc_per_row")
LOCATIONS = ("BOS at position 0", "BOS mid-window", "EOS", "first non-BOS token")


@dataclasses.dataclass(frozen=True)
class PackingSweepConfig(lm.LMConfig):
    """`data.packing` is set per run from `packings`; the perturbation model is
    `one_doc_per_row`."""

    packings: tuple[str, ...] = corpus.PACKINGS
    inference_rows: int = 128  # validation rows per inference format
    perturb_sequences: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        for p in self.packings:
            require(p in corpus.PACKINGS, "packings", self.packings, str(corpus.PACKINGS))
        require(
            set(BOS_FIRST) | {"no_bos"} <= set(self.packings),
            "packings",
            self.packings,
            "to include bos_per_doc_masked, one_doc_per_row and no_bos (the claims compare them)",
        )
        require(self.inference_rows >= 1, "inference_rows", self.inference_rows, ">= 1")
        require(self.perturb_sequences >= 1, "perturb_sequences", self.perturb_sequences, ">= 1")


# Documents shorter than the window, so that packing puts several in one row.
PACKING_CORPUS = dataclasses.replace(
    lm_sinks.SYNTHETIC, n_docs=60_000, doc_len_min=16, doc_len_max=80, seq_len=64, batch_size=32
)
PRESETS = {
    "quick": PackingSweepConfig(
        model=lm_sinks.SMALL,
        data=PACKING_CORPUS,
        optim=lm_sinks.QUICK_OPTIM,
        train=TrainConfig(steps=1500, eval_every=250, checkpoint_every=1500, progress=False),
    ),
    "text": PackingSweepConfig(
        model=lm_sinks.TEXT_MODEL,
        data=lm_sinks.BUILTIN_TEXT,
        optim=lm_sinks.QUICK_OPTIM,
        train=TrainConfig(steps=3000, eval_every=500, checkpoint_every=3000, progress=False),
    ),
    "paper": PackingSweepConfig(
        model=lm_sinks.PAPER_MODEL,
        data=lm_sinks.YOUR_CORPUS,
        optim=lm_sinks.PAPER_OPTIM,
        train=lm_sinks.PAPER_TRAIN,
    ),
}
NOTES = {
    "quick": "synthetic BB documents of 16–80 tokens, d 64, 2 layers × 4 heads, context 64, 2048 "
    "tokens/step, 5 models × 1500 steps (about 7 minutes)",
    "text": "built-in Python docs, 4 layers, context 128, 2048 tokens/step, 5 models × 3000 steps "
    "(≈ 25 min on 2 cores, estimated from lm_sinks text's 12 steps/s)",
    "paper": "GPU: the lm_sinks paper model, one per packing (--set data.path=YOUR_CORPUS)",
}


def run_config(cfg: PackingSweepConfig, packing: str) -> lm.LMConfig:
    base = lm.base_config(cfg)
    return dataclasses.replace(base, data=dataclasses.replace(cfg.data, packing=packing))


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def run(cfg: PackingSweepConfig, ctx: RunContext) -> dict[str, Any]:
    configs = {p: run_config(cfg, p) for p in cfg.packings}  # all validated before training
    loss_rows, sink_rows, location_rows, models, store = [], [], [], {}, None
    for packing in cfg.packings:
        c = configs[packing]
        print(f"[packing_sweep] training with {packing}")
        r = lm.train_lm(c, ctx.out_dir / "runs" / packing, ctx.resume)
        models[packing], store = r.model(), r.store
        own = r.evals[-1]
        losses, rates = {"training packing": packing}, {"training packing": packing}
        for fmt in corpus.INFERENCE_FORMATS:
            rows = corpus.inference_rows(store, fmt, cfg.inference_rows, c.data.seq_len)
            s = lm.sink_summary(models[packing], rows, cfg.sink_eps, corpus.is_byte_text(c.data))
            losses[fmt], rates[fmt] = s["val_loss"], s["sink_rate_0.3"]
        rates["own windows"] = own["sink_rate_0.3"]
        loss_rows.append(losses)
        sink_rows.append(rates)
        location_rows.append(
            {"training packing": packing, **{k: own["class_scores_max"][k] for k in LOCATIONS}}
        )
    loss = {r["training packing"]: r for r in loss_rows}
    rate = {r["training packing"]: r for r in sink_rows}
    claims = []
    for p in BOS_FIRST:
        rise = loss[p]["doc_start_no_bos"] - loss[p]["bos_doc_start"]
        claims.append(
            check(
                f"{p}: loss rise without BOS (nats/token)",
                rise,
                ">=",
                0.05,
                "removing BOS hurts BOS-trained models",
            )
        )
        claims.append(
            check(
                f"{p}: first-position sink rate without / with BOS",
                _ratio(rate[p]["doc_start_no_bos"], rate[p]["bos_doc_start"]),
                "<=",
                0.5,
                "the sink goes with BOS",
            )
        )
    bos_trained = float(np.mean([rate[p]["bos_doc_start"] for p in BOS_FIRST]))
    claims.append(
        check(
            "no_bos: first-position sink rate / BOS-trained models' rate",
            _ratio(rate["no_bos"]["own windows"], bos_trained),
            ">=",
            0.5,
            "a first-position sink forms whatever token stands there",
        )
    )
    spread = perturbation_spread(models["one_doc_per_row"], store, cfg)
    claims.append(
        check(
            "perturbation spread at the last layer, with / without BOS",
            _ratio(spread["last_layer_with_bos"], spread["last_layer_without_bos"]),
            "<",
            1.0,
            "with BOS the perturbation spreads less (Gemma 7B figure)",
        )
    )
    figures = make_figures(ctx, loss_rows, location_rows, spread)
    spread_rows = [
        {
            "layer": l,
            "with BOS": spread["mean_with_bos"][l],
            "without BOS": spread["mean_without_bos"][l],
            "relative, with BOS": spread["relative_with_bos"][l],
            "relative, without BOS": spread["relative_without_bos"][l],
        }
        for l in range(len(spread["mean_with_bos"]))
    ]
    return {
        "claims": claims,
        "corpus": store.info,
        "losses": loss_rows,
        "first_position_sink_rates": sink_rows,
        "sink_locations": location_rows,
        "perturbation_spread": spread,
        "tables": {
            "Validation loss (nats/token): training packing × inference format": loss_rows,
            "First-position sink rate (ε = 0.3)": sink_rows,
            "Sink score by location, own windows (max over heads)": location_rows,
            "Perturbation spread ‖Δh‖ after the changed token (mean over later positions)": (
                spread_rows
            ),
        },
        "figures": figures,
    }


def perturbation_spread(model, store: corpus.TokenStore, cfg: PackingSweepConfig) -> dict:
    """Change the middle token of validation documents; ‖Δh_t‖ per layer at every later
    position t, with BOS first and with BOS removed (the same content tokens)."""
    n_content = cfg.data.seq_len - 1
    docs = [store.doc(int(i))[:n_content] for i in store.val_docs]
    docs = [d for d in docs if len(d) == n_content][: cfg.perturb_sequences]
    if not docs:
        raise ValueError(f"no validation document has {n_content} tokens for the perturbation")
    x = np.stack(docs).astype(np.int32)
    j = n_content // 2
    vocab = np.unique(store.tokens[: min(len(store.tokens), 100_000)])
    rng = np.random.default_rng(cfg.seed)
    x_pert = x.copy()
    for r in range(len(x)):
        x_pert[r, j] = rng.choice(vocab[vocab != x[r, j]])

    def residuals(tokens: np.ndarray) -> np.ndarray:  # [L,B,T,D]
        out = model(jnp.asarray(tokens), capture=Capture(residual=True))
        return np.stack([np.asarray(o.residual) for o in out.layers])

    bos = np.full((len(x), 1), corpus.BOS, np.int32)
    result: dict[str, Any] = {"changed_position": j, "sequences": len(x)}
    for name, a, b, offset in (
        ("with_bos", np.concatenate([bos, x], 1), np.concatenate([bos, x_pert], 1), 1),
        ("without_bos", x, x_pert, 0),
    ):
        h, h_pert = residuals(a), residuals(b)
        later = slice(offset + j + 1, None)
        delta = np.linalg.norm(h_pert - h, axis=-1)[:, :, later]  # [L,B,T']
        norm = np.linalg.norm(h, axis=-1)[:, :, later]
        result[f"curve_{name}"] = delta.mean(1).tolist()  # [L,T'] by distance from the change
        result[f"mean_{name}"] = delta.mean((1, 2)).tolist()
        result[f"relative_{name}"] = (delta / norm).mean((1, 2)).tolist()
        result[f"last_layer_{name}"] = float(delta[-1].mean())
    return result


def make_figures(ctx, loss_rows, location_rows, spread) -> list[str]:
    plt = plotting.plt
    files: list[str] = []
    formats = list(corpus.INFERENCE_FORMATS)
    grid = np.array([[r[f] for f in formats] for r in loss_rows])
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    im = ax.imshow(grid, cmap="magma_r", aspect="auto")
    for (i, k), v in np.ndenumerate(grid):
        ax.text(k, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="k")
    ax.set_xticks(range(len(formats)), ["BOS + doc", "doc, no BOS", "mid-doc, no BOS"])
    ax.set_yticks(range(len(loss_rows)), [r["training packing"] for r in loss_rows])
    ax.set(xlabel="inference format", ylabel="training packing", title="validation loss (nats)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    files += ctx.save_figure(fig, "loss_table")

    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(LOCATIONS)
    for k, loc in enumerate(LOCATIONS):
        vals = [np.nan if r[loc] is None else r[loc] for r in location_rows]
        ax.bar(np.arange(len(location_rows)) + k * width, vals, width, label=loc)
    ax.set_xticks(
        np.arange(len(location_rows)) + 0.4 - width / 2,
        [r["training packing"] for r in location_rows],
        fontsize=7,
    )
    ax.set(ylabel="sink score (max over heads)", ylim=(0, 1), title="where the sinks sit")
    ax.legend(fontsize=7)
    fig.tight_layout()
    files += ctx.save_figure(fig, "sink_locations")

    with_bos, without = (
        np.asarray(spread["curve_with_bos"]),
        np.asarray(spread["curve_without_bos"]),
    )
    fig, axes = plt.subplots(1, len(with_bos), figsize=(3.2 * len(with_bos), 2.8), squeeze=False)
    for l, ax in enumerate(axes[0]):
        dist = np.arange(1, with_bos.shape[1] + 1)
        ax.plot(dist, with_bos[l], label="with BOS")
        ax.plot(dist, without[l], "--", label="BOS removed")
        ax.set(xlabel="positions after the changed token", ylabel="‖Δh‖", title=f"layer {l}")
    axes[0, 0].legend()
    fig.suptitle("spread of a one-token change (one_doc_per_row model)")
    fig.tight_layout()
    files += ctx.save_figure(fig, "perturbation_spread")
    return files


EXPERIMENT = Experiment("packing_sweep", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
