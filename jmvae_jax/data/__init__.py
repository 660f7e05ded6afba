"""The datasets, one module each, behind a registry.

``load(config.data, seed)`` returns a :class:`core.Dataset` whose batches are dicts keyed
by modality name, as numpy arrays. A dataset module declares ``NAMES``, ``TFDS_NAMES``,
``fields(name)`` (the fields of ``config.data``, with the schema's ``Field``),
``other_ways(c)``, ``describe(c)`` and ``load(c, seed, process_index, process_count)``,
where ``c`` is the checked data config as a plain dict. Adding a dataset is one module
and one line below. Modules are imported when first used: nothing here imports
TensorFlow until a dataset is.
"""
from __future__ import annotations

import importlib
import os

import jax
import ml_collections

from jmvae_jax import schema
from jmvae_jax.errors import ConfigError, allowed, is_int

DATASETS = {   # config.data.name -> the module that reads it
    "mnist": "jmvae_jax.data.mnist",
    "fashion_mnist": "jmvae_jax.data.mnist",
    "celeba": "jmvae_jax.data.celeba",
    "shapes": "jmvae_jax.data.shapes",
}
NAMES = tuple(DATASETS)


def module(name: str):
  """The module of dataset ``name``."""
  if name not in DATASETS:
    raise allowed("config.data.name", name, NAMES)
  return importlib.import_module(DATASETS[name])


def default_config(name: str) -> ml_collections.ConfigDict:
  """``config.data`` for dataset ``name`` with every field at its default."""
  fields = module(name).fields(name)
  return ml_collections.ConfigDict(dict({k: f.default for k, f in fields.items()}, name=name))


def resolve(data_cfg) -> dict:
  """The data config as a plain dict with every field filled in and checked."""
  if data_cfg is None or not hasattr(data_cfg, "get"):
    raise ConfigError(f"config.data must be a ConfigDict or dict, got {type(data_cfg).__name__}")
  name = data_cfg.get("name", None)
  if name not in DATASETS:
    raise allowed("config.data.name", name, NAMES)
  values = dict(data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else data_cfg)
  del values["name"]
  if not values.get("source"):   # "" = the dataset's first source
    values.pop("source", None)
  out = schema.check_fields("config.data", module(name).fields(name), values,
                            what=f"dataset {name!r}")
  return dict(out, name=name)


def describe(data_cfg) -> str:
  """One line for logs: the dataset, where it comes from and how it is split."""
  c = resolve(data_cfg)
  return module(c["name"]).describe(c)


def load(data_cfg, seed: int, process_index: int | None = None,
         process_count: int | None = None):
  """The dataset ``config.data`` names, sharded for this process.

  ``seed`` fixes the epoch order and the dynamic binarisation; process index / count
  default to ``jax.process_index()`` / ``jax.process_count()``.
  """
  c = resolve(data_cfg)
  pc = jax.process_count() if process_count is None else process_count
  pi = jax.process_index() if process_index is None else process_index
  if not is_int(pc) or pc < 1:
    raise ConfigError(f"process_count={pc!r} must be a positive int")
  if not is_int(pi) or not 0 <= pi < pc:
    raise ConfigError(f"process_index={pi!r} must be in [0, {pc})")
  _check_readable(c.get("data_dir") or "")
  return module(c["name"]).load(c, int(seed), int(pi), int(pc))


def _check_readable(data_dir: str) -> None:
  """A data directory (or file) that exists but cannot be read is said so, not reported
  as missing files."""
  kind = "directory" if os.path.isdir(data_dir) else "file"
  need = os.R_OK | (os.X_OK if kind == "directory" else 0)
  if data_dir and os.path.exists(data_dir) and not os.access(data_dir, need):
    raise ConfigError(f"config.data.data_dir={data_dir!r}: this {kind} exists but cannot be "
                      "read (permission denied); give it read permission or name another")
