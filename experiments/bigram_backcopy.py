"""Active-dormant attention on Bigram-Backcopy, one layer (Guo et al. 2024, arXiv 2410.13835, §3).

A one-layer transformer learns a bigram chain (MLP) and, after trigger tokens, copies the token
before the trigger (attention). The head is *dormant* on non-trigger tokens: it attends to BOS,
whose value state drains towards zero, so the head is a no-op; after a trigger it is *active*
and attends to the previous token. Outputs (results/bigram_backcopy/<preset>/): metrics.json
with claims, metrics.jsonl, attention maps without and with triggers (Fig. 2), training
dynamics (Fig. 4), value-norm bars, the intervention table and the active/dormant probe.

    python -m experiments.bigram_backcopy --preset quick     # CPU, about a minute
    python -m experiments.bigram_backcopy --preset paper     # GPU, paper scale
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from sinks_jax import metrics, plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import ModelConfig, OptimConfig, TrainConfig
from sinks_jax.forward import apply
from sinks_jax.model import Capture, Interventions
from sinks_jax.tasks.bigram_backcopy import analysis
from sinks_jax.tasks.bigram_backcopy.config import BBConfig, BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import (
    BigramBackcopyTask,
    sample_sequences,
    trigger_free_task,
)
from sinks_jax.tasks.bigram_backcopy.runs import train_bb

PRESETS = {
    "quick": BBConfig(
        model=ModelConfig(d_model=64, d_mlp=256, n_layers=1, n_heads=1, max_len=64),
        data=BBDataConfig(seq_len=64, batch_size=64, eval_batch_size=256),
        # lr 2e-3, not the 1e-3: at 1e-3 the sink is still forming at step 1000 on two
        # of three seeds (Attn_<s> 0.73 / 0.98 / 0.74 for seeds 0 / 1 / 2); 2e-3 reaches
        # 0.92 / 0.999 / 0.90 in the same 1000 steps and wall time.
        optim=OptimConfig(name="adamw", lr=2e-3, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(steps=1000, eval_every=50, checkpoint_every=250),
    ),
    "paper": BBConfig(
        model=ModelConfig(d_model=256, d_mlp=1024, n_layers=1, n_heads=1, max_len=256),
        data=BBDataConfig(seq_len=256, batch_size=512, eval_batch_size=256),
        optim=OptimConfig(name="adamw", lr=3e-4, b1=0.9, b2=0.99, weight_decay=1e-4),
        train=TrainConfig(steps=10_000, eval_every=100, checkpoint_every=1000),
    ),
}
NOTES = {
    "quick": "CPU: d 64, T 64, batch 64, AdamW 2e-3, 1000 steps (about a minute)",
    "paper": "GPU: d 256 (1 head of dim 256), T 256, batch 512, AdamW 3e-4, 10k steps",
}

# Guo et al. 2024, one-layer BB at paper scale (Fig. 4 and text).
PAPER = {
    "attn_sink_1k": 0.78,
    "attn_sink_10k": 0.81,
    "value_peak": 9.14,
    "value_peak_step": 140,
    "value_10k": 1.42,
    "backcopy_le_0.01_by_step": 940,
    "bigram_risk": 2.2299,
}


EXAMPLE_SEED = 1234  # the trigger-free example sequence is the same in every run


def first_step(steps: list[int], values: list[float], predicate) -> int | None:
    return next((s for s, v in zip(steps, values, strict=True) if predicate(v)), None)


def run(cfg: BBConfig, ctx: RunContext) -> dict[str, Any]:
    bb = train_bb(cfg, ctx.out_dir, ctx.resume)
    task, evalset, model, evals = bb.task, bb.evalset, bb.model(), bb.evals
    final = evals[-1]
    layer, head = analysis.sink_head(final)

    def series(key: str) -> list[float]:
        return [row["layers"][layer][key][head] for row in evals]

    steps = bb.steps
    ts = {
        k: series(k)
        for k in (
            "attn_bos_non_trigger",
            "attn_bos_trigger",
            "attn_prev_token_trigger",
            "delta_logit",
            "value_bos",
            "value_others",
            "value_ratio",
        )
    }
    ts.update(
        {k: [row[k] for row in evals] for k in ("backcopy_risk", "bigram_risk", "bigram_excess")}
    )
    ts["res_first"] = [row["layers"][layer]["res_first"] for row in evals]
    ts["res_others"] = [row["layers"][layer]["res_others"] for row in evals]

    interventions = run_interventions(model, evalset, (layer, head))
    probe = run_probe(model, task, layer, head)
    massive = metrics.massive_activations(
        apply(model, evalset.batch.inputs, capture=Capture(residual=True)).layers[-1].residual
    )

    claims, emergence = make_claims(cfg, steps, ts, final, layer, head, interventions, probe)
    figures = make_figures(
        ctx, model, task, steps, ts, emergence, interventions, probe, layer, head, evalset
    )
    return {
        "claims": claims,
        "final": {"step": final["step"], "sink_head": [layer, head], **final},
        "time_series": {"step": steps, **ts},
        "emergence": emergence,
        "interventions": interventions,
        "probe": probe,
        "massive_activations": massive,
        **{
            f"sink_rate_{e:g}": metrics.sink_rate(
                [row["sink_score_first"] for row in final["layers"]], e
            )
            for e in cfg.sink_eps
        },
        "tables": {
            "Paper comparison (paper values are at paper scale)": paper_comparison(
                steps, ts, emergence
            ),
            "Interventions (cross-entropy, nats)": [
                {"model": name, **ces} for name, ces in interventions.items()
            ],
        },
        "train": {
            "wall_time_s": bb.result.wall_time_s,
            "resumed_from": bb.result.resumed_from,
            "final_train_loss": next(
                (r["loss"] for r in reversed(bb.result.history) if r["kind"] == "train"), None
            ),
        },
        "figures": figures,
    }


def run_interventions(
    model: nnx.Module, evalset: analysis.BBEvalSet, sink: tuple[int, int]
) -> dict[str, dict[str, float]]:
    """Backcopy and bigram CE of the full model and with attention / MLP zeroed (all layers),
    and with the sink head's attention moved onto BOS (Guo et al. §3.2)."""
    layers = tuple(range(model.cfg.n_layers))
    cases = {
        "full model": Interventions(),
        "attention zeroed": Interventions(zero_attention=layers),
        "MLP zeroed": Interventions(zero_mlp=layers),
        "attention moved to BOS": Interventions(attention_to_bos=(sink,)),
    }
    table = {}
    for name, iv in cases.items():
        s = analysis.analyse(model, evalset, iv)
        table[name] = {"backcopy_ce": s["backcopy_risk"], "bigram_ce": s["bigram_risk"]}
    return table


def run_probe(model: nnx.Module, task: BigramBackcopyTask, layer: int, head: int) -> dict[str, Any]:
    """Guo et al.'s probe: [BOS] + all non-trigger tokens + [v]; v is active if the last
    position's attention on BOS is < 0.89."""
    chars = [v for v in range(task.vocab_size) if v not in (task.bos_id, task.delimiter_id)]
    probes = metrics.probe_sequences(task.non_trigger_tokens, task.bos_id, chars)
    if probes.shape[1] > model.cfg.max_len:  # keep the probe within the trained positions
        keep = model.cfg.max_len - 2
        probes = np.concatenate([probes[:, : 1 + keep], probes[:, -1:]], axis=1)
    res = metrics.active_dormant(
        lambda toks: analysis.attention_weights(model, toks)[layer], probes, head
    )
    active = [int(v) for v, a in zip(chars, res["active"], strict=True) if a]
    is_trigger = np.isin(chars, task.triggers)
    mass = task.marginal[np.asarray(chars)]  # how often each probed token occurs in the data
    dormant_mass = (mass * (~res["active"] & ~is_trigger)).sum() / (mass * ~is_trigger).sum()
    return {
        "tokens": chars,
        "labels": [task.itos[v] for v in chars],
        "bos_attention": res["bos_attention"].tolist(),
        "active_tokens": active,
        "active_labels": [task.itos[v] for v in active],
        "triggers": list(task.triggers),
        "triggers_all_active": bool(res["active"][is_trigger].all()),
        "non_trigger_dormant_mass": float(dormant_mass),
        "active_non_trigger_labels": [task.itos[v] for v in active if v not in task.triggers],
    }


def make_claims(cfg, steps, ts, final, layer, head, interventions, probe):
    row = final["layers"][layer]
    full = interventions["full model"]
    no_attn, no_mlp = interventions["attention zeroed"], interventions["MLP zeroed"]
    sink_step = first_step(steps, ts["attn_bos_non_trigger"], lambda v: v > 0.5)
    copy_step = first_step(steps, ts["backcopy_risk"], lambda v: v < 0.5)
    vb = ts["value_bos"]
    peak_i = int(np.argmax(vb))
    mid_step = min(steps, key=lambda s: abs(s - cfg.train.steps // 2))
    mid_ratio = ts["value_ratio"][steps.index(mid_step)]
    emergence = {
        "sink_step": sink_step,
        "copy_step": copy_step,
        "value_peak": vb[peak_i],
        "value_peak_step": steps[peak_i],
        "value_final": vb[-1],
        "value_ratio_mid": mid_ratio,
        "value_ratio_mid_step": mid_step,
    }
    gap = abs(sink_step - copy_step) if None not in (sink_step, copy_step) else None
    claims = [
        check(
            "attn_sink_non_trigger",
            row["attn_bos_non_trigger"][head],
            ">=",
            0.80,
            "0.78 (1k steps), 0.81 (10k)",
            kind="reproduction",
        ),
        check(
            "attn_sink_trigger",
            row["attn_bos_trigger"][head],
            "<=",
            0.05,
            "≈0 (active head)",
            kind="reproduction",
        ),
        check(
            "prev_token_attn_trigger",
            row["attn_prev_token_trigger"][head],
            ">=",
            0.80,
            "≈1 (copy)",
            kind="reproduction",
        ),
        check(
            "backcopy_ce", final["backcopy_risk"], "<=", 0.05, "≤0.01 by step 940", kind="sanity"
        ),
        check(
            "bigram_excess",
            final["bigram_excess"],
            "<=",
            0.1,
            "bigram risk → 2.2299",
            kind="sanity",
        ),
        check(
            "value_ratio_bos_over_others",
            row["value_ratio"][head],
            "<=",
            0.35,
            "‖Val_<s>‖ 1.42 at 10k (drain)",
            kind="reproduction",
        ),
        check(
            "value_ratio_final_minus_mid",
            row["value_ratio"][head] - mid_ratio,
            "<",
            0.0,
            "value drain deepens with training",
            kind="reproduction",
        ),
        # one layer, one head: only attention sees the previous token, so copying implies this
        check(
            "zero_attention_backcopy_rise",
            no_attn["backcopy_ce"] - full["backcopy_ce"],
            ">=",
            2.0,
            "attention does the copying",
            kind="sanity",
        ),
        check(
            "zero_attention_bigram_change",
            abs(no_attn["bigram_ce"] - full["bigram_ce"]),
            "<=",
            0.05,
            "dormant head is a no-op on bigram tokens",
            kind="reproduction",
        ),
        # could come out otherwise: the embedding-unembedding path can also hold a bigram
        check(
            "zero_mlp_bigram_rise",
            no_mlp["bigram_ce"] - full["bigram_ce"],
            ">=",
            0.5,
            "MLP does the bigram",
            kind="reproduction",
        ),
        check(
            "emergence_sink_vs_copy_gap_steps",
            gap,
            "<=",
            300,
            "sink and copy emerge together",
            kind="reproduction",
        ),
        check(
            "value_peak_before_sink_step",
            None if sink_step is None else sink_step - steps[peak_i],
            ">",
            0,
            "‖Val_<s>‖ peaks at step 140, before the sink",
            kind="reproduction",
        ),
        check(
            "value_final_over_peak",
            vb[-1] / vb[peak_i],
            "<=",
            0.6,
            "9.14 → 1.42 (0.16)",
            kind="reproduction",
        ),
        check(
            "probe_all_triggers_active",
            int(probe["triggers_all_active"]),
            "==",
            1,
            "active after triggers",
            kind="reproduction",
        ),
        # Our threshold: rare characters (e.g. '&', p = 3e-6) are barely trained, so we ask for
        # dormancy on the non-trigger tokens weighted by how often they occur.
        check(
            "probe_dormant_share_of_non_trigger_occurrences",
            probe["non_trigger_dormant_mass"],
            ">=",
            0.95,
            "dormant on non-trigger tokens",
            kind="reproduction",
        ),
    ]
    return claims, emergence


def paper_comparison(steps, ts, emergence) -> list[dict[str, Any]]:
    def at(step: int, key: str):
        return ts[key][steps.index(step)] if step in steps else None

    backcopy_step = first_step(steps, ts["backcopy_risk"], lambda v: v <= 0.01)
    return [
        {
            "quantity": "Attn_<s> at 1k steps",
            "paper": PAPER["attn_sink_1k"],
            "ours": at(1000, "attn_bos_non_trigger"),
        },
        {
            "quantity": "Attn_<s> at 10k steps",
            "paper": PAPER["attn_sink_10k"],
            "ours": at(10_000, "attn_bos_non_trigger"),
        },
        {
            "quantity": "‖Val_<s>‖ peak",
            "paper": PAPER["value_peak"],
            "ours": emergence["value_peak"],
        },
        {
            "quantity": "‖Val_<s>‖ peak step",
            "paper": PAPER["value_peak_step"],
            "ours": emergence["value_peak_step"],
        },
        {
            "quantity": "‖Val_<s>‖ at 10k",
            "paper": PAPER["value_10k"],
            "ours": at(10_000, "value_bos"),
        },
        {
            "quantity": "first eval step with backcopy risk ≤ 0.01",
            "paper": PAPER["backcopy_le_0.01_by_step"],
            "ours": backcopy_step,
        },
        {
            "quantity": "final bigram risk",
            "paper": PAPER["bigram_risk"],
            "ours": ts["bigram_risk"][-1],
        },
    ]


def make_figures(
    ctx, model, task, steps, ts, emergence, interventions, probe, layer, head, evalset
) -> list[str]:
    files: list[str] = []
    shown = min(32, evalset.batch.inputs.shape[1])
    with_trig = np.asarray(evalset.batch.inputs[:1, :shown])
    free = trigger_free_task(task)
    no_trig = np.asarray(sample_sequences(free, jax.random.key(EXAMPLE_SEED), 1, shown))
    for name, toks, what in (
        ("attention_no_trigger", no_trig, "without triggers (dormant)"),
        ("attention_with_trigger", with_trig, "with triggers (active)"),
    ):
        att = analysis.attention_weights(model, toks)[:, 0]
        labels = [task.itos[int(t)] for t in toks[0]]
        triggers = [bool(task.trigger_mask[int(t)]) for t in toks[0]]
        fig = plotting.attention_grid(
            att, labels, f"Sequence {what}; triggers in red", highlight=triggers
        )
        files += ctx.save_figure(fig, name)

    marks = {"sink step": emergence["sink_step"]}
    fig = plotting.dynamics(
        steps,
        {
            "risk (nats)": {"backcopy": ts["backcopy_risk"], "bigram excess": ts["bigram_excess"]},
            "attention": {
                "Attn_<s> (non-trigger)": ts["attn_bos_non_trigger"],
                "BOS (trigger)": ts["attn_bos_trigger"],
                "prev token (trigger)": ts["attn_prev_token_trigger"],
            },
            "Δlogit (BOS − others)": {"Δlogit": ts["delta_logit"]},
            "value norm ‖W_o v‖": {"BOS": ts["value_bos"], "others": ts["value_others"]},
            f"residual norm (layer {layer})": {"BOS": ts["res_first"], "others": ts["res_others"]},
            "value ratio BOS/others": {"ratio": ts["value_ratio"]},
        },
        marks=marks,
    )
    files += ctx.save_figure(fig, "dynamics")

    toks = np.asarray(evalset.batch.inputs[:1, :shown])
    out = apply(model, toks, capture=Capture(values=True))
    norms = np.asarray(metrics.value_norms(out.layers[layer].head_values))[0, head]
    labels = [task.itos[int(t)] for t in toks[0]]
    fig = plotting.bars(
        labels,
        {"‖W_o v_k‖": norms},
        title=f"Value norms, layer {layer} head {head}",
        ylabel="norm",
        highlight=0,
    )
    files += ctx.save_figure(fig, "value_norms")

    names = list(interventions)
    fig = plotting.bars(
        names,
        {
            "backcopy CE": [interventions[n]["backcopy_ce"] for n in names],
            "bigram CE": [interventions[n]["bigram_ce"] for n in names],
        },
        title="Interventions",
        ylabel="cross-entropy (nats)",
    )
    files += ctx.save_figure(fig, "interventions")

    fig = plotting.bars(
        probe["labels"],
        {"last-position attention on BOS": probe["bos_attention"]},
        title="Active/dormant probe (active if < 0.89)",
        ylabel="attention",
    )
    fig.axes[0].axhline(0.89, color="red", lw=0.8, ls="--")
    files += ctx.save_figure(fig, "probe")
    return files


EXPERIMENT = Experiment("bigram_backcopy", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
