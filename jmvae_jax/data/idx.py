"""IDX files, the MNIST format: magic 0 0 <type> <ndim>, big-endian uint32 dimensions,
big-endian data; read gzipped or not (told apart by content)."""
from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from jmvae_jax.errors import ConfigError

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      raw = f.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
  except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise ConfigError(f"{path}: cannot read ({e})") from None


def read_idx(path: str) -> np.ndarray:
  """The array in an IDX file (gzipped or not, told apart by content)."""
  raw = _read_bytes(path)
  if len(raw) < 4:
    raise ConfigError(f"{path}: truncated IDX header ({len(raw)} bytes)")
  if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
    raise ConfigError(f"{path}: bad IDX magic {raw[:4].hex()}; expected 0000<type><ndim>")
  ndim, dtype = raw[3], _IDX_TYPES[raw[2]]
  if len(raw) < 4 + 4 * ndim:
    raise ConfigError(f"{path}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} bytes")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
  expected = math.prod(shape) * dtype.itemsize
  found = len(raw) - 4 - 4 * ndim
  if found != expected:
    what = "truncated" if found < expected else "trailing bytes"
    raise ConfigError(f"{path}: {what}: shape {shape} needs {expected} data bytes, found {found}")
  data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def write_idx(path: str, array) -> None:
  """Writes ``array`` as an IDX file, gzipped if ``path`` ends in ``.gz``."""
  array = np.asarray(array)
  codes = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_TYPES.items()}
  native = array.dtype.newbyteorder("=").str
  if native not in codes or array.ndim > 255:
    raise ConfigError(f"{path}: cannot write dtype {array.dtype} / ndim {array.ndim} as IDX")
  code = codes[native]
  raw = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
         + array.astype(_IDX_TYPES[code]).tobytes())
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(raw)


def find(data_dir: str, stem: str) -> str:
  """The file `stem` or `stem.gz` in `data_dir`; a one-line error naming all four if absent."""
  for candidate in (stem, stem + ".gz"):
    if os.path.isfile(os.path.join(data_dir, candidate)):
      return os.path.join(data_dir, candidate)
  raise ConfigError(f"config.data.data_dir={data_dir!r} has no {stem}[.gz]; it needs the four "
                    f"IDX files {', '.join(FILES.values())} (gzipped or not)")


def read_split(data_dir: str, split: str) -> dict[str, np.ndarray]:
  """uint8 images [N, 28, 28, 1] and labels [N] of ``split`` (train or test), checked."""
  paths = {k: find(data_dir, FILES[f"{split}_{k}"]) for k in ("images", "labels")}
  images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
  if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
    raise ConfigError(f"{paths['images']}: expected uint8 images [N, 28, 28], "
                      f"found {images.dtype} {images.shape}")
  if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != len(images):
    raise ConfigError(f"{paths['labels']}: expected {len(images)} uint8 labels, "
                      f"found {labels.dtype} {labels.shape}")
  if len(labels) and labels.max() > 9:
    raise ConfigError(f"{paths['labels']}: labels must be in 0..9, found {labels.max()}")
  return {"image": images[..., None], "label": labels}
