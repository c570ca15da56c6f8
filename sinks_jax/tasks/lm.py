"""Small GPT language models on a `sinks_jax.tasks.corpus`: configuration, training entry point and
the sink measurements of Gu et al. 2025 (ICLR) and Barbero et al. 2025 (arXiv 2504.02732, §4–5).

Gu's sink metric: the score of key k for (layer, head) is the mean over the queries that see k of
A[q, k]; the sink rate at ε is the share of (layer, head) whose first-position score exceeds ε.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sinks_jax import metrics
from sinks_jax.attention import causal_mask, document_mask
from sinks_jax.batch import Batch
from sinks_jax.config import (
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    check_sink_eps,
    require,
)
from sinks_jax.forward import apply
from sinks_jax.model import GPT, Capture, Interventions
from sinks_jax.tasks import corpus
from sinks_jax.train import TrainResult, train

LM_CAPTURE = Capture(attention=True, residual=True)


@dataclasses.dataclass(frozen=True)
class LMConfig(RunConfig):
    """A small GPT on a corpus. `model.vocab_size` = 0 (the presets) is derived from the
    tokenizer (bytes + specials, plus the BPE vocabulary with `data.tokenizer=bpe`) and saved
    resolved in `config.json`; any other value must equal it. `sink_eps` are the ε of the sink
    rates."""

    model: ModelConfig = ModelConfig(
        vocab_size=0, d_model=64, d_mlp=256, n_layers=2, n_heads=4, max_len=64
    )
    optim: OptimConfig = OptimConfig(name="adamw", lr=1e-3, b2=0.99, weight_decay=0.1)
    train: TrainConfig = TrainConfig(steps=1000, eval_every=100, checkpoint_every=500)
    data: corpus.CorpusConfig = corpus.CorpusConfig()
    corpus_seed: int = 0  # synthetic documents are the same for every training seed
    sink_eps: tuple[float, ...] = (0.3, 0.8)

    def __post_init__(self) -> None:
        super().__post_init__()
        vocab = corpus.vocab_size(self.data)
        if self.model.vocab_size == 0:  # derived: resolved here, visible in config.json
            object.__setattr__(self, "model", dataclasses.replace(self.model, vocab_size=vocab))
        require(
            self.model.vocab_size == vocab,
            "model.vocab_size",
            self.model.vocab_size,
            f"{vocab} (the vocabulary of data.tokenizer={self.data.tokenizer!r}) or 0 to derive it",
        )
        if self.model.positions == "learned":
            require(
                self.model.max_len >= self.data.seq_len,
                "model.max_len",
                self.model.max_len,
                f">= data.seq_len={self.data.seq_len}",
            )
        require(
            len(set(self.model.layers_without_attention)) < self.model.n_layers,
            "model.layers_without_attention",
            self.model.layers_without_attention,
            f"fewer than model.n_layers={self.model.n_layers} layers (the sink measurements "
            "need a layer with attention)",
        )
        check_sink_eps(self.sink_eps)


def with_context(cfg: LMConfig, seq_len: int, tokens_per_step: int) -> LMConfig:
    """The same run at another context length, keeping tokens per step constant."""
    batch = max(1, tokens_per_step // seq_len)
    data = dataclasses.replace(cfg.data, seq_len=seq_len, batch_size=batch)
    return dataclasses.replace(
        cfg,
        data=data,
        model=dataclasses.replace(cfg.model, max_len=max(seq_len, cfg.model.max_len)),
    )


@dataclasses.dataclass(frozen=True)
class LMRun:
    """A trained model, its corpus, the fixed validation batch and the eval rows over training.
    Every eval row holds `sink_summary` of the validation batch and, under `extra[name]`, of each
    extra batch passed to `train_lm`."""

    cfg: LMConfig
    store: corpus.TokenStore
    batch: Batch
    result: TrainResult

    @property
    def evals(self) -> list[dict[str, Any]]:
        return self.result.evals()

    def model(self) -> nnx.Module:
        return self.result.model()

    def at_step(self, step: int) -> dict[str, Any]:
        """The eval row of `step` (it must be an eval step)."""
        rows = [r for r in self.evals if r["step"] == step]
        if not rows:
            steps = [r["step"] for r in self.evals]
            raise ValueError(f"no eval at step {step}; eval steps: {steps}")
        return rows[0]


def train_lm(
    cfg: LMConfig,
    out_dir: Path | None,
    resume: bool = False,
    extra_batches: dict[str, Batch] | None = None,
    eval_steps: list[int] | None = None,
    store: corpus.TokenStore | None = None,
) -> LMRun:
    """Train `GPT(cfg.model)` on the packed corpus (`store`, built from `cfg.data` when not
    given); every eval is `sink_summary` on one fixed validation batch (the same for every
    training seed) and on each of `extra_batches`."""
    if store is None:
        store = corpus.build_store(cfg.data, cfg.corpus_seed)
    batch = corpus.eval_rows(store, cfg.data, cfg.corpus_seed)
    extra = extra_batches or {}

    text = corpus.is_byte_text(cfg.data)

    def eval_fn(model: nnx.Module, step: int) -> dict[str, Any]:
        row = sink_summary(model, batch, cfg.sink_eps, text)
        if extra:
            row["extra"] = {k: sink_summary(model, b, cfg.sink_eps, text) for k, b in extra.items()}
        return row

    result = train(
        cfg,
        lambda rngs: GPT(cfg.model, rngs=rngs),
        lambda step: corpus.packed_batch(store, cfg.data, cfg.seed, step),
        out_dir=out_dir,
        resume=resume,
        eval_fn=eval_fn,
        eval_steps=eval_steps,
        data_fingerprint=f"{store.info['content_hash']}:{store.info['tokenizer']}",
    )
    return LMRun(cfg, store, batch, result)


# ---------------------------------------------------------------------------------------------
# Measurements


def attention_mask(batch: Batch) -> jax.Array:
    b, t = batch.inputs.shape
    if batch.segment_ids is None:
        return jnp.broadcast_to(causal_mask(t), (b, t, t))
    return document_mask(jnp.asarray(batch.segment_ids))


def forward(
    model: nnx.Module,
    batch: Batch,
    capture: Capture = LM_CAPTURE,
    interventions: Interventions = Interventions(),
):
    """The jitted forward pass on a (packed) batch, capturing attention and residuals (and
    with `interventions`' edits, if any)."""
    seg = None if batch.segment_ids is None else jnp.asarray(batch.segment_ids)
    pos = None if batch.positions is None else jnp.asarray(batch.positions)
    return apply(
        model,
        jnp.asarray(batch.inputs),
        segment_ids_BxT=seg,
        positions_BxT=pos,
        capture=capture,
        interventions=interventions,
    )


def val_loss(out, batch: Batch) -> float:
    ce = optax.softmax_cross_entropy_with_integer_labels(out.logits, jnp.asarray(batch.targets))
    mask = jnp.ones_like(ce) if batch.loss_mask is None else jnp.asarray(batch.loss_mask)
    return float((ce * mask).sum() / jnp.maximum(mask.sum(), 1.0))


PUNCTUATION = np.frombuffer(string.punctuation.encode(), np.uint8)


def token_classes(inputs_BxT: np.ndarray, byte_text: bool = True) -> dict[str, np.ndarray]:
    """[B,T] masks of the token classes whose sink scores we report. The newline, space and
    punctuation classes read ids as bytes: pass `byte_text=False` for synthetic ids or BPE."""
    x = np.asarray(inputs_BxT)
    first = np.zeros_like(x, bool)
    starts_bos = x[:, 0] == corpus.BOS
    first[starts_bos, 1] = True
    first[~starts_bos, 0] = True
    bos = x == corpus.BOS
    at_start = np.zeros_like(bos)
    at_start[:, 0] = bos[:, 0]
    classes = {
        "BOS": bos,
        "BOS at position 0": at_start,
        "BOS mid-window": bos & ~at_start,
        "first non-BOS token": first,
        "EOS": x == corpus.EOS,
    }
    if byte_text:
        classes.update(newline=x == 10, space=x == 32, punctuation=np.isin(x, PUNCTUATION))
    return classes


def sink_summary(
    model: nnx.Module,
    batch: Batch,
    eps: tuple[float, ...] = (0.3, 0.8),
    byte_text: bool = True,
) -> dict:
    """Validation loss, first-position scores [L,H], sink rates (overall and per layer) at each ε,
    the largest head score, scores by token class (max over heads, mean over heads), and the BOS
    / first-position residual norm against the others per layer.

    A layer without attention (`model.layers_without_attention`) keeps its row, so that rows
    stay layer indices: its first-position scores are None (one per head) and its per-layer sink
    rates None; the overall rates, the largest score and the class scores are over the heads of
    the layers with attention."""
    out = forward(model, batch)
    mask = attention_mask(batch)
    real = np.asarray(batch.inputs) != corpus.PAD
    classes = token_classes(np.asarray(batch.inputs), byte_text)
    first: list[np.ndarray | None] = []  # [H] per layer, None without attention
    by_class: dict[str, list[np.ndarray]] = {k: [] for k in classes}
    residual: list[dict[str, float]] = []
    for obs in out.layers:
        norms = np.linalg.norm(np.asarray(obs.residual), axis=-1)  # [B,T]
        others = (norms[:, 1:] * real[:, 1:]).sum() / max(real[:, 1:].sum(), 1)
        residual.append({"first": float(norms[:, 0].mean()), "others": float(others)})
        if obs.attn_weights is None:  # a layer without attention
            first.append(None)
            continue
        ks = np.asarray(metrics.sink_scores(obs.attn_weights, mask, per_sequence=True))  # [B,H,T]
        first.append(ks[:, :, 0].mean(0))
        for name, m in classes.items():
            m = m & real
            by_class[name].append(
                (ks * m[:, None]).sum((0, 2)) / max(m.sum(), 1)
                if m.any()
                else np.full(ks.shape[1], np.nan)
            )
    first_AxH = np.stack([f for f in first if f is not None])  # the layers with attention
    n_heads = first_AxH.shape[1]
    result: dict[str, Any] = {
        "val_loss": val_loss(out, batch),
        "first_scores": [[None] * n_heads if f is None else f.tolist() for f in first],
        "max_head_score": float(first_AxH.max()),
        "residual_first_vs_others": residual,
        "massive_activations": metrics.massive_activations(out.layers[-1].residual)["count"],
    }
    for e in eps:
        result[f"sink_rate_{e:g}"] = metrics.sink_rate(first_AxH, e)
        result[f"sink_rate_by_layer_{e:g}"] = [
            None if row is None else float((row > e).mean()) for row in first
        ]
    result["class_scores_max"] = {
        k: float(np.nanmax(np.stack(v))) if not np.all(np.isnan(v)) else None
        for k, v in by_class.items()
    }
    result["class_scores_mean"] = {
        k: float(np.nanmean(np.stack(v))) if not np.all(np.isnan(v)) else None
        for k, v in by_class.items()
    }
    return result


def steps_to_sink(evals: list[dict], threshold: float = 0.5) -> int | None:
    """First eval step whose largest first-position head score exceeds `threshold`."""
    return next((r["step"] for r in evals if r["max_head_score"] > threshold), None)
