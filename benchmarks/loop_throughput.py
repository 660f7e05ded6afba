"""The training loop's steps per second against its step's, MNIST JMVAE-kl at batch 100.

  .venv/bin/python benchmarks/loop_throughput.py [--data_dir=DIR_OF_mnist.pkl.gz] [--rounds=3]

The loop is ``train.train_and_evaluate`` on configs/mnist.py (the paper's architecture)
reading the tutorials' pickle (a generated one of 10,000 training images unless
``--data_dir`` names a real one): no evaluation or checkpoint until its last step, a
progress line every 100 steps. Its rate is the median over the progress intervals after
the first two (compilation, warm-up), the loop's whole cost: input, binarisation,
placing, dispatch and logging. The step alone is ``train_throughput.mnist_step`` on a
fixed batch already on the device, timed before and after each loop run (their mean is
the reference). Each round pairs one loop run with its two step timings; the last line
is JSON with the median ratio, ``loop_over_step``.
"""
import argparse
import contextlib
import gzip
import io
import json
import os
import pickle
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np   # noqa: E402

from benchmarks.common import command, machine, steps_per_second   # noqa: E402
from benchmarks.train_throughput import mnist_step   # noqa: E402
from configs import mnist   # noqa: E402
from jmvae_jax import train   # noqa: E402

LOG_EVERY = 100


def write_pickle(directory: str, n_train: int = 10_000, seed: int = 0) -> str:
  """A stand-in mnist.pkl.gz: random 8-bit images (p / 256) and labels."""
  rng = np.random.default_rng(seed)
  part = lambda n: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,
                    rng.integers(0, 10, n).astype(np.int64))
  with gzip.open(os.path.join(directory, "mnist.pkl.gz"), "wb") as f:
    pickle.dump((part(n_train), part(100), part(1000)), f, protocol=4)
  return directory


def step_rate(steps: int = 200) -> float:
  """Steps per second of the jitted step alone on a batch already on the device."""
  return steps_per_second(*mnist_step(100), steps)


def loop_rate(data_dir: str, epochs: int, workdir: str) -> float:
  """The median steps per second of the loop's progress intervals after the first two."""
  c = mnist.get_config()
  c.data.source, c.data.data_dir, c.data.split = "pickle", data_dir, "authors"
  c.train.epochs = epochs
  c.train.log_every_steps = LOG_EVERY
  c.train.eval_every_epochs = 0
  c.train.checkpoint_every_steps = 10**9
  c.objective.warmup_epochs = epochs
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train.train_and_evaluate(c, workdir)
  rates = [float(r) for r in re.findall(r" ([\d.]+) steps/s", out.getvalue())]
  return float(np.median(rates[2:]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="", help="a real mnist.pkl.gz's directory")
  parser.add_argument("--epochs", type=int, default=12, help="epochs of each loop run")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  from absl import logging
  logging.set_verbosity(logging.ERROR)
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or write_pickle(tmp)
    ratios, loops, steps = [], [], []
    for r in range(args.rounds):
      before = step_rate()
      loop = loop_rate(data_dir, args.epochs, os.path.join(tmp, f"run{r}"))
      after = step_rate()
      steps.append((before + after) / 2)
      loops.append(loop)
      ratios.append(loop / steps[-1])
      print(f"round {r}: loop {loop:.1f} steps/s; step alone {before:.1f} and {after:.1f} "
            f"steps/s; loop / step {ratios[-1]:.3f}")
  print("command:", command())
  print("machine:", json.dumps(machine()))
  print(json.dumps({"loop_steps_per_second": round(float(np.median(loops)), 1),
                    "step_steps_per_second": round(float(np.median(steps)), 1),
                    "loop_over_step": round(float(np.median(ratios)), 3),
                    "rounds": args.rounds, "batch_size": 100}))


if __name__ == "__main__":
  main()
