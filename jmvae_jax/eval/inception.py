"""The standard FID (Heusel et al. 2017), from Inception weights the user gives by path.

``config.eval.inception_path`` names a TensorFlow SavedModel that maps float32 images
[N, 299, 299, 3] with values in [0, 1] to features [N, D] (e.g. TF-Hub's
``imagenet/inception_v3/feature_vector``, D = 2048, saved to disk). The test images and
as many generated ones (the decoder's means at z ~ N(0, I), one per test example) are
mapped to [0, 1] (``Dataset.display`` for standardised
pixels), resized to 299 x 299 (bilinear; grey images repeated to RGB), passed through the
model on the host, and the two Gaussians compared. FIDs from different Inception
weights or resizings differ; report the model with the number.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from jmvae_jax.errors import ConfigError
from jmvae_jax.eval import gan_metrics, loop

SIZE = 299
EXPECTED = ("a TensorFlow SavedModel directory (saved_model.pb inside) that maps float32 "
            f"images [N, {SIZE}, {SIZE}, 3] in [0, 1] to features [N, D]")


def check_path(path: str) -> None:
  """One line, before anything is computed, if ``path`` cannot be such a model."""
  if not os.path.isfile(os.path.join(path, "saved_model.pb")):
    raise ConfigError(f"config.eval.inception_path={path!r} is not {EXPECTED}")


def load(path: str):
  """The model at ``path`` as a function: numpy images -> numpy features [N, D]."""
  import tensorflow as tf   # local: TensorFlow is heavy and only needed here
  check_path(path)
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except  # any failure to read it
    raise ConfigError(f"config.eval.inception_path={path!r} cannot be loaded "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); expected "
                      f"{EXPECTED}") from None
  fn = loaded if callable(loaded) else loaded.signatures.get("serving_default")
  if fn is None:
    raise ConfigError(f"config.eval.inception_path={path!r} has neither __call__ nor a "
                      f"serving_default signature; expected {EXPECTED}")

  def features(images: np.ndarray) -> np.ndarray:
    out = fn(tf.constant(images, tf.float32))
    if isinstance(out, dict):   # a signature: its one output
      out = next(iter(out.values()))
    out = np.asarray(out, np.float64)
    if out.ndim != 2 or out.shape[0] != len(images):
      raise ConfigError(f"config.eval.inception_path={path!r} returned shape {out.shape} "
                        f"for {len(images)} images; expected {EXPECTED}")
    return out
  return features


def to_inception(images, display=None) -> np.ndarray:
  """Images in the data's space [N, H, W, C] -> [N, 299, 299, 3] in [0, 1]."""
  import tensorflow as tf
  x = np.asarray(images, np.float32) if display is None else display(images)
  x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return tf.image.resize(x[..., :3], (SIZE, SIZE), method="bilinear").numpy()


def fid(model, params, batches, path: str, *, seed: int = 0, display=None) -> float:
  """The FID between the test images of ``batches`` ((batch, real mask) pairs, as
  ``Dataset.test_batches`` gives them) and as many generated ones, in the features of
  the SavedModel at ``path``; every process's examples together."""
  features = load(path)
  generate = jax.jit(lambda p, b, i: gan_metrics.prior_images(model, p, b, i, seed))
  sums, start = {}, 0
  for batch, real in batches:
    keep = np.asarray(real, bool)
    index = np.arange(start, start + len(keep), dtype=np.int32)
    start += len(keep)
    wanted = {n: batch[n] for n in (model.spec.x,) + tuple(model.spec.w)}
    generated = np.asarray(generate(params, wanted, index))
    for name, images in (("real", np.asarray(batch[model.spec.x])), ("generated", generated)):
      f = features(to_inception(images[keep], display))
      sums[f"{name}/sum"] = sums.get(f"{name}/sum", 0) + f.sum(0)
      sums[f"{name}/outer"] = sums.get(f"{name}/outer", 0) + f.T @ f
    sums["count"] = sums.get("count", 0) + int(keep.sum())
  sums = jax.tree.map(lambda v: np.sum(loop.gather(np.asarray(v)[None]), axis=0), sums)
  stats = []
  for name in ("real", "generated"):
    mean = sums[f"{name}/sum"] / sums["count"]
    stats += [mean, sums[f"{name}/outer"] / sums["count"] - np.outer(mean, mean)]
  return gan_metrics.frechet(*stats)
