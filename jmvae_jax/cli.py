"""What launch.py runs: one call per mode, with bad input reported in one line."""
from __future__ import annotations

import sys

from jmvae_jax.errors import ConfigError


def _interrupted(workdir: str, mode: str = "train"):
  import os
  if mode == "evaluate":
    print(f"\ninterrupted; the evaluation of {workdir} was not finished (evaluation.json was not "
          "written): run the same command to start it again", file=sys.stderr)
  elif workdir and os.path.isdir(os.path.join(workdir, "checkpoints")):
    print(f"\ninterrupted; the checkpoints in {workdir} are complete (a save in flight "
          "was finished first): run the same command to resume", file=sys.stderr)
  else:
    print("\ninterrupted before the run wrote anything", file=sys.stderr)
  sys.exit(130)


def run(config, workdir: str, mode: str = "train", interrupted: bool = False,
        multihost: bool = False):
  """Trains (resuming) or evaluates ``config`` in ``workdir``; exits 2 on bad input,
  3 on a non-finite loss, 130 when interrupted (Ctrl-C; ``interrupted``: during the
  start-up, when launch.py holds it). ``multihost``: first join the other processes
  through ``jax.distributed.initialize()``."""
  from jmvae_jax import evaluate, train
  if interrupted:
    _interrupted(workdir, mode)
  try:
    if multihost:
      import jax
      jax.distributed.initialize()
    if not workdir or not workdir.strip():
      raise ConfigError("--workdir is empty; name the directory for checkpoints and logs")
    if mode == "train":
      return train.train_and_evaluate(config, workdir)
    return evaluate.evaluate_workdir(config, workdir)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLoss as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except KeyboardInterrupt:
    _interrupted(workdir, mode)
