"""Log-densities and KLs against float64 numpy re-derivations and Monte Carlo."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmvae_jax import distributions as D

RNG = np.random.default_rng(0)


def np_log_normal(x, mean, var):
  return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def np_kl_diag(mq, vq, mp, vp):
  return 0.5 * np.sum(np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0, axis=-1)


def random_gaussian(shape, rng=RNG):
  return rng.normal(size=shape), rng.normal(scale=0.7, size=shape)


def test_kl_between_diagonal_gaussians_matches_float64_formula():
  (mq, lq), (mp, lp) = random_gaussian((5, 7)), random_gaussian((5, 7))
  got = D.kl(D.DiagGaussian(jnp.asarray(mq, jnp.float32), jnp.asarray(lq, jnp.float32)),
             D.DiagGaussian(jnp.asarray(mp, jnp.float32), jnp.asarray(lp, jnp.float32)))
  want = np_kl_diag(mq, np.exp(lq), mp, np.exp(lp))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_kl_to_standard_normal_matches_float64_formula_and_general_kl():
  mq, lq = random_gaussian((4, 6))
  q = D.DiagGaussian(jnp.asarray(mq, jnp.float32), jnp.asarray(lq, jnp.float32))
  want = np_kl_diag(mq, np.exp(lq), 0.0, 1.0)
  np.testing.assert_allclose(D.kl_to_standard_normal(q), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(D.kl(q, D.standard_normal_like(q)), want, rtol=1e-5, atol=1e-5)


def test_kls_match_monte_carlo_estimates():
  (mq, lq), (mp, lp) = random_gaussian((3, 4)), random_gaussian((3, 4))
  q = D.DiagGaussian(jnp.asarray(mq, jnp.float32), jnp.asarray(lq, jnp.float32))
  p = D.DiagGaussian(jnp.asarray(mp, jnp.float32), jnp.asarray(lp, jnp.float32))
  n = 200_000
  z = jax.vmap(lambda k: D.sample(k, q))(jax.random.split(jax.random.PRNGKey(0), n))
  for p_dist, closed in ((p, D.kl(q, p)), (None, D.kl_to_standard_normal(q))):
    log_p = D.standard_normal_log_prob(z) if p_dist is None else D.log_prob(p_dist, z)
    ratio = np.asarray(D.log_prob(q, z) - log_p, np.float64)
    mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(n)
    assert np.all(np.abs(mc - np.asarray(closed)) < 5 * se + 1e-3), (mc, closed, se)


def test_sample_is_reparameterised_with_the_right_moments():
  q = D.DiagGaussian(jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.25, 4.0])))
  z = jax.vmap(lambda k: D.sample(k, q))(jax.random.split(jax.random.PRNGKey(1), 100_000))
  np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.03)
  np.testing.assert_allclose(z.var(0), [0.25, 4.0], rtol=0.03)
  grad = jax.grad(lambda m: D.sample(jax.random.PRNGKey(2), D.DiagGaussian(m, q.logvar)).sum())
  np.testing.assert_allclose(grad(q.mean), [1.0, 1.0])


def test_gaussian_log_probs_match_float64_formula():
  x, m = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))
  lv = RNG.normal(size=(3, 5))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  np.testing.assert_allclose(D.log_prob(D.DiagGaussian(f32(m), f32(lv)), f32(x)),
                             np_log_normal(x, m, np.exp(lv)).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(D.standard_normal_log_prob(f32(x)),
                             np_log_normal(x, 0.0, 1.0).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(D.gaussian_log_prob(f32(m), f32(lv), f32(x), 1),
                             np_log_normal(x, m, np.exp(lv)).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(D.gaussian_fixed_log_prob(f32(m), f32(x), 0.3, 1),
                             np_log_normal(x, m, 0.3).sum(-1), rtol=1e-5)


def np_log_sigmoid(l):
  return -np.logaddexp(0.0, -l)


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_bernoulli_log_prob_matches_float64_and_stays_finite(scale):
  logits = RNG.normal(size=(4, 6, 2)) * scale
  logits[0, 0, 0], logits[0, 0, 1] = 50.0, -50.0
  x = (RNG.random(size=logits.shape) > 0.5).astype(np.float64)
  x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0   # the worst case: confident and wrong
  want = (x * np_log_sigmoid(logits) + (1 - x) * np_log_sigmoid(-logits)).sum((-2, -1))
  got = D.bernoulli_log_prob(jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.float32), 2)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  grad = jax.grad(lambda l: D.bernoulli_log_prob(l, jnp.asarray(x, jnp.float32), 2).sum())(
      jnp.asarray(logits, jnp.float32))
  assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_categorical_log_prob_matches_float64_for_ints_and_one_hot(scale):
  logits = RNG.normal(size=(8, 10)) * scale
  logits[0] = -50.0
  logits[0, 3] = 50.0
  labels = RNG.integers(0, 10, size=8)
  labels[0] = 4                        # confident and wrong
  m = logits.max(-1, keepdims=True)
  log_softmax = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  want = log_softmax[np.arange(8), labels]
  l32 = jnp.asarray(logits, jnp.float32)
  got_int = D.categorical_log_prob(l32, jnp.asarray(labels, jnp.int32))
  got_hot = D.categorical_log_prob(l32, jax.nn.one_hot(labels, 10))
  assert np.all(np.isfinite(got_int))
  np.testing.assert_allclose(got_int, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_hot, want, rtol=1e-5, atol=1e-6)


def test_extreme_log_variances_stay_finite_and_accurate():
  lq, lp = np.array([-20.0, 20.0, -40.0, 40.0]), np.array([20.0, -20.0, 0.0, 0.0])
  q = D.DiagGaussian(jnp.zeros(4), jnp.asarray(lq, jnp.float32))
  p = D.DiagGaussian(jnp.ones(4), jnp.asarray(lp, jnp.float32))
  np.testing.assert_allclose(D.kl(q, p), np_kl_diag(0.0, np.exp(lq), 1.0, np.exp(lp)), rtol=1e-5)
  np.testing.assert_allclose(D.kl_to_standard_normal(q), np_kl_diag(0.0, np.exp(lq), 0.0, 1.0),
                             rtol=1e-5)
  np.testing.assert_allclose(D.log_prob(q, jnp.ones(4)),
                             np_log_normal(1.0, 0.0, np.exp(lq)).sum(), rtol=1e-5)


def test_logmeanexp_matches_float64():
  a = RNG.normal(size=(7, 3)) * 30
  want = np.log(np.mean(np.exp(a - a.max(0)), 0)) + a.max(0)
  np.testing.assert_allclose(D.logmeanexp(jnp.asarray(a, jnp.float32), 0), want, rtol=1e-5)


def test_cheap_softplus_matches_jax_softplus_over_a_wide_range():
  a = jnp.linspace(-200.0, 200.0, 4001)
  np.testing.assert_allclose(D.softplus(a), jax.nn.softplus(a), rtol=1e-6, atol=1e-7)
