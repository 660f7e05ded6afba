"""The pipeline every dataset shares: a loaded ``Dataset`` and its batch iterators, over
arrays in memory or examples streamed from a tfds dataset on disk.

Batches are dicts keyed by modality name, as numpy arrays. Determinism: in memory an
epoch's global batch b is rows [b G, (b + 1) G) of the epoch's permutation (G = the global
batch) and each process reads its own slice of it, so the run does not depend on the
number of processes; a streamed dataset gives process p the examples i with
i % P == p, cut to ``n // process_count``. The test split is always sharded that way
(padded, masked). An epoch's order is a numpy permutation seeded by ``(seed, epoch)``
(a streamed set uses a ``shuffle_buffer`` seeded the same way), so a resumed run sees
identical batches.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jmvae_jax.errors import ConfigError, is_int

try:  # tf.data only: keep TensorFlow off any accelerator JAX uses.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
  pass

# Salts that keep the random streams apart.
TRAIN_SALT, STATIC_SALT, TEST_SALT, SHUFFLE_SALT = 1, 2, 3, 4


# An 8-bit pixel p as the float p / 255, divided as tf.data divides (IEEE float32), for
# the batches made on the device.
PIXELS = np.arange(256, dtype=np.float32) / np.float32(255)


def gather(array, index):
  """jnp: ``array[index]``, sharded as ``index`` is (a replicated table or training set
  read at indices split over the mesh)."""
  import jax
  return array.at[index].get(out_sharding=jax.typeof(index).sharding)


def pixels(image_u8):
  """jnp: 8-bit pixels as floats in [0, 1], the same numbers as ``tf.cast(x) / 255``."""
  import jax.numpy as jnp
  return gather(jnp.asarray(PIXELS), image_u8.astype(jnp.int32))


def u63(x: int) -> int:
  return int(x) % (2 ** 63)


def key(seed: int, salt: int, *data) -> tf.Tensor:
  """A stateless tf.random key from (seed, salt) with ``data`` folded in."""
  k = tf.constant([u63(seed), salt], tf.int64)
  for d in data:
    k = tf.random.experimental.stateless_fold_in(k, tf.cast(d, tf.int64), alg="philox")
  return k


def shard_indices(n: int, process_index: int, process_count: int, equal: bool) -> np.ndarray:
  """This process's example indices: ``i % process_count == process_index``.

  With ``equal`` every process gets ``n // process_count`` (the rest dropped).
  """
  idx = np.arange(process_index, n, process_count)
  return idx[: n // process_count] if equal else idx


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of an epoch: a permutation of range(n) from (seed, epoch)."""
  return np.random.default_rng(np.random.SeedSequence([u63(seed), u63(epoch), SHUFFLE_SALT])
                               ).permutation(n)


def _options() -> tf.data.Options:
  opts = tf.data.Options()
  opts.deterministic = True
  return opts


@dataclasses.dataclass
class InMemory:
  """Train/test arrays held in memory; batches gather rows by index. ``device_fn`` and
  ``epoch_words`` make the same training batches on the device (``DeviceFeed``)."""
  train: dict
  test: dict
  train_fn: Callable
  test_fn: Callable
  train_idx: np.ndarray          # every training example: a global batch is cut per process
  test_idx: np.ndarray           # this process's test examples
  process_index: int = 0
  process_count: int = 1
  device_fn: Callable | None = None     # jnp (raw batch, index [B], words) -> model batch
  epoch_words: Callable | None = None   # (seed, epoch) -> the uint32 words device_fn takes

  def order(self, seed, epoch, batch_size) -> np.ndarray:
    """This process's example indices of each batch of the epoch: [steps, batch_size]."""
    n, g = len(self.train_idx), batch_size * self.process_count
    steps = n // g
    order = self.train_idx[permutation(seed, epoch, n)][: steps * g].reshape(steps, g)
    lo = self.process_index * batch_size
    return order[:, lo: lo + batch_size]

  def __post_init__(self):
    self._train_t = {k: tf.constant(v) for k, v in self.train.items()}
    self._test_t = {k: tf.constant(v) for k, v in self.test.items()}

  def train_ds(self, seed, epoch, batch_size, start):
    """Global batch b is rows [b G, (b + 1) G) of the epoch's permutation of every
    example (G = batch_size x process_count); this process takes its slice of it, so
    the global batches, and the run, do not depend on the number of processes."""
    return self._batches(self._train_t, self.train_fn,
                         self.order(seed, epoch, batch_size)[start:], epoch)

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
class Streamed:
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
                    seed=int(np.random.SeedSequence([u63(seed), u63(epoch), SHUFFLE_SALT])
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
  display: Any = None   # an image in the data's space -> [0, 1] for figures (None: as is)
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

  def feed(self, batch_size: int, mesh) -> "HostFeed | DeviceFeed":
    """What the training loop steps through: the batches made on the devices where the
    dataset can (held in memory, with a device converter), else read on the host."""
    self.steps_per_epoch(batch_size)   # checks the batch size
    if getattr(self._source, "device_fn", None) is None:
      return HostFeed(self, int(batch_size), mesh)
    return DeviceFeed(self._source, self.seed, int(batch_size), mesh)

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


class HostFeed:
  """Training batches read on the host (tf.data) and placed on the mesh step by step."""
  make_batch = None

  def __init__(self, dataset, batch_size: int, mesh):
    self.dataset, self.batch_size, self.mesh = dataset, batch_size, mesh

  def epoch(self, epoch: int, start: int = 0):
    from jmvae_jax import parallel
    for local in self.dataset.train_batches(epoch, self.batch_size, start=start):
      yield parallel.shard_batch(local, self.mesh)


class DeviceFeed:
  """The training split of an in-memory dataset held on the devices (replicated), and each
  epoch's order: a batch is gathered and converted inside the jitted step, the same
  batch, bit for bit, that ``Dataset.train_batches`` makes on the host."""

  def __init__(self, source: InMemory, seed: int, batch_size: int, mesh):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jmvae_jax import parallel
    self.source, self.seed, self.batch_size, self.mesh = source, seed, batch_size, mesh
    self.arrays = parallel.replicate({k: np.asarray(v) for k, v in source.train.items()}, mesh)
    self._order_sharding = NamedSharding(mesh, P(None, parallel.AXIS))
    self._jax = jax

  def epoch(self, epoch: int, start: int = 0):
    """The step inputs of the epoch's batches from ``start``: (arrays, the epoch's order
    on the devices, the batch number, the epoch's words)."""
    order = self.source.order(self.seed, epoch, self.batch_size).astype(np.int32)
    placed = self._jax.make_array_from_process_local_data(self._order_sharding, order)
    words = np.asarray(self.source.epoch_words(self.seed, epoch), np.uint32)
    for b in range(start, order.shape[0]):
      yield self.arrays, placed, np.int32(b), words

  def make_batch(self, inputs):
    """Inside the jitted step: the model batch of ``epoch``'s step inputs."""
    arrays, order, b, words = inputs
    index = order[b]
    raw = {k: gather(v, index) for k, v in arrays.items()}
    return self.source.device_fn(raw, index, words)


def check_counts(name: str, n_train: int, n_test: int, process_count: int) -> None:
  """Every process needs a training example, and the test bound a test example."""
  if n_train < process_count or n_test < 1:
    raise ConfigError(f"{name}: {n_train} training / {n_test} test examples are too few "
                      f"for {process_count} process(es)")


def in_memory(name, modalities, train, test, train_fn, test_fn, seed, pi, pc,
              attribute_names=(), device_fn=None, epoch_words=None) -> Dataset:
  """A Dataset over arrays held in memory: ``train_fn`` / ``test_fn`` convert a gathered
  batch ``(raw, global indices, epoch) -> model batch`` in tf.data; ``device_fn`` (jnp,
  with ``epoch_words``) makes the same training batches on the device."""
  n_train, n_test = len(next(iter(train.values()))), len(next(iter(test.values())))
  check_counts(name, n_train, n_test, pc)
  source = InMemory(train, test, train_fn, test_fn, np.arange(n_train),
                    shard_indices(n_test, pi, pc, False), pi, pc, device_fn, epoch_words)
  return Dataset(name=name, modalities=modalities, seed=seed, process_index=pi,
                 process_count=pc, num_train=n_train // pc, num_test=len(source.test_idx),
                 num_test_total=n_test, attribute_names=tuple(attribute_names), _source=source)
