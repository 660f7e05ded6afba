"""A modality: its declared shape, its likelihood, and how data enters a network.

A modality is declared in the config (``config.model.modalities.NAME``, its fields
checked by ``schema.check_modality``) with a likelihood, a shape and a network;
everything else (encoder inputs, decoder output sizes, log-likelihoods, generation)
follows from this module, so a new modality is a config change.

Data conventions:
* ``bernoulli``: values in [0, 1] of the declared shape (e.g. (28, 28, 1)).
* ``categorical``: shape (C,); data as integer class indices ``[B]`` or as
  one-hot / soft float vectors ``[B, C]``.
* ``gaussian``: real values of the declared shape; the variance is fixed
  (``variance``) or learned per element (``learn_variance``); the mean can pass
  through ``mean_activation`` (the authors' CelebA attributes use tanh, and their
  values must then lie in [-1, 1], coded -1/1, not 0/1).

``reduction`` says how an image's elementwise log-densities become log p(x|z):
``sum`` (the density of all H x W x C values) or ``channel_mean`` (summed over height
and width, averaged over the C channels: the authors' CelebA code, whose numbers
Table 2 reports; 1/C of the sum).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jmvae_jax import distributions as D
from jmvae_jax.errors import ConfigError

NETWORKS = ("mlp", "conv64")
REDUCTIONS = ("sum", "channel_mean")
LAYOUTS = ("mirrored", "authors")   # conv64: see networks.ConvStack and DeconvStack
MEAN_ACTIVATIONS = {"identity": lambda m: m, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
  """A modality as declared in the config; hashable, so it can be static under jit."""
  name: str
  likelihood: str
  shape: tuple[int, ...]
  network: str = "mlp"
  hidden: tuple[int, ...] = (512, 512)
  decoder_hidden: tuple[int, ...] = (512, 512)
  variance: float = 1.0
  learn_variance: bool = False
  mean_activation: str = "identity"
  filters: tuple[int, ...] = (64, 128, 256, 256)
  dense: int = 1024
  reduction: str = "sum"
  layout: str = "mirrored"

  @property
  def likelihood_fns(self) -> "Likelihood":
    return LIKELIHOODS[self.likelihood]

  @property
  def binary_threshold(self) -> float:
    """Where a binary attribute coded in this modality's data space flips: 1/2 for a
    {0, 1} coding (Bernoulli, or a Gaussian whose mean goes through a sigmoid), else 0
    (+-1, the authors' CelebA coding)."""
    return 0.5 if self.likelihood == "bernoulli" or self.mean_activation == "sigmoid" else 0.0

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def param_shape(self) -> tuple[int, ...]:
    """Shape of the decoder's output for one example."""
    factor = self.likelihood_fns.num_params(self)
    return self.shape[:-1] + (self.shape[-1] * factor,)

  @property
  def event_ndim(self) -> int:
    return len(self.shape)

  def flat_log_prob(self, out: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x | decoder output), with the event axes of an elementwise likelihood
    flattened to one first: the same number, and several times faster on XLA:CPU
    than elementwise work and sums over (28, 28, 1)."""
    spec = self
    if self.event_ndim > 1 and self.likelihood != "categorical" and self.param_shape == self.shape:
      spec = dataclasses.replace(self, shape=(self.size,))
      out = out.reshape(out.shape[: out.ndim - self.event_ndim] + (-1,))
      x = x.reshape(x.shape[: x.ndim - self.event_ndim] + (-1,))
    log_prob = spec.likelihood_fns.log_prob(spec, out, x)
    return log_prob / self.shape[-1] if self.reduction == "channel_mean" else log_prob


# ----------------------------------------------------------------------------
# Likelihoods: decoder output -> log p(x | z), mean, sample.
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Likelihood:
  num_params: Callable[[ModalitySpec], int]
  log_prob: Callable[[ModalitySpec, jax.Array, jax.Array], jax.Array]
  mean: Callable[[ModalitySpec, jax.Array], jax.Array]
  sample: Callable[[jax.Array, ModalitySpec, jax.Array], jax.Array]


def _gaussian_split(spec: ModalitySpec, out: jax.Array):
  if spec.learn_variance:
    mean, logvar = jnp.split(out, 2, axis=-1)
  else:
    mean, logvar = out, jnp.full_like(out, math.log(spec.variance))
  return MEAN_ACTIVATIONS[spec.mean_activation](mean), logvar


def _gaussian_log_prob(spec, out, x):
  mean, logvar = _gaussian_split(spec, out)
  if spec.learn_variance:
    return D.gaussian_log_prob(mean, logvar, x, spec.event_ndim)
  return D.gaussian_fixed_log_prob(mean, x, spec.variance, spec.event_ndim)


def _gaussian_sample(rng, spec, out):
  mean, logvar = _gaussian_split(spec, out)
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": Likelihood(
        num_params=lambda s: 1,
        log_prob=lambda s, out, x: D.bernoulli_log_prob(out, x, s.event_ndim),
        mean=lambda s, out: jax.nn.sigmoid(out),
        sample=lambda rng, s, out: jax.random.bernoulli(rng, jax.nn.sigmoid(out)).astype(out.dtype),
    ),
    "categorical": Likelihood(
        num_params=lambda s: 1,
        log_prob=lambda s, out, x: D.categorical_log_prob(out, x),
        mean=lambda s, out: jax.nn.softmax(out, axis=-1),
        sample=lambda rng, s, out: jax.random.categorical(rng, out, axis=-1),
    ),
    "gaussian": Likelihood(
        num_params=lambda s: 2 if s.learn_variance else 1,
        log_prob=_gaussian_log_prob,
        mean=lambda s, out: _gaussian_split(s, out)[0],
        sample=_gaussian_sample,
    ),
}


def encoder_input(spec: ModalitySpec, x: jax.Array) -> jax.Array:
  """The float array a network sees: one-hot for integer class labels."""
  if spec.likelihood == "categorical" and jnp.issubdtype(x.dtype, jnp.integer):
    return jax.nn.one_hot(x, spec.shape[-1], dtype=jnp.float32)
  return x.astype(jnp.float32)


def batch_dims(spec: ModalitySpec, x) -> tuple[int, ...]:
  """The leading (non-event) dimensions of a data array of this modality."""
  if spec.likelihood == "categorical" and jnp.issubdtype(x.dtype, jnp.integer):
    return tuple(x.shape)
  return tuple(x.shape[: x.ndim - spec.event_ndim])


# ----------------------------------------------------------------------------
# Data checks: one-line errors naming the batch entry, before anything compiles.
# ----------------------------------------------------------------------------

def check_data(spec: ModalitySpec, x, where: str = "batch") -> None:
  """Raises a one-line ConfigError if ``x`` does not match the declared modality: its
  shape always; its values too when they are concrete (not traced under jit): finite,
  in [0, 1] for a Bernoulli modality or one-hot labels, integer labels in [0, C)."""
  shape, dtype = tuple(x.shape), x.dtype
  if spec.likelihood == "categorical" and jnp.issubdtype(dtype, jnp.integer):
    if len(shape) < 1:
      raise ConfigError(f"{where}[{spec.name!r}] has shape {shape}; expected [batch] labels")
    _check_values(spec, x, where, 0, spec.shape[0] - 1, f"labels in [0, {spec.shape[0] - 1}]")
    return
  if shape[len(shape) - spec.event_ndim:] != spec.shape or len(shape) <= spec.event_ndim:
    expected = f"[batch, {', '.join(map(str, spec.shape))}]"
    if spec.likelihood == "categorical":
      expected = f"[batch] integer labels or {expected} one-hot"
    raise ConfigError(
        f"{where}[{spec.name!r}] has shape {shape}; modality {spec.name!r} "
        f"({spec.likelihood}) expects {expected}")
  if spec.likelihood == "bernoulli":
    _check_values(spec, x, where, 0, 1, "values in [0, 1] (binary, or grey levels / 255)")
  elif spec.likelihood == "categorical":
    _check_values(spec, x, where, 0, 1, "one-hot rows of 0 and 1")
  elif spec.mean_activation == "tanh":
    _check_values(spec, x, where, -1, 1, "values in [-1, 1] (binary attributes coded -1/1)")
    _check_not_zero_one(spec, x, where)
  else:
    _check_values(spec, x, where, -math.inf, math.inf, "finite values")


def _check_values(spec: ModalitySpec, x, where: str, low, high, expected: str) -> None:
  if isinstance(x, jax.core.Tracer):   # under jit: the shape was all there is to check
    return
  v = np.asarray(x)
  if v.size == 0:
    return
  if jnp.issubdtype(v.dtype, jnp.floating) and not np.all(np.isfinite(v)):
    raise ConfigError(f"{where}[{spec.name!r}] holds nan or inf; modality {spec.name!r} "
                      f"({spec.likelihood}) expects {expected}")
  lo, hi = v.min(), v.max()
  if lo < low or hi > high:
    raise ConfigError(f"{where}[{spec.name!r}] has values in [{lo:g}, {hi:g}]; modality "
                      f"{spec.name!r} ({spec.likelihood}) expects {expected}")


def _check_not_zero_one(spec: ModalitySpec, x, where: str) -> None:
  """Binary attributes coded 0/1 under a tanh mean (whose coding is -1/1) would train
  without complaint and mean something else: refused."""
  if isinstance(x, jax.core.Tracer):
    return
  v = np.asarray(x)
  if v.size and np.all((v == 0) | (v == 1)) and np.any(v == 0):
    raise ConfigError(f"{where}[{spec.name!r}] holds only 0 and 1; modality {spec.name!r} "
                      "(gaussian, tanh mean) expects binary values coded -1 and 1 (map w to "
                      "2w - 1, or set mean_activation='sigmoid' for a 0/1 coding)")
