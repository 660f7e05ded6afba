"""Trained runs back from their workdir: for the evaluation, the demo and notebooks.

    model, params, config = jmvae_jax.load("/tmp/mnist")
    probs = model.translate(params, jax.random.PRNGKey(0), {"image": images}, "label")
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections

from jmvae_jax import builder, schema
from jmvae_jax.errors import ConfigError


def load_trained(config, workdir: str, step: int | None = None):
  """(model, loss_fn, state, meta) restored from ``workdir``'s latest (or ``step``)
  checkpoint; a one-line ConfigError if there is none or it has another architecture."""
  from jmvae_jax import train
  from jmvae_jax.workdir import Workdir
  c = schema.check(config, sections=("model", "objective", "optim", "gan"))
  model, loss_fn = builder.from_checked(c)
  optimizer = train.make_optimizers(c, model)
  with Workdir(workdir, config, write=False) as wd:
    abstract = jax.eval_shape(lambda: train.init_state(model, optimizer, jax.random.PRNGKey(0)))
    state, meta = wd.restore(abstract, step)
  return model, loss_fn, state, meta


def load(workdir: str, step: int | None = None):
  """(model, params, config) of the run in ``workdir``, from its config.json and its
  latest checkpoint (or ``step``)."""
  model, state, config = load_state(workdir, step)
  return model, state.params, config


def load_state(workdir: str, step: int | None = None):
  """(model, state, config) as ``load``, the whole train state (its ``step`` the
  checkpoint's)."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise ConfigError(f"{path} is missing: {workdir!r} is not a workdir of a trained run") \
        from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: cannot read the run's config ({e})") from None
  model, _, state, _ = load_trained(config, workdir, step)
  return model, state, config
