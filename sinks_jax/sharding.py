"""Data-parallel sharding over a 1-D device mesh (`data` axis).

Parameters and optimiser state are replicated; batches are split along their leading axis.
Test on CPU with `XLA_FLAGS=--xla_force_host_platform_device_count=8`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(n_devices: int = 0, batch_size: int | None = None) -> Mesh:
    """A mesh over the first `n_devices` local devices (0 = as many as divide `batch_size`)."""
    devices = jax.devices()
    n = n_devices or len(devices)
    if n > len(devices):
        from sinks_jax.errors import ConfigError

        raise ConfigError(f"train.devices={n_devices} but only {len(devices)} devices are visible")
    if batch_size is not None and not n_devices:
        while batch_size % n:
            n -= 1
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Split every array of `tree` along its leading (batch) axis across the mesh."""
    return jax.device_put(tree, batch_sharded(mesh))
