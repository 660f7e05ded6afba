"""From a config to a Model and its objective: ``build(config) -> (model, loss_fn)``.

The model and objective sections are checked against the schema first (one-line
ConfigErrors naming the field, before anything is traced or compiled).
"""
from __future__ import annotations

import functools

from jmvae_jax import objectives, schema
from jmvae_jax.errors import ConfigError
from jmvae_jax.model import Model, spec_from_config


def build(config):
  """(model, loss_fn) for ``config``; ``loss_fn(model, params, batch, rng, *,
  kl_weight, reduce)`` has alpha and the warm-up scope bound."""
  return from_checked(schema.check(config, sections=("model", "objective", "gan")))


def from_checked(c):
  """``build`` of a config that ``schema.check`` has checked and completed. A GAN
  objective gets a ``gan.GanModel`` (the Model with a discriminator on x)."""
  objective = objectives.get(c.objective.name)
  options = {"alpha": c.objective.alpha, "warmup_scope": c.objective.warmup_scope}
  spec = spec_from_config(c.model, objective.components)
  model = _gan_model(spec, c, objective) if objective.gan else Model(spec)
  return model, checked_loss(functools.partial(objective.fn, **options))


def _gan_model(spec, c, objective):
  from jmvae_jax import gan
  x = spec.modality(spec.x)
  if x.network != "conv64":
    raise ConfigError(f"config.objective.name={objective.name!r} puts a discriminator on x, "
                      f"which must be an image of network 'conv64'; "
                      f"config.model.modalities.{x.name}.network is {x.network!r}")
  g = c.gan
  fn = objective.fn
  model = gan.GanModel(spec, gan.GanSpec(
      filters=tuple(g.filters), dense=g.dense, gamma=g.gamma, prior_noise=g.prior_noise,
      reconstruction=g.reconstruction, feature_layer=g.feature_layer,
      log_d=g.log_d, equilibrium=g.equilibrium, margin=g.margin,
      pause_d_on=g.pause_d_on, order=g.order,
      instance_noise=g.instance_noise,
      conditioned=objective.gan == "conditioned",
      decoder_loss=getattr(fn, "decoder_loss", None),
      discriminator_loss=getattr(fn, "discriminator_loss", None)))
  if g.prior_noise == "from_w" and not set(spec.w) <= set(model.conditions[spec.x]):
    try:   # the encoder that w -> x translation (and so prior_noise) reads w with
      model.posterior_encoder(spec.w)
    except ConfigError:
      raise ConfigError(f"config.gan.prior_noise='from_w' draws z from q(z|w), but "
                        f"{objective.name!r} has no encoder of {list(spec.w)} nor a decoder "
                        f"conditioned on it; use 'uniform' or 'normal'") from None
  return model


def check_loss(model, loss_fn, params, modalities: dict, batch_size: int, name: str) -> None:
  """The objective's contract, traced on shapes alone (``jax.eval_shape``, nothing
  compiled): called as ``fn(model, params, batch, rng, *, kl_weight, **options)`` it
  returns ``(a scalar loss, a dict of terms)``. A one-line ConfigError otherwise."""
  import jax
  batch = {n: jax.ShapeDtypeStruct((batch_size,) + tuple(shape), dtype)
           for n, (shape, dtype) in modalities.items()}
  field = f"config.objective.name={name!r}"
  try:
    out = jax.eval_shape(lambda p, b: loss_fn(model, p, b, jax.random.PRNGKey(0),
                                              kl_weight=1.0), params, batch)
  except TypeError as e:
    raise ConfigError(f"{field}: calling it failed ({e}); an objective is fn(model, params, "
                      "batch, rng, *, kl_weight=1.0, reduce=True, **options) -> (loss, terms)") \
        from None
  if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
    raise ConfigError(f"{field} returned {type(out).__name__}, not (loss, terms): a loss "
                      "and a dict of named terms")
  if getattr(out[0], "shape", None) != ():
    raise ConfigError(f"{field} returned a loss of shape {tuple(out[0].shape)}; with "
                      "reduce=True (training) it is a scalar, the batch's mean")


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
