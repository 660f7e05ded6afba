"""What the GAN is judged by: the discriminator's accuracy on held-out images, and a
Frechet distance between real and generated images.

The Frechet distance (Heusel et al. 2017) compares Gaussians fitted to features of the
two sets of images, ``||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The standard FID
reads Inception-v3's features; here they are the hidden layer of the project's own
classifier of x (``classifier``, trained on the training split), so it works offline
and is comparable between models evaluated with the same cached classifier, not with
published FIDs. Generated images are the decoder's means, one per test example, keyed by
its index: at z ~ N(0, I) ("prior"), and at z drawn as the w -> x translation draws it
(q(z|w), or N(0, I) for a decoder conditioned on w), from the example's w ("from_w",
the images that coherence judges). Both run through the one masked loop (``loop.run``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jmvae_jax import distributions as D
from jmvae_jax import gan
from jmvae_jax.eval import loop
from jmvae_jax.eval.classifier import hidden_features

_STREAM = (1 << 20) + 2   # rng stream of these draws


def _keys(seed, index, salt):
  stream = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAM), salt)
  return jax.vmap(lambda i: jax.random.fold_in(stream, i))(index)


def _normal(keys, dim):
  return jax.vmap(lambda k: jax.random.normal(k, (dim,), jnp.float32))(keys)


def prior_images(model, params, batch, index, seed):
  z = _normal(_keys(seed, index, 0), model.spec.latent_dim)
  return model.generate(params, model.spec.x, z, {n: batch[n] for n in model.spec.w})


def w_images(model, params, batch, index, seed):
  """x generated from each example's w, z drawn (keyed by the index) as translate draws it."""
  w = {n: batch[n] for n in model.spec.w}
  q = model.translation_posterior(params, w, model.spec.x)
  z = D.reparameterise(q, _normal(_keys(seed, index, 3), model.spec.latent_dim))
  return model.generate(params, model.spec.x, z, w)


def _prior_noise(model, params, batch, keys):
  """The GAN's prior noise (``gan.prior_noise``), one draw per example from its key."""
  one = lambda k, b: gan.prior_noise(model, params, jax.tree.map(lambda v: v[None], b), k)[0]
  return jax.vmap(one)(keys, batch)


def _d_values(model, seed, params, batch, index, mask):
  """Per example: D right about the real image, its reconstruction (z ~ q), and an image
  from the prior noise (z_p as the GAN draws it), each with D's instance noise."""
  x = model.spec.x
  cond = {n: batch[n] for n in model.spec.w}
  q = model.posterior(params, {n: batch[n] for n in model.spec.read})
  z = D.reparameterise(q, _normal(_keys(seed, index, 1), model.spec.latent_dim))
  z_p = _prior_noise(model, params, batch, _keys(seed, index, 2))
  images = {"real": batch[x], "reconstructed": model.generate(params, x, z, cond),
            "prior": model.generate(params, x, z_p, cond)}
  sigma = model.gan.instance_noise   # D judges images as it was trained to see them
  logits = {}
  for salt, (kind, image) in enumerate(images.items(), 4):
    if sigma > 0:
      keys = _keys(seed, index, salt)
      image = image + sigma * jax.vmap(lambda k: jax.random.normal(k, image.shape[1:]))(keys)
    logit = model.discriminate(params, image, cond)[0]
    logits[kind] = logit if kind == "real" else -logit
  return {k: jnp.where(mask > 0, (v > 0).astype(jnp.float32), 0.0) for k, v in logits.items()}


@functools.lru_cache(maxsize=16)
def _jit(fn, *static):
  return jax.jit(functools.partial(fn, *static))


def _run(model, batches, fn, args, inputs, what, mesh):
  """``fn(*args, batch, index, mask)`` over the batches, ``args`` replicated once."""
  mesh = loop.default_mesh() if mesh == "auto" else mesh
  state = {}

  def call(batch, index, mask):
    state.setdefault("args", loop.replicate(mesh, args))
    return fn(*state["args"], batch, index, mask)

  return loop.run(model, batches, inputs, call, mesh=mesh, progress=None, total=None,
                  what=what)


def discriminator_accuracy(model, params, batches, *, seed: int = 0, mesh="auto") -> dict:
  """{"real", "reconstructed", "prior": {"mean", "stderr"}}: how often D calls held-out
  real images real and the decoder's images (from z ~ q and from the prior noise) fake."""
  sums, sqs, count, _ = _run(model, batches, _jit(_d_values, model, seed), (params,),
                             model.spec.read, "discriminator accuracy", mesh)
  return loop.summary(sums, sqs, count)


def _feature_values(model, seed, params, clf, batch, index, mask):
  keep = (mask > 0)[:, None]
  out = {}
  for name, images in (("real", batch[model.spec.x]),
                       ("prior", prior_images(model, params, batch, index, seed)),
                       ("from_w", w_images(model, params, batch, index, seed))):
    f = jnp.where(keep, hidden_features(clf, images), 0.0)
    out[f"{name}/sum"] = f
    out[f"{name}/outer"] = f[:, :, None] * f[:, None, :]
  return out


def frechet(m1, s1, m2, s2) -> float:
  """||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the trace of the root from the
  eigenvalues of S1 S2 (real and >= 0 for covariances, up to rounding)."""
  roots = np.sqrt(np.clip(np.real(np.linalg.eigvals(s1 @ s2)), 0.0, None))
  return float(np.sum(np.square(m1 - m2)) + np.trace(s1) + np.trace(s2) - 2 * roots.sum())


def frechet_distances(model, params, clf_params, batches, *, seed: int = 0, mesh="auto"):
  """{"prior", "from_w"}: the Frechet distance between the test images and as many
  generated ones of each kind, in the classifier's hidden features."""
  names = (model.spec.x,) + tuple(model.spec.w)
  sums, _, count, _ = _run(model, batches, _jit(_feature_values, model, seed),
                           (params, clf_params), names, "frechet distance", mesh)
  stats = {}
  for name in ("real", "prior", "from_w"):
    mean = sums[f"{name}/sum"] / count
    stats[name] = (mean, sums[f"{name}/outer"] / count - np.outer(mean, mean))
  return {k: frechet(*stats["real"], *stats[k]) for k in ("prior", "from_w")}
