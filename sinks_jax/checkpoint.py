"""Orbax checkpoints of the train state: save every N steps, keep K, restore the latest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` (async saves; `close()` waits for them)."""

    def __init__(self, directory: str | Path, every: int, keep: int):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every, create=True
        )
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

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

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
