"""From a config to a Model, an objective and its keyword options, validated.

Every check here runs in Python on the config alone, before anything is traced
or compiled, and fails with a one-line ConfigError naming the field.
"""
from __future__ import annotations

import functools

from jmvae_jax import objectives
from jmvae_jax.errors import ConfigError, allowed
from jmvae_jax.model import Model, spec_from_config


def objective_options(obj_cfg) -> dict:
  """The static keyword options of the objective: alpha and the warm-up scope."""
  alpha = obj_cfg.get("alpha", 0.0)
  if not isinstance(alpha, (int, float)) or alpha < 0:
    raise ConfigError(f"config.objective.alpha={alpha!r} must be a number >= 0")
  scope = obj_cfg.get("warmup_scope", "prior")
  if scope not in objectives.WARMUP_SCOPES:
    raise allowed("config.objective.warmup_scope", scope, objectives.WARMUP_SCOPES)
  warmup = obj_cfg.get("warmup_epochs", 0)
  if not isinstance(warmup, (int, float)) or warmup < 0:
    raise ConfigError(f"config.objective.warmup_epochs={warmup!r} must be a number >= 0")
  return {"alpha": float(alpha), "warmup_scope": scope}


def build(config):
  """(model, loss_fn) for ``config``; ``loss_fn(model, params, batch, rng, *,
  kl_weight, reduce)`` has alpha and the warm-up scope bound."""
  if "objective" not in config or "name" not in config.objective:
    raise ConfigError("config.objective.name is missing; allowed: "
                      + ", ".join(sorted(objectives.REGISTRY)))
  objective = objectives.get(config.objective.name)
  options = objective_options(config.objective)
  model = Model(spec_from_config(config.model, objective.components))
  return model, checked_loss(functools.partial(objective.fn, **options))


def checked_loss(fn):
  """``fn`` after ``model.check_batch`` of the modalities the model reads (a VAE: x
  alone): a missing one or a wrong shape is a one-line ConfigError when the loss is
  traced; out-of-range values (uint8 images, labels past the last class, nan) too when
  it is called on concrete arrays. Other keys of the batch are left alone."""
  @functools.wraps(fn)
  def loss_fn(model, params, batch, rng, **kwargs):
    model.check_batch(batch, model.spec.read)
    return fn(model, params, batch, rng, **kwargs)
  return loss_fn


def kl_weight(epoch: float, warmup_epochs: float) -> float:
  """The warm-up weight: rises linearly from 0 to 1 over ``warmup_epochs``."""
  if warmup_epochs <= 0:
    return 1.0
  return min(1.0, epoch / warmup_epochs)
