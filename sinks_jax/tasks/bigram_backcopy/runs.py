"""Train a GPT on Bigram-Backcopy with the full BB analysis as its eval (Guo et al. 2024, §3),
and read per-layer, per-head time series back out of the eval rows. Shared by the experiments
that train several BB models (residual peaks, optimizer mitigations, ablations)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flax import nnx

from sinks_jax.config import ModelConfig, OptimConfig
from sinks_jax.model import GPT
from sinks_jax.tasks.bigram_backcopy import analysis
from sinks_jax.tasks.bigram_backcopy.config import BBConfig, BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import (
    BigramBackcopyTask,
    batch_for_step,
    eval_batch,
    make_task,
)
from sinks_jax.train import TrainResult, train

# The three-layer setting of Guo et al. §3.3 (model, data, optimiser) shared by the residual-peak
# and optimizer-mitigation experiments: `quick` for a CPU, `paper` the paper's GPU scale.
THREE_LAYER: dict[str, dict[str, Any]] = {
    "quick": {
        "model": ModelConfig(d_model=64, d_mlp=256, n_layers=3, n_heads=1, max_len=64),
        "data": BBDataConfig(seq_len=64, batch_size=64, eval_batch_size=256),
        "optim": OptimConfig(name="adamw", lr=1e-3, b1=0.9, b2=0.99, weight_decay=1e-4),
    },
    "paper": {
        "model": ModelConfig(d_model=256, d_mlp=1024, n_layers=3, n_heads=1, max_len=256),
        "data": BBDataConfig(seq_len=256, batch_size=512, eval_batch_size=256),
        "optim": OptimConfig(name="adamw", lr=3e-4, b1=0.9, b2=0.99, weight_decay=1e-4),
    },
}


@dataclasses.dataclass(frozen=True)
class BBRun:
    """A trained BB model, its task and eval set, and the eval rows over training."""

    cfg: BBConfig
    task: BigramBackcopyTask
    evalset: analysis.BBEvalSet
    result: TrainResult

    @property
    def evals(self) -> list[dict[str, Any]]:
        return self.result.evals()

    @property
    def steps(self) -> list[int]:
        return [row["step"] for row in self.evals]

    def model(self) -> nnx.Module:
        return self.result.model()

    def series(self, key: str, layer: int, head: int | None = None) -> list[float]:
        """`key` of `layer` at every eval step; per-head keys need `head`."""
        rows = [row["layers"][layer][key] for row in self.evals]
        return rows if head is None else [r[head] for r in rows]

    def final(self, key: str, layer: int, head: int | None = None) -> float:
        return self.series(key, layer, head)[-1]


def train_bb(
    cfg: BBConfig,
    out_dir: Path | None,
    resume: bool = False,
    extra_eval: Callable[[nnx.Module, analysis.BBEvalSet], dict[str, Any]] | None = None,
) -> BBRun:
    """Train `GPT(cfg.model)` on the BB task of `cfg.data`; evaluate with `analysis.analyse`,
    plus `extra_eval(model, evalset)`'s entries in every eval row when given."""
    task = make_task(cfg.data, cfg.seed)
    evalset = analysis.BBEvalSet.build(
        task, eval_batch(task, cfg.seed, cfg.data.eval_batch_size, cfg.data.seq_len)
    )

    def eval_fn(model: nnx.Module, step: int) -> dict[str, Any]:
        extra = extra_eval(model, evalset) if extra_eval is not None else {}
        return {**analysis.analyse(model, evalset), **extra}

    result = train(
        cfg,
        lambda rngs: GPT(cfg.model, rngs=rngs),
        lambda step: batch_for_step(task, cfg.seed, step, cfg.data.batch_size, cfg.data.seq_len),
        out_dir=out_dir,
        resume=resume,
        eval_fn=eval_fn,
    )
    return BBRun(cfg, task, evalset, result)
