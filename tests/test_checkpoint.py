"""Damaged checkpoints: `restore_latest_good` falls back to the newest intact step, moves the
damaged one aside (never deletes it) and lets the run save that step again."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.checkpoint import Checkpointer
from sinks_jax.config import ModelConfig, OptimConfig
from sinks_jax.errors import DataError
from sinks_jax.model import GPT
from sinks_jax.train import init_state, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
# d_mlp=128: the MLP kernels (64 KB) are stored out of line, in `ocdbt.process_0/d/`
MODEL = ModelConfig(vocab_size=14, max_len=16, d_model=32, d_mlp=128, n_layers=1, n_heads=2)


@pytest.fixture(scope="module")
def states():
    """Three different real TrainStates (params, optax state, step, key data)."""
    opt = make_optimizer(OptimConfig(lr=3e-3), 10)
    out = []
    for seed in (1, 2, 3):
        _, s = init_state(GPT(MODEL, rngs=nnx.Rngs(seed)), opt, seed)
        out.append(s.replace(step=s.step + 10 * seed))
    return out


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype
        assert x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def _save(directory, items):
    with Checkpointer(directory, every=1, keep=5) as ck:
        for step, state in items:
            ck.save(step, state, force=True)


def _truncate_largest_file(step_dir: Path) -> None:
    """Cut the largest OCDBT data file (`default/ocdbt.process_0/d/<hash>`) to half its size."""
    big = max(step_dir.glob("default/ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)
    os.truncate(big, big.stat().st_size // 2)


def _delete_all_metadata(step_dir: Path) -> None:
    names = {"_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt"}
    for p in [p for p in step_dir.rglob("*") if p.name in names]:
        p.unlink()


def _truncate_root_node(step_dir: Path) -> None:
    """Cut the root B-tree node (`default/d/<hash>`, which holds the small arrays inline)."""
    (node,) = step_dir.glob("default/d/*")
    os.truncate(node, node.stat().st_size // 2)


DAMAGES = {
    "truncated_data_file": _truncate_largest_file,
    "truncated_root_node": _truncate_root_node,
    "METADATA_deleted": lambda d: (d / "default" / "_METADATA").unlink(),
    "all_metadata_deleted": _delete_all_metadata,
    "default_folder_deleted": lambda d: shutil.rmtree(d / "default"),
    "ocdbt_folder_deleted": lambda d: shutil.rmtree(d / "default" / "ocdbt.process_0"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_latest_falls_back_moves_aside_and_saves_again(tmp_path, states, damage, capsys):
    s10, s20, s20b = states
    ck_dir = tmp_path / "checkpoints"
    _save(ck_dir, [(10, s10), (20, s20)])
    DAMAGES[damage](ck_dir / "20")
    files_before = sorted(p.relative_to(ck_dir / "20") for p in (ck_dir / "20").rglob("*"))

    with Checkpointer(ck_dir, every=1, keep=5) as ck:
        state, step = ck.restore_latest_good(s20b)
        assert step == 10
        assert ck.latest_step() == 10
        _assert_same(state, s10)
        ck.save(20, s20b, force=True)

    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"[sinks_jax] checkpoint step 20 in {ck_dir} is damaged (")
    assert "falling back to the previous one" in out[0]
    (moved,) = (tmp_path / "checkpoints.damaged").iterdir()
    assert moved.name.startswith("20-")
    assert str(moved) in out[0]
    assert sorted(p.relative_to(moved) for p in moved.rglob("*")) == files_before  # not deleted

    with Checkpointer(ck_dir, every=1, keep=5) as ck:
        state, step = ck.restore_latest_good(s10)
        assert step == 20
        _assert_same(state, s20b)
    assert capsys.readouterr().out == ""


def test_two_damaged_steps_fall_back_to_the_oldest(tmp_path, states, capsys):
    s10, s20, s30 = states
    _save(tmp_path / "ck", [(10, s10), (20, s20), (30, s30)])
    _truncate_largest_file(tmp_path / "ck" / "30")
    shutil.rmtree(tmp_path / "ck" / "20" / "default")
    with Checkpointer(tmp_path / "ck", every=1, keep=5) as ck:
        state, step = ck.restore_latest_good(s30)
        assert ck.manager.all_steps() == [10]
    assert step == 10
    _assert_same(state, s10)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" in ")[0] for line in out] == [
        "[sinks_jax] checkpoint step 30",
        "[sinks_jax] checkpoint step 20",
    ]
    assert sorted(p.name[:3] for p in (tmp_path / "ck.damaged").iterdir()) == ["20-", "30-"]


def test_all_steps_damaged_raises_one_line_DataError_and_moves_nothing(tmp_path, states):
    s10, s20, _ = states
    _save(tmp_path / "ck", [(10, s10), (20, s20)])
    _truncate_largest_file(tmp_path / "ck" / "20")
    shutil.rmtree(tmp_path / "ck" / "10" / "default")
    with Checkpointer(tmp_path / "ck", every=1, keep=5) as ck, pytest.raises(DataError) as err:
        ck.restore_latest_good(s10)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"no intact checkpoint in {tmp_path / 'ck'} (")
    assert "step 20: ValueError: OUT_OF_RANGE: Error reading" in msg
    assert """step 10: KeyError: 'Item "default" was not found""" in msg
    assert msg.endswith("rerun without --resume to start fresh")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["10", "20"]
    assert not (tmp_path / "ck.damaged").exists()


def test_wrong_layout_is_not_taken_for_a_good_checkpoint(tmp_path, states):
    """A state of another model size restores nothing (orbax refuses the shapes)."""
    s10, s20, _ = states
    _save(tmp_path / "ck", [(10, s10), (20, s20)])
    opt = make_optimizer(OptimConfig(lr=3e-3), 10)
    model = GPT(dataclasses.replace(MODEL, d_model=64), rngs=nnx.Rngs(0))
    _, bigger = init_state(model, opt, 0)
    with (
        Checkpointer(tmp_path / "ck", every=1, keep=5) as ck,
        pytest.raises(DataError, match="no intact checkpoint"),
    ):
        ck.restore_latest_good(bigger)


def test_keyboard_interrupt_is_not_taken_for_damage(tmp_path, states, monkeypatch):
    _save(tmp_path / "ck", [(10, states[0]), (20, states[1])])
    with Checkpointer(tmp_path / "ck", every=1, keep=5) as ck:

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(ck.manager, "restore", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ck.restore_latest_good(states[0])
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["10", "20"]


def test_no_checkpoint_gives_none(tmp_path, states):
    with Checkpointer(tmp_path / "ck", every=1, keep=5) as ck:
        assert ck.restore_latest_good(states[0]) is None


def test_leftover_tmp_folder_is_ignored_and_does_not_block_saving(tmp_path, states):
    """What a save cut short leaves behind: `<step>.orbax-checkpoint-tmp/`, half written."""
    s10, s20, s20b = states
    _save(tmp_path / "ck", [(10, s10), (20, s20)])
    tmp = tmp_path / "ck" / "20.orbax-checkpoint-tmp"
    (tmp_path / "ck" / "20").rename(tmp)
    _truncate_largest_file(tmp)
    with Checkpointer(tmp_path / "ck", every=1, keep=5) as ck:
        state, step = ck.restore_latest_good(s20)
        assert step == 10
        _assert_same(state, s10)
        ck.save(20, s20b, force=True)
    with Checkpointer(tmp_path / "ck", every=1, keep=5) as ck:
        state, step = ck.restore_latest_good(s10)
    assert step == 20
    _assert_same(state, s20b)
    assert not tmp.exists()


def big_state(step: int) -> dict:
    """50 MB, a different content per step."""
    w = np.random.default_rng(step).standard_normal(12_500_000, dtype=np.float32)
    return {"w": jnp.asarray(w), "step": jnp.int32(step)}


CHILD = textwrap.dedent("""
    import sys
    from tests.test_checkpoint import Checkpointer, big_state as state

    ck = Checkpointer(sys.argv[1], every=1, keep=5)
    ck.save(10, state(10), force=True)
    ck.manager.wait_until_finished()
    ck.save(20, state(20), force=True)
    print("SAVING", flush=True)
    ck.manager.wait_until_finished()
    print("SAVED", flush=True)
    sys.stdin.read()
""")


def test_process_killed_during_async_save(tmp_path):
    """SIGKILL right after `save(20)` returns (its async write in flight; it usually leaves
    `20.orbax-checkpoint-tmp/`): the next run restores step 10 or, if the write had finished,
    exactly step 20, and saves the next step over any leftover."""
    ck_dir = tmp_path / "ck"
    with (
        open(tmp_path / "child.err", "w+") as err,
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(ck_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
        ) as child,
    ):
        try:
            line = child.stdout.readline()
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=60)
        err.seek(0)
        assert line == "SAVING\n", err.read()[-3000:]
    assert child.returncode == -signal.SIGKILL
    print("left after the kill:", sorted(p.name for p in ck_dir.iterdir()))

    saved = {step: big_state(step) for step in (10, 20)}
    with Checkpointer(ck_dir, every=1, keep=5) as ck:
        got = ck.restore_latest_good(saved[10])
        assert got is not None
        state, step = got
        _assert_same(state, saved[step])
        ck.save(step + 10, saved[10], force=True)
    assert not any(p.name.endswith(".orbax-checkpoint-tmp") for p in ck_dir.iterdir())
    with Checkpointer(ck_dir, every=1, keep=5) as ck:
        assert ck.restore_latest_good(saved[20]) is not None
        assert ck.latest_step() == step + 10
        _assert_same(ck.restore(saved[20]), saved[10])
