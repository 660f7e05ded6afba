"""How long CelebA takes to prepare from its release files, and whether the input keeps up.

  .venv/bin/python benchmarks/celeba_pipeline.py [--images=2000] [--batch_size=100]

The release (202,599 aligned 178x218 JPEGs) cannot be downloaded here, so the script
writes a stand-in in a temporary directory: ``--images`` JPEGs of that size, smooth
random colour fields with grain, encoded at quality 90 (their mean size is printed:
the real img_align_celeba.zip holds about 7 KB per image), and the two list files.
It then times, each in the way a training run meets them:
- the build: ``data.load`` with ``source="release"`` decoding, cropping,
  resizing to 64x64 and writing the tfds cache (once per release);
- the training input: one epoch of ``train_batches`` (PNG decode, shuffle, batch);
- the train step of ``configs/celeba.py`` at the same batch size, on this machine's
  devices, for ``--steps`` steps after its compile.
It reports images per second of each, the build time extrapolated to the full
release, and ``input_over_step``: how many times faster the input runs than the
step (above 1, the step never waits for data). The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import command, machine, steps_per_second  # noqa: E402
from benchmarks.train_throughput import config_step  # noqa: E402
from configs import celeba  # noqa: E402
from jmvae_jax import data as data_lib  # noqa: E402
from jmvae_jax.data.celeba import ATTRIBUTES as CELEBA_ATTRIBUTES  # noqa: E402

FULL_RELEASE = 202_599   # images in img_align_celeba


def write_release(directory: str, n: int, seed: int = 0) -> float:
  """A stand-in CelebA release of ``n`` images in ``directory``; returns the mean JPEG
  size in bytes."""
  rng = np.random.default_rng(seed)
  folder = os.path.join(directory, "img_align_celeba")
  os.makedirs(folder)
  names, sizes = [f"{i:06d}.jpg" for i in range(1, n + 1)], []
  for name in names:
    coarse = rng.uniform(0, 255, (1, 6, 5, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (218, 178), method="bicubic")[0].numpy()
    grain = rng.normal(0, 4, smooth.shape)
    image = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    data = tf.io.encode_jpeg(image, quality=90).numpy()
    sizes.append(len(data))
    with open(os.path.join(folder, name), "wb") as f:
      f.write(data)
  attrs = np.where(rng.random((n, 40)) < 0.5, -1, 1)
  with open(os.path.join(directory, "list_attr_celeba.txt"), "w") as f:
    f.write(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n")
    f.writelines(f"{m} " + " ".join(f"{v:2d}" for v in a) + "\n" for m, a in zip(names, attrs))
  partition = np.where(np.arange(n) < 0.8 * n, 0, np.where(np.arange(n) < 0.9 * n, 1, 2))
  with open(os.path.join(directory, "list_eval_partition.txt"), "w") as f:
    f.writelines(f"{m} {p}\n" for m, p in zip(names, partition))
  return float(np.mean(sizes))


def step_rate(batch_size: int, steps: int) -> float:
  """Images per second of configs/celeba.py's jitted train step (random data)."""
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((batch_size, 64, 64, 3)).astype(np.float32),
           "attributes": np.where(rng.random((batch_size, 40)) < 0.5, -1.0, 1.0).astype(np.float32)}
  return batch_size * steps_per_second(*config_step(celeba.get_config(), batch), steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=2000, help="images in the stand-in release")
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--steps", type=int, default=5, help="timed train steps (0: skip)")
  args = parser.parse_args()
  if args.images < 20 or args.batch_size < 1 or args.images * 0.8 < args.batch_size:
    parser.error("--images must be >= 20 and at least 1.25 x --batch_size")

  root = tempfile.mkdtemp(prefix="celeba_pipeline_")
  try:
    release = os.path.join(root, "release")
    t = time.perf_counter()
    jpeg_bytes = write_release(release, args.images)
    print(f"wrote {args.images} stand-in JPEGs ({jpeg_bytes / 1e3:.1f} KB each) "
          f"in {time.perf_counter() - t:.1f} s")
    cfg = dict(name="celeba", source="release", data_dir=release,
               cache_dir=os.path.join(root, "cache"), celeba_split="official")
    t = time.perf_counter()
    data = data_lib.load(cfg, seed=0, process_index=0, process_count=1)
    build_s = time.perf_counter() - t
    build_rate = args.images / build_s
    print(f"build: {build_s:.1f} s, {build_rate:,.0f} images/s; the full release "
          f"({FULL_RELEASE:,} images) at this rate: {FULL_RELEASE / build_rate / 60:.1f} min")

    n = data.steps_per_epoch(args.batch_size)
    t = time.perf_counter()
    for count, batch in enumerate(data.train_batches(0, args.batch_size), 1):
      assert batch["image"].shape == (args.batch_size, 64, 64, 3)
    input_rate = count * args.batch_size / (time.perf_counter() - t)
    assert count == n
    print(f"training input: {n} batches of {args.batch_size}, {input_rate:,.0f} images/s "
          "(the first epoch: includes the pipeline's start)")
  finally:
    shutil.rmtree(root, ignore_errors=True)

  result = {"build_images_per_second": round(build_rate, 1),
            "full_release_build_minutes": round(FULL_RELEASE / build_rate / 60, 2),
            "input_images_per_second": round(input_rate, 1),
            "stand_in_jpeg_kb": round(jpeg_bytes / 1e3, 2), "images": args.images,
            "batch_size": args.batch_size}
  if args.steps:
    rate = step_rate(args.batch_size, args.steps)
    print(f"train step, configs/celeba.py, batch {args.batch_size}: {rate:,.1f} images/s; "
          f"the input runs {input_rate / rate:.1f}x faster")
    result.update(step_images_per_second=round(rate, 1),
                  input_over_step=round(input_rate / rate, 2))
  print("command:", command())
  print("machine:", json.dumps(machine()))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
