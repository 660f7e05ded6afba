"""What every benchmark shares: the machine, the command, a dense-matmul ceiling, FLOPs.

The ceiling of a benchmark is the machine's float32 dense-matmul rate measured in the
same run, at the shape of the model's main layer ([rows, 512] x [512, 512], rows = the
rows one step of the workload pushes through it), as a sustained chain inside one
``fori_loop``; the benchmarks alternate it with their own timing round by round, so
both see the same machine load, and report the best round of each.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def machine() -> dict:
  dev = jax.devices()[0]
  return {"platform": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
          "devices": jax.device_count(), "cpu_count": os.cpu_count(),
          "processor": platform.processor() or platform.machine(),
          "python": platform.python_version(), "jax": jax.__version__,
          "loadavg_1min": os.getloadavg()[0]}


def command() -> str:
  return " ".join([os.path.basename(sys.executable)] + sys.argv)


def matmul_rate(rows: int, width: int = 512, seconds: float = 0.3) -> float:
  """Sustained FLOP/s of jitted float32 [rows, width] x [width, width] matmuls: a chain
  inside one ``fori_loop`` running for about ``seconds`` (a short burst would catch
  the CPU at its best moment only)."""
  w = jax.random.normal(jax.random.key(2), (width, width), jnp.float32) / math.sqrt(width)
  h = jax.random.normal(jax.random.key(1), (rows, width), jnp.float32)
  chain = jax.jit(lambda h, n: jax.lax.fori_loop(0, n, lambda _, a: a @ w, h))
  chain(h, 1).block_until_ready()
  t = time.perf_counter()
  chain(h, 4).block_until_ready()
  n = max(4, int(seconds / max((time.perf_counter() - t) / 4, 1e-6)))
  t = time.perf_counter()
  chain(h, n).block_until_ready()
  return 2.0 * rows * width * width * n / (time.perf_counter() - t)


def kernel_flops(tree) -> int:
  """Multiply-add FLOPs of one row through every Dense kernel [in, out] in ``tree``."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return sum(2 * int(np.prod(v.shape)) for path, v in leaves
             if getattr(path[-1], "key", None) == "kernel" and len(v.shape) == 2)


def warn_if_ceiling_moved(rates, unit: str) -> None:
  """Prints a warning when the ceiling measurements of one run differ by more than a
  quarter: a shared machine whose cores were taken by other work for part of the run
  (the headline figures use the best of them)."""
  if max(rates) > 1.25 * min(rates):
    print(f"warning: the matmul ceiling moved from {min(rates):,.0f} to {max(rates):,.0f} "
          f"{unit} during the run: the machine is shared; the best of each is reported")


def steps_per_second(step, state, inputs, steps: int) -> float:
  """Steps per second of a jitted ``step(state, *inputs) -> (state, metrics)``, after one
  call to compile it."""
  state, _ = step(state, *inputs)
  jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(steps):
    state, _ = step(state, *inputs)
  jax.block_until_ready(state)
  return steps / (time.perf_counter() - t)
