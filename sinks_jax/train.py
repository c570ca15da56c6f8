"""Training: an explicit state pytree, one jit-compiled donated train step, and a resumable loop.

    state = init_state(cfg, model)                     # TrainState(params, opt_state, step, key)
    step_fn = make_train_step(graphdef, optimizer)     # (state, batch) -> (state, metrics)
    result = train(cfg, model_factory, batch_fn, out_dir=..., eval_fn=...)

The loop evaluates at `eval_schedule(...)` steps, appends rows to `metrics.jsonl`, shows a tqdm bar
(loss, steps/s), saves orbax checkpoints every `train.checkpoint_every` steps (and at the end), and
stops with `TrainingDivergedError` naming the first non-finite step; the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from tqdm.auto import tqdm

from sinks_jax import run_dir, sharding
from sinks_jax.batch import Batch
from sinks_jax.checkpoint import Checkpointer
from sinks_jax.config import OptimConfig, TaskConfig, leaf_defaults, require, to_dict
from sinks_jax.errors import ConfigError, DataError, TrainingDivergedError


class TrainState(struct.PyTreeNode):
    params: Any  # nnx.State of the model's parameters
    opt_state: Any
    step: jax.Array  # int32 scalar: number of updates applied
    key: jax.Array  # raw uint32 PRNG key data (for stochastic extensions, e.g. dropout)


# ---------------------------------------------------------------------------------------------
# Optimiser


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, cfg.warmup_steps, max(total_steps, cfg.warmup_steps + 1)
        )
    if cfg.warmup_steps:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), optax.constant_schedule(cfg.lr)],
            [cfg.warmup_steps],
        )
    return optax.constant_schedule(cfg.lr)


def _matrices(params: Any) -> Any:
    """Weight-decay mask of `decay_params='matrices'`: True for parameters with >= 2 dims."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


@functools.lru_cache(maxsize=64)
def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Cached (the same config gives the same object, so a cached train step is reused).

    adamw: decoupled decay on every parameter (torch.optim.AdamW); adam and sgd: L2 decay added
    to the gradient (torch.optim.Adam / SGD semantics)."""
    lr = make_schedule(cfg, total_steps)
    mask = None if cfg.decay_params == "all" else _matrices
    if cfg.name == "adamw":
        opt = optax.adamw(
            lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask
        )
    elif cfg.name == "adam":
        opt = optax.chain(
            optax.add_decayed_weights(cfg.weight_decay, mask=mask),
            optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        )
    else:
        opt = optax.chain(
            optax.add_decayed_weights(cfg.weight_decay, mask=mask),
            optax.sgd(lr, momentum=cfg.momentum or None),
        )
    if cfg.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt


# ---------------------------------------------------------------------------------------------
# Loss and step


def next_token_loss(model: nnx.Module, batch: Batch) -> jax.Array:
    """Mean cross-entropy over positions (weighted by `batch.loss_mask` when present)."""
    logits_BxTxV = model(
        batch.inputs, segment_ids_BxT=batch.segment_ids, positions_BxT=batch.positions
    ).logits
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxTxV.astype(jnp.float32), batch.targets
    )
    if batch.loss_mask is None:
        return ce_BxT.mean()
    return (ce_BxT * batch.loss_mask).sum() / jnp.maximum(batch.loss_mask.sum(), 1.0)


LossFn = Callable[[nnx.Module, Any], jax.Array]  # (model, batch: any pytree of arrays)


def init_state(
    model: nnx.Module, optimizer: optax.GradientTransformation, seed: int
) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params = nnx.split(model, nnx.Param)
    state = TrainState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(jax.random.key(seed)),
    )
    return graphdef, state


def check_microbatches(batch_size: int, microbatches: int) -> None:
    """ConfigError unless `train.microbatches` splits the batch into equal parts."""
    require(
        batch_size % microbatches == 0,
        "train.microbatches",
        microbatches,
        f"a divisor of data.batch_size={batch_size}",
    )


@functools.lru_cache(maxsize=64)
def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    loss_fn: LossFn = next_token_loss,
    microbatches: int = 1,
):
    """A pure (state, batch) -> (state, metrics) step; the incoming state buffer is donated.

    Cached on its arguments: every run of a multi-run experiment with the same model structure,
    optimiser config and loss gets the same jitted function, so it compiles once per shape (a
    loss built per run, e.g. a closure, still compiles per run).

    With `microbatches` = k > 1 the batch's rows are split into k interleaved parts (row r goes to
    part r mod k, so with rows sharded in contiguous blocks every part spans every device) whose
    gradients are averaged in a `lax.scan` before one update: one step on a batch k times larger
    than fits in memory at once. The loss (and, with a loss mask, the weighting) is the mean of the
    parts' mean losses.
    """

    def loss_and_grad(params, batch: Batch):
        return jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch))(params)

    def accumulated(params, batch: Batch):
        def split(x):  # [B, ...] -> [k, B/k, ...], part j holding rows j, j+k, j+2k, ...
            return x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)

        def add(carry, part):
            loss, grads = loss_and_grad(params, part)
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        total, _ = jax.lax.scan(add, zeros, jax.tree.map(split, batch))
        return jax.tree.map(lambda x: x / microbatches, total)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        if microbatches == 1:
            loss, grads = loss_and_grad(state.params, batch)
        else:
            loss, grads = accumulated(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return train_step


@functools.lru_cache(maxsize=64)
def _good_to_save(graphdef: nnx.GraphDef, loss_fn: LossFn):
    """Jitted (params, batch) -> True when every parameter and the loss on `batch` are finite."""

    @jax.jit
    def good(params, batch: Batch) -> jax.Array:
        finite = [jnp.isfinite(x).all() for x in jax.tree.leaves(params)]
        loss = loss_fn(nnx.merge(graphdef, params), batch)
        return jnp.all(jnp.stack([*finite, jnp.isfinite(loss)]))

    return good


def eval_schedule(steps: int, every: int, log_points: int = 16) -> list[int]:
    """0, every multiple of `every`, the last step, plus `log_points` log-spaced early steps."""
    points = set(range(0, steps + 1, every)) | {steps}
    if steps > 1:
        points |= {round(x) for x in np.geomspace(1, steps, log_points)}
    return sorted(points)


# ---------------------------------------------------------------------------------------------
# Loop


@dataclasses.dataclass
class TrainResult:
    graphdef: nnx.GraphDef
    state: TrainState
    history: list[dict[str, Any]]  # metrics.jsonl rows (train and eval)
    wall_time_s: float
    resumed_from: int | None

    def model(self) -> nnx.Module:
        """The trained model, holding the final parameters as device arrays."""
        return nnx.merge(self.graphdef, self.state.params)

    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.history if r["kind"] == "eval"]


EvalFn = Callable[[nnx.Module, int], dict[str, Any]]


def _append_jsonl(path: Path | None, row: dict[str, Any]) -> None:
    if path is not None:
        with path.open("a") as f:
            f.write(run_dir.json_text(row, indent=None) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The rows of `metrics.jsonl`; a torn last line (a kill mid-write) is dropped."""
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i != len(lines) - 1:
                raise DataError(f"{path}:{i + 1} is not a JSON row; the log is damaged") from None
    return rows


def restore_history(jsonl: Path, step: int) -> list[dict[str, Any]]:
    """The log rows up to the restored checkpoint's `step`, or DataError if the log does not
    reach it: the claims read the whole time series, so resuming without it would change them."""
    if not jsonl.exists():
        raise DataError(
            f"cannot resume from the checkpoint at step {step}: {jsonl} is missing, and the "
            "claims need the logged time series from step 0; rerun without --resume"
        )
    rows = read_log(jsonl)
    if not any(r.get("kind") == "train" and r.get("step") == step for r in rows):
        last = max((r.get("step", 0) for r in rows), default=0)
        raise DataError(
            f"cannot resume from the checkpoint at step {step}: {jsonl} ends at step {last}, "
            "and the claims need the logged time series up to it; rerun without --resume"
        )
    return [r for r in rows if r.get("step", 0) <= step]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot resume: {path} does not load ({err})") from None


def _check_data(out: Path, fingerprint: str | None) -> None:
    """ConfigError if the run was trained on other data (e.g. an edited corpus file)."""
    saved = out / "data.json"
    if fingerprint is None or not saved.exists():
        return
    before = _read_json(saved).get("fingerprint")
    if before != fingerprint:
        raise ConfigError(
            f"cannot resume {out}: the training data changed since the saved run (fingerprint "
            f"{before} -> {fingerprint}); resume on the same data or start a fresh run"
        )


def _first_bad(losses: list[tuple[int, jax.Array]]) -> int | None:
    if not losses:
        return None
    values = np.asarray(jax.device_get(jnp.stack([loss for _, loss in losses])))
    bad = np.flatnonzero(~np.isfinite(values))
    return losses[bad[0]][0] if bad.size else None


def train(
    cfg: TaskConfig,
    model_factory: Callable[[nnx.Rngs], nnx.Module],
    batch_fn: Callable[[int], Any],  # step -> batch (a pytree of arrays: `Batch` or a task's own)
    *,
    out_dir: str | Path | None = None,
    resume: bool | run_dir.Resume = False,
    eval_fn: EvalFn | None = None,
    eval_steps: list[int] | None = None,
    loss_fn: LossFn = next_token_loss,
    data_fingerprint: str | None = None,
) -> TrainResult:
    """Train `model_factory(rngs)` on `batch_fn(step)` for `cfg.train.steps` steps.

    `eval_fn(model, step)` runs on the un-donated parameters at `eval_steps` (default
    `eval_schedule`) and its dict is logged. With `out_dir` (a run folder, see
    `sinks_jax.run_dir`: locked, a previous run archived), rows go to `metrics.jsonl`, the
    resolved config to `config.json`, and checkpoints to `checkpoints/`. `resume` continues from
    the newest intact checkpoint after checking that the config continues the saved one and that
    the log reaches the checkpoint (else ConfigError / DataError before anything is written).
    `data_fingerprint` (e.g. a corpus content hash) is saved, and a resume on other data refused.
    """
    tc = cfg.train
    check_microbatches(cfg.data.batch_size, tc.microbatches)
    with contextlib.ExitStack() as stack:
        out = None if out_dir is None else Path(out_dir)
        owns_folder = out is not None and not run_dir.held_by_this_process(out)
        if out is not None:
            out = stack.enter_context(
                run_dir.open_run(
                    out,
                    resume=bool(resume),
                    mark={"kind": "train", "config": to_dict(cfg)},
                )  # on resume `_train` checks the saved config.json before writing anything
            )
        return _train(
            cfg,
            model_factory,
            batch_fn,
            out,
            owns_folder,
            resume,
            eval_fn,
            eval_steps,
            loss_fn,
            data_fingerprint,
        )


def _check_resume(cfg: Any, saved: dict[str, Any], resume: Any, where: Path) -> None:
    run_dir.check_resume_config(
        saved,
        to_dict(cfg),
        where=where,
        extend_schedule=run_dir.extends_schedule(resume),
        defaults=leaf_defaults(type(cfg)),
    )


def _train(
    cfg: TaskConfig,
    model_factory: Callable[[nnx.Rngs], nnx.Module],
    batch_fn: Callable[[int], Any],  # step -> batch (a pytree of arrays: `Batch` or a task's own)
    out: Path | None,
    owns_folder: bool,  # train() opened `out` itself (not a sub-run of a module's run)
    resume: bool | run_dir.Resume,
    eval_fn: EvalFn | None,
    eval_steps: list[int] | None,
    loss_fn: LossFn,
    data_fingerprint: str | None,
) -> TrainResult:
    tc = cfg.train
    optimizer = make_optimizer(cfg.optim, tc.steps)
    graphdef, state = init_state(model_factory(nnx.Rngs(cfg.seed)), optimizer, cfg.seed)
    mesh = sharding.make_mesh(tc.devices, cfg.data.batch_size)
    state = sharding.place_state(state, mesh, tc.fsdp)

    jsonl = None if out is None else out / "metrics.jsonl"
    ckpt = None
    if out is not None:
        ckpt = Checkpointer(out / "checkpoints", tc.checkpoint_every, tc.keep_checkpoints)
    history: list[dict[str, Any]] = []
    resumed_from = None
    try:
        if resume and out is not None:
            assert ckpt is not None  # a run folder always has its checkpoint manager
            saved_config = out / "config.json"
            if saved_config.exists():  # this run's own config (a sub-run of a module)
                _check_resume(cfg, _read_json(saved_config), resume, out)
            _check_data(out, data_fingerprint)
            restored = ckpt.restore_latest_good(state, set_aside=False)
            if restored is None:
                print(
                    f"[sinks_jax] --resume: no checkpoint in {ckpt.directory}; starting from step 0"
                )
            else:
                state, resumed_from = restored
                if resumed_from > tc.steps:
                    raise ConfigError(
                        f"cannot resume {out}: train.steps={tc.steps} is smaller than the "
                        f"checkpoint's step {resumed_from}"
                    )
                history = restore_history(out / "metrics.jsonl", resumed_from)
                ckpt.set_aside_damaged()
                print(f"[sinks_jax] resumed from step {resumed_from} ({ckpt.directory})")
        if out is not None:  # written only once every check has passed
            if data_fingerprint is not None:
                run_dir.atomic_write_json(out / "data.json", {"fingerprint": data_fingerprint})
            if resume and owns_folder:  # the mark now describes the resumed run
                run_dir.write_mark(out, {"kind": "train", "config": to_dict(cfg)})
            run_dir.atomic_write_json(out / "config.json", to_dict(cfg))
            run_dir.atomic_write_text(
                out / "metrics.jsonl",
                "".join(run_dir.json_text(r, indent=None) + "\n" for r in history),
            )
    except BaseException:
        if ckpt is not None:
            ckpt.close()
        raise

    step_fn = make_train_step(graphdef, optimizer, loss_fn, tc.microbatches)
    evals = set(eval_schedule(tc.steps, tc.eval_every) if eval_steps is None else eval_steps)
    start = int(state.step)

    def run_eval(step: int) -> None:
        if (
            eval_fn is None
            or step not in evals
            or any(r["kind"] == "eval" and r["step"] == step for r in history)
        ):
            return
        row = {"kind": "eval", "step": step, **eval_fn(nnx.merge(graphdef, state.params), step)}
        history.append(row)
        _append_jsonl(jsonl, row)

    pending: list[tuple[int, jax.Array]] = []  # (step, loss) not yet checked for NaN

    def diverged(step: int) -> TrainingDivergedError:
        kept = ""
        if ckpt is not None and ckpt.latest_step() is not None:
            kept = (
                f"; the last good checkpoint (step {ckpt.latest_step()}) is kept in "
                f"{ckpt.directory}"
            )
        return TrainingDivergedError(
            f"loss became NaN/inf at step {step}{kept}. Lower optim.lr, enable optim.grad_clip, "
            "or resume from the checkpoint with different settings."
        )

    def check_finite() -> None:
        bad = _first_bad(pending)
        if bad is not None:
            raise diverged(bad)
        pending.clear()

    good_to_save = _good_to_save(graphdef, loss_fn)

    t0 = time.perf_counter()
    interactive = sys.stderr.isatty()  # in logs (CI, nohup) redraw rarely instead of 30 times/s
    bar = tqdm(
        total=tc.steps,
        initial=start,
        disable=not tc.progress,
        desc="train",
        dynamic_ncols=True,
        mininterval=0.5 if interactive else 30.0,
    )
    window_t, window_steps = time.perf_counter(), 0
    try:
        run_eval(start)
        ahead: tuple[int, Any] | None = None  # (step, batch) built early by the checkpoint guard
        for step in range(start, tc.steps):
            host_batch = ahead[1] if ahead is not None and ahead[0] == step else batch_fn(step)
            ahead = None
            batch = sharding.shard_batch(host_batch, mesh)
            state, metrics = step_fn(state, batch)
            done = step + 1
            pending.append((done, metrics["loss"]))
            window_steps += 1
            bar.update(1)
            is_ckpt = ckpt is not None and (done % tc.checkpoint_every == 0 or done == tc.steps)
            if done % tc.log_every == 0 or done in evals or is_ckpt:
                check_finite()
                elapsed = time.perf_counter() - window_t
                row = {
                    "kind": "train",
                    "step": done,
                    "loss": float(metrics["loss"]),
                    "grad_norm": float(metrics["grad_norm"]),
                    "steps_per_s": window_steps / max(elapsed, 1e-9),
                }
                window_t, window_steps = time.perf_counter(), 0
                history.append(row)
                _append_jsonl(jsonl, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            run_eval(done)
            if is_ckpt and ckpt is not None:
                # A checkpoint is good only if its parameters are finite and give a finite loss
                # on the next step's batch (that loss is otherwise only seen one step later).
                # With micro-batches only the first part is checked (the whole batch need not
                # fit in memory at once): part 0, rows 0, k, 2k, ... as in the train step.
                ahead = (done, batch_fn(done))  # the next step uses it (built once)
                if tc.microbatches > 1:
                    part = jax.tree.map(lambda x: x[:: tc.microbatches], ahead[1])
                    next_batch = sharding.replicate(part, mesh)  # any row count
                else:
                    next_batch = sharding.shard_batch(ahead[1], mesh)
                if not bool(good_to_save(state.params, next_batch)):
                    raise diverged(done + 1)
                ckpt.save(done, state, force=done == tc.steps)
        check_finite()
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    return TrainResult(graphdef, state, history, time.perf_counter() - t0, resumed_from)
