"""A run's directory: its lock, ``config.json``, the checks that it belongs to this run,
and its checkpoints.

    with Workdir(path, config, write=True, keep=3) as wd:
      state, rng = wd.restore(abstract_state, rng, steps_per_epoch, batch_size)
      wd.begin_writing()          # lock (creating the directory), config.json
      wd.save(step, state, meta)

Everything is checked before anything is written: a workdir of another architecture, or
of another run (another seed, data or batch size), is refused with the field that
differs, and nothing in it is changed. Where the data lives may change.
"""
from __future__ import annotations

import json
import os
import socket

import jax
import jax.numpy as jnp
import numpy as np

from jmvae_jax import checkpoint, parallel
from jmvae_jax.errors import ConfigError

# Config sections that fix the shapes of what is saved.
ARCHITECTURE_FIELDS = ("model", "objective.name")
# Config fields that fix what a resumed run would see next: its random streams, its
# data and the meaning of its input position. Where the data lives may change.
RUN_FIELDS = ("seed", "train.batch_size", "data")
RELOCATABLE_DATA_FIELDS = ("data_dir", "download", "cache_dir")


def config_dict(config) -> dict:
  """The config as plain JSON-able data (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


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


# Fields added to a section after older workdirs were written: absent there, they had
# the value of their default (the behaviour before the field existed).
ADDED_FIELDS = {"model.modalities": {"reduction": "sum", "layout": "mirrored"},
                "data": {"normalise": "unit"}}


def _added_field_default(key: str):
  section, name = key.rsplit(".", 1)
  for where, defaults in ADDED_FIELDS.items():
    if (section == where or section.startswith(where + ".")) and name in defaults:
      return defaults[name]
  return None


def _difference(saved: dict, current: dict, fields, skip=()) -> str | None:
  """The first of ``fields`` that differs, as 'config.FIELD: A there, B here'."""
  for field in fields:
    a, b = _flatten(_lookup(saved, field), field), _flatten(_lookup(current, field), field)
    for key in sorted(set(a) | set(b)):
      there = a.get(key, _added_field_default(key) if key not in a else None)
      if key.rsplit(".", 1)[-1] not in skip and there != b.get(key):
        return f"config.{key}: {a.get(key)!r} there, {b.get(key)!r} here"
  return None


def architecture_difference(saved: dict, current: dict) -> str | None:
  return _difference(saved, current, ARCHITECTURE_FIELDS)


def run_difference(saved: dict, current: dict) -> str | None:
  return _difference(saved, current, RUN_FIELDS, skip=RELOCATABLE_DATA_FIELDS)


def check_writable(workdir: str) -> None:
  """A one-line ConfigError if ``workdir`` cannot be (or become) a writable directory."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={workdir!r} is a file, not a directory")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={workdir!r} cannot be written: {parent!r} is not a "
                      "writable directory")
  if not os.path.exists(path):   # a file system that lists as writable but creates nothing
    probe = os.path.join(parent, f".jmvae-probe-{os.getpid()}")
    try:
      os.mkdir(probe)
      os.rmdir(probe)
    except OSError as e:
      raise ConfigError(f"--workdir={workdir!r} cannot be created in {parent!r} "
                        f"({e.strerror})") from None


class _Lock:
  """An exclusive lock on WORKDIR/.lock (process 0; creates the workdir), released on
  ``close()`` or at exit; a one-line ConfigError if another run holds it."""

  def __init__(self, workdir: str):
    import fcntl
    self.file = None
    if jax.process_index() != 0:
      return
    os.makedirs(workdir, exist_ok=True)
    f = open(os.path.join(workdir, ".lock"), "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      f.close()
      raise ConfigError(f"workdir {workdir!r} is in use by another run ({holder}); wait for "
                        "it to end or use a new --workdir") from None
    self.file = f

  def sign(self) -> None:
    """Writes who holds the lock into it, for the message another run would get."""
    if self.file is not None:
      self.file.seek(0)
      self.file.truncate()
      self.file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
      self.file.flush()

  def close(self) -> None:
    if self.file is not None:
      self.file.close()


def key_ints(key) -> list[int]:
  """A PRNG key as the list of ints a checkpoint's metadata holds."""
  return [int(v) for v in np.asarray(jax.device_get(key))]


class Workdir:
  """The lock, config.json and checkpoints of a run's directory. ``write``: a training
  run (the directory must be writable; an existing one is locked at once and checked
  to be this run's); otherwise a reader, which needs a checkpoint of this architecture."""

  def __init__(self, path: str, config, *, write: bool, keep: int = 3):
    self.path, self.write = path, write
    self.config_path = os.path.join(path, "config.json")
    self.current = config_dict(config)
    if write:
      check_writable(path)
    checkpoints = os.path.join(path, "checkpoints")
    if os.path.exists(checkpoints) and not os.path.isdir(checkpoints):
      raise ConfigError(f"{checkpoints} is a file, not the directory of checkpoints; move it "
                        "away or use a new --workdir")
    self._lock = _Lock(path) if write and os.path.isdir(path) else None
    try:
      self.checkpoints = checkpoint.Checkpointer(
          os.path.join(os.path.abspath(path), "checkpoints"), keep)
      self._check_config(write)
    except BaseException:
      self.close()
      raise

  @property
  def directory(self) -> str:
    return self.checkpoints.directory

  def _check_config(self, write: bool) -> None:
    has = os.path.isdir(self.directory) and bool(os.listdir(self.directory))
    self.config_missing = has and not os.path.exists(self.config_path)
    if has and not self.config_missing:
      try:
        with open(self.config_path) as f:
          saved = json.load(f)
      except (OSError, ValueError) as e:
        raise ConfigError(f"{self.config_path} cannot be read as this run's config "
                          f"({type(e).__name__}: {e}); restore it, or remove it to resume "
                          "from the checkpoint's own record") from None
      if not isinstance(saved, dict):
        raise ConfigError(f"{self.config_path} holds no config (a JSON object is expected); "
                          "restore it, or remove it to resume from the checkpoint's own record")
      diff = architecture_difference(saved, self.current)
      if diff:
        raise ConfigError(
            f"workdir {self.path!r} holds a checkpoint of another architecture ({diff}); "
            "use a new --workdir or remove that one; nothing in it was changed")
      diff = run_difference(saved, self.current) if write else None
      if diff:
        raise ConfigError(
            f"workdir {self.path!r} holds another run ({diff}): resuming it with this config "
            "would not continue that run; use a new --workdir, or set the field back to "
            "resume it; nothing in it was changed")
    elif not write and not has:
      raise ConfigError(f"workdir {self.path!r} has no checkpoint; train first with "
                        f"--mode=train (the default)")

  def __enter__(self) -> "Workdir":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def latest_step(self) -> int | None:
    return self.checkpoints.latest_step()

  def restore(self, abstract_state, step: int | None = None):
    """(state, meta) of the newest checkpoint that reads and verifies (or of ``step``).
    A newer one that does not is set aside in ``checkpoints_set_aside/`` (when writing;
    a reader only passes it by), with one line each; if none verifies, a one-line
    ConfigError and nothing changed."""
    if self.latest_step() is None:
      raise ConfigError(f"workdir {self.path!r} has no checkpoint in {self.directory}")
    what = "architecture"
    if self.config_missing:
      what = ("architecture (the workdir has no config.json to compare with: most "
              "likely a checkpoint of another config)")
    if step is not None:
      try:
        return self._checked(self.checkpoints.restore(abstract_state, step, what), step)
      except checkpoint.Corrupt as e:
        raise ConfigError(f"checkpoint {step} in {self.directory} {e}") from None
    failed = []
    for candidate in reversed(self.checkpoints.all_steps()):
      try:
        out = self.checkpoints.restore(abstract_state, candidate, what)
      except checkpoint.Corrupt as e:
        failed.append((candidate, str(e)))
        continue
      self._set_aside(failed, candidate)
      return self._checked(out, candidate)
    raise ConfigError(f"no checkpoint in {self.directory} can be trusted: " + "; ".join(
        f"{s} {why}" for s, why in failed) + "; nothing was changed")

  def _checked(self, restored, step: int):
    """(state, meta) after comparing the checkpoint's own record of the architecture with
    this config (the same shapes can be another network: config.json may be gone)."""
    state, meta = restored
    meta = dict(meta)
    diff = architecture_difference(meta.pop("architecture", None) or self.current,
                                   self.current)
    if diff:
      raise ConfigError(f"checkpoint {step} in {self.directory} was trained with another "
                        f"architecture ({diff}); use a new --workdir or the run's own config")
    return state, meta

  def _set_aside(self, failed, good: int) -> None:
    """Moves the checkpoints in ``failed`` (newer than ``good``) out of the way (process
    0, when writing) and says so."""
    aside = os.path.join(self.path, "checkpoints_set_aside")
    for step, why in failed:
      where = os.path.join(aside, str(step))
      if self.write and jax.process_index() == 0:
        os.makedirs(aside, exist_ok=True)
        while os.path.exists(where):
          where += "_"
        os.replace(os.path.join(self.directory, str(step)), where)
      action = f"set aside in {where}" if self.write else "passed by"
      print(f"checkpoint {step} in {self.directory} {why}: {action}; using checkpoint "
            f"{good}", flush=True)
    if failed and self.write:
      parallel.barrier(f"{self.directory} checkpoints set aside")
      self.checkpoints.reload()

  def architecture(self) -> dict:
    """The config fields that fix the shapes saved: a checkpoint's own record of them."""
    return {"model": self.current.get("model"),
            "objective": {"name": self.current.get("objective", {}).get("name")}}

  def resume(self, abstract_state, rng, steps_per_epoch: int, batch_size: int):
    """(state, base random key) restored from the latest checkpoint, once its metadata
    is known to mean the same here: the same batch size and seed (config.json is
    compared first; this holds where it is missing) and the same batches per epoch."""
    state, meta = self.restore(abstract_state)
    step = int(state.step)
    for field, saved, here in (
        ("train.batch_size", meta.get("batch_size"), batch_size),
        ("seed (its key)", meta.get("rng"), key_ints(rng))):
      if saved is not None and saved != here:
        raise ConfigError(f"checkpoint {step} in {self.directory} was trained with "
                          f"config.{field} {saved}, not {here}: resume with the run's own "
                          "config, or use a new --workdir")
    epoch, offset = meta.get("epoch"), meta.get("batch_in_epoch")
    if None not in (epoch, offset) and epoch * steps_per_epoch + offset != step:
      raise ConfigError(
          f"checkpoint {step} in {self.directory} is at epoch {epoch}, batch {offset}, which "
          f"is not step {step} at this config's {steps_per_epoch} batches per epoch: the "
          "training data or the device count changed; use a new --workdir")
    print(f"resumed from step {step} (epoch {epoch}, batch {offset} of {steps_per_epoch}) "
          f"in {self.directory}", flush=True)
    if "rng" in meta:
      rng = jnp.asarray(np.asarray(meta["rng"], np.uint32))
    return state, rng

  def begin_writing(self) -> None:
    """Locks the workdir (creating it), then records this run's config.json and creates
    the checkpoint directory: call once the checkpoint there (if any) is restored."""
    self._lock = self._lock or _Lock(self.path)
    self._lock.sign()
    parallel.barrier(f"{self.config_path} checked")
    if jax.process_index() == 0:   # through a temporary file: no reader sees half of it
      tmp = f"{self.config_path}.tmp"
      with open(tmp, "w") as f:
        json.dump(self.current, f, indent=2, sort_keys=True)
      os.replace(tmp, self.config_path)
      os.makedirs(self.directory, exist_ok=True)
    parallel.barrier(f"{self.directory} created")

  def save(self, step: int, state, meta: dict) -> None:
    self.checkpoints.save(step, state, meta)

  def close(self) -> None:
    if getattr(self, "checkpoints", None) is not None:
      self.checkpoints.close()
      self.checkpoints = None
    if self._lock is not None:
      self._lock.close()
      self._lock = None
