"""Golden numbers (nanodo style): one model of each family, built from a fixed seed, takes two
train steps with the project's own optimiser and train step on a fixed deterministic batch; the
loss and gradient norm of step 1 and the loss of step 2 must equal the values stored below.

A refactor of the model trunk, the configs or the train step that changes any number (the
parameter initialisation order included) fails here. The literals were produced by running this
file's `_two_steps` on the code as it was (float32, CPU); rtol 1e-5 allows for float32
reassociation only. To regenerate after an intended change: `python -m tests.test_golden`.

Public names used, and nothing else: `GPT`, `VectorTransformer`, `ModelConfig`, `OptimConfig`,
`make_optimizer`, `init_state`, `make_train_step`, `next_token_loss`, `data.Batch`,
`averaging.AveragingConfig`, `averaging.sample` and `averaging.mse_loss`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.batch import Batch
from sinks_jax.config import ModelConfig, OptimConfig
from sinks_jax.model import GPT, VectorTransformer
from sinks_jax.tasks import averaging
from sinks_jax.train import init_state, make_optimizer, make_train_step, next_token_loss

RTOL = 1e-5  # float32: a real change in the maths moves these numbers by far more than this
SEED = 0
TOTAL_STEPS = 100  # the optimiser's schedule horizon (constant schedules: unused)


def _two_steps(model, optim: OptimConfig, batch, loss_fn) -> tuple[float, float, float]:
    """(loss of step 1, gradient norm of step 1, loss of step 2) on the same batch."""
    optimizer = make_optimizer(optim, TOTAL_STEPS)
    graphdef, state = init_state(model, optimizer, SEED)
    step_fn = make_train_step(graphdef, optimizer, loss_fn)
    state, first = step_fn(state, batch)
    state, second = step_fn(state, batch)
    return float(first["loss"]), float(first["grad_norm"]), float(second["loss"])


def _tokens(vocab: int, b: int, t: int, seed: int) -> np.ndarray:
    """A fixed [b, t+1] int32 token array (numpy's PCG64: the same on every platform)."""
    return np.random.default_rng(seed).integers(0, vocab, (b, t + 1)).astype(np.int32)


# -- Bigram-Backcopy GPT: ModelConfig defaults (vocab 67, 1 layer, 1 head, learned positions,
#    pre-LN, torch init), made tiny; OptimConfig defaults (adamw, lr 1e-3).


def bb_case() -> tuple[float, float, float]:
    cfg = ModelConfig(d_model=16, d_mlp=64, max_len=16)
    toks = _tokens(cfg.vocab_size, 4, 16, seed=1)
    batch = Batch(inputs=jnp.asarray(toks[:, :-1]), targets=jnp.asarray(toks[:, 1:]))
    model = GPT(cfg, rngs=nnx.Rngs(SEED))
    return _two_steps(model, OptimConfig(), batch, next_token_loss)


# -- The small LM GPT of `sinks_jax.tasks.lm` (byte vocabulary 259, 2 layers, 4 heads, adamw with
#    weight decay 0.1), made tiny, on a packed batch: two documents per row (segment ids,
#    restarting positions) and a loss mask that drops the padding and each document's last token.


def lm_case() -> tuple[float, float, float]:
    cfg = ModelConfig(vocab_size=259, d_model=16, d_mlp=64, n_layers=2, n_heads=4, max_len=16)
    optim = OptimConfig(name="adamw", lr=1e-3, b2=0.99, weight_decay=0.1)
    b, t = 4, 16
    toks = _tokens(256, b, t, seed=2)
    seg = np.zeros((b, t), np.int32)
    pos = np.zeros((b, t), np.int32)
    for row, split in enumerate((5, 8, 11, 16)):  # doc 1 = [0, split), doc 2 = [split, t - row)
        end = t - row
        seg[row, :split] = 1
        seg[row, split:end] = 2
        pos[row, :split] = np.arange(split)
        pos[row, split:end] = np.arange(end - split)
    mask = (seg > 0).astype(np.float32)
    last = np.zeros_like(mask, bool)
    last[:, :-1] = seg[:, :-1] != seg[:, 1:]
    mask[last] = 0.0
    batch = Batch(
        inputs=jnp.asarray(toks[:, :-1]),
        targets=jnp.asarray(toks[:, 1:]),
        loss_mask=jnp.asarray(mask),
        segment_ids=jnp.asarray(seg),
        positions=jnp.asarray(pos),
    )
    model = GPT(cfg, rngs=nnx.Rngs(SEED))
    return _two_steps(model, optim, batch, next_token_loss)


# -- VectorTransformer on the averaging task: the `averaging` experiment's model (2 layers, no
#    MLP, no norm, no positions, no bias, torch init; adam lr 3e-3), made tiny.


def averaging_case() -> tuple[float, float, float]:
    task = averaging.AveragingConfig(seq_len=8, d_x=4, batch_size=8)
    preset = averaging.AveragingExperimentConfig()  # its model and optimiser, made tiny
    cfg = dataclasses.replace(preset.model, d_model=16, d_mlp=16)
    optim = preset.optim
    batch = averaging.sample(task, jax.random.key(3))
    model = VectorTransformer(cfg, task.n_features, task.d_x, rngs=nnx.Rngs(SEED))
    return _two_steps(model, optim, batch, averaging.mse_loss)


CASES = {"bigram_backcopy_gpt": bb_case, "lm_gpt": lm_case, "averaging_vector": averaging_case}

# (loss at step 1, gradient norm at step 1, loss at step 2), float32 on CPU
GOLDEN = {
    "bigram_backcopy_gpt": (4.461146831512451, 0.5963303446769714, 4.4380903244018555),
    "lm_gpt": (5.8088178634643555, 0.6947117447853088, 5.7679290771484375),
    "averaging_vector": (3.539607286453247, 5.5873942375183105, 3.2946975231170654),
}


@pytest.mark.parametrize("name", list(CASES))
def test_golden_train_steps(name):
    loss1, grad_norm1, loss2 = CASES[name]()
    want_loss1, want_grad_norm1, want_loss2 = GOLDEN[name]
    np.testing.assert_allclose(loss1, want_loss1, rtol=RTOL)  # rtol 1e-5, float32
    np.testing.assert_allclose(grad_norm1, want_grad_norm1, rtol=RTOL)  # rtol 1e-5, float32
    np.testing.assert_allclose(loss2, want_loss2, rtol=RTOL)  # rtol 1e-5, float32
    assert loss2 < loss1  # the step trained: a sanity check on the stored numbers themselves


if __name__ == "__main__":  # print the literals for GOLDEN
    for case_name, case in CASES.items():
        print(f"    {case_name!r}: ({', '.join(repr(v) for v in case())}),")
