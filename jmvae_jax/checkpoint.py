"""Orbax checkpoints of a run's state, one directory per step.

Saved per step: the train state (parameters, optimiser state, step) and, as JSON, the
run's metadata (the input position, the base random key) with a fingerprint of the
state: the CRC-32 of every array's bytes, computed from the arrays being saved. A
checkpoint is restored against an abstract state (a shape that differs is a one-line
ConfigError naming it, before Orbax reads anything) and then verified against its
fingerprint: ``Corrupt`` says why one cannot be trusted.
"""
from __future__ import annotations

import sys
import threading
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jmvae_jax.errors import ConfigError


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes_by_path(tree) -> dict:
  """'a/b/0/count' -> shape; dict keys, attributes and indices alike, since a
  saved namedtuple comes back as a dict."""
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _cause(error: BaseException) -> str:
  """The innermost reason in an exception's chain, in one line (a full disk's
  'No space left on device' is buried under Orbax's wrappers)."""
  seen, e = [], error
  while e is not None and e not in seen:
    seen.append(e)
    e = e.__cause__ or e.__context__
  for e in seen:
    if isinstance(e, OSError) and e.strerror:
      return e.strerror
  text = str(seen[-1]).strip().splitlines()
  if "No space left on device" in str(error):
    return "No space left on device"
  return f"{type(seen[-1]).__name__}: {text[0][:200] if text else ''}"


class Corrupt(Exception):
  """A checkpoint that cannot be read, or whose arrays differ from their fingerprint."""


def _local(x) -> np.ndarray:
  """An array's values on this process: a replicated state's local copy."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.ascontiguousarray(jax.device_get(x))


def fingerprint(state) -> dict:
  """{array path: CRC-32 of its bytes} of a (replicated) state."""
  return {"/".join(_key_name(k) for k in path): zlib.crc32(_local(v).data)
          for path, v in jax.tree_util.tree_leaves_with_path(state)}


def _is_closed_loop(exc) -> bool:
  return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_closed_loop_callbacks() -> None:
  """A write that fails (a full disk) leaves Orbax's storage callbacks calling into its
  closed asyncio loop from other threads, each printing a traceback above the one-line
  error; those RuntimeErrors (and only those) are dropped."""
  if getattr(threading.excepthook, "_jmvae_quiet", False):
    return
  thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

  def thread(args):
    if not _is_closed_loop(args.exc_value):
      thread_hook(args)

  def unraisable(u):
    if not _is_closed_loop(u.exc_value):
      unraisable_hook(u)
  thread._jmvae_quiet = True   # pylint: disable=protected-access
  threading.excepthook, sys.unraisablehook = thread, unraisable


class Checkpointer:
  """Saves and restores (state, metadata) with an Orbax CheckpointManager."""

  def __init__(self, directory: str, keep: int = 3):
    _quiet_closed_loop_callbacks()
    self.directory = directory
    self.manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def reload(self) -> None:
    self.manager.reload()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Writes checkpoint ``step`` and waits for it: a failure (a full disk) is raised here,
    as one ConfigError, and the older checkpoints are left as they were."""
    meta = dict(meta, fingerprint=fingerprint(state))
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # the first line that says why
      raise ConfigError(f"checkpoint {step} could not be written in {self.directory} "
                        f"({_cause(e)}); the older checkpoints are intact: free the space "
                        "(or fix the directory) and run the same command to resume") from None

  def restore(self, abstract_state: Any, step: int | None = None, what: str = "architecture"):
    """(state, meta) at ``step`` (default: the latest), shaped like ``abstract_state``;
    ``what`` names the likely cause of a shape that differs. Corrupt if it cannot be
    read or does not match its fingerprint (a checkpoint saved without one is trusted)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ConfigError(f"no checkpoint in {self.directory}")
    try:
      self._check_shapes(step, abstract_state, what)
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # any failure to read it
      first = (str(e).strip().splitlines() or [""])[0].split(" See full ")[0][:200]
      raise Corrupt(f"cannot be read ({type(e).__name__}: {first})") from None
    meta = dict(out.meta)
    saved = meta.pop("fingerprint", None)
    if saved is not None:
      found = fingerprint(out.state)
      bad = sorted(k for k in set(saved) | set(found) if saved.get(k) != found.get(k))
      if bad:
        raise Corrupt(f"does not match its fingerprint ({len(bad)} array(s) differ, e.g. "
                      f"{bad[0]})")
    return out.state, meta

  def _check_shapes(self, step: int, abstract_state: Any, what: str) -> None:
    saved = self.manager.item_metadata(step)["state"]
    if saved is None:
      raise Corrupt("its state's metadata is missing")
    saved = getattr(saved, "tree", saved)
    want, have = _shapes_by_path(abstract_state), _shapes_by_path(saved)
    # the parameters first: a different network says more than the optimiser state it implies
    for key in sorted(set(want) | set(have), key=lambda k: (not k.startswith("params"), k)):
      if want.get(key) != have.get(key):
        if key.startswith("opt_state") and what == "architecture":
          what = ("optimiser state layout (a checkpoint of an older jmvae-jax, before the "
                  "fused optimiser of jmvae_jax/optim.py, or of another optimiser?)")
        raise ConfigError(
            f"checkpoint {step} in {self.directory} does not match this config's "
            f"{what}: {key} is {have.get(key)} there, {want.get(key)} here")

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
