"""Bigram-Backcopy data invariants (Guo et al. 2024 §3)."""

import jax
import numpy as np
import pytest

from sinks_jax.errors import DataError
from sinks_jax.tasks.bigram_backcopy.config import BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import (
    batch_for_step,
    load_shakespeare_table,
    make_task,
    sample_sequences,
    synthetic_table,
    trigger_free_task,
    trigger_positions,
    true_next_distribution,
)


@pytest.fixture(scope="module")
def task():
    return load_shakespeare_table()


@pytest.fixture(scope="module")
def seqs(task):
    return np.asarray(sample_sequences(task, jax.random.key(0), 2000, 65))


def test_table_and_triggers(task):
    assert task.vocab_size == 67
    assert task.bos_id == 65
    assert task.delimiter_id == 66
    assert task.triggers == (1, 43, 58)  # ' ', 'e', 't'
    assert [task.itos[i] for i in task.triggers] == [" ", "e", "t"]
    np.testing.assert_allclose(task.cond.sum(1), 1.0, atol=1e-6)


def test_trigger_share_and_entropy(task, seqs):
    inputs = seqs[:, :-1]
    trig = task.trigger_mask[inputs]
    assert 0.22 <= trig.mean() <= 0.29  # paper: ≈ 25.5 %
    entropy = -(task.cond * np.log(np.where(task.cond > 0, task.cond, 1.0))).sum(1)
    non_trigger = ~trig[:, 1:]
    mean_entropy = entropy[inputs[:, 1:]][non_trigger].mean()
    assert 2.20 <= mean_entropy <= 2.26  # paper: 2.2299 nats


def test_backcopy_rule_and_no_adjacent_triggers(task, seqs):
    assert (seqs[:, 0] == task.bos_id).all()
    assert not task.trigger_mask[seqs[:, 1]].any()
    trig = task.trigger_mask[seqs]
    for t in range(2, seqs.shape[1]):
        after = trig[:, t - 1]
        np.testing.assert_array_equal(seqs[after, t], seqs[after, t - 2])
    assert not (trig[:, 1:] & trig[:, :-1]).any()
    assert not np.isin(seqs[:, 1:], [task.bos_id, task.delimiter_id]).any()


def test_batches_are_a_pure_function_of_seed_and_step(task):
    a = batch_for_step(task, 3, 7, 8, 16)
    b = batch_for_step(task, 3, 7, 8, 16)
    c = batch_for_step(task, 3, 8, 8, 16)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)
    np.testing.assert_array_equal(a.inputs[:, 1:], a.targets[:, :-1])
    assert a.inputs.shape == (8, 16)


def test_true_next_distribution(task, seqs):
    inputs = seqs[:64, :-1]
    dist = np.asarray(true_next_distribution(task, inputs))
    np.testing.assert_allclose(dist.sum(-1), 1.0, atol=1e-5)
    trig = np.asarray(trigger_positions(task, inputs))
    targets = seqs[:64, 1:]
    # the realised target always has positive probability; after a trigger it is certain
    assert (np.take_along_axis(dist, targets[..., None], -1) > 0).all()
    np.testing.assert_allclose(np.take_along_axis(dist, targets[..., None], -1)[trig], 1.0)


def test_synthetic_table_and_trigger_free():
    task = make_task(BBDataConfig(table="synthetic", synthetic_vocab=12, n_triggers=2), seed=1)
    assert task.vocab_size == 14
    assert len(task.triggers) == 2
    np.testing.assert_allclose(task.cond.sum(1), 1.0, atol=1e-9)
    assert task.cond[:, task.bos_id].sum() == 0
    free = trigger_free_task(synthetic_table(12, 2, 0.3, 1))
    s = np.asarray(sample_sequences(free, jax.random.key(1), 50, 40))
    assert not free.trigger_mask[s].any()


def test_missing_or_bad_table_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_shakespeare_table(path=tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"cond": []}')
    with pytest.raises(DataError, match="malformed"):
        load_shakespeare_table(path=bad)
