"""Flax Linen encoders and decoders, built from ModalitySpecs.

Every module takes inputs with exactly one leading batch axis; the Model in
``model.py`` folds extra leading axes (importance samples) into it.

* ``Branch``: the per-modality feature extractor (an MLP, or the CelebA
  convolution stack for ``network='conv64'``).
* ``Encoder``: q(z | modalities in its subset) = N(mu, diag sigma^2); one branch
  per modality, the features concatenated, optional shared layers, then the
  mean and the variance.
* ``Decoder``: z (optionally concatenated with conditioning modalities, as the
  CVAE decoder p(x | z, w)) to the raw parameters of a modality's likelihood.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jmvae_jax import distributions as D
from jmvae_jax.modalities import ModalitySpec

ACTIVATIONS = {
    "leaky_relu": nn.leaky_relu,   # the paper (slope 0.01, Flax's default)
    "relu": nn.relu,               # the authors' code
    "elu": nn.elu,
    "tanh": nn.tanh,
}
VARIANCE_PARAMS = ("log", "softplus")
NORMS = ("none", "layer")
MIN_VARIANCE = 1e-6


def _norm(kind: str, name: str):
  if kind == "layer":
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), name=name)
  return lambda x: x


class MLP(nn.Module):
  features: Sequence[int]
  activation: str

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    x = x.reshape(x.shape[0], -1)
    for i, f in enumerate(self.features):
      x = act(nn.Dense(f, name=f"dense{i}")(x))
    return x


class ConvStack(nn.Module):
  """Four 4x4 stride-2 convolutions (64x64 -> 4x4), flatten, one dense layer."""
  filters: Sequence[int]
  dense: int
  activation: str
  norm: str

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    for i, f in enumerate(self.filters):
      x = nn.Conv(f, (4, 4), strides=(2, 2), padding="SAME", name=f"conv{i}")(x)
      x = act(_norm(self.norm, f"norm{i}")(x))
    x = x.reshape(x.shape[0], -1)
    return act(nn.Dense(self.dense, name="dense")(x))


class DeconvStack(nn.Module):
  """The mirror of ConvStack: dense to 4x4, four stride-2 transposed convolutions."""
  filters: Sequence[int]
  dense: int
  out_channels: int
  activation: str
  norm: str

  @nn.compact
  def __call__(self, h):
    act = ACTIVATIONS[self.activation]
    h = act(nn.Dense(self.dense, name="dense0")(h))
    top = self.filters[-1]
    h = act(nn.Dense(4 * 4 * top, name="dense1")(h)).reshape(h.shape[0], 4, 4, top)
    ups = list(reversed(self.filters[:-1]))
    for i, f in enumerate(ups):
      h = nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding="SAME", name=f"deconv{i}")(h)
      h = act(_norm(self.norm, f"norm{i}")(h))
    return nn.ConvTranspose(self.out_channels, (4, 4), strides=(2, 2), padding="SAME",
                            name=f"deconv{len(ups)}")(h)


def branch(spec: ModalitySpec, activation: str, norm: str, name: str) -> nn.Module:
  if spec.network == "conv64":
    return ConvStack(spec.filters, spec.dense, activation, norm, name=name)
  return MLP(spec.hidden, activation, name=name)


class GaussianHead(nn.Module):
  latent_dim: int
  variance_param: str = "log"

  @nn.compact
  def __call__(self, h) -> D.DiagGaussian:
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    raw = nn.Dense(self.latent_dim, name="variance")(h)
    if self.variance_param == "softplus":   # the authors': a variance through softplus
      logvar = jnp.log(nn.softplus(raw) + MIN_VARIANCE)
    else:                                   # a log-variance, unconstrained
      logvar = raw
    return D.DiagGaussian(mean, logvar)


class Encoder(nn.Module):
  modalities: tuple[ModalitySpec, ...]
  latent_dim: int
  joint_hidden: tuple[int, ...] = ()
  activation: str = "leaky_relu"
  variance_param: str = "log"
  norm: str = "none"

  @nn.compact
  def __call__(self, inputs: dict) -> D.DiagGaussian:
    feats = [branch(s, self.activation, self.norm, f"branch_{s.name}")(inputs[s.name])
             for s in self.modalities]
    h = jnp.concatenate(feats, axis=-1)
    if self.joint_hidden and len(self.modalities) > 1:
      h = MLP(self.joint_hidden, self.activation, name="shared")(h)
    return GaussianHead(self.latent_dim, self.variance_param, name="head")(h)


class Decoder(nn.Module):
  target: ModalitySpec
  conditions: tuple[ModalitySpec, ...] = ()
  activation: str = "leaky_relu"
  norm: str = "none"

  @nn.compact
  def __call__(self, z, cond: dict | None = None):
    h = z
    if self.conditions:
      parts = [cond[s.name].reshape(z.shape[0], -1) for s in self.conditions]
      h = jnp.concatenate([z] + parts, axis=-1)
    spec = self.target
    if spec.network == "conv64":
      return DeconvStack(spec.filters, spec.dense, spec.param_shape[-1], self.activation,
                         self.norm, name="net")(h)
    h = MLP(spec.decoder_hidden, self.activation, name="net")(h)
    out = nn.Dense(math.prod(spec.param_shape), name="out")(h)
    return out.reshape((z.shape[0],) + spec.param_shape)
