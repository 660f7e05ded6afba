"""CelebA: x = a face (S x S RGB, S = ``image_size``, 64), w = its 40 attributes in {-1, 1}.

Batches: ``image`` float32 [B, S, S, 3] in [0, 1], or with ``normalise='standardise'``
(the authors') each pixel less its mean over the training split, over its standard
deviation there (``pixel_statistics``, cached beside the built dataset; ``Dataset.display``
maps back for figures); ``attributes`` float32 [B, 40].
Sources (``config.data.source``): ``tfds`` (tfds's ``celeb_a``, whose download quota
often fails) or ``release``: the release files in ``data_dir`` (img_align_celeba.zip or
the folder, list_attr_celeba.txt, list_eval_partition.txt), centre-cropped, resized and
written once as a tfds dataset under ``cache_dir`` by :class:`CelebaRelease`. Images are
streamed from disk; an epoch's order comes from a ``shuffle_buffer`` seeded by
``(seed, epoch)``.

Splits: ``paper`` holds out a random ``test_fraction`` of all images (by ``split_seed``;
the paper's OpenCV face filter is not applied); ``official`` uses list_eval_partition's
train (0) and test (2) partitions; ``authors`` draws 1 % as the authors' code does
(scikit-learn's ``train_test_split`` with ``random_state=split_seed``, theirs 1), over
every image in file order (their own face crops were a subset: the same draw, not the
same faces).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import io
import os
import zipfile
import zlib
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jmvae_jax.data import core, tfds_util
from jmvae_jax.errors import ConfigError
from jmvae_jax.schema import Field, int_field, number_field, path_field

NAMES = ("celeba",)
TFDS_NAMES = {"celeba": "celeb_a"}
SPLITS = ("train", "validation", "test")   # list_eval_partition.txt's 0, 1 and 2
ATTRIBUTES = tuple((
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young").split())
FILES = {"attributes": "list_attr_celeba.txt", "partition": "list_eval_partition.txt",
         "images": "img_align_celeba"}


def fields(name: str) -> dict:
  """The fields of ``config.data`` (documented in configs/celeba.py)."""
  del name
  return {
      "source": Field("tfds", choices=("tfds", "release")),
      "data_dir": path_field(),
      "download": Field(False, convert=bool),
      "image_size": int_field(64, 1, "an int >= 1"),
      "crop": int_field(0, 0, "an int >= 0"),
      "celeba_split": Field("paper", choices=("paper", "official", "authors")),
      "test_fraction": number_field(0.1, lambda v: 0 < v < 1, "in (0, 1)"),
      "split_seed": int_field(0, 0, "an int >= 0"),
      "shuffle_buffer": int_field(20_000, 1, "an int >= 1"),
      "cache_dir": path_field(),
      "normalise": Field("unit", choices=("unit", "standardise")),
  }


def other_ways(c) -> list[str]:
  del c
  return ["the CelebA release files (config.data.source='release'): config.data.data_dir "
          f"holding {FILES['images']}.zip (or the {FILES['images']}/ folder), "
          f"{FILES['attributes']} and {FILES['partition']}"]


def describe(c) -> str:
  where = c["data_dir"] or ("tfds default dir" if c["source"] == "tfds" else "")
  return (f"{c['name']} from {c['source']} ({where}), {c['image_size']}x{c['image_size']}, "
          f"split={c['celeba_split']}"
          + (f" (test {c['test_fraction']:g})" if c["celeba_split"] == "paper" else "")
          + (f" (1 %, seed {c['split_seed']})" if c["celeba_split"] == "authors" else ""))


_LAYOUT = {
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
  paths = {k: os.path.join(data_dir, FILES[k]) for k in ("attributes", "partition")}
  for p in paths.values():
    if not os.path.isfile(p):
      raise ConfigError(f"{p} is missing; source='release' needs {FILES['attributes']}, "
                        f"{FILES['partition']} and {FILES['images']}[.zip]")
  lines, at = _text_rows(paths["attributes"], _LAYOUT["attributes"])
  path = paths["attributes"]
  if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
    raise ConfigError(f"{path}: line {at[0] if at else 1} must be the number of images")
  if tuple(lines[1]) != ATTRIBUTES:
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
  part_rows, at = _text_rows(paths["partition"], _LAYOUT["partition"])
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
    folder = os.path.join(data_dir, FILES["images"])
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
                        f"{FILES['attributes']} are missing, e.g. {missing[0]}")

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
            for p, split in enumerate(SPLITS) if np.any(partition == p)}

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
  for f in (FILES["attributes"], FILES["partition"], FILES["images"] + ".zip"):
    p = os.path.join(release_dir, f)
    if os.path.exists(p):
      st = os.stat(p)
      parts.append(f"{f}:{st.st_size}:{int(st.st_mtime)}")
  return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def _streams(c):
  """(train, test, convert, built): train and test are (a function making the encoded
  examples in a fixed order, their number); ``convert`` decodes one example; ``built``
  the directory of the built dataset (where the pixel statistics are cached)."""
  if c["source"] == "release":
    if not c["data_dir"]:
      raise tfds_util.no_data(c, "config.data.data_dir is empty; source='release' reads the "
                                 "CelebA release files there")
    tfds_util.check_dir(c)
    images = _ImageFiles(c["data_dir"])  # the cheap checks first: files present, lists parse
    images.check(_parse_celeba_lists(c["data_dir"])[0])
    size = c["image_size"]
    builder = tfds_util.prepare(lambda: CelebaRelease(
        release_dir=c["data_dir"], image_size=size, crop=c["crop"],
        data_dir=c["cache_dir"] or os.path.join(c["data_dir"], "tfds")),
        f"the CelebA release in config.data.data_dir={c['data_dir']!r}")

    def convert(ex):
      image = tf.ensure_shape(tf.io.decode_png(ex["image"], channels=3), (size, size, 3))
      return {"image": tf.cast(image, tf.float32) / 255.0,
              "attributes": tf.cast(ex["attributes"], tf.float32)}
  else:
    tfds_util.check_dir(c)
    builder = tfds_util.tfds_builder(c)
    size, crop = c["image_size"], c["crop"]

    def convert(ex):
      image = tf.io.decode_jpeg(ex["image"], channels=3)
      attrs = tf.stack([ex["attributes"][a] for a in ATTRIBUTES])
      return {"image": tf.clip_by_value(crop_resize(image, size, crop) / 255.0, 0.0, 1.0),
              "attributes": tf.where(attrs, 1.0, -1.0)}

  splits = [s for s in SPLITS if s in builder.info.splits]   # those with images
  sizes = {s: builder.info.splits[s].num_examples for s in splits}

  def read(s):  # images stay encoded until after sharding and filtering
    return builder.as_dataset(split=s, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()})

  if c["celeba_split"] == "official":
    if "train" not in splits or "test" not in splits:
      raise ConfigError(f"celeba: list_eval_partition.txt puts no image in the official "
                        f"{'train (0)' if 'train' not in splits else 'test (2)'} partition; "
                        "config.data.celeba_split='paper' splits whatever images there are")
    return ((lambda: read("train"), sizes["train"]), (lambda: read("test"), sizes["test"]),
            convert, builder.data_dir)
  total = sum(sizes.values())
  is_test = np.zeros(total, bool)
  is_test[test_indices(c, total)] = True
  mask = tf.constant(is_test)

  def part(want_test: bool):
    def make():
      ds = functools.reduce(lambda a, b: a.concatenate(b), map(read, splits))
      ds = ds.enumerate().filter(lambda i, ex: tf.equal(tf.gather(mask, i), want_test))
      return ds.map(lambda i, ex: ex)
    return make

  return ((part(False), int((~is_test).sum())), (part(True), int(is_test.sum())), convert,
          builder.data_dir)


def pixel_statistics(make_train, convert, cache: str) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) [S, S, 3] of every pixel over the training images (in [0, 1]), computed
  in float64 in one pass and cached in the file ``cache`` (written atomically; "" or an
  unwritable place: not cached). A pixel's std is floored at 1/255."""
  if cache and os.path.isfile(cache):
    with np.load(cache) as f:
      return f["mean"], f["std"]
  total = total_sq = None
  count = 0
  print("computing each pixel's mean and std over the training images (once"
        + (f"; cached in {cache})" if cache else ")"), flush=True)
  images = make_train().map(lambda ex: convert(ex)["image"], num_parallel_calls=tf.data.AUTOTUNE)
  for batch in images.batch(256).as_numpy_iterator():
    b = batch.astype(np.float64)
    total = b.sum(0) + (0 if total is None else total)
    total_sq = (b * b).sum(0) + (0 if total_sq is None else total_sq)
    count += len(b)
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
  mean, std = mean.astype(np.float32), np.maximum(std, 1 / 255).astype(np.float32)
  with contextlib.suppress(OSError):
    if cache:
      tmp = f"{cache}.tmp{os.getpid()}.npz"
      np.savez(tmp, mean=mean, std=std)
      os.replace(tmp, cache)
  return mean, std


def _stats_file(c, built: str) -> str:
  """Where the pixel statistics of this split of this built dataset are cached."""
  key = "|".join(str(c[k]) for k in ("source", "image_size", "crop", "celeba_split",
                                      "test_fraction", "split_seed"))
  return os.path.join(built, f"pixel_stats_{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz")


def _standardised(convert, mean: np.ndarray, std: np.ndarray):
  mean_t, std_t = tf.constant(mean), tf.constant(std)

  def standardise(ex):
    out = convert(ex)
    return dict(out, image=(out["image"] - mean_t) / std_t)
  return standardise


def test_indices(c, total: int) -> np.ndarray:
  """The held-out images of the ``paper`` or ``authors`` split, by position in file order.
  ``authors``: the draw of the authors' ``train_test_split(test_size=0.01,
  random_state=split_seed)`` (scikit-learn's ShuffleSplit: the first ceil(1 %) of
  ``RandomState(split_seed).permutation``), over this set of images."""
  if c["celeba_split"] == "authors":
    return np.random.RandomState(c["split_seed"]).permutation(total)[:int(np.ceil(0.01 * total))]
  rng = np.random.default_rng(np.random.SeedSequence([c["split_seed"], 0xCE1EBA]))
  return rng.permutation(total)[:int(round(c["test_fraction"] * total))]


def load(c, seed: int, process_index: int, process_count: int) -> core.Dataset:
  (train, n_train), (test, n_test), convert, built = _streams(c)
  display = None
  if c["normalise"] == "standardise":   # the authors': per pixel, the training split's
    mean, std = pixel_statistics(train, convert, _stats_file(c, built))
    convert = _standardised(convert, mean, std)
    display = functools.partial(_unstandardise, mean=mean, std=std)
  pi, pc = process_index, process_count
  core.check_counts(c["name"], n_train, n_test, pc)
  local_test = len(range(pi, n_test, pc))
  source = core.Streamed(train, test, convert, n_train // pc, local_test, c["shuffle_buffer"],
                         pi, pc)
  s = c["image_size"]
  modalities = {"image": ((s, s, 3), "float32"), "attributes": ((len(ATTRIBUTES),), "float32")}
  return core.Dataset(name=c["name"], modalities=modalities, seed=seed, process_index=pi,
                      process_count=pc, num_train=n_train // pc, num_test=local_test,
                      num_test_total=n_test, attribute_names=ATTRIBUTES, display=display,
                      _source=source)


def _unstandardise(image, mean, std):
  return np.asarray(image) * std + mean
