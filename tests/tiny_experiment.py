"""A tiny experiment for the run-folder tests: the real CLI and training loop in seconds.

    python -m tests.tiny_experiment --out DIR [--resume] [--set wait_for=FILE]

Its metrics.json carries `params_sha256` (the final parameters' bytes), so two runs can be
compared bit for bit, and `logged_steps` (the train rows of the run's log).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sinks_jax.claims import check
from sinks_jax.cli import Experiment, RunContext, main
from sinks_jax.config import ModelConfig, OptimConfig, TrainConfig
from sinks_jax.model import GPT
from sinks_jax.tasks.bigram_backcopy.config import BBConfig, BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import batch_for_step, make_task
from sinks_jax.train import train


@dataclasses.dataclass(frozen=True)
class TinyConfig(BBConfig):
    wait_for: str = ""  # the run holds its lock until this file exists (at most 60 s)


PRESETS = {
    "quick": TinyConfig(
        model=ModelConfig(vocab_size=14, max_len=16, d_model=16, d_mlp=32, n_heads=2),
        data=BBDataConfig(seq_len=16, batch_size=8, table="synthetic", synthetic_vocab=12),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(
            steps=20, eval_every=10, log_every=5, checkpoint_every=10, progress=False
        ),
    )
}


def params_sha256(params: Any) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def train_tiny(cfg: BBConfig, out_dir: Path | None, resume: Any = False, **kw: Any):
    """`sinks_jax.train.train` of a GPT on the config's Bigram-Backcopy task."""
    task = make_task(cfg.data, cfg.seed)
    return train(
        cfg,
        lambda rngs: GPT(cfg.model, rngs=rngs),
        lambda step: batch_for_step(task, cfg.seed, step, cfg.data.batch_size, cfg.data.seq_len),
        out_dir=out_dir,
        resume=resume,
        **kw,
    )


def run(cfg: TinyConfig, ctx: RunContext) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while cfg.wait_for and not Path(cfg.wait_for).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    result = train_tiny(
        cfg, ctx.out_dir, ctx.resume, eval_fn=lambda model, step: {"step_seen": step}
    )
    logged = [r["step"] for r in result.history if r["kind"] == "train"]
    return {
        "claims": [check("trained", int(result.state.step), "==", cfg.train.steps)],
        "params_sha256": params_sha256(result.state.params),
        "logged_steps": logged,
        "resumed_from": result.resumed_from,
    }


EXPERIMENT = Experiment("tiny", "A tiny run for the tests.", PRESETS, run)

if __name__ == "__main__":
    raise SystemExit(main(EXPERIMENT))
