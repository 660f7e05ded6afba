"""The objectives against exact likelihoods, separate computations and gradients."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jmvae_jax
from jmvae_jax import ConfigError, objectives, train
from configs import mnist
from tests import linear_gaussian as lg


def mnist_batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": (rng.random((n, 28, 28, 1)) > 0.5).astype(np.float32),
          "label": rng.integers(0, 10, n).astype(np.int32)}


def smoke(objective, **fields):
  c = mnist.get_config("smoke")
  c.objective.name = objective
  for k, v in fields.items():
    c.objective[k] = v
  return c


def per_example_mc(loss_fn, model, params, batch, n_samples, term):
  """The mean and standard error of a per-example term over n_samples draws of z."""
  keys = jax.random.split(jax.random.PRNGKey(7), n_samples)
  f = jax.jit(jax.vmap(lambda k: loss_fn(model, params, batch, k, reduce=False)[1][term]))
  vals = np.asarray(f(keys), np.float64)
  return vals.mean(0), vals.std(0) / np.sqrt(n_samples)


def test_jmvae_bound_is_below_exact_log_likelihood_by_kl_to_exact_posterior():
  model, loss_fn = jmvae_jax.build(lg.config("jmvae"))
  params = model.init(jax.random.PRNGKey(0))
  names = model.spec.names
  batch = lg.sample_data(params, names, 6, seed=1)
  elbo, se = per_example_mc(loss_fn, model, params, batch, 40_000, "elbo")
  q = model.encode(params, names, batch)
  for i in range(6):
    one = {n: batch[n][i] for n in names}
    log_p = lg.log_marginal(params, names, one)
    m, cov = lg.exact_posterior(params, names, one)
    gap = lg.kl_diag_to_full(np.asarray(q.mean[i], np.float64),
                             np.exp(np.asarray(q.logvar[i], np.float64)), m, cov)
    assert elbo[i] < log_p
    assert abs(elbo[i] - (log_p - gap)) < 5 * se[i] + 1e-3, (i, elbo[i], log_p, gap, se[i])


def test_jmvae_kl_is_jmvae_minus_alpha_times_separately_computed_kls():
  alpha = 0.37
  model, kl_fn = jmvae_jax.build(lg.config("jmvae_kl"))
  _, jm_fn = jmvae_jax.build(lg.config("jmvae"))
  kl_fn = functools.partial(kl_fn, alpha=alpha)
  params = model.init(jax.random.PRNGKey(3))
  batch = lg.sample_data(params, model.spec.names, 5, seed=2)
  rng = jax.random.PRNGKey(4)
  loss_kl, t_kl = kl_fn(model, params, batch, rng, reduce=False)
  loss_jm, t_jm = jm_fn(model, params, batch, rng, reduce=False)
  q = jax.tree.map(lambda a: np.asarray(a, np.float64), model.encode(params, ("w", "x"), batch))
  penalty = 0.0
  for n in ("x", "w"):
    u = jax.tree.map(lambda a: np.asarray(a, np.float64), model.encode(params, (n,), batch))
    vq, vu = np.exp(q.logvar), np.exp(u.logvar)
    penalty += 0.5 * np.sum(np.log(vu / vq) + (vq + (q.mean - u.mean) ** 2) / vu - 1, axis=-1)
  np.testing.assert_allclose(t_kl["elbo"], t_jm["elbo"], rtol=1e-6)
  np.testing.assert_allclose(t_kl["elbo_kl"], t_jm["elbo"] - alpha * penalty, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss_kl, -(t_jm["elbo"] - alpha * penalty), rtol=1e-5, atol=1e-5)
  loss_zero, _ = kl_fn(model, params, batch, rng, reduce=False, alpha=0.0)
  np.testing.assert_allclose(loss_zero, loss_jm, rtol=1e-6)


def test_warmup_scope_prior_scales_only_the_prior_kl():
  model, fn = jmvae_jax.build(lg.config("jmvae_kl"))
  params = model.init(jax.random.PRNGKey(3))
  batch = lg.sample_data(params, model.spec.names, 4, seed=2)
  rng = jax.random.PRNGKey(5)
  _, t = fn(model, params, batch, rng, reduce=False, alpha=0.5)
  recon = t["recon/x"] + t["recon/w"]
  pen = t["kl/x"] + t["kl/w"]
  prior, _ = fn(model, params, batch, rng, reduce=False, alpha=0.5, kl_weight=0.25)
  every, _ = fn(model, params, batch, rng, reduce=False, alpha=0.5, kl_weight=0.25,
                warmup_scope="all")
  np.testing.assert_allclose(prior, -(recon - 0.25 * t["kl/prior"] - 0.5 * pen), rtol=1e-5)
  np.testing.assert_allclose(every, -(recon - 0.25 * t["kl/prior"] - 0.125 * pen), rtol=1e-5)
  from jmvae_jax.builder import kl_weight
  assert [kl_weight(e, 4) for e in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
  assert kl_weight(3, 0) == 1.0


def nonzero_leaves(tree):
  return {jax.tree_util.keystr(p): bool(np.any(np.asarray(v) != 0))
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("name", sorted(n for n, o in objectives.REGISTRY.items() if not o.gan))
def test_every_parameter_an_objective_uses_gets_a_gradient(name):
  """(The GAN objectives' encoder losses are these; tests/test_gan.py trains them.)"""
  model, loss_fn = jmvae_jax.build(smoke(name, alpha=0.5))
  params = model.init(jax.random.PRNGKey(0))
  grads = jax.grad(lambda p: loss_fn(model, p, mnist_batch(), jax.random.PRNGKey(1))[0])(params)
  assert all(nonzero_leaves(grads).values()), [k for k, v in nonzero_leaves(grads).items() if not v]
  if name == "vae":   # the VAE has no label decoder or encoder at all
    assert set(params["decoder"]) == {"image"} and set(params["encoder"]) == {"image"}


def test_parameters_an_objective_does_not_use_get_exactly_zero_gradient():
  model, loss_fn = jmvae_jax.build(smoke("jmvae_kl", alpha=0.0))
  params = model.init(jax.random.PRNGKey(0))
  grads = jax.grad(lambda p: loss_fn(model, p, mnist_batch(), jax.random.PRNGKey(1))[0])(params)
  flags = nonzero_leaves(grads["encoder"])
  assert not any(v for k, v in flags.items() if k.startswith("['image']") or
                 k.startswith("['label']"))   # alpha = 0: unimodal encoders untouched
  assert all(v for k, v in flags.items() if k.startswith("['image+label']"))


def test_custom_loss_from_a_user_module_is_selected_and_trains_only_what_it_uses():
  config = smoke("tests.custom_losses:image_only_elbo")
  model, loss_fn = jmvae_jax.build(config)
  assert set(model.spec.encoders) == {("image", "label"), ("image",), ("label",)}
  optimizer = train.make_optimizer(config.optim)
  state = train.init_state(model, optimizer, jax.random.PRNGKey(0))
  before = jax.tree.map(np.asarray, state.params)
  step = train.jit_train_step(model, loss_fn, optimizer)
  batch, rng = mnist_batch(64), jax.random.PRNGKey(2)
  first = float(loss_fn(model, state.params, batch, rng)[0])
  for _ in range(40):
    state, metrics = step(state, batch, rng, jnp.float32(1.0))
  assert set(metrics) >= {"recon/image", "kl/prior", "elbo", "loss", "grad_norm"}
  assert float(loss_fn(model, state.params, batch, rng)[0]) < first - 10
  for untouched in (("decoder", "label"), ("encoder", "image"), ("encoder", "label")):
    a, b = before[untouched[0]][untouched[1]], state.params[untouched[0]][untouched[1]]
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  changed = jax.tree.leaves(state.params["decoder"]["image"])
  assert any(not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(before["decoder"]["image"]), changed))


def three_modality_config():
  c = mnist.get_config("smoke")
  c.model.modalities = ml_collections.ConfigDict()
  c.model.modalities.image = dict(likelihood="bernoulli", shape=(8, 8, 1), hidden=(32,),
                                  decoder_hidden=(32,))
  c.model.modalities.label = dict(likelihood="categorical", shape=(4,), hidden=(16,),
                                  decoder_hidden=(16,))
  c.model.modalities.sound = dict(likelihood="gaussian", shape=(5,), hidden=(16,),
                                  decoder_hidden=(16,), learn_variance=True)
  c.objective.alpha = 0.1
  return c


def test_three_modality_jmvae_kl_builds_and_a_few_steps_lower_its_loss():
  config = three_modality_config()
  model, loss_fn = jmvae_jax.build(config)
  assert set(model.spec.encoders) == {("image", "label", "sound"), ("image",), ("label",),
                                      ("sound",)}
  rng = np.random.default_rng(0)
  label = rng.integers(0, 4, 128)
  batch = {"image": (rng.random((128, 8, 8, 1)) < (label[:, None, None, None] + 1) / 5
                     ).astype(np.float32),
           "label": label.astype(np.int32),
           "sound": (label[:, None] + rng.normal(size=(128, 5)) * 0.1).astype(np.float32)}
  optimizer = train.make_optimizer(config.optim)
  state = train.init_state(model, optimizer, jax.random.PRNGKey(0))
  eval_loss = jax.jit(lambda p: loss_fn(model, p, batch, jax.random.PRNGKey(9))[1])
  first = eval_loss(state.params)
  step = train.jit_train_step(model, loss_fn, optimizer)
  for i in range(30):
    state, _ = step(state, batch, jax.random.PRNGKey(1), jnp.float32(1.0))
  last = eval_loss(state.params)
  assert set(last) >= {"kl/image", "kl/label", "kl/sound", "recon/sound", "elbo_kl"}
  assert float(last["loss"]) < float(first["loss"]) - 5
  z = jnp.zeros((3, model.spec.latent_dim))
  assert model.generate(state.params, "sound", z).shape == (3, 5)
  assert model.translate(state.params, jax.random.PRNGKey(0), {"sound": batch["sound"][:3]},
                         "label").shape == (3, 4)


def test_a_loss_called_on_out_of_range_data_says_which_modality():
  """uint8 images, labels past the last class and nan gave nan or inf losses silently;
  now a one-line ConfigError. Under jit only shapes can be checked, and valid data runs."""
  model, loss_fn = jmvae_jax.build(smoke("jmvae_kl"))
  params = model.init(jax.random.PRNGKey(0))
  batch = mnist_batch(4)
  rng = jax.random.PRNGKey(1)
  bad = {
      "has values in \\[0, 255\\].*'image' \\(bernoulli\\) expects values in \\[0, 1\\]":
          dict(batch, image=(np.asarray(batch["image"]) * 255).astype(np.uint8)),
      "'label' \\(categorical\\) expects labels in \\[0, 9\\]":
          dict(batch, label=np.asarray(batch["label"]) + 10),
      "batch\\['image'\\] holds nan or inf":
          dict(batch, image=np.where(np.arange(784).reshape(28, 28, 1) == 3, np.nan,
                                     np.asarray(batch["image"]))),
  }
  for message, b in bad.items():
    with pytest.raises(ConfigError, match=message):
      loss_fn(model, params, b, rng)
  eager, _ = loss_fn(model, params, batch, rng)
  jitted, _ = jax.jit(lambda p, b: loss_fn(model, p, b, rng))(params, batch)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5)
  assert np.isfinite(eager)


def test_a_loss_asks_only_for_the_modalities_its_model_reads():
  """A VAE reads x alone: its loss runs on a batch without the label (and with other
  keys), as the raw objective does; JMVAE-kl's names the missing label."""
  vae, vae_loss = jmvae_jax.build(smoke("vae"))
  assert vae.spec.read == ("image",)
  params = vae.init(jax.random.PRNGKey(0))
  batch = mnist_batch(4)
  rng = jax.random.PRNGKey(1)
  raw, _ = objectives.get("vae").fn(vae, params, {"image": batch["image"]}, rng)
  checked, _ = vae_loss(vae, params, {"image": batch["image"], "id": np.arange(4)}, rng)
  np.testing.assert_allclose(checked, raw, rtol=1e-6)
  kl, kl_loss = jmvae_jax.build(smoke("jmvae_kl"))
  with pytest.raises(ConfigError, match="batch has no modality 'label'"):
    kl_loss(kl, kl.init(jax.random.PRNGKey(0)), {"image": batch["image"]}, rng)
