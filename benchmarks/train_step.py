"""Step-time benchmark: ratios measured in one run, on whatever backend JAX picks.

    python -m benchmarks.train_step [--experiment bigram_backcopy|lm_sinks] [--preset NAME]
                                    [--microbatches K] [--repeats N] [--out DIR]

Reports (in results/bench/<experiment>_<preset>/bench.json): seconds per train step (tokens per
second), per forward pass with no capture vs `Capture.all()`, and for Bigram-Backcopy per batch
sampled, with their ratios. The capture ratio shows what the observables cost when asked for; the
no-capture forward is the program the train step runs. The small-GPT model trains on random tokens
of its vocabulary (the step time does not depend on the text). The step uses the preset's
`train.microbatches` (gradient accumulation; 16 for the small-GPT `paper` preset) unless
`--microbatches` overrides it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import jax
from flax import nnx

from experiments import bigram_backcopy, lm_sinks
from sinks_jax.batch import Batch
from sinks_jax.cli import environment
from sinks_jax.errors import ConfigError
from sinks_jax.forward import apply
from sinks_jax.model import GPT, Capture
from sinks_jax.run_dir import atomic_write_json
from sinks_jax.tasks.bigram_backcopy.data import batch_for_step, make_task
from sinks_jax.train import check_microbatches, init_state, make_optimizer, make_train_step


def seconds_per_call(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


EXPERIMENTS = {"bigram_backcopy": bigram_backcopy.PRESETS, "lm_sinks": lm_sinks.PRESETS}


def run(
    experiment: str, preset: str, repeats: int, microbatches: int | None = None
) -> dict[str, object]:
    cfg = EXPERIMENTS[experiment][preset]
    b, t = cfg.data.batch_size, cfg.data.seq_len
    microbatches = cfg.train.microbatches if microbatches is None else microbatches
    check_microbatches(b, microbatches)
    if experiment == "bigram_backcopy":
        task = make_task(cfg.data, cfg.seed)
        batch = batch_for_step(task, 0, 0, b, t)
    else:
        tokens = jax.random.randint(jax.random.key(0), (b, t + 1), 0, cfg.model.vocab_size)
        batch = Batch(inputs=tokens[:, :-1], targets=tokens[:, 1:])
    model = GPT(cfg.model, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = init_state(model, optimizer, 0)
    step_fn = make_train_step(graphdef, optimizer, microbatches=microbatches)
    holder = {"state": state}

    def train_step():
        holder["state"], metrics = step_fn(holder["state"], batch)
        return metrics["loss"]

    params = nnx.state(model, nnx.Param)
    rows = max(1, b // microbatches)  # forward passes on one micro-batch
    plain = seconds_per_call(lambda: apply(model, batch.inputs[:rows]), repeats)
    full = seconds_per_call(
        lambda: apply(model, batch.inputs[:rows], capture=Capture.all()), repeats
    )
    step = seconds_per_call(train_step, repeats)
    result: dict[str, object] = {
        "experiment": experiment,
        "preset": preset,
        "parameters": sum(x.size for x in jax.tree.leaves(params)),
        "batch": [b, t],
        "microbatches": microbatches,
        "train_step_s": step,
        "tokens_per_s": b * t / step,
        "forward_no_capture_s": plain,
        "forward_capture_all_s": full,
        "ratio_capture_all_over_no_capture": full / plain,
    }
    if experiment == "bigram_backcopy":
        data = seconds_per_call(lambda: batch_for_step(task, 0, 1, b, t).inputs, repeats)
        result |= {"sample_batch_s": data, "ratio_sample_over_train_step": data / step}
    return result | {"environment": environment()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="bigram_backcopy", choices=list(EXPERIMENTS))
    parser.add_argument("--preset", default="quick", help="a preset of the experiment")
    parser.add_argument(
        "--microbatches",
        type=int,
        default=None,
        help="gradient accumulation parts (default: the preset's train.microbatches)",
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    presets = EXPERIMENTS[args.experiment]
    if args.preset not in presets:
        parser.error(f"unknown preset {args.preset!r} for {args.experiment}: {sorted(presets)}")
    if args.microbatches is not None and args.microbatches < 1:
        parser.error("--microbatches must be >= 1")
    try:
        result = run(args.experiment, args.preset, args.repeats, args.microbatches)
    except ConfigError as e:
        parser.error(str(e))
    out = args.out or Path("results") / "bench" / f"{args.experiment}_{args.preset}"
    atomic_write_json(out / "bench.json", result)  # writes only this file, never moves any
    for key, value in result.items():
        if key != "environment":
            print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
