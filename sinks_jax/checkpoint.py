"""Orbax checkpoints of the train state: save every N steps, keep K, restore the latest good one.

A step is *damaged* when restoring it raises (a truncated or missing array file, a missing
`_METADATA` or OCDBT manifest, a deleted `default/` or `ocdbt.process_0/` folder, ...) or gives
a tree whose structure, shapes or dtypes differ from the state it is restored into.
`restore_latest_good` tries the steps newest first; once one restores, each newer (damaged) step
folder is moved, never deleted, to `<checkpoints dir>.damaged/<step>-<time>/`, where orbax no
longer lists it, so that step can be saved again. When no step restores, nothing is moved: the
cause may be the config (another model size) rather than the files.

A save cut short (a process killed mid-save) leaves only `<step>.orbax-checkpoint-tmp/`: orbax
never lists it as a step, and the manager deletes such leftovers when it opens the folder.
"""

from __future__ import annotations

import gc
import inspect
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from sinks_jax.errors import DataError


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` (async saves; `close()` waits for them)."""

    def __init__(self, directory: str | Path, every: int, keep: int):
        self.options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every, create=True, cleanup_tmp_directories=True
        )
        self.directory = Path(directory).absolute()
        self.manager = self._open()
        self._damaged: list[tuple[int, str]] = []  # found by restore_latest_good, not yet moved

    def _open(self) -> ocp.CheckpointManager:
        # A damaged step's reason goes into our one-line error or fallback message; orbax's own
        # log line about its unreadable metadata (printed on listing the steps) is dropped.
        logging.getLogger("absl").addFilter(_not_damaged_metadata_log)  # no-op if added before
        # One unnamed item, fixed here: left open, orbax infers it from the first step folder it
        # reads, and a step without `default/` then makes every later restore fail.
        handler = ocp.StandardCheckpointHandler()
        return ocp.CheckpointManager(self.directory, options=self.options, item_handlers=handler)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Save `state` at `step` if the interval says so (or `force`); returns whether it did."""
        return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, state_like: Any, step: int | None = None) -> Any:
        """Restore into the structure, shapes, dtypes and shardings of `state_like`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest_good(
        self, state_like: Any, *, set_aside: bool = True
    ) -> tuple[Any, int] | None:
        """(state, step) of the newest step that restores intact into `state_like`'s layout, or
        None when there is no checkpoint; raises DataError, in one line, when no step restores.
        Newer, damaged steps are set aside (module doc) at once, or with `set_aside=False` only
        when `set_aside_damaged()` is called (after the caller's own checks have passed)."""
        self.manager.wait_until_finished()
        failed: list[tuple[int, str]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            state, reason = self._try_restore(state_like, step)
            if reason is not None:
                failed.append((step, reason))
                _drop_abandoned_read_errors()
                continue
            self._damaged = failed
            if set_aside:
                self.set_aside_damaged()
            return state, step
        if not failed:
            return None
        reasons = ", ".join(f"step {step}: {reason}" for step, reason in failed)
        raise DataError(
            f"no intact checkpoint in {self.directory} ({reasons}); "
            "rerun without --resume to start fresh"
        )

    def set_aside_damaged(self) -> None:
        """Move the damaged steps found by `restore_latest_good` aside, one line each."""
        for bad, reason in self._damaged:
            dest = self._move_aside(bad)
            print(
                f"[sinks_jax] checkpoint step {bad} in {self.directory} is damaged ({reason}); "
                f"falling back to the previous one (damaged step moved to {dest})"
            )
        if self._damaged:  # a fresh manager forgets the moved steps, so they can be saved again
            self.manager.close()
            self.manager = self._open()
        self._damaged = []

    def _try_restore(self, state_like: Any, step: int) -> tuple[Any, str | None]:
        """(state, None), or (None, why) when the step is damaged."""
        try:
            state = self.restore(state_like, step)
        except Exception as e:  # orbax/tensorstore raise many types; KeyboardInterrupt passes
            return None, _reason(e)
        if _layout(state) != _layout(state_like):
            return None, "ValueError: restored tree differs in structure, shapes or dtypes"
        return state, None

    def _move_aside(self, step: int) -> Path:
        damaged = self.directory.with_name(self.directory.name + ".damaged")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest, n = damaged / f"{step}-{stamp}", 1
        while dest.exists():
            dest, n = damaged / f"{step}-{stamp}-{n}", n + 1
        damaged.mkdir(exist_ok=True)
        shutil.move(self.directory / str(step), dest)
        return dest

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _layout(tree: Any) -> tuple[Any, list[tuple[tuple[int, ...], Any]]]:
    leaves = [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)]
    return jax.tree.structure(tree), leaves


def _reason(e: BaseException) -> str:
    """'Type: first line' of the innermost cause (orbax wraps the tensorstore error that names
    the file), cut to 160 characters."""
    while e.__cause__ is not None:
        e = e.__cause__
    line = (str(e).splitlines() or [""])[0]
    return f"{type(e).__name__}: {line[:160] + '...' if len(line) > 160 else line}"


def _drop_abandoned_read_errors() -> None:
    """A failed restore leaves orbax's other array reads running. As they finish (up to seconds
    later) or are discarded, each prints a traceback or warning: tensorstore callbacks hitting the
    closed event loop, orbax read coroutines raising on close (both via `sys.unraisablehook`) or
    never awaited, asyncio logging their unretrieved errors; thousands of lines in all. From the
    first failed restore on, drop exactly those for the rest of the process."""
    logging.getLogger("asyncio").addFilter(_not_orbax_task_error)  # no-op when already added
    warnings.filterwarnings("ignore", _ORBAX_READ_NEVER_AWAITED, RuntimeWarning)
    previous = sys.unraisablehook
    if getattr(previous, "__name__", None) != "unless_abandoned_read":

        def unless_abandoned_read(u: Any) -> None:
            closed_loop = isinstance(u.exc_value, RuntimeError) and "loop is closed" in str(
                u.exc_value
            )
            orbax_read = inspect.iscoroutine(u.object) and "orbax" in u.object.cr_code.co_filename
            if not (closed_loop or orbax_read):
                previous(u)

        sys.unraisablehook = unless_abandoned_read
    gc.collect()  # finalise the discarded reads now, while the filters are in place


_ORBAX_READ_NEVER_AWAITED = (
    r"coroutine '(_read_array_index_and_device_put|Store\._get_array_metadatas)' was never awaited"
)


def _not_damaged_metadata_log(record: logging.LogRecord) -> bool:
    """False for orbax's log line about an unreadable checkpoint metadata file."""
    return not record.getMessage().startswith("Failed to json parse Metadata file")


def _not_orbax_task_error(record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    marks = ("orbax", "reading array index", "OCDBT database", "tensorstore_spec")
    return not ("never retrieved" in msg and any(m in msg for m in marks))
