"""Where the MNIST JMVAE-kl train step spends its time, and how fast it could be.

  .venv/bin/python benchmarks/step_profile.py [--batch_size=100] [--steps=40] [--optimizer=sgd]

Compiles the step that benchmarks/train_throughput.py times, times it, then traces
it with ``jax.profiler`` (a perfetto trace) and joins each XLA op's median duration
to the dependency graph of the compiled HLO. It prints
- the ops per step and their summed durations ("thread time"), split into matmuls
  (YNNPACK fusions and dots), the optimiser (every op downstream of the Adam moments)
  and the rest;
- the critical path: the longest chain of dependent ops, at their traced durations;
- the packing bound: the step time if every core were busy from the first op to the
  last, max(critical path, thread time / cores);
- the measured step time (the best of 5 rounds), and both as fractions of the matmul
  ceiling of train_throughput.py (the best of 5 measurements alternating with them).
``--optimizer=sgd`` swaps the authors' clipped Adam for plain SGD, the cheapest
update there is: what the forward and backward passes reach on their own.
The gap between the measured step and the packing bound is time the cores spend
idle between ops: XLA:CPU's scheduling, which the model code does not control.
The last line is JSON.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax   # noqa: E402
import numpy as np   # noqa: E402
import optax   # noqa: E402

from benchmarks.common import command, machine, matmul_rate, warn_if_ceiling_moved   # noqa: E402
from benchmarks.train_throughput import mnist_step, step_flops_per_image   # noqa: E402


def entry_graph(hlo_text: str) -> dict[str, list[str]]:
  """{instruction: operands} of the compiled module's ENTRY computation, in order."""
  entry = hlo_text[hlo_text.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  graph: dict[str, list[str]] = {}
  for line in entry.splitlines()[2:]:
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = [^(]*?\(([^)]*)\)", line)
    if m:
      graph[m.group(1)] = [d for d in re.findall(r"%([\w.\-]+)", m.group(2)) if d in graph]
  return graph


def traced_durations(trace_dir: str) -> dict[str, float]:
  """Median duration in microseconds of every op in the perfetto trace, by name."""
  path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  durations = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X":
      durations[e["name"]].append(float(e.get("dur", 0.0)))
  return {name: float(np.median(d)) for name, d in durations.items()}


def critical_path(graph, duration) -> float:
  finish: dict[str, float] = {}
  for op, deps in graph.items():           # HLO lists operands before their users
    finish[op] = max((finish[d] for d in deps), default=0.0) + duration.get(op, 0.0)
  return max(finish.values())


def optimiser_ops(graph) -> set[str]:
  """Ops that read the Adam moments, directly or through another such op."""
  marked: set[str] = set()
  for op, deps in graph.items():
    if op.startswith("state_opt_state_mu") or op.startswith("state_opt_state_nu") or (
        any(d in marked for d in deps)):
      marked.add(op)
  return marked


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--steps", type=int, default=40, help="steps per round, and traced")
  parser.add_argument("--optimizer", choices=("authors", "sgd"), default="authors")
  args = parser.parse_args()
  if jax.default_backend() != "cpu":
    sys.exit(f"step_profile.py reads XLA:CPU's ops and cores; this backend is "
             f"{jax.default_backend()}: run it with JAX_PLATFORMS=cpu")

  sgd = optax.sgd(1e-3) if args.optimizer == "sgd" else None
  step, state, inputs = mnist_step(args.batch_size, sgd)
  compiled = step.lower(state, *inputs).compile()     # the very executable traced below
  graph = entry_graph(compiled.as_text())
  state, _ = compiled(state, *inputs)
  jax.block_until_ready(state)
  walls, rates = [], []
  for _ in range(5):
    rates.append(matmul_rate(args.batch_size))
    t = time.perf_counter()
    for _ in range(args.steps):
      state, _ = compiled(state, *inputs)
    jax.block_until_ready(state)
    walls.append((time.perf_counter() - t) / args.steps * 1e6)
  flops = step_flops_per_image(state.params) * args.batch_size
  ceiling_us = flops / max(rates) * 1e6
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.steps):
        state, _ = compiled(state, *inputs)
      jax.block_until_ready(state)
    duration = traced_durations(trace_dir)

  ops = [op for op in graph if op in duration]
  optimiser = optimiser_ops(graph)
  parts = collections.Counter()
  for op in ops:
    kind = ("optimiser" if op in optimiser else
            "matmul" if op.startswith(("ynn_fusion", "dot", "xnn_fusion")) else "other")
    parts[kind] += duration[op]
  busy, path = sum(parts.values()), critical_path(graph, duration)
  cores = os.cpu_count() or 1
  bound = max(path, busy / cores)
  wall = min(walls)
  print("command:", command())
  print("machine:", json.dumps(machine()))
  warn_if_ceiling_moved([r / 1e9 for r in rates], "GFLOP/s")
  print(f"{len(ops)} ops per step; thread time {busy / 1e3:.2f} ms: " + ", ".join(
      f"{k} {v / 1e3:.2f}" for k, v in parts.most_common()))
  print(f"critical path {path / 1e3:.2f} ms; packing bound on {cores} cores {bound / 1e3:.2f} ms "
        f"({ceiling_us / bound:.3f} of the ceiling); measured step {wall / 1e3:.2f} ms "
        f"({ceiling_us / wall:.3f}); ceiling {ceiling_us / 1e3:.2f} ms")
  print(json.dumps({
      "ops_per_step": len(ops), "thread_ms": round(busy / 1e3, 3),
      **{f"{k}_thread_ms": round(v / 1e3, 3) for k, v in parts.items()},
      "critical_path_ms": round(path / 1e3, 3), "packing_bound_ms": round(bound / 1e3, 3),
      "measured_step_ms": round(wall / 1e3, 3), "ceiling_step_ms": round(ceiling_us / 1e3, 3),
      "bound_fraction_of_ceiling": round(ceiling_us / bound, 4),
      "measured_fraction_of_ceiling": round(ceiling_us / wall, 4),
      "optimizer": args.optimizer, "batch_size": args.batch_size}))


if __name__ == "__main__":
  main()
