"""The paper's Table 1 on MNIST: every row trained and evaluated, then one report.

  python -m jmvae_jax.experiments.table1 --workdir=DIR --data_dir=/path/to/mnist.pkl.gz \
      [--protocol=short|paper|smoke] [--rows=jmvae_kl_0.1,jmvae_zero,...] [--export=DIR]

Each row is an ordinary workdir, DIR/PROTOCOL/ROW (``launch.py`` can resume or evaluate it
too): running the command again resumes a row that was interrupted and skips one that is
finished (trained and evaluated). Then DIR/PROTOCOL/table1.md is written from every
finished row, and the paper's MNIST figures (figures.py) from the rows they need.
``--export`` copies what is worth keeping (no checkpoints) to another directory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time

from jmvae_jax.experiments import report

PROTOCOLS = {
    # The paper's protocol (the numbers lost from the text, as the reproductions use them).
    "paper": dict(epochs=500, warmup_epochs=200, k=5000, prior_samples=5000),
    # The authors' code's default length.
    "short": dict(epochs=100, warmup_epochs=40, k=1000, prior_samples=5000),
    # A few seconds a row, for tests and for trying the command.
    "smoke": dict(epochs=1, warmup_epochs=1, k=8, prior_samples=8),
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
KEPT = ("evaluation.json", "config.json", "metrics.jsonl", "timing.json")


def row_config(row: str, protocol: str, data_dir: str):
  """The config of one row: configs/mnist.py on the pickle, with the row's objective and
  latent size and the protocol's length, warm-up and evaluation (the smoke protocol:
  configs/mnist.py's smoke model on every training image of the file)."""
  from configs import mnist
  objective, alpha, latent = ROWS[row]
  p = PROTOCOLS[protocol]
  c = mnist.get_config("smoke" if protocol == "smoke" else "")
  c.data.source = "pickle"
  c.data.data_dir = data_dir
  c.objective.name = objective
  c.objective.alpha = alpha
  c.objective.warmup_epochs = p["warmup_epochs"]
  c.model.latent_dim = latent if protocol != "smoke" else min(latent, c.model.latent_dim)
  c.train.epochs = p["epochs"]
  c.eval.k = p["k"]
  c.eval.prior_samples = p["prior_samples"]
  if protocol == "smoke":   # every training image of the (small) file
    c.data.split = "authors"
  return c


def machine() -> str:
  """The device and host a row ran on, for the report."""
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


def read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path, value):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


class TrainClock:
  """The training wall time of a row, summed over resumptions in WORKDIR/timing.json and
  written every ``every`` seconds while it runs, so that a run killed without warning (a
  preempted host) loses at most that much of its time."""

  def __init__(self, path: str, every: float = 60.0):
    self.path, self.every = path, every
    self.base = (read_json(path) or {}).get("train_seconds", 0.0)
    self.t0 = time.time()
    self._machine = None   # asked at the first write, once training has set jax up
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, daemon=True)

  def write(self) -> None:
    if not os.path.isdir(os.path.dirname(self.path)):
      return   # no workdir yet: nothing trained
    self._machine = self._machine or machine()
    timing = read_json(self.path) or {}
    timing.update(train_seconds=self.base + time.time() - self.t0, machine=self._machine)
    _write_json(self.path, timing)

  def _beat(self):
    while not self._stop.wait(self.every):
      self.write()

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.write()   # an interrupted run's time counts too


def run_row(row: str, protocol: str, data_dir: str, root: str, log=print) -> dict:
  """Trains (resuming) and evaluates one row unless it is finished; its evaluation.json.
  Wall times add up over resumptions, in WORKDIR/timing.json (TrainClock)."""
  from jmvae_jax import train
  from jmvae_jax.eval import job
  workdir = os.path.join(root, protocol, row)
  result = read_json(os.path.join(workdir, "evaluation.json"))
  if result is not None:
    log(f"{row} ({protocol}): finished, skipped")
    return result
  config = row_config(row, protocol, data_dir)
  timing_path = os.path.join(workdir, "timing.json")
  with TrainClock(timing_path):
    train.train_and_evaluate(config, workdir)
  t0 = time.time()
  result = job.evaluate_workdir(config, workdir, log=log)
  timing = read_json(timing_path) or {}
  timing["eval_seconds"] = time.time() - t0
  _write_json(timing_path, timing)
  log(f"{row} ({protocol}): done")
  return result


def finished_rows(root: str, protocol: str) -> dict:
  """{row: {"evaluation", "timing", "config"}} of the rows with an evaluation.json."""
  out = {}
  for row in ROWS:
    d = os.path.join(root, protocol, row)
    result = read_json(os.path.join(d, "evaluation.json"))
    if result is not None:
      out[row] = {"evaluation": result, "timing": read_json(os.path.join(d, "timing.json")) or {},
                  "config": read_json(os.path.join(d, "config.json")) or {}}
  return out


def export(root: str, protocol: str, dest: str) -> None:
  """Copies the report, the figures and each row's small files (no checkpoints)."""
  src = os.path.join(root, protocol)
  out = os.path.join(dest, protocol)
  os.makedirs(out, exist_ok=True)
  for name in os.listdir(src):
    if name == "table1.md" or name.endswith(".png"):
      shutil.copy2(os.path.join(src, name), out)
  for row in finished_rows(root, protocol):
    os.makedirs(os.path.join(out, row), exist_ok=True)
    for name in KEPT:
      path = os.path.join(src, row, name)
      if os.path.exists(path):
        shutil.copy2(path, os.path.join(out, row))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="where each row's workdir goes")
  parser.add_argument("--data_dir", required=True,
                      help="mnist.pkl.gz, or the directory holding it")
  parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="short")
  parser.add_argument("--rows", default=",".join(ROWS),
                      help=f"comma-separated, from {', '.join(ROWS)}")
  parser.add_argument("--export", default="", help="copy the results (no checkpoints) here")
  args = parser.parse_args(argv)
  rows = [r for r in args.rows.split(",") if r]
  bad = [r for r in rows if r not in ROWS]
  if bad or not rows:
    parser.error(f"--rows: unknown {bad or 'none given'}; choose from {', '.join(ROWS)}")
  from absl import logging
  from jmvae_jax import ConfigError
  from jmvae_jax.experiments import figures
  logging.set_verbosity(logging.ERROR)
  try:
    for row in rows:
      run_row(row, args.protocol, args.data_dir, args.workdir)
    done = finished_rows(args.workdir, args.protocol)
    out = os.path.join(args.workdir, args.protocol)
    drawn = figures.draw(args.workdir, args.protocol, set(done), out)
    for name in drawn:
      print(f"wrote {name}")
    path = os.path.join(out, "table1.md")
    with open(path, "w") as f:
      f.write(report.table1(done, args.protocol, PROTOCOLS[args.protocol],
                            [os.path.basename(n) for n in drawn]))
    print(f"wrote {path}")
    if args.export:
      export(args.workdir, args.protocol, args.export)
      print(f"copied the results to {os.path.join(args.export, args.protocol)}")
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
