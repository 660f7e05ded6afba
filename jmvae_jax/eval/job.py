"""The evaluation job (``launch.py --mode=evaluate``): restore, estimate, report.

Restores the latest checkpoint of a workdir, estimates every test log-likelihood the
model can compute with k importance samples (``estimators``), measures the cross-modal
accuracy and the w-to-x coherence (``metrics``; judged by a classifier trained once on
the train split and cached in ``WORKDIR/classifiers``), writes ``WORKDIR/evaluation.json``
and prints a table in the layout of the paper's Table 1.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from jmvae_jax import restore, schema
from jmvae_jax.errors import ConfigError
from jmvae_jax.eval import classifier, estimators, gan_metrics, inception, metrics, report


def check_test_split(model, data) -> None:
  """A one-line error if the dataset lacks a modality the model declares."""
  missing = [n for n in model.spec.names if n not in data.modalities]
  if missing:
    raise ConfigError(f"the test split of {data.name!r} has no modality {missing[0]!r}; it has "
                      f"{sorted(data.modalities)} (config.model.modalities must match the data)")


def generates_x_from_w(model, params, modalities: dict) -> bool:
  """Whether ``model`` can generate x from its w modalities, traced (not run) on one
  example of the data's ``modalities`` ({name: (shape, dtype)}, as a Dataset declares
  them): a VAE cannot, so no classifier is trained for its coherence."""
  if not model.spec.w:   # a model of x alone
    return False
  cond = {n: jax.ShapeDtypeStruct((1,) + tuple(modalities[n][0]), modalities[n][1])
          for n in model.spec.w}
  try:
    jax.eval_shape(lambda p, c: model.translate(p, jax.random.PRNGKey(0), c, model.spec.x),
                   params, cond)
  except ConfigError:
    return False
  return True


def _every(seconds: float, log):
  """A progress callback that passes a line on at most every ``seconds``, and the last."""
  last = [0.0]

  def progress(line: str) -> None:
    now = time.time()
    if log and (now - last[0] >= seconds or "ETA 0 s" in line):
      last[0] = now
      log(line)
  return progress


def image_metrics(model, params, data, workdir, batch_size, seed) -> dict:
  """For an image x: the Frechet distance of generated images (in the features of the
  classifier of x, where the data has a w to train it on); for a GAN, how often its
  discriminator is right about held-out images."""
  from jmvae_jax import gan
  out = {}
  x = model.spec.modality(model.spec.x)
  if len(x.shape) == 3 and model.spec.w:
    clf = classifier.coherence_classifier(model, data, workdir, model.spec.w[0], seed)
    fds = gan_metrics.frechet_distances(model, params, clf, data.test_batches(batch_size),
                                        seed=seed)
    out["frechet_distance"], out["frechet_distance_from_w"] = fds["prior"], fds["from_w"]
  if isinstance(model, gan.GanModel):
    out["discriminator_accuracy"] = gan_metrics.discriminator_accuracy(
        model, params, data.test_batches(batch_size), seed=seed)
  return out


def inception_fid(model, params, data, opts) -> dict:
  """The standard FID from the SavedModel at ``config.eval.inception_path`` (if any), for
  a model of an image."""
  if not opts.inception_path or len(model.spec.modality(model.spec.x).shape) != 3:
    return {}
  value = inception.fid(model, params, data.test_batches(opts.batch_size), opts.inception_path,
                        seed=opts.seed, display=data.display)
  return {"fid_inception": {"value": value, "model": opts.inception_path}}


def attribute_figures(model, params, data, workdir, opts) -> list[str]:
  """The paper's Figures 4 and 5 (figures.attribute_figures) in WORKDIR/figures, for a
  model of x and one attribute vector w on a dataset that names its attributes."""
  from jmvae_jax import figures
  w = model.spec.w
  if (len(w) != 1 or not data.attribute_names or len(model.spec.modality(model.spec.x).shape)
      != 3 or model.spec.modality(w[0]).likelihood == "categorical"
      or not generates_x_from_w(model, params, data.modalities)):
    return []
  chosen = tuple(opts.figure_attributes) or tuple(data.attribute_names[:3])
  # A few images, drawn eagerly: from a host copy of the (replicated) parameters, so
  # the eager calls run on one local device whatever mesh the training used.
  params = jax.tree.map(np.asarray, params)
  batch, real = next(iter(data.test_batches(16)))
  batch = {k: v[np.asarray(real, bool)] for k, v in batch.items()}
  drawn = figures.attribute_figures(model, params, batch, data.attribute_names, chosen,
                                    jax.random.PRNGKey(opts.seed), display=data.display)
  out = os.path.join(workdir, "figures")
  if jax.process_index() != 0:
    return []
  os.makedirs(out, exist_ok=True)
  return [figures.write_png(os.path.join(out, f"{name}.png"), image)
          for name, image in drawn.items()]


def evaluate_workdir(config, workdir: str, log=print) -> dict:
  """Evaluates the latest checkpoint in ``workdir``; writes and returns the results.
  ``log`` gets the progress lines and the table (None: silent)."""
  log = log or (lambda line: None)
  from jmvae_jax import data as data_lib
  c = schema.check(config)          # bad k etc.: before anything heavy
  if os.path.isdir(workdir) and not os.access(workdir, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={workdir!r} cannot be written: the evaluation writes "
                      "evaluation.json, classifiers/ and figures/ there")
  opts = c.eval
  if opts.inception_path:
    inception.check_path(opts.inception_path)
  model, _, state, _ = restore.load_trained(config, workdir)
  data = data_lib.load(c.data, c.seed)
  check_test_split(model, data)
  step, params = int(state.step), state.params
  batch_size = opts.batch_size
  log(f"evaluating step {step} of {workdir} on {data.num_test} test examples, k={opts.k}")
  t0 = time.time()
  result = estimators.estimate(
      model, params, data.test_batches(batch_size), k=opts.k,
      prior_samples=opts.prior_samples, chunk_size=opts.chunk_size, seed=opts.seed,
      estimators=tuple(opts.estimators) or None, progress=_every(10.0, log),
      total=data.num_test, matmul_precision=opts.matmul_precision)
  bad = sorted(n for n, e in result["estimates"].items() if not np.isfinite(e["mean"]))
  if bad:   # an error, never a result
    from jmvae_jax.train import NonFiniteLoss
    raise NonFiniteLoss(f"non-finite estimate ({', '.join(bad)}) of step {step} in {workdir}; "
                        "evaluation.json was not written")
  result["step"] = step
  # How each modality's log p(.|z) was reduced over its values (config ...reduction):
  # "sum" is the density; "channel_mean" the authors' CelebA numbers (1/C of it).
  result["log_likelihood_reduction"] = {m.name: m.reduction for m in model.spec.modalities}
  result["cross_modal_accuracy"] = metrics.cross_modal_accuracy(
      model, params, data.test_batches(batch_size))
  result["round_trip_accuracy"] = metrics.round_trip_accuracy(
      model, params, data.test_batches(batch_size))
  result["coherence"] = {}
  for target in model.spec.w if generates_x_from_w(model, params, data.modalities) else ():
    if model.spec.modality(target).likelihood == "categorical" or \
        len(model.spec.modality(target).shape) == 1:
      clf = classifier.coherence_classifier(model, data, workdir, target, opts.seed)
      result["coherence"][target] = metrics.coherence(
          model, params, clf, data.test_batches(batch_size), target=target,
          seed=opts.seed)
  result.update(image_metrics(model, params, data, workdir, batch_size, opts.seed))
  result.update(inception_fid(model, params, data, opts))
  for path in attribute_figures(model, params, data, workdir, opts):
    log(f"figure: {path}")
  result["total_seconds"] = time.time() - t0
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
      json.dump(result, f, indent=2, sort_keys=True, default=float)
  log(report.markdown_table(result))
  for w, v in result["cross_modal_accuracy"].items():
    log(f"{model.spec.x} -> {w} accuracy: {v['mean']:.4f} +- {v['stderr']:.4f}")
  for w, v in result["round_trip_accuracy"].items():
    log(f"{w} -> {model.spec.x} -> {w} accuracy: {v['mean']:.4f} +- {v['stderr']:.4f}")
  for w, v in result["coherence"].items():
    log(f"{w} -> {model.spec.x} coherence: {v['mean']:.4f} +- {v['stderr']:.4f}")
  if "frechet_distance" in result:
    log(f"Frechet distance of generated {model.spec.x}s (the classifier's features): "
        f"{result['frechet_distance']:.4g} from the prior, "
        f"{result['frechet_distance_from_w']:.4g} from each test example's w")
  if "fid_inception" in result:
    log(f"FID of generated {model.spec.x}s (Inception features from "
        f"{opts.inception_path}): {result['fid_inception']['value']:.4g}")
  for k, v in result.get("discriminator_accuracy", {}).items():
    log(f"discriminator right about {k} images: {v['mean']:.4f} +- {v['stderr']:.4f}")
  log(f"wrote {os.path.join(workdir, 'evaluation.json')}")
  return result
