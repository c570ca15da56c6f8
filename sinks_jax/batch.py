"""The batch every next-token task hands to the model and the loss."""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class Batch:
    """Model inputs and next-token targets; optional fields are for packed text."""

    inputs: jax.Array  # [B,T] int32
    targets: jax.Array  # [B,T] int32
    loss_mask: jax.Array | None = None  # [B,T] float32, 1 = counted
    segment_ids: jax.Array | None = None  # [B,T] int32, 0 = padding
    positions: jax.Array | None = None  # [B,T] int32
