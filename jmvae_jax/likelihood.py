"""Importance-sampled test log-likelihoods (the paper's Appendix B) and cross-modal metrics.

For a test pair (x, w) and proposals z_1..z_k ~ q, every estimator is
``logmeanexp_i [sum_{n in T} log p(x_n | z_i) + log p(z_i) - log q(z_i)]`` for a target
set T and a proposal q (Burda et al. 2015); the names follow the paper's Table 1:

* ``joint``                 log p(x, w), q(z | x, w)
* ``marginal_multiple``     log p(x),    q(z | x, w)
* ``marginal_single``       log p(x),    q(z | x)
* ``log_p_w``               log p(w) = logmeanexp_j log p(w | z_j), z_j ~ p(z), N_p samples
* ``conditional_multiple``  log p(x | w) = joint - log_p_w
* ``conditional_single``    [T = {x, w}, q(z | w)] - log_p_w

x is ``model.spec.x``; w are the other modalities. Taking another modality m as "x"
gives the same estimators named ``NAME/m`` (by default the two marginals; the
conditionals on request). Baselines: VAE gets ``marginal_single``; CVAE gets
``conditional_multiple`` with its decoder p(x | z, w) and prior N(0, I); CMMA gets
``conditional_multiple`` with its learned prior p(z | w) (the encoder of w).

How it runs: estimators with the same proposal share one pass (one draw of z, one
decoder pass per modality). A pass walks the k samples in chunks of ``chunk_size``
inside a ``fori_loop`` carrying a running log-sum-exp (max, sum exp, sum exp^2) per
example, so memory is bounded for any k, and k is a traced value (one compilation
for every k). Sample j of example i is drawn from ``fold_in(fold_in(stream, i), j)``,
where i is the example's index in the test set: the numbers do not depend on batch
size, chunking, padding or the device count. The per-batch function is a pure
``jax.jit`` function whose arrays all carry the batch axis first, so it runs
unchanged with the batch sharded over a ``Mesh`` (``PartitionSpec('data')``).

When w is a single categorical modality (integer or one-hot labels), log p(w) takes
only C values: they are computed once (a table from N_p prior samples) and gathered.

API: ``estimate`` (test-set means over (batch, mask) pairs), ``markdown_table`` (Table
1's layout), ``per_example`` / ``batch_fn`` (the jitted per-batch function: values
and Monte-Carlo errors per example), ``make_plan`` / ``estimator_names`` /
``default_estimators``, ``eval_config`` / ``eval_options`` (``config.eval``),
``suggest_chunk_size``; ``cross_modal_accuracy``, ``train_classifier``, ``classify``,
``coherence``.

Cross-modal metrics (as later multimodal-VAE papers report them):
``cross_modal_accuracy`` predicts w from x through q(z | x) and p(w | z) at the
posterior mean; ``coherence`` generates x from w and asks a classifier trained by
``train_classifier`` whether the result shows w.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jmvae_jax import distributions as D
from jmvae_jax import parallel
from jmvae_jax.errors import ConfigError, allowed, is_int
from jmvae_jax.networks import conv_impl

_TABLE_STREAM = 1 << 20   # rng stream of the log p(w) table; passes use 0 .. 2^M - 1


# ----------------------------------------------------------------------------
# Config: the ``eval`` section and its validation.
# ----------------------------------------------------------------------------

def eval_config() -> ml_collections.ConfigDict:
  """Defaults of ``config.eval`` (the authors: k = 1000 at evaluation, 5000 prior samples)."""
  e = ml_collections.ConfigDict()
  e.k = 5000               # importance samples per test example
  e.prior_samples = 5000   # N_p: prior samples for log p(w)
  e.chunk_size = 125       # samples per example per step: memory ~ batch * chunk * width
  e.batch_size = 16        # test examples per call (padded to the device count); on a
                           # CPU, batch * chunk ~ 2000 rows per step runs fastest
  e.seed = 0
  e.estimators = ()        # () = every estimator the model can compute by default
  e.matmul_precision = "highest"   # float32 products; "default" lets a GPU use TF32 (faster,
                           # moves log-likelihoods; BUILD_NOTES.md); no effect on a CPU
  return e


MATMUL_PRECISIONS = ("highest", "high", "default")


def _positive_int(field: str, value) -> int:
  if not is_int(value) or value <= 0:
    raise ConfigError(f"config.eval.{field}={value!r} must be an int > 0")
  return int(value)


def check_options(*, k, prior_samples, chunk_size, seed, batch_size=1,
                  matmul_precision="highest") -> dict:
  """Validated evaluation options; a one-line ConfigError naming ``config.eval.FIELD``."""
  opts = {f: _positive_int(f, v) for f, v in
          dict(k=k, prior_samples=prior_samples, chunk_size=chunk_size,
               batch_size=batch_size).items()}
  if not is_int(seed) or not 0 <= seed < 2**31:
    raise ConfigError(f"config.eval.seed={seed!r} must be an int in [0, 2**31)")
  if matmul_precision not in MATMUL_PRECISIONS:
    raise allowed("config.eval.matmul_precision", matmul_precision, MATMUL_PRECISIONS)
  return dict(opts, seed=int(seed), matmul_precision=matmul_precision)


def eval_options(config) -> dict:
  """``config.eval`` (defaults for missing fields) as validated keyword options:
  k, prior_samples, chunk_size, batch_size, seed, matmul_precision, estimators. Other
  fields of the section (the training loop's) are left alone."""
  cfg = dict(eval_config())
  section = config.get("eval", None) or {}
  cfg.update(section.to_dict() if hasattr(section, "to_dict") else dict(section))
  opts = check_options(k=cfg["k"], prior_samples=cfg["prior_samples"],
                       chunk_size=cfg["chunk_size"], seed=cfg["seed"],
                       batch_size=cfg["batch_size"], matmul_precision=cfg["matmul_precision"])
  names = cfg["estimators"]
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    raise ConfigError(f"config.eval.estimators={names!r} must be a tuple of names")
  return dict(opts, estimators=tuple(names) or None)


# ----------------------------------------------------------------------------
# The plan: which estimators a model can compute, grouped into shared passes.
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Term:
  """One running log-mean-exp: the weight adds log p(x_n | z) for n in ``targets``."""
  name: str
  targets: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Pass:
  """One draw of z shared by its terms. ``proposal``: the modalities q(z | .) sees
  (None: the prior, whose density then cancels); ``prior``: () for N(0, I), else the
  encoder subset of a learned prior p(z | .) (CMMA); ``count``: 'k' or 'prior_samples'."""
  proposal: tuple[str, ...] | None
  prior: tuple[str, ...]
  count: str
  stream: int
  terms: tuple[Term, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static (hashable) description of an evaluation; built by ``make_plan``."""
  names: tuple[str, ...]                       # estimator names, in output order
  passes: tuple[Pass, ...]
  tables: tuple[tuple[str, str], ...]          # (estimator, categorical modality)
  differences: tuple[tuple[str, str, str], ...]  # (name, a, b): a - b
  inputs: tuple[str, ...]                      # modalities a batch must hold


def _stream(spec, subset) -> int:
  """A fixed rng stream per proposal: a bit mask of the modalities it sees."""
  if subset is None:
    return 0
  return sum(1 << i for i, n in enumerate(spec.names) if n in subset)


def _encoder_for(model, present):
  try:
    return model.posterior_encoder(present)
  except ConfigError:
    return None


def _model_kind(model) -> str:
  """'cvae' (x decoded from z and w), 'cmma' (learned prior p(z | w), no w decoder),
  or 'joint' (every decoder sees z only, prior N(0, I): the JMVAE family and VAE)."""
  spec = model.spec
  dec = dict(spec.decoders)
  w = tuple(sorted(spec.w))
  if w and dec.get(spec.x) == w:
    return "cvae"
  if w and dec.get(spec.x) == () and not set(w) & set(dec) and w in spec.encoders:
    return "cmma"
  return "joint"


def _categorical_label(model, names) -> str | None:
  if len(names) == 1 and model.spec.modality(names[0]).likelihood == "categorical":
    return names[0]
  return None


def _joint_family(model) -> dict:
  """{estimator: (kind, payload)} for a model p(z) prod_m p(x_m | z)."""
  spec = model.spec
  dec = {t for t, c in spec.decoders if c == ()}
  names = spec.names
  full = _encoder_for(model, names) is not None and set(names) <= dec and len(names) > 1
  out = {}
  for m in (spec.x,) + spec.w:
    if m not in dec:
      continue
    sfx = "" if m == spec.x else f"/{m}"
    rest = tuple(n for n in names if n != m)
    if full:
      out["joint"] = ("term", (names, names))
      out["marginal_multiple" + sfx] = ("term", (names, (m,)))
    if _encoder_for(model, (m,)) is not None:
      out["marginal_single" + sfx] = ("term", ((m,), (m,)))
    if not rest or not set(rest) <= dec:
      continue
    label = _categorical_label(model, rest)
    out["log_p_w" + sfx] = ("table", label) if label else ("term", (None, rest))
    if full:
      out["conditional_multiple" + sfx] = ("diff", ("joint", "log_p_w" + sfx))
      if _encoder_for(model, rest) is not None:
        out["conditional_single" + sfx + "@"] = ("term", (rest, names))
        out["conditional_single" + sfx] = ("diff", ("conditional_single" + sfx + "@",
                                                    "log_p_w" + sfx))
  return out


def available(model) -> dict:
  """Every estimator this model can compute: {name: (kind, payload)} (internal form).
  Names ending in '@' are intermediate terms."""
  kind = _model_kind(model)
  spec = model.spec
  if kind == "cvae":
    return {"conditional_multiple": ("term", (spec.names, (spec.x,)))}
  if kind == "cmma":
    return {"conditional_multiple": ("term", (spec.names, (spec.x,)), tuple(sorted(spec.w)))}
  return _joint_family(model)


def estimator_names(model) -> tuple[str, ...]:
  """Every estimator this model can compute (``default_estimators`` is a subset)."""
  return tuple(n for n in available(model) if not n.endswith("@"))


def default_estimators(model) -> tuple[str, ...]:
  """The estimators computed when none are named: all of x's; for another modality m
  its two marginals, and its conditionals only where the rest is one categorical
  modality (otherwise log p(rest) costs N_p decoder passes per example)."""
  avail = available(model)
  spec = model.spec
  keep = []
  for name in avail:
    if name.endswith("@"):
      continue
    base, _, m = name.partition("/")
    cheap = not m or base.startswith("marginal") or _categorical_label(
        model, tuple(n for n in spec.names if n != m))
    if cheap:
      keep.append(name)
  return tuple(keep)


def make_plan(model, estimators=None) -> Plan:
  """Groups the requested estimators into shared passes; ConfigError for unknown ones."""
  avail = available(model)
  public = estimator_names(model)
  if isinstance(estimators, str):
    estimators = (estimators,)
  names = tuple(estimators) if estimators is not None else default_estimators(model)
  bad = [n for n in names if n not in public]
  if bad or not names:
    raise ConfigError(f"config.eval.estimators={names!r}: this model computes "
                      f"{', '.join(public) or 'none'}; not {', '.join(bad) or 'an empty set'}")
  needed, order = set(), []

  def need(n):
    if n in needed:
      return
    entry = avail[n]
    if entry[0] == "diff":
      for d in entry[1]:
        need(d)
    needed.add(n)
    order.append(n)

  for n in names:
    need(n)
  groups, tables, diffs = {}, [], []
  for n in order:
    entry = avail[n]
    if entry[0] == "table":
      tables.append((n, entry[1]))
    elif entry[0] == "diff":
      diffs.append((n,) + entry[1])
    else:
      proposal, targets = entry[1]
      prior = entry[2] if len(entry) > 2 else ()
      key = (proposal, prior)
      groups.setdefault(key, []).append(Term(n, tuple(targets)))
  passes = tuple(
      Pass(proposal=p, prior=pr, count="k" if p is not None else "prior_samples",
           stream=_stream(model.spec, p), terms=tuple(ts))
      for (p, pr), ts in groups.items())
  inputs = set()
  dec = dict(model.spec.decoders)
  for p in passes:
    inputs |= set(p.proposal or ()) | set(p.prior)
    for t in p.terms:
      inputs |= set(t.targets)
      for n in t.targets:
        inputs |= set(dec[n])
  inputs |= {m for _, m in tables}
  return Plan(names=names, passes=passes, tables=tuple(tables), differences=tuple(diffs),
              inputs=tuple(n for n in model.spec.names if n in inputs))


# ----------------------------------------------------------------------------
# The running log-mean-exp over chunks of samples.
# ----------------------------------------------------------------------------

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
  check_options(k=k, prior_samples=prior_samples, chunk_size=chunk_size, seed=seed)
  plan = make_plan(model, estimators)
  model.check_batch(batch, plan.inputs, "batch")
  size = _batch_size(model, batch, plan)
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
# ----------------------------------------------------------------------------

def _batch_size(model, batch, plan_or_names) -> int:
  names = getattr(plan_or_names, "inputs", plan_or_names)
  sizes = {n: int(np.shape(batch[n])[0]) for n in names}
  if len(set(sizes.values())) != 1:
    raise ConfigError(f"batch modalities have different batch sizes {sizes}")
  return next(iter(sizes.values()))


def default_mesh():
  """The 1-d 'data' mesh over every device (``parallel.make_mesh``), or None on one."""
  return parallel.make_mesh() if jax.device_count() > 1 else None


def _place(mesh, batch, index, mask):
  """Pads this process's rows to a multiple of its local devices (mask 0) and makes
  global arrays sharded on 'data' (``parallel.shard_batch``, multi-process too)."""
  if mesh is None:
    return batch, index, mask
  pad = -mask.shape[0] % jax.local_device_count()
  if pad:
    grow = lambda a: np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
    batch = {n: grow(np.asarray(v)) for n, v in batch.items()}
    index, mask = grow(index), grow(mask)
  placed = parallel.shard_batch(dict(batch, _index=index, _mask=mask), mesh)
  return placed, placed.pop("_index"), placed.pop("_mask")


def _gather(tree):
  """Every process's rows of the per-example outputs, on every process."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def _replicate(mesh, tree):
  return tree if mesh is None else parallel.replicate(tree, mesh)


def _loop(model, batches, inputs, call, *, mesh, progress, total, what):
  """Runs ``call(batch, index, mask) -> {name: [B] values}`` over (batch, mask) pairs;
  returns (sums, sums of squares, count, seconds) over the unmasked examples.

  Each batch is checked before its call; a call is dispatched before the previous
  result is read, so the host overlaps the device."""
  start = time.perf_counter()
  if total is None and hasattr(batches, "__len__"):
    total_batches = len(batches)
  else:
    total_batches = None
  sums, sqs, count, offset, done = {}, {}, 0, 0, 0
  pending = None

  def collect(item):
    nonlocal count
    out, mask = _gather(item)
    keep = np.asarray(mask) > 0
    for n, v in out.items():
      v = np.asarray(v, np.float64)[: keep.shape[0]][keep]
      sums[n] = sums.get(n, 0.0) + v.sum()
      sqs[n] = sqs.get(n, 0.0) + np.square(v).sum()
    count += int(keep.sum())

  for item in batches:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
      raise ConfigError(f"{what}: batches must yield (batch_dict, mask) pairs")
    batch, mask = item
    model.check_batch(batch, inputs, "batch")
    size = _batch_size(model, batch, inputs)
    mask = np.asarray(mask, np.float32).reshape(-1)
    if mask.shape[0] != size:
      raise ConfigError(f"{what}: mask has {mask.shape[0]} entries for a batch of {size}")
    index = (offset + np.cumsum(mask > 0) - 1).clip(0).astype(np.int32)
    # Process p reads examples p, p + P, p + 2P, ... (input_pipeline's sharding).
    index = index * jax.process_count() + jax.process_index()
    offset += int((mask > 0).sum())
    placed = _place(mesh, {n: np.asarray(batch[n]) for n in inputs}, index, mask)
    out = call(*placed)
    if pending is not None:
      collect(pending)
    pending = (out, placed[2])
    done += 1
    if progress is not None:
      elapsed = time.perf_counter() - start
      if total is not None:
        eta = elapsed / max(offset, 1) * max(total - offset, 0)
        of = f"/{total} examples"
      elif total_batches:
        eta = elapsed / done * (total_batches - done)
        of = f" examples (batch {done}/{total_batches})"
      else:
        eta, of = None, " examples"
      eta_s = f", ETA {eta:.0f} s" if eta is not None else ""
      progress(f"{what}: {offset}{of}, {elapsed:.1f} s{eta_s}")
  if pending is not None:
    collect(pending)
  return sums, sqs, count, time.perf_counter() - start


def _summary(sums, sqs, count):
  out = {}
  for n in sums:
    mean = sums[n] / max(count, 1)
    var = (sqs[n] - count * mean * mean) / max(count - 1, 1)
    out[n] = {"mean": float(mean), "stderr": float(math.sqrt(max(var, 0.0) / max(count, 1)))}
  return out


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
  uses TF32, which moves the estimates (BUILD_NOTES.md, "Measured").
  """
  opts = check_options(k=k, prior_samples=prior_samples, chunk_size=chunk_size, seed=seed,
                       matmul_precision=matmul_precision)
  plan = make_plan(model, estimators)
  mesh = default_mesh() if mesh == "auto" else mesh
  state = {}
  consts = (np.int32(k), np.int32(prior_samples), np.int32(seed))

  @jax.default_matmul_precision(matmul_precision)
  def call(batch, index, mask):
    if "fn" not in state:   # only once the first batch has passed its checks
      state["fn"] = batch_fn(model, plan, opts["chunk_size"])
      state["params"] = _replicate(mesh, params)
      state["tables"] = _replicate(mesh, make_tables(
          model, plan, params, prior_samples=prior_samples, chunk_size=chunk_size, seed=seed))
    values, stderr = state["fn"](state["params"], batch, index, mask, state["tables"], *consts)
    return dict(values, **{f"{n}@mc": jnp.square(s) for n, s in stderr.items()})

  sums, sqs, count, seconds = _loop(model, batches, plan.inputs, call, mesh=mesh,
                                    progress=progress, total=total, what="iw-eval")
  if count == 0:
    raise ConfigError("iw-eval: the batches held no (unmasked) examples")
  summary = _summary({n: sums[n] for n in plan.names}, sqs, count)
  for n in plan.names:
    summary[n]["mc_stderr"] = float(math.sqrt(sums[f"{n}@mc"] / max(count, 1)))
  return {"k": int(k), "prior_samples": int(prior_samples), "num_examples": count,
          "seconds": seconds, "matmul_precision": matmul_precision, "estimates": summary}


# ----------------------------------------------------------------------------
# The paper's Table 1 layout.
# ----------------------------------------------------------------------------

_ROWS = (("log p(x)", "marginal_multiple", "marginal_single"),
         ("log p(x\\|w)", "conditional_multiple", "conditional_single"),
         ("log p(x,w)", "joint", None))


def _cell(est, name):
  if name is None or name not in est:
    return ""
  e = est[name]
  return f"{e['mean']:.2f} ± {e['stderr']:.2f}"


def markdown_table(result) -> str:
  """Table 1's layout: rows log p(x), log p(x|w), log p(x,w); columns multiple / single.

  ``result`` is one ``estimate`` result, or {row label: result} for one table per
  quantity with a row per model, as in the paper."""
  if "estimates" in result:
    lines = ["| | multiple | single |", "| --- | --- | --- |"]
    est = result["estimates"]
    lines += [f"| {row} | {_cell(est, a)} | {_cell(est, b)} |" for row, a, b in _ROWS]
    return "\n".join(lines)
  blocks = []
  for row, a, b in _ROWS:
    lines = [f"| {row} | multiple | single |", "| --- | --- | --- |"]
    for label, res in result.items():
      est = res["estimates"]
      if _cell(est, a) or _cell(est, b):
        lines.append(f"| {label} | {_cell(est, a)} | {_cell(est, b)} |")
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


# ----------------------------------------------------------------------------
# Cross-modal metrics.
# ----------------------------------------------------------------------------

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
  if _encoder_for(model, (model.spec.x,)) is None:
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
  mesh = default_mesh() if mesh == "auto" else mesh
  fn = _metric_fn(values_fn, model, targets)
  state = {}

  def call(batch, index, mask):
    state.setdefault("params", _replicate(mesh, params))
    return fn(state["params"], batch, index, mask)

  inputs = tuple(n for n in model.spec.names if n == model.spec.x or n in targets)
  sums, sqs, count, _ = _loop(model, batches, inputs, call, mesh=mesh, progress=progress,
                              total=None, what=what)
  return _summary(sums, sqs, count)


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


def _mlp_init(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [{"w": jax.random.normal(k, (a, b), jnp.float32) * math.sqrt(2.0 / a),
           "b": jnp.zeros((b,), jnp.float32)} for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def _mlp_apply(layers, x):
  h = x.reshape(x.shape[0], -1).astype(jnp.float32)
  for layer in layers[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  return h @ layers[-1]["w"] + layers[-1]["b"]


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


def _coherence_values(model, target, sample_z, params, clf, seed, batch, index, mask):
  spec = model.spec
  stream = jax.random.fold_in(jax.random.key(seed), _TABLE_STREAM + 1)
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
  check_options(k=1, prior_samples=1, chunk_size=1, seed=seed)
  mesh = default_mesh() if mesh == "auto" else mesh
  fn = _metric_fn(_coherence_values, model, target, sample_z)
  state = {}

  def call(batch, index, mask):
    if "params" not in state:
      state["params"] = _replicate(mesh, params)
      state["clf"] = _replicate(mesh, clf_params)
    return fn(state["params"], state["clf"], np.int32(seed), batch, index, mask)

  sums, sqs, count, _ = _loop(model, batches, spec.w, call, mesh=mesh, progress=progress,
                              total=None, what="coherence")
  return _summary(sums, sqs, count)[target]
