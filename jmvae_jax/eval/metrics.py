"""Cross-modal metrics, as later multimodal-VAE papers report them.

``cross_modal_accuracy`` predicts w from x through q(z | x) and p(w | z) at the posterior
mean; ``round_trip_accuracy`` goes w -> x -> w; ``coherence`` generates x from w and asks
a classifier (``classifier``) whether the result shows w. Each runs through the one
masked loop (``loop.run``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jmvae_jax import schema
from jmvae_jax.errors import ConfigError
from jmvae_jax.eval import loop
from jmvae_jax.eval.classifier import classify
from jmvae_jax.eval.plan import encoder_for

_COHERENCE_STREAM = (1 << 20) + 1   # rng stream of the generations judged


def agreement(spec, pred, true) -> jax.Array:
  """Per-example agreement of a prediction in w's data space with the truth ``true``:
  categorical (probabilities): argmax equals the label; attributes: both on the same
  side of the modality's ``binary_threshold`` (0 for +-1, 1/2 for {0, 1}), averaged."""
  if spec.likelihood == "categorical":
    label = true if jnp.issubdtype(true.dtype, jnp.integer) else jnp.argmax(true, axis=-1)
    return (jnp.argmax(pred, axis=-1) == label).astype(jnp.float32)
  same = (pred > spec.binary_threshold) == (true > spec.binary_threshold)
  return jnp.mean(same.astype(jnp.float32), axis=tuple(range(1, pred.ndim)))


@functools.lru_cache(maxsize=32)
def _metric_fn(fn, *static):
  """``fn`` jitted with its static leading arguments bound, compiled once per model."""
  return jax.jit(functools.partial(fn, *static))


def _accuracy_values(model, targets, params, batch, index, mask):
  del index
  x = model.spec.x
  z = model.posterior(params, {x: batch[x]}).mean
  return {t: jnp.where(mask > 0, agreement(model.spec.modality(t),
                                           model.generate(params, t, z), batch[t]), 0.0)
          for t in targets}


def cross_modal_targets(model) -> tuple[str, ...]:
  """The w modalities this model can predict from x: q(z | x) and p(w | z) exist."""
  dec = dict(model.spec.decoders)
  if encoder_for(model, (model.spec.x,)) is None:
    return ()
  return tuple(t for t in model.spec.w if dec.get(t) == ())


def _round_trip_values(model, targets, params, batch, index, mask):
  """w -> x -> w through the decoders' means: x generated from q(z | w), read back
  through q(z | x); agreement with the original w."""
  del index
  x = model.spec.x
  out = {}
  for t in targets:
    image = model.generate(params, x, model.posterior(params, {t: batch[t]}).mean)
    back = model.generate(params, t, model.posterior(params, {x: image}).mean)
    out[t] = jnp.where(mask > 0, agreement(model.spec.modality(t), back, batch[t]), 0.0)
  return out


def _masked_metric(values_fn, what, model, params, batches, mesh, progress) -> dict:
  """{w: {"mean", "stderr"}} of ``values_fn`` over the cross-modal targets."""
  targets = cross_modal_targets(model)
  if not targets:
    return {}
  mesh = loop.default_mesh() if mesh == "auto" else mesh
  fn = _metric_fn(values_fn, model, targets)
  state = {}

  def call(batch, index, mask):
    state.setdefault("params", loop.replicate(mesh, params))
    return fn(state["params"], batch, index, mask)

  inputs = tuple(n for n in model.spec.names if n == model.spec.x or n in targets)
  sums, sqs, count, _ = loop.run(model, batches, inputs, call, mesh=mesh, progress=progress,
                              total=None, what=what)
  return loop.summary(sums, sqs, count)


def cross_modal_accuracy(model, params, batches, *, mesh="auto", progress=None) -> dict:
  """Accuracy of predicting each w from x: z = mean of q(z | x), w = the mean of
  p(w | z); {w: {"mean", "stderr"}}, empty if the model cannot."""
  return _masked_metric(_accuracy_values, "cross-modal accuracy", model, params, batches,
                        mesh, progress)


def round_trip_accuracy(model, params, batches, *, mesh="auto", progress=None) -> dict:
  """Accuracy of w -> x -> w (each through the posterior mean and the decoder mean);
  {w: {"mean", "stderr"}}, empty if the model cannot infer from x alone."""
  return _masked_metric(_round_trip_values, "round-trip accuracy", model, params, batches,
                        mesh, progress)


def _coherence_values(model, target, sample_z, params, clf, seed, batch, index, mask):
  spec = model.spec
  stream = jax.random.fold_in(jax.random.key(seed), _COHERENCE_STREAM)
  cond = {n: batch[n] for n in spec.w}

  def one(i, ex):
    rng = jax.random.fold_in(stream, i)
    one_batch = jax.tree.map(lambda a: a[None], ex)
    return model.translate(params, rng, one_batch, spec.x, sample_z=sample_z)[0]

  generated = jax.vmap(one)(index, cond)
  pred = classify(spec.modality(target), clf, generated)
  return {target: jnp.where(mask > 0, agreement(spec.modality(target), pred, batch[target]),
                            0.0)}


def coherence(model, params, clf_params, batches, *, target=None, seed: int = 0,
              sample_z: bool = True, mesh="auto", progress=None) -> dict:
  """w -> x coherence: x generated from every w (z ~ q(z | w), or the model's prior for
  CVAE), then the classifier of ``target`` (default: the first w) must recover it.
  Returns {"mean", "stderr"}; the draws follow the example index, as in ``estimate``."""
  spec = model.spec
  target = target or spec.w[0]
  if target not in spec.w:
    raise ConfigError(f"coherence: target={target!r} is not one of the w modalities {spec.w}")
  schema.check_fields("config.eval", schema.EVAL, {"seed": seed})
  mesh = loop.default_mesh() if mesh == "auto" else mesh
  fn = _metric_fn(_coherence_values, model, target, sample_z)
  state = {}

  def call(batch, index, mask):
    if "params" not in state:
      state["params"] = loop.replicate(mesh, params)
      state["clf"] = loop.replicate(mesh, clf_params)
    return fn(state["params"], state["clf"], np.int32(seed), batch, index, mask)

  sums, sqs, count, _ = loop.run(model, batches, spec.w, call, mesh=mesh, progress=progress,
                              total=None, what="coherence")
  return loop.summary(sums, sqs, count)[target]
