"""The paper's Table 1 on MNIST: every row trained and evaluated, then one report.

  python -m jmvae_jax.experiments.table1 --workdir=DIR --data_dir=/path/to/mnist.pkl.gz \
      [--protocol=short|paper] [--rows=jmvae_kl_0.1,jmvae_zero,...]

Each row is an ordinary workdir, DIR/PROTOCOL/ROW: running the command again resumes a row
that was interrupted and skips one that is finished (trained and evaluated). The report,
DIR/PROTOCOL/table1.md, is rewritten from whatever rows are finished.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

PROTOCOLS = {
    # The paper's protocol (the numbers lost from the text, as the reproductions use them).
    "paper": dict(epochs=500, warmup_epochs=200, k=5000, prior_samples=5000),
    # The authors' code's default length.
    "short": dict(epochs=100, warmup_epochs=40, k=1000, prior_samples=5000),
}
# Row name -> (objective, alpha, latent_dim); the latent-2 rows draw Figure 3.
ROWS = {
    "vae": ("vae", 0.0, 64),
    "cvae": ("cvae", 0.0, 64),
    "cmma": ("cmma", 0.0, 64),
    "jmvae_zero": ("jmvae_zero", 0.0, 64),
    "jmvae_kl_0.01": ("jmvae_kl", 0.01, 64),
    "jmvae_kl_0.1": ("jmvae_kl", 0.1, 64),
    "jmvae_kl_1": ("jmvae_kl", 1.0, 64),
    "vae_z2": ("vae", 0.0, 2),
    "cvae_z2": ("cvae", 0.0, 2),
    "jmvae_kl_z2": ("jmvae_kl", 0.1, 2),
}


def row_config(row: str, protocol: str, data_dir: str, base=None):
  """The config of one row: configs/mnist.py on the pickle, with the row's objective and
  the protocol's length, warm-up and evaluation."""
  from configs import mnist
  objective, alpha, latent = ROWS[row]
  p = PROTOCOLS[protocol]
  c = base or mnist.get_config()
  c.data.source = "pickle"
  c.data.data_dir = data_dir
  c.objective.name = objective
  c.objective.alpha = alpha
  c.objective.warmup_epochs = p["warmup_epochs"]
  c.model.latent_dim = latent
  c.train.epochs = p["epochs"]
  c.eval.k = p["k"]
  c.eval.prior_samples = p["prior_samples"]
  return c


def machine() -> str:
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  dev = jax.devices()[0]
  kind = "CPU" if dev.platform == "cpu" else dev.device_kind
  return f"{kind} ({os.cpu_count()} cores, {cpu}), jax {jax.__version__}"


def _timing_path(workdir):
  return os.path.join(workdir, "timing.json")


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def run_row(row: str, protocol: str, data_dir: str, root: str, log=print) -> dict:
  """Trains (resuming) and evaluates one row; returns its evaluation.json."""
  from jmvae_jax import train
  from jmvae_jax.eval import job
  workdir = os.path.join(root, protocol, row)
  config = row_config(row, protocol, data_dir)
  timing = _read_json(_timing_path(workdir)) or {"train_seconds": 0.0}
  result = _read_json(os.path.join(workdir, "evaluation.json"))
  total = None
  if result is None:
    t0 = time.time()
    out = train.train_and_evaluate(config, workdir)
    timing["train_seconds"] += time.time() - t0
    total = out["step"]
    timing["machine"] = machine()
    _write_json(_timing_path(workdir), timing)
    t0 = time.time()
    result = job.evaluate_workdir(config, workdir, log=log)
    timing["eval_seconds"] = time.time() - t0
    _write_json(_timing_path(workdir), timing)
  log(f"{row} ({protocol}): done" + (f" at step {total}" if total else " (already)"))
  return result


def _write_json(path, value):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data_dir", required=True,
                      help="mnist.pkl.gz, or the directory holding it")
  parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="short")
  parser.add_argument("--rows", default=",".join(ROWS),
                      help=f"comma-separated, from {', '.join(ROWS)}")
  args = parser.parse_args(argv)
  rows = [r for r in args.rows.split(",") if r]
  bad = [r for r in rows if r not in ROWS]
  if bad:
    parser.error(f"--rows: unknown {bad}; choose from {', '.join(ROWS)}")
  from absl import logging
  logging.set_verbosity(logging.ERROR)
  for row in rows:
    run_row(row, args.protocol, args.data_dir, args.workdir)


if __name__ == "__main__":
  sys.exit(main())
