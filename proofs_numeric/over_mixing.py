"""Sinks prevent over-mixing: numerical checks of Barbero et al. 2025 (arXiv 2504.02732).

Attention mixes token representations; over depth and context, mixing drives them together (rank
collapse, Dong et al. 2021; representational collapse, Barbero et al. 2024). A head that attends
to a sink whose value is ≈ 0 does (almost) nothing, so the sink limits mixing. Every check runs on
the toy of `proofs_numeric.mixing_toy` in float64 with exact autodiff (jax.jacrev), no finite
differences. Checks: (1) rank collapse without a sink; (2) a sink slows it, monotonically in the
sink mass; (3) deeper needs a stronger sink; (4) the mixing Jacobian; (5) longer context needs a
larger sink logit, b(n) ∝ ln n; (6) why the first token; (7) representational collapse with
context; (8) a Jacobian bound that holds.

Bound of check 8 (one pre-LN softmax layer, z_j = LN(x_j), v_j = W_V^T z_j, scores
s_nj = z_n^T W_Q W_K^T z_j / √d, A = softmax). For i < n,
∂y_n/∂x_i = ∂(Σ_j A_nj v_j)/∂z_i · J_LN(x_i), and ∂A_nj/∂z_i = A_nj (δ_ij − A_ni) ∂s_ni/∂z_i, so
    ∂y_n/∂x_i = A_ni [W_V^T + (v_i − v̄_n) (W_K W_Q^T z_n / √d)^T] J_LN(x_i),   v̄_n = Σ_j A_nj v_j.
With ‖v_i − v̄_n‖ ≤ ‖W_V‖ ‖z_i − z̄_n‖ (z̄_n = Σ_j A_nj z_j) and sub-multiplicativity (spectral norms):
    ‖∂y_n/∂x_i‖ ≤ A_ni ‖W_V‖ (1 + ‖z_i − z̄_n‖ ‖z_n‖ ‖W_Q‖ ‖W_K‖ / √d) ‖J_LN(x_i)‖.
The bound is linear in the attention weight A_ni: a sink that takes mass from token i shrinks it.

    python -m proofs_numeric.over_mixing --preset quick
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from proofs_numeric import mixing_toy as toy
from proofs_numeric.mixing_toy import NO_SINK, REGULAR, Sink
from sinks_jax import metrics, plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import require


@dataclasses.dataclass(frozen=True)
class OverMixingConfig:
    seed: int = 0
    seeds: int = 5
    d: int = 32
    n: int = 64
    max_depth: int = 64
    shared_weights: bool = True
    w_v: str = "identity"  # identity | orthogonal
    a_values: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99)
    b_values: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0)
    bisect_depths: tuple[int, ...] = (8, 16, 32, 64)
    mu_target: float = 0.5
    sensitivity_depths: tuple[int, ...] = (1, 2, 4, 8, 16)
    sensitivity_n: int = 32
    context_ns: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    context_b: float = 4.0
    context_seeds: int = 3
    influence_depths: tuple[int, ...] = (1, 2, 4, 8)
    collapse_ns: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    bound_instances: int = 1000

    def __post_init__(self) -> None:
        require(
            self.w_v in ("identity", "orthogonal"), "w_v", self.w_v, "('identity', 'orthogonal')"
        )
        require(self.seeds > 0 and self.context_seeds > 0, "seeds", self.seeds, "> 0")
        require(
            max(self.bisect_depths) <= self.max_depth,
            "bisect_depths",
            self.bisect_depths,
            f"depths <= max_depth={self.max_depth}",
        )


PRESETS = {
    "quick": OverMixingConfig(),
    "paper": OverMixingConfig(
        seeds=20,
        d=64,
        n=128,
        max_depth=128,
        bisect_depths=(8, 16, 32, 64, 128),
        sensitivity_n=64,
        context_ns=(16, 32, 64, 128, 256, 512, 1024, 2048),
        context_seeds=10,
        bound_instances=5000,
    ),
}
NOTES = {
    "quick": "d 32, n 64, depth ≤ 64, 5 seeds, contexts 16…512 (a few minutes on a CPU)",
    "paper": "d 64, n 128, depth ≤ 128, 20 seeds, contexts 16…2048",
}


# ---------------------------------------------------------------------------------------------
# Helpers


def _instances(cfg: OverMixingConfig, n: int, depth: int, seeds: int):
    """[(weights, x)] for `seeds` random draws: BOS + n tokens, x ~ N(0, I)."""
    out = []
    for s in range(seeds):
        kw, kx = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), s))
        out.append(
            (
                toy.random_weights(kw, cfg.d, depth, cfg.shared_weights, cfg.w_v),
                jax.random.normal(kx, (n + 1, cfg.d)),
            )
        )
    return out


def _mu_curve(instances, sink: Sink) -> np.ndarray:
    """Seed-mean token uniformity of the non-BOS tokens after 0..L layers."""
    curves = []
    for w, x in instances:
        _, stream = toy.forward(x, w, sink, collect=True)
        curves.append(jax.vmap(lambda s: toy.token_uniformity(s[1:]))(stream))
    return np.mean(np.asarray(curves), axis=0)


def _bisect(f, lo: float, hi: float, iters: int = 30) -> float:
    """Smallest x in [lo, hi] with f(x) True, for f monotone False -> True."""
    if f(lo):
        return lo
    if not f(hi):
        return float("nan")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if f(mid) else (mid, hi)
    return hi


def _slope(x, y) -> tuple[float, float]:
    """Least-squares slope and R²."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    return float(slope), float(1 - resid.var() / y.var()) if y.var() > 0 else 1.0


def _strictly_increasing(v) -> bool:
    return bool(np.all(np.diff(np.asarray(v)) > 0))


# ---------------------------------------------------------------------------------------------
# Checks


def rank_collapse(cfg: OverMixingConfig) -> dict[str, Any]:
    """Checks 1-3: μ vs depth with/without a sink, per-layer rate, required sink vs depth."""
    inst = _instances(cfg, cfg.n, cfg.max_depth, cfg.seeds)
    mass = {a: _mu_curve(inst, Sink("mass", a)) for a in cfg.a_values}
    logit = {b: _mu_curve(inst, Sink("logit", b=b)) for b in cfg.b_values}
    half = min(32, cfg.max_depth)
    rates = {a: _slope(np.arange(half + 1), np.log(mass[a][: half + 1]))[0] for a in mass}

    def required(make_sink, lo, hi):
        out = {}
        for depth in cfg.bisect_depths:
            sub = [({k: v[:depth] for k, v in w.items()}, x) for w, x in inst]
            out[depth] = _bisect(
                lambda s, sub=sub: _mu_curve(sub, make_sink(s))[-1] >= cfg.mu_target,
                lo,
                hi,
                iters=20,
            )
        return out

    req_a = required(lambda a: Sink("mass", a), 0.0, 0.999)
    req_b = required(lambda b: Sink("logit", b=b), -8.0, 20.0)
    return {
        "mu_by_a": mass,
        "mu_by_b": logit,
        "rate_by_a": rates,
        "required_a": req_a,
        "required_b": req_b,
    }


def sensitivity(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 4: mixing ratio M of the last token vs sink mass and depth; the L = 1 identity."""
    depth_max = max(cfg.sensitivity_depths)
    inst = _instances(cfg, cfg.sensitivity_n, depth_max, cfg.seeds)
    m = {}
    for depth in cfg.sensitivity_depths:
        for a in cfg.a_values:
            vals = [
                toy.mixing_ratio(toy.last_token_jacobian(x, w, Sink("mass", a), depth=depth))
                for w, x in inst
            ]
            m[(depth, a)] = float(np.mean(vals))
    # identity at L = 1: for i < n the Jacobian is the attention part, scaled exactly by (1 - a)
    w, x = inst[0]
    base = toy.last_token_jacobian(x, w, NO_SINK, depth=1)[:-1]
    errs = []
    for a in cfg.a_values[1:]:
        scaled = toy.last_token_jacobian(x, w, Sink("mass", a), depth=1)[:-1]
        errs.append(float(jnp.abs(scaled - (1 - a) * base).max() / jnp.abs(base).max()))
    return {"mixing": m, "identity_max_rel_error": max(errs)}


def context_length(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 5: M grows with n at fixed b; the b(n) holding M at its n = 16 value grows ∝ ln n."""
    out: dict[str, Any] = {}
    for depth in (1, 4):
        per_n = {n: _instances(cfg, n, depth, cfg.context_seeds) for n in cfg.context_ns}

        def mean_m(n, b, per_n=per_n):
            return float(
                np.mean(
                    [
                        toy.mixing_ratio(toy.last_token_jacobian(x, w, Sink("logit", b=b)))
                        for w, x in per_n[n]
                    ]
                )
            )

        m_fixed = [mean_m(n, cfg.context_b) for n in cfg.context_ns]
        target = m_fixed[0]
        b_needed = [cfg.context_b] + [
            _bisect(
                lambda b, n=n, target=target: mean_m(n, b) <= target,
                cfg.context_b,
                cfg.context_b + 20,
                iters=16,
            )
            for n in cfg.context_ns[1:]
        ]
        slope, r2 = _slope(np.log(cfg.context_ns), b_needed)
        out[depth] = {"m_fixed_b": m_fixed, "b_needed": b_needed, "slope": slope, "r2": r2}
    return out


def first_token(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 6: influence of token i on the last token; exact for x <- x + A x (uniform A)."""
    n = cfg.n
    a_uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    linear = {}
    for depth in cfg.influence_depths:
        row = np.linalg.matrix_power(np.eye(n) + a_uniform, depth)[n - 1, : n - 1]
        linear[depth] = {
            "influence": row,
            "ratio": float(row[0] / row[-1]),
            "spearman": metrics.spearman(np.arange(n - 1), row),
        }
    w, x = _instances(cfg, n - 1, 8, 1)[0]
    jac = toy.last_token_jacobian(x, w, REGULAR, depth=8)
    softmax_infl = np.asarray(jnp.linalg.norm(jac, axis=(1, 2)))[: n - 1]
    return {
        "linear": linear,
        "softmax_influence_L8": softmax_infl,
        "softmax_spearman_L8": metrics.spearman(np.arange(n - 1), softmax_infl),
    }


def representational_collapse(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 7: last-token distance between sequences differing in one middle token (a) or in
    one extra repeat (b), one layer without positions; also with a sink and with 4 layers."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), 7)
    bos, t, t2, u = jax.random.normal(key, (4, cfg.d))
    w4 = toy.random_weights(jax.random.fold_in(key, 1), cfg.d, 4, cfg.shared_weights, cfg.w_v)

    def last(seq, sink, depth):
        return toy.forward(jnp.stack(seq), w4, sink, depth=depth)[-1]

    out = {}
    for name, sink, depth in (
        ("no sink, 1 layer", REGULAR, 1),
        ("sink a=0.5, 1 layer", Sink("mass", 0.5), 1),
        ("no sink, 4 layers", REGULAR, 4),
    ):
        dist_a, dist_b = [], []
        for n in cfg.collapse_ns:
            base = [bos] + [t] * n + [u]
            changed = list(base)
            changed[1 + n // 2] = t2
            longer = [bos] + [t] * (n + 1) + [u]
            y = last(base, sink, depth)
            dist_a.append(float(jnp.linalg.norm(y - last(changed, sink, depth))))
            dist_b.append(float(jnp.linalg.norm(y - last(longer, sink, depth))))
        logn = np.log(cfg.collapse_ns)
        out[name] = {
            "dist_changed": dist_a,
            "dist_longer": dist_b,
            "slope_changed": _slope(logn, np.log(dist_a))[0],
            "slope_longer": _slope(logn, np.log(dist_b))[0],
        }
    return out


def jacobian_bound(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 8: measured ‖∂y_n/∂x_i‖₂ vs the docstring's bound on random one-layer instances."""
    n, d = 16, 16

    @jax.jit
    def one(key):
        kw, kx, ks = jax.random.split(key, 3)
        scale = jnp.exp(jax.random.uniform(ks, (3,), minval=-1.5, maxval=1.5))
        w = toy.random_weights(kw, d, 1, True, "orthogonal")
        w = {
            "wq": w["wq"] * scale[0],
            "wk": w["wk"] * scale[1],
            "wv": w["wv"] * scale[2] + 0.3 * jax.random.normal(kw, (1, d, d)) / jnp.sqrt(d),
        }
        x = jax.random.normal(kx, (n, d)) * scale[0] + jax.random.normal(ks, (d,))
        jac = toy.last_token_jacobian(x, w, REGULAR, depth=1)[:-1]  # i < n (attention only)
        measured = jnp.linalg.norm(jac, ord=2, axis=(1, 2))
        z = toy.layer_norm(x)
        att = toy.attention_weights(z, w["wq"][0], w["wk"][0], REGULAR)[-1]
        zbar = att @ z
        j_ln = jax.vmap(jax.jacfwd(lambda v: toy.layer_norm(v[None])[0]))(x[:-1])
        spec = lambda m: jnp.linalg.norm(m, ord=2)  # noqa: E731
        bound = (
            att[:-1]
            * spec(w["wv"][0])
            * (
                1
                + jnp.linalg.norm(z[:-1] - zbar, axis=-1)
                * jnp.linalg.norm(z[-1])
                * spec(w["wq"][0])
                * spec(w["wk"][0])
                / jnp.sqrt(d)
            )
            * jnp.linalg.norm(j_ln, ord=2, axis=(1, 2))
        )
        return measured, bound

    keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 8), cfg.bound_instances)
    measured, bound = jax.lax.map(one, keys)
    measured, bound = np.asarray(measured).ravel(), np.asarray(bound).ravel()
    ok = measured > 1e-300
    ratio = bound[ok] / measured[ok]
    return {
        "violations": int((measured > bound * (1 + 1e-9)).sum()),
        "pairs": int(ok.sum()),
        "median_ratio": float(np.median(ratio)),
        "min_ratio": float(ratio.min()),
    }


# ---------------------------------------------------------------------------------------------
# Run


def run(cfg: OverMixingConfig, ctx: RunContext) -> dict[str, Any]:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with jax.enable_x64(True):
        rc = rank_collapse(cfg)
        sens = sensitivity(cfg)
        ctxlen = context_length(cfg)
        first = first_token(cfg)
        collapse = representational_collapse(cfg)
        bound = jacobian_bound(cfg)
    claims = make_claims(cfg, rc, sens, ctxlen, first, collapse, bound)
    figures = make_figures(ctx, cfg, rc, sens, ctxlen, first, collapse)
    a0 = cfg.a_values[0]
    rate_rows = [
        {
            "a": a,
            "rate (slope of ln μ, L=0..32)": r,
            "first-order (1-a)·rate(0)": (1 - a) * rc["rate_by_a"][a0],
        }
        for a, r in rc["rate_by_a"].items()
    ]
    return {
        "claims": claims,
        "figures": figures,
        "rank_collapse": {
            "mu_L_by_a": {str(a): v[-1] for a, v in rc["mu_by_a"].items()},
            "mu_L_by_b": {str(b): v[-1] for b, v in rc["mu_by_b"].items()},
            "required_a": rc["required_a"],
            "required_b": rc["required_b"],
        },
        "sensitivity": {f"L={d},a={a}": v for (d, a), v in sens["mixing"].items()},
        "context_length": ctxlen,
        "first_token": {
            "linear": {
                d: {"ratio": v["ratio"], "spearman": v["spearman"]}
                for d, v in first["linear"].items()
            },
            "softmax_spearman_L8": first["softmax_spearman_L8"],
        },
        "representational_collapse": collapse,
        "jacobian_bound": bound,
        "tables": {"Per-layer collapse rate vs sink mass": rate_rows},
    }


def make_claims(cfg, rc, sens, ctxlen, first, collapse, bound):
    a0, mu0 = cfg.a_values[0], rc["mu_by_a"][cfg.a_values[0]]
    mu_end = [rc["mu_by_a"][a][-1] for a in cfg.a_values]
    rates = [abs(rc["rate_by_a"][a]) for a in cfg.a_values]
    req_a = [rc["required_a"][d] for d in cfg.bisect_depths]
    m = sens["mixing"]
    depths = cfg.sensitivity_depths
    decreasing_in_a = all(np.all(np.diff([m[(d, a)] for a in cfg.a_values]) < 0) for d in depths)
    lin = first["linear"]
    lin_ratios = [lin[d]["ratio"] for d in cfg.influence_depths]
    mono_l2 = all(lin[d]["spearman"] <= -0.999 for d in cfg.influence_depths if d >= 2)
    c1 = ctxlen[1]
    nc = collapse["no sink, 1 layer"]
    return [
        check(
            "rank_collapse_mu_L_over_mu_0_no_sink",
            mu0[-1] / mu0[0],
            "<=",
            0.3,
            "μ → 0 with depth (ref. 0.99 → 0.14)",
        ),
        check(
            "mu_at_max_depth_strictly_increasing_in_a",
            int(_strictly_increasing(mu_end)),
            "==",
            1,
            "a sink slows collapse",
        ),
        check(
            "collapse_rate_magnitude_decreasing_in_a",
            int(np.all(np.diff(rates) < 0)),
            "==",
            1,
            "rate ∝ (1 − a) to first order",
        ),
        check(
            "required_a_nondecreasing_in_depth",
            int(np.all(np.diff(req_a) >= 0)),
            "==",
            1,
            "deeper models need stronger sinks",
        ),
        check(
            "required_a_deepest_minus_shallowest",
            req_a[-1] - req_a[0],
            ">",
            0.0,
            "strictly larger at L = 64 than L = 8",
        ),
        check(
            "identity_L1_attention_jacobian_scales_by_1_minus_a",
            sens["identity_max_rel_error"],
            "<=",
            1e-10,
            "exact identity",
        ),
        check(
            "mixing_ratio_decreasing_in_a_every_depth",
            int(decreasing_in_a),
            "==",
            1,
            "a sink reduces mixing",
        ),
        check(
            "mixing_ratio_increasing_in_depth_no_sink",
            int(_strictly_increasing([m[(d, a0)] for d in depths])),
            "==",
            1,
            "deeper mixes more",
        ),
        check(
            "mixing_ratio_increasing_in_context_L1",
            int(_strictly_increasing(c1["m_fixed_b"])),
            "==",
            1,
            "longer context mixes more (ref. 0.58 → 1.33)",
        ),
        check("b_of_n_slope_vs_ln_n_L1_low", c1["slope"], ">=", 0.5, "slope 1 (ref. 0.94)"),
        check("b_of_n_slope_vs_ln_n_L1_high", c1["slope"], "<=", 1.5, "slope 1 (ref. 0.94)"),
        check("b_of_n_fit_r2_L1", c1["r2"], ">=", 0.9, "R² 0.989"),
        check(
            "influence_decreasing_in_position_linear_L_ge_2",
            int(mono_l2),
            "==",
            1,
            "Spearman ρ = −1",
        ),
        check(
            "influence_ratio_first_over_last_increasing_in_depth",
            int(_strictly_increasing(lin_ratios)),
            "==",
            1,
            "1.0, 3.3, 24.5, 654",
        ),
        check(
            "influence_spearman_softmax_L8",
            first["softmax_spearman_L8"],
            "<=",
            -0.8,
            "first token is where mixing piles up",
        ),
        check(
            "collapse_slope_one_token_changed_low",
            nc["slope_changed"],
            ">=",
            -1.3,
            "distance ∝ 1/n (ref. −0.94)",
        ),
        check(
            "collapse_slope_one_token_changed_high",
            nc["slope_changed"],
            "<=",
            -0.7,
            "distance ∝ 1/n (ref. −0.94)",
        ),
        check(
            "collapse_slope_one_more_repeat_low",
            nc["slope_longer"],
            ">=",
            -2.3,
            "distance ∝ 1/n² (ref. −1.93)",
        ),
        check(
            "collapse_slope_one_more_repeat_high",
            nc["slope_longer"],
            "<=",
            -1.7,
            "distance ∝ 1/n² (ref. −1.93)",
        ),
        check(
            "jacobian_bound_violations",
            bound["violations"],
            "==",
            0,
            f"0 of {bound['pairs']} (token, instance) pairs",
        ),
    ]


def make_figures(ctx, cfg, rc, sens, ctxlen, first, collapse) -> list[str]:
    plt = plotting.plt
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.6))
    depth = np.arange(cfg.max_depth + 1)
    for a, mu in rc["mu_by_a"].items():
        axes[0].plot(depth, mu, label=f"a = {a}")
    for b, mu in rc["mu_by_b"].items():
        axes[1].plot(depth, mu, label=f"b = {b}")
    axes[1].plot(depth, rc["mu_by_a"][cfg.a_values[0]], "k--", label="no sink")
    for ax, title in zip(axes, ("exact sink mass a", "sink logit gap b"), strict=True):
        ax.set(yscale="log", xlabel="depth L", ylabel="token uniformity μ", title=title)
        ax.legend(frameon=False, fontsize=6)
    fig.tight_layout()
    files += ctx.save_figure(fig, "mu_vs_depth")

    fig, axes = plt.subplots(1, 2, figsize=(6.0, 2.4))
    axes[0].plot(cfg.bisect_depths, [rc["required_a"][d] for d in cfg.bisect_depths], "o-")
    axes[1].plot(cfg.bisect_depths, [rc["required_b"][d] for d in cfg.bisect_depths], "o-")
    for ax, name in zip(axes, ("required mass a", "required logit b"), strict=True):
        ax.set(
            xscale="log",
            xlabel="depth L",
            ylabel=name,
            title=f"smallest sink keeping μ(L) ≥ {cfg.mu_target}",
        )
    fig.tight_layout()
    files += ctx.save_figure(fig, "required_sink_vs_depth")

    fig, ax = plt.subplots(figsize=(3.4, 2.6))
    for d in cfg.sensitivity_depths:
        ax.plot(cfg.a_values, [sens["mixing"][(d, a)] for a in cfg.a_values], "o-", label=f"L={d}")
    ax.set(yscale="log", xlabel="sink mass a", ylabel="mixing ratio M (Frobenius)")
    ax.legend(frameon=False, fontsize=6)
    files += ctx.save_figure(fig, "mixing_vs_sink_mass")

    fig, ax = plt.subplots(figsize=(3.6, 2.8))
    logn = np.log(cfg.context_ns)
    for depth, res in ctxlen.items():
        label = f"L={depth}: slope {res['slope']:.2f}, R² {res['r2']:.3f}"
        (points,) = ax.plot(logn, res["b_needed"], "o", label=label)
        fit = np.polyval(np.polyfit(logn, res["b_needed"], 1), logn)
        ax.plot(logn, fit, "--", lw=0.8, color=points.get_color())
    ax.set(
        xlabel="ln n (context length)",
        ylabel="sink logit b(n) holding M fixed",
        title="b(n) ∝ ln n — the same log law as α ∝ ln t\n(Guo et al. mutual reinforcement)",
    )
    ax.legend(frameon=False, fontsize=6)
    files += ctx.save_figure(fig, "sink_logit_vs_context")

    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    for d, res in first["linear"].items():
        ax.plot(res["influence"], label=f"L={d} (linear, uniform)")
    ax.plot(first["softmax_influence_L8"], "k:", label="L=8 softmax (pre-LN)")
    ax.set(
        yscale="log",
        xlabel="input position i",
        ylabel="‖∂y_n/∂x_i‖",
        title="influence on the last token",
    )
    ax.legend(frameon=False, fontsize=6)
    files += ctx.save_figure(fig, "influence_vs_position")

    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.6))
    for name, res in collapse.items():
        axes[0].loglog(
            cfg.collapse_ns, res["dist_changed"], "o-", label=f"{name} ({res['slope_changed']:.2f})"
        )
        axes[1].loglog(
            cfg.collapse_ns, res["dist_longer"], "o-", label=f"{name} ({res['slope_longer']:.2f})"
        )
    axes[0].set(title="one middle token changed", xlabel="n", ylabel="‖Δ y_last‖")
    axes[1].set(title="one more repeat", xlabel="n", ylabel="‖Δ y_last‖")
    for ax in axes:
        ax.legend(frameon=False, fontsize=6)
    fig.tight_layout()
    files += ctx.save_figure(fig, "representational_collapse")
    return files


EXPERIMENT = Experiment("over_mixing", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
