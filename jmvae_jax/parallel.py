"""Data parallelism with ``jax.jit`` over a device Mesh (one axis, ``data``).

Parameters and optimiser state are replicated; batches are split along their
leading axis over every device of every process. Each process feeds only its
own rows (``global_batch / process_count``); ``shard_batch`` assembles them into
one global array with ``jax.make_array_from_process_local_data``. Several hosts
join through JAX's own runtime (``jax.distributed.initialize``, called by
launch.py when asked), never a home-made one.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jmvae_jax.errors import ConfigError

AXIS = "data"


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a no-op for one process); used
  where process 0 writes a file the others then read."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"jmvae_jax: {name}")


def make_mesh() -> Mesh:
  """A one-axis mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh: Mesh):
  """Places every leaf of ``tree`` on all devices."""
  return jax.device_put(tree, replicated(mesh))


def check_batch_size(batch_size: int, field: str = "config.train.batch_size") -> int:
  """The per-process batch size; the global one must split evenly over devices."""
  devices, processes = jax.device_count(), jax.process_count()
  if batch_size <= 0 or batch_size % devices:
    raise ConfigError(f"{field}={batch_size} must be a positive multiple of the device "
                      f"count ({devices})")
  return batch_size // processes


def shard_batch(local: dict, mesh: Mesh) -> dict:
  """This process's rows of a batch -> global arrays split over the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
