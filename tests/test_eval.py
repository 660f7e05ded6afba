"""The importance-sampled evaluator against closed forms and independent computations.

A linear-Gaussian JMVAE (tests/linear_gaussian.py) has exact log p(x), log p(x, w),
log p(x | w) and exact Gaussian posteriors; with decoders whose loading matrices
have orthogonal columns the posteriors are diagonal, so a linear encoder can hold
them exactly and the importance weights become constant. The CVAE and CMMA
baselines built the same way have closed-form log p(x | w) too.
"""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jmvae_jax
from jmvae_jax import eval as L
from jmvae_jax import schema
from jmvae_jax.eval import classifier, estimators, loop
from jmvae_jax import objectives
from jmvae_jax.errors import ConfigError
from tests import linear_gaussian as lg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("x", "w")


# ----------------------------------------------------------------------------
# Fixtures: the linear-Gaussian model with exact and with perturbed encoders.
# ----------------------------------------------------------------------------

def _orthogonal_loadings():
  """A_x (3x2) and A_w (2x2) with orthogonal columns: every posterior is diagonal."""
  q, _ = np.linalg.qr(np.array([[1.0, 0.3, 0.2], [0.2, 1.0, 0.5], [0.4, -0.3, 1.0]]))
  a_x = q[:, :2] * np.array([1.5, 0.8])
  c, s = np.cos(0.7), np.sin(0.7)
  a_w = np.array([[c, -s], [s, c]]) * np.array([1.1, 0.6])
  return {"x": (a_x, np.array([0.3, -0.5, 1.0])), "w": (a_w, np.array([-0.2, 0.4]))}


def _exact_encoder(subset, loadings, variances=None, widen=1.0):
  """Linear encoder params whose mean is the posterior mean of p(z | subset) and whose
  variance is ``widen`` times the posterior's diagonal: the exact posterior when the
  precision I + sum A'A/s is diagonal and ``widen`` is 1."""
  variances = variances or lg.VARIANCES
  prec = np.eye(2) + sum(a.T @ a / variances[n] for n, (a, _) in loadings.items()
                         if n in subset)
  cov = np.linalg.inv(prec)
  kernel = np.concatenate([loadings[n][0] @ cov / variances[n] for n in sorted(subset)])
  bias = -cov @ sum(loadings[n][0].T @ loadings[n][1] / variances[n] for n in subset)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return {"head": {"mean": {"kernel": f32(kernel), "bias": f32(bias)},
                   "variance": {"kernel": f32(np.zeros_like(kernel)),
                                "bias": f32(np.log(widen * np.diag(cov)))}}}


def _perturbed(enc):
  """A proposal that is not the posterior: shifted mean, wider variance."""
  head = enc["head"]
  return {"head": {"mean": {"kernel": head["mean"]["kernel"] * 0.9,
                            "bias": head["mean"]["bias"] + 0.3},
                   "variance": {"kernel": head["variance"]["kernel"],
                                "bias": head["variance"]["bias"] + 0.5}}}


@pytest.fixture(scope="module")
def linear():
  model, loss_fn = jmvae_jax.build(lg.config("jmvae_kl"))
  params = model.init(jax.random.key(0))
  loadings = _orthogonal_loadings()
  for n, (a, b) in loadings.items():
    params["decoder"][n]["out"] = {"kernel": jnp.asarray(a.T, jnp.float32),
                                   "bias": jnp.asarray(b, jnp.float32)}
  exact = dict(params, encoder={k: _exact_encoder(tuple(k.split("+")), loadings)
                                for k in params["encoder"]})
  rough = dict(params, encoder={k: _perturbed(v) for k, v in exact["encoder"].items()})
  data = lg.sample_data(exact, NAMES, 8, seed=1)
  ex = [{n: data[n][i] for n in NAMES} for i in range(8)]
  truth = {
      "joint": [lg.log_marginal(exact, NAMES, e) for e in ex],
      "x": [lg.log_marginal(exact, ("x",), e) for e in ex],
      "w": [lg.log_marginal(exact, ("w",), e) for e in ex],
  }
  truth = {k: np.array(v) for k, v in truth.items()}
  # The encoder really is the exact posterior (the concatenation order included).
  mean, cov = lg.exact_posterior(exact, NAMES, ex[0])
  q = model.encode(exact, NAMES, {n: data[n][:1] for n in NAMES})
  np.testing.assert_allclose(q.mean[0], mean, atol=1e-5)
  np.testing.assert_allclose(np.exp(q.logvar[0]), np.diag(cov), rtol=1e-5)
  return dict(model=model, exact=exact, rough=rough, data=data, truth=truth)


def _expected(truth):
  """The closed-form value every estimator name should approach."""
  return {
      "joint": truth["joint"], "marginal_multiple": truth["x"], "marginal_single": truth["x"],
      "log_p_w": truth["w"], "conditional_multiple": truth["joint"] - truth["w"],
      "conditional_single": truth["joint"] - truth["w"],
      "marginal_multiple/w": truth["w"], "marginal_single/w": truth["w"],
      "log_p_w/w": truth["x"], "conditional_multiple/w": truth["joint"] - truth["x"],
      "conditional_single/w": truth["joint"] - truth["x"],
  }


def _run(model, params, batch, k, names=None, chunk=16, prior_samples=None, seed=0, **kw):
  return L.per_example(model, params, batch, k=k, prior_samples=prior_samples or k,
                       chunk_size=chunk, seed=seed, estimators=names, **kw)


# ----------------------------------------------------------------------------
# Correctness against closed forms.
# ----------------------------------------------------------------------------

def test_exact_posterior_makes_weights_constant(linear):
  model = linear["model"]
  names = L.estimator_names(model)
  assert set(names) == set(_expected(linear["truth"]))
  values, mc = _run(model, linear["exact"], linear["data"], k=3, names=names, chunk=2)
  want = _expected(linear["truth"])
  for n in ("joint", "marginal_single", "marginal_single/w"):
    np.testing.assert_allclose(values[n], want[n], atol=2e-4, err_msg=n)
    assert np.all(mc[n] < 1e-3), n


def test_every_estimator_matches_closed_form_at_large_k(linear):
  model = linear["model"]
  names = L.estimator_names(model)
  values, mc = _run(model, linear["rough"], linear["data"], k=2000, names=names, chunk=250)
  want = _expected(linear["truth"])
  for n in names:
    err = values[n] - want[n]
    assert np.all(mc[n] < 0.2), (n, mc[n])              # the test has power
    assert np.all(np.abs(err) < 5 * mc[n] + 2e-3), (n, err, mc[n])
  # A wrong target is detected: log p(x) is not log p(x, w).
  assert np.all(np.abs(values["marginal_multiple"] - want["joint"]) > 0.5)


def test_k1_is_the_training_bound_and_the_gap_shrinks(linear):
  model, params, data = linear["model"], linear["rough"], linear["data"]
  draws = 32
  k1 = np.stack([_run(model, params, data, k=1, names=("joint",), chunk=250,
                      index=np.arange(8) + 8 * r)[0]["joint"] for r in range(draws)])
  elbo_fn = jax.jit(jax.vmap(lambda rng: objectives.REGISTRY["jmvae"].fn(
      model, params, data, rng, reduce=False)[1]["elbo"]))
  elbo = np.asarray(elbo_fn(jax.random.split(jax.random.key(5), draws)))
  se = np.sqrt(k1.var() / k1.size + elbo.var() / elbo.size)
  assert abs(k1.mean() - elbo.mean()) < 4 * se, (k1.mean(), elbo.mean(), se)
  # The bound tightens: the k=1 gap is large and positive, the k=2000 gap about 0.
  big = _run(model, params, data, k=2000, names=("joint",), chunk=250)[0]["joint"]
  gap1 = linear["truth"]["joint"] - k1.mean(0)
  gap_big = linear["truth"]["joint"] - big
  assert gap1.mean() > 0.2 and gap1.mean() > 10 * abs(gap_big.mean()), (gap1, gap_big)


def test_three_modalities_per_modality_estimators():
  """x, w, v: the joint, and every modality's marginals, against closed forms."""
  variances = {"x": 0.5, "w": 0.3, "v": 0.4}
  c = lg.config("jmvae_kl")
  c.model.modalities.v = dict(likelihood="gaussian", shape=(2,), variance=variances["v"],
                              hidden=(), decoder_hidden=())
  model, _ = jmvae_jax.build(c)
  params = model.init(jax.random.key(7))
  names = model.spec.names
  loadings = {}
  for n in names:
    p = params["decoder"][n]["out"]
    loadings[n] = (np.asarray(p["kernel"], np.float64).T, np.asarray(p["bias"], np.float64))
  params["encoder"] = {k: _exact_encoder(tuple(k.split("+")), loadings, variances, 1.5)
                       for k in params["encoder"]}
  rng = np.random.default_rng(4)
  z = rng.normal(size=(4, 2))
  data = {n: (z @ a.T + b + rng.normal(size=(4, len(b))) * np.sqrt(variances[n])
              ).astype(np.float32) for n, (a, b) in loadings.items()}

  def log_p(subset):
    h = np.concatenate([loadings[n][0] for n in subset])
    mu = np.concatenate([loadings[n][1] for n in subset])
    cov = h @ h.T + np.diag(np.concatenate([[variances[n]] * len(loadings[n][1])
                                            for n in subset]))
    y = np.concatenate([data[n].astype(np.float64) for n in subset], 1)
    return np.array([lg.log_normal(row, mu, cov) for row in y])

  want = {"joint": log_p(names), "marginal_multiple": log_p(("x",)),
          "marginal_single": log_p(("x",)),
          "conditional_multiple": log_p(names) - log_p(("v", "w"))}
  for m in ("v", "w"):   # (marginal_multiple/m is computed too; q(z | x, w, v) is a poor
    want[f"marginal_single/{m}"] = log_p((m,))   # proposal for p(z | m) alone)
  assert set(want) | {"marginal_multiple/v", "marginal_multiple/w"} <= set(
      L.default_estimators(model))
  values, mc = _run(model, params, data, k=2000, names=tuple(want), chunk=500)
  for n, target in want.items():
    assert np.all(mc[n] < 0.2), (n, mc[n])
    assert np.all(np.abs(values[n] - target) < 5 * mc[n] + 2e-3), (n, values[n] - target)


def _baseline(objective):
  model, _ = jmvae_jax.build(lg.config(objective))
  params = model.init(jax.random.key(3))
  if objective == "cmma":   # a prior p(z | w) with a constant variance
    head = params["encoder"]["w"]["head"]
    head["variance"]["kernel"] = jnp.zeros_like(head["variance"]["kernel"])
    head["variance"]["bias"] = jnp.full_like(head["variance"]["bias"], -0.5)
  _set_proposal(params, objective)
  data = lg.sample_data(_with_w_decoder(params), NAMES, 6, 2)
  return model, params, data


def _set_proposal(params, objective):
  """q(z | x[, w]) := the exact posterior's mean with 1.3 times its diagonal variance:
  with prior N(M w + m0, diag v) and p(x | z, w) = N(A z + C w + b, s2 I), the
  posterior precision is P = diag(1/v) + A'A/s2 and its mean is linear in (x, w)."""
  s2 = lg.VARIANCES["x"]
  kx = np.asarray(params["decoder"]["x"]["out"]["kernel"], np.float64)
  a, c, b = kx[:2].T, kx[2:].T, np.asarray(params["decoder"]["x"]["out"]["bias"], np.float64)
  mw, m0, v = np.zeros((2, 2)), np.zeros(2), np.ones(2)
  if objective == "cmma":
    head = params["encoder"]["w"]["head"]
    mw = np.asarray(head["mean"]["kernel"], np.float64).T
    m0 = np.asarray(head["mean"]["bias"], np.float64)
    v = np.exp(np.asarray(head["variance"]["bias"], np.float64))
  if c.size == 0:
    c = np.zeros((3, 2))
  cov = np.linalg.inv(np.diag(1 / v) + a.T @ a / s2)
  rows = {"w": (cov @ (mw / v[:, None] - a.T @ c / s2)).T, "x": (cov @ a.T / s2).T}
  key = "x" if objective == "vae" else "w+x"
  kernel = np.concatenate([rows[n] for n in key.split("+")])
  f32 = lambda t: jnp.asarray(t, jnp.float32)
  params["encoder"][key] = {"head": {
      "mean": {"kernel": f32(kernel), "bias": f32(cov @ (m0 / v - a.T @ b / s2))},
      "variance": {"kernel": f32(np.zeros_like(kernel)),
                   "bias": f32(np.log(1.3 * np.diag(cov)))}}}


def _with_w_decoder(params):
  """The baselines have no p(w | z); any w will do for sampling test data."""
  p = dict(params)
  p["decoder"] = dict(params["decoder"], w={"out": {"kernel": jnp.eye(2), "bias": jnp.zeros(2)}})
  p["decoder"]["x"] = {"out": {"kernel": params["decoder"]["x"]["out"]["kernel"][:2],
                               "bias": params["decoder"]["x"]["out"]["bias"]}}
  return p


def _log_normal_rows(y, mean, cov):
  return np.array([lg.log_normal(y[i], mean[i], cov[i]) for i in range(len(y))])


@pytest.mark.parametrize("objective", ["vae", "cvae", "cmma"])
def test_baselines_match_closed_form(objective):
  model, params, data = _baseline(objective)
  names = L.default_estimators(model)
  x, w = (np.asarray(data[n], np.float64) for n in NAMES)
  kx = np.asarray(params["decoder"]["x"]["out"]["kernel"], np.float64)
  bx = np.asarray(params["decoder"]["x"]["out"]["bias"], np.float64)
  s2 = lg.VARIANCES["x"] * np.eye(3)
  if objective == "vae":
    assert names == ("marginal_single",)
    a = kx.T
    want = _log_normal_rows(x, np.broadcast_to(bx, x.shape), [a @ a.T + s2] * len(x))
  elif objective == "cvae":   # p(x | z, w) = N(A z + C w + b, s2): p(x | w) = N(C w + b, AA' + s2)
    assert names == ("conditional_multiple",)
    a, c = kx[:2].T, kx[2:].T
    want = _log_normal_rows(x, w @ c.T + bx, [a @ a.T + s2] * len(x))
  else:                       # p(z | w) = N(m(w), V(w)): p(x | w) = N(A m + b, A V A' + s2)
    assert names == ("conditional_multiple",)
    head = params["encoder"]["w"]["head"]
    m = w @ np.asarray(head["mean"]["kernel"], np.float64) + np.asarray(head["mean"]["bias"])
    v = np.exp(w @ np.asarray(head["variance"]["kernel"], np.float64)
               + np.asarray(head["variance"]["bias"]))
    a = kx.T
    want = _log_normal_rows(x, m @ a.T + bx, [a @ np.diag(vi) @ a.T + s2 for vi in v])
  values, mc = _run(model, params, data, k=2000, chunk=500)
  err = values[names[0]] - want
  assert np.all(np.abs(err) < 5 * mc[names[0]] + 2e-3), (err, mc[names[0]])


# ----------------------------------------------------------------------------
# Invariances: chunking, batching, padding, devices, precision.
# ----------------------------------------------------------------------------

def tiny_config(objective="jmvae_kl", image=(4, 4, 1), classes=3, hidden=(16,), latent=3):
  """Bernoulli image + categorical label; ``tiny_config(image=(28, 28, 1), classes=10,
  hidden=(512, 512), latent=64)`` is the paper's MNIST networks."""
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict()
  c.model.latent_dim = latent
  c.model.x = "image"
  c.model.modalities = ml_collections.ConfigDict()
  c.model.modalities.image = dict(likelihood="bernoulli", shape=image, hidden=hidden,
                                  decoder_hidden=hidden)
  c.model.modalities.label = dict(likelihood="categorical", shape=(classes,), hidden=hidden,
                                  decoder_hidden=hidden)
  c.objective = ml_collections.ConfigDict(dict(name=objective, alpha=0.1))
  return c


def tiny_data(n=10, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": (rng.random((n, 4, 4, 1)) < 0.5).astype(np.float32),
          "label": rng.integers(0, 3, n).astype(np.int32)}


@pytest.fixture(scope="module")
def tiny():
  model, _ = jmvae_jax.build(tiny_config())
  params = model.init(jax.random.key(0))
  return model, params, tiny_data()


def test_chunked_equals_unchunked_and_batches_do_not_matter(tiny):
  model, params, data = tiny
  names = L.estimator_names(model)
  assert "log_p_w" in names and ("log_p_w", "label") in L.make_plan(model, names).tables
  whole, _ = _run(model, params, data, k=37, names=names, chunk=37, prior_samples=23)
  chunked, _ = _run(model, params, data, k=37, names=names, chunk=8, prior_samples=23)
  for n in names:
    np.testing.assert_allclose(chunked[n], whole[n], rtol=2e-6, atol=2e-5, err_msg=n)
  # Rows 4..7 alone, with their test-set indices: the same numbers.
  part = {k: v[4:8] for k, v in data.items()}
  sub, _ = _run(model, params, part, k=37, names=names, chunk=8, prior_samples=23,
                index=np.arange(4, 8))
  for n in names:
    np.testing.assert_allclose(sub[n], chunked[n][4:8], rtol=2e-6, atol=2e-5, err_msg=n)
  # Padded last batch (4 + 4 + 2 padded to 4): the means over the 10 examples.
  batches = []
  for s in (0, 4, 8):
    size = min(4, 10 - s)
    rows = np.r_[np.arange(s, s + size), np.zeros(4 - size, int)]
    batches.append(({k: v[rows] for k, v in data.items()},
                     np.r_[np.ones(size), np.zeros(4 - size)]))
  lines = []
  res = L.estimate(model, params, batches, k=37, prior_samples=23, chunk_size=8, seed=0,
                   estimators=names, progress=lines.append, mesh=None)
  assert res["num_examples"] == 10 and len(lines) == 3 and "ETA" in lines[0]
  for n in names:
    assert res["estimates"][n]["mean"] == pytest.approx(float(chunked[n].mean()), abs=1e-4)
    sd = chunked[n].astype(np.float64).std(ddof=1) / np.sqrt(10)
    assert res["estimates"][n]["stderr"] == pytest.approx(sd, rel=1e-3, abs=1e-6)
  table = L.markdown_table(res)
  assert table.splitlines()[0] == "| | multiple | single |"
  assert f"{res['estimates']['joint']['mean']:.2f}" in table.splitlines()[4]


_SUBPROCESS_HEADER = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
import jax
from tests.test_eval import tiny_config, tiny_data
from jmvae_jax import build, eval as L
from jmvae_jax.eval import loop
"""


def _subprocess(body, env_extra):
  env = dict(os.environ, **env_extra)
  code = _SUBPROCESS_HEADER.format(root=ROOT) + textwrap.dedent(body)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_device_equals_four_simulated_devices(tiny):
  model, params, data = tiny
  names = L.estimator_names(model)
  want, _ = _run(model, params, data, k=37, names=names, chunk=8, prior_samples=23)
  got = _subprocess("""
    model, _ = build(tiny_config())
    params = model.init(jax.random.key(0))
    data = tiny_data()
    assert jax.device_count() == 4
    mesh = loop.default_mesh()
    names = L.estimator_names(model)
    plan = L.make_plan(model, names)
    tables = L.make_tables(model, plan, params, prior_samples=23, chunk_size=8, seed=0)
    batch, index, mask = loop.place(mesh, data, np.arange(10, dtype=np.int32),
                                  np.ones(10, np.float32))   # padded to 12 rows
    values, _ = L.batch_fn(model, plan, 8)(params, batch, index, mask, tables,
                                           np.int32(37), np.int32(23), np.int32(0))
    assert len(values["joint"].sharding.device_set) == 4
    res = L.estimate(model, params, [(data, np.ones(10))], k=37, prior_samples=23,
                     chunk_size=8, seed=0, estimators=names)
    print(json.dumps({"values": {n: np.asarray(v)[:10].tolist() for n, v in values.items()},
                      "means": {n: e["mean"] for n, e in res["estimates"].items()}}))
  """, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
  for n in names:
    np.testing.assert_allclose(got["values"][n], want[n], rtol=1e-5, atol=1e-4, err_msg=n)
    assert got["means"][n] == pytest.approx(float(want[n].mean()), abs=1e-4)


def test_float32_matches_float64_at_k5000():
  got = _subprocess("""
    assert jax.config.jax_enable_x64
    model, _ = build(tiny_config(image=(28, 28, 1), classes=10, hidden=(512, 512), latent=64))
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {"image": (rng.random((3, 28, 28, 1)) < 0.3).astype(np.float32),
            "label": rng.integers(0, 10, 3).astype(np.int32)}
    names = ("joint", "marginal_single", "conditional_single", "conditional_multiple")
    run = lambda p, d: L.per_example(model, p, d, k=5000, prior_samples=5000,
                                     chunk_size=1000, seed=0, estimators=names)[0]
    f32 = run(params, data)
    assert f32["joint"].dtype == np.float32
    to64 = lambda a: a.astype(np.float64) if a.dtype.kind == "f" else a
    f64 = run(jax.tree.map(lambda a: np.asarray(a, np.float64), params),
              {k: to64(v) for k, v in data.items()})
    assert f64["joint"].dtype == np.float64
    print(json.dumps({n: [f32[n].tolist(), f64[n].tolist()] for n in names}))
  """, {"JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"})
  for n, (f32, f64) in got.items():
    assert np.all(np.isfinite(f64)) and np.all(np.array(f64) < -50), (n, f64)
    np.testing.assert_allclose(f32, f64, atol=1e-3, rtol=0, err_msg=n)


# ----------------------------------------------------------------------------
# Bad input: one-line ConfigErrors before anything compiles.
# ----------------------------------------------------------------------------

def test_bad_input_fails_before_compiling(tiny, monkeypatch):
  model, params, data = tiny

  def boom(*a, **k):
    raise AssertionError("compiled before checking")

  monkeypatch.setattr(estimators, "batch_fn", boom)
  monkeypatch.setattr(estimators, "make_tables", boom)
  ok = [(data, np.ones(10))]
  kw = dict(k=10, prior_samples=10, chunk_size=4, seed=0)
  for field, value in (("k", 0), ("k", -3), ("prior_samples", 0), ("chunk_size", 2.5),
                       ("matmul_precision", "tf32")):
    with pytest.raises(ConfigError, match=f"config.eval.{field}"):
      L.estimate(model, params, ok, **dict(kw, **{field: value}))
  with pytest.raises(ConfigError, match="no modality 'label'"):
    L.estimate(model, params, [({"image": data["image"]}, np.ones(10))], **kw)
  with pytest.raises(ConfigError, match="mask"):
    L.estimate(model, params, [(data, np.ones(3))], **kw)
  with pytest.raises(ConfigError, match="estimators"):
    L.estimate(model, params, ok, estimators=("nope",), **kw)
  with pytest.raises(ConfigError, match="no modality 'label'"):
    L.per_example(model, params, {"image": data["image"]}, **kw)
  c = tiny_config()
  from configs import common
  c.eval = common.eval_config()
  assert schema.check_section("eval", c.eval)["k"] == 5000
  c.eval.k = 0
  with pytest.raises(ConfigError, match=r"^config.eval.k=0 must be an int > 0$"):
    schema.check_section("eval", c.eval)
  c.eval.k, c.eval.matmul_precision = 10, "fast"
  with pytest.raises(ConfigError, match="config.eval.matmul_precision='fast'.*highest"):
    schema.check_section("eval", c.eval)
  vae, _ = jmvae_jax.build(tiny_config("vae"))
  with pytest.raises(ConfigError, match="joint"):
    L.make_plan(vae, ("joint",))


def test_estimate_runs_at_the_requested_matmul_precision(tiny, monkeypatch):
  """The evaluator traces and runs under ``default_matmul_precision`` (a GPU would use
  TF32 otherwise); on a CPU the numbers are the same either way."""
  model, params, data = tiny
  seen, real = [], L.batch_fn

  def spy(*a, **k):
    fn = real(*a, **k)

    def wrapped(*args):
      seen.append(jax.config.jax_default_matmul_precision)
      return fn(*args)
    return wrapped

  monkeypatch.setattr(estimators, "batch_fn", spy)
  kw = dict(k=6, prior_samples=5, chunk_size=3, seed=0, estimators=("joint",), mesh=None)
  batches = [(data, np.ones(10))]
  high = L.estimate(model, params, batches, **kw)
  low = L.estimate(model, params, batches, matmul_precision="default", **kw)
  assert seen == ["highest", "default"] and high["matmul_precision"] == "highest"
  np.testing.assert_allclose(high["estimates"]["joint"]["mean"],
                             low["estimates"]["joint"]["mean"], rtol=1e-6)


# ----------------------------------------------------------------------------
# Cross-modal metrics.
# ----------------------------------------------------------------------------

def _padded(data, size):
  n = len(next(iter(data.values())))
  out = []
  for s in range(0, n, size):
    rows = np.arange(s, s + size) % n
    out.append(({k: v[rows] for k, v in data.items()}, (np.arange(s, s + size) < n) * 1.0))
  return out


def test_cross_modal_accuracy_and_coherence(tiny):
  model, params, data = tiny
  acc = L.cross_modal_accuracy(model, params, _padded(data, 4), mesh=None)
  z = model.posterior(params, {"image": data["image"]}).mean
  pred = np.argmax(model.generate(params, "label", z), -1)
  assert acc["label"]["mean"] == pytest.approx(np.mean(pred == data["label"]))
  # The round trip label -> image -> label, against the same chain written out here
  # with the label's own encoder and a numpy argmax.
  rt = L.round_trip_accuracy(model, params, _padded(data, 4), mesh=None)
  image = model.generate(params, "image", model.encode(params, ("label",), data).mean)
  back = model.generate(params, "label", model.encode(params, ("image",), {"image": image}).mean)
  assert rt["label"]["mean"] == pytest.approx(np.mean(np.argmax(back, -1) == data["label"]))
  vae, _ = jmvae_jax.build(tiny_config("vae"))
  assert L.cross_modal_accuracy(vae, vae.init(jax.random.key(0)), _padded(data, 4)) == {}
  assert L.round_trip_accuracy(vae, vae.init(jax.random.key(0)), _padded(data, 4)) == {}
  assert np.allclose(L.agreement(model.spec.modality("image"), jnp.array([[0.7, 0.2]]),
                                 jnp.array([[1.0, 1.0]])), 0.5)

  # A classifier learns a separable image -> label task from the train split.
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 600).astype(np.int32)
  protos = (rng.random((3, 4, 4, 1)) < 0.5).astype(np.float32)
  images = np.abs(protos[labels] - (rng.random((600, 4, 4, 1)) < 0.05)).astype(np.float32)
  spec_x, spec_w = model.spec.modality("image"), model.spec.modality("label")
  clf = classifier.train_classifier(spec_x, spec_w, images[:500], labels[:500], hidden=(32,),
                           epochs=5, batch_size=50, learning_rate=1e-2, seed=0)
  test_pred = np.argmax(classifier.classify(spec_w, clf, images[500:]), -1)
  assert np.mean(test_pred == labels[500:]) > 0.9

  # Coherence does not depend on the batching (per-example draws), lies in [0, 1].
  c4 = L.coherence(model, params, clf, _padded(data, 4), seed=1, mesh=None)
  c10 = L.coherence(model, params, clf, _padded(data, 10), seed=1, mesh=None)
  assert 0.0 <= c4["mean"] <= 1.0 and c4["mean"] == pytest.approx(c10["mean"])


def test_attribute_agreement_and_classifier_follow_the_coding():
  """+-1 attributes flip at 0; {0, 1} ones (Bernoulli, or a Gaussian through a sigmoid)
  at 1/2, so a prediction of 0.9 against 1 agrees and 0.9 against 0 does not."""
  from jmvae_jax import modalities as M
  pm = M.ModalitySpec("a", "gaussian", (2,), mean_activation="tanh")
  sig = M.ModalitySpec("a", "gaussian", (2,), mean_activation="sigmoid")
  bern = M.ModalitySpec("a", "bernoulli", (2,))
  assert (pm.binary_threshold, sig.binary_threshold, bern.binary_threshold) == (0.0, 0.5, 0.5)
  pred = jnp.array([[0.9, 0.1], [0.9, 0.1]])
  for spec in (sig, bern):
    np.testing.assert_array_equal(
        L.agreement(spec, pred, jnp.array([[1.0, 0.0], [0.0, 1.0]])), [1.0, 0.0])
  np.testing.assert_array_equal(
      L.agreement(pm, pred - 0.5, jnp.array([[1.0, -1.0], [-1.0, -1.0]])), [1.0, 0.5])
  x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
  layers = [{"w": np.ones((4, 2), np.float32), "b": np.zeros(2, np.float32)}]
  logits = x.sum(1)
  for spec, want in ((sig, 1 / (1 + np.exp(-logits))), (pm, np.tanh(logits / 2))):
    np.testing.assert_allclose(classifier.classify(spec, layers, x), np.stack([want] * 2, 1),
                               rtol=1e-6)
