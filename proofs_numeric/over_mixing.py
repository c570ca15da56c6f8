"""Sinks prevent over-mixing: numerical checks of Barbero et al. 2025 (arXiv 2504.02732).

Attention mixes token representations; over depth and context, mixing drives them together (rank
collapse, Dong et al. 2021; representational collapse, Barbero et al. 2024). A head that attends
to a sink whose value is ≈ 0 does (almost) nothing, so the sink limits mixing. Every check runs on
the toy of `proofs_numeric.mixing_toy` in float64 with exact autodiff (jax.jacrev), no finite
differences, with fresh weights per layer and claims on the median over many random draws (90 %
bootstrap interval and per-draw spread in the tables). Checks: (0) pure attention (no residual, no
MLP; Dong et al.'s setting): μ → 0, and a zero-value sink does not change μ; (1) in the pre-LN
residual toy, collapse is a slow dilution; (2) a sink slows it: it rescales depth by 1/(1 − a);
(3) deeper needs a stronger sink; (4) the mixing Jacobian; (5) longer context needs a larger sink
logit, b(n) ∝ ln n; (6) why the first token; (7) representational collapse with context; (8) a
Jacobian bound that holds.

Check 0. With scale-free queries/keys, a mass-a sink with value 0 maps A x W_V to (1 − a) A x W_V
and leaves the next layer's attention unchanged, so x_L(a) = (1 − a)^L x_L(0) exactly and
μ(x_L(a)) = μ(x_L(0)). In floating point the difference is rounding: |Δμ| ~ L·ε (absolute; a
difference relative to μ(L) itself would be amplified by 1/μ(L)).

Check 2. A mass-a sink turns x <- x + f(x) into x <- x + (1 − a) f(x): an Euler step h = 1 − a of
the same flow, so the depth D(a) to reach a fixed μ* obeys D(a)·(1 − a) = T* + O(1 − a). The claim
is that depth scales with exponent 1 in 1/(1 − a), closer to 1 than to its neighbours 1/2 or 3/2:
max/min of D(a)·(1 − a) over 0 ≤ a ≤ a_max at most (1/(1 − a_max))^(1/4). ln μ is not linear in
depth (the curves approach a plateau), so no global slope is a rate. The early rate (slope of ln μ
over the first layers) must decrease strictly in a; it is not ∝ (1 − a): μ starts flat in depth
(the common component grows linearly, so 1 − μ is quadratic at first), and over a fixed window of
layers the slope falls faster than (1 − a).

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
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from proofs_numeric import mixing_toy as toy
from proofs_numeric.mixing_toy import NO_SINK, REGULAR, Sink
from sinks_jax import metrics, plotting
from sinks_jax.claims import Claim, check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import require


@dataclasses.dataclass(frozen=True)
class OverMixingConfig:
    seed: int = 0
    draws: int = 20  # random (weights, input) draws; claims on the median
    d: int = 32
    n: int = 64
    max_depth: int = 64
    pure_depth: int = 16  # depth of the pure-attention stack (check 0)
    shared_weights: bool = False
    w_v: str = "identity"  # identity | orthogonal
    a_values: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99)
    b_values: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0)
    bisect_depths: tuple[int, ...] = (8, 16, 32, 64)
    mu_target: float = 0.5
    mu_star: float = 0.8  # level of the depth-to-μ* rescaling check
    rescale_a_max: float = 0.9  # a ≤ this enter the rescaling check
    early_depth: int = 4  # early rate: slope of ln μ over L = 0..early_depth
    sensitivity_depths: tuple[int, ...] = (1, 2, 4, 8, 16)
    sensitivity_n: int = 32
    context_ns: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    context_b: float = 4.0
    context_draws: int = 3
    influence_depths: tuple[int, ...] = (1, 2, 4, 8)
    influence_draws: int = 10
    collapse_ns: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    bound_instances: int = 1000
    n_boot: int = 2000  # bootstrap resamples of the median

    def __post_init__(self) -> None:
        require(
            self.w_v in ("identity", "orthogonal"), "w_v", self.w_v, "('identity', 'orthogonal')"
        )
        for name in ("draws", "context_draws", "influence_draws", "n_boot", "pure_depth"):
            require(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        require(
            max(self.bisect_depths) <= self.max_depth,
            "bisect_depths",
            self.bisect_depths,
            f"depths <= max_depth={self.max_depth}",
        )
        require(
            0 < self.early_depth <= self.max_depth,
            "early_depth",
            self.early_depth,
            f"in 1..max_depth={self.max_depth}",
        )
        require(
            sum(a <= self.rescale_a_max for a in self.a_values) >= 2 and self.rescale_a_max < 1,
            "rescale_a_max",
            self.rescale_a_max,
            "< 1, with at least two a_values ≤ it",
        )


PRESETS = {
    "quick": OverMixingConfig(),
    "paper": OverMixingConfig(
        draws=50,
        d=64,
        n=128,
        max_depth=128,
        bisect_depths=(8, 16, 32, 64, 128),
        sensitivity_n=64,
        context_ns=(16, 32, 64, 128, 256, 512, 1024, 2048),
        context_draws=10,
        influence_draws=20,
        bound_instances=5000,
    ),
}
NOTES = {
    "quick": "d 32, n 64, depth ≤ 64, 20 draws, contexts 16…512 (a few minutes on a CPU)",
    "paper": "d 64, n 128, depth ≤ 128, 50 draws, contexts 16…2048",
}


# ---------------------------------------------------------------------------------------------
# Helpers


def _instances(cfg: OverMixingConfig, n: int, depth: int, draws: int):
    """Batched draws: weights {name: [N,L,d,d]} and x [N,n+1,d] (BOS + n tokens, x ~ N(0, I))."""
    ws, xs = [], []
    for s in range(draws):
        kw, kx = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), s))
        ws.append(toy.random_weights(kw, cfg.d, depth, cfg.shared_weights, cfg.w_v))
        xs.append(jax.random.normal(kx, (n + 1, cfg.d)))
    return jax.tree.map(lambda *a: jnp.stack(a), *ws), jnp.stack(xs)


def _draw(inst, i: int):
    """The i-th (weights, x) of a batch of draws."""
    w, x = inst
    return jax.tree.map(lambda v: v[i], w), x[i]


@functools.partial(jax.jit, static_argnames=("residual", "qk_norm"))
def _mu_curves_NxL(weights, x_NxTxD, sink: Sink, residual: bool = True, qk_norm: bool = True):
    """[N,L+1] token uniformity of the non-BOS tokens after 0..L layers, per draw."""

    def one(w, x):
        _, stream = toy.forward(x, w, sink, collect=True, residual=residual, qk_norm=qk_norm)
        return jax.vmap(lambda s: toy.token_uniformity(s[1:]))(stream)

    return jax.vmap(one)(weights, x_NxTxD)


def median_ci(values_NxK, n_boot: int, seed: int, level: float = 0.9):
    """Median over draws (axis 0) and its percentile-bootstrap `level` interval: three [K]
    arrays (scalars for 1-D input). Non-finite values count as +inf (e.g. 'never reached')."""
    v = np.asarray(values_NxK, float)
    v = np.where(np.isfinite(v), v, np.inf)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.shape[0], (n_boot, v.shape[0]))
    boots = np.median(v[idx], axis=1)
    q = [(1 - level) / 2, (1 + level) / 2]
    lo, hi = np.quantile(boots, q, axis=0, method="inverted_cdf")  # no interpolation with inf
    return np.median(v, axis=0), lo, hi


def depth_to_reach(mu_L: np.ndarray, level: float) -> float:
    """First (linearly interpolated) depth at which a μ curve [L+1] is ≤ level; inf if never."""
    mu_L = np.asarray(mu_L, float)
    below = np.nonzero(mu_L <= level)[0]
    if below.size == 0:
        return float("inf")
    k = int(below[0])
    if k == 0:
        return 0.0
    return float(k - 1 + (mu_L[k - 1] - level) / (mu_L[k - 1] - mu_L[k]))


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


def _spread(values, n_boot: int, seed: int) -> dict[str, float]:
    """Median, its 90 % bootstrap interval and the per-draw min/max of a 1-D sample."""
    med, lo, hi = median_ci(values, n_boot, seed)
    v = np.asarray(values, float)
    return {
        "median": float(med),
        "ci90_lo": float(lo),
        "ci90_hi": float(hi),
        "min": float(np.min(v)),
        "max": float(np.max(v)),
    }


# ---------------------------------------------------------------------------------------------
# Checks


def pure_attention(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 0: μ vs depth in the pure stack (no residual, no MLP), with and without a sink."""
    w, x = _instances(cfg, cfg.n, cfg.pure_depth, cfg.draws)
    mu = {
        a: np.asarray(_mu_curves_NxL(w, x, Sink("mass", a), residual=False)) for a in cfg.a_values
    }
    base = mu[cfg.a_values[0]]
    diff = max(float(np.abs(mu[a] - base).max()) for a in cfg.a_values[1:])
    rel = max(float((np.abs(mu[a] - base) / base).max()) for a in cfg.a_values[1:])
    # Dong et al.'s SAN without any normalisation: the sink's (1 - a) acts as a temperature
    raw = {
        a: np.asarray(_mu_curves_NxL(w, x, Sink("mass", a), residual=False, qk_norm=False))
        for a in (0.0, 0.5)
    }
    return {
        "mu_by_a_NxL": mu,
        "ratio_N": base[:, -1] / base[:, 0],
        "max_abs_diff_with_sink": diff,
        "max_rel_diff_with_sink": rel,
        "raw_mu_by_a_NxL": raw,
        "raw_ratio_by_a_N": {a: v[:, -1] / v[:, 0] for a, v in raw.items()},
    }


def pure_attention_claims(summ: dict[str, Any]) -> list[Claim]:
    """Pure attention collapses, and a zero-value sink cannot help (μ is scale-invariant)."""
    sp = summ["spread"]
    return [
        # Dong et al.'s bound depends on weight norms: the collapse of these draws is not forced
        check(
            "pure_attention_median_mu_L_over_mu_0_no_sink",
            sp["pure: μ(L)/μ(0), a = 0"]["median"],
            "<=",
            1e-2,
            "pure attention loses rank (doubly) exponentially with depth (Dong et al. 2021)",
            kind="reproduction",
        ),
        check(
            "pure_attention_mass_sink_max_abs_change_of_mu",
            summ["pure_max_abs_diff"],
            "<=",
            1e-10,
            "a zero-value sink only rescales A·X; μ is scale-invariant: no help without residual",
            kind="identity",
        ),
    ]


def rank_collapse(cfg: OverMixingConfig) -> dict[str, Any]:
    """Checks 1-3 (pre-LN residual stack): μ vs depth per draw for each sink, depth to μ*, the
    early rate, the smallest sink keeping the median μ(L) ≥ μ_target."""
    w, x = _instances(cfg, cfg.n, cfg.max_depth, cfg.draws)
    mass = {a: np.asarray(_mu_curves_NxL(w, x, Sink("mass", a))) for a in cfg.a_values}
    logit = {b: np.asarray(_mu_curves_NxL(w, x, Sink("logit", b=b))) for b in cfg.b_values}
    early = np.arange(cfg.early_depth + 1)
    rate = {
        a: np.array([_slope(early, np.log(c[: cfg.early_depth + 1]))[0] for c in curves])
        for a, curves in mass.items()
    }
    depth_star = {
        a: np.array([depth_to_reach(c, cfg.mu_star) for c in mass[a]])
        for a in cfg.a_values
        if a <= cfg.rescale_a_max
    }

    def required(make_sink, lo, hi):
        out = {}
        for depth in cfg.bisect_depths:
            out[depth] = _bisect(
                lambda s, depth=depth: (
                    np.median(np.asarray(_mu_curves_NxL(w, x, make_sink(s)))[:, depth])
                    >= cfg.mu_target
                ),
                lo,
                hi,
                iters=20,
            )
        return out

    return {
        "mu_by_a_NxL": mass,
        "mu_by_b_NxL": logit,
        "early_rate_by_a_N": rate,
        "depth_star_by_a_N": depth_star,
        "required_a": required(lambda a: Sink("mass", a), 0.0, 0.999),
        "required_b": required(lambda b: Sink("logit", b=b), -8.0, 20.0),
    }


def rank_collapse_claims(
    cfg: OverMixingConfig, summ: dict[str, Any], rc: dict[str, Any]
) -> list[Claim]:
    """Pre-LN residual dilution, the sink as a depth rescaling, and the sink each depth needs."""
    sp = summ["spread"]
    mu_end = [summ["mu_end"][a] for a in cfg.a_values]
    rates = [abs(summ["early_rate"][a]) for a in cfg.a_values]
    req_a = [rc["required_a"][d] for d in cfg.bisect_depths]
    return [
        check(
            "rank_collapse_median_mu_L_over_mu_0_no_sink",
            sp["residual: μ(L)/μ(0), a = 0"]["median"],
            "<=",
            0.3,
            "μ decreases with depth (Dong et al. 2021); with pre-LN residual a slow dilution",
            kind="reproduction",
        ),
        check(
            "median_mu_at_max_depth_strictly_increasing_in_a",
            int(_strictly_increasing(mu_end)),
            "==",
            1,
            "a sink slows collapse",
            kind="reproduction",
        ),
        # the Euler 1/(1 − a) depth rescaling is this module's derivation, not the paper's
        check(
            "depth_to_mu_star_times_1_minus_a_max_over_min",
            summ["depth_star_ratio"]["median"],
            "<=",
            round(summ["rescale_bound"], 4),
            "a sink of mass a rescales depth by 1/(1 − a) (first order)",
            kind="extension",
        ),
        check(
            "early_rate_magnitude_strictly_decreasing_in_a",
            int(np.all(np.diff(rates) < 0)),
            "==",
            1,
            "a sink slows collapse from the first layers",
            kind="reproduction",
        ),
        check(
            "required_a_nondecreasing_in_depth",
            int(np.all(np.diff(req_a) >= 0)),
            "==",
            1,
            "deeper models need stronger sinks",
            kind="reproduction",
        ),
        check(
            "required_a_deepest_minus_shallowest",
            req_a[-1] - req_a[0],
            ">",
            0.0,
            "strictly larger at the deepest than the shallowest depth",
            kind="reproduction",
        ),
    ]


@functools.partial(jax.jit, static_argnames=("depth",))
def _mixing_N(weights, x_NxTxD, sink: Sink, depth: int | None = None):
    """[N] mixing ratio M of the last token, per draw."""
    return jax.vmap(
        lambda w, x: toy.mixing_ratio(toy.last_token_jacobian(x, w, sink, depth=depth))
    )(weights, x_NxTxD)


def sensitivity(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 4: median mixing ratio M of the last token vs sink mass and depth; L = 1 identity."""
    inst = _instances(cfg, cfg.sensitivity_n, max(cfg.sensitivity_depths), cfg.draws)
    m = {
        (depth, a): float(np.median(np.asarray(_mixing_N(*inst, Sink("mass", a), depth=depth))))
        for depth in cfg.sensitivity_depths
        for a in cfg.a_values
    }
    # identity at L = 1: for i < n the Jacobian is the attention part, scaled exactly by (1 - a)
    w, x = _draw(inst, 0)
    base = toy.last_token_jacobian(x, w, NO_SINK, depth=1)[:-1]
    errs = []
    for a in cfg.a_values[1:]:
        scaled = toy.last_token_jacobian(x, w, Sink("mass", a), depth=1)[:-1]
        errs.append(float(jnp.abs(scaled - (1 - a) * base).max() / jnp.abs(base).max()))
    return {"mixing": m, "identity_max_rel_error": max(errs)}


def sensitivity_claims(cfg: OverMixingConfig, sens: dict[str, Any]) -> list[Claim]:
    """The mixing Jacobian: exact (1 − a) identity, less mixing with a sink, more with depth."""
    m, depths, a0 = sens["mixing"], cfg.sensitivity_depths, cfg.a_values[0]
    decreasing_in_a = all(np.all(np.diff([m[(d, a)] for a in cfg.a_values]) < 0) for d in depths)
    return [
        check(
            "identity_L1_attention_jacobian_scales_by_1_minus_a",
            sens["identity_max_rel_error"],
            "<=",
            1e-10,
            "exact identity",
            kind="identity",
        ),
        # forced at L = 1 by the (1 − a) identity, not at L > 1
        check(
            "median_mixing_ratio_decreasing_in_a_every_depth",
            int(decreasing_in_a),
            "==",
            1,
            "a sink reduces mixing",
            kind="reproduction",
        ),
        check(
            "median_mixing_ratio_increasing_in_depth_no_sink",
            int(_strictly_increasing([m[(d, a0)] for d in depths])),
            "==",
            1,
            "deeper mixes more",
            kind="reproduction",
        ),
    ]


def context_length(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 5: M grows with n at fixed b; the b(n) holding M at its n = 16 value grows ∝ ln n.

    Common random numbers: every context length uses the same weights and the first n tokens of
    the same draw, so the comparison across n is not swamped by draw-to-draw noise (M saturates
    at large n, where the sink's share e^b / (e^b + Σ e^s) is already small)."""
    out: dict[str, Any] = {}
    for depth in (1, 4):
        weights, x_NxTxD = _instances(cfg, max(cfg.context_ns), depth, cfg.context_draws)
        per_n = {n: (weights, x_NxTxD[:, : n + 1]) for n in cfg.context_ns}

        def mean_m(n, b, per_n=per_n):
            return float(np.mean(np.asarray(_mixing_N(*per_n[n], Sink("logit", b=b)))))

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


def context_length_claims(ctxlen: dict[int, Any]) -> list[Claim]:
    """Longer contexts mix more, and the sink logit they need grows like ln n."""
    c1 = ctxlen[1]
    return [
        check(
            "mixing_ratio_increasing_in_context_L1",
            int(_strictly_increasing(c1["m_fixed_b"])),
            "==",
            1,
            "longer context mixes more",
            kind="reproduction",
        ),
        # the ln n law is ours; the paper says only that longer contexts need stronger sinks
        check(
            "b_of_n_slope_vs_ln_n_L1_low",
            c1["slope"],
            ">=",
            0.5,
            "b(n) ∝ ln n, slope 1",
            kind="extension",
        ),
        check(
            "b_of_n_slope_vs_ln_n_L1_high",
            c1["slope"],
            "<=",
            1.5,
            "b(n) ∝ ln n, slope 1",
            kind="extension",
        ),
        check("b_of_n_fit_r2_L1", c1["r2"], ">=", 0.9, "b(n) linear in ln n", kind="extension"),
    ]


@functools.partial(jax.jit, static_argnames=("depth",))
def _influence_NxT(weights, x_NxTxD, depth: int):
    """[N,T] ‖∂y_n/∂x_i‖_F of the last token w.r.t. every input token (position 0 regular)."""
    return jax.vmap(
        lambda w, x: jnp.linalg.norm(
            toy.last_token_jacobian(x, w, REGULAR, depth=depth), axis=(1, 2)
        )
    )(weights, x_NxTxD)


def first_token(cfg: OverMixingConfig) -> dict[str, Any]:
    """Check 6: influence of token i on the last token; exact for x <- x + A x (uniform A); with
    softmax at L = 8, per draw: Spearman ρ(position, influence), influence(first) / median."""
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
    infl = np.asarray(_influence_NxT(*_instances(cfg, n - 1, 8, cfg.influence_draws), depth=8))
    infl = infl[:, : n - 1]  # drop the last token itself
    return {
        "linear": linear,
        "softmax_influence_L8_NxT": infl,
        "softmax_spearman_L8_N": np.array([metrics.spearman(np.arange(n - 1), r) for r in infl]),
        "softmax_first_over_median_L8_N": infl[:, 0] / np.median(infl, axis=1),
        "softmax_first_is_max_L8_N": infl.argmax(axis=1) == 0,
    }


def first_token_claims(
    cfg: OverMixingConfig, summ: dict[str, Any], first: dict[str, Any]
) -> list[Claim]:
    """Influence piles up on the first token (linear: exact; softmax: median over draws)."""
    sp = summ["spread"]
    lin = first["linear"]
    lin_ratios = [lin[d]["ratio"] for d in cfg.influence_depths]
    mono_l2 = all(lin[d]["spearman"] <= -0.999 for d in cfg.influence_depths if d >= 2)
    return [
        # closed form: powers of I + A for the uniform causal A
        check(
            "influence_decreasing_in_position_linear_L_ge_2",
            int(mono_l2),
            "==",
            1,
            "Spearman ρ = −1",
            kind="identity",
        ),
        check(
            "influence_ratio_first_over_last_increasing_in_depth",
            int(_strictly_increasing(lin_ratios)),
            "==",
            1,
            "1.0, 3.3, 24.5, 654 (exact, linear uniform)",
            kind="identity",
        ),
        check(
            "median_influence_spearman_softmax_L8",
            sp["softmax L = 8: Spearman ρ(position, influence)"]["median"],
            "<=",
            -0.8,
            "first token is where mixing piles up",
            kind="reproduction",
        ),
        check(
            "median_influence_first_over_median_softmax_L8",
            sp["softmax L = 8: influence(first) / median influence"]["median"],
            ">",
            1.0,
            "the first token is the most influential",
            kind="reproduction",
        ),
    ]


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


def representational_collapse_claims(collapse: dict[str, Any]) -> list[Claim]:
    """Representational collapse: distances shrink like 1/n and 1/n²."""
    nc = collapse["no sink, 1 layer"]
    return [
        # 1/n, 1/n² are asymptotic rates: the fitted slope over finite n depends on the draw
        check(
            "collapse_slope_one_token_changed_low",
            nc["slope_changed"],
            ">=",
            -1.3,
            "distance ∝ 1/n",
            kind="reproduction",
        ),
        check(
            "collapse_slope_one_token_changed_high",
            nc["slope_changed"],
            "<=",
            -0.7,
            "distance ∝ 1/n",
            kind="reproduction",
        ),
        check(
            "collapse_slope_one_more_repeat_low",
            nc["slope_longer"],
            ">=",
            -2.3,
            "distance ∝ 1/n²",
            kind="reproduction",
        ),
        check(
            "collapse_slope_one_more_repeat_high",
            nc["slope_longer"],
            "<=",
            -1.7,
            "distance ∝ 1/n²",
            kind="reproduction",
        ),
    ]


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


def jacobian_bound_claims(bound: dict[str, Any]) -> list[Claim]:
    """The Jacobian bound holds on every (token, instance) pair."""
    return [
        # the bound is proven in the module docstring
        check(
            "jacobian_bound_violations",
            bound["violations"],
            "==",
            0,
            f"0 of {bound['pairs']} (token, instance) pairs",
            kind="identity",
        ),
    ]


def run(cfg: OverMixingConfig, ctx: RunContext) -> dict[str, Any]:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with jax.enable_x64(True):
        pure = pure_attention(cfg)
        rc = rank_collapse(cfg)
        sens = sensitivity(cfg)
        ctxlen = context_length(cfg)
        first = first_token(cfg)
        collapse = representational_collapse(cfg)
        bound = jacobian_bound(cfg)
    summ = summarize(cfg, pure, rc, first)
    claims = make_claims(cfg, summ, rc, sens, ctxlen, first, collapse, bound)
    figures = make_figures(ctx, cfg, pure, rc, summ, sens, ctxlen, first, collapse)
    spread_rows = [{"quantity": k, **v} for k, v in summ["spread"].items()]
    a0 = cfg.a_values[0]
    rate_rows = [
        {
            "a": a,
            f"median rate (slope of ln μ, L=0..{cfg.early_depth})": r,
            "first-order (1-a)·rate(0)": (1 - a) * summ["early_rate"][a0],
        }
        for a, r in summ["early_rate"].items()
    ]
    depth_rows = [
        {"a": a, "1/(1-a)": 1 / (1 - a), **v, "median·(1-a)": v["median"] * (1 - a)}
        for a, v in summ["depth_star"].items()
    ]
    return {
        "claims": claims,
        "figures": figures,
        "pure_attention": {
            "mu_L_over_mu_0": summ["spread"]["pure: μ(L)/μ(0), a = 0"],
            "max_abs_diff_with_sink": pure["max_abs_diff_with_sink"],
            "max_rel_diff_with_sink": pure["max_rel_diff_with_sink"],
            "mu_L_over_mu_0_per_draw": pure["ratio_N"],
        },
        "rank_collapse": {
            "mu_L_over_mu_0_per_draw": summ["residual_ratio_N"],
            "median_mu_L_by_a": summ["mu_end"],
            "median_mu_L_by_b": {
                str(b): float(np.median(v[:, -1])) for b, v in rc["mu_by_b_NxL"].items()
            },
            "depth_star": summ["depth_star"],
            "depth_star_ratio": summ["depth_star_ratio"],
            "depth_star_euler_fit": summ["depth_star_euler_fit"],
            "early_rate": summ["early_rate"],
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
            "softmax_spearman_L8_per_draw": first["softmax_spearman_L8_N"],
            "softmax_first_over_median_L8_per_draw": first["softmax_first_over_median_L8_N"],
            "softmax_first_is_max_L8_fraction": float(first["softmax_first_is_max_L8_N"].mean()),
        },
        "representational_collapse": collapse,
        "jacobian_bound": bound,
        "tables": {
            "Spread over draws (median, 90 % bootstrap CI of the median, min, max)": spread_rows,
            f"Depth to μ* = {cfg.mu_star} vs sink mass (per draw, interpolated)": depth_rows,
            "Early collapse rate vs sink mass": rate_rows,
        },
    }


def summarize(cfg: OverMixingConfig, pure, rc, first) -> dict[str, Any]:
    """Medians over draws, bootstrap intervals and spreads of everything the μ claims use."""
    nb, seed = cfg.n_boot, cfg.seed
    a0 = cfg.a_values[0]
    mu0 = rc["mu_by_a_NxL"][a0]
    residual_ratio = mu0[:, -1] / mu0[:, 0]
    spread = {
        "pure: μ(L)/μ(0), a = 0": _spread(pure["ratio_N"], nb, seed),
        **{
            f"pure, no q/k normalisation (Dong et al. SAN): μ(L)/μ(0), a = {a}": _spread(
                v, nb, seed
            )
            for a, v in pure["raw_ratio_by_a_N"].items()
        },
        "residual: μ(L)/μ(0), a = 0": _spread(residual_ratio, nb, seed),
        **{
            f"residual: μ(L), a = {a}": _spread(v[:, -1], nb, seed)
            for a, v in rc["mu_by_a_NxL"].items()
        },
        "softmax L = 8: Spearman ρ(position, influence)": _spread(
            first["softmax_spearman_L8_N"], nb, seed
        ),
        "softmax L = 8: influence(first) / median influence": _spread(
            first["softmax_first_over_median_L8_N"], nb, seed
        ),
    }
    a_star = list(rc["depth_star_by_a_N"])
    depths_NxA = np.stack([rc["depth_star_by_a_N"][a] for a in a_star], axis=1)
    depth_star = {a: _spread(depths_NxA[:, k], nb, seed) for k, a in enumerate(a_star)}

    def ratio(med_A):
        prod = np.asarray(med_A) * (1 - np.asarray(a_star))
        return float(prod.max() / prod.min())

    med = np.median(np.where(np.isfinite(depths_NxA), depths_NxA, np.inf), axis=0)
    idx = np.random.default_rng(seed).integers(0, depths_NxA.shape[0], (nb, depths_NxA.shape[0]))
    boot = [ratio(np.median(np.where(np.isfinite(b), b, np.inf), axis=0)) for b in depths_NxA[idx]]
    lo, hi = np.quantile(boot, [0.05, 0.95], method="inverted_cdf")
    return {
        "spread": spread,
        "residual_ratio_N": residual_ratio,
        "mu_end": {a: float(np.median(v[:, -1])) for a, v in rc["mu_by_a_NxL"].items()},
        "early_rate": {a: float(np.median(v)) for a, v in rc["early_rate_by_a_N"].items()},
        "depth_star": depth_star,
        "depth_star_ratio": {"median": ratio(med), "ci90_lo": float(lo), "ci90_hi": float(hi)},
        "depth_star_euler_fit": _euler_fit(a_star, med),
        "rescale_bound": float((1 / (1 - max(a_star))) ** 0.25),
        "pure_max_abs_diff": pure["max_abs_diff_with_sink"],
    }


def _euler_fit(a_values, depth_A) -> dict[str, float]:
    """Fit h·D(h) = T* + c·h (h = 1 − a): the O(h) term of the Euler picture."""
    h = 1 - np.asarray(a_values, float)
    t = h * np.asarray(depth_A, float)
    if not np.all(np.isfinite(t)):
        return {"T_star": float("nan"), "c": float("nan"), "r2": float("nan")}
    c, r2 = _slope(h, t)
    return {"T_star": float(np.mean(t) - c * np.mean(h)), "c": c, "r2": r2}


def make_claims(cfg, summ, rc, sens, ctxlen, first, collapse, bound) -> list[Claim]:
    """Every check's claims, in the order of the checks (each defined next to its check)."""
    return [
        *pure_attention_claims(summ),
        *rank_collapse_claims(cfg, summ, rc),
        *sensitivity_claims(cfg, sens),
        *context_length_claims(ctxlen),
        *first_token_claims(cfg, summ, first),
        *representational_collapse_claims(collapse),
        *jacobian_bound_claims(bound),
    ]


def _band(ax, depth, curves_NxL, cfg, **kw):
    """Median over draws with its 90 % bootstrap band."""
    med, lo, hi = median_ci(curves_NxL, cfg.n_boot, cfg.seed)
    (line,) = ax.plot(depth, med, **kw)
    ax.fill_between(depth, lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def make_figures(ctx, cfg, pure, rc, summ, sens, ctxlen, first, collapse) -> list[str]:
    plt = plotting.plt
    files = []
    fig, axes = plt.subplots(1, 3, figsize=(10.0, 2.8))
    pd = np.arange(cfg.pure_depth + 1)
    for a in (cfg.a_values[0], cfg.a_values[-1]):
        style = "-" if a == cfg.a_values[0] else "--"
        _band(axes[0], pd, pure["mu_by_a_NxL"][a], cfg, ls=style, label=f"a = {a}")
    for a, mu in pure["raw_mu_by_a_NxL"].items():
        _band(axes[0], pd, mu, cfg, ls=":", label=f"a = {a}, no q/k norm (Dong et al.)")
    depth = np.arange(cfg.max_depth + 1)
    for a, mu in rc["mu_by_a_NxL"].items():
        _band(axes[1], depth, mu, cfg, label=f"a = {a}")
    for b, mu in rc["mu_by_b_NxL"].items():
        _band(axes[2], depth, mu, cfg, label=f"b = {b}")
    _band(
        axes[2], depth, rc["mu_by_a_NxL"][cfg.a_values[0]], cfg, color="k", ls="--", label="no sink"
    )
    titles = (
        "pure attention (no residual)",
        "pre-LN residual: sink mass a",
        "pre-LN residual: sink logit b",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set(
            yscale="log",
            xlabel="depth L",
            ylabel="token uniformity μ (median, 90 % CI)",
            title=title,
        )
        ax.legend(frameon=False, fontsize=6)
    fig.tight_layout()
    files += ctx.save_figure(fig, "mu_vs_depth")

    fig, ax = plt.subplots(figsize=(3.6, 2.8))
    a_star = list(summ["depth_star"])
    inv = np.array([1 / (1 - a) for a in a_star])
    med = np.array([summ["depth_star"][a]["median"] for a in a_star])
    err = np.array(
        [
            [med[k] - summ["depth_star"][a]["ci90_lo"], summ["depth_star"][a]["ci90_hi"] - med[k]]
            for k, a in enumerate(a_star)
        ]
    ).T
    ax.errorbar(inv, med, yerr=err, fmt="o", label="median depth (90 % CI)")
    ax.plot(inv, med[0] * inv, "k--", lw=0.8, label="first order: D(0)/(1 − a)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="1/(1 − a)",
        ylabel=f"depth to μ ≤ {cfg.mu_star}",
        title=f"max/min of D·(1 − a): {summ['depth_star_ratio']['median']:.2f}",
    )
    ax.legend(frameon=False, fontsize=6)
    files += ctx.save_figure(fig, "depth_to_mu_star_vs_sink_mass")

    fig, axes = plt.subplots(1, 2, figsize=(6.0, 2.4))
    axes[0].plot(cfg.bisect_depths, [rc["required_a"][d] for d in cfg.bisect_depths], "o-")
    axes[1].plot(cfg.bisect_depths, [rc["required_b"][d] for d in cfg.bisect_depths], "o-")
    for ax, name in zip(axes, ("required mass a", "required logit b"), strict=True):
        ax.set(
            xscale="log",
            xlabel="depth L",
            ylabel=name,
            title=f"smallest sink keeping median μ(L) ≥ {cfg.mu_target}",
        )
    fig.tight_layout()
    files += ctx.save_figure(fig, "required_sink_vs_depth")

    fig, ax = plt.subplots(figsize=(3.4, 2.6))
    for d in cfg.sensitivity_depths:
        ax.plot(cfg.a_values, [sens["mixing"][(d, a)] for a in cfg.a_values], "o-", label=f"L={d}")
    ax.set(yscale="log", xlabel="sink mass a", ylabel="median mixing ratio M (Frobenius)")
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
    infl = first["softmax_influence_L8_NxT"]
    _band(ax, np.arange(infl.shape[1]), infl, cfg, color="k", ls=":", label="L=8 softmax (median)")
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
