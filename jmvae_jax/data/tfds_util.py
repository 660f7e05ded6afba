"""What the datasets share with tfds: building a dataset once (and cleaning up after a
failed build), opening tfds's own datasets, and the one-line error that says every way
to get a dataset that is not there."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile

import jax
import numpy as np
import tensorflow_datasets as tfds

from jmvae_jax import parallel
from jmvae_jax.errors import ConfigError

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


@contextlib.contextmanager
def one_writer(path: str):
  """An exclusive lock named after ``path`` (a file in the temp dir, not in the data
  dir), held while the body runs: two runs on this machine that build the same dataset
  at once take turns instead of colliding in tfds's rename."""
  key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:20]
  locks = os.path.join(tempfile.gettempdir(), "jmvae_jax_locks")
  os.makedirs(locks, exist_ok=True)
  with open(os.path.join(locks, key + ".lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)   # released when the file closes
    yield


def _build(builder, what: str, local: bool) -> None:
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


def prepare(make_builder, what: str, local: bool = True):
  """The builder ``make_builder()`` with its tfds dataset written once. In a multi-process
  run process 0 writes it while the others wait at a barrier (they share the directory,
  and two writers collide); separate runs on one machine take turns (:func:`one_writer`);
  then every process opens it afresh. For a ``local`` builder (generated or read from
  files here) tfds's "Downloading and preparing" lines would mislead, so they are
  replaced by one that says what happens; its progress bars stay."""
  if jax.process_index() == 0:
    builder = make_builder()
    if not builder.is_prepared():
      with one_writer(builder.data_dir):
        builder = make_builder()   # another run may have written it while this one waited
        if not builder.is_prepared():
          _build(builder, what, local)
  parallel.barrier(f"{what} prepared")
  builder = make_builder()
  if not builder.is_prepared():
    raise ConfigError(f"{what}: preparing the tfds dataset in {builder.data_dir} failed")
  return builder


def tfds_dir(c) -> str:
  """The tfds data dir that source='tfds' reads: data_dir, else tfds's default, resolved."""
  return c["data_dir"] or os.path.expanduser(tfds.core.constants.get_default_data_dir())


def ways(c, tfds_name: str, others, offline: bool = False) -> str:
  """Every way to get dataset ``c["name"]`` as one clause: tfds's (``tfds_name``), then
  the dataset's ``others``; ``offline`` leaves out config.data.download=True (set
  already, and it failed)."""
  t = tfds_name
  into = (tfds_dir(c) if c["source"] == "tfds"
          else f"config.data.data_dir (default {tfds_dir(dict(c, data_dir=''))})")
  build = f"`tfds build {t}` on a connected machine, its {t}/ folder copied into {into}"
  first = [f"tfds (config.data.source='tfds'): "
           + (build if offline else f"config.data.download=True (needs network), or {build}")]
  return (f"to get {c['name']}{' offline' if offline else ''}: "
          + "; or ".join(first + list(others)))


def no_data(c, problem: str, offline: bool = False) -> ConfigError:
  """A ConfigError: ``problem`` (naming the field and path), then every way to get the data
  (the dataset module's ``TFDS_NAMES`` and ``other_ways``)."""
  from jmvae_jax import data
  module = data.module(c["name"])
  return ConfigError(f"{problem}; "
                     f"{ways(c, module.TFDS_NAMES[c['name']], module.other_ways(c), offline)}")


def tfds_builder(c):
  """tfds's own dataset ``c["name"]``, prepared (downloaded only with ``download``)."""
  from jmvae_jax import data
  tfds_name = data.module(c["name"]).TFDS_NAMES[c["name"]]
  builder = tfds.builder(tfds_name, data_dir=c["data_dir"] or None)
  if builder.is_prepared():
    return builder
  where = (f"config.data.data_dir={c['data_dir']!r}" if c["data_dir"] else
           f"config.data.data_dir='' (tfds's default, {tfds_dir(c)})")
  if not c["download"]:
    raise no_data(c, f"tfds dataset {tfds_name!r} is not prepared in {where}")
  try:
    return prepare(lambda: tfds.builder(tfds_name, data_dir=c["data_dir"] or None),
                    f"tfds {tfds_name!r}", local=False)
  except Exception as e:  # pylint: disable=broad-except  # network, quota, disk: all alike here
    first = str(e).splitlines()[0] if str(e) else ""
    raise no_data(c, f"config.data.download=True: downloading tfds dataset {tfds_name!r} into "
                      f"{where} failed (no network? {type(e).__name__}: {first})",
                   offline=True) from None


def as_arrays(builder, split: str) -> dict[str, np.ndarray]:
  """A prepared split, whole, as numpy arrays; a damaged copy on disk is one line naming it."""
  import tensorflow as tf
  try:
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
  except tf.errors.OpError as e:
    first = (e.message or str(e)).strip().splitlines()[0][:200]
    raise ConfigError(f"the {split} split in {builder.data_dir} cannot be read "
                      f"({type(e).__name__}: {first}); delete that directory to have it "
                      "written again") from None


def check_dir(c) -> None:
  if c["data_dir"] and not os.path.isdir(c["data_dir"]):
    downloading = c["download"] and c["source"] == "tfds"
    raise no_data(c, f"config.data.data_dir={c['data_dir']!r} is not a directory"
                   + (" (create it for config.data.download=True to download into)"
                      if downloading else ""), offline=downloading)
