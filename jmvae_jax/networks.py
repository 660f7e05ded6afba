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
import jax
import jax.numpy as jnp
import numpy as np

from jmvae_jax import distributions as D
from jmvae_jax.errors import allowed
from jmvae_jax.modalities import ModalitySpec

ACTIVATIONS = {
    "leaky_relu": nn.leaky_relu,   # the paper (slope 0.01, Flax's default)
    "relu": nn.relu,               # the authors' code
    "elu": nn.elu,
    "tanh": nn.tanh,
}
VARIANCE_PARAMS = ("log", "softplus")
NORMS = ("none", "layer", "batch")
MIN_VARIANCE = 1e-6


def _norm(kind: str, name: str, training: bool = False, first: bool = False):
  """The normalisation after a convolution. ``batch``: the authors' (Lasagne's running
  averages with alpha 0.1 and epsilon 1e-4; none after the encoder's first convolution);
  the batch's statistics while ``training``, the running averages otherwise."""
  if kind == "layer":
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), name=name)
  if kind == "batch" and not first:
    return nn.BatchNorm(use_running_average=not training, momentum=0.9, epsilon=1e-4,
                        name=name)
  return lambda x: x


class MLP(nn.Module):
  """Dense layers; with ``norm="batch"`` each but the first is batch-normalised (the
  authors' attribute networks); other norms apply to convolutions only."""
  features: Sequence[int]
  activation: str
  norm: str = "none"

  @nn.compact
  def __call__(self, x, training: bool = False):
    act = ACTIVATIONS[self.activation]
    x = x.reshape(x.shape[0], -1)
    for i, f in enumerate(self.features):
      x = nn.Dense(f, name=f"dense{i}")(x)
      if self.norm == "batch":
        x = _norm("batch", f"norm{i}", training, first=i == 0)(x)
      x = act(x)
    return x


# ----------------------------------------------------------------------------
# 4x4 stride-2 convolutions, down and up, in two equivalent forms.
# ----------------------------------------------------------------------------

_NHWC = ("NHWC", "HWIO", "NHWC")
# ConvTranspose(4x4, stride 2, "SAME") as Flax and lax compute it, per axis: output
# 2i + a = x[i + a - 1] * w[UP_TAPS[a][0]] + x[i + a] * w[UP_TAPS[a][1]] (x zero outside).
UP_TAPS = np.array([[0, 2], [1, 3]])


def _same_pads(size: int, kernel: int = 4, stride: int = 2) -> tuple[int, int]:
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv_down_xla(x, kernel):
  """[B, H, W, C] -> [B, H/2, W/2, F]: XLA's convolution, as nn.Conv computes it."""
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=_NHWC)


def conv_up_xla(x, kernel):
  """[B, H, W, C] -> [B, 2H, 2W, F]: XLA's transposed convolution, as nn.ConvTranspose."""
  return jax.lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_NHWC)


def conv_down_matmul(x, kernel):
  """``conv_down_xla`` as one matmul over the 16 strided patches of every output pixel."""
  _, h, w, c = x.shape
  (top, bottom), (left, right) = _same_pads(h), _same_pads(w)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  oh, ow = -(-h // 2), -(-w // 2)
  patches = jnp.concatenate([xp[:, ty:ty + 2 * oh - 1:2, tx:tx + 2 * ow - 1:2]
                             for ty in range(4) for tx in range(4)], -1)
  return patches @ kernel.reshape(16 * c, -1)


def conv_up_matmul(x, kernel):
  """``conv_up_xla`` as one matmul: each of the (H+1) x (W+1) 2x2 windows of the padded
  input gives the four output phases that read it (UP_TAPS), then the phases interleave."""
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate([xp[:, ty:ty + h + 1, tx:tx + w + 1]
                             for ty in range(2) for tx in range(2)], -1)
  taps = UP_TAPS.T                                          # [window position, phase]
  k = kernel[taps[:, None, :, None], taps[None, :, None, :]]   # [ty, tx, a, b, C, F]
  k = k.transpose(0, 1, 4, 2, 3, 5).reshape(4 * c, 4 * f)
  y = (patches @ k).reshape(b, h + 1, w + 1, 2, 2, f)
  rows = [jnp.stack([y[:, a:a + h, p:p + w, a, p] for p in range(2)], 3) for a in range(2)]
  phases = jnp.stack(rows, 2)                                  # [B, H, a, W, b, F]
  # Under an explicit-sharding mesh, jax cannot infer the sharding of a reshape that
  # merges middle axes: the output is split like the input (over its batch axis).
  return jax.lax.reshape(phases, (b, 2 * h, 2 * w, f), out_sharding=jax.typeof(x).sharding)


CONV_IMPLS = ("auto", "xla", "matmul")


def conv_impl(impl: str = "auto") -> str:
  """``impl`` with "auto" resolved: "matmul" where jax's default backend is a CPU, else
  "xla". Decided when the model is traced, from the default backend, not from the
  device a computation is later placed on."""
  if impl not in CONV_IMPLS:
    raise allowed("StrideTwoConv.impl", impl, CONV_IMPLS)
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


_CONVS = {("xla", False): conv_down_xla, ("xla", True): conv_up_xla,
          ("matmul", False): conv_down_matmul, ("matmul", True): conv_up_matmul}


class StrideTwoConv(nn.Module):
  """A 4x4 stride-2 "SAME" convolution (``up=False``) or transposed convolution
  (``up=True``), with nn.Conv's / nn.ConvTranspose's parameters (``kernel`` [4, 4, C, F],
  ``bias``) and initialisers. ``impl="auto"`` computes it with XLA's convolutions on
  accelerators and as matmuls over patches on a CPU, where XLA's convolution gradients
  are slow (BUILD_NOTES.md); both compute the same function of a
  [batch, H, W, C] input, in the promoted dtype of input and parameters."""
  features: int
  up: bool = False
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=None)
    return _CONVS[conv_impl(self.impl), self.up](x, kernel) + bias


class ConvStack(nn.Module):
  """Four 4x4 stride-2 convolutions (64x64 -> 4x4), flatten, one dense layer (none with
  ``flatten_only``: the authors' joint encoder hands the flattened maps to its shared
  layers)."""
  filters: Sequence[int]
  dense: int
  activation: str
  norm: str
  flatten_only: bool = False

  @nn.compact
  def __call__(self, x, training: bool = False):
    act = ACTIVATIONS[self.activation]
    for i, f in enumerate(self.filters):
      x = StrideTwoConv(f, name=f"conv{i}")(x)
      x = act(_norm(self.norm, f"norm{i}", training, first=i == 0)(x))
    x = x.reshape(x.shape[0], -1)
    return x if self.flatten_only else act(nn.Dense(self.dense, name="dense")(x))


class DeconvStack(nn.Module):
  """The mirror of ConvStack: a dense layer, dense to 4x4 (that one alone with
  ``one_dense``, the authors'), four stride-2 transposed convolutions."""
  filters: Sequence[int]
  dense: int
  out_channels: int
  activation: str
  norm: str
  one_dense: bool = False

  @nn.compact
  def __call__(self, h, training: bool = False):
    act = ACTIVATIONS[self.activation]
    if not self.one_dense:
      h = act(nn.Dense(self.dense, name="dense0")(h))
    top = self.filters[-1]
    h = act(nn.Dense(4 * 4 * top, name="dense1")(h)).reshape(h.shape[0], 4, 4, top)
    ups = list(reversed(self.filters[:-1]))
    for i, f in enumerate(ups):
      h = StrideTwoConv(f, up=True, name=f"deconv{i}")(h)
      h = act(_norm(self.norm, f"norm{i}", training)(h))
    return StrideTwoConv(self.out_channels, up=True, name=f"deconv{len(ups)}")(h)


def branch(spec: ModalitySpec, activation: str, norm: str, name: str,
           joint: bool = False) -> nn.Module:
  """A modality's feature extractor in an encoder (``joint``: of several modalities)."""
  if spec.network == "conv64":
    return ConvStack(spec.filters, spec.dense, activation, norm,
                     flatten_only=joint and spec.layout == "authors", name=name)
  return MLP(spec.hidden, activation, norm, name=name)


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
  def __call__(self, inputs: dict, training: bool = False) -> D.DiagGaussian:
    joint = len(self.modalities) > 1
    feats = []
    for s in self.modalities:
      net = branch(s, self.activation, self.norm, f"branch_{s.name}", joint)
      feats.append(net(inputs[s.name], training))
    h = jnp.concatenate(feats, axis=-1)
    if self.joint_hidden and len(self.modalities) > 1:
      h = MLP(self.joint_hidden, self.activation, self.norm, name="shared")(h, training)
    return GaussianHead(self.latent_dim, self.variance_param, name="head")(h)


class Decoder(nn.Module):
  target: ModalitySpec
  conditions: tuple[ModalitySpec, ...] = ()
  activation: str = "leaky_relu"
  norm: str = "none"

  @nn.compact
  def __call__(self, z, cond: dict | None = None, training: bool = False):
    h = z
    if self.conditions:
      parts = [cond[s.name].reshape(z.shape[0], -1) for s in self.conditions]
      h = jnp.concatenate([z] + parts, axis=-1)
    spec = self.target
    if spec.network == "conv64":
      return DeconvStack(spec.filters, spec.dense, spec.param_shape[-1], self.activation,
                         self.norm, one_dense=spec.layout == "authors", name="net")(h, training)
    h = MLP(spec.decoder_hidden, self.activation, self.norm, name="net")(h, training)
    out = nn.Dense(math.prod(spec.param_shape), name="out")(h)
    return out.reshape((z.shape[0],) + spec.param_shape)
