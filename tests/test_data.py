"""The datasets and their pipelines, on small files written here: IDX, CelebA release, tfds, Shapes.

Nothing is downloaded; every expectation is recomputed independently with
numpy from the files the tests write.
"""
import gzip
import itertools
import os
import struct
import threading
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jmvae_jax import data as data_lib
from jmvae_jax.data import celeba as celeba_data, idx, shapes, tfds_util
from jmvae_jax.data import mnist as mnist_data
from jmvae_jax.errors import ConfigError

N_TRAIN, N_TEST = 120, 30


def _load(cfg, seed=0, pi=0, pc=1):
  return data_lib.load(cfg, seed, process_index=pi, process_count=pc)


def _epoch(ds, epoch, batch_size, start=0):
  return list(ds.train_batches(epoch, batch_size, start))


def _grey(images):
  """uint8 [N, 28, 28] -> the float32 [N, 28, 28, 1] in [0, 1] that binarize='none' serves."""
  return images[..., None] / np.float32(255)


def _stack(batches, key):
  return np.concatenate([b[key] for b in batches])


def _rows(images):
  """Each image as bytes: a hashable identity for matching examples."""
  return [np.asarray(x).tobytes() for x in images]


# ----------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
  a = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
  if dtype == np.uint8:
    a = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
  path = str(tmp_path / f"a-idx3{suffix}")
  idx.write_idx(path, a)
  b = idx.read_idx(path)
  assert b.dtype == a.dtype and b.shape == a.shape
  np.testing.assert_array_equal(a, b)


def test_idx_bytes_match_the_format(tmp_path):
  """The layout written by hand: magic 00 00 08 ndim, big-endian dims, data."""
  a = np.array([[1, 2, 3], [4, 5, 255]], np.uint8)
  expected = bytes([0, 0, 8, 2]) + struct.pack(">II", 2, 3) + bytes([1, 2, 3, 4, 5, 255])
  idx.write_idx(str(tmp_path / "x"), a)
  assert (tmp_path / "x").read_bytes() == expected
  idx.write_idx(str(tmp_path / "x.gz"), a)
  assert gzip.decompress((tmp_path / "x.gz").read_bytes()) == expected
  # int32, big-endian, read from hand-made bytes
  (tmp_path / "y").write_bytes(
      bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", -3, 70000))
  np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "y")), [-3, 70000])


# A gzip header, then a deflate block of the reserved type 3: zlib's own error.
_GZ = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"ab", mtime=0)
_BAD_DEFLATE = _GZ[:10] + b"\xff" + _GZ[11:]


@pytest.mark.parametrize("raw, what", [
    (bytes([1, 0, 8, 1]) + struct.pack(">I", 2) + b"ab", "magic"),
    (bytes([0, 0, 7, 1]) + struct.pack(">I", 2) + b"ab", "magic"),
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + b"ab", "truncated"),
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 1) + b"ab", "trailing"),
    (bytes([0, 0, 8, 2]) + b"\x00\x00", "truncated"),
    (b"\x00\x00", "truncated"),
    (b"\x1f\x8b not really gzip", "cannot read"),
    (_BAD_DEFLATE, "cannot read"),
])
def test_idx_malformed(tmp_path, raw, what):
  path = tmp_path / "bad-idx1-ubyte"
  path.write_bytes(raw)
  with pytest.raises(ConfigError, match=what) as e:
    idx.read_idx(str(path))
  assert str(path) in str(e.value)


# ----------------------------------------------------------------------------
# MNIST-like from IDX files
# ----------------------------------------------------------------------------

def _write_mnist(directory, gz: bool, n_train=N_TRAIN, n_test=N_TEST, seed=0):
  """Random 28x28 uint8 images (every intensity present) and labels, as IDX files."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  data = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
          "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
          "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
          "test_labels": rng.integers(0, 10, n_test).astype(np.uint8)}
  for key, stem in idx.FILES.items():
    idx.write_idx(os.path.join(directory, stem + (".gz" if gz else "")), data[key])
  return data


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("mnist_idx"))
  return d, _write_mnist(d, gz=True)


def _mnist_cfg(d, **kw):
  return dict(dict(name="mnist", source="idx", data_dir=d, num_train=100), **kw)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_shapes_dtypes_and_splits(tmp_path, gz):
  data = _write_mnist(str(tmp_path), gz)
  ds = _load(_mnist_cfg(str(tmp_path)))
  assert (ds.name, ds.num_train, ds.num_test) == ("mnist", 100, N_TEST)
  assert ds.modalities == {"image": ((28, 28, 1), "float32"), "label": ((), "int32")}
  assert ds.steps_per_epoch(30) == 3
  batches = _epoch(ds, 0, 30)
  assert len(batches) == 3
  for b in batches:
    assert set(b) == {"image", "label"}
    assert b["image"].shape == (30, 28, 28, 1) and b["image"].dtype == np.float32
    assert b["label"].shape == (30,) and b["label"].dtype == np.int32
  authors = _load(_mnist_cfg(str(tmp_path), split="authors", num_train=10**6))
  assert authors.num_train == N_TRAIN and authors.num_test == N_TEST
  # the paper split is the first num_train images of the file
  ds = _load(_mnist_cfg(str(tmp_path), binarize="none"))
  batches = _epoch(ds, 0, 10)
  got = sorted(zip(_rows(_stack(batches, "image")), _stack(batches, "label")))
  want = sorted(zip(_rows(_grey(data["train_images"][:100])), data["train_labels"][:100]))
  assert got == want


def test_fashion_mnist_idx_and_too_few_for_paper_split(tmp_path):
  _write_mnist(str(tmp_path), gz=False)
  ds = _load(dict(name="fashion_mnist", source="idx", data_dir=str(tmp_path), split="authors"))
  assert ds.name == "fashion_mnist" and ds.num_train == N_TRAIN
  with pytest.raises(ConfigError, match="config.data.num_train=50000"):
    _load(dict(name="fashion_mnist", source="idx", data_dir=str(tmp_path)))


def test_dynamic_binarisation_is_deterministic_and_resumable(mnist_dir):
  d, _ = mnist_dir
  ds = _load(_mnist_cfg(d), seed=3)
  e0, e0_again = _epoch(ds, 0, 20), _epoch(_load(_mnist_cfg(d), seed=3), 0, 20)
  e1 = _epoch(ds, 1, 20)
  other_seed = _epoch(_load(_mnist_cfg(d), seed=4), 0, 20)
  assert len(e0) == 5
  for a, b in zip(e0, e0_again):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert not np.array_equal(_stack(e0, "image"), _stack(e1, "image"))
  assert not np.array_equal(_stack(e0, "image"), _stack(other_seed, "image"))
  assert not np.array_equal(_stack(e0, "label"), _stack(e1, "label"))  # reshuffled
  for a, b in zip(_epoch(ds, 0, 20, start=2), e0[2:]):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert len(_epoch(ds, 0, 20, start=5)) == 0
  assert set(np.unique(_stack(e0, "image"))) == {0.0, 1.0}
  # each example is re-sampled every epoch (matched across epochs by its grey image)
  grey = _load(_mnist_cfg(d, binarize="none"), seed=3)
  samples = [dict(zip(_rows(_stack(_epoch(grey, e, 20), "image")),
                      _rows(_stack(_epoch(ds, e, 20), "image")))) for e in (0, 1)]
  assert samples[0].keys() == samples[1].keys() and len(samples[0]) == 100
  assert all(samples[0][k] != samples[1][k] for k in samples[0])


def test_dynamic_binarisation_matches_intensities(mnist_dir):
  """Pixels are Bernoulli(intensity): checked per intensity bin and with a z-score."""
  d, data = mnist_dir
  binary = _load(_mnist_cfg(d), seed=1)
  grey = _load(_mnist_cfg(d, binarize="none"), seed=1)  # same order: it depends on (seed, epoch)
  bits, probs = [], []
  for epoch in range(5):
    bits.append(_stack(_epoch(binary, epoch, 50), "image").ravel())
    p = _stack(_epoch(grey, epoch, 50), "image").ravel()
    probs.append(p)
  bits, probs = np.concatenate(bits), np.concatenate(probs)
  # the grey images are the file's intensities / 255
  assert set(np.round(probs * 255).astype(int)) <= set(range(256))
  assert np.isin(np.round(probs * 255), data["train_images"][:100]).all()
  z = (bits - probs).sum() / np.sqrt((probs * (1 - probs)).sum())
  assert abs(z) < 5
  for lo in np.linspace(0, 0.9, 10):
    sel = (probs >= lo) & (probs < lo + 0.1)
    assert abs(bits[sel].mean() - probs[sel].mean()) < 0.01
  assert bits[probs == 0].max() == 0 and bits[probs == 1].min() == 1


@pytest.mark.parametrize("seed, salt, data", [(0, 1, (0, 5)), (12345, 3, (7,)),
                                              (2**62 + 11, 1, (499, 49999)), (7, 2, ())])
def test_philox_is_tensorflows_stateless_philox_bit_for_bit(seed, salt, data):
  """The jnp Philox gives tf.random's stateless_fold_in and stateless_uniform exactly."""
  from jmvae_jax.data import core, philox
  want = core.key(seed, salt, *data).numpy()
  got = np.array([seed % 2**63, salt], np.int64)
  for d in data:
    got = philox.fold_in(got, d)
  np.testing.assert_array_equal(got, want)
  uniform = tf.random.stateless_uniform((2, 600), seed=want, alg="philox").numpy()
  words = tuple(np.asarray([w], np.uint32) for w in philox._words(got))
  np.testing.assert_array_equal(np.asarray(philox.uniform(words, 1200))[0],
                                uniform.reshape(-1))


@pytest.mark.parametrize("binarize", ["dynamic", "static", "none"])
def test_batches_made_on_the_device_are_the_pipelines_bit_for_bit(mnist_dir, tmp_path,
                                                                  binarize):
  """The training loop's device feed (gathered and binarised inside jit) against
  tf.data's batches: the same arrays, dtypes and order, from any start."""
  import jax
  from jmvae_jax import parallel
  d, _ = mnist_dir
  sets = [_load(_mnist_cfg(d, binarize=binarize), seed=3)]
  if binarize == "none":   # and a dataset of attributes
    sets.append(_load(dict(data_lib.default_config("shapes"), num_train=60, num_test=10,
                           data_dir=str(tmp_path)), seed=3))
  for ds in sets:
    feed = ds.feed(20, parallel.make_mesh())
    make = jax.jit(feed.make_batch)
    for epoch, start in ((0, 0), (2, 1)):
      host = _epoch(ds, epoch, 20, start)
      made = [jax.device_get(make(inputs)) for inputs in feed.epoch(epoch, start)]
      assert len(made) == len(host) > 0
      for a, b in zip(made, host):
        assert set(a) == set(b)
        for k in b:
          assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), (epoch, k)


def test_static_binarisation_and_fixed_test_set(mnist_dir):
  d, _ = mnist_dir
  static = _load(_mnist_cfg(d, binarize="static"), seed=0)
  grey = _load(_mnist_cfg(d, binarize="none"), seed=0)
  pairs = []
  for epoch in (0, 1):
    g = _rows(_stack(_epoch(grey, epoch, 25), "image"))
    s = _stack(_epoch(static, epoch, 25), "image")
    pairs.append(dict(zip(g, _rows(s))))
  assert pairs[0] == pairs[1]  # each example keeps its sample across epochs
  tests = [list(_load(_mnist_cfg(d, binarize=b), seed=s).test_batches(16))
           for b, s in (("dynamic", 0), ("dynamic", 9), ("static", 5))]
  for other in tests[1:]:
    for (a, ma), (b, mb) in zip(tests[0], other):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(ma, mb)
  assert set(np.unique(tests[0][0][0]["image"])) == {0.0, 1.0}
  reseeded = list(_load(_mnist_cfg(d, binarize_seed=1)).test_batches(16))
  assert not np.array_equal(reseeded[0][0]["image"], tests[0][0][0]["image"])


@pytest.mark.parametrize("batch_size", [7, 30, 64])
def test_test_batches_cover_everything_once(mnist_dir, batch_size):
  d, data = mnist_dir
  ds = _load(_mnist_cfg(d, binarize="none"))
  out = list(ds.test_batches(batch_size))
  assert len(out) == -(-N_TEST // batch_size) == ds.num_test_batches(batch_size)
  masks = np.concatenate([m for _, m in out])
  assert masks.dtype == bool and masks.sum() == N_TEST and masks[:N_TEST].all()
  for b, m in out:
    assert b["image"].shape[0] == batch_size == m.shape[0]
  images = _stack([b for b, _ in out], "image")
  labels = _stack([b for b, _ in out], "label")
  np.testing.assert_array_equal(images[masks], _grey(data["test_images"]))
  np.testing.assert_array_equal(labels[masks], data["test_labels"])


def test_process_shards_are_disjoint_and_cover(mnist_dir):
  d, data = mnist_dir
  train_sets, test_sets, counts = [], [], []
  for pi in range(2):
    ds = _load(_mnist_cfg(d, binarize="none"), pi=pi, pc=2)
    assert ds.num_train == 50 and ds.num_test == 15
    train_sets.append(set(_rows(_stack(_epoch(ds, 0, 10), "image"))))
    out = list(ds.test_batches(4))
    counts.append(len(out))
    masks = np.concatenate([m for _, m in out])
    test_sets.append(_rows(_stack([b for b, _ in out], "image")[masks]))
  assert not train_sets[0] & train_sets[1]
  assert train_sets[0] | train_sets[1] == set(_rows(_grey(data["train_images"][:100])))
  assert sorted(test_sets[0] + test_sets[1]) == sorted(_rows(_grey(data["test_images"])))
  # uneven test shards (30 over 4): every process yields the same number of batches
  shards = [_load(_mnist_cfg(d, binarize="none"), pi=pi, pc=4) for pi in range(4)]
  assert [s.num_test for s in shards] == [8, 8, 7, 7] and {s.num_train for s in shards} == {25}
  assert {len(list(s.test_batches(5))) for s in shards} == {2}
  default = data_lib.load(_mnist_cfg(d), 0)  # jax.process_index() / process_count()
  assert default.process_count == 1 and default.num_train == 100


# ----------------------------------------------------------------------------
# CelebA from the release files
# ----------------------------------------------------------------------------

LEFT, RIGHT = (200, 40, 30), (30, 40, 210)
PARTITION = [0, 0, 0, 1, 2, 2]


def _write_celeba(directory, form="folder", attr_rows=None, partition=PARTITION):
  """Six 178x218 JPEGs: white top/bottom 20 rows (cropped away), LEFT | RIGHT halves."""
  os.makedirs(directory, exist_ok=True)
  names = [f"{i:06d}.jpg" for i in range(1, 7)]
  attrs = np.where(np.random.default_rng(1).random((6, 40)) < 0.5, -1, 1)
  jpegs = {}
  for n in names:
    img = np.full((218, 178, 3), 255, np.uint8)
    img[20:198, :89], img[20:198, 89:] = LEFT, RIGHT
    jpegs[n] = tf.io.encode_jpeg(img, quality=95).numpy()
  if form == "folder":
    os.makedirs(os.path.join(directory, "img_align_celeba"))
    for n, b in jpegs.items():
      with open(os.path.join(directory, "img_align_celeba", n), "wb") as f:
        f.write(b)
  else:
    with zipfile.ZipFile(os.path.join(directory, "img_align_celeba.zip"), "w") as z:
      for n, b in jpegs.items():
        z.writestr(f"img_align_celeba/{n}", b)
  rows = attr_rows or [f"{n} " + " ".join(f"{v:2d}" for v in a) for n, a in zip(names, attrs)]
  with open(os.path.join(directory, "list_attr_celeba.txt"), "w") as f:
    f.write(f"{len(rows)}\n" + " ".join(celeba_data.ATTRIBUTES) + "\n" + "\n".join(rows) + "\n")
  with open(os.path.join(directory, "list_eval_partition.txt"), "w") as f:
    f.write("".join(f"{n} {p}\n" for n, p in zip(names, partition)))
  return names, attrs


def _celeba_cfg(d, tmp_path, **kw):
  return dict(dict(name="celeba", source="release", data_dir=d, cache_dir=str(tmp_path / "cache")),
              **kw)


def _all_test(ds, batch_size=4):
  out = list(ds.test_batches(batch_size))
  masks = np.concatenate([m for _, m in out])
  return {k: _stack([b for b, _ in out], k)[masks] for k in ("image", "attributes")}


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_celeba_release_builder(tmp_path, form):
  d = str(tmp_path / "release")
  _, attrs = _write_celeba(d, form)
  ds = _load(_celeba_cfg(d, tmp_path, celeba_split="official"))
  assert (ds.num_train, ds.num_test) == (3, 2)
  assert ds.modalities == {"image": ((64, 64, 3), "float32"), "attributes": ((40,), "float32")}
  test = _all_test(ds)
  assert test["image"].shape == (2, 64, 64, 3) and test["image"].dtype == np.float32
  np.testing.assert_array_equal(test["attributes"], attrs[4:])  # partition 2, in file order
  train = _stack(_epoch(ds, 0, 3), "attributes")
  assert sorted(map(tuple, train)) == sorted(map(tuple, attrs[:3].astype(np.float32)))
  # the centre square only: the white rows are cropped away; left/right halves keep their colour
  img = test["image"]
  assert img.max() < 0.9
  np.testing.assert_allclose(img[:, :, :24].mean(axis=(0, 1, 2)), np.array(LEFT) / 255, atol=0.03)
  np.testing.assert_allclose(img[:, :, 40:].mean(axis=(0, 1, 2)), np.array(RIGHT) / 255, atol=0.03)
  # paper split: a fixed random 1/3 held out; together the splits hold every image once
  paper = _load(_celeba_cfg(d, tmp_path, test_fraction=1 / 3), seed=5)
  assert (paper.num_train, paper.num_test) == (4, 2)
  rows = list(map(tuple, _stack(_epoch(paper, 0, 4), "attributes"))) + list(
      map(tuple, _all_test(paper)["attributes"]))
  assert sorted(rows) == sorted(map(tuple, attrs.astype(np.float32)))
  again = _load(_celeba_cfg(d, tmp_path, test_fraction=1 / 3), seed=5)
  first = _epoch(paper, 0, 2)
  assert len(first) == 2
  assert not np.array_equal(first[0]["attributes"], first[1]["attributes"])
  np.testing.assert_array_equal(_epoch(again, 0, 2)[1]["attributes"], first[1]["attributes"])
  resumed = _epoch(paper, 0, 2, start=1)
  np.testing.assert_array_equal(resumed[0]["attributes"], first[1]["attributes"])
  assert len(_epoch(paper, 0, 2, start=1)) == 1


def test_celeba_release_with_empty_partitions(tmp_path):
  """A release cut to its first images (all partition 0): the paper split takes them
  all; the official one, and a paper split that leaves no test example, are refused."""
  d = str(tmp_path / "release")
  _, attrs = _write_celeba(d, partition=[0] * 6)
  paper = _load(_celeba_cfg(d, tmp_path, test_fraction=1 / 3))
  assert (paper.num_train, paper.num_test) == (4, 2)
  rows = list(map(tuple, _stack(_epoch(paper, 0, 4), "attributes"))) + list(
      map(tuple, _all_test(paper)["attributes"]))
  assert sorted(rows) == sorted(map(tuple, attrs.astype(np.float32)))
  with pytest.raises(ConfigError, match=r"no image in the official test \(2\) partition; "
                                        r"config.data.celeba_split='paper'"):
    _load(_celeba_cfg(d, tmp_path, celeba_split="official"))
  with pytest.raises(ConfigError, match=r"celeba: 6 training / 0 test examples are too few"):
    _load(_celeba_cfg(d, tmp_path, test_fraction=0.01))
  d = str(tmp_path / "no_validation")   # only the validation partition empty: both splits
  _write_celeba(d, partition=[0, 0, 0, 2, 2, 2])
  official = _load(_celeba_cfg(d, tmp_path, celeba_split="official"))
  assert (official.num_train, official.num_test) == (3, 3)
  assert _load(_celeba_cfg(d, tmp_path, test_fraction=1 / 3)).num_test == 2


def test_celeba_lists_saved_with_a_byte_order_mark_parse(tmp_path):
  d = str(tmp_path / "release")
  names, attrs = _write_celeba(d)
  for stem in ("list_attr_celeba", "list_eval_partition"):
    path = os.path.join(d, stem + ".txt")
    with open(path, "rb") as f:
      raw = f.read()
    with open(path, "wb") as f:
      f.write(b"\xef\xbb\xbf" + raw)
  got_names, got_attrs, partition = celeba_data._parse_celeba_lists(d)
  assert list(got_names) == names and list(partition) == PARTITION
  np.testing.assert_array_equal(got_attrs, attrs)


@pytest.mark.parametrize("breakage, match", [
    ("no_partition", "list_eval_partition.txt"),
    ("no_images", "img_align_celeba"),
    ("bad_value", "list_attr_celeba.txt: line 4"),
    ("blank_lines", "list_attr_celeba.txt: line 6 must be"),   # blank lines 2 and 4 counted
    ("short_line", "list_attr_celeba.txt: line 3"),
    ("bad_count", "list_attr_celeba.txt: line 1"),
    ("bad_header", "list_attr_celeba.txt: line 2"),
    ("missing_image", "000007.jpg"),
])
def test_celeba_release_bad_input(tmp_path, breakage, match):
  d = str(tmp_path / "release")
  names, attrs = _write_celeba(d)
  rows = [f"{n} " + " ".join(map(str, a)) for n, a in zip(names, attrs)]
  if breakage == "no_partition":
    os.remove(os.path.join(d, "list_eval_partition.txt"))
  elif breakage == "no_images":
    import shutil
    shutil.rmtree(os.path.join(d, "img_align_celeba"))
  elif breakage in ("bad_value", "blank_lines"):
    rows[1] = rows[1][:-2] + " 2"
  elif breakage == "short_line":
    rows[0] = rows[0].rsplit(" ", 1)[0]
  elif breakage == "bad_count":
    rows = rows[:5]
  elif breakage == "missing_image":  # listed in both files, absent from the folder
    rows[5] = rows[5].replace("000006", "000007")
    with open(os.path.join(d, "list_eval_partition.txt"), "a") as f:
      f.write("000007.jpg 0\n")
  if breakage in ("bad_value", "short_line", "missing_image"):
    with open(os.path.join(d, "list_attr_celeba.txt"), "w") as f:
      f.write("6\n" + " ".join(celeba_data.ATTRIBUTES) + "\n" + "\n".join(rows) + "\n")
  if breakage == "blank_lines":
    with open(os.path.join(d, "list_attr_celeba.txt"), "w") as f:
      f.write("6\n\n" + " ".join(celeba_data.ATTRIBUTES) + "\n\n" + "\n".join(rows) + "\n")
  if breakage in ("bad_count", "bad_header"):
    header = list(celeba_data.ATTRIBUTES)[::-1] if breakage == "bad_header" else celeba_data.ATTRIBUTES
    with open(os.path.join(d, "list_attr_celeba.txt"), "w") as f:
      f.write("6\n" + " ".join(header) + "\n" + "\n".join(rows) + "\n")
  with pytest.raises(ConfigError, match=match):
    _load(_celeba_cfg(d, tmp_path))


@pytest.mark.parametrize("stem", ["list_attr_celeba", "list_eval_partition"])
def test_celeba_release_list_not_utf8(tmp_path, stem):
  d = str(tmp_path / "release")
  _write_celeba(d)
  path = os.path.join(d, f"{stem}.txt")
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  lines[2] = b"\xff\xfe" + lines[2]  # e.g. a UTF-16 file, or a stray Latin-1 byte
  with open(path, "wb") as f:
    f.write(b"\n".join(lines))
  with pytest.raises(ConfigError) as e:
    _load(_celeba_cfg(d, tmp_path))
  message = str(e.value)
  assert message.startswith(f"{path}: not UTF-8 text (byte 0xff on line 3); expected the CelebA ")
  assert ("40 values of 1 or -1" if stem == "list_attr_celeba" else "'filename 0|1|2'") in message
  assert "\n" not in message


def _corrupt(directory, form, name, data):
  """Replaces image ``name`` of a release written by _write_celeba with ``data``."""
  if form == "folder":
    with open(os.path.join(directory, "img_align_celeba", name), "wb") as f:
      f.write(data)
    return
  archive = os.path.join(directory, "img_align_celeba.zip")
  with zipfile.ZipFile(archive) as z:
    members = {n: z.read(n) for n in z.namelist()}
  members[f"img_align_celeba/{name}"] = data
  with zipfile.ZipFile(archive, "w") as z:
    for n, b in members.items():
      z.writestr(n, b)


@pytest.mark.parametrize("form, damage", [("folder", "random"), ("zip", "random"),
                                          ("folder", "truncated")])
def test_celeba_release_corrupt_jpeg_is_one_clean_line(tmp_path, form, damage):
  """A bad image is a ConfigError naming it, raised in Python (no tf.data iterator whose
  teardown could hang), and the failed build leaves nothing in the release directory."""
  d = str(tmp_path / "release")
  _write_celeba(d, form)
  good = tf.io.encode_jpeg(np.zeros((218, 178, 3), np.uint8)).numpy()
  data = np.random.default_rng(0).bytes(500) if damage == "random" else good[:len(good) // 2]
  _corrupt(d, form, "000003.jpg", data)
  before = sorted(os.listdir(d))
  where = os.path.join(d, "img_align_celeba" + (".zip" if form == "zip" else ""))
  with pytest.raises(ConfigError) as e:  # the build goes to <data_dir>/tfds by default
    _load(dict(name="celeba", source="release", data_dir=d))
  assert str(e.value) == (f"{where}: 000003.jpg is not a decodable JPEG; replace it with the "
                          "CelebA release's copy")
  assert sorted(os.listdir(d)) == before  # no tfds/ folder left behind
  # into a cache_dir that exists already: only what this build created is removed
  cache = tmp_path / "cache"
  (cache / "mine").mkdir(parents=True)
  with pytest.raises(ConfigError, match="000003.jpg is not a decodable JPEG"):
    _load(_celeba_cfg(d, tmp_path))
  assert os.listdir(cache) == ["mine"]


def test_decode_images_stops_its_threads_when_abandoned(tmp_path):
  d = str(tmp_path / "release")
  names, _ = _write_celeba(d)
  images = celeba_data._ImageFiles(d)
  convert = celeba_data._jpeg_to_square(16, 0)
  threads = threading.active_count()
  out = celeba_data._decode_images(images, names, convert, workers=2)
  first = next(out)
  assert first.shape == (16, 16, 3) and first.dtype == np.uint8
  assert threading.active_count() > threads
  out.close()  # the pool is shut down: no thread left running
  assert threading.active_count() == threads
  shapes = [x.shape for x in celeba_data._decode_images(images, names, convert, workers=3)]
  assert shapes == [(16, 16, 3)] * 6


# ----------------------------------------------------------------------------
# tfds sources, read from datasets written here in tfds's own format
# ----------------------------------------------------------------------------

class _Store(tfds.dataset_builders.AdhocBuilder, skip_registration=True):
  code_path = None  # see shapes.ShapesBuilder


def test_tfds_sources(tmp_path):
  rng = np.random.default_rng(0)
  store = dict(data_dir=str(tmp_path))
  mnist = {s: [(i, {"image": rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), "label": i % 10})
               for i in range(n)] for s, n in (("train", 40), ("test", 9))}
  _Store(name="mnist", version="3.0.1", features=tfds.builder("mnist").info.features,
         split_datasets=mnist, **store).download_and_prepare()
  ds = _load(dict(name="mnist", data_dir=str(tmp_path), num_train=30, binarize="none"))
  assert (ds.num_train, ds.num_test) == (30, 9)
  test = _all_test_mnist(ds)
  written = [e["image"] / np.float32(255) for _, e in mnist["test"]]
  assert sorted(_rows(test)) == sorted(_rows(written))

  features = tfds.builder("celeb_a").info.features
  colours = rng.integers(0, 256, (13, 3))
  celeba = {}
  for s, idx in (("train", range(8)), ("validation", range(8, 10)), ("test", range(10, 13))):
    celeba[s] = []
    for i in idx:
      img = np.full((218, 178, 3), 255, np.uint8)
      img[20:198] = colours[i]
      celeba[s].append((i, {
          "image": img, "identity": {"Identity_No": i},
          "landmarks": {k: 0 for k in features["landmarks"].keys()},
          "attributes": {a: bool(rng.integers(2)) for a in celeba_data.ATTRIBUTES}}))
  _Store(name="celeb_a", version="2.1.0", features=features, split_datasets=celeba,
         **store).download_and_prepare()
  ds = _load(dict(name="celeba", data_dir=str(tmp_path), celeba_split="official"))
  assert (ds.num_train, ds.num_test) == (8, 3)
  out = _all_test(ds, 2)
  want = {tuple(np.where([e["attributes"][a] for a in celeba_data.ATTRIBUTES], 1.0, -1.0)): i
          for i, e in celeba["test"]}
  got = [want[tuple(a)] for a in out["attributes"]]  # every row is one written example
  assert sorted(got) == [10, 11, 12]
  for i, img in zip(got, out["image"]):  # white rows cropped; JPEG within tolerance
    np.testing.assert_allclose(img.mean(axis=(0, 1)), colours[i] / 255, atol=0.03)
  paper = _load(dict(name="celeba", data_dir=str(tmp_path)))  # 10% of 13 held out
  assert (paper.num_train, paper.num_test) == (12, 1)


def _all_test_mnist(ds):
  out = list(ds.test_batches(4))
  masks = np.concatenate([m for _, m in out])
  return _stack([b for b, _ in out], "image")[masks]


def test_tfds_not_prepared_says_how_to_get_it(tmp_path):
  with pytest.raises(ConfigError, match="dataset-fashion-mnist") as e:
    _load(dict(name="fashion_mnist", data_dir=str(tmp_path)))
  assert "source='idx'" in str(e.value) and "download=True" in str(e.value)
  with pytest.raises(ConfigError, match="source='release'"):
    _load(dict(name="celeba", data_dir=str(tmp_path)))


IDX_NAMES = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
             "t10k-labels-idx1-ubyte")
RELEASE_FILES = ("img_align_celeba.zip (or the img_align_celeba/ folder), list_attr_celeba.txt "
                 "and list_eval_partition.txt")


@pytest.mark.parametrize("cfg, problem, ways", [
    (dict(name="mnist", source="idx", data_dir="/nonexistent"),
     "config.data.data_dir='/nonexistent' is not a directory",
     ["config.data.download=True", "`tfds build mnist`", IDX_NAMES]),
    (dict(name="fashion_mnist", source="idx"),
     "config.data.data_dir='' (for fashion_mnist: {fmnist}) is not a directory",
     ["config.data.download=True", "`tfds build fashion_mnist`", IDX_NAMES,
      "Debian's package dataset-fashion-mnist: it installs those IDX files in {fmnist}"]),
    (dict(name="fashion_mnist"),
     "tfds dataset 'fashion_mnist' is not prepared in config.data.data_dir='' (tfds's default, "
     "{home}/tensorflow_datasets)",
     ["config.data.download=True", "`tfds build fashion_mnist`", IDX_NAMES,
      "dataset-fashion-mnist", "copied into {home}/tensorflow_datasets;"]),
    (dict(name="celeba", source="release", data_dir="/nonexistent"),
     "config.data.data_dir='/nonexistent' is not a directory",
     ["config.data.download=True", "`tfds build celeb_a`", RELEASE_FILES]),
    (dict(name="celeba"),
     "tfds dataset 'celeb_a' is not prepared in config.data.data_dir='' (tfds's default, "
     "{home}/tensorflow_datasets)",
     ["config.data.download=True", "`tfds build celeb_a`", RELEASE_FILES]),
])
def test_missing_data_says_every_way_to_get_it(tmp_path, monkeypatch, cfg, problem, ways):
  """The field and the resolved path, then tfds (download or build), IDX, Debian, release."""
  home, fmnist = str(tmp_path / "home"), str(tmp_path / "no-fashion-mnist")
  monkeypatch.setenv("HOME", home)  # tfds's default data dir: ~/tensorflow_datasets
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  monkeypatch.setattr(tfds.core.constants, "DATA_DIR", f"{home}/tensorflow_datasets")
  monkeypatch.setattr(mnist_data, "FASHION_MNIST_DIR", fmnist)
  with pytest.raises(ConfigError) as e:
    _load(cfg)
  message = str(e.value)
  assert message.startswith(problem.format(home=home, fmnist=fmnist) + "; to get ")
  for way in ways:
    assert way.format(home=home, fmnist=fmnist) in message
  assert "`tfds build celeba`" not in message and "tfds default" not in message


def test_failed_download_says_so_and_cleans_up(tmp_path, monkeypatch):
  """With download=True already set, a failed download (simulated: no network here) is
  reported as such with the offline ways, and its partial files are removed."""
  (tmp_path / "downloads").mkdir()
  (tmp_path / "downloads" / "other.tmp.1").write_text("not this run's")

  def offline(builder, **kwargs):
    del kwargs
    root = str(builder.data_dir_root)
    for leftover in (os.path.join(root, "downloads", builder.name, "mnist.gz.tmp.0123abcd"),
                     os.path.join(root, "downloads", "extracted"),
                     os.path.join(os.path.dirname(builder.data_dir), "incomplete.ABC123_3.0.1")):
      os.makedirs(leftover)
    (tmp_path / "downloads" / builder.name / "mnist.gz.tmp.0123abcd" / "part").write_bytes(b"x")
    raise ConnectionError("Max retries exceeded (Name or service not known)\nmore detail")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  with pytest.raises(ConfigError) as e:
    _load(dict(name="mnist", data_dir=str(tmp_path), download=True))
  message = str(e.value)
  assert message.startswith(
      f"config.data.download=True: downloading tfds dataset 'mnist' into config.data.data_dir="
      f"'{tmp_path}' failed (no network? ConnectionError: Max retries exceeded (Name or service "
      "not known)); to get mnist offline: tfds (config.data.source='tfds'): `tfds build mnist` "
      f"on a connected machine, its mnist/ folder copied into {tmp_path}; or IDX files ")
  assert IDX_NAMES in message and "download=True (needs network)" not in message
  assert "\n" not in message
  found = sorted(os.path.relpath(os.path.join(r, f), tmp_path)
                 for r, ds, fs in os.walk(tmp_path) for f in ds + fs)
  assert found == ["downloads", os.path.join("downloads", "other.tmp.1")]


# ----------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------

def _measure_shapes(images):
  """The 7 attributes read off the pixels with plain numpy, as bools."""
  f = images.astype(np.float64) / 255
  s = f.shape[1]
  cover = f.max(-1) / f.max(axis=(1, 2, 3))[:, None, None]
  ys, xs = np.mgrid[0:s, 0:s] + 0.5
  area = cover.sum((1, 2))
  cx, cy = (cover * xs).sum((1, 2)) / area, (cover * ys).sum((1, 2)) / area
  solid = cover > 0.99
  colour = (f * solid[..., None]).sum((1, 2)) / solid.sum((1, 2))[:, None]
  box = solid.any(2).sum(1) * solid.any(1).sum(1)
  fill = solid.sum((1, 2)) / box  # 1 for a square, about pi/4 for a circle
  return np.stack([fill > 0.95, area > np.pi * (0.17 * s) ** 2, cx > s / 2, cy > s / 2,
                   colour[:, 0] > 0.57, colour[:, 1] > 0.57, colour[:, 2] > 0.57], axis=1)


def test_generate_shapes():
  images, attrs = shapes.generate_shapes(2000, 32, seed=7)
  assert images.shape == (2000, 32, 32, 3) and images.dtype == np.uint8
  assert attrs.shape == (2000, len(shapes.ATTRIBUTES)) and set(np.unique(attrs)) == {-1, 1}
  again, attrs_again = shapes.generate_shapes(2000, 32, seed=7)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(attrs, attrs_again)
  other, _ = shapes.generate_shapes(2000, 32, seed=8)
  assert not np.array_equal(images, other)
  assert np.abs(attrs.mean(0)).max() < 0.1  # each a fair coin: |mean| < 4.5 sigma
  assert np.abs(np.corrcoef(attrs.T) - np.eye(attrs.shape[1])).max() < 0.1
  measured = _measure_shapes(images)
  np.testing.assert_array_equal(measured, attrs > 0)  # every attribute is visible
  big, _ = shapes.generate_shapes(300, 64, seed=1)
  assert big.shape == (300, 64, 64, 3)


def _free_factors(images):
  """Per image: the shape's area (pixels), centre column and red level, in numpy."""
  f = images.astype(np.float64) / 255
  cover = f.max(-1) / f.max(axis=(1, 2, 3))[:, None, None]
  xs = np.arange(f.shape[2]) + 0.5
  area = cover.sum((1, 2))
  return np.stack([area, (cover * xs).sum((1, 2)) / area, f[..., 0].max(axis=(1, 2))], 1)


def test_two_runs_building_one_dataset_take_turns(tmp_path, monkeypatch):
  cfg = dict(data_lib.default_config("shapes"), num_train=30, num_test=10, data_dir=str(tmp_path),
             data_seed=4)
  made = []
  real = shapes.generate_shapes
  monkeypatch.setattr(shapes, "generate_shapes", lambda *a: made.append(a) or real(*a))
  other = shapes.ShapesBuilder(num_train=30, num_test=10, image_size=32, seed=4,
                               data_dir=str(tmp_path))
  loaded = []
  with tfds_util.one_writer(other.data_dir):   # another run is writing the set
    waiting = threading.Thread(target=lambda: loaded.append(_load(cfg)))
    waiting.start()
    waiting.join(1.0)
    assert waiting.is_alive() and not made     # this one waits its turn ...
    other.download_and_prepare()
  waiting.join(60)
  assert len(made) == 1 and len(loaded) == 1   # ... then reads what the other wrote
  images, _ = real(40, 32, 4)
  served = np.concatenate([b["image"][m] for b, m in loaded[0].test_batches(10)])
  np.testing.assert_array_equal(served, images[30:] / np.float32(255))


def test_wide_shapes_keep_their_attributes_and_spread_the_rest():
  narrow, attrs = shapes.generate_shapes(2000, 64, seed=5)
  wide, wide_attrs = shapes.generate_shapes(2000, 64, seed=5, variation="wide")
  np.testing.assert_array_equal(wide_attrs, attrs)   # the same coins, drawn first
  np.testing.assert_array_equal(_measure_shapes(wide), wide_attrs > 0)
  assert (wide.max(axis=(1, 2, 3)) > 0).all()        # no shape is lost off the edge
  # Within each class of (big, right, red), each free factor spreads several times more.
  for big, right, red in itertools.product((-1, 1), repeat=3):
    cls = (attrs[:, 1] == big) & (attrs[:, 2] == right) & (attrs[:, 4] == red)
    ratio = _free_factors(wide[cls]).std(0) / _free_factors(narrow[cls]).std(0)
    assert (ratio > 2).all(), (big, right, red, ratio)
  with pytest.raises(ValueError, match="variation"):
    shapes.generate_shapes(2, 32, variation="broad")


def test_load_shapes_through_tfds(tmp_path, monkeypatch):
  cfg = dict(data_lib.default_config("shapes"), num_train=60, num_test=25, data_dir=str(tmp_path),
             data_seed=3)
  ds = _load(cfg)
  assert (ds.num_train, ds.num_test) == (60, 25)
  assert ds.modalities == {"image": ((32, 32, 3), "float32"), "attributes": ((7,), "float32")}
  images, attrs = shapes.generate_shapes(85, 32, seed=3)
  out = list(ds.test_batches(10))
  masks = np.concatenate([m for _, m in out])
  served = _stack([b for b, _ in out], "image")[masks]
  np.testing.assert_array_equal(served, images[60:] / np.float32(255))
  np.testing.assert_array_equal(_stack([b for b, _ in out], "attributes")[masks], attrs[60:])
  train = _epoch(ds, 0, 20)
  got = sorted(zip(_rows(_stack(train, "image")), map(tuple, _stack(train, "attributes"))))
  want = sorted(zip(_rows(images[:60] / np.float32(255)),
                    map(tuple, attrs[:60].astype(np.float32))))
  assert got == want
  # a second load reads the stored dataset and generates nothing
  monkeypatch.setattr(shapes, "generate_shapes", lambda *a: pytest.fail("regenerated"))
  again = _load(cfg)
  np.testing.assert_array_equal(_epoch(again, 0, 20)[0]["image"], train[0]["image"])
  assert "shapes" in data_lib.describe(cfg)


# ----------------------------------------------------------------------------
# Bad config
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, field", [
    (dict(name="cifar"), "config.data.name"),
    (dict(), "config.data.name"),
    (dict(name="mnist", source="release"), "config.data.source"),
    (dict(name="shapes", source="tfds"), "config.data.source"),
    (dict(name="mnist", source="idx", data_dir="/nonexistent/mnist"), "config.data.data_dir"),
    (dict(name="mnist", source="idx"), "config.data.data_dir"),
    (dict(name="mnist", data_dir="/nonexistent/tfds"), "config.data.data_dir"),
    (dict(name="celeba", source="release", data_dir="/nonexistent/celeba"), "config.data.data_dir"),
    (dict(name="celeba", source="release"), "config.data.data_dir"),
    (dict(name="mnist", split="all"), "config.data.split"),
    (dict(name="mnist", binarize="yes"), "config.data.binarize"),
    (dict(name="mnist", num_train=0), "config.data.num_train"),
    (dict(name="celeba", celeba_split="random"), "config.data.celeba_split"),
    (dict(name="celeba", test_fraction=1.5), "config.data.test_fraction"),
    (dict(name="shapes", image_size=2.5), "config.data.image_size"),
])
def test_bad_config(cfg, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    _load(cfg)


def test_bad_idx_dir_and_batch_args(tmp_path, mnist_dir):
  with pytest.raises(ConfigError, match="train-images-idx3-ubyte"):
    _load(dict(name="mnist", source="idx", data_dir=str(tmp_path)))
  ds = _load(_mnist_cfg(mnist_dir[0]))
  with pytest.raises(ConfigError, match="batch_size"):
    ds.steps_per_epoch(0)
  with pytest.raises(ConfigError, match="batch_size"):
    ds.train_batches(0, 101)
  with pytest.raises(ConfigError, match="start"):
    ds.train_batches(0, 10, start=11)
  with pytest.raises(ConfigError, match="process_index"):
    _load(_mnist_cfg(mnist_dir[0]), pi=2, pc=2)


def test_default_config_and_describe():
  for name in data_lib.NAMES:
    cfg = data_lib.default_config(name)
    assert cfg.name == name and cfg.source == data_lib.module(name).fields(name)["source"].choices[0]
    assert name in data_lib.describe(cfg)
  assert data_lib.default_config("mnist").num_train == 50_000
  assert data_lib.default_config("celeba").image_size == 64


def test_an_unknown_data_field_is_named_rather_than_ignored():
  c = data_lib.default_config("shapes")
  with c.unlocked():
    c.num_trian = 5
  with pytest.raises(ConfigError, match=r"config.data.num_trian is not a field of dataset "
                     r"'shapes'; its fields: .*num_train"):
    data_lib.resolve(c)


def test_the_celeba_benchmarks_stand_in_is_a_valid_release(tmp_path):
  from benchmarks import celeba_pipeline
  d = str(tmp_path / "release")
  mean_bytes = celeba_pipeline.write_release(d, 20)
  names, attrs, partition = celeba_data._parse_celeba_lists(d)
  assert names == [f"{i:06d}.jpg" for i in range(1, 21)]
  assert set(np.unique(attrs)) == {-1, 1} and list(np.bincount(partition)) == [16, 2, 2]
  sizes = [os.path.getsize(os.path.join(d, "img_align_celeba", n)) for n in names]
  assert abs(np.mean(sizes) - mean_bytes) < 1e-6
  image = tf.io.decode_jpeg(open(os.path.join(d, "img_align_celeba", names[0]), "rb").read())
  assert image.shape == (218, 178, 3) and np.std(image.numpy()) > 10   # not a flat colour


def test_a_damaged_shapes_cache_is_one_line_naming_it(tmp_path):
  """A truncated record file of the written shapes set (tf's DataLossError inside)."""
  cfg = dict(data_lib.default_config("shapes"), num_train=60, num_test=25,
             data_dir=str(tmp_path))
  _load(cfg)
  records = sorted(str(p) for p in tmp_path.rglob("*train.tfrecord*"))
  with open(records[0], "r+b") as f:
    f.truncate(os.path.getsize(records[0]) // 2)
  with pytest.raises(ConfigError, match=r"the train split in .*jmvae_shapes.* cannot be read "
                     r"\(DataLossError: .*\); delete that directory") as e:
    _load(cfg)
  assert "\n" not in str(e.value)


def test_an_unreadable_data_dir_is_said_to_be_unreadable_not_missing(tmp_path, monkeypatch):
  from configs import shapes
  d = tmp_path / "data"
  d.mkdir()
  d.chmod(0)
  if os.access(d, os.R_OK):   # root reads everything: the permission's answer simulated
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if os.fspath(p) == str(d)
                        else real(p, m))
  c = shapes.get_config("smoke")
  c.data.data_dir = str(d)
  try:
    with pytest.raises(ConfigError, match=r"^config.data.data_dir='.*/data': this directory "
                       r"exists but cannot be read \(permission denied\)"):
      data_lib.load(c.data, 0)
  finally:
    d.chmod(0o755)


def test_celeba_standardised_pixels_use_the_training_split_statistics(tmp_path):
  """The authors' normalisation: each pixel less its training-split mean, over its std
  (float64 numpy over the [0, 1] images here); cached beside the built dataset; the
  dataset's display maps back."""
  from benchmarks import celeba_pipeline
  d = str(tmp_path / "release")
  celeba_pipeline.write_release(d, 20)
  unit = _load(_celeba_cfg(d, tmp_path, celeba_split="official"))
  train = _stack(_epoch(unit, 0, 16), "image").astype(np.float64)
  mean, std = train.mean(0), np.maximum(train.std(0), 1 / 255)
  assert unit.display is None and std.min() > 1 / 255
  ds = _load(_celeba_cfg(d, tmp_path, celeba_split="official", normalise="standardise"))
  want = (_all_test(unit)["image"] - mean) / std
  got = _all_test(ds)["image"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ds.display(got), _all_test(unit)["image"], atol=1e-5)
  cached = list((tmp_path / "cache").rglob("pixel_stats_*.npz"))
  assert len(cached) == 1
  again = celeba_data.pixel_statistics(None, None, str(cached[0]))   # read, not recomputed
  np.testing.assert_allclose(again[0], mean, atol=1e-6)
  np.testing.assert_allclose(again[1], std, rtol=1e-5)


def test_the_authors_celeba_split_is_scikit_learns_train_test_split_draw():
  """celeba_split='authors': the 1 % that the authors' train_test_split(test_size=0.01,
  random_state=1) holds out, as scikit-learn 1.9.1 gives it (recorded from it)."""
  c = dict(celeba_split="authors", split_seed=1, test_fraction=0.1)
  held = celeba_data.test_indices(c, 202_599)
  assert len(held) == 2026 and held[:6].tolist() == [57205, 75512, 193254, 125591, 75806, 93799]
  assert celeba_data.test_indices(c, 300).tolist() == [189, 123, 185]
