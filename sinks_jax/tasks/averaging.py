"""The averaging task of catch, tag, release (our precise version of Zhang, Khan & Papyan 2025,
arXiv 2502.00919; the paper's code is not public).

A sequence h_0..h_T: position 0 is BOS, one [SEP] sits at a position p in [p_min, p_max] (uniform;
default 1..T−1), every other position carries a content vector x_s ~ N(0, I_{d_x}). Features per
token are [x | 1_BOS | 1_SEP | 1_content | 0] (the last slot is empty: a tag can use it). The
target at the last position is y*_T = mean(x_{p+1..T}); with `running_mean` every position t > p
has the target mean(x_{p+1..t}). In the `conditional` variant (for sink-free attention) the
[SEP] is a trigger present with probability 1/2: once it has been seen the target is the mean of
all content tokens so far, before that (or without it) the target is 0.
Metric: relMSE = E‖y_T − y*_T‖² / E‖y*_T‖².
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx, struct

from sinks_jax.config import ModelConfig, OptimConfig, RunConfig, TrainConfig, require
from sinks_jax.forward import apply
from sinks_jax.model import Capture, VectorTransformer, captured
from sinks_jax.train import TrainResult, train

BOS, SEP, CONTENT, TAG = range(4)  # offsets of the indicator slots after the d_x content dims


def _check_layout(
    cfg: Any, *, min_len: int, lo: int, hi: int, top: int, top_name: str, why: str = ""
) -> None:
    """What both averaging configs require: T >= `min_len`, d_x >= 1, `lo` <= p_min <= `hi` (the
    resolved p_max) <= `top` (`top_name`, what p_max = 0 means), batch_size >= 1."""
    require(cfg.seq_len >= min_len, "data.seq_len", cfg.seq_len, f"an integer >= {min_len}")
    require(cfg.d_x >= 1, "data.d_x", cfg.d_x, "an integer >= 1")
    require(lo <= cfg.p_min <= hi, "data.p_min", cfg.p_min, f"in [{lo}, p_max={hi}]{why}")
    require(hi <= top, "data.p_max", cfg.p_max, f"<= {top_name} = {top} (0 means {top_name})")
    require(cfg.batch_size >= 1, "data.batch_size", cfg.batch_size, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class AveragingConfig:
    seq_len: int = 24  # T: positions 0..T, so T + 1 tokens
    d_x: int = 8
    p_min: int = 1
    p_max: int = 0  # 0 = T − 1
    running_mean: bool = False  # targets at every t > p instead of only at T
    conditional: bool = False  # [SEP] present with probability 1/2; target 0 without it
    batch_size: int = 64

    def __post_init__(self) -> None:
        last = self.seq_len - 1
        _check_layout(self, min_len=3, lo=1, hi=self.sep_max, top=last, top_name="seq_len - 1")

    @property
    def sep_max(self) -> int:
        return self.p_max or self.seq_len - 1

    @property
    def n_features(self) -> int:
        return self.d_x + 4


def token_features(x_NxX: jax.Array, is_bos, is_sep, is_content) -> jax.Array:
    """The token layout of every averaging task, [..., N, d_x + 4]: the content vector (zero on
    non-content tokens), then one-hot BOS / SEP (or trigger) / CONTENT slots and an empty TAG
    slot (`BOS, SEP, CONTENT, TAG` are their offsets after the d_x content dims)."""
    x_NxX = jnp.where(is_content[..., None], x_NxX, 0.0)
    slots = jnp.stack([is_bos, is_sep, is_content, jnp.zeros_like(is_bos)], axis=-1)
    return jnp.concatenate([x_NxX, slots.astype(x_NxX.dtype)], axis=-1)


def masked_mse(pred_BxNxX: jax.Array, target_BxNxX: jax.Array, mask_BxN: jax.Array) -> jax.Array:
    """Squared error summed over d_x, averaged over the positions where `mask` is 1."""
    err_BxN = ((pred_BxNxX - target_BxNxX) ** 2).sum(-1)
    return (err_BxN * mask_BxN).sum() / jnp.maximum(mask_BxN.sum(), 1.0)


class AveragingBatch(struct.PyTreeNode):
    features: jax.Array  # [B, T+1, d_x+4]
    targets: jax.Array  # [B, T+1, d_x] (0 where not a target)
    target_mask: jax.Array  # [B, T+1] float, 1 where the loss counts
    sep: jax.Array  # [B] int, position of [SEP] (T + 1 when absent)
    has_sep: jax.Array  # [B] bool


@functools.partial(jax.jit, static_argnames=("cfg", "batch_size"))
def sample(cfg: AveragingConfig, key: jax.Array, batch_size: int | None = None) -> AveragingBatch:
    """A batch of averaging sequences (pure function of `key`; compiled once per config and
    batch size, bitwise what the op-by-op version gives, at less than half its cost)."""
    b = batch_size or cfg.batch_size
    n = cfg.seq_len + 1
    k_x, k_p, k_has = jax.random.split(key, 3)
    x_BxNxX = jax.random.normal(k_x, (b, n, cfg.d_x))
    sep_B = jax.random.randint(k_p, (b,), cfg.p_min, cfg.sep_max + 1)
    has_B = jax.random.bernoulli(k_has, 0.5, (b,)) if cfg.conditional else jnp.ones((b,), bool)
    sep_B = jnp.where(has_B, sep_B, n)  # absent: beyond the sequence
    pos_N = jnp.arange(n)
    is_bos = jnp.broadcast_to(pos_N == 0, (b, n))
    is_sep = pos_N[None] == sep_B[:, None]
    is_content = ~is_bos & ~is_sep
    features = token_features(x_BxNxX, is_bos, is_sep, is_content)
    x_BxNxX = features[..., : cfg.d_x]  # the content vectors, zero off content tokens

    if cfg.conditional:  # mean of all content so far, once the trigger has been seen; else 0
        averaged_BxN = is_content
        active_BxN = pos_N[None] >= sep_B[:, None]
    else:  # mean of the content after [SEP]
        averaged_BxN = pos_N[None] > sep_B[:, None]
        active_BxN = averaged_BxN
    counted = jnp.cumsum(averaged_BxN, axis=1)
    running = jnp.cumsum(jnp.where(averaged_BxN[..., None], x_BxNxX, 0.0), axis=1)
    running = running / jnp.maximum(counted, 1)[..., None]
    last = jnp.broadcast_to(pos_N[None] == cfg.seq_len, (b, n))
    mask = (active_BxN | cfg.conditional) & (pos_N[None] >= 1) if cfg.running_mean else last
    targets = jnp.where((mask & active_BxN)[..., None], running, 0.0)
    chex.assert_shape(features, (b, n, cfg.n_features))
    return AveragingBatch(features, targets, mask.astype(jnp.float32), sep_B, has_B)


@functools.partial(jax.jit, static_argnames=("cfg",))  # one dispatch per training step
def batch_for_step(cfg: AveragingConfig, seed: int, step: int) -> AveragingBatch:
    """Training batch of `step`: a pure function of (seed, step), so resumes replay it."""
    return sample(cfg, jax.random.fold_in(jax.random.key(seed), step))


def eval_batch(cfg: AveragingConfig, seed: int, batch_size: int = 512) -> AveragingBatch:
    return sample(cfg, jax.random.fold_in(jax.random.key(seed + 1), 2**31 - 1), batch_size)


def rel_mse(pred_BxX: jax.Array, target_BxX: jax.Array) -> jax.Array:
    """E‖y − y*‖² / E‖y*‖² over the batch."""
    chex.assert_equal_shape([pred_BxX, target_BxX])
    return ((pred_BxX - target_BxX) ** 2).sum(-1).mean() / (target_BxX**2).sum(-1).mean()


# ---------------------------------------------------------------------------------------------
# Models, loss and training on the task


@dataclasses.dataclass(frozen=True)
class AveragingExperimentConfig(RunConfig):
    """An attention model trained on the averaging task (`data` is the task, as in the BB
    experiments; `model.vocab_size` and `max_len` are unused)."""

    model: ModelConfig = ModelConfig(
        d_model=32,
        d_mlp=32,
        n_layers=2,
        n_heads=1,
        positions="none",
        norm="none",
        final_norm=False,
        layers_without_mlp=(0, 1),
        init="torch",  # PyTorch defaults; with GPT-2 N(0, 0.02) and no biases training stalls
        use_bias=False,  # W_Q W_Kᵀ is then the whole bilinear form of a head
    )
    optim: OptimConfig = OptimConfig(name="adam", lr=3e-3, b2=0.99, weight_decay=0.0)
    train: TrainConfig = TrainConfig(steps=3000, eval_every=250, checkpoint_every=1000)
    data: AveragingConfig = AveragingConfig()


def make_model(cfg: AveragingExperimentConfig, rngs: nnx.Rngs) -> VectorTransformer:
    return VectorTransformer(cfg.model, cfg.data.n_features, cfg.data.d_x, rngs=rngs)


def mse_loss(model: nnx.Module, batch: AveragingBatch) -> jax.Array:
    """Squared error summed over d_x, averaged over target positions."""
    return masked_mse(model(batch.features).logits, batch.targets, batch.target_mask)


def last_position_rel_mse(model: nnx.Module, batch: AveragingBatch) -> float:
    pred = model(batch.features).logits[:, -1]
    return float(rel_mse(pred, batch.targets[:, -1]))


def train_averaging(
    cfg: AveragingExperimentConfig,
    out_dir: Path | None,
    resume: bool = False,
    eval_fn: Callable[[nnx.Module, int], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train `make_model(cfg)` with the MSE loss on `batch_for_step(cfg.data, seed, step)`."""
    return train(
        cfg,
        lambda rngs: make_model(cfg, rngs),
        lambda step: batch_for_step(cfg.data, cfg.seed, step),
        out_dir=out_dir,
        resume=resume,
        eval_fn=eval_fn,
        loss_fn=mse_loss,
    )


def ctr_metrics(model: nnx.Module, batch: AveragingBatch) -> dict[str, float]:
    """Catch-tag-release diagnostics of a two-layer, one-head-per-layer model (head 0):

    relMSE at the last position; `sep_sink`: mean over p < t ≤ T of A¹[t, p] (layer 1 catches the
    span after SEP); `bos_sink_before_sep`: mean over 1 ≤ t < p of A¹[t, 0]; `tag_energy`:
    ‖mean o‖² / mean ‖o‖² over the post-SEP layer-1 outputs o_t (1 = one common tag);
    `pre_sep_tag_energy`: the same over the pre-SEP tokens (1 ≤ t < p); `retrieval_mass`: the
    last query's layer-2 attention on the post-SEP tokens."""
    out = apply(model, batch.features, capture=Capture(attention=True, blocks=True))
    pred = out.logits[:, -1]
    n = batch.features.shape[1]
    pos = jnp.arange(n)[None]
    sep = batch.sep[:, None]
    after, before = pos > sep, (pos >= 1) & (pos < sep)
    layer1, layer2 = out.observed[:2]
    a1 = captured(layer1.attn_weights)[:, 0]  # [B,T,T]
    a2 = captured(layer2.attn_weights)[:, 0]
    to_sep = jnp.take_along_axis(a1, jnp.broadcast_to(sep[:, :, None], (a1.shape[0], n, 1)), 2)
    o = captured(layer1.attn_out)  # [B,T,D]

    def energy(mask):
        m = mask[..., None].astype(o.dtype)
        count = jnp.maximum(mask.sum(1, keepdims=True), 1)[..., None]
        mean = (o * m).sum(1, keepdims=True) / count  # per sequence
        num = (mean[:, 0] ** 2).sum(-1)
        den = ((o**2).sum(-1) * mask).sum(1) / jnp.maximum(mask.sum(1), 1)
        return (num / jnp.maximum(den, 1e-30)).mean()

    def masked_mean(x, mask):
        return (x * mask).sum() / jnp.maximum(mask.sum(), 1)

    return {
        "rel_mse": float(rel_mse(pred, batch.targets[:, -1])),
        "sep_sink": float(masked_mean(to_sep[..., 0], after)),
        "bos_sink_before_sep": float(masked_mean(a1[..., 0], before)),
        "tag_energy": float(energy(after)),
        "pre_sep_tag_energy": float(energy(before)),
        "retrieval_mass": float((a2[:, -1] * after).sum(1).mean()),
    }


# ---------------------------------------------------------------------------------------------
# Trigger-at-query averaging (for sink-free attention; Guo et al. 2024's active/dormant pattern
# on a regression task). A new task beside the plain one: nothing above depends on it.


@dataclasses.dataclass(frozen=True)
class TriggerQueryConfig:
    """Trigger-at-query averaging: with probability `trigger_prob` one position p in
    [p_min, p_max] (default 2..T) carries the trigger (the SEP indicator, no content) instead of a
    content token. The target at the trigger is the mean of the content tokens before it
    (positions 1..p−1); every other target is 0, and every position is supervised. Without a
    trigger, p is still drawn: it is the query position at which relMSE is measured, so a model
    that cannot tell whether its query is the trigger scores the trigger-blind optimum
    1 − trigger_prob (0.5 by default; `trigger_blind_baseline`)."""

    seq_len: int = 24  # T: positions 0..T, so T + 1 tokens
    d_x: int = 8
    p_min: int = 2
    p_max: int = 0  # 0 = T
    trigger_prob: float = 0.5
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check_layout(
            self,
            min_len=2,
            lo=2,
            hi=self.query_max,
            top=self.seq_len,
            top_name="seq_len",
            why=" (a trigger needs content before it)",
        )
        require(0.0 < self.trigger_prob < 1.0, "data.trigger_prob", self.trigger_prob, "in (0, 1)")

    @property
    def query_max(self) -> int:
        return self.p_max or self.seq_len

    @property
    def n_features(self) -> int:
        return self.d_x + 4


class TriggerQueryBatch(struct.PyTreeNode):
    features: jax.Array  # [B, T+1, d_x+4], the trigger in the SEP slot
    targets: jax.Array  # [B, T+1, d_x]: the preceding content mean at the trigger, else 0
    target_mask: jax.Array  # [B, T+1] float, all ones (every position supervised)
    query: jax.Array  # [B] int, the query position p (the trigger's position when present)
    has_trigger: jax.Array  # [B] bool


def preceding_content_mean(features_BxNxF: jax.Array, d_x: int) -> jax.Array:
    """m[b, t] = mean of the content vectors at positions s < t (0 where there are none)."""
    content_BxN = features_BxNxF[..., d_x + CONTENT]
    x_BxNxX = features_BxNxF[..., :d_x] * content_BxN[..., None]
    sums = jnp.cumsum(x_BxNxX, axis=1) - x_BxNxX
    counts = jnp.cumsum(content_BxN, axis=1) - content_BxN
    return sums / jnp.maximum(counts, 1.0)[..., None]


@functools.partial(jax.jit, static_argnames=("cfg", "batch_size"))
def sample_trigger_query(
    cfg: TriggerQueryConfig, key: jax.Array, batch_size: int | None = None
) -> TriggerQueryBatch:
    """A batch of trigger-at-query sequences (pure function of `key`)."""
    b = batch_size or cfg.batch_size
    n = cfg.seq_len + 1
    k_x, k_p, k_has = jax.random.split(key, 3)
    x_BxNxX = jax.random.normal(k_x, (b, n, cfg.d_x))
    query_B = jax.random.randint(k_p, (b,), cfg.p_min, cfg.query_max + 1)
    has_B = jax.random.bernoulli(k_has, cfg.trigger_prob, (b,))
    pos_N = jnp.arange(n)
    is_bos = jnp.broadcast_to(pos_N == 0, (b, n))
    is_trigger = (pos_N[None] == query_B[:, None]) & has_B[:, None]
    is_content = ~is_bos & ~is_trigger
    features = token_features(x_BxNxX, is_bos, is_trigger, is_content)
    targets = jnp.where(is_trigger[..., None], preceding_content_mean(features, cfg.d_x), 0.0)
    chex.assert_shape(features, (b, n, cfg.n_features))
    return TriggerQueryBatch(features, targets, jnp.ones((b, n), jnp.float32), query_B, has_B)


@functools.partial(jax.jit, static_argnames=("cfg",))
def trigger_batch_for_step(cfg: TriggerQueryConfig, seed: int, step: int) -> TriggerQueryBatch:
    """Training batch of `step`: a pure function of (seed, step), so resumes replay it."""
    return sample_trigger_query(cfg, jax.random.fold_in(jax.random.key(seed), step))


def trigger_eval_batch(cfg: TriggerQueryConfig, seed: int, batch_size: int = 512):
    return sample_trigger_query(
        cfg, jax.random.fold_in(jax.random.key(seed + 1), 2**31 - 1), batch_size
    )


def at_query(x_BxNx: jax.Array, query_B: jax.Array) -> jax.Array:
    """x[b, query[b]]."""
    return jnp.take_along_axis(x_BxNx, query_B[:, None, None], axis=1)[:, 0]


def query_rel_mse(model: nnx.Module, batch: TriggerQueryBatch) -> float:
    """relMSE at the query positions (the trigger when present, a content token otherwise)."""
    pred = at_query(apply(model, batch.features).logits, batch.query)
    return float(rel_mse(pred, at_query(batch.targets, batch.query)))


def masked_rel_mse(model: nnx.Module, batch: Any) -> float:
    """Σ_masked ‖y − y*‖² / Σ_masked ‖y*‖² over every supervised position (dense tasks)."""
    pred = apply(model, batch.features).logits
    err = (((pred - batch.targets) ** 2).sum(-1) * batch.target_mask).sum()
    return float(err / ((batch.targets**2).sum(-1) * batch.target_mask).sum())


def blind_rel_mse(target_MxX: jax.Array, signal_MxX: jax.Array) -> float:
    """min_c relMSE(c·m, y) = 1 − ⟨y, m⟩² / (‖y‖² ‖m‖²): the best a predictor does that knows the
    quantity m to be averaged but not whether it is asked for it (it is trigger-blind)."""
    ym = (target_MxX * signal_MxX).sum()
    return float(1.0 - ym**2 / ((target_MxX**2).sum() * (signal_MxX**2).sum()))


def trigger_blind_baseline(batch: TriggerQueryBatch, d_x: int) -> float:
    """Trigger-blind relMSE at the query positions (→ 1 − trigger_prob with many samples)."""
    m = at_query(preceding_content_mean(batch.features, d_x), batch.query)
    return blind_rel_mse(at_query(batch.targets, batch.query), m)


def running_content_mean(features_BxNxF: jax.Array, d_x: int) -> jax.Array:
    """m[b, t] = mean of the content vectors at positions s ≤ t (0 where there are none)."""
    content_BxN = features_BxNxF[..., d_x + CONTENT]
    sums = jnp.cumsum(features_BxNxF[..., :d_x] * content_BxN[..., None], axis=1)
    return sums / jnp.maximum(jnp.cumsum(content_BxN, axis=1), 1.0)[..., None]


def dense_blind_baseline(batch: AveragingBatch, d_x: int) -> float:
    """Trigger-blind relMSE of the dense running-mean variant (`conditional`, `running_mean`)
    over its supervised positions: c × the running content mean, whatever the trigger."""
    mask = batch.target_mask > 0
    m = running_content_mean(batch.features, d_x)[mask]
    return blind_rel_mse(batch.targets[mask], m)
