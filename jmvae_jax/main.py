"""What launch.py runs: one call per mode (train, evaluate, demo), bad input in one line.

Exit codes: 2 for bad input (a config field, a file, a workdir), 3 for a non-finite loss,
130 when interrupted (Ctrl-C), 143 when stopped by SIGTERM (the step in flight saved).
"""
from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import os
import sys
import time

from jmvae_jax.errors import ConfigError

MODES = ("train", "evaluate", "demo")


def _interrupted(workdir: str, mode: str = "train"):
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
  """Trains (resuming), evaluates, or trains and reports as the demo (``mode``) ``config``
  in ``workdir``. ``interrupted``: a Ctrl-C came during the start-up (launch.py holds
  it); ``multihost``: first join the other processes (``jax.distributed.initialize``)."""
  from jmvae_jax import preemption, train
  from jmvae_jax.eval import job
  if interrupted:
    _interrupted(workdir, mode)
  try:
    if mode not in MODES:
      raise ConfigError(f"--mode={mode!r} is not valid; allowed: {', '.join(MODES)}")
    if multihost:
      import jax
      jax.distributed.initialize()
    if not workdir or not workdir.strip():
      raise ConfigError("--workdir is empty; name the directory for checkpoints and logs")
    workdir = os.path.expanduser(workdir)   # a quoted '~/x' is the home's x, not ./~/x
    if mode == "train":
      return train.train_and_evaluate(config, workdir)
    if mode == "demo":
      return demo(config, workdir)
    return job.evaluate_workdir(config, workdir)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLoss as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except preemption.Preempted as e:
    print(f"\n{e}", file=sys.stderr)
    sys.exit(preemption.EXIT_CODES["SIGTERM"])
  except KeyboardInterrupt:
    _interrupted(workdir, mode)


def demo(config, workdir: str):
  """Trains ``config`` (or resumes it), then reports on its held-out examples: the
  x-to-w accuracy (z from q(z|x), w from p(w|z)), the w-to-x-to-w round trip (x generated
  from w alone, read back through q(z|x)), the test bound and where the figures are."""
  from jmvae_jax import data as data_lib
  from jmvae_jax import parallel, restore, schema, train
  from jmvae_jax.eval import metrics
  t0 = time.time()
  out = train.train_and_evaluate(config, workdir)
  c = schema.check(config)
  model, _, state, _ = restore.load_trained(config, workdir)
  data = data_lib.load(c.data, c.seed)
  bs = parallel.check_batch_size(c.train.batch_size)
  acc = metrics.cross_modal_accuracy(model, state.params, data.test_batches(bs))
  w, x = model.spec.w[0], model.spec.x
  rt = metrics.round_trip_accuracy(model, state.params, data.test_batches(bs))[w]["mean"]
  print(f"\nheld-out {data.name} ({data.num_test}), after {int(state.step)} steps "
        f"({time.time() - t0:.0f}s):")
  print(f"  {x} -> {w} accuracy: {acc[w]['mean']:.4f} +- {acc[w]['stderr']:.4f}")
  print(f"  {w} -> {x} -> {w} round-trip accuracy: {rt:.4f}")
  print(f"  test bound (elbo): {out['test'].get('elbo', float('nan')):.2f} nats")
  for name in sorted(os.listdir(out["figures"])):
    print(f"  figure: {os.path.join(out['figures'], name)}")
  return acc[w]["mean"], rt


# ----------------------------------------------------------------------------
# A command line that could not be used, in one line.
# ----------------------------------------------------------------------------

def _load_config_file(spec: str):
  """``get_config(arg)`` of the file in ``--config=FILE[:ARG]``; its own errors propagate."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(path)
  loader = importlib.machinery.SourceFileLoader("jmvae_user_config", path)
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  loader.exec_module(module)
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"--config: {path} defines no get_config(); a config file defines "
                      "get_config(arg='') returning an ml_collections.ConfigDict (see configs/)")
  return module.get_config(arg) if arg else module.get_config()


def _missing_field(config, dotted: str) -> str | None:
  """The override ``dotted`` (a.b.c) names no field of ``config``: the part that is
  missing, with the nearest name beside it, else None."""
  node = config
  for part in dotted.split("."):
    keys = list(node.keys()) if hasattr(node, "keys") else []
    if part not in keys:
      near = difflib.get_close_matches(part, keys, n=1)
      return "no such config field" + (f"; did you mean {near[0]!r}?" if near else "")
    node = node[part]
  return None


def config_flag_error(error: Exception, argv) -> str:
  """One line for a ``--config`` / ``--config.FIELD`` that could not be used. The config
  file is loaded again here and each override looked up in it, so the line names what
  is wrong: a missing or broken file, the file's own error, or the field that does not
  exist (with the nearest one); failing all those, the innermost line of ``error``."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is not None:
    try:
      config = _load_config_file(spec)
    except FileNotFoundError as e:
      return f"--config: no such config file {str(e)!r} (see configs/*.py)"
    except SyntaxError as e:
      return f"--config: {e.filename} is not a Python config file ({e.msg}, line {e.lineno})"
    except Exception as e:  # pylint: disable=broad-except  # the file's own error, as is
      return str(e)
    for arg in argv:
      flag = arg.split("=", 1)[0]
      if flag.startswith("--config."):
        problem = _missing_field(config, flag[len("--config."):])
        if problem:
          return f"{flag}: {problem}"
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return lines[-1] if lines else type(error).__name__
