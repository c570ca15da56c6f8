"""A head that is active on one domain and dormant on another (Guo et al. 2024, arXiv
2410.13835, §4: Llama-2-7B head L16H25 is dormant on Wikipedia and active on GitHub code).

Controlled version on synthetic data. Two domains share the vocabulary: domain A is
Bigram-Backcopy (after a trigger, copy the token before it); domain B is a pure bigram chain (no
copying, the trigger characters are ordinary tokens). Two ways to tell them apart, one model each:

- `first_token`: domain B starts with its own first token (the table's unused delimiter) and uses
  the same bigram table as A;
- `content`: both start with BOS; domain B's bigram table is A's with the characters permuted, so
  only the content tells the domains apart.

The active head is the one that copies on domain A (largest previous-token attention on A's
trigger queries). It must be dormant on all of domain B, including B's trigger characters. Claims
per marker:

- attention: it parks on the first token on B. `bos_claim="absolute"` (paper preset): BOS
  attention on B > 0.9, Guo et al.'s number; `bos_claim="relative"` (quick preset): BOS attention
  on B ≥ 0.9 × the head's own BOS attention on A's non-trigger queries (at CPU scale that A-side
  sink still grows like ln(steps)); in both modes a companion claim that the A-side sink is
  ≥ 0.5, so that the ratio is not vacuous;
- cause (Guo et al. §3.2's intervention): forcing the head's attention onto BOS changes the
  cross-entropy by ≤ 0.01 nats on B (dormant there) and by ≥ 0.5 on A (active there);
- both domains are solved (backcopy CE and B's excess CE ≤ 0.1).

Where the head attends instead (BOS / itself / previous token / other keys, and of the other keys
those holding a trigger-role character: A's triggers, or their images in B's permuted table) is
measured on trigger and other characters and tabled for each marker. Outputs
(results/two_domain_heads/<preset>/): metrics.json, report.md with the tables, and the active
head's attention maps per marker.

    python -m experiments.two_domain_heads --preset quick    # CPU, about 4 minutes
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import metrics, plotting
from sinks_jax.claims import Claim, check, ratio
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import ModelConfig, OptimConfig, TrainConfig, require
from sinks_jax.errors import DataError
from sinks_jax.forward import apply
from sinks_jax.model import GPT, Capture, Interventions
from sinks_jax.tasks.bigram_backcopy import analysis
from sinks_jax.tasks.bigram_backcopy.config import BBConfig, BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import (
    Batch,
    BigramBackcopyTask,
    batch_from_sequences,
    eval_batch,
    make_task,
    sample_sequences,
    true_next_distribution,
)
from sinks_jax.train import train

MARKERS = ("first_token", "content")
BOS_CLAIMS = ("absolute", "relative")
TARGETS = ("bos", "self", "prev", "other")  # where a query's attention goes (keys 0, t, t-1, rest)
QUERY_SETS = ("all", "trigger_chars", "other_chars")
DORMANT_BOS = 0.9  # Guo et al.: the dormant head puts > 0.9 of its attention on BOS
A_SINK_MIN = 0.5  # the A-side sink the relative claim is measured against
DORMANT_DELTA_CE = 0.01  # nats: forcing a dormant head onto BOS changes (almost) nothing
ACTIVE_DELTA_CE = 0.5  # nats: forcing the active head onto BOS breaks the copy


@dataclasses.dataclass(frozen=True)
class TwoDomainConfig(BBConfig):
    markers: tuple[str, ...] = MARKERS  # one model per marker
    domain_b_share: float = 0.5  # probability that a training sequence is from domain B
    # "absolute": BOS attention on B > 0.9 (Guo et al.); "relative": ≥ 0.9 × the head's own BOS
    # attention on A's non-trigger queries (for budgets where that sink is still growing)
    bos_claim: str = "absolute"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            len(self.markers) > 0
            and set(self.markers) <= set(MARKERS)
            and len(set(self.markers)) == len(self.markers),
            "markers",
            self.markers,
            f"a non-empty subset of {MARKERS}, each once (one run folder per marker)",
        )
        require(0 < self.domain_b_share < 1, "domain_b_share", self.domain_b_share, "in (0, 1)")
        require(self.bos_claim in BOS_CLAIMS, "bos_claim", self.bos_claim, str(BOS_CLAIMS))


PRESETS = {
    "quick": TwoDomainConfig(
        model=ModelConfig(d_model=64, d_mlp=256, n_layers=2, n_heads=1, max_len=64),
        data=BBDataConfig(seq_len=64, batch_size=64, eval_batch_size=256),
        optim=OptimConfig(name="adamw", lr=2e-3, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(steps=1500, eval_every=250, checkpoint_every=500),
        bos_claim="relative",
    ),
    "paper": TwoDomainConfig(
        model=ModelConfig(d_model=256, d_mlp=1024, n_layers=3, n_heads=4, max_len=256),
        data=BBDataConfig(seq_len=256, batch_size=512, eval_batch_size=256),
        optim=OptimConfig(name="adamw", lr=3e-4, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(steps=10_000, eval_every=500, checkpoint_every=1000),
        bos_claim="absolute",
    ),
}
NOTES = {
    "quick": "CPU: 2 layers × 1 head, d 64, T 64, batch 64, AdamW 2e-3, 1500 steps per marker; "
    "BOS claim relative to the head's own A-side sink",
    "paper": "GPU: 3 layers × 4 heads, d 256, T 256, batch 512, AdamW 3e-4, 10k steps; "
    "absolute BOS claim (> 0.9)",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Domains:
    a: BigramBackcopyTask  # Bigram-Backcopy
    b: BigramBackcopyTask  # pure bigram (no triggers)
    perm: np.ndarray | None = None  # B's character for each of A's (None: the same characters)

    def trigger_roles(self) -> tuple[np.ndarray, np.ndarray]:
        """[V] masks of A's trigger characters and of their images in B (the characters whose
        statistics in B are those of A's triggers)."""
        role_b = np.zeros_like(self.a.trigger_mask)
        perm = np.arange(self.a.vocab_size) if self.perm is None else self.perm
        role_b[perm[list(self.a.triggers)]] = True
        return self.a.trigger_mask, role_b


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
        return Domains(task, b, perm)
    return Domains(task, b)


def mixed_batch(domains: Domains, seed: int, step: int, batch_size: int, seq_len: int, share_b):
    """Training batch of `step`: each sequence is from domain B with probability `share_b`."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    k_a, k_b, k_pick = jax.random.split(key, 3)
    seq_a = sample_sequences(domains.a, k_a, batch_size, seq_len + 1)
    seq_b = sample_sequences(domains.b, k_b, batch_size, seq_len + 1)
    pick_b = jax.random.bernoulli(k_pick, share_b, (batch_size, 1))
    return batch_from_sequences(jnp.where(pick_b, seq_b, seq_a))


# ---------------------------------------------------------------------------------------------
# Measurements


def _masked_mean(x: jax.Array, mask: jax.Array, axis) -> jax.Array:
    mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
    return (x * mask).sum(axis) / jnp.maximum(mask.sum(axis), 1.0)


def attention_targets(att_BxHxTxT: jax.Array, query_BxT: jax.Array) -> dict[str, jax.Array]:
    """Per head [H]: mean attention on key 0 (BOS or B's marker), on the query itself, on the
    previous token and on all other keys, over the selected queries t >= 2 (where the four key
    sets are disjoint)."""
    t = att_BxHxTxT.shape[-1]
    bos_BxHxT = att_BxHxTxT[..., 0]
    self_BxHxT = jnp.diagonal(att_BxHxTxT, axis1=-2, axis2=-1)
    prev_BxHxT = jnp.pad(
        jnp.diagonal(att_BxHxTxT, offset=-1, axis1=-2, axis2=-1), ((0, 0), (0, 0), (1, 0))
    )
    other_BxHxT = att_BxHxTxT.sum(-1) - bos_BxHxT - self_BxHxT - prev_BxHxT
    queries = (query_BxT & (jnp.arange(t)[None] >= 2))[:, None]
    parts = dict(zip(TARGETS, (bos_BxHxT, self_BxHxT, prev_BxHxT, other_BxHxT), strict=True))
    return {k: _masked_mean(v, queries, (0, 2)) for k, v in parts.items()}


def trigger_role_attention(
    att_BxHxTxT: jax.Array, role_key_BxT: jax.Array, query_BxT: jax.Array
) -> jax.Array:
    """Per head [H]: mean attention on earlier keys 1..t-2 (not BOS, previous or self) that hold
    a trigger-role character, over the selected queries t >= 2: the part of `other` that goes to
    a secondary sink on such keys."""
    t = att_BxHxTxT.shape[-1]
    pos = jnp.arange(t)
    earlier_TxT = (pos[None, :] >= 1) & (pos[None, :] <= pos[:, None] - 2)
    keys_BxTxT = earlier_TxT[None] & role_key_BxT[:, None, :]
    mass_BxHxT = (att_BxHxTxT * keys_BxTxT[:, None]).sum(-1)
    queries = (query_BxT & (pos[None] >= 2))[:, None]
    return _masked_mean(mass_BxHxT, queries, (0, 2))


def role_attention(
    model: nnx.Module, domains: Domains, ev_a: Batch, ev_b: Batch, head: tuple[int, int]
) -> dict[str, dict[str, float]]:
    """`trigger_role_attention` of `head` per domain and query set (`QUERY_SETS`)."""
    trigger_chars = jnp.asarray(domains.a.trigger_mask)
    out = {}
    for name, batch, role in zip(("A", "B"), (ev_a, ev_b), domains.trigger_roles(), strict=True):
        att = (
            apply(model, batch.inputs, capture=Capture(attention=True)).layers[head[0]].attn_weights
        )
        trig = trigger_chars[batch.inputs].at[:, 0].set(False)
        queries = {"all": jnp.ones_like(trig), "trigger_chars": trig, "other_chars": ~trig}
        role_BxT = jnp.asarray(role)[batch.inputs]
        out[name] = {
            q: float(trigger_role_attention(att, role_BxT, m)[head[1]]) for q, m in queries.items()
        }
    return out


def domain_attention(model: nnx.Module, inputs: jax.Array, trigger_chars: jax.Array) -> list:
    """Per layer, per head: BOS attention over all queries t >= 1, over non-trigger and over
    trigger-character queries; previous-token attention on trigger-character queries; and the
    attention targets (`attention_targets`) for each query set in `QUERY_SETS`."""
    out = apply(model, inputs, capture=Capture(attention=True))
    trig = trigger_chars[inputs].at[:, 0].set(False)
    queries = {"all": jnp.ones_like(trig), "trigger_chars": trig, "other_chars": ~trig}
    rows = []
    for obs in out.layers:
        stats = metrics.bb_attention(obs.attn_weights, trig)
        all_q = metrics.bb_attention(obs.attn_weights, jnp.zeros_like(trig))["bos_non_trigger"]
        targets = {
            name: {
                k: np.asarray(v).tolist() for k, v in attention_targets(obs.attn_weights, q).items()
            }
            for name, q in queries.items()
        }
        rows.append(
            {
                "bos_all": np.asarray(all_q).tolist(),
                "bos_non_trigger_chars": np.asarray(stats["bos_non_trigger"]).tolist(),
                "bos_trigger_chars": np.asarray(stats["bos_trigger"]).tolist(),
                "prev_trigger_chars": np.asarray(stats["prev_token_trigger"]).tolist(),
                "targets": targets,
            }
        )
    return rows


def domain_ce(
    model: nnx.Module,
    inputs_BxT: jax.Array,
    true_next_BxTxV: jax.Array,
    query_BxT: jax.Array | None = None,
    interventions: Interventions = Interventions(),
) -> float:
    """Cross-entropy (nats) of the model's next-token distribution against the data's, averaged
    over queries t >= 1 (optionally only those in `query_BxT`)."""
    logits_BxTxV = apply(model, inputs_BxT, interventions=interventions).logits
    ce_BxT = -(true_next_BxTxV * jax.nn.log_softmax(logits_BxTxV)).sum(-1)
    queries_BxT = jnp.broadcast_to(jnp.arange(inputs_BxT.shape[1])[None] >= 1, ce_BxT.shape)
    if query_BxT is not None:
        queries_BxT = queries_BxT & query_BxT
    return float(_masked_mean(ce_BxT, queries_BxT, (0, 1)))


def forced_bos_delta_ce(
    model: nnx.Module,
    inputs_BxT: jax.Array,
    true_next_BxTxV: jax.Array,
    head: tuple[int, int],
    query_BxT: jax.Array | None = None,
) -> dict[str, float]:
    """Guo et al. §3.2's intervention: the CE with (layer, head)'s attention moved entirely onto
    BOS minus the CE of the full model. A dormant head changes (almost) nothing."""
    full = domain_ce(model, inputs_BxT, true_next_BxTxV, query_BxT)
    forced = domain_ce(
        model, inputs_BxT, true_next_BxTxV, query_BxT, Interventions(attention_to_bos=(head,))
    )
    return {"ce": full, "ce_forced": forced, "delta_ce": forced - full}


def active_head(final: dict[str, Any]) -> tuple[int, int]:
    """(layer, head) that copies on domain A: largest previous-token attention on A's trigger
    queries (Guo et al.'s active head; chosen without looking at domain B)."""
    best, where = -1.0, (0, 0)
    for l, row in enumerate(final["attn_a"]):
        for h, v in enumerate(row["prev_trigger_chars"]):
            if v > best:
                best, where = v, (l, h)
    return where


# ---------------------------------------------------------------------------------------------
# Claims


def head_stats(final: dict[str, Any], layer: int, head: int) -> dict[str, float]:
    """The active head's attention numbers that the claims read."""
    a, b = final["attn_a"][layer], final["attn_b"][layer]
    return {
        "bos_b": b["bos_all"][head],
        "bos_b_trigger_chars": b["bos_trigger_chars"][head],
        "bos_a_non_trigger": a["bos_non_trigger_chars"][head],
        "bos_a_triggers": a["bos_trigger_chars"][head],
        "prev_a_triggers": a["prev_trigger_chars"][head],
    }


def dormancy_claims(marker: str, stats: dict[str, float], bos_claim: str) -> list[Claim]:
    """BOS attention of the active head on domain B (all queries and B's trigger characters),
    absolute (> 0.9) or relative to its own sink on A's non-trigger queries (≥ 0.9 ×)."""
    ref = stats["bos_a_non_trigger"]
    claims = [
        # the paper's BOS sink on non-trigger tokens, on A; also the relative claims' reference
        check(
            f"{marker}_head_bos_attn_domain_a_non_trigger",
            ref,
            ">=",
            A_SINK_MIN,
            "Attn_<s> 0.78 at 1k steps (Bigram-Backcopy)",
            kind="reproduction",
        )
    ]
    for suffix, key, paper in (
        ("", "bos_b", "dormant on Wikipedia (BOS > 0.9)"),
        ("_trigger_chars", "bos_b_trigger_chars", "dormancy depends on the domain"),
    ):
        if bos_claim == "absolute":
            claims.append(
                check(
                    f"{marker}_head_bos_attn_domain_b{suffix}",
                    stats[key],
                    ">",
                    DORMANT_BOS,
                    paper,
                    kind="reproduction",
                )
            )
        else:
            claims.append(
                check(
                    f"{marker}_head_bos_attn_domain_b{suffix}_over_domain_a_non_trigger",
                    ratio(stats[key], ref),
                    ">=",
                    DORMANT_BOS,
                    paper,
                    kind="reproduction",
                )
            )
    claims.append(
        # sanity: the head is chosen as A's copier, so it ignoring BOS on A's triggers is expected
        check(
            f"{marker}_head_bos_attn_domain_a_triggers",
            stats["bos_a_triggers"],
            "<",
            0.5,
            "active on code",
            kind="sanity",
        )
    )
    return claims


def intervention_claims(marker: str, delta_ce_b: float, delta_ce_a: float) -> list[Claim]:
    """Forcing the head onto BOS: no effect where it is dormant (B), large where active (A)."""
    return [
        check(
            f"{marker}_forced_bos_delta_ce_domain_b",
            delta_ce_b,
            "<=",
            DORMANT_DELTA_CE,
            "dormant: moving its attention to BOS changes nothing",
            kind="reproduction",
        ),
        # reproduction: with several heads or layers the copy could be shared, so this can fail
        check(
            f"{marker}_forced_bos_delta_ce_domain_a",
            delta_ce_a,
            ">=",
            ACTIVE_DELTA_CE,
            "active: moving its attention to BOS breaks the copy",
            kind="reproduction",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Training and the run


def train_marker(cfg: TwoDomainConfig, marker: str, ctx: RunContext):
    task = make_task(cfg.data, cfg.seed)
    domains = make_domains(task, marker, cfg.seed)
    n = cfg.data.eval_batch_size
    ev_a = eval_batch(domains.a, cfg.seed, n, cfg.data.seq_len)
    ev_b = eval_batch(domains.b, cfg.seed + 7, n, cfg.data.seq_len)
    trigger_chars = jnp.asarray(task.trigger_mask)
    set_a = analysis.BBEvalSet.build(domains.a, ev_a)
    true_b = true_next_distribution(domains.b, ev_b.inputs)
    ent_b = -(true_b * jnp.log(true_b + 1e-30)).sum(-1)[:, 1:].mean()

    def eval_fn(model: nnx.Module, step: int) -> dict[str, Any]:
        a = analysis.analyse(model, set_a)
        return {
            "a_backcopy_risk": a["backcopy_risk"],
            "a_bigram_excess": a["bigram_excess"],
            "b_excess": domain_ce(model, ev_b.inputs, true_b) - float(ent_b),
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
    return result, domains, ev_a, ev_b


def run_interventions(
    model: nnx.Module, domains: Domains, ev_a: Batch, ev_b: Batch, head: tuple[int, int]
) -> list[dict[str, Any]]:
    """Forced-BOS ΔCE of `head` per domain, on all queries and split by trigger characters."""
    trigger_chars = jnp.asarray(domains.a.trigger_mask)
    rows = []
    for name, task, batch in (("A", domains.a, ev_a), ("B", domains.b, ev_b)):
        true_next = true_next_distribution(task, batch.inputs)
        trig = trigger_chars[batch.inputs].at[:, 0].set(False)
        for queries, mask in (("all", None), ("trigger chars", trig), ("other chars", ~trig)):
            res = forced_bos_delta_ce(model, batch.inputs, true_next, head, mask)
            rows.append({"domain": name, "queries": queries, **res})
    return rows


def _delta(rows: list[dict[str, Any]], domain: str) -> float:
    return next(r["delta_ce"] for r in rows if r["domain"] == domain and r["queries"] == "all")


def run(cfg: TwoDomainConfig, ctx: RunContext) -> dict[str, Any]:
    claims, tables, per_marker, figures = [], {}, {}, []
    for marker in cfg.markers:
        result, domains, ev_a, ev_b = train_marker(cfg, marker, ctx)
        evals = result.evals()
        final = evals[-1]
        layer, head = active_head(final)
        stats = head_stats(final, layer, head)
        model = result.model()
        iv_rows = run_interventions(model, domains, ev_a, ev_b, (layer, head))
        d_b, d_a = _delta(iv_rows, "B"), _delta(iv_rows, "A")
        claims += dormancy_claims(marker, stats, cfg.bos_claim)
        claims += intervention_claims(marker, d_b, d_a)
        claims += [
            check(
                f"{marker}_domain_a_backcopy_ce",
                final["a_backcopy_risk"],
                "<=",
                0.1,
                "copies",
                kind="sanity",
            ),
            check(
                f"{marker}_domain_b_excess_ce",
                final["b_excess"],
                "<=",
                0.1,
                "no copying on B",
                kind="sanity",
            ),
        ]
        targets = {d: final[f"attn_{d.lower()}"][layer]["targets"] for d in ("A", "B")}
        roles = role_attention(model, domains, ev_a, ev_b, (layer, head))
        tables.update(
            marker_tables(cfg, marker, final, evals, layer, head, targets, roles, iv_rows)
        )
        per_marker[marker] = {
            "head": [layer, head],
            **stats,
            "bos_b_over_a_non_trigger": ratio(stats["bos_b"], stats["bos_a_non_trigger"]),
            "forced_bos_delta_ce_domain_a": d_a,
            "forced_bos_delta_ce_domain_b": d_b,
            "attention_targets": {
                d: {q: {k: v[head] for k, v in t[q].items()} for q in t} for d, t in targets.items()
            },
            "domain_b_main_target": main_target(targets["B"]["all"], head),
            "trigger_role_key_attention": roles,
            "domain_a_backcopy_ce": final["a_backcopy_risk"],
            "domain_b_excess_ce": final["b_excess"],
            "wall_time_s": result.wall_time_s,
        }
        figures += head_maps(ctx, marker, model, domains, ev_a, ev_b, layer, head)
    tables["what was seen"] = [observation(m, r) for m, r in per_marker.items()]
    return {"claims": claims, "per_marker": per_marker, "tables": tables, "figures": figures}


def main_target(targets: dict[str, list[float]], head: int) -> str:
    """The key set (BOS, self, previous token, other) that gets most of the head's attention."""
    return max(TARGETS, key=lambda k: targets[k][head])


def observation(marker: str, r: dict[str, Any]) -> dict[str, Any]:
    """One line per marker, written from the measurements: where the active head attends on B
    and what forcing it onto BOS does."""
    l, h = r["head"]
    tb = r["attention_targets"]["B"]["all"]
    return {
        "marker": marker,
        "active head": f"L{l}H{h}",
        "on domain B it attends to": ", ".join(f"{k} {tb[k]:.2f}" for k in TARGETS),
        "mostly": r["domain_b_main_target"],
        "B: on earlier trigger-role keys": r["trigger_role_key_attention"]["B"]["all"],
        "forced onto BOS: ΔCE on B / on A (nats)": f"{r['forced_bos_delta_ce_domain_b']:+.4f} / "
        f"{r['forced_bos_delta_ce_domain_a']:+.3f}",
    }


def marker_tables(
    cfg, marker, final, evals, layer, head, targets, roles, iv_rows
) -> dict[str, list]:
    per_head = [
        {
            "layer": l,
            "head": h,
            "B, all queries": final["attn_b"][l]["bos_all"][h],
            "B, trigger chars": final["attn_b"][l]["bos_trigger_chars"][h],
            "A, non-trigger": final["attn_a"][l]["bos_non_trigger_chars"][h],
            "A, all queries": final["attn_a"][l]["bos_all"][h],
            "A, triggers": final["attn_a"][l]["bos_trigger_chars"][h],
            "A, prev token on triggers": final["attn_a"][l]["prev_trigger_chars"][h],
        }
        for l in range(cfg.model.n_layers)
        for h in range(cfg.model.n_heads)
    ]
    where = [
        {
            "domain": d,
            "queries": q,
            **{k: targets[d][q][k][head] for k in TARGETS},
            "other: trigger-role keys": roles[d][q],
        }
        for d in ("A", "B")
        for q in QUERY_SETS
    ]
    over_training = [
        {
            "step": e["step"],
            "B BOS": e["attn_b"][layer]["bos_all"][head],
            "A non-trigger BOS": e["attn_a"][layer]["bos_non_trigger_chars"][head],
            "ratio B / A": ratio(
                e["attn_b"][layer]["bos_all"][head],
                e["attn_a"][layer]["bos_non_trigger_chars"][head],
            ),
            "A triggers BOS": e["attn_a"][layer]["bos_trigger_chars"][head],
            "A backcopy CE": e["a_backcopy_risk"],
            "B excess CE": e["b_excess"],
        }
        for e in evals
    ]
    name = f"marker = {marker}"
    return {
        f"{name}: BOS attention per head (final)": per_head,
        f"{name}: where the active head L{layer}H{head} attends (queries t >= 2)": where,
        f"{name}: L{layer}H{head} forced onto BOS (CE in nats)": iv_rows,
        f"{name}: L{layer}H{head} BOS attention over training": over_training,
    }


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
