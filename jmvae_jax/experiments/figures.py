"""The paper's MNIST figures, from finished rows of Table 1, drawn in numpy as PNG.

* ``fig3_latent.png`` (Figure 3): the test set's posterior means in a 2-d latent space,
  coloured by digit; panels left to right VAE (q(z|x)), CVAE and JMVAE-kl (q(z|x,w)),
  from the latent-2 rows; under them the ten colours, each on an image of its digit.
* ``fig6_reconstructions.png`` (Figure 6): test images (top), their reconstructions
  through q(z|x,w) (middle) and through q(z|x) alone (bottom), JMVAE-kl alpha 0.1.
* ``fig7_generation.png`` (Figure 7): digits generated from each label, one row per
  label, each a different z drawn from q(z|w) (decoder means); JMVAE-zero (left, where
  q(z|w) is the joint encoder with the image fed as zeros) beside JMVAE-kl alpha 0.1.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from jmvae_jax import figures

# Ten colours that stay apart (the common categorical palette).
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
                    [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127],
                    [188, 189, 34], [23, 190, 207]], np.float32) / 255.0


def _load(root, protocol, row):
  """(model, params, test images, test labels) of a finished row."""
  import jmvae_jax
  from jmvae_jax import data as data_lib
  model, params, config = jmvae_jax.load(os.path.join(root, protocol, row))
  data = data_lib.load(config.data, config.seed)
  batches = list(data.test_batches(1000))
  keep = np.concatenate([np.asarray(m, bool) for _, m in batches])
  images = np.concatenate([b["image"] for b, _ in batches])[keep]
  labels = np.concatenate([b["label"] for b, _ in batches])[keep]
  return model, params, images, labels


def scatter(points: np.ndarray, labels: np.ndarray, size: int = 360, dot: int = 2):
  """[N, 2] points as coloured dots on a white square (the central 99.8 % of each axis)."""
  lo = np.percentile(points, 0.1, axis=0)
  hi = np.percentile(points, 99.9, axis=0)
  scaled = (points - lo) / np.maximum(hi - lo, 1e-9)
  xy = np.clip(np.round(scaled * (size - dot)).astype(int), 0, size - dot)
  canvas = np.ones((size, size, 3), np.float32)
  for i in np.random.default_rng(0).permutation(len(points)):   # no digit drawn last
    x, y = xy[i]
    canvas[size - dot - y: size - y, x: x + dot] = PALETTE[labels[i] % 10]
  return canvas


def legend(images: np.ndarray, labels: np.ndarray, side: int = 28) -> np.ndarray:
  """One image of each digit, drawn in its colour on white, in a row."""
  tiles = []
  for d in range(10):
    img = np.asarray(images[np.flatnonzero(labels == d)[0]], np.float32)[..., :1]
    tiles.append(1.0 - img * (1.0 - PALETTE[d]))
  return figures.grid(np.stack(tiles), cols=10)


def _posterior_means(model, params, images, labels, seen):
  fn = jax.jit(lambda b: model.posterior(params, b).mean)
  out = [np.asarray(fn({k: v for k, v in (("image", images[i:i + 1000]),
                                          ("label", labels[i:i + 1000])) if k in seen}))
         for i in range(0, len(images), 1000)]
  return np.concatenate(out)


def figure3(loaded: dict) -> np.ndarray:
  """Panels of the latent-2 rows present (VAE, CVAE, JMVAE-kl), a legend under them."""
  panels, legend_src = [], None
  for row, seen in (("vae_z2", ("image",)), ("cvae_z2", ("image", "label")),
                    ("jmvae_kl_z2", ("image", "label"))):
    if row in loaded:
      model, params, images, labels = loaded[row]
      panels.append(scatter(_posterior_means(model, params, images, labels, seen), labels))
      legend_src = (images, labels)
  gap = np.ones((panels[0].shape[0], 12, 3), np.float32)
  top = np.concatenate(sum(([p, gap] for p in panels), [])[:-1], axis=1)
  key = legend(*legend_src)
  pad = np.ones((key.shape[0], top.shape[1] - key.shape[1], 3), np.float32)
  return np.concatenate([top, np.ones((8, top.shape[1], 3), np.float32),
                         np.concatenate([key, pad], axis=1)], axis=0)


def figure6(model, params, images, labels, n: int = 12) -> np.ndarray:
  images, labels = images[:n], labels[:n]
  rows = [figures.to_rgb(images)]
  for seen in ({"image": images, "label": labels}, {"image": images}):
    z = model.posterior(params, seen).mean
    rows.append(figures.to_rgb(np.asarray(model.generate(params, "image", z))))
  return figures.grid(np.concatenate(rows), cols=n)


def figure7(models: list, samples: int = 8, seed: int = 0) -> np.ndarray:
  """For each model, a block of 10 rows (labels 0-9) of ``samples`` generated digits."""
  blocks = []
  for model, params in models:
    labels = np.repeat(np.arange(10, dtype=np.int32), samples)
    rng = jax.random.PRNGKey(seed)
    digits = np.asarray(model.translate(params, rng, {"label": labels}, "image"))
    blocks.append(figures.grid(figures.to_rgb(digits), cols=samples))
  gap = np.ones((blocks[0].shape[0], 16, 3), np.float32)
  return np.concatenate(sum(([b, gap] for b in blocks), [])[:-1], axis=1)


def draw(root: str, protocol: str, done: set, out: str) -> list[str]:
  """Every figure whose rows are finished; the paths written."""
  written = []
  latent = {r: _load(root, protocol, r) for r in ("vae_z2", "cvae_z2", "jmvae_kl_z2")
            if r in done}
  if latent:
    written.append(figures.write_png(os.path.join(out, "fig3_latent.png"), figure3(latent), 1))
  if "jmvae_kl_0.1" in done:
    kl = _load(root, protocol, "jmvae_kl_0.1")
    written.append(figures.write_png(os.path.join(out, "fig6_reconstructions.png"),
                                     figure6(*kl)))
    if "jmvae_zero" in done:
      zero = _load(root, protocol, "jmvae_zero")
      written.append(figures.write_png(os.path.join(out, "fig7_generation.png"),
                                       figure7([zero[:2], kl[:2]])))
  return written
