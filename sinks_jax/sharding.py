"""Data parallelism over a 1-D device mesh (`data` axis), with the parameters and optimiser
state either replicated (plain data parallelism) or fully sharded (FSDP / ZeRO-3 style: each
array split along one axis over the same devices; XLA gathers what a step needs).

Batches are split along their leading axis. Test on CPU with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`.
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


def put(tree: Any, shardings: Any, via_callback: bool | None = None) -> Any:
    """`jax.device_put(tree, shardings)`; with several processes (multi-host, after
    `jax.distributed.initialize()`), each process fills only the shards of its own devices from
    its host copy: every process holds the same values (batches are pure functions of seed and
    step, parameters come from the same seed). `via_callback` forces that path (tests)."""
    if via_callback is None:
        via_callback = jax.process_count() > 1
    if not via_callback:
        return jax.device_put(tree, shardings)
    if isinstance(shardings, NamedSharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def place(x: Any, sharding: NamedSharding) -> jax.Array:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree, shardings)


def replicate(tree: Any, mesh: Mesh) -> Any:
    return put(tree, replicated(mesh))


def fsdp_sharding(x: jax.Array, mesh: Mesh) -> NamedSharding:
    """`x` split over the mesh along its largest axis the device count divides; replicated when
    none does (scalars, biases of odd size)."""
    n = mesh.size
    for axis in sorted(range(x.ndim), key=lambda a: -x.shape[a]):
        if x.shape[axis] % n == 0:
            spec: list[str | None] = [None] * x.ndim
            spec[axis] = DATA_AXIS
            return NamedSharding(mesh, PartitionSpec(*spec))
    return replicated(mesh)


def place_state(tree: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """Parameters and optimiser state on the mesh: fully sharded with `fsdp`, else replicated."""
    if not fsdp:
        return replicate(tree, mesh)
    return put(tree, jax.tree.map(lambda x: fsdp_sharding(x, mesh), tree))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Split every array of `tree` along its leading (batch) axis across the mesh."""
    return put(tree, batch_sharded(mesh))
