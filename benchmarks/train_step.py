"""Step-time benchmark: ratios measured in one run, on whatever backend JAX picks.

    python -m benchmarks.train_step [--preset quick|paper] [--repeats N] [--out DIR]

Reports (in results/bench/<preset>/bench.json): seconds per train step, per batch sampled, and per
forward pass with no capture vs `Capture.all()`, and their ratios. The capture ratio shows what the
observables cost when asked for; the no-capture forward is the program the train step runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
from flax import nnx

from experiments.bigram_backcopy import PRESETS
from sinks_jax.cli import environment
from sinks_jax.data import batch_for_step, make_task
from sinks_jax.model import GPT, Capture
from sinks_jax.train import init_state, make_optimizer, make_train_step


def seconds_per_call(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run(preset: str, repeats: int) -> dict[str, object]:
    cfg = PRESETS[preset]
    task = make_task(cfg.data, cfg.seed)
    batch = batch_for_step(task, 0, 0, cfg.data.batch_size, cfg.data.seq_len)
    model = GPT(cfg.model, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = init_state(model, optimizer, 0)
    step_fn = make_train_step(graphdef, optimizer)
    holder = {"state": state}

    def train_step():
        holder["state"], metrics = step_fn(holder["state"], batch)
        return metrics["loss"]

    gdef, params = nnx.split(model)
    forward = jax.jit(
        lambda p, x, capture: nnx.merge(gdef, p)(x, capture=capture), static_argnums=2
    )
    plain = seconds_per_call(lambda: forward(params, batch.inputs, Capture()), repeats)
    full = seconds_per_call(lambda: forward(params, batch.inputs, Capture.all()), repeats)
    step = seconds_per_call(train_step, repeats)
    data = seconds_per_call(
        lambda: batch_for_step(task, 0, 1, cfg.data.batch_size, cfg.data.seq_len).inputs, repeats
    )
    tokens = cfg.data.batch_size * cfg.data.seq_len
    return {
        "preset": preset,
        "train_step_s": step,
        "tokens_per_s": tokens / step,
        "sample_batch_s": data,
        "forward_no_capture_s": plain,
        "forward_capture_all_s": full,
        "ratio_capture_all_over_no_capture": full / plain,
        "ratio_sample_over_train_step": data / step,
        "environment": environment(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.preset, args.repeats)
    out = args.out or Path("results") / "bench" / args.preset
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        if key != "environment":
            print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
