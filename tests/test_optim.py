"""The fused clipped Adam against optax's chain and a float64 numpy re-derivation."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jmvae_jax import ConfigError, optim, train


def _grads(rng, scale):
  """A small tree with a matrix, a vector and a scalar leaf."""
  return {"a": {"kernel": rng.normal(size=(7, 5)) * scale, "bias": rng.normal(size=5) * scale},
          "b": np.asarray(rng.normal() * scale)}


def _numpy_clipped_adam(params, grad_seq, lr, b1, b2, eps, max_norm, max_value):
  """The authors' update written out in float64: clip the global norm, clip each
  element, then Adam with bias correction and eps outside the square root."""
  p = {k: np.asarray(v, np.float64) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  mu = {k: np.zeros_like(v) for k, v in p.items()}
  nu = {k: np.zeros_like(v) for k, v in p.items()}
  for t, grads in enumerate(grad_seq, start=1):
    g = {k: np.asarray(v, np.float64) for k, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
    norm = np.sqrt(sum(np.sum(v ** 2) for v in g.values()))
    factor = 1.0 if (not max_norm or norm < max_norm) else max_norm / norm
    for k in p:
      gk = g[k] * factor
      if max_value:
        gk = np.clip(gk, -max_value, max_value)
      mu[k] = b1 * mu[k] + (1 - b1) * gk
      nu[k] = b2 * nu[k] + (1 - b2) * gk ** 2
      p[k] = p[k] - lr * (mu[k] / (1 - b1 ** t)) / (np.sqrt(nu[k] / (1 - b2 ** t)) + eps)
  return p


@pytest.mark.parametrize("max_norm,max_value", [(5.0, 1.0), (0.0, 1.0), (5.0, 0.0), (0.0, 0.0)])
def test_fused_adam_matches_the_optax_chain_and_a_numpy_rederivation(max_norm, max_value):
  rng = np.random.default_rng(0)
  params = jax.tree.map(jnp.float32, _grads(rng, 1.0))
  # Gradient sizes that do and do not trigger each clipping (global norms ~1 to ~40).
  grad_seq = [jax.tree.map(jnp.float32, _grads(rng, s)) for s in (0.2, 6.0, 0.05, 3.0, 1.0)]
  lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-4
  fused = optim.clipped_adam(lr, b1, b2, eps, clip_global_norm=max_norm, clip_value=max_value)
  chain = optim.optax_chain(lr, b1, b2, eps, clip_global_norm=max_norm, clip_value=max_value)

  def run(opt):
    p, s = params, opt.init(params)
    step = jax.jit(lambda g, s, p: opt.update(g, s, p))
    for g in grad_seq:
      u, s = step(g, s, p)
      p = optax.apply_updates(p, u)
    return p, s

  p_fused, s_fused = run(fused)
  p_chain, _ = run(chain)
  for a, b in zip(jax.tree.leaves(p_fused), jax.tree.leaves(p_chain)):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
  want = _numpy_clipped_adam(params, grad_seq, lr, b1, b2, eps, max_norm, max_value)
  got = {k: np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(p_fused)[0]}
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=2e-6)
  assert int(s_fused.count) == len(grad_seq)
  # The clipping did something: without it the parameters move elsewhere.
  if max_norm or max_value:
    loose = _numpy_clipped_adam(params, grad_seq, lr, b1, b2, eps, 0.0, 0.0)
    assert max(np.max(np.abs(loose[k] - want[k])) for k in want) > 1e-3


@pytest.mark.parametrize("field,value", [("learning_rate", 0.0), ("clip_global_norm", -1.0),
                                         ("clip_value", -0.5), ("eps", -1e-4), ("b1", 1.0)])
def test_bad_optimiser_fields_are_refused_by_name(field, value):
  cfg = ml_collections.ConfigDict(dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-4,
                                       clip_global_norm=5.0, clip_value=1.0))
  cfg[field] = value
  with pytest.raises(ConfigError, match=rf"config\.optim\.{field}="):
    train.make_optimizer(cfg)


def test_a_checkpoint_with_the_optax_chain_state_is_refused_with_a_clear_error(tmp_path):
  from configs import shapes
  from jmvae_jax.workdir import Workdir
  config = shapes.get_config("smoke")
  params = {"w": jnp.zeros((3, 2))}
  chain = optim.optax_chain(1e-3, clip_global_norm=5.0, clip_value=1.0)
  old = train.TrainState(step=jnp.int32(7), params=params, opt_state=chain.init(params))
  with Workdir(str(tmp_path), config, write=True) as wd:
    wd.begin_writing()
    wd.save(7, old, {"epoch": 0})
  new = train.TrainState(step=jnp.int32(0), params=params,
                         opt_state=train.make_optimizer(config.optim).init(params))
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), new)
  with pytest.raises(ConfigError, match=r"optimiser state layout .*older jmvae-jax"):
    Workdir(str(tmp_path), config, write=False).restore(abstract)
