"""Why Adam makes residual-state peaks and SGD does not (Guo et al. 2024, arXiv 2410.13835, §3.3).

Scalar toy of the paper: the BOS residual norm m is pushed up by a gradient that is positive but
vanishes fast, g(m, t) = ln t / (m³ t) (the loss keeps rewarding a larger BOS norm, less and less
so as m grows and as training goes on). Plain gradient steps move m by lr·g, which sums to almost
nothing: m stays near m₀. Adam divides by the running RMS of g, so each step moves m by about lr
whatever the scale of g (until g nears Adam's ε), and m keeps growing: a peak. Both runs use
optax, in float64, for the same number of steps.

    python -m proofs_numeric.adam_vs_sgd_peak
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sinks_jax import plotting
from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import require


@dataclasses.dataclass(frozen=True)
class PeakToyConfig:
    seed: int = 0  # unused (the toy is deterministic); kept for the shared CLI
    m0: float = 10.0
    steps: int = 10_000
    lr: float = 0.3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        require(self.m0 > 0, "m0", self.m0, "> 0")
        require(self.steps >= 10, "steps", self.steps, ">= 10")
        require(self.lr > 0, "lr", self.lr, "> 0")
        require(0 <= self.b1 < 1 and 0 <= self.b2 < 1, "b1/b2", (self.b1, self.b2), "in [0, 1)")


# The paper's toy is tiny: both presets are its configuration.
PRESETS = {"quick": PeakToyConfig(), "paper": PeakToyConfig()}
NOTES = {
    "quick": "m₀ 10, 10k steps, lr 0.3, Adam (0.9, 0.999) vs gradient steps (< 1 s)",
    "paper": "same as quick (the paper's toy)",
}


def drive(m: jax.Array, t: jax.Array) -> jax.Array:
    """g(m, t) = ln t / (m³ t): the (negative) loss gradient on the BOS norm at step t ≥ 1."""
    return jnp.log(t) / (m**3 * t)


def trajectory(optimizer: optax.GradientTransformation, m0: float, steps: int) -> jax.Array:
    """m after each of `steps` optimizer steps (t = 1..steps), descending the loss whose gradient
    is −g(m, t)."""

    def step(carry, t):
        m, opt_state = carry
        updates, opt_state = optimizer.update(-drive(m, t), opt_state, m)
        m = optax.apply_updates(m, updates)
        return (m, opt_state), m

    m = jnp.asarray(m0, jnp.float64)
    ts = jnp.arange(1, steps + 1, dtype=jnp.float64)
    _, ms = jax.lax.scan(step, (m, optimizer.init(m)), ts)
    return ms


def run(cfg: PeakToyConfig, ctx: RunContext) -> dict[str, Any]:
    with jax.enable_x64(True):
        optimizers = {
            "Adam": optax.adam(cfg.lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
            "gradient steps": optax.sgd(cfg.lr),
        }
        paths = {
            name: np.asarray(trajectory(opt, cfg.m0, cfg.steps)) for name, opt in optimizers.items()
        }
    adam, sgd = paths["Adam"], paths["gradient steps"]
    claims = [
        check(
            "adam_final_m",
            float(adam[-1]),
            "in",
            (50.0, 80.0),
            "grows ≈ linearly (peak)",
            kind="reproduction",
        ),
        # forced: m ≥ m₀, so m_T − m₀ ≤ lr·Σ ln t/(m₀³ t) ≈ 0.013
        check("sgd_final_m", float(sgd[-1]), "<", 10.05, "stays at m₀ = 10", kind="identity"),
    ]
    steps = np.arange(1, cfg.steps + 1)
    checkpoints = [s for s in (10, 100, 1000, cfg.steps // 2, cfg.steps) if s <= cfg.steps]
    table = [
        {"step": s, "Adam m": float(adam[s - 1]), "gradient-step m": float(sgd[s - 1])}
        for s in checkpoints
    ]
    fig, axes = plotting.plt.subplots(1, 2, figsize=(7.5, 2.8))
    for name, path in paths.items():
        axes[0].plot(steps, path, label=name)
        axes[1].plot(steps[1:], path[1:] - cfg.m0, label=name)  # g(m, 1) = 0: m moves at t=2
    axes[0].set(xlabel="step t", ylabel="m (BOS residual norm)", title="m(t), linear axes")
    axes[1].set(
        xlabel="step t", ylabel="m − m₀", xscale="log", yscale="log", title="growth, log-log"
    )
    axes[0].legend(frameon=False)
    fig.suptitle("g(m, t) = ln t / (m³ t)", y=1.02)
    fig.tight_layout()
    figures = ctx.save_figure(fig, "adam_vs_sgd")
    return {
        "claims": claims,
        "final": {name: float(path[-1]) for name, path in paths.items()},
        "tables": {"m at selected steps": table},
        "figures": figures,
    }


EXPERIMENT = Experiment("adam_vs_sgd_peak", __doc__, PRESETS, run, NOTES)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
