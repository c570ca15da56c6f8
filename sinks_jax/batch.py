"""The batch every next-token task hands to the model and the loss."""

from __future__ import annotations

import jax
import numpy as np
from flax import struct

Array = jax.Array | np.ndarray  # host (numpy) batches until the train loop shards them


class Batch(struct.PyTreeNode):
    """Model inputs and next-token targets; optional fields are for packed text."""

    inputs: Array  # [B,T] int32
    targets: Array  # [B,T] int32
    loss_mask: Array | None = None  # [B,T] float32, 1 = counted
    segment_ids: Array | None = None  # [B,T] int32, 0 = padding
    positions: Array | None = None  # [B,T] int32

    def counted(self) -> np.ndarray:
        """[B,T] bool host mask of the positions the loss counts (all without a loss mask)."""
        if self.loss_mask is None:
            return np.ones(np.shape(self.inputs), bool)
        return np.asarray(self.loss_mask) > 0
