"""Orbax checkpoints under ``WORKDIR/checkpoints`` and the config beside them.

Saved per step: the train state (parameters, optimiser state, step) and, as JSON,
the input position and the run's base random key. ``WORKDIR/config.json`` records
the config of the run. A workdir whose checkpoint has another architecture, or
belongs to another run (another seed, data or batch size), is refused before
anything in it is touched; config.json is rewritten only once the run is known to
continue (``begin_writing``).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jmvae_jax import parallel
from jmvae_jax.errors import ConfigError

# Config sections that fix the shapes of what is saved.
ARCHITECTURE_FIELDS = ("model", "objective.name")
# Config fields that fix what a resumed run would see next: its random streams, its
# data and the meaning of its input position. Where the data lives may change.
RUN_FIELDS = ("seed", "train.batch_size", "data")
RELOCATABLE_DATA_FIELDS = ("data_dir", "download", "cache_dir")


def _lookup(cfg: dict, dotted: str):
  for part in dotted.split("."):
    cfg = cfg.get(part, {}) if isinstance(cfg, dict) else {}
  return cfg


def _flatten(d, prefix=""):
  if not isinstance(d, dict):
    return {prefix: d}
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
  return out


def config_dict(config) -> dict:
  """The config as plain JSON-able data (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def _difference(saved: dict, current: dict, fields, skip=()) -> str | None:
  """The first of ``fields`` that differs, as 'config.FIELD: A there, B here'."""
  for field in fields:
    a, b = _flatten(_lookup(saved, field), field), _flatten(_lookup(current, field), field)
    for key in sorted(set(a) | set(b)):
      if key.rsplit(".", 1)[-1] not in skip and a.get(key) != b.get(key):
        return f"config.{key}: {a.get(key)!r} there, {b.get(key)!r} here"
  return None


def architecture_difference(saved: dict, current: dict) -> str | None:
  return _difference(saved, current, ARCHITECTURE_FIELDS)


def run_difference(saved: dict, current: dict) -> str | None:
  return _difference(saved, current, RUN_FIELDS, skip=RELOCATABLE_DATA_FIELDS)


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


class Checkpointer:
  """Saves and restores (state, rng, position) with an Orbax CheckpointManager."""

  def __init__(self, workdir: str, config, keep: int = 3, for_writing: bool = True):
    """Checks ``workdir`` against ``config``, reading only; ``begin_writing`` writes."""
    self.workdir = workdir
    self.config_path = os.path.join(workdir, "config.json")
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.current = config_dict(config)
    has_checkpoints = os.path.isdir(self.directory) and bool(os.listdir(self.directory))
    self.config_missing = has_checkpoints and not os.path.exists(self.config_path)
    if has_checkpoints and not self.config_missing:
      with open(self.config_path) as f:
        saved = json.load(f)
      diff = architecture_difference(saved, self.current)
      if diff:
        raise ConfigError(
            f"workdir {workdir!r} holds a checkpoint of another architecture ({diff}); "
            "use a new --workdir or remove that one; nothing in it was changed")
      diff = run_difference(saved, self.current) if for_writing else None
      if diff:
        raise ConfigError(
            f"workdir {workdir!r} holds another run ({diff}): resuming it with this config "
            "would not continue that run; use a new --workdir, or set the field back to "
            "resume it; nothing in it was changed")
    elif not for_writing and not has_checkpoints:
      raise ConfigError(f"workdir {workdir!r} has no checkpoint; train first with "
                        f"--mode=train (the default)")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def begin_writing(self) -> None:
    """Records this run's config.json and creates the checkpoint directory: call once
    the checkpoint there (if any) has been restored."""
    self._write_config(self.current)
    if jax.process_index() == 0:
      os.makedirs(self.directory, exist_ok=True)
    parallel.barrier(f"{self.directory} created")

  def _write_config(self, current: dict) -> None:
    """Process 0 replaces config.json once every process has checked the old one; the
    write goes through a temporary file, so no reader ever sees half of it."""
    parallel.barrier(f"{self.config_path} checked")
    if jax.process_index() == 0:
      os.makedirs(self.workdir, exist_ok=True)
      tmp = f"{self.config_path}.tmp"
      with open(tmp, "w") as f:
        json.dump(current, f, indent=2, sort_keys=True)
      os.replace(tmp, self.config_path)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, abstract_state: Any, step: int | None = None):
    """(state, meta) at ``step`` (default: the latest), shaped like ``abstract_state``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ConfigError(f"workdir {self.workdir!r} has no checkpoint in {self.directory}")
    self._check_shapes(step, abstract_state)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def _check_shapes(self, step: int, abstract_state: Any) -> None:
    saved = self.manager.item_metadata(step)["state"]
    saved = getattr(saved, "tree", saved)
    want, have = _shapes_by_path(abstract_state), _shapes_by_path(saved)
    for key in sorted(set(want) | set(have)):
      if want.get(key) != have.get(key):
        what = "architecture"
        if self.config_missing:
          what = ("architecture (the workdir has no config.json to compare with: most "
                  "likely a checkpoint of another config)")
        elif key.startswith("opt_state"):
          what = ("optimiser state layout (a checkpoint of an older jmvae-jax, before the "
                  "fused optimiser of jmvae_jax/optim.py, or of another optimiser?)")
        raise ConfigError(
            f"checkpoint {step} in {self.directory} does not match this config's "
            f"{what}: {key} is {have.get(key)} there, {want.get(key)} here")

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
