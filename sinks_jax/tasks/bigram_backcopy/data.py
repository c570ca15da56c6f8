"""Bigram-Backcopy task (Guo et al. 2024, arXiv 2410.13835, §3; official definition).

s[0] = BOS; s[1] ~ marginal with the triggers zeroed and renormalised; for t >= 2: if s[t-1] is a
trigger, s[t] = s[t-2] (back-copy), else s[t] ~ P(. | s[t-1]) (bigram). Inputs s[:T], targets s[1:].
Every batch is a pure function of (seed, step): `batch_for_step(task, seed, step, batch_size, T)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

from sinks_jax.batch import Batch
from sinks_jax.errors import DataError
from sinks_jax.tasks.bigram_backcopy.config import BBDataConfig

SHAKESPEARE_TABLE = "bigram_backcopy_shakespeare.json"


@dataclasses.dataclass(frozen=True, eq=False)
class BigramBackcopyTask:
    """A bigram table plus the BB rules. Arrays are numpy (host); sampling converts them."""

    cond: np.ndarray  # [V,V] P(next=j | current=i), rows sum to 1
    marginal: np.ndarray  # [V]
    bos_id: int
    delimiter_id: int
    triggers: tuple[int, ...]
    itos: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return self.cond.shape[0]

    @functools.cached_property
    def trigger_mask(self) -> np.ndarray:
        mask = np.zeros(self.vocab_size, bool)
        mask[list(self.triggers)] = True
        return mask

    @functools.cached_property
    def first_token_probs(self) -> np.ndarray:
        """Distribution of s[1]: the marginal with triggers zeroed, renormalised."""
        p = np.where(self.trigger_mask, 0.0, self.marginal)
        return p / p.sum()

    @functools.cached_property
    def non_trigger_tokens(self) -> np.ndarray:
        """Characters that are neither triggers nor BOS/delimiter (for the active/dormant probe)."""
        special = {self.bos_id, self.delimiter_id}
        return np.array(
            [v for v in range(self.vocab_size) if not self.trigger_mask[v] and v not in special]
        )


def _select_triggers(marginal: np.ndarray, k: int, exclude: tuple[int, ...]) -> tuple[int, ...]:
    """The k most probable tokens under the marginal (ids 1, 43, 58 for Shakespeare, k=3)."""
    order = [int(i) for i in np.argsort(-marginal, kind="stable") if int(i) not in exclude]
    return tuple(sorted(order[:k]))


def load_shakespeare_table(
    n_triggers: int = 3, path: str | Path | None = None
) -> BigramBackcopyTask:
    """Load the 67-token Shakespeare table shipped with the package (or from `path`)."""
    try:
        if path is None:
            text = (
                resources.files("sinks_jax.tasks.bigram_backcopy") / "tables" / SHAKESPEARE_TABLE
            ).read_text()
        else:
            text = Path(path).read_text()
        raw = json.loads(text)
        cond = np.asarray(raw["cond"], np.float64)
        marginal = np.asarray(raw["marginal"], np.float64)
        bos, delim, itos = int(raw["bos_id"]), int(raw["delimiter_id"]), tuple(raw["itos"])
    except FileNotFoundError:
        raise DataError(f"bigram table not found: {path}; pass an existing JSON file") from None
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(
            f"malformed bigram table {path or SHAKESPEARE_TABLE}: {err}; expected "
            "keys cond, marginal, bos_id, delimiter_id, itos"
        ) from None
    if cond.shape != (len(itos), len(itos)) or not np.allclose(cond.sum(1), 1.0, atol=1e-6):
        raise DataError("bigram table rows must be probability vectors of the vocabulary size")
    triggers = _select_triggers(marginal, n_triggers, exclude=(bos, delim))
    return BigramBackcopyTask(cond, marginal, bos, delim, triggers, itos)


def synthetic_table(
    vocab: int, n_triggers: int, concentration: float, seed: int
) -> BigramBackcopyTask:
    """Random Dirichlet bigram rows over `vocab` characters plus BOS and delimiter.

    For tests and forks that must not depend on the data file. BOS/delimiter rows equal the
    marginal (stationary distribution), and nothing transitions into them, as in the real table.
    """
    rng = np.random.default_rng(seed)
    v = vocab + 2
    cond = np.zeros((v, v))
    cond[:vocab, :vocab] = rng.dirichlet(np.full(vocab, concentration), size=vocab)
    evals, evecs = np.linalg.eig(cond[:vocab, :vocab].T)
    stationary = np.abs(np.real(evecs[:, np.argmin(np.abs(evals - 1.0))]))
    marginal = np.zeros(v)
    marginal[:vocab] = stationary / stationary.sum()
    cond[vocab] = cond[vocab + 1] = marginal
    itos = (*(f"c{i}" for i in range(vocab)), "<s_0>", "<d>")
    triggers = _select_triggers(marginal, n_triggers, exclude=(vocab, vocab + 1))
    return BigramBackcopyTask(cond, marginal, vocab, vocab + 1, triggers, itos)


def make_task(cfg: BBDataConfig, seed: int = 0) -> BigramBackcopyTask:
    """The task of a run (`seed` draws a synthetic table). Cached, so runs on the same table
    share one task object and one compiled sampler instead of compiling it for each run."""
    if cfg.table == "synthetic":
        return _cached_synthetic_table(
            cfg.synthetic_vocab, cfg.n_triggers, cfg.synthetic_concentration, seed
        )
    return _cached_shipped_table(cfg.n_triggers)


_cached_shipped_table = functools.lru_cache(maxsize=8)(load_shakespeare_table)
_cached_synthetic_table = functools.lru_cache(maxsize=16)(synthetic_table)


# ---------------------------------------------------------------------------------------------
# Sampling


def sample_sequences(
    task: BigramBackcopyTask, key: jax.Array, batch_size: int, length: int
) -> jax.Array:
    """[B, length] int32 BB sequences starting with BOS (jit-compiled per task and shape)."""
    return _sampler(task, batch_size, length)(key)


@functools.lru_cache(maxsize=32)
def _sampler(task: BigramBackcopyTask, batch_size: int, length: int):
    log_cond = jnp.log(jnp.asarray(task.cond, jnp.float32) + 1e-30)
    log_first = jnp.log(jnp.asarray(task.first_token_probs, jnp.float32) + 1e-30)
    is_trigger = jnp.asarray(task.trigger_mask)

    @jax.jit
    def sample(key):
        k_first, k_rest = jax.random.split(key)
        bos = jnp.full((batch_size,), task.bos_id, jnp.int32)
        first = jax.random.categorical(k_first, log_first, shape=(batch_size,)).astype(jnp.int32)

        def step(carry, k):
            prev2, prev = carry
            bigram = jax.random.categorical(k, log_cond[prev]).astype(jnp.int32)
            nxt = jnp.where(is_trigger[prev], prev2, bigram)
            return (prev, nxt), nxt

        keys = jax.random.split(k_rest, max(length - 2, 0))
        _, rest = jax.lax.scan(step, (bos, first), keys)
        return jnp.concatenate([bos[:, None], first[:, None], rest.T], axis=1)[:, :length]

    return sample


def batch_from_sequences(seqs_BxTp1: jax.Array) -> Batch:
    return Batch(inputs=seqs_BxTp1[:, :-1], targets=seqs_BxTp1[:, 1:])


def batch_for_step(
    task: BigramBackcopyTask, seed: int, step: int, batch_size: int, seq_len: int
) -> Batch:
    """The training batch of `step`: a pure function of (seed, step), so resumes replay it."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    return batch_from_sequences(sample_sequences(task, key, batch_size, seq_len + 1))


EVAL_STREAM = 2**31 - 1  # fold-in index reserved for the fixed evaluation batch


def eval_batch(task: BigramBackcopyTask, seed: int, batch_size: int, seq_len: int) -> Batch:
    key = jax.random.fold_in(jax.random.key(seed + 1), EVAL_STREAM)
    return batch_from_sequences(sample_sequences(task, key, batch_size, seq_len + 1))


# ---------------------------------------------------------------------------------------------
# Oracle


def true_next_distribution(
    task: BigramBackcopyTask, inputs_BxT: jax.Array | np.ndarray
) -> jax.Array:
    """[B,T,V] the data-generating distribution of the next token at every input position.

    Position 0 (BOS): the trigger-free marginal; after a trigger: one-hot on s[t-1]; otherwise
    the bigram row of s[t].
    """
    chex.assert_rank(inputs_BxT, 2)
    v = task.vocab_size
    rows = jnp.asarray(task.cond, jnp.float32)[inputs_BxT]
    rows = rows.at[:, 0].set(jnp.asarray(task.first_token_probs, jnp.float32))
    prev = jnp.concatenate([inputs_BxT[:, :1], inputs_BxT[:, :-1]], axis=1)
    copy = jax.nn.one_hot(prev, v, dtype=jnp.float32)
    trig = trigger_positions(task, inputs_BxT)
    return jnp.where(trig[..., None], copy, rows)


def trigger_positions(task: BigramBackcopyTask, inputs_BxT: jax.Array | np.ndarray) -> jax.Array:
    """[B,T] bool: input positions t >= 1 holding a trigger (the next token is a back-copy)."""
    trig = jnp.asarray(task.trigger_mask)[inputs_BxT]
    return trig.at[:, 0].set(False)


def trigger_free_task(task: BigramBackcopyTask) -> BigramBackcopyTask:
    """The same chain with transitions into triggers removed (rows renormalised): its sequences
    contain no trigger, e.g. for the "dormant" attention map of Guo et al. Fig. 2."""
    cond = np.where(task.trigger_mask[None], 0.0, task.cond)
    cond = cond / np.maximum(cond.sum(1, keepdims=True), 1e-30)
    return dataclasses.replace(task, cond=cond)
