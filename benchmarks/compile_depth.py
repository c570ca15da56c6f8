"""Compile time of the train step against depth, with the layers unrolled or scanned.

    python -m benchmarks.compile_depth [--depths 4 16 64] [--unrolled-max 16] [--remat]

Lowers and compiles one jitted train step (`make_train_step`) of a GPT (d 64, 4 heads, T 64,
batch 8) at each depth and prints seconds per compile; the scanned trunk (`model.scan_layers`)
should compile in about the same time at any depth (issue 15 §3: 64 layers within 2x of 4).
Unrolled models are compiled up to `--unrolled-max` layers (deep unrolled compiles take minutes).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from sinks_jax.batch import Batch
from sinks_jax.config import ModelConfig, OptimConfig
from sinks_jax.model import GPT
from sinks_jax.train import init_state, make_optimizer, make_train_step


def compile_seconds(n_layers: int, scan: bool, remat: bool) -> float:
    cfg = ModelConfig(
        vocab_size=256, max_len=64, d_model=64, n_heads=4, d_mlp=256, n_layers=n_layers,
        scan_layers=scan, remat=remat,
    )  # fmt: skip
    optimizer = make_optimizer(OptimConfig(), 100)
    graphdef, state = init_state(GPT(cfg, rngs=nnx.Rngs(0)), optimizer, 0)
    tokens = jnp.zeros((8, 64), jnp.int32)
    step = make_train_step(graphdef, optimizer)
    t0 = time.perf_counter()
    step.lower(state, Batch(inputs=tokens, targets=tokens)).compile()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--unrolled-max", type=int, default=16)
    parser.add_argument("--remat", action="store_true")
    args = parser.parse_args(argv)
    print(f"backend {jax.default_backend()}; train-step compile seconds (remat={args.remat})")
    base: dict[bool, float] = {}
    for depth in args.depths:
        for scan in (False, True):
            if not scan and depth > args.unrolled_max:
                continue
            s = compile_seconds(depth, scan, args.remat)
            base.setdefault(scan, s)
            name = "scanned" if scan else "unrolled"
            print(f"  {depth:3d} layers {name:8s} {s:7.2f} s  ({s / base[scan]:.2f}x the first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
