"""Which estimators a model can compute, grouped into passes that share one draw of z.

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
``conditional_multiple`` with its learned prior p(z | w) (the encoder of w). When w is a
single categorical modality, log p(w) takes only C values: a table computed once.
"""
from __future__ import annotations

import dataclasses

from jmvae_jax.errors import ConfigError


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


def encoder_for(model, present):
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
  full = encoder_for(model, names) is not None and set(names) <= dec and len(names) > 1
  out = {}
  for m in (spec.x,) + spec.w:
    if m not in dec:
      continue
    sfx = "" if m == spec.x else f"/{m}"
    rest = tuple(n for n in names if n != m)
    if full:
      out["joint"] = ("term", (names, names))
      out["marginal_multiple" + sfx] = ("term", (names, (m,)))
    if encoder_for(model, (m,)) is not None:
      out["marginal_single" + sfx] = ("term", ((m,), (m,)))
    if not rest or not set(rest) <= dec:
      continue
    label = _categorical_label(model, rest)
    out["log_p_w" + sfx] = ("table", label) if label else ("term", (None, rest))
    if full:
      out["conditional_multiple" + sfx] = ("diff", ("joint", "log_p_w" + sfx))
      if encoder_for(model, rest) is not None:
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
