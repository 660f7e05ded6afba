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
- the list schedule: the step time of a greedy schedule of the same ops on the same
  cores (longest remaining path first) with no cost between ops: what an executor with
  no overhead reaches, given how many ops are ready at each moment;
- the measured step time (the best of 5 rounds), and each as a fraction of the matmul
  ceiling of train_throughput.py (the best of 5 measurements alternating with them);
- the hand-over per op at which the list schedule takes the measured time.
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


def list_schedule(graph, duration, cores: int, gap: float = 0.0) -> float:
  """Length of a greedy list schedule of ``graph`` on ``cores`` workers: whenever a
  worker is free it starts the ready op with the longest path to the end. Each traced op
  costs ``gap`` more (a hand-over between ops); untraced ones (parameters, tuples,
  bitcasts) cost nothing. With ``gap=0`` this is what an executor with no overhead
  reaches with these ops and this dependency graph. ``graph`` lists operands before
  their users, as ``entry_graph`` does."""
  users = collections.defaultdict(list)
  for op, deps in graph.items():
    for d in set(deps):
      users[d].append(op)
  cost = {op: duration[op] + gap if op in duration else 0.0 for op in graph}
  level: dict[str, float] = {}
  for op in reversed(list(graph)):
    level[op] = cost[op] + max((level[u] for u in users[op]), default=0.0)
  waiting = {op: len(set(deps)) for op, deps in graph.items()}
  ready = {op: 0.0 for op, n in waiting.items() if n == 0}   # op: time its inputs exist
  finish: dict[str, float] = {}
  free = [0.0] * cores
  while ready:
    w = min(range(cores), key=free.__getitem__)
    now = max(free[w], min(ready.values()))
    op = max((o for o, t in ready.items() if t <= now), key=level.__getitem__)
    del ready[op]
    finish[op] = free[w] = now + cost[op]
    for u in users[op]:
      waiting[u] -= 1
      if waiting[u] == 0:
        ready[u] = max(finish[d] for d in graph[u])
  return max(finish.values())


def gap_to_match(graph, duration, cores: int, wall: float) -> float:
  """The per-op hand-over (microseconds) at which ``list_schedule`` takes ``wall``, by
  bisection: that assumes the schedule lengthens as the gap grows, which greedy list
  scheduling does not guarantee but which holds when every op pays the same gap."""
  if list_schedule(graph, duration, cores) >= wall:
    return 0.0
  lo, hi = 0.0, 1.0
  while list_schedule(graph, duration, cores, hi) < wall:
    lo, hi = hi, 2 * hi
  for _ in range(40):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if list_schedule(graph, duration, cores, mid) < wall else (lo, mid)
  return (lo + hi) / 2


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
  scheduled = list_schedule(graph, duration, cores)
  gap = gap_to_match(graph, duration, cores, wall)
  print("command:", command())
  print("machine:", json.dumps(machine()))
  warn_if_ceiling_moved([r / 1e9 for r in rates], "GFLOP/s")
  print(f"{len(ops)} ops per step; thread time {busy / 1e3:.2f} ms: " + ", ".join(
      f"{k} {v / 1e3:.2f}" for k, v in parts.most_common()))
  print(f"critical path {path / 1e3:.2f} ms; packing bound on {cores} cores {bound / 1e3:.2f} ms "
        f"({ceiling_us / bound:.3f} of the ceiling); measured step {wall / 1e3:.2f} ms "
        f"({ceiling_us / wall:.3f}); ceiling {ceiling_us / 1e3:.2f} ms")
  print(f"list schedule of these ops on {cores} cores with no hand-over cost "
        f"{scheduled / 1e3:.2f} ms ({ceiling_us / scheduled:.3f} of the ceiling); the measured "
        f"step matches a hand-over of {gap:.1f} us per op")
  print(json.dumps({
      "ops_per_step": len(ops), "thread_ms": round(busy / 1e3, 3),
      **{f"{k}_thread_ms": round(v / 1e3, 3) for k, v in parts.items()},
      "critical_path_ms": round(path / 1e3, 3), "packing_bound_ms": round(bound / 1e3, 3),
      "list_schedule_ms": round(scheduled / 1e3, 3), "handover_us_per_op": round(gap, 2),
      "list_schedule_fraction_of_ceiling": round(ceiling_us / scheduled, 4),
      "measured_step_ms": round(wall / 1e3, 3), "ceiling_step_ms": round(ceiling_us / 1e3, 3),
      "bound_fraction_of_ceiling": round(ceiling_us / bound, 4),
      "measured_fraction_of_ceiling": round(ceiling_us / wall, 4),
      "optimizer": args.optimizer, "batch_size": args.batch_size}))


if __name__ == "__main__":
  main()
