"""Shapes: a generated offline dataset, one coloured shape per image with 7 binary
attributes (x = an S x S RGB image, w = the attributes in {-1, 1}).

Batches: ``image`` float32 [B, S, S, 3] in [0, 1] (S = ``image_size``, 32),
``attributes`` float32 [B, 7] in {-1, 1} (:data:`ATTRIBUTES`). The set is drawn with
numpy from ``data_seed`` and written once as a tfds dataset under ``data_dir`` by
:class:`ShapesBuilder` (the same data in every run), then read from there.
"""
from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jmvae_jax.data import core, tfds_util
from jmvae_jax.schema import Field, int_field, path_field

NAMES = ("shapes",)
TFDS_NAMES = {}
ATTRIBUTES = ("square", "big", "right", "bottom", "red", "green", "blue")
VARIATIONS = ("narrow", "wide")


def fields(name: str) -> dict:
  """The fields of ``config.data`` (documented in configs/shapes.py)."""
  del name
  return {
      "source": Field("generated", choices=("generated",)),
      "data_dir": path_field(),
      "download": Field(False, convert=bool),
      "num_train": int_field(20_000, 1, "an int >= 1"),
      "num_test": int_field(2_000, 1, "an int >= 1"),
      "image_size": int_field(32, 8, "an int >= 8"),
      "data_seed": int_field(0, 0, "an int >= 0"),
      "variation": Field("narrow", choices=VARIATIONS),
  }


def other_ways(c) -> list[str]:
  del c
  return []


def default_cache() -> str:
  """Where the generated set goes when config.data.data_dir is empty."""
  return os.path.join(tempfile.gettempdir(), "jmvae_jax_tfds")


def describe(c) -> str:
  return (f"{c['name']} from {c['source']} ({c['data_dir'] or default_cache()}), "
          f"{c['num_train']} train / {c['num_test']} test, "
          f"{c['image_size']}x{c['image_size']}, data_seed={c['data_seed']}, "
          f"variation={c['variation']}")


def generate_shapes(num: int, image_size: int = 32, seed: int = 0, variation: str = "narrow"):
  """``num`` images of one coloured shape on black, and their attributes.

  Returns ``(images uint8 [num, S, S, 3], attributes int8 [num, 7] in {-1, 1})``
  with attributes :data:`ATTRIBUTES`, each an independent fair coin: square (else
  circle, of the same area), big, right / bottom (the centre's half of the image),
  red / green / blue (that channel bright, else dim). ``variation`` sets what the
  attributes leave free. ``"narrow"``: a little jitter about each class's centre
  (radius 0.21 S or 0.13 S, +-7 %; centre 0.25 S or 0.75 S, +-0.04 S; channel 0.9 or
  0.25, +-0.05), so the data are 128 tight clusters. ``"wide"``: the free factors
  span most of each class's range (radius 0.18-0.25 S or 0.10-0.16 S; centre anywhere
  that keeps the shape in its half, at most 0.45 S from the edge; channel 0.65-1 or
  0.05-0.45), so that neighbouring classes' images blend into each other as faces do.
  Edges are anti-aliased by 4x4 supersampling. Deterministic in ``seed``.
  """
  if variation not in VARIATIONS:
    raise ValueError(f"variation must be one of {VARIATIONS}, not {variation!r}")
  rng = np.random.default_rng(seed)
  bits = rng.integers(0, 2, size=(num, len(ATTRIBUTES))).astype(bool)
  square, big, right, bottom = bits[:, 0], bits[:, 1], bits[:, 2], bits[:, 3]
  s = float(image_size)
  if variation == "narrow":
    radius = np.where(big, 0.21, 0.13) * s * rng.uniform(0.93, 1.07, num)
    cx = (np.where(right, 0.75, 0.25) + rng.uniform(-0.04, 0.04, num)) * s
    cy = (np.where(bottom, 0.75, 0.25) + rng.uniform(-0.04, 0.04, num)) * s
    colour = np.where(bits[:, 4:], 0.9, 0.25) + rng.uniform(-0.05, 0.05, (num, 3))
  else:
    r = np.where(big, rng.uniform(0.18, 0.25, num), rng.uniform(0.10, 0.16, num))
    radius = r * s

    def centre(upper):   # in the half ``upper`` says, the shape inside the image
      u = rng.uniform(0.0, 1.0, num)
      low = np.where(upper, 0.55, 0.05 + r)
      high = np.where(upper, 0.95 - r, 0.45)
      return (low + u * (high - low)) * s

    cx, cy = centre(right), centre(bottom)
    colour = np.where(bits[:, 4:], rng.uniform(0.65, 1.0, (num, 3)),
                      rng.uniform(0.05, 0.45, (num, 3)))
  sub = (np.arange(image_size * 4) + 0.5) / 4.0  # sub-pixel centres
  images = np.empty((num, image_size, image_size, 3), np.uint8)
  for lo in range(0, num, 1024):
    sl = slice(lo, min(num, lo + 1024))
    dx = sub[None, None, :] - cx[sl, None, None]
    dy = sub[None, :, None] - cy[sl, None, None]
    r = radius[sl, None, None]
    inside = np.where(square[sl, None, None],
                      np.maximum(abs(dx), abs(dy)) <= r * math.sqrt(math.pi) / 2,
                      dx * dx + dy * dy <= r * r)
    n = inside.shape[0]
    cover = inside.reshape(n, image_size, 4, image_size, 4).mean(axis=(2, 4))
    images[sl] = np.round(255 * cover[..., None] * colour[sl, None, None, :]).astype(np.uint8)
  return images, np.where(bits, 1, -1).astype(np.int8)


class ShapesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The Shapes set as a tfds dataset, one config per generation parameters."""
  name = "jmvae_shapes"
  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # no checksums file; also avoids tfds's unlisted importlib_resources import

  def __init__(self, *, num_train: int, num_test: int, image_size: int, seed: int,
               variation: str = "narrow", **kwargs):
    self._params = (num_train, num_test, image_size, seed, variation)
    wide = "" if variation == "narrow" else f"_{variation}"
    config = tfds.core.BuilderConfig(
        name=f"n{num_train}_t{num_test}_s{image_size}_seed{seed}{wide}", version=self.VERSION)
    super().__init__(config=config, **kwargs)

  def _info(self):
    size = self._params[2]
    return tfds.core.DatasetInfo(
        builder=self, description="One coloured shape per image with 7 binary attributes.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "attributes": tfds.features.Tensor(shape=(len(ATTRIBUTES),), dtype=np.int8),
        }), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    num_train, num_test, size, seed, variation = self._params
    images, attributes = generate_shapes(num_train + num_test, size, seed, variation)
    return {"train": self._generate_examples(images[:num_train], attributes[:num_train]),
            "test": self._generate_examples(images[num_train:], attributes[num_train:])}

  def _generate_examples(self, images, attributes):
    for i in range(len(images)):
      yield i, {"image": images[i], "attributes": attributes[i]}


def plain_batch(raw, index, epoch):
  """A gathered batch as the model sees it: images in [0, 1], attributes as floats."""
  del index, epoch
  return {"image": tf.cast(raw["image"], tf.float32) / 255.0,
          "attributes": tf.cast(raw["attributes"], tf.float32)}


def device_batch(raw, index, words):
  """``plain_batch`` on the device (jnp), the same numbers."""
  import jax.numpy as jnp
  del index, words
  return {"image": core.pixels(raw["image"]),
          "attributes": raw["attributes"].astype(jnp.float32)}


def load(c, seed: int, process_index: int, process_count: int) -> core.Dataset:
  builder = tfds_util.prepare(lambda: ShapesBuilder(
      num_train=c["num_train"], num_test=c["num_test"], image_size=c["image_size"],
      seed=c["data_seed"], variation=c["variation"],
      data_dir=c["data_dir"] or default_cache()), "the shapes set")
  train, test = tfds_util.as_arrays(builder, "train"), tfds_util.as_arrays(builder, "test")
  s = c["image_size"]
  modalities = {"image": ((s, s, 3), "float32"), "attributes": ((len(ATTRIBUTES),), "float32")}
  return core.in_memory(c["name"], modalities, train, test, plain_batch, plain_batch, seed,
                        process_index, process_count, ATTRIBUTES, device_fn=device_batch,
                        epoch_words=lambda seed, epoch: np.zeros(2, np.uint32))
