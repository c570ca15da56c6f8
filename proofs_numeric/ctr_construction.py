"""Catch, tag, release solves averaging: an explicit two-layer construction (Zhang, Khan & Papyan
2025, arXiv 2502.00919, v2 Theorem 7.1). The task is our precise version
(`sinks_jax.tasks.averaging`; the paper's code is not public); the weights below are ours, written
to its mechanism.

Two layers, one head each, causal softmax attention without 1/√d, a residual stream, no MLP, no
LayerNorm; features [x | 1_BOS | 1_SEP | 1_content | τ] (τ: the empty tag slot).

- Layer 1 (catch + tag): every query is α·e; keys k_SEP = a_S·e, k_BOS = a_B·e (a_S > a_B > 0),
  content keys 0; the value of SEP is e_τ, every other value 0. A token after SEP puts
  ≥ 1 − ε₁ of its attention on SEP, ε₁ = (e^{α a_B} + T)·e^{−α a_S}, and gains τ ≈ 1; a token
  before SEP attends to BOS (a no-op) and gains ≈ 0.
- Layer 2 (release): query γ·τ, key τ − 2·1_SEP, value x. At the last position, tagged tokens get
  logit ≈ γ, untagged ones 0 and SEP ≈ −γ, so the head outputs ≈ the mean of the tagged x.
  The prediction y_T is that head's output.

Both W_Q W_Kᵀ are rank 1. Everything is float64; the error is the relative error
‖y_T − y*_T‖ / ‖y*_T‖ per sequence.

    python -m proofs_numeric.ctr_construction          # a few seconds
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sinks_jax import plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import require
from sinks_jax.tasks.averaging import BOS, CONTENT, SEP, TAG


@dataclasses.dataclass(frozen=True)
class ConstructionConfig:
    seed: int = 0
    d_x: int = 8
    n_sequences: int = 256
    t_min: int = 8
    t_max: int = 64
    a_sep: float = 2.0
    a_bos: float = 1.0
    alphas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # γ = α
    sweep_t: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    target_error: float = 1e-6
    sweep_gamma: float = 64.0  # release strength held fixed in the T sweep (see `run`)

    def __post_init__(self) -> None:
        require(
            self.a_sep > self.a_bos > 0, "a_sep/a_bos", (self.a_sep, self.a_bos), "a_S > a_B > 0"
        )
        require(
            3 <= self.t_min <= self.t_max,
            "t_min/t_max",
            (self.t_min, self.t_max),
            "3 <= t_min <= t_max",
        )
        require(self.n_sequences >= 1, "n_sequences", self.n_sequences, ">= 1")
        require(all(a > 0 for a in self.alphas), "alphas", self.alphas, "positive")
        require(min(self.sweep_t) >= 3, "sweep_t", self.sweep_t, "every T >= 3")


PRESETS = {"quick": ConstructionConfig(), "paper": ConstructionConfig(n_sequences=2048)}
NOTES = {
    "quick": "256 sequences, T in [8, 64], α = γ in 1..32; T sweeps to 512 (about a minute)",
    "paper": "2048 sequences per setting",
}


@struct.dataclass
class Weights:
    """Per layer: W_Q, W_K [F, 1] (one head, one q/k dimension) and W_OV [F, F]."""

    q1: np.ndarray
    k1: np.ndarray
    ov1: np.ndarray
    q2: np.ndarray
    k2: np.ndarray
    ov2: np.ndarray


def construction(d_x: int, alpha: float, gamma: float, a_sep: float, a_bos: float) -> Weights:
    f = d_x + 4
    slot = lambda i: d_x + i  # noqa: E731
    q1 = np.zeros((f, 1))
    q1[[slot(BOS), slot(SEP), slot(CONTENT)], 0] = alpha  # every token has one indicator: q = α·e
    k1 = np.zeros((f, 1))
    k1[slot(SEP), 0], k1[slot(BOS), 0] = a_sep, a_bos
    ov1 = np.zeros((f, f))
    ov1[slot(SEP), slot(TAG)] = 1.0  # SEP's value is e_τ
    q2 = np.zeros((f, 1))
    q2[slot(TAG), 0] = gamma
    k2 = np.zeros((f, 1))
    k2[slot(TAG), 0], k2[slot(SEP), 0] = 1.0, -2.0
    ov2 = np.zeros((f, f))
    ov2[:d_x, :d_x] = np.eye(d_x)  # value x
    return Weights(q1, k1, ov1, q2, k2, ov2)


def head(h_NxF: jax.Array, w_q, w_k, w_ov) -> tuple[jax.Array, jax.Array]:
    """One causal softmax head without 1/√d: (output [N,F], attention [N,N])."""
    n = h_NxF.shape[0]
    scores = (h_NxF @ w_q) @ (h_NxF @ w_k).T
    scores = jnp.where(jnp.tril(jnp.ones((n, n), bool)), scores, -jnp.inf)
    att = jax.nn.softmax(scores, axis=-1)
    return att @ (h_NxF @ w_ov), att


def forward(w: Weights, features_NxF: jax.Array) -> dict[str, jax.Array]:
    o1, att1 = head(features_NxF, w.q1, w.k1, w.ov1)
    h1 = features_NxF + o1
    o2, att2 = head(h1, w.q2, w.k2, w.ov2)
    return {"h1": h1, "att1": att1, "att2": att2, "y": o2}


def sample_sequences(key: jax.Array, n: int, t_min: int, t_max: int, d_x: int):
    """n sequences padded to t_max + 1 positions; sequence i ends at T_i ~ U{t_min..t_max} and has
    [SEP] at p_i ~ U{1..T_i − 1}. Positions after T_i are never seen by query T_i (causal)."""
    k_t, k_p, k_x = jax.random.split(key, 3)
    lengths = jax.random.randint(k_t, (n,), t_min, t_max + 1)
    seps = jax.random.randint(k_p, (n,), 1, lengths)
    pos = jnp.arange(t_max + 1)
    is_bos = jnp.broadcast_to(pos == 0, (n, t_max + 1))
    is_sep = pos[None] == seps[:, None]
    is_content = ~is_bos & ~is_sep
    x = jnp.where(is_content[..., None], jax.random.normal(k_x, (n, t_max + 1, d_x)), 0.0)
    ind = jnp.stack([is_bos, is_sep, is_content, jnp.zeros_like(is_bos)], -1).astype(x.dtype)
    after = (pos[None] > seps[:, None]) & (pos[None] <= lengths[:, None])
    target = (x * after[..., None]).sum(1) / after.sum(1, keepdims=True)
    return jnp.concatenate([x, ind], -1), lengths, seps, target


@jax.jit
def evaluate(w: Weights, features, lengths, seps, target) -> dict[str, jax.Array]:
    """Per sequence: relative error of y_T and the layer-1 SEP sink score (mean over p < t ≤ T of
    A¹[t, p])."""

    def one(f, t_len, p, y_star):
        out = forward(w, f)
        y = out["y"][t_len, : y_star.shape[0]]
        rel = jnp.linalg.norm(y - y_star) / jnp.linalg.norm(y_star)
        pos = jnp.arange(f.shape[0])
        after = (pos > p) & (pos <= t_len)
        sink = (out["att1"][:, p] * after).sum() / after.sum()
        return rel, sink

    rel, sink = jax.vmap(one)(features, lengths, seps, target)
    return {"rel_error": rel, "sep_sink_score": sink}


def median_error(cfg, alpha, data, gamma: float | None = None) -> tuple[float, float]:
    """Median relative error and the smallest SEP sink score; γ = α unless given."""
    w = construction(cfg.d_x, alpha, alpha if gamma is None else gamma, cfg.a_sep, cfg.a_bos)
    res = evaluate(jax.tree.map(jnp.asarray, w), *data)
    return float(jnp.median(res["rel_error"])), float(jnp.min(res["sep_sink_score"]))


def alpha_needed(cfg, data, gamma: float | None, lo=1.0, hi=64.0, iters=24) -> float:
    """Smallest α with median relative error ≤ cfg.target_error (bisection to 4e-6; the error
    is monotone in α); γ = α when `gamma` is None."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        good = median_error(cfg, mid, data, gamma)[0] <= cfg.target_error
        lo, hi = (lo, mid) if good else (mid, hi)
    return hi


def log_fit(needed: dict[int, float]) -> dict[str, float]:
    """Least-squares α* = a + b ln T, with R²."""
    ln_t, y = np.log(list(needed)), np.array(list(needed.values()))
    slope, icpt = np.polyfit(ln_t, y, 1)
    resid = y - (slope * ln_t + icpt)
    r2 = 1 - (resid**2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300)
    return {"slope": float(slope), "intercept": float(icpt), "r2": float(r2)}


def run(cfg: ConstructionConfig, ctx: RunContext) -> dict[str, Any]:
    with jax.enable_x64(True):
        key = jax.random.key(cfg.seed)
        data = sample_sequences(key, cfg.n_sequences, cfg.t_min, cfg.t_max, cfg.d_x)
        errors, sinks = {}, {}
        for a in cfg.alphas:
            errors[a], sinks[a] = median_error(cfg, a, data)
        w = construction(cfg.d_x, 16.0, 16.0, cfg.a_sep, cfg.a_bos)
        ranks = [
            int(np.linalg.matrix_rank(q @ k.T, tol=1e-10)) for q, k in ((w.q1, w.k1), (w.q2, w.k2))
        ]
        # Two sweeps: α = γ together, and α alone with the release held strong (γ fixed).
        by_t, needed = {}, {"α = γ": {}, f"γ = {cfg.sweep_gamma:g}": {}}
        for t in cfg.sweep_t:
            d_t = sample_sequences(jax.random.fold_in(key, t), cfg.n_sequences, t, t, cfg.d_x)
            by_t[t] = [median_error(cfg, a, d_t)[0] for a in cfg.alphas]
            needed["α = γ"][t] = alpha_needed(cfg, d_t, None)
            needed[f"γ = {cfg.sweep_gamma:g}"][t] = alpha_needed(cfg, d_t, cfg.sweep_gamma)
    fits = {k: log_fit(n) for k, n in needed.items()}
    tied, catch = fits["α = γ"], fits[f"γ = {cfg.sweep_gamma:g}"]
    ordered = [errors[a] for a in sorted(cfg.alphas)]
    strictly_down = all(b < a or b == 0.0 for a, b in itertools.pairwise(ordered))
    claims = [
        check(
            "median_rel_error_alpha16",
            errors.get(16.0),
            "<=",
            1e-6,
            "1.9e-7 (reference)",
            kind="construction",
        ),
        check(
            "median_rel_error_alpha32",
            errors.get(32.0),
            "<=",
            1e-12,
            "1.8e-14 (reference)",
            kind="construction",
        ),
        check(
            "error_decreases_with_alpha",
            int(strictly_down),
            "==",
            1,
            "monotone in α",
            kind="construction",
        ),
        # built so: SEP takes ≥ 1 − ε₁ of layer 1's attention
        check(
            "min_sep_sink_score_alpha_ge_8",
            min(s for a, s in sinks.items() if a >= 8),
            ">=",
            0.999,
            "SEP catches the span",
            kind="construction",
        ),
        check("rank_layer1_qk", ranks[0], "==", 1, "rank 1", kind="construction"),
        check("rank_layer2_qk", ranks[1], "==", 1, "rank 1", kind="construction"),
        # α* = a + b ln T fitted to the bisection results. With α = γ the error is dominated by
        # layer 2's leak onto the p untagged tokens, ≈ sqrt(p / (T − p)) e^{−γ}: scale-free in T,
        # so α* stays flat (reported, no claim). With the release held strong, the error comes
        # from the catch: tags τ_s = A¹[s, p] differ by ≈ T e^{−α a_S} across s, so
        # α* ≈ (ln T + const) / a_S.
        # follows from the built catch: its leak is ≈ T e^{−α a_S} (comment above)
        check(
            f"catch_alpha_needed_vs_ln_T_r2_gamma{cfg.sweep_gamma:g}",
            catch["r2"],
            ">=",
            0.95,
            "α needed grows like log T",
            kind="construction",
        ),
        check(
            f"catch_alpha_needed_vs_ln_T_slope_gamma{cfg.sweep_gamma:g}",
            catch["slope"],
            "in",
            (0.5 / cfg.a_sep, 2.0 / cfg.a_sep),
            "≈ 1/a_S per unit ln T (ours)",
            kind="construction",
        ),
    ]
    reference = {4.0: 3.9e-2, 8.0: 5.5e-4, 16.0: 1.9e-7, 32.0: 1.8e-14}
    tables = {
        f"Median relative error, T in [{cfg.t_min}, {cfg.t_max}], α = γ": [
            {
                "α = γ": a,
                "median rel. error": errors[a],
                "reference (numpy)": reference.get(a),
                "min SEP sink score": sinks[a],
            }
            for a in cfg.alphas
        ],
        f"α needed for median error ≤ {cfg.target_error:g}": [
            {
                "T": t,
                "α* (α = γ)": needed["α = γ"][t],
                f"α* (γ = {cfg.sweep_gamma:g})": needed[f"γ = {cfg.sweep_gamma:g}"][t],
                f"fit (γ = {cfg.sweep_gamma:g})": catch["slope"] * np.log(t) + catch["intercept"],
            }
            for t in cfg.sweep_t
        ],
    }
    figures = make_figures(ctx, cfg, by_t, needed, fits)
    return {
        "claims": claims,
        "median_rel_error": {str(a): e for a, e in errors.items()},
        "alpha_needed": {k: {str(t): a for t, a in n.items()} for k, n in needed.items()},
        "fit_a_plus_b_ln_T": fits,
        "alpha_eq_gamma_fit_slope": tied["slope"],
        "tables": tables,
        "figures": figures,
    }


def make_figures(ctx, cfg, by_t, needed, fits) -> list[str]:
    plt = plotting.plt
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
    for t, errs in by_t.items():
        axes[0].semilogy(cfg.alphas, np.maximum(errs, 1e-17), marker="o", ms=3, label=f"T = {t}")
    axes[0].axhline(cfg.target_error, color="gray", ls="--", lw=0.8)
    axes[0].set(xlabel="α = γ", ylabel="median relative error", title="error vs sink strength")
    axes[0].legend(frameon=False, fontsize=7)
    for name, n in needed.items():
        ts = np.array(list(n))
        f = fits[name]
        (line,) = axes[1].semilogx(ts, list(n.values()), "o", label=name)
        axes[1].semilogx(
            ts,
            f["slope"] * np.log(ts) + f["intercept"],
            "--",
            lw=0.9,
            color=line.get_color(),
            label=f"{f['slope']:.2f}·ln T + {f['intercept']:.1f}",
        )
    axes[1].set(xlabel="T", ylabel=f"α needed (error ≤ {cfg.target_error:g})", title="α* vs T")
    axes[1].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return ctx.save_figure(fig, "construction_error")


EXPERIMENT = Experiment("ctr_construction", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
