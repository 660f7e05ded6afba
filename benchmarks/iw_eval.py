"""Throughput of the importance-sampled ``joint`` estimator at k = 5000 (paper's MNIST model).

  .venv/bin/python benchmarks/iw_eval.py                 # ~1-2 minutes on 2 CPU cores
  .venv/bin/python benchmarks/iw_eval.py --examples=256 --loop_examples=32 --rounds=5

Reports importance samples per second of ``eval.estimate`` beside
(a) a ceiling: the dense float32 matmul rate of this machine (benchmarks/common.py:
    sustained [rows, 512] x [512, 512] matmuls at the evaluator's row count, the
    model's main layer shape, measured in the same run), divided by the matmul FLOPs per importance
    sample (both decoders, plus the latent-space arithmetic of the proposal and
    prior densities);
(b) a per-example Python loop: one jitted call per test example drawing all k
    samples at once (the authors' code and MultiVae loop over examples like
    this).
Matmul and evaluator timings alternate round by round, so each pair sees the same
machine load; the headline is the round with the median ratio, the best of each
beside it.
Random parameters and random binary images: throughput does not depend on the
values. ``--matmul_precision`` (config.eval's, "highest" by default) applies to all
three: on a GPU "default" means TF32 products, faster and less exact. The FLOP count
covers dense layers only (the MNIST model has no others).
The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jmvae_jax  # noqa: E402
from configs import mnist  # noqa: E402
from jmvae_jax import distributions as D  # noqa: E402
from jmvae_jax import eval as L, schema  # noqa: E402
from benchmarks.common import command, kernel_flops, machine, matmul_rate  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--k", type=int, default=5000)
  p.add_argument("--examples", type=int, default=64, help="test examples per round")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--chunk_size", type=int, default=0,
                 help="samples per example per step; 0: from --memory_budget_mb")
  p.add_argument("--memory_budget_mb", type=float, default=32.0,
                 help="activation memory of one chunk step")
  p.add_argument("--rounds", type=int, default=8,
                 help="timed passes over the examples; the best is reported")
  p.add_argument("--loop_examples", type=int, default=8)
  p.add_argument("--loop_rounds", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--matmul_precision", default="highest", choices=schema.MATMUL_PRECISIONS,
                 help="of the evaluator, the loop and the ceiling alike (config.eval)")
  return p.parse_args(argv)


def flops_per_sample(model, params, plan) -> int:
  """Per importance sample: the decoder matmuls of every decoder a pass runs, plus
  drawing z, log q(z) and log p(z) (about 7 flops per latent dimension)."""
  total = 0
  for p in plan.passes:
    decoders = {n for t in p.terms for n in t.targets}
    total += sum(kernel_flops(params["decoder"][n]) for n in decoders)
    total += 7 * model.spec.latent_dim
  return total


def loop_joint_fn(model, k):
  """One example, all k samples at once: the plain per-example implementation."""
  spec = model.spec

  def one(params, example, key):
    batch = {n: v[None] for n, v in example.items()}
    q = model.encode(params, spec.names, batch)
    z = D.sample(key, D.DiagGaussian(jnp.broadcast_to(q.mean, (k, spec.latent_dim)),
                                     jnp.broadcast_to(q.logvar, (k, spec.latent_dim))))
    a = D.standard_normal_log_prob(z) - D.log_prob(q, z)
    for n in spec.names:
      a = a + model.log_likelihood(params, n, z, batch[n])
    return D.logmeanexp(a)

  return jax.jit(one)


def time_loop(fn, params, examples, key, rounds, k) -> float:
  """Best samples per second of a Python loop over examples, one call each."""
  jax.block_until_ready(fn(params, examples[0], key))
  best = math.inf
  for _ in range(rounds):
    t = time.perf_counter()
    for i, ex in enumerate(examples):
      jax.block_until_ready(fn(params, ex, jax.random.fold_in(key, i)))
    best = min(best, time.perf_counter() - t)
  return len(examples) * k / best


def compiled_temp_bytes(model, plan, params, batch_mask, k, chunk) -> int:
  """Scratch memory XLA allocates for one call of the per-batch function (-1 if the
  backend does not say)."""
  batch, mask = batch_mask
  n = len(mask)
  args = (params, batch, np.arange(n, dtype=np.int32), mask, {}, np.int32(k), np.int32(k),
          np.int32(0))
  stats = L.batch_fn(model, plan, chunk).lower(*args).compile().memory_analysis()
  return int(getattr(stats, "temp_size_in_bytes", -1)) if stats is not None else -1


def make_batches(images, labels, batch_size):
  """(batch, mask) pairs, the last one padded."""
  n, out = len(labels), []
  for s in range(0, n, batch_size):
    rows = np.arange(s, s + batch_size) % n
    mask = (np.arange(s, s + batch_size) < n).astype(np.float32)
    out.append(({"image": images[rows], "label": labels[rows]}, mask))
  return out


def main(argv=None):
  args = parse_args(argv)
  opts = L.options(k=args.k, prior_samples=1, chunk_size=max(args.chunk_size, 1),
                   seed=args.seed, batch_size=args.batch_size,
                   matmul_precision=args.matmul_precision)
  precision = jax.default_matmul_precision(args.matmul_precision)
  config = mnist.get_config()
  model, _ = jmvae_jax.build(config)
  params = model.init(jax.random.key(args.seed))
  plan = L.make_plan(model, ("joint",))
  chunk = args.chunk_size or L.suggest_chunk_size(
      model, plan, batch_size=args.batch_size, k=args.k,
      memory_budget_mb=args.memory_budget_mb)
  rows = args.batch_size * chunk
  fps = flops_per_sample(model, params, plan)
  info = machine()
  print("command:", command())
  print("machine:", json.dumps(info))
  print(f"model: configs/mnist.py (decoders 512-512, z 64), k={args.k}, "
        f"batch_size={args.batch_size}, chunk_size={chunk} ({rows} rows per step), "
        f"{fps / 1e6:.3f} MFLOP per importance sample")

  rng = np.random.default_rng(args.seed)
  images = (rng.random((args.examples, 28, 28, 1)) < 0.5).astype(np.float32)
  labels = rng.integers(0, 10, args.examples).astype(np.int32)
  batches = make_batches(images, labels, args.batch_size)
  run = lambda b: L.estimate(model, params, b, k=args.k, prior_samples=1, chunk_size=chunk,
                             seed=opts["seed"], estimators=("joint",),
                             matmul_precision=args.matmul_precision)
  t = time.perf_counter()
  run(batches[:1])
  print(f"compile + first batch: {time.perf_counter() - t:.1f} s")
  with precision:
    temp = compiled_temp_bytes(model, plan, params, batches[0], args.k, chunk)
  print(f"evaluator's XLA temporaries: {temp / 2**20:.1f} MiB (budget {args.memory_budget_mb} MB)")

  rates, flops = [], []
  for r in range(args.rounds):
    with precision:
      flops.append(matmul_rate(rows))
    res = run(batches)
    rates.append(res["num_examples"] * args.k / res["seconds"])
    print(f"round {r}: {rates[-1]:,.0f} samples/s; matmul {flops[-1] / 1e9:.0f} GFLOP/s "
          f"(ceiling {flops[-1] / fps:,.0f} samples/s); joint mean "
          f"{res['estimates']['joint']['mean']:.2f}")

  examples = [{"image": images[i], "label": labels[i]} for i in range(args.loop_examples)]
  key = jax.random.key(args.seed)
  plain = loop_joint_fn(model, args.k)
  with precision:
    loop_sps = time_loop(plain, params, examples, key, args.loop_rounds, args.k)
  print(f"per-example Python loop: {loop_sps:,.0f} samples/s")

  if info["platform"] == "gpu":
    peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0)
  else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  fractions = np.array(rates) / (np.array(flops) / fps)   # each pair saw the same load
  r = int(np.argsort(fractions)[len(fractions) // 2])      # the median round
  result = {
      "samples_per_second": rates[r],
      "ceiling_samples_per_second": flops[r] / fps,
      "fraction_of_ceiling": float(fractions[r]),
      "best_samples_per_second": max(rates),
      "best_ceiling_samples_per_second": max(flops) / fps,
      "loop_samples_per_second": loop_sps,
      "speedup_over_loop": rates[r] / loop_sps,
      "matmul_flops_per_second": flops[r],
      "flops_per_sample": fps,
      "joint_mean": res["estimates"]["joint"]["mean"],
      "matmul_precision": args.matmul_precision,
      "k": args.k, "examples": args.examples, "batch_size": args.batch_size,
      "chunk_size": chunk, "rows_per_step": rows, "memory_budget_mb": args.memory_budget_mb,
      "peak_memory_bytes": int(peak),
      "peak_memory_kind": "device peak_bytes_in_use" if info["platform"] == "gpu"
                          else "process max RSS (includes the JAX runtime)",
      "evaluator_temp_bytes": temp,
      "platform": info["platform"], "cpu_count": info["cpu_count"], "jax": info["jax"],
      "loadavg_1min": os.getloadavg()[0],
  }
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
