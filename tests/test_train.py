"""Training loop: checkpoints, resume equality, NaN handling, sharding, a tiny sink run."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from sinks_jax.checkpoint import Checkpointer
from sinks_jax.config import ModelConfig, OptimConfig, TrainConfig
from sinks_jax.errors import ConfigError, TrainingDivergedError
from sinks_jax.model import GPT
from sinks_jax.tasks.bigram_backcopy import analysis
from sinks_jax.tasks.bigram_backcopy.config import BBConfig, BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import batch_for_step, eval_batch, make_task
from sinks_jax.train import eval_schedule, init_state, make_optimizer, next_token_loss
from tests.tiny_experiment import train_tiny

ROOT = Path(__file__).resolve().parents[1]

TINY = BBConfig(
    model=ModelConfig(vocab_size=14, max_len=16, d_model=16, d_mlp=32, n_layers=1, n_heads=2),
    data=BBDataConfig(seq_len=16, batch_size=8, table="synthetic", synthetic_vocab=12),
    optim=OptimConfig(lr=3e-3),
    train=TrainConfig(steps=20, eval_every=10, log_every=5, checkpoint_every=10, progress=False),
)


def _with(cfg, **train_fields):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_fields))


def _run(cfg, out=None, resume=False, **kw):
    return train_tiny(cfg, out, resume, **kw)


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def test_checkpoint_save_restore_equality(tmp_path):
    opt = make_optimizer(TINY.optim, 10)
    _, state = init_state(GPT(TINY.model, rngs=nnx.Rngs(3)), opt, 3)
    with Checkpointer(tmp_path / "ck", every=1, keep=2) as ck:
        ck.save(5, state, force=True)
    _, other = init_state(GPT(TINY.model, rngs=nnx.Rngs(4)), opt, 4)
    with Checkpointer(tmp_path / "ck", every=1, keep=2) as ck:
        assert ck.latest_step() == 5
        restored = ck.restore(other)
    for a, b in zip(_leaves(state), _leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_equals_uninterrupted_run(tmp_path):
    full = _run(TINY, tmp_path / "full")
    half = _run(_with(TINY, steps=10), tmp_path / "split")
    assert int(half.state.step) == 10
    resumed = _run(TINY, tmp_path / "split", resume=True)
    assert resumed.resumed_from == 10
    assert int(resumed.state.step) == 20
    for a, b in zip(_leaves(full.state.params), _leaves(resumed.state.params), strict=True):
        np.testing.assert_array_equal(a, b)

    def rows(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(r["kind"], r["step"]) for r in map(json.loads, lines)]

    split = rows("split")
    assert len(split) == len(set(split))  # rows after the checkpoint were not logged twice
    assert {("train", s) for s in (5, 10, 15, 20)} <= set(split)


def test_fresh_run_archives_previous_results(tmp_path):
    _run(TINY, tmp_path / "run")
    _run(TINY, tmp_path / "run")
    archived = list((tmp_path / "run" / "archive").iterdir())
    assert len(archived) == 1
    assert (archived[0] / "metrics.jsonl").exists()


DIVERGING = _with(
    dataclasses.replace(TINY, optim=OptimConfig(lr=1e3, name="sgd", momentum=0.0)),
    checkpoint_every=1,  # a checkpoint at every step: one always exists before the NaN
    log_every=1,
)


def _diverge(out):
    with pytest.raises(TrainingDivergedError, match=r"NaN/inf at step \d+") as err:
        _run(DIVERGING, out)
    return int(re.search(r"NaN/inf at step (\d+)", str(err.value)).group(1)), str(err.value)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    bad, message = _diverge(tmp_path / "nan")
    assert bad >= 2  # the first loss (of the initial parameters) is finite
    with Checkpointer(tmp_path / "nan" / "checkpoints", 1, 3) as ck:
        latest = ck.latest_step()
        # the loss of step `bad` is that of the parameters after step bad - 1: those are not
        # saved, so the last good checkpoint is step bad - 2 (its loss, step bad - 1, is finite)
        assert latest == bad - 2
        _, state = init_state(
            GPT(TINY.model, rngs=nnx.Rngs(0)), make_optimizer(DIVERGING.optim, 1), 0
        )
        assert int(ck.restore(state).step) == latest
    assert f"the last good checkpoint (step {latest}) is kept in" in message
    assert str(tmp_path / "nan" / "checkpoints") in message
    rows = [json.loads(x) for x in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if r["kind"] == "train"]
    assert logged == list(range(1, bad))  # every finite step logged, the NaN step not
    assert all(np.isfinite(r["loss"]) for r in rows if r["kind"] == "train")


def test_the_last_good_checkpoint_has_finite_parameters_and_loss(tmp_path):
    _diverge(tmp_path / "nan")
    task = make_task(DIVERGING.data, DIVERGING.seed)
    graphdef, state = init_state(
        GPT(TINY.model, rngs=nnx.Rngs(0)), make_optimizer(DIVERGING.optim, 1), 0
    )
    with Checkpointer(tmp_path / "nan" / "checkpoints", 1, 3) as ck:
        state = ck.restore(state)
    step = int(state.step)
    assert all(np.isfinite(x).all() for x in _leaves(state.params))
    batch = batch_for_step(task, DIVERGING.seed, step, TINY.data.batch_size, TINY.data.seq_len)
    assert np.isfinite(float(next_token_loss(nnx.merge(graphdef, state.params), batch)))


def test_eval_schedule():
    s = eval_schedule(1000, 50)
    assert s[0] == 0
    assert s[-1] == 1000
    assert 50 in s
    assert 950 in s
    assert 1 in s
    assert 10 in s


def _run_on_8_cpu_devices(script: str) -> None:
    """Run `script` in a fresh process with 8 forced host devices; it must print "ok"."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok" in proc.stdout, proc.stderr[-3000:]


def test_data_parallel_matches_single_device(tmp_path):
    """8 forced host devices (data-parallel) give the same parameters as one device. SGD keeps
    the update linear in the gradient, so only reduction-order rounding (~1e-7) remains; Adam's
    normalisation would amplify that on near-zero gradients."""
    script = textwrap.dedent("""
        import dataclasses, numpy as np, jax
        from tests.test_train import TINY, _run, _leaves
        assert len(jax.devices()) == 8, jax.devices()
        from tests.test_train import _with
        from sinks_jax.config import OptimConfig
        sgd = dataclasses.replace(TINY, optim=OptimConfig(name="sgd", lr=0.1))
        a, b = _run(_with(sgd, devices=8)), _run(_with(sgd, devices=1))
        assert len(a.state.params["head"]["kernel"][...].sharding.device_set) == 8
        for x, y in zip(_leaves(a.state.params), _leaves(b.state.params)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        print("ok")
    """)
    _run_on_8_cpu_devices(script)


def test_fsdp_matches_single_device_and_resumes_on_another_device_count(tmp_path):
    """Fully sharded parameters and optimiser state (train.fsdp) on 8 forced host devices give
    the parameters of one device (SGD: reduction-order rounding only, as above); a checkpoint
    saved sharded over 8 devices resumes sharded over 2 and replicated on 1 device."""
    script = textwrap.dedent(f"""
        import dataclasses, numpy as np, jax
        from tests.test_train import TINY, _run, _leaves, _with
        from sinks_jax.config import OptimConfig
        assert len(jax.devices()) == 8, jax.devices()
        sgd = dataclasses.replace(TINY, optim=OptimConfig(name="sgd", lr=0.1))
        one = _run(_with(sgd, devices=1))
        def close(a, b):
            for x, y in zip(_leaves(a.state.params), _leaves(b.state.params), strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        full = _run(_with(sgd, devices=8, fsdp=True))
        specs = {{str(x.sharding.spec) for x in jax.tree.leaves(full.state.params)}}
        assert "P('data',)" in specs and "P(None, 'data')" in specs, specs
        close(full, one)
        out = {str(tmp_path / "run")!r}
        half = _run(_with(sgd, devices=8, fsdp=True, steps=10), out)
        for devices, fsdp in ((2, True), (1, False)):
            resumed = _run(_with(sgd, devices=devices, fsdp=fsdp), out, resume=True)
            assert resumed.resumed_from == 10, resumed.resumed_from
            close(resumed, one)
            half = _run(_with(sgd, devices=8, fsdp=True, steps=10), out)  # a fresh half run
        # The multi-host placement (each process fills its own shards) places what device_put does.
        from sinks_jax import sharding
        mesh = sharding.make_mesh(8)
        state = jax.device_get(full.state)
        specs = jax.tree.map(lambda x: sharding.fsdp_sharding(x, mesh), state)
        for x, y in zip(jax.tree.leaves(sharding.put(state, specs, via_callback=True)),
                        jax.tree.leaves(jax.device_put(state, specs)), strict=True):
            assert x.sharding == y.sharding
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        print("ok")
    """)
    _run_on_8_cpu_devices(script)


def _sink_forms(batch_size: int, lr: float, steps: int) -> None:
    """A Bigram-Backcopy run in which the dormant head's BOS sink and the copy form."""
    cfg = BBConfig(
        model=ModelConfig(d_model=32, d_mlp=128, max_len=32),
        data=BBDataConfig(seq_len=32, batch_size=batch_size),
        optim=OptimConfig(lr=lr),
        train=TrainConfig(steps=steps, eval_every=steps, progress=False),
        seed=0,
    )
    task = make_task(cfg.data)
    evalset = analysis.BBEvalSet.build(task, eval_batch(task, 0, 128, 32))
    result = _run(cfg, eval_fn=lambda m, s: analysis.analyse(m, evalset), eval_steps=[0, steps])
    first, last = result.evals()[0], result.evals()[-1]
    assert first["layers"][0]["attn_bos_non_trigger"][0] < 0.2
    assert last["layers"][0]["attn_bos_non_trigger"][0] > 0.5
    assert last["backcopy_risk"] < 0.5


def test_tiny_end_to_end_sink_forms():
    """Batch 32, lr 1e-2, 200 steps: BOS attention 0.11 -> 0.68, backcopy CE 0.06 (seed 1:
    0.60, 0.08)."""
    _sink_forms(batch_size=32, lr=1e-2, steps=200)


@pytest.mark.slow
def test_short_end_to_end_sink_forms():
    """Batch 64, lr 3e-3, 600 steps (seed 0: BOS attention 0.80, backcopy CE 0.02)."""
    _sink_forms(batch_size=64, lr=3e-3, steps=600)


def test_microbatches_match_one_full_batch_step():
    """Gradient accumulation over 4 interleaved parts = one step on the whole batch (no loss
    mask, equal parts: the mean of part means is the batch mean). SGD, so that parameters are
    linear in the gradients (Adam's m/√v amplifies float32 rounding of near-zero gradients);
    tolerance 1e-5: float32 sums in another order."""
    sgd = dataclasses.replace(TINY, optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9))
    full = _run(_with(sgd, steps=3))
    accumulated = _run(_with(sgd, steps=3, microbatches=4))
    for a, b in zip(_leaves(full.state.params), _leaves(accumulated.state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=r"train\.microbatches"):
        _run(_with(sgd, microbatches=3))
