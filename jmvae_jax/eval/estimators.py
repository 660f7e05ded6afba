"""Importance-sampled test log-likelihoods (the paper's Appendix B), vectorised and jitted.

Estimators with the same proposal share one pass (one draw of z, one decoder pass per
modality; ``plan``). A pass walks the k samples in chunks of ``chunk_size`` inside a
``fori_loop`` carrying a running log-sum-exp (max, sum exp, sum exp^2) per example, so
memory is bounded for any k, and k is a traced value (one compilation for every k).
Sample j of example i is drawn from ``fold_in(fold_in(stream, i), j)``, where i is the
example's index in the test set: the numbers do not depend on batch size, chunking,
padding or the device count. The per-batch function is a pure ``jax.jit`` function
whose arrays all carry the batch axis first, so it runs unchanged with the batch
sharded over a ``Mesh`` (``PartitionSpec('data')``); ``estimate`` runs it over the test
set through the one masked loop (``loop.run``).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jmvae_jax import distributions as D
from jmvae_jax import schema
from jmvae_jax.errors import ConfigError
from jmvae_jax.eval import loop
from jmvae_jax.eval.plan import Pass, Plan, make_plan
from jmvae_jax.networks import conv_impl

_TABLE_STREAM = 1 << 20   # rng stream of the log p(w) table; passes use 0 .. 2^M - 1


def options(**values) -> dict:
  """Evaluation options (k, prior_samples, chunk_size, seed, ...) checked against the
  schema of ``config.eval``; a one-line ConfigError naming ``config.eval.FIELD``."""
  return schema.check_fields("config.eval", schema.EVAL, values)


def _lse_init(shape, dtype):
  return (jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _lse_update(carry, a):
  """Adds the log-weights ``a`` [..., chunk] (-inf for masked samples) to (max, s1, s2)."""
  m, s1, s2 = carry
  m_new = jnp.maximum(m, jnp.max(a, axis=-1))
  shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
  r = jnp.exp(m - shift)
  e = jnp.exp(a - shift[..., None])
  return m_new, s1 * r + jnp.sum(e, axis=-1), s2 * r * r + jnp.sum(e * e, axis=-1)


def _lse_finish(carry, count):
  """(log mean exp, Monte-Carlo standard error of it by the delta method)."""
  m, s1, s2 = carry
  shift = jnp.where(jnp.isfinite(m), m, 0.0)
  n = jnp.asarray(count, s1.dtype)
  value = jnp.log(s1) + shift - jnp.log(n)
  rel_var = jnp.maximum(s2 / jnp.square(s1) - 1.0 / n, 0.0)
  return value, jnp.sqrt(rel_var)


def _normal(key, j, dim):
  """Standard normal draws [len(j), dim], sample j from fold_in(key, j); float32 always,
  so a float64 re-computation sees the same numbers."""
  return jax.vmap(lambda jj: jax.random.normal(jax.random.fold_in(key, jj), (dim,),
                                               jnp.float32))(j)


def _add_sample_axis(batch):
  return {n: v[:, None] for n, v in batch.items()}


def _dtype(params):
  return jnp.result_type(*jax.tree.leaves(params))


def _run_pass(model, p: Pass, params, batch, keys, count, chunk):
  """{term name: (value [B], mc_stderr [B])} for one pass over ``count`` samples."""
  spec = model.spec
  dtype = _dtype(params)
  n_ex = keys.shape[0]
  q = None if p.proposal is None else model.posterior(
      params, {n: batch[n] for n in p.proposal})
  prior = model.encode(params, p.prior, batch) if p.prior else None
  decoders = sorted({n for t in p.terms for n in t.targets})
  per_sample = _add_sample_axis(batch)
  if q is not None:
    scale = jnp.exp(0.5 * q.logvar)[:, None]
    lq_const = -0.5 * jnp.sum(D.LOG_2PI + q.logvar, axis=-1)[:, None]

  def body(c, carry):
    j = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
    eps = jax.vmap(lambda key: _normal(key, j, spec.latent_dim))(keys).astype(dtype)
    if q is None:
      z, log_ratio = eps, 0.0
    else:
      z = q.mean[:, None] + scale * eps
      lq = lq_const - 0.5 * jnp.sum(jnp.square(eps), axis=-1)
      if prior is None:
        lp = D.standard_normal_log_prob(z)
      else:
        lp = D.log_prob(D.DiagGaussian(prior.mean[:, None], prior.logvar[:, None]), z)
      log_ratio = lp - lq
    ll = {n: model.log_likelihood(params, n, z, per_sample[n], per_sample) for n in decoders}
    valid = (j < count)[None, :]
    out = []
    for t, acc in zip(p.terms, carry):
      a = sum(ll[n] for n in t.targets) + log_ratio
      out.append(_lse_update(acc, jnp.where(valid, a, -jnp.inf)))
    return tuple(out)

  init = tuple(_lse_init((n_ex,), dtype) for _ in p.terms)
  n_chunks = (count + chunk - 1) // chunk
  carry = jax.lax.fori_loop(0, n_chunks, body, init)
  return {t.name: _lse_finish(acc, count) for t, acc in zip(p.terms, carry)}


def table_values(model, params, name, prior_samples, seed, *, chunk_size):
  """log p(w = c) for every class c of the categorical modality ``name``:
  (values [C], mc_stderr [C]) from ``prior_samples`` draws of p(z), shared by all c."""
  classes = model.spec.modality(name).shape[-1]
  key = jax.random.fold_in(jax.random.key(seed), _TABLE_STREAM)
  dtype = _dtype(params)

  def body(c, carry):
    j = c * chunk_size + jnp.arange(chunk_size, dtype=jnp.int32)
    z = _normal(key, j, model.spec.latent_dim).astype(dtype)
    logits = model.decode(params, name, z)
    a = jax.nn.log_softmax(logits, axis=-1).T           # [C, chunk]
    return _lse_update(carry, jnp.where((j < prior_samples)[None, :], a, -jnp.inf))

  n_chunks = (prior_samples + chunk_size - 1) // chunk_size
  carry = jax.lax.fori_loop(0, n_chunks, body, _lse_init((classes,), dtype))
  return _lse_finish(carry, prior_samples)


def _gather_table(table, labels):
  """The table's entries of integer (or one-hot) labels, as a one-hot product: no
  gather, so it keeps the batch sharding under explicit mesh axes."""
  value, se = table
  if jnp.issubdtype(labels.dtype, jnp.integer):
    labels = jax.nn.one_hot(labels, value.shape[-1], dtype=value.dtype)
  return jnp.sum(labels * value, axis=-1), jnp.sum(labels * se, axis=-1)


def batch_values(model, plan: Plan, params, batch, index, mask, tables, k, prior_samples,
                 seed, *, chunk_size):
  """Per-example estimates of one batch: ({name: [B]}, {name: Monte-Carlo stderr [B]}).

  ``index`` [B] int32: each example's index in the test set (its rng stream);
  ``mask`` [B]: 0 for padding rows, whose values are set to 0; ``tables``: {name:
  (values [C], stderr [C])} from ``table_values`` for the plan's tables.
  """
  base = jax.random.key(seed)
  counts = {"k": k, "prior_samples": prior_samples}
  res = {}
  for p in plan.passes:
    stream = jax.random.fold_in(base, p.stream)
    keys = jax.vmap(lambda i: jax.random.fold_in(stream, i))(index)
    res.update(_run_pass(model, p, params, batch, keys, counts[p.count], chunk_size))
  for name, m in plan.tables:
    res[name] = _gather_table(tables[name], batch[m])
  for name, a, b in plan.differences:
    res[name] = (res[a][0] - res[b][0], jnp.sqrt(jnp.square(res[a][1]) + jnp.square(res[b][1])))
  keep = mask.astype(bool)
  values = {n: jnp.where(keep, res[n][0], 0.0) for n in plan.names}
  stderr = {n: jnp.where(keep, res[n][1], 0.0) for n in plan.names}
  return values, stderr


@functools.lru_cache(maxsize=64)
def batch_fn(model, plan: Plan, chunk_size: int):
  """The jitted ``batch_values`` with model, plan and chunk size bound:
  ``fn(params, batch, index, mask, tables, k, prior_samples, seed)``; k, prior_samples
  and seed are traced, so one compilation serves every k."""
  return jax.jit(functools.partial(batch_values, model, plan, chunk_size=chunk_size))


@functools.lru_cache(maxsize=64)
def _table_fn(model, name: str, chunk_size: int):
  return jax.jit(functools.partial(table_values, model, name=name, chunk_size=chunk_size))


def make_tables(model, plan: Plan, params, *, prior_samples, chunk_size, seed) -> dict:
  """The log p(w) tables the plan gathers from: {estimator: (values [C], stderr [C])}."""
  return {name: _table_fn(model, m, chunk_size)(params, prior_samples=np.int32(prior_samples),
                                                seed=np.int32(seed))
          for name, m in plan.tables}


def per_example(model, params, batch, mask=None, *, k, prior_samples, chunk_size, seed,
                estimators=None, index=None, tables=None):
  """Convenience: per-example ({name: values}, {name: mc_stderr}) for one batch as
  numpy arrays. ``index`` defaults to 0..B-1 (the examples' rng streams)."""
  options(k=k, prior_samples=prior_samples, chunk_size=chunk_size, seed=seed)
  plan = make_plan(model, estimators)
  model.check_batch(batch, plan.inputs, "batch")
  size = loop.batch_size(model, batch, plan)
  mask = np.ones(size, np.float32) if mask is None else np.asarray(mask, np.float32)
  index = np.arange(size, dtype=np.int32) if index is None else np.asarray(index, np.int32)
  if tables is None:
    tables = make_tables(model, plan, params, prior_samples=prior_samples,
                         chunk_size=chunk_size, seed=seed)
  values, stderr = batch_fn(model, plan, chunk_size)(
      params, {n: batch[n] for n in plan.inputs}, index, mask, tables,
      np.int32(k), np.int32(prior_samples), np.int32(seed))
  return jax.tree.map(np.asarray, (values, stderr))


def _activation_floats(spec) -> int:
  """Floats a decoder of ``spec`` keeps per row: its hidden activations and output, and
  for the convolution stack where it runs as matmuls (a CPU), the largest patch matrix
  (networks.conv_up_matmul: (h + 1)^2 windows of 4 x channels for an h x h input)."""
  out = math.prod(spec.param_shape)
  if spec.network == "conv64":
    ups = tuple(reversed(spec.filters[:-1]))
    maps = sum((8 * 2 ** i) ** 2 * f for i, f in enumerate(ups))
    patches = 0
    if conv_impl() == "matmul":
      sides = (4 * 2 ** i for i in range(len(ups) + 1))       # each layer's input side
      patches = max((h + 1) ** 2 * 4 * c for h, c in zip(sides, (spec.filters[-1],) + ups))
    return spec.dense + 16 * spec.filters[-1] + maps + patches + out
  return sum(spec.decoder_hidden) + out


def suggest_chunk_size(model, plan: Plan, *, batch_size: int, k: int,
                       memory_budget_mb: float) -> int:
  """The chunk whose per-step activations (batch_size x chunk rows, each holding the
  decoders' activations and a few latent vectors in float32) fit the budget, evened
  out so the chunks split k with the least padding. An estimate: for the MLPs an upper
  bound (XLA reuses buffers: for the MNIST joint pass its own count is about half of
  this); for CelebA on a CPU XLA counts 1.8 MB a row against 1.7 estimated. Buffers that
  do not grow with the chunk come on top: on a CPU, CelebA's transposed-convolution
  kernels rearranged for their matmuls add about 10 MB."""
  row = 0
  for p in plan.passes:
    names = {n for t in p.terms for n in t.targets}
    width = sum(_activation_floats(model.spec.modality(n)) for n in names)
    row = max(row, 4 * (width + 4 * model.spec.latent_dim))
  most = max(1, int(memory_budget_mb * 2**20 // (row * batch_size)))
  steps = math.ceil(k / most)
  return math.ceil(k / steps)


# ----------------------------------------------------------------------------
# The host loop: checks, example indices, sharding, accumulation, progress.

def estimate(model, params, batches: Iterable, *, k: int, prior_samples: int,
             chunk_size: int, seed: int, estimators=None,
             progress: Callable[[str], Any] | None = None, mesh="auto",
             total: int | None = None, matmul_precision: str = "highest") -> dict:
  """Importance-sampled test log-likelihoods over ``batches`` of (batch, mask).

  Returns {"k", "prior_samples", "num_examples", "seconds", "matmul_precision",
  "estimates": {name: {"mean", "stderr", "mc_stderr"}}}: ``stderr`` over test examples,
  ``mc_stderr`` the root-mean-square per-example Monte-Carlo error (small when k suffices).
  ``mesh``: 'auto' shards the batch over every device; None runs unsharded.
  ``progress`` gets one line per batch (with an ETA when ``total`` examples or
  ``len(batches)`` is known). ``matmul_precision`` ("highest": float32 products) is
  jax's ``default_matmul_precision`` for every matmul of the estimate: a GPU's default
  uses TF32, which moves the estimates (BUILD_NOTES.md).
  """
  opts = options(k=k, prior_samples=prior_samples, chunk_size=chunk_size, seed=seed,
                 matmul_precision=matmul_precision)
  plan = make_plan(model, estimators)
  mesh = loop.default_mesh() if mesh == "auto" else mesh
  state = {}
  consts = (np.int32(k), np.int32(prior_samples), np.int32(seed))

  @jax.default_matmul_precision(matmul_precision)
  def call(batch, index, mask):
    if "fn" not in state:   # only once the first batch has passed its checks
      state["fn"] = batch_fn(model, plan, opts["chunk_size"])
      state["params"] = loop.replicate(mesh, params)
      state["tables"] = loop.replicate(mesh, make_tables(
          model, plan, params, prior_samples=prior_samples, chunk_size=chunk_size, seed=seed))
    values, stderr = state["fn"](state["params"], batch, index, mask, state["tables"], *consts)
    return dict(values, **{f"{n}@mc": jnp.square(s) for n, s in stderr.items()})

  sums, sqs, count, seconds = loop.run(model, batches, plan.inputs, call, mesh=mesh,
                                       progress=progress, total=total, what="iw-eval")
  if count == 0:
    raise ConfigError("iw-eval: the batches held no (unmasked) examples")
  summary = loop.summary({n: sums[n] for n in plan.names}, sqs, count)
  for n in plan.names:
    summary[n]["mc_stderr"] = float(math.sqrt(sums[f"{n}@mc"] / max(count, 1)))
  return {"k": int(k), "prior_samples": int(prior_samples), "num_examples": count,
          "seconds": seconds, "matmul_precision": matmul_precision, "estimates": summary}
