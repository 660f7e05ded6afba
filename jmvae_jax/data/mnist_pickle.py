"""MNIST from ``mnist.pkl.gz``, the pickle of the Theano deep-learning tutorials that the
authors' code loads.

The file holds ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``: 50,000 /
10,000 / 10,000 images as float32 rows of 784 values ``p / 256`` (p the original 8-bit
pixel) and int64 labels; its train and validation parts are MNIST's 60,000 training
images in their original order. A pickle is a program: it is read with an unpickler that
builds numpy arrays, their dtypes and tuples and refuses anything else, so a file that
asks for another class is an error, never run.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib

import numpy as np

from jmvae_jax.errors import ConfigError

FILE = "mnist.pkl.gz"
SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
# What numpy's pickles of arrays need: the array reconstructor, ndarray, dtype, and the
# scalar constructor (numpy 1.x and 2.x module names); and, for a pickle written by
# Python 3 at protocol 2, the latin-1 encoder its byte strings go through. None of them
# does anything but build a value.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def resolve_path(data_dir: str) -> str:
  """``data_dir`` itself if it is a file, else ``data_dir/mnist.pkl.gz``."""
  return data_dir if os.path.isfile(data_dir) else os.path.join(data_dir, FILE)


def read(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"train", "valid", "test"} -> (uint8 images [N, 28, 28, 1], int64 labels [N]), checked.

  Every failure is a one-line ConfigError naming ``path`` and what was expected."""
  expected = ("a gzipped pickle of ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) "
              "with float32 images [N, 784] in [0, 1) and labels in [0, 9]")
  try:
    with gzip.open(path, "rb") as f:
      data = _ArraysOnly(f, encoding="latin1").load()
  except FileNotFoundError:
    raise ConfigError(f"{path}: no such file; config.data.data_dir names the directory "
                      f"holding {FILE} (or the file itself)") from None
  except pickle.UnpicklingError as e:
    raise ConfigError(f"{path}: refused ({e}); expected {expected}") from None
  except (OSError, EOFError, zlib.error, ValueError, TypeError, AttributeError,
          IndexError, MemoryError) as e:
    raise ConfigError(f"{path}: cannot read ({type(e).__name__}: {e}); expected "
                      f"{expected}") from None
  if not (isinstance(data, tuple) and len(data) == 3 and
          all(isinstance(p, tuple) and len(p) == 2 for p in data)):
    raise ConfigError(f"{path}: not the tutorials' layout; expected {expected}")
  return {name: _check(path, name, x, y) for name, (x, y) in zip(SIZES, data)}


def _check(path: str, part: str, x, y) -> tuple[np.ndarray, np.ndarray]:
  where = f"{path}: {part}"
  if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
    raise ConfigError(f"{where} holds {type(x).__name__} / {type(y).__name__}; expected numpy "
                      "arrays")
  if x.ndim != 2 or x.shape[1] != 784 or not np.issubdtype(x.dtype, np.floating):
    raise ConfigError(f"{where} images have shape {x.shape} and dtype {x.dtype}; expected "
                      "float [N, 784]")
  if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
    raise ConfigError(f"{where} labels have shape {y.shape} and dtype {y.dtype}; expected "
                      f"integer [{x.shape[0]}]")
  if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
    raise ConfigError(f"{where} images have values outside [0, 1] (or nan); expected p/256")
  if y.size and (y.min() < 0 or y.max() > 9):
    raise ConfigError(f"{where} labels are in [{y.min()}, {y.max()}]; expected [0, 9]")
  # p / 256 back to the 8-bit pixel p, the form every other MNIST source has (a value
  # that is not a multiple of 1/256 is rounded to the nearest level).
  pixels = np.clip(np.round(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
  return pixels, y.astype(np.int64)
