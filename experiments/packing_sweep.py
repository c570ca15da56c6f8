"""How data packing decides where sinks form (Barbero et al. 2025, arXiv 2504.02732, §5), and how
far a one-token perturbation spreads with and without BOS (their Gemma 7B figure, §4).

One small GPT per packing strategy (`sinks_jax.tasks.corpus.PACKINGS`), same budget. Each is
evaluated under three inference formats: BOS + a document from its start; the document from its
start without BOS (both scored on the same tokens x_2..x_T); a window starting mid-document without
BOS. Reported: validation loss per (training strategy × inference format), the first-position
sink rate (ε = 0.3) per format, and sink scores by token class on the strategy's own windows
(where `bos_per_doc_causal` puts its sinks: the first BOS, mid-window BOS, EOS, the first token),
and per strategy the share of window tokens in a leading fragment with no BOS before it and the
share of queries that can see an EOS.

`bos_per_doc_masked` prepends BOS to a window's leading document fragment, so every segment
starts with BOS (the paper's premise "BOS always first"; without it 42 % of training tokens sat
in BOS-less segments). `no_bos` windows carry EOS between documents (96 % of windows, 58 % of
queries see one) and the model parks its no-op there, so the first-position comparison is made
twice: on the `no_bos` model's own windows scoring only the queries that cannot see an EOS, and
with a second `no_bos` model trained on documents at least as long as the window
(`long_doc_len_min`; few windows hold an EOS). Both are pooled over (row, query) pairs, with the
BOS-trained reference scored on BOS + document rows: over every query for the long documents, and
at the EOS-free queries' positions (their histogram) for the EOS-free comparison, since early
queries put much attention on position 0 even without a sink.

Perturbation spread: in the `one_doc_per_row` model (always trained with BOS first), one token in
the middle of a validation document is changed and ‖Δh_t‖ is measured for every later position t
and every layer, with BOS present and with BOS removed.

Claims: trained with BOS always first (`bos_per_doc_masked`, `one_doc_per_row`), removing BOS at
inference raises the loss by ≥ 0.05 nats/token and at least halves the first-position sink rate;
trained without BOS (`no_bos`), a first-position sink still forms (sink rate ≥ half of the
BOS-trained models', on EOS-free queries and with long documents); with BOS the perturbation
spreads less at the last layer. A sink-rate ratio is compared only when its BOS-trained
model(s) have a clear sink (some head puts ≥ `CLEAR_SINK` of its attention on the first
position); otherwise the claim is recorded as undefined, not failed. Outputs
(results/packing_sweep/<preset>/): metrics.json, `loss_table.png`, `sink_locations.png`,
`perturbation_spread.png`.

    python -m experiments.packing_sweep --preset quick   # CPU, about 8 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from sinks_jax import plotting
from sinks_jax.batch import Batch
from sinks_jax.claims import check, check_if, ratio
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import TrainConfig, require
from sinks_jax.config import run_config as plain_run_config
from sinks_jax.errors import DataError
from sinks_jax.forward import apply
from sinks_jax.model import Capture
from sinks_jax.tasks import corpus, lm, lm_presets

BOS_FIRST = ("bos_per_doc_masked", "one_doc_per_row")
LOCATIONS = ("BOS at position 0", "BOS mid-window", "EOS", "first non-BOS token")
LONG_DOCS = "no_bos, long documents"  # the run name of the long-document no_bos model
# A "clear sink": some head puts on average at least this share of its attention on the first
# position (with BOS): Barbero et al.'s strict ε = 0.8 of Table 1. (A few heads near 0.6, as
# `one_doc_per_row` reaches at 1500 steps with sink rate 0.25, do not count.) Sink-rate ratios
# are compared only when their BOS-trained model has one.
CLEAR_SINK = 0.8


@dataclasses.dataclass(frozen=True)
class PackingSweep:
    """`data.packing` is set per run from `packings`; the perturbation model is
    `one_doc_per_row`. The long-document `no_bos` model uses documents of
    `long_doc_len_min`..`long_doc_len_max` tokens (synthetic sources: generated with the same
    number of corpus tokens; other sources: the documents at least `long_doc_len_min` long)."""

    packings: tuple[str, ...] = corpus.PACKINGS
    inference_rows: int = 128  # validation rows per inference format
    perturb_sequences: int = 32
    long_doc_len_min: int = 256
    long_doc_len_max: int = 320

    def __post_init__(self) -> None:
        for p in self.packings:
            require(p in corpus.PACKINGS, "sweep.packings", self.packings, str(corpus.PACKINGS))
        require(
            len(set(self.packings)) == len(self.packings),
            "sweep.packings",
            self.packings,
            "each packing once (one run folder per packing)",
        )
        require(
            set(BOS_FIRST) | {"no_bos"} <= set(self.packings),
            "sweep.packings",
            self.packings,
            "to include bos_per_doc_masked, one_doc_per_row and no_bos (the claims compare them)",
        )
        n, m = self.inference_rows, self.perturb_sequences
        require(n >= 1, "sweep.inference_rows", n, ">= 1")
        require(m >= 1, "sweep.perturb_sequences", m, ">= 1")
        require(
            self.long_doc_len_max >= self.long_doc_len_min,
            "sweep.long_doc_len_max",
            self.long_doc_len_max,
            f">= sweep.long_doc_len_min={self.long_doc_len_min}",
        )


@dataclasses.dataclass(frozen=True)
class PackingSweepConfig(lm.LMConfig):
    sweep: PackingSweep = PackingSweep()

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.sweep.long_doc_len_min >= self.data.seq_len + 1,
            "sweep.long_doc_len_min",
            self.sweep.long_doc_len_min,
            f">= data.seq_len + 1 = {self.data.seq_len + 1} (documents at least one window long)",
        )
        require(
            not self.model.layers_without_attention,
            "model.layers_without_attention",
            self.model.layers_without_attention,
            "() (the sink locations and perturbation scores read every layer's attention)",
        )


# Documents shorter than the window, so that packing puts several in one row.
PACKING_CORPUS = dataclasses.replace(
    lm_presets.SYNTHETIC, n_docs=60_000, doc_len_min=16, doc_len_max=80, seq_len=64, batch_size=32
)
PRESETS = {
    "quick": PackingSweepConfig(
        model=lm_presets.SMALL,
        data=PACKING_CORPUS,
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=1500, eval_every=250, checkpoint_every=1500, progress=False),
    ),
    "text": PackingSweepConfig(
        model=lm_presets.TEXT_MODEL,
        data=lm_presets.BUILTIN_TEXT,
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=3000, eval_every=500, checkpoint_every=3000, progress=False),
        sweep=PackingSweep(long_doc_len_min=lm_presets.BUILTIN_TEXT.seq_len + 1),
    ),
    "paper": PackingSweepConfig(
        model=lm_presets.PAPER_MODEL,
        data=lm_presets.YOUR_CORPUS,
        optim=lm_presets.PAPER_OPTIM,
        train=lm_presets.PAPER_TRAIN,
        sweep=PackingSweep(
            long_doc_len_min=lm_presets.YOUR_CORPUS.seq_len + 1,
            long_doc_len_max=4 * lm_presets.YOUR_CORPUS.seq_len,
        ),
    ),
    # One GPU: the quick design with 4× the tokens per step and 4× the steps, so that the
    # BOS-trained models can reach a clear sink (≥ CLEAR_SINK); not yet timed.
    "gpu": PackingSweepConfig(
        model=lm_presets.on_gpu(lm_presets.SMALL),
        data=dataclasses.replace(PACKING_CORPUS, batch_size=128),
        optim=lm_presets.QUICK_OPTIM,
        train=TrainConfig(steps=6000, eval_every=1000, checkpoint_every=6000, progress=False),
    ),
}
NOTES = {
    "quick": "synthetic BB documents of 16–80 tokens (256–320 for the long-document no_bos model), "
    "d 64, 2 layers × 4 heads, context 64, 2048 tokens/step, 6 models × 1500 steps "
    "(about 8 minutes on 2 cores)",
    "text": "built-in Python docs, 4 layers, context 128, 2048 tokens/step, 6 models × 3000 steps "
    "(≈ 30 min on 2 cores, estimated from lm_sinks text's 12 steps/s)",
    "paper": "GPU: the lm_sinks paper model, one per packing plus a long-document no_bos model "
    "(--set data.path=YOUR_CORPUS)",
    "gpu": "GPU: the quick design at 8192 tokens/step, 6 models × 6000 steps (a few minutes on "
    "one H100, estimated; not yet timed)",
}


def run_config(cfg: PackingSweepConfig, packing: str) -> lm.LMConfig:
    base = plain_run_config(cfg)
    return dataclasses.replace(base, data=dataclasses.replace(cfg.data, packing=packing))


def long_doc_config(cfg: PackingSweepConfig) -> lm.LMConfig:
    """The `no_bos` run on documents at least one window long. Synthetic sources generate them
    (as many corpus tokens as the main corpus, at least 40 documents)."""
    c = run_config(cfg, "no_bos")
    if not c.data.source.startswith("synthetic"):
        return c  # the store is filtered by length instead (`long_doc_store`)
    mean_short = (cfg.data.doc_len_min + cfg.data.doc_len_max) / 2
    mean_long = (cfg.sweep.long_doc_len_min + cfg.sweep.long_doc_len_max) / 2
    n_docs = max(40, round(cfg.data.n_docs * mean_short / mean_long))
    data = dataclasses.replace(
        c.data,
        n_docs=n_docs,
        doc_len_min=cfg.sweep.long_doc_len_min,
        doc_len_max=cfg.sweep.long_doc_len_max,
    )
    return dataclasses.replace(c, data=data)


def long_doc_store(cfg: PackingSweepConfig, c: lm.LMConfig) -> corpus.TokenStore:
    """The long-document corpus: generated (synthetic) or the documents of at least
    `long_doc_len_min` tokens."""
    store = corpus.build_store(c.data, c.corpus_seed)
    if c.data.source.startswith("synthetic"):
        return store
    lengths = np.diff(store.offsets)

    def keep(ix: np.ndarray) -> np.ndarray:
        return ix[lengths[ix] >= cfg.sweep.long_doc_len_min]

    train, val = keep(store.train_docs), keep(store.val_docs)
    if not len(train) or not len(val):
        raise DataError(
            f"no {'training' if not len(train) else 'validation'} document has "
            f"≥ sweep.long_doc_len_min={cfg.sweep.long_doc_len_min} tokens; set a smaller "
            "sweep.long_doc_len_min"
        )
    info = {**store.info, "long_doc_len_min": cfg.sweep.long_doc_len_min}
    return dataclasses.replace(store, train_docs=train, val_docs=val, info=info)


# ---------------------------------------------------------------------------------------------
# Window diagnostics and query-restricted sink scores


def fragment_share(batch: Batch) -> float:
    """Share of real input tokens with no BOS at or before them in their row: a leading
    document fragment that cannot attend to a BOS (Barbero et al. assume BOS always first)."""
    x = np.asarray(batch.inputs)
    real = x != corpus.PAD
    no_bos = np.cumsum(x == corpus.BOS, axis=1) == 0
    return float((no_bos & real).sum() / max(real.sum(), 1))


def eos_free_queries(batch: Batch) -> np.ndarray:
    """[B,T] real queries with no EOS at or before them (causal rows: none they can see)."""
    x = np.asarray(batch.inputs)
    return (np.cumsum(x == corpus.EOS, axis=1) == 0) & (x != corpus.PAD)


def eos_visible_share(batch: Batch) -> float:
    """Share of real queries that can see an EOS (at or before them)."""
    real = np.asarray(batch.inputs) != corpus.PAD
    return float(1.0 - eos_free_queries(batch).sum() / max(real.sum(), 1))


def window_share(batch: Batch) -> float:
    """Share of rows that contain an EOS."""
    return float((np.asarray(batch.inputs) == corpus.EOS).any(1).mean())


def first_position_scores(model, batch: Batch, queries_BxT: np.ndarray) -> np.ndarray:
    """[L,H] attention on key 0, pooled over the (row, query) pairs in `queries_BxT` that see
    key 0 (Gu et al.'s sink score restricted to a query set)."""
    out = lm.forward(model, batch)
    sees = np.asarray(lm.attention_mask(batch))[:, :, 0] & queries_BxT  # [B,T]
    n = max(int(sees.sum()), 1)
    return np.stack(
        [
            (np.asarray(o.attn_weights)[:, :, :, 0] * sees[:, None]).sum((0, 2)) / n
            for o in out.layers
        ]
    )


def position_matched_scores(model, batch: Batch, weights_T: np.ndarray) -> np.ndarray:
    """[L,H] attention on key 0 averaged per query position over the rows of `batch`, then over
    positions with `weights_T` (a query-position histogram): a reference scored at the same
    positions as another query set (early queries score high even without a sink)."""
    out = lm.forward(model, batch)
    sees_BxT = np.asarray(lm.attention_mask(batch))[:, :, 0] & (
        np.asarray(batch.inputs) != corpus.PAD
    )
    count_T = np.maximum(sees_BxT.sum(0), 1)
    w_T = weights_T * (sees_BxT.sum(0) > 0)
    return np.stack(
        [
            (
                (np.asarray(o.attn_weights)[:, :, :, 0] * sees_BxT[:, None]).sum(0) / count_T * w_T
            ).sum(-1)
            / max(w_T.sum(), 1)
            for o in out.layers
        ]
    )


def uniform_baseline(batch: Batch, queries_BxT: np.ndarray) -> float:
    """The same pooled score for attention spread uniformly over the visible keys: 1 / (number
    of keys a query sees). Early queries score high without any sink."""
    mask = np.asarray(lm.attention_mask(batch))
    sees = mask[:, :, 0] & queries_BxT
    return float((1.0 / np.maximum(mask.sum(-1), 1))[sees].mean()) if sees.any() else float("nan")


def first_position_row(
    name: str, model, batch: Batch, queries_BxT: np.ndarray, eps: float = 0.3
) -> dict[str, Any]:
    """One row of the no_bos comparison table."""
    scores = first_position_scores(model, batch, queries_BxT)
    real = np.asarray(batch.inputs) != corpus.PAD
    return {
        "model, rows, queries": name,
        "query share": float(queries_BxT.sum() / max(real.sum(), 1)),
        "EOS-visible share of all queries": eos_visible_share(batch),
        "first-position sink rate": float((scores > eps).mean()),
        "max head score": float(scores.max()),
        "uniform-attention score": uniform_baseline(batch, queries_BxT),
    }


def run(cfg: PackingSweepConfig, ctx: RunContext) -> dict[str, Any]:
    configs = {p: run_config(cfg, p) for p in cfg.sweep.packings}  # all validated before training
    long_cfg = long_doc_config(cfg)
    loss_rows, sink_rows, location_rows, window_rows, models, store = [], [], [], [], {}, None
    for packing in cfg.sweep.packings:
        c = configs[packing]
        print(f"[packing_sweep] training with {packing}")
        r = lm.train_lm(c, ctx.out_dir / "runs" / packing, ctx.resume)
        models[packing], store = r.model(), r.store
        own = r.evals[-1]
        losses, rates = {"training packing": packing}, {"training packing": packing}
        for fmt in corpus.INFERENCE_FORMATS:
            rows = corpus.inference_rows(store, fmt, cfg.sweep.inference_rows, c.data.seq_len)
            s = lm.sink_summary(models[packing], rows, cfg.sink_eps, corpus.is_byte_text(c.data))
            losses[fmt], rates[fmt] = s["val_loss"], s["sink_rate_0.3"]
            rates[f"max score, {fmt}"] = s["max_head_score"]
        rates["own windows"] = own["sink_rate_0.3"]
        loss_rows.append(losses)
        sink_rows.append(rates)
        location_rows.append(
            {"training packing": packing, **{k: own["class_scores_max"][k] for k in LOCATIONS}}
        )
        window_rows.append(window_stats(packing, r.batch))
    print(f"[packing_sweep] training {LONG_DOCS}")
    long_store = long_doc_store(cfg, long_cfg)
    long_run = lm.train_lm(
        long_cfg, ctx.out_dir / "runs" / "no_bos_long_docs", ctx.resume, store=long_store
    )
    window_rows.append(window_stats(LONG_DOCS, long_run.batch))
    long_own = long_run.evals[-1]["class_scores_max"]
    location_rows.append({"training packing": LONG_DOCS, **{k: long_own[k] for k in LOCATIONS}})
    loss = {r["training packing"]: r for r in loss_rows}
    rate = {r["training packing"]: r for r in sink_rows}
    clear = {p: rate[p]["max score, bos_doc_start"] >= CLEAR_SINK for p in BOS_FIRST}
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
                kind="reproduction",
            )
        )
        claims.append(
            check_if(
                clear[p],
                f"no clear sink with BOS (max first-position score "
                f"{rate[p]['max score, bos_doc_start']:.3f} < {CLEAR_SINK})",
                f"{p}: first-position sink rate without / with BOS",
                ratio(rate[p]["doc_start_no_bos"], rate[p]["bos_doc_start"]),
                "<=",
                0.5,
                "the sink goes with BOS",
                kind="reproduction",
            )
        )
    comparison = no_bos_comparison(cfg, configs, models, store, long_run)
    unclear = [p for p in BOS_FIRST if not clear[p]]
    reason = (
        f"no clear sink with BOS in {', '.join(unclear)} (max first-position score < {CLEAR_SINK})"
    )
    for label, key in (
        ("no_bos: first-position sink rate on EOS-free queries", "eos_free_rate"),
        ("no_bos, documents ≥ window: first-position sink rate", "long_docs_rate"),
    ):
        claims.append(
            check_if(
                not unclear,
                reason,
                f"{label} / BOS-trained models' rate",
                ratio(comparison[key], comparison[f"{key}_reference"]),
                ">=",
                0.5,
                "a first-position sink forms whatever token stands there",
                kind="reproduction",
            )
        )
    spread = perturbation_spread(models["one_doc_per_row"], store, cfg)
    claims.append(
        check(
            "perturbation spread at the last layer, with / without BOS",
            ratio(spread["last_layer_with_bos"], spread["last_layer_without_bos"]),
            "<",
            1.0,
            "with BOS the perturbation spreads less (Gemma 7B figure)",
            kind="reproduction",
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
        "long_doc_corpus": long_store.info,
        "losses": loss_rows,
        "first_position_sink_rates": sink_rows,
        "sink_locations": location_rows,
        "windows": window_rows,
        "no_bos_comparison": comparison,
        "perturbation_spread": spread,
        "tables": {
            "Validation loss (nats/token): training packing × inference format": loss_rows,
            "First-position sink rate (ε = 0.3) and largest head score": sink_rows,
            "Sink score by location, own windows (max over heads)": location_rows,
            "Validation windows: tokens in a BOS-less leading fragment, EOS visibility": (
                window_rows
            ),
            "First-position sink on EOS-free queries (pooled over row × query)": comparison["rows"],
            "Perturbation spread ‖Δh‖ after the changed token (mean over later positions)": (
                spread_rows
            ),
        },
        "figures": figures,
    }


def window_stats(name: str, batch: Batch) -> dict[str, Any]:
    """Fragment share, EOS-visible query share and rows with an EOS, for one packing."""
    return {
        "training packing": name,
        "tokens in a BOS-less leading fragment": fragment_share(batch),
        "queries that see an EOS": eos_visible_share(batch),
        "windows with an EOS": window_share(batch),
    }


def no_bos_comparison(cfg, configs, models, store, long_run) -> dict[str, Any]:
    """First-position sink rates for the no_bos claims: the BOS-trained models on BOS + document
    rows (every query), the no_bos model on its own windows (every query, then the EOS-free
    ones), the long-document no_bos model on its own windows (every query, then EOS-free)."""
    fmt_rows = corpus.inference_rows(
        store, "bos_doc_start", cfg.sweep.inference_rows, cfg.data.seq_len
    )
    real = np.asarray(fmt_rows.inputs) != corpus.PAD
    rows = [
        first_position_row(f"{p}, BOS + document, all", models[p], fmt_rows, real)
        for p in BOS_FIRST
    ]
    own = corpus.eval_rows(store, configs["no_bos"].data, cfg.corpus_seed)
    own_real = np.asarray(own.inputs) != corpus.PAD
    rows.append(first_position_row("no_bos, own windows, all", models["no_bos"], own, own_real))
    rows.append(
        first_position_row(
            "no_bos, own windows, EOS-free", models["no_bos"], own, eos_free_queries(own)
        )
    )
    long_model, long_rows = long_run.model(), long_run.batch
    rows.append(
        first_position_row(
            f"{LONG_DOCS}, own windows, all",
            long_model,
            long_rows,
            np.asarray(long_rows.inputs) != corpus.PAD,
        )
    )
    rows.append(
        first_position_row(
            f"{LONG_DOCS}, own windows, EOS-free",
            long_model,
            long_rows,
            eos_free_queries(long_rows),
        )
    )
    reference = float(np.mean([r["first-position sink rate"] for r in rows[:2]]))
    # EOS-free queries sit early in a window; the reference for them is scored at their positions
    eos_free_T = eos_free_queries(own).sum(0)
    matched = [
        float((position_matched_scores(models[p], fmt_rows, eos_free_T) > 0.3).mean())
        for p in BOS_FIRST
    ]
    reference_eos_free = float(np.mean(matched))
    eos_free_rate = rows[3]["first-position sink rate"]
    long_docs_rate = rows[4]["first-position sink rate"]
    for r in rows:
        r["rate / BOS-trained rate"] = ratio(r["first-position sink rate"], reference)
    rows[3]["rate / BOS-trained rate"] = ratio(eos_free_rate, reference_eos_free)
    rows.insert(
        2,
        {
            "model, rows, queries": "BOS-trained, BOS + document, at the EOS-free positions",
            "first-position sink rate": reference_eos_free,
        },
    )
    return {
        "reference_rate": reference,
        "eos_free_rate_reference": reference_eos_free,
        "long_docs_rate_reference": reference,
        "eos_free_rate": eos_free_rate,
        "long_docs_rate": long_docs_rate,
        "rows": rows,
    }


def perturbation_spread(model, store: corpus.TokenStore, cfg: PackingSweepConfig) -> dict:
    """Change the middle token of validation documents; ‖Δh_t‖ per layer at every later
    position t, with BOS first and with BOS removed (the same content tokens)."""
    n_content = cfg.data.seq_len - 1
    docs = [store.doc(int(i))[:n_content] for i in store.val_docs]
    docs = [d for d in docs if len(d) == n_content][: cfg.sweep.perturb_sequences]
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
        out = apply(model, jnp.asarray(tokens), capture=Capture(residual=True))
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
