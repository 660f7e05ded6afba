"""A small MLP classifier x -> w: what ``coherence`` judges generated images with, trained
once on the train split and cached in the workdir."""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmvae_jax import distributions as D
from jmvae_jax import parallel
from jmvae_jax.errors import ConfigError

EXAMPLES = 20_000   # train examples the coherence classifier sees


def _mlp_init(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [{"w": jax.random.normal(k, (a, b), jnp.float32) * math.sqrt(2.0 / a),
           "b": jnp.zeros((b,), jnp.float32)} for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def hidden_features(layers, x):
  """The classifier's last hidden layer on inputs ``x`` [B, ...]."""
  h = x.reshape(x.shape[0], -1).astype(jnp.float32)
  for layer in layers[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  return h


def _mlp_apply(layers, x):
  return hidden_features(layers, x) @ layers[-1]["w"] + layers[-1]["b"]


def _classifier_loss(w_spec, layers, x, w):
  logits = _mlp_apply(layers, x)
  if w_spec.likelihood == "categorical":
    return -jnp.mean(D.categorical_log_prob(logits, w))
  target = (w > w_spec.binary_threshold).reshape(w.shape[0], -1).astype(jnp.float32)
  return -jnp.mean(D.bernoulli_log_prob(logits, target, 1))


def classify(w_spec, clf_params, x) -> jax.Array:
  """The classifier's prediction in w's data space: class probabilities (categorical),
  else attributes in (0, 1) or in (-1, 1) (sign = the attribute), by the modality's
  ``binary_threshold``."""
  logits = _mlp_apply(clf_params, x)
  if w_spec.likelihood == "categorical":
    return jax.nn.softmax(logits, axis=-1)
  out = jax.nn.sigmoid(logits) if w_spec.binary_threshold else jnp.tanh(0.5 * logits)
  return out.reshape((x.shape[0],) + w_spec.shape)


def train_classifier(x_spec, w_spec, x, w, *, hidden=(256,), epochs: int = 3,
                     batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0):
  """An MLP x -> w trained with Adam on arrays ``x`` [N, ...] and ``w`` [N, ...] (the
  train split) for ``epochs`` epochs; returns its params (a list of layers)."""
  x, w = np.asarray(x), np.asarray(w)
  if x.shape[1:] != x_spec.shape or x.shape[0] != w.shape[0]:
    raise ConfigError(f"train_classifier: x {x.shape} and w {w.shape} do not match "
                      f"modalities {x_spec.name!r} {x_spec.shape} / {w_spec.name!r}")
  if epochs <= 0 or batch_size <= 0 or x.shape[0] < batch_size:
    raise ConfigError(f"train_classifier: epochs={epochs}, batch_size={batch_size} need "
                      f"epochs > 0 and 0 < batch_size <= {x.shape[0]} examples")
  outputs = w_spec.shape[-1] if w_spec.likelihood == "categorical" else w_spec.size
  key = jax.random.key(seed)
  layers = _mlp_init(key, (x_spec.size,) + tuple(hidden) + (outputs,))
  opt = optax.adam(learning_rate)
  opt_state = opt.init(layers)

  @jax.jit
  def step(layers, opt_state, xb, wb):
    loss, grads = jax.value_and_grad(functools.partial(_classifier_loss, w_spec))(
        layers, xb, wb)
    updates, opt_state = opt.update(grads, opt_state, layers)
    return optax.apply_updates(layers, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  steps = x.shape[0] // batch_size
  for _ in range(epochs):
    order = rng.permutation(x.shape[0])
    for s in range(steps):
      idx = order[s * batch_size:(s + 1) * batch_size]
      layers, opt_state, _ = step(layers, opt_state, x[idx], w[idx])
  return layers


def _train_arrays(data, names, limit: int, batch_size: int) -> dict:
  rows = {n: [] for n in names}
  count = 0
  for batch in data.train_batches(0, min(batch_size, data.num_train)):
    for n in names:
      rows[n].append(batch[n])
    count += len(batch[names[0]])
    if count >= limit:
      break
  return {n: np.concatenate(v)[:limit] for n, v in rows.items()}


def coherence_classifier(model, data, workdir: str, target: str, seed: int):
  """The x -> ``target`` classifier, trained once on the train split and cached in the
  workdir. In a multi-process run process 0 trains and writes it, the others wait and
  read it, so every process holds the same classifier."""
  path = os.path.join(workdir, "classifiers", f"{model.spec.x}_to_{target}.npz")
  if jax.process_index() == 0 and not os.path.exists(path):
    arrays = _train_arrays(data, (model.spec.x, target), EXAMPLES, 128)
    layers = train_classifier(model.spec.modality(model.spec.x),
                                         model.spec.modality(target), arrays[model.spec.x],
                                         arrays[target], epochs=3, seed=seed,
                                         batch_size=min(128, len(arrays[target])))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flat = {}
    for i, layer in enumerate(layers):
      flat[f"w{i}"], flat[f"b{i}"] = np.asarray(layer["w"]), np.asarray(layer["b"])
    np.savez(path, **flat)
  parallel.barrier(f"classifier {path}")
  with np.load(path) as f:
    return [{"w": f[f"w{i}"], "b": f[f"b{i}"]} for i in range(len(f.files) // 2)]
