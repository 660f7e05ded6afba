"""Figures as numpy arrays and PNG files: image grids with their labels or attributes.

No plotting library is needed: tiles are assembled in numpy and encoded with
TensorFlow's PNG encoder; a label or attribute vector is drawn as a strip of
cells under its image (brightness = probability, or green/red for the side of its
modality's binary threshold an attribute is on).
"""
from __future__ import annotations

import itertools

import numpy as np


def to_rgb(images: np.ndarray, display=None) -> np.ndarray:
  """[N, H, W, C] in [0, 1] (C = 1 or 3) -> [N, H, W, 3] float; ``display`` first maps
  images from the data's space (``Dataset.display``, e.g. standardised pixels) to [0, 1]."""
  images = np.asarray(images, np.float32) if display is None else display(images)
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]


def grid(tiles: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
  """[N, H, W, 3] -> one [rows*(H+pad)+pad, cols*(W+pad)+pad, 3] image on white."""
  n, h, w, _ = tiles.shape
  rows = -(-n // cols)
  out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
  for i in range(n):
    r, c = divmod(i, cols)
    top, left = pad + r * (h + pad), pad + c * (w + pad)
    out[top:top + h, left:left + w] = tiles[i]
  return out


def strip(values: np.ndarray, width: int, categorical: bool, height: int = 6,
          truth: np.ndarray | None = None):
  """A row of cells per example (several where there are more cells than ``width``
  pixels): a categorical distribution (grey levels; ``truth``, class indices, outlined
  in blue) or attributes signed about 0 (green +, red -; a sign that differs from
  ``truth``'s is marked by a black top half)."""
  values = np.asarray(values, np.float32)
  n, k = values.shape
  per_row = min(k, width)   # more cells than pixels across: the strip wraps onto rows
  cell = max(1, width // per_row)
  out = np.ones((n, -(-k // per_row) * height, width, 3), np.float32)
  for j in range(k):
    top = (j // per_row) * height
    cells = out[:, top:top + height]
    sl = slice((j % per_row) * cell, (j % per_row + 1) * cell - (1 if cell > 2 else 0))
    if categorical:
      cells[:, :, sl] = (1.0 - values[:, j])[:, None, None, None]
      if truth is not None:
        cells[truth == j, -2:, sl] = [0.1, 0.2, 0.9]
    else:
      pos = values[:, j] > 0   # a tie counts as negative, as in likelihood.agreement
      cells[:, :, sl] = np.where(pos[:, None, None, None], [0.1, 0.7, 0.1], [0.8, 0.1, 0.1])
      if truth is not None:
        cells[(truth[:, j] > 0) != pos, : height // 2, sl] = 0.0
  return out


def with_strips(images, values, categorical: bool, truth=None, display=None) -> np.ndarray:
  """Images with their label / attribute strip underneath."""
  rgb = to_rgb(images, display)
  return np.concatenate([rgb, strip(values, rgb.shape[2], categorical, truth=truth)], axis=1)


def write_png(path: str, image: np.ndarray, scale: int = 2) -> str:
  import tensorflow as tf   # local: TensorFlow is heavy and only needed here
  img = np.repeat(np.repeat(np.asarray(image), scale, 0), scale, 1)
  data = tf.io.encode_png(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).numpy()
  with open(path, "wb") as f:
    f.write(data)
  return path


def model_figures(model, params, batch: dict, rng, n: int = 16, display=None) -> dict:
  """Figures of a trained model on the first ``n`` examples of ``batch``:
  reconstructions, prior samples, x-to-w and w-to-x generations (those the model
  can make). Images are the decoder means; returns name -> grid image."""
  import jax   # local: keep the numpy helpers above free of JAX
  from jmvae_jax.errors import ConfigError
  spec = model.spec
  x, ws = spec.x, spec.w
  xs = spec.modality(x)
  if xs.likelihood == "categorical" or len(xs.shape) != 3:
    return {}
  n = min(n, len(next(iter(batch.values()))))
  batch = {k: np.asarray(v)[:n] for k, v in batch.items()}
  cols = int(np.ceil(np.sqrt(n)))
  keys = (jax.random.fold_in(rng, i) for i in itertools.count())   # as many as figures
  out = {}
  mean = lambda name, z, c=None: np.asarray(model.generate(params, name, z, c))
  z = jax.random.normal(next(keys), (n, spec.latent_dim))
  conditions = dict(spec.decoders).get(x, ())
  samples = mean(x, z, {c: batch[c] for c in conditions} or None)
  out["samples"] = grid(to_rgb(samples, display), cols)
  for seen in (batch, {x: batch[x]}):   # q(z|x, w) where the model has it, else q(z|x)
    try:
      recon = mean(x, model.posterior(params, seen).mean, batch)
    except ConfigError:
      continue
    pairs = [to_rgb(batch[x], display), to_rgb(recon, display)]
    out["reconstructions"] = grid(np.concatenate(pairs, 2), cols)
    break
  for w in ws:
    w_spec = spec.modality(w)
    if w_spec.likelihood != "categorical" and len(w_spec.shape) != 1:
      continue
    # The kind of strip follows the modality, never the values drawn: labels (indices
    # or one-hot) as distributions; attributes by their side of the modality's
    # binary_threshold (1/2 for a {0, 1} coding, 0 for +-1).
    categorical = w_spec.likelihood == "categorical"
    centre = 0.0 if categorical else w_spec.binary_threshold
    truth = np.asarray(batch[w])
    if categorical:
      truth = truth if truth.ndim == 1 else np.argmax(truth, -1)
      shown = np.eye(w_spec.shape[0])[truth]
    else:
      truth = shown = truth.astype(np.float32) - centre
    try:
      pred = np.asarray(model.translate(params, next(keys), {x: batch[x]}, w, sample_z=False))
      out[f"{x}_to_{w}"] = grid(
          with_strips(batch[x], pred - centre, categorical, truth, display), cols)
    except ConfigError:
      pass
    try:
      # A decoder conditioned on w (CVAE) gets every modality it is conditioned on.
      given = {c: batch[c] for c in conditions} if w in conditions else {w: batch[w]}
      gen = np.asarray(model.translate(params, next(keys), given, x, sample_z=False))
      out[f"{w}_to_{x}"] = grid(with_strips(gen, shown, categorical, display=display), cols)
    except ConfigError:
      pass
  return out


def attribute_figures(model, params, batch: dict, names, chosen, rng, n: int = 6,
                      samples: int = 7, display=None) -> dict:
  """The paper's Figures 4 and 5 for a model of x and one attribute modality w:
  ``fig4_attributes_to_x``: per chosen attribute (rows, in order), the decoder mean from q(z|w)
  for the typical attribute vector of ``batch`` with that attribute on, then ``samples``
  draws (each column one noise for every row); ``fig5_edit_x``: per test image (rows), the
  image over its predicted attributes, then the image decoded again with each chosen
  attribute flipped (columns, in order)."""
  import jax
  from jmvae_jax import generate
  w_name = model.spec.w[0]
  w = np.asarray(batch[w_name])
  spec = model.spec.modality(w_name)
  on, off = (1.0, 0.0) if spec.binary_threshold else (1.0, -1.0)
  index = generate.attribute_index(names, chosen)
  base = generate.base_attributes(w - spec.binary_threshold)
  base = np.where(base > 0, on, off).astype(np.float32)
  rows = np.repeat(base[None], len(index), 0)
  rows[np.arange(len(index)), index] = on
  means, drawn = generate.from_attributes(model, params, rows, jax.random.fold_in(rng, 0),
                                          samples)
  tiles = np.concatenate([to_rgb(means, display)[:, None],
                          np.stack([to_rgb(d, display) for d in drawn])], 1)
  out = {f"fig4_attributes_to_{model.spec.x}": grid(tiles.reshape((-1,) + tiles.shape[2:]),
                                               samples + 1)}
  images = np.asarray(batch[model.spec.x])[:n]
  predicted, _ = generate.edit(model, params, images, {}, names)
  edits = []
  for i in index:   # each image's chosen attribute set to the other side of its prediction
    flip = np.where(predicted[:, i] > spec.binary_threshold, off, on).astype(np.float32)
    edited = generate.edit(model, params, images, {names[i]: flip}, names)[1]
    edits.append(to_rgb(edited, display))
  first = with_strips(images, predicted - spec.binary_threshold, False,
                      truth=w[:n] - spec.binary_threshold, display=display)
  pad = np.ones((len(images), first.shape[1] - edits[0].shape[1]) + edits[0].shape[2:],
                np.float32) if edits else None
  columns = [first] + [np.concatenate([e, pad], 1) for e in edits]
  out[f"fig5_edit_{model.spec.x}"] = grid(np.stack(columns, 1).reshape((-1,) + first.shape[1:]),
                                     len(columns))
  return out
