"""The data config: the datasets, the fields of ``config.data``, their defaults and checks.

Everything here is plain Python (no TensorFlow), so configs, the model, the objectives
and the likelihood import without it; ``input_pipeline`` reads the data these fields
describe. ``default_config(name)`` lists every field with its default, ``resolve``
checks a config before any data is touched, ``describe`` gives a one-line summary.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import ml_collections

from jmvae_jax.errors import ConfigError, allowed, is_int

NAMES = ("mnist", "fashion_mnist", "celeba", "shapes")
SOURCES = {"mnist": ("tfds", "idx", "pickle"), "fashion_mnist": ("tfds", "idx"),
           "celeba": ("tfds", "release"), "shapes": ("generated",)}
SPLITS = ("paper", "authors")
BINARIZE = ("dynamic", "static", "none")
CELEBA_SPLITS = ("paper", "official")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CELEBA_ATTRIBUTES = tuple((
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young").split())
CELEBA_FILES = {"attributes": "list_attr_celeba.txt", "partition": "list_eval_partition.txt",
                "images": "img_align_celeba"}
TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "celeba": "celeb_a"}
SHAPES_ATTRIBUTES = ("square", "big", "right", "bottom", "red", "green", "blue")

# The fields of config.data (``name`` is required):
#   source        where the data comes from; "" = the dataset's first in SOURCES.
#   data_dir      tfds: its data dir ("" = tfds's default); idx: the IDX files ("" = /usr/share/
#                 datasets/fashion-mnist for fashion_mnist); release: the CelebA files; generated:
#                 where the Shapes tfds dataset is written ("" = <tmp>/jmvae_jax_tfds).
#   download      tfds only: let tfds download a dataset that is not prepared (needs network).
#   split         "paper": the first num_train training images (MNIST: 50,000; with tfds, its
#                 stored order, a fixed subset); "authors": all 60,000. Too few -> ConfigError.
#   num_train     the paper split's size (MNIST-like); the generated train size (shapes).
#   binarize      "dynamic": Bernoulli(intensity) per (seed, epoch, index); "static": once, by
#                 binarize_seed; "none": grey levels. The test set: once, by binarize_seed.
#   binarize_seed the fixed seed of the test (and static) binarisation, not the run's seed.
#   image_size    side of the square images (CelebA 64, Shapes 32).
#   crop          CelebA: side of the centred square crop before resizing; 0 = the largest.
#   celeba_split  "paper": a random test_fraction of all 202,599 images (by split_seed; the
#                 paper's OpenCV face filter is not applied); "official": list_eval_partition's
#                 train (0) and test (2); validation (1) unused.
#   shuffle_buffer CelebA streams from disk: the shuffle buffer, in examples.
#   cache_dir     release: where the built tfds dataset goes ("" = <data_dir>/tfds).
#   num_test, data_seed  shapes: test size and the generation seed (fixed data across runs).
_COMMON = dict(source="", data_dir="", download=False)
_MNIST = dict(split="paper", num_train=50_000, binarize="dynamic", binarize_seed=0)
DEFAULTS = {
    "mnist": dict(_COMMON, source="tfds", **_MNIST),
    "fashion_mnist": dict(_COMMON, source="tfds", **_MNIST),
    "celeba": dict(_COMMON, source="tfds", image_size=64, crop=0, celeba_split="paper",
                   test_fraction=0.1, split_seed=0, shuffle_buffer=20_000, cache_dir=""),
    "shapes": dict(_COMMON, source="generated", num_train=20_000, num_test=2_000, image_size=32,
                   data_seed=0),
}


def default_config(name: str) -> ml_collections.ConfigDict:
  """``config.data`` for dataset ``name`` with every field at its default."""
  if name not in DEFAULTS:
    raise allowed("config.data.name", name, NAMES)
  return ml_collections.ConfigDict(dict(DEFAULTS[name], name=name))


# ----------------------------------------------------------------------------
# The config: every field read and checked here, before any data is touched.
# ----------------------------------------------------------------------------

def _field(cfg, name: str, key: str):
  value = cfg.get(key, None) if hasattr(cfg, "get") else None
  return DEFAULTS[name][key] if value is None else value


def _int(cfg, name, key, minimum=0) -> int:
  v = _field(cfg, name, key)
  if not is_int(v) or v < minimum:
    raise ConfigError(f"config.data.{key}={v!r} must be an int >= {minimum}")
  return int(v)


def _choice(cfg, name, key, options) -> str:
  v = _field(cfg, name, key)
  if v not in options:
    raise allowed(f"config.data.{key}", v, options)
  return v


def resolve(data_cfg) -> dict[str, Any]:
  """The data config as a plain dict with every field filled in and checked."""
  if data_cfg is None or not hasattr(data_cfg, "get"):
    raise ConfigError(f"config.data must be a ConfigDict or dict, got {type(data_cfg).__name__}")
  name = data_cfg.get("name", None)
  if name not in NAMES:
    raise allowed("config.data.name", name, NAMES)
  unknown = sorted(set(data_cfg.keys()) - set(DEFAULTS[name]) - {"name"})
  if unknown:   # a typo would otherwise be silently ignored
    raise ConfigError(f"config.data.{unknown[0]} is not a field of dataset {name!r}; its fields: "
                      f"{', '.join(sorted(DEFAULTS[name]))}")
  out = {"name": name, "source": _field(data_cfg, name, "source") or DEFAULTS[name]["source"]}
  if out["source"] not in SOURCES[name]:
    raise allowed("config.data.source", out["source"], SOURCES[name])
  for key in ("data_dir", "cache_dir"):
    if key in DEFAULTS[name]:
      v = _field(data_cfg, name, key)
      if not isinstance(v, (str, os.PathLike)):
        raise ConfigError(f"config.data.{key}={v!r} must be a path string")
      out[key] = os.path.expanduser(os.fspath(v))
  out["download"] = bool(_field(data_cfg, name, "download"))
  if name in ("mnist", "fashion_mnist"):
    out["split"] = _choice(data_cfg, name, "split", SPLITS)
    out["num_train"] = _int(data_cfg, name, "num_train", 1)
    out["binarize"] = _choice(data_cfg, name, "binarize", BINARIZE)
    out["binarize_seed"] = _int(data_cfg, name, "binarize_seed")
  elif name == "celeba":
    out["image_size"] = _int(data_cfg, name, "image_size", 1)
    out["crop"] = _int(data_cfg, name, "crop")
    out["celeba_split"] = _choice(data_cfg, name, "celeba_split", CELEBA_SPLITS)
    frac = _field(data_cfg, name, "test_fraction")
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
      raise ConfigError(f"config.data.test_fraction={frac!r} must be a number in (0, 1)")
    out["test_fraction"] = float(frac)
    out["split_seed"] = _int(data_cfg, name, "split_seed")
    out["shuffle_buffer"] = _int(data_cfg, name, "shuffle_buffer", 1)
  else:
    out["num_train"] = _int(data_cfg, name, "num_train", 1)
    out["num_test"] = _int(data_cfg, name, "num_test", 1)
    out["image_size"] = _int(data_cfg, name, "image_size", 8)
    out["data_seed"] = _int(data_cfg, name, "data_seed")
  return out


def default_cache() -> str:
  """Where generated (Shapes) tfds datasets go when config.data.data_dir is empty."""
  return os.path.join(tempfile.gettempdir(), "jmvae_jax_tfds")


def describe(data_cfg) -> str:
  """One line for logs: the dataset, where it comes from and how it is split."""
  c = resolve(data_cfg)
  where = {"tfds": c.get("data_dir") or "tfds default dir",
           "idx": c.get("data_dir") or (FASHION_MNIST_DIR if c["name"] == "fashion_mnist"
                                        else "data_dir unset"),
           "release": c.get("data_dir"), "generated": c.get("data_dir") or default_cache()}
  text = f"{c['name']} from {c['source']} ({where[c['source']]})"
  if c["name"] in ("mnist", "fashion_mnist"):
    size = c["num_train"] if c["split"] == "paper" else "all"
    text += f", split={c['split']} (train: {size}), binarize={c['binarize']}"
  elif c["name"] == "celeba":
    text += (f", {c['image_size']}x{c['image_size']}, split={c['celeba_split']}"
             + (f" (test {c['test_fraction']:g})" if c["celeba_split"] == "paper" else ""))
  else:
    text += (f", {c['num_train']} train / {c['num_test']} test, "
             f"{c['image_size']}x{c['image_size']}, data_seed={c['data_seed']}")
  return text
