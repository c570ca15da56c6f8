"""A head that is active on one domain and dormant on another (Guo et al. 2024, arXiv
2410.13835, §4: Llama-2-7B head L16H25 is dormant on Wikipedia and active on GitHub code).

Controlled version on synthetic data. Two domains share the vocabulary: domain A is
Bigram-Backcopy (after a trigger, copy the token before it); domain B is a pure bigram chain (no
copying, the trigger characters are ordinary tokens). Two ways to tell them apart, one model each:

- `first_token`: domain B starts with its own first token (the table's unused delimiter) and uses
  the same bigram table as A;
- `content`: both start with BOS; domain B's bigram table is A's with the characters permuted, so
  only the content tells the domains apart.

A head that copies on domain A must be dormant on all of domain B, including B's trigger
characters: it parks its attention on the first token. Claim: some head has BOS attention > 0.9 on
domain-B queries and < 0.5 on domain-A trigger queries. Outputs
(results/two_domain_heads/<preset>/): metrics.json, per-head tables, and the chosen head's
attention maps on both domains for each marker.

    python -m experiments.two_domain_heads --preset quick    # CPU, about 3 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import analysis, metrics, plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    require,
)
from sinks_jax.data import (
    Batch,
    BigramBackcopyTask,
    batch_from_sequences,
    eval_batch,
    make_task,
    sample_sequences,
    trigger_positions,
    true_next_distribution,
)
from sinks_jax.errors import DataError
from sinks_jax.model import GPT, Capture
from sinks_jax.train import train

MARKERS = ("first_token", "content")


@dataclasses.dataclass(frozen=True)
class TwoDomainConfig(ExperimentConfig):
    markers: tuple[str, ...] = MARKERS  # one model per marker
    domain_b_share: float = 0.5  # probability that a training sequence is from domain B

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            len(self.markers) > 0 and set(self.markers) <= set(MARKERS),
            "markers",
            self.markers,
            f"a non-empty subset of {MARKERS}",
        )
        require(0 < self.domain_b_share < 1, "domain_b_share", self.domain_b_share, "in (0, 1)")


PRESETS = {
    "quick": TwoDomainConfig(
        model=ModelConfig(d_model=64, d_mlp=256, n_layers=2, n_heads=1, max_len=64),
        data=DataConfig(seq_len=64, batch_size=64, eval_batch_size=256),
        optim=OptimConfig(name="adamw", lr=2e-3, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(steps=1500, eval_every=250, checkpoint_every=500),
    ),
    "paper": TwoDomainConfig(
        model=ModelConfig(d_model=256, d_mlp=1024, n_layers=3, n_heads=4, max_len=256),
        data=DataConfig(seq_len=256, batch_size=512, eval_batch_size=256),
        optim=OptimConfig(name="adamw", lr=3e-4, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(steps=10_000, eval_every=500, checkpoint_every=1000),
    ),
}
NOTES = {
    "quick": "CPU: 2 layers × 1 head, d 64, T 64, batch 64, AdamW 2e-3, 1500 steps per marker",
    "paper": "GPU: 3 layers × 4 heads, d 256, T 256, batch 512, AdamW 3e-4, 10k steps",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Domains:
    a: BigramBackcopyTask  # Bigram-Backcopy
    b: BigramBackcopyTask  # pure bigram (no triggers)


def make_domains(task: BigramBackcopyTask, marker: str, seed: int) -> Domains:
    if marker == "first_token":
        if task.marginal[task.delimiter_id] > 0 or task.cond[:, task.delimiter_id].max() > 0:
            raise DataError(
                "the delimiter occurs in the data, so it cannot mark domain B; use markers=content"
            )
        b = dataclasses.replace(task, triggers=(), bos_id=task.delimiter_id)
    else:
        special = {task.bos_id, task.delimiter_id}
        chars = np.array([v for v in range(task.vocab_size) if v not in special])
        perm = np.arange(task.vocab_size)
        perm[chars] = np.random.default_rng(seed).permutation(chars)
        cond = np.zeros_like(task.cond)
        cond[np.ix_(perm, perm)] = task.cond  # cond_B[π(i), π(j)] = cond_A[i, j]
        marginal = np.zeros_like(task.marginal)
        marginal[perm] = task.marginal
        b = dataclasses.replace(task, cond=cond, marginal=marginal, triggers=())
    return Domains(task, b)


def mixed_batch(domains: Domains, seed: int, step: int, batch_size: int, seq_len: int, share_b):
    """Training batch of `step`: each sequence is from domain B with probability `share_b`."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    k_a, k_b, k_pick = jax.random.split(key, 3)
    seq_a = sample_sequences(domains.a, k_a, batch_size, seq_len + 1)
    seq_b = sample_sequences(domains.b, k_b, batch_size, seq_len + 1)
    pick_b = jax.random.bernoulli(k_pick, share_b, (batch_size, 1))
    return batch_from_sequences(jnp.where(pick_b, seq_b, seq_a))


def domain_attention(model: nnx.Module, inputs: jax.Array, trigger_chars: jax.Array) -> dict:
    """Per layer, per head: BOS attention over all queries t >= 1, over trigger-character queries,
    and previous-token attention on trigger-character queries."""
    out = model(inputs, capture=Capture(attention=True))
    trig = trigger_chars[inputs].at[:, 0].set(False)
    rows = []
    for obs in out.layers:
        stats = metrics.bb_attention(obs.attn_weights, trig)
        all_q = metrics.bb_attention(obs.attn_weights, jnp.zeros_like(trig))["bos_non_trigger"]
        rows.append(
            {
                "bos_all": np.asarray(all_q).tolist(),
                "bos_trigger_chars": np.asarray(stats["bos_trigger"]).tolist(),
                "prev_trigger_chars": np.asarray(stats["prev_token_trigger"]).tolist(),
            }
        )
    return rows


def train_marker(cfg: TwoDomainConfig, marker: str, ctx: RunContext):
    task = make_task(cfg.data, cfg.seed)
    domains = make_domains(task, marker, cfg.seed)
    n = cfg.data.eval_batch_size
    ev_a = eval_batch(domains.a, cfg.seed, n, cfg.data.seq_len)
    ev_b = eval_batch(domains.b, cfg.seed + 7, n, cfg.data.seq_len)
    trigger_chars = jnp.asarray(task.trigger_mask)
    set_a = analysis.BBEvalSet.build(domains.a, ev_a)

    def eval_fn(model: nnx.Module, step: int) -> dict[str, Any]:
        a = analysis.analyse(model, set_a)
        logits = model(ev_b.inputs).logits
        true_b = true_next_distribution(domains.b, ev_b.inputs)
        ce_b = -(true_b * jax.nn.log_softmax(logits)).sum(-1)[:, 1:].mean()
        ent_b = -(true_b * jnp.log(true_b + 1e-30)).sum(-1)[:, 1:].mean()
        return {
            "a_backcopy_risk": a["backcopy_risk"],
            "a_bigram_excess": a["bigram_excess"],
            "b_excess": float(ce_b - ent_b),
            "attn_a": domain_attention(model, ev_a.inputs, trigger_chars),
            "attn_b": domain_attention(model, ev_b.inputs, trigger_chars),
        }

    share = cfg.domain_b_share
    result = train(
        cfg,
        lambda rngs: GPT(cfg.model, rngs=rngs),
        lambda step: mixed_batch(
            domains, cfg.seed, step, cfg.data.batch_size, cfg.data.seq_len, share
        ),
        out_dir=ctx.out_dir / "runs" / marker,
        resume=ctx.resume,
        eval_fn=eval_fn,
    )
    return result, domains, ev_a, ev_b, trigger_positions(domains.a, ev_a.inputs)


def best_head(final: dict[str, Any]) -> tuple[int, int, float, float]:
    """(layer, head, BOS attention on B, BOS attention on A triggers) maximising the difference."""
    best = None
    for l, (ra, rb) in enumerate(zip(final["attn_a"], final["attn_b"], strict=True)):
        for h, (b_all, a_trig) in enumerate(
            zip(rb["bos_all"], ra["bos_trigger_chars"], strict=True)
        ):
            if best is None or b_all - a_trig > best[2] - best[3]:
                best = (l, h, b_all, a_trig)
    return best


def run(cfg: TwoDomainConfig, ctx: RunContext) -> dict[str, Any]:
    claims, tables, per_marker, figures = [], {}, {}, []
    for marker in cfg.markers:
        result, domains, ev_a, ev_b, _ = train_marker(cfg, marker, ctx)
        final = result.evals()[-1]
        layer, head, b_all, a_trig = best_head(final)
        b_trig = final["attn_b"][layer]["bos_trigger_chars"][head]
        a_prev = final["attn_a"][layer]["prev_trigger_chars"][head]
        claims += [
            check(f"{marker}_head_bos_attn_domain_b", b_all, ">", 0.9, "dormant on Wikipedia"),
            check(f"{marker}_head_bos_attn_domain_a_triggers", a_trig, "<", 0.5, "active on code"),
            # Ours: dormant even on B's trigger characters, so it is the domain, not the token.
            check(
                f"{marker}_head_bos_attn_domain_b_trigger_chars",
                b_trig,
                ">",
                0.9,
                "dormancy depends on the domain",
            ),
            check(f"{marker}_domain_a_backcopy_ce", final["a_backcopy_risk"], "<=", 0.1, "copies"),
            check(f"{marker}_domain_b_excess_ce", final["b_excess"], "<=", 0.1, "no copying on B"),
        ]
        tables[f"marker = {marker}: BOS attention per head (final)"] = [
            {
                "layer": l,
                "head": h,
                "B, all queries": final["attn_b"][l]["bos_all"][h],
                "B, trigger chars": final["attn_b"][l]["bos_trigger_chars"][h],
                "A, non-trigger": final["attn_a"][l]["bos_all"][h],
                "A, triggers": final["attn_a"][l]["bos_trigger_chars"][h],
                "A, prev token on triggers": final["attn_a"][l]["prev_trigger_chars"][h],
            }
            for l in range(cfg.model.n_layers)
            for h in range(cfg.model.n_heads)
        ]
        per_marker[marker] = {
            "head": [layer, head],
            "bos_attn_domain_b": b_all,
            "bos_attn_domain_b_trigger_chars": b_trig,
            "bos_attn_domain_a_triggers": a_trig,
            "prev_token_attn_domain_a_triggers": a_prev,
            "domain_a_backcopy_ce": final["a_backcopy_risk"],
            "domain_b_excess_ce": final["b_excess"],
            "wall_time_s": result.wall_time_s,
        }
        figures += head_maps(ctx, marker, result.model(), domains, ev_a, ev_b, layer, head)
    return {"claims": claims, "per_marker": per_marker, "tables": tables, "figures": figures}


def head_maps(ctx, marker, model, domains: Domains, ev_a: Batch, ev_b: Batch, layer, head):
    shown = 20
    maps, titles = [], []
    for name, task, batch in (("A (backcopy)", domains.a, ev_a), ("B (bigram)", domains.b, ev_b)):
        toks = np.asarray(batch.inputs[:1, :shown])
        att = analysis.attention_weights(model, toks)[layer, 0, head]
        maps.append((att, [task.itos[int(t)] for t in toks[0]], toks[0]))
        titles.append(f"domain {name}")
    plt = plotting.plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    trig = domains.a.trigger_mask
    for ax, (att, labels, toks), title in zip(axes, maps, titles, strict=True):
        ax.imshow(att, cmap="viridis", vmin=0, vmax=1)
        shown_labels = [plotting.token_label(x) for x in labels]
        ax.set_xticks(range(len(labels)), shown_labels, fontsize=7)
        ax.set_yticks(range(len(labels)), shown_labels, fontsize=7)
        for tick, t in zip(ax.get_yticklabels(), toks, strict=True):
            if trig[int(t)]:
                tick.set_color("red")
        ax.set_title(title)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    fig.suptitle(f"marker = {marker}: layer {layer} head {head}; trigger characters in red")
    fig.tight_layout()
    return ctx.save_figure(fig, f"head_maps_{marker}")


EXPERIMENT = Experiment("two_domain_heads", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
