"""The one loop over test batches: every test-set quantity (the training bound, the
importance-sampled estimates, the cross-modal metrics) runs through ``run``.

A quantity is a function ``call(batch, index, mask) -> {name: per-example values [B]}``
(0 at padding rows); ``run`` checks each batch against the model, numbers its examples
(``index``: their position in the whole test set, the rng stream of each), pads and
shards it over the mesh, dispatches the next call before reading the last result, and
sums the values over the real examples in float64. The mask is one float per row: 1 for
a real example, 0 for padding.
"""
from __future__ import annotations

import math
import time

import jax
import numpy as np

from jmvae_jax import parallel
from jmvae_jax.errors import ConfigError


def batch_size(model, batch, plan_or_names) -> int:
  """The common leading size of the batch's arrays of ``plan_or_names``."""
  names = getattr(plan_or_names, "inputs", plan_or_names)
  sizes = {n: int(np.shape(batch[n])[0]) for n in names}
  if len(set(sizes.values())) != 1:
    raise ConfigError(f"batch modalities have different batch sizes {sizes}")
  return next(iter(sizes.values()))


def default_mesh():
  """The 1-d 'data' mesh over every device (``parallel.make_mesh``), or None on one."""
  return parallel.make_mesh() if jax.device_count() > 1 else None


def place(mesh, batch, index, mask):
  """Pads this process's rows to a multiple of its local devices (mask 0) and makes
  global arrays sharded on 'data' (``parallel.shard_batch``, multi-process too)."""
  if mesh is None:
    return batch, index, mask
  pad = -mask.shape[0] % jax.local_device_count()
  if pad:
    grow = lambda a: np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
    batch = {n: grow(np.asarray(v)) for n, v in batch.items()}
    index, mask = grow(index), grow(mask)
  placed = parallel.shard_batch(dict(batch, _index=index, _mask=mask), mesh)
  return placed, placed.pop("_index"), placed.pop("_mask")


def gather(tree):
  """Every process's rows of the per-example outputs, on every process."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def replicate(mesh, tree):
  return tree if mesh is None else parallel.replicate(tree, mesh)


def run(model, batches, inputs, call, *, mesh, progress, total, what):
  """Runs ``call(batch, index, mask) -> {name: [B, ...] values}`` over (batch, mask) pairs;
  returns (sums, element-wise sums of squares, count, seconds) over the unmasked
  examples (a value with trailing axes is summed over examples alone).

  Each batch is checked before its call; a call is dispatched before the previous
  result is read, so the host overlaps the device."""
  start = time.perf_counter()
  if total is None and hasattr(batches, "__len__"):
    total_batches = len(batches)
  else:
    total_batches = None
  sums, sqs, count, offset, done = {}, {}, 0, 0, 0
  pending = None

  def collect(item):
    nonlocal count
    out, mask = gather(item)
    keep = np.asarray(mask) > 0
    for n, v in out.items():
      v = np.asarray(v, np.float64)[: keep.shape[0]][keep]
      sums[n] = sums.get(n, 0.0) + v.sum(axis=0)
      sqs[n] = sqs.get(n, 0.0) + np.square(v).sum(axis=0)
    count += int(keep.sum())

  for item in batches:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
      raise ConfigError(f"{what}: batches must yield (batch_dict, mask) pairs")
    batch, mask = item
    model.check_batch(batch, inputs, "batch")
    size = batch_size(model, batch, inputs)
    mask = np.asarray(mask, np.float32).reshape(-1)
    if mask.shape[0] != size:
      raise ConfigError(f"{what}: mask has {mask.shape[0]} entries for a batch of {size}")
    index = (offset + np.cumsum(mask > 0) - 1).clip(0).astype(np.int32)
    # Process p reads examples p, p + P, p + 2P, ... (input_pipeline's sharding).
    index = index * jax.process_count() + jax.process_index()
    offset += int((mask > 0).sum())
    placed = place(mesh, {n: np.asarray(batch[n]) for n in inputs}, index, mask)
    out = call(*placed)
    if pending is not None:
      collect(pending)
    pending = (out, placed[2])
    done += 1
    if progress is not None:
      elapsed = time.perf_counter() - start
      if total is not None:
        eta = elapsed / max(offset, 1) * max(total - offset, 0)
        of = f"/{total} examples"
      elif total_batches:
        eta = elapsed / done * (total_batches - done)
        of = f" examples (batch {done}/{total_batches})"
      else:
        eta, of = None, " examples"
      eta_s = f", ETA {eta:.0f} s" if eta is not None else ""
      progress(f"{what}: {offset}{of}, {elapsed:.1f} s{eta_s}")
  if pending is not None:
    collect(pending)
  return sums, sqs, count, time.perf_counter() - start


def summary(sums, sqs, count):
  out = {}
  for n in sums:
    mean = sums[n] / max(count, 1)
    var = (sqs[n] - count * mean * mean) / max(count - 1, 1)
    out[n] = {"mean": float(mean), "stderr": float(math.sqrt(max(var, 0.0) / max(count, 1)))}
  return out

