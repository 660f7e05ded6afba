"""Generating x from attributes and editing x's attributes: the paper's Figures 4 and 5
(faces and their 40 attributes on CelebA), as library calls for any model with q(z|w),
q(z|x, w) and p(w|z).

    images, samples = generate.from_attributes(model, params, w, rng, samples=7)
    predicted, edited = generate.edit(model, params, images, {"Smiling": 1.0}, names)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jmvae_jax import distributions as D
from jmvae_jax.errors import ConfigError


def _w(model) -> str:
  if len(model.spec.w) != 1:
    raise ConfigError(f"generate: the model needs one w modality, it has {model.spec.w}")
  return model.spec.w[0]


def from_attributes(model, params, w, rng, samples: int = 0):
  """x generated from each attribute vector of ``w`` [N, A] through q(z|w): (the decoder
  mean at q's mean [N, ...], at ``samples`` draws [N, samples, ...]). The draws share
  their noise across the N vectors (z = mean(w) + std(w) * eps_s), so column s shows
  the same variation under every attribute vector, as in the paper's Figure 4(b)."""
  name, x = _w(model), model.spec.x
  w = jnp.asarray(w, jnp.float32)
  q = model.posterior(params, {name: w})
  means = model.generate(params, x, q.mean, {name: w})
  eps = jax.random.normal(rng, (samples, 1, model.spec.latent_dim), q.mean.dtype)
  z = D.reparameterise(q, eps)
  drawn = model.generate(params, x, z.reshape(-1, model.spec.latent_dim),
                         {name: jnp.tile(w, (samples, 1))})
  drawn = drawn.reshape((samples,) + means.shape)
  return np.asarray(means), np.asarray(jnp.moveaxis(drawn, 0, 1))


def attribute_index(names, wanted) -> list[int]:
  """Positions of the attribute names ``wanted`` in ``names``; a one-line error for one
  that is not there."""
  out = []
  for n in wanted:
    if n not in names:
      raise ConfigError(f"config.eval.figure_attributes: {n!r} is not an attribute of this "
                        f"dataset; its attributes: {', '.join(names)}")
    out.append(list(names).index(n))
  return out


def edit(model, params, images, changes: dict, names):
  """Predicts each image's attributes (z the mean of q(z|x), w the mean of p(w|z)), sets
  the ``changes`` ({name: a value, or one per image}, e.g. {"Smiling": 1.0}) and decodes
  x again from the mean of q(z|x, w'): (predicted w [B, A], edited x [B, ...])."""
  name, x = _w(model), model.spec.x
  images = jnp.asarray(images, jnp.float32)
  predicted = model.generate(params, name, model.posterior(params, {x: images}).mean)
  edited = predicted
  for i, value in zip(attribute_index(names, changes), changes.values()):
    edited = edited.at[:, i].set(value)
  z = model.posterior(params, {x: images, name: edited}).mean
  return np.asarray(predicted), np.asarray(model.generate(params, x, z, {name: edited}))


def base_attributes(w) -> np.ndarray:
  """The most common sign of each attribute over ``w`` [N, A] (+-1): a typical example."""
  return np.where(np.mean(np.asarray(w) > 0, axis=0) >= 0.5, 1.0, -1.0).astype(np.float32)
