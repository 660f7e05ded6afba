"""The GAN objectives: who each update moves, the losses against numpy, a discriminator
that learns, the step's order, resuming, and bad input."""
import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import shapes64
from jmvae_jax import ConfigError, builder, gan, schema, train

SMOKE = schema.check(shapes64.get_config("smoke"))


def _setup(objective="jmvae_gan", norm="none", **gan_fields):
  c = shapes64.get_config("smoke")
  c.objective.name = objective
  c.model.norm = norm
  for k, v in gan_fields.items():
    c.gan[k] = v
  c = schema.check(c)
  model, loss_fn = builder.from_checked(c)
  optimizer = train.make_optimizers(c, model)
  state = train.init_state(model, optimizer, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((6, 64, 64, 3)).astype(np.float32),
           "attributes": np.where(rng.random((6, 7)) < 0.5, -1.0, 1.0).astype(np.float32)}
  return model, loss_fn, optimizer, state, batch


def _leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _owner(model, path):
  if path.startswith("['discriminator']"):
    return "discriminator"
  return "decoder" if path.startswith(f"['decoder']['{model.spec.x}']") else "encoder"


@pytest.mark.parametrize("objective,prior_noise", [("jmvae_gan", "uniform"),
                                                   ("cvae_gan", "uniform"),
                                                   ("jmvae_gan", "from_w")])
def test_each_update_moves_its_own_player_and_the_step_makes_them_in_order(objective,
                                                                            prior_noise):
  """Encoder, decoder, discriminator: each update changes its player's parameters and no
  other's, bit for bit; the step is the three in order, each from the last one's (the
  prior noise from_w drawn from the encoders the first update left)."""
  model, loss_fn, opt, state, batch = _setup(objective, prior_noise=prior_noise)
  rng = jax.random.PRNGKey(11)

  @jax.jit
  def chain(state):
    keys = jax.random.split(jax.random.fold_in(rng, state.step), 4)
    o = state.opt_state
    p1, _, _ = gan.encoder_update(model, loss_fn, opt.encoder, o["encoder"], state.params,
                                  batch, keys[0], 0.5)
    z_prior = gan.prior_noise(model, p1, batch, keys[3])
    p2, _, _ = gan.decoder_update(model, opt.decoder, o["decoder"], p1, batch, keys[1], z_prior)
    p3, _, _ = gan.discriminator_update(model, opt.discriminator, o["discriminator"], p2,
                                        batch, keys[2], z_prior)
    new, terms = gan.train_step(state, batch, rng, 0.5, model=model, loss_fn=loss_fn,
                                optimizer=opt)
    return (state.params, p1, p2, p3), new, terms

  stages, new, terms = chain(state)
  for player, (a, b) in zip(gan.PLAYERS, zip(stages, stages[1:])):
    before, after = _leaves(a), _leaves(b)
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    mine = {k for k in before if _owner(model, k) == player}
    assert moved <= mine and len(moved) >= 0.9 * len(mine), (player, mine - moved)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(stages[3])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(new.step) == 1 and set(new.opt_state) == set(gan.PLAYERS)
  assert {"gan/decoder_loss", "gan/discriminator_loss", "gan/d_accuracy", "loss",
          "grad_norm/encoder", "grad_norm/decoder", "grad_norm/discriminator"} <= set(terms)


@pytest.mark.parametrize("objective,encoder_decoders", [("vae_gan", set()),
                                                        ("cmma_gan", set()),
                                                        ("jmvae_gan", {"attributes"})])
def test_the_players_split_the_parameters(objective, encoder_decoders):
  """Every parameter belongs to exactly one player; x's decoder is the decoder's."""
  model, _, _, state, _ = _setup(objective)
  parts = {p: _leaves(gan.player_params(model, state.params, p)) for p in gan.PLAYERS}
  assert sum(len(v) for v in parts.values()) == len(_leaves(state.params))
  assert set(gan.player_params(model, state.params, "encoder")["decoder"]) == encoder_decoders
  rebuilt = state.params
  for p in gan.PLAYERS:
    rebuilt = gan.with_player(model, rebuilt, p, gan.player_params(model, state.params, p))
  assert jax.tree.structure(rebuilt) == jax.tree.structure(state.params)


def test_the_losses_equal_a_numpy_recomputation():
  """From the networks' own outputs (D's logits, the decoder's logits), the three losses
  recomputed in float64 numpy."""
  model, loss_fn, _, state, batch = _setup()
  params, key = state.params, jax.random.PRNGKey(7)
  z_prior = gan.prior_noise(model, state.params, batch, jax.random.PRNGKey(8))
  dec, _ = gan.decoder_loss(model, params, batch, key, z_prior)
  disc, terms = gan.discriminator_loss(model, params, batch, key, z_prior)
  # the same draws, the networks' outputs fetched one by one
  cond = {"attributes": batch["attributes"]}
  q = model.posterior(params, batch)
  eps_z = np.asarray(jax.random.normal(key, q.mean.shape))
  z = np.asarray(q.mean) + np.exp(0.5 * np.asarray(q.logvar)) * eps_z
  logits = np.asarray(model.decode(params, "image", jnp.asarray(z, jnp.float32)), np.float64)
  x_rec = 1 / (1 + np.exp(-logits))
  x_prior = 1 / (1 + np.exp(-np.asarray(model.decode(params, "image", z_prior), np.float64)))
  d = lambda img: np.asarray(model.discriminate(params, jnp.asarray(img, jnp.float32), cond)[0],
                             np.float64)
  sig = lambda a: 1 / (1 + np.exp(-a))
  eps = np.finfo(np.float32).eps
  x = batch["image"].astype(np.float64).reshape(6, -1)
  recon = np.mean(np.sum(x * logits.reshape(6, -1) - np.logaddexp(0, logits.reshape(6, -1)), 1))
  want_dec = -recon - np.mean(np.log(sig(d(x_rec)) + eps)) - np.mean(np.log(sig(d(x_prior)) + eps))
  want_disc = (-np.mean(np.log(sig(d(batch["image"])) + eps))
               - np.mean(np.log(1 - sig(d(x_prior)) + eps))
               - np.mean(np.log(1 - sig(d(x_rec)) + eps)))
  np.testing.assert_allclose(float(dec), want_dec, rtol=1e-5)
  np.testing.assert_allclose(float(disc), want_disc, rtol=1e-4)
  np.testing.assert_allclose(float(terms["gan/d_prior"]), np.mean(sig(d(x_prior))), rtol=1e-4)
  np.testing.assert_allclose(float(terms["gan/d_reconstructed"]), np.mean(sig(d(x_rec))),
                             rtol=1e-4)


def test_the_discriminator_learns_a_fixed_real_batch_from_a_fixed_fake_one():
  model, _, _, state, batch = _setup()
  real = np.zeros((6, 64, 64, 3), np.float32)
  real[:, 16:48, 16:48] = 1.0                        # a square on black
  fake = np.random.default_rng(1).random((6, 64, 64, 3)).astype(np.float32)   # noise
  opt = optax.adam(1e-3)

  def loss(p):
    params = dict(state.params, discriminator=p)
    lr = model.discriminate(params, real)[0]
    lf = model.discriminate(params, fake)[0]
    return -jnp.mean(gan.log_d(lr)) - jnp.mean(gan.log_not_d(lf)), (lr, lf)

  @jax.jit
  def step(p, s):
    (value, logits), g = jax.value_and_grad(loss, has_aux=True)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, value, logits

  p, s = state.params["discriminator"], opt.init(state.params["discriminator"])
  first = None
  for _ in range(25):
    p, s, value, (lr, lf) = step(p, s)
    first = float(value) if first is None else first
  assert float(value) < 0.1 * first
  assert np.all(np.asarray(lr) > 0) and np.all(np.asarray(lf) < 0)   # D(real) > 1/2 > D(fake)


def test_features_reconstruction_is_a_gaussian_on_the_chosen_layer():
  model, _, _, state, batch = _setup(reconstruction="features", feature_layer=1)
  z = jnp.zeros((6, model.spec.latent_dim))
  got = np.asarray(gan.reconstruction(model, state.params, batch, z))
  cond = {"attributes": batch["attributes"]}
  real = np.asarray(model.discriminate(state.params, batch["image"], cond)[1][1], np.float64)
  mean = np.asarray(model.generate(state.params, "image", z))
  fake = np.asarray(model.discriminate(state.params, mean, cond)[1][1], np.float64)
  diff = (real - fake).reshape(6, -1)
  want = -0.5 * np.sum(np.log(2 * np.pi) + diff ** 2, 1)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_gan_run_resumed_halfway_ends_as_one_that_was_not(tmp_path):
  c = shapes64.get_config("smoke")
  c.data.data_dir = str(tmp_path / "data")
  c.train.epochs, c.train.checkpoint_every_steps, c.train.eval_every_epochs = 2, 6, 0
  straight = train.train_and_evaluate(c, str(tmp_path / "straight"))
  # "halves": the same run with only its halfway checkpoint (step 6), resumed from there
  shutil.copytree(tmp_path / "straight", tmp_path / "halves")
  shutil.rmtree(tmp_path / "halves" / "checkpoints" / "12")
  train.train_and_evaluate(c, str(tmp_path / "halves"))
  from jmvae_jax import restore
  a = restore.load_trained(c, str(tmp_path / "straight"))[2]
  b = restore.load_trained(c, str(tmp_path / "halves"))[2]
  assert set(a.params) == {"encoder", "decoder", "discriminator"} and int(b.step) == 12
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params,
                                                                              b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert "gan/d_accuracy" in straight["train"]
  # the same workdir with the discriminator gone (or back) is another architecture
  c.objective.name = "jmvae_kl"
  with pytest.raises(ConfigError, match=r"another architecture \(config.objective.name: "
                                        r"'jmvae_gan' there, 'jmvae_kl' here\)"):
    train.train_and_evaluate(c, str(tmp_path / "halves"))
  os.remove(tmp_path / "halves" / "config.json")
  with pytest.raises(ConfigError, match=r"does not match .*: params/discriminator/conv0"):
    train.train_and_evaluate(c, str(tmp_path / "halves"))


@pytest.mark.parametrize("field,value,message", [
    ("network", "mlp", r"config.objective.name='jmvae_gan' puts a discriminator on x, which "
                       r"must be an image of network 'conv64'"),
    ("feature_layer", 5, r"config.gan.feature_layer=5 is not a layer of the discriminator; "
                         r"allowed: 0-4"),
    ("prior_noise", "cauchy", r"config.gan.prior_noise='cauchy' is not valid"),
    ("vae_gan", "from_w", r"config.gan.prior_noise='from_w' draws z from q\(z\|w\), but "
                          r"'vae_gan' has no encoder of \['attributes'\]"),
    ("decoder_optim", {"learning_rate": -1.0}, r"config.gan.decoder_optim.learning_rate=-1.0"),
])
def test_bad_gan_configs_are_one_line_naming_the_field(field, value, message):
  c = shapes64.get_config("smoke")
  if field == "network":
    c.model.modalities.image = dict(likelihood="bernoulli", shape=(64, 64, 3), hidden=(8,),
                                    decoder_hidden=(8,))
  elif field == "vae_gan":
    c.objective.name, c.gan.prior_noise = field, value
  else:
    c.gan[field] = value
  with pytest.raises(ConfigError, match=message) as e:
    builder.build(c)
  assert "\n" not in str(e.value)


def test_the_prior_noise_draws():
  """U(-1, 1) and N(0, I) from the key; from_w: mean + sd * the same normal draw, read
  from q(z|w) of each example's attributes (JMVAE-GAN), and N(0, I) itself for CVAE-GAN,
  whose decoder is conditioned on w; the evaluation's draw keyed per example likewise."""
  from jmvae_jax.eval import gan_metrics
  key = jax.random.PRNGKey(9)
  eps = np.asarray(jax.random.normal(key, (6, 4)))
  for objective, noise in (("jmvae_gan", "uniform"), ("jmvae_gan", "normal"),
                           ("jmvae_gan", "from_w"), ("cvae_gan", "from_w")):
    model, _, _, state, batch = _setup(objective, prior_noise=noise)
    assert model.spec.latent_dim == 4
    z = np.asarray(gan.prior_noise(model, state.params, batch, key))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(np.arange(6))
    z_eval = np.asarray(gan_metrics._prior_noise(model, state.params, batch, keys))
    each = np.stack([np.asarray(jax.random.normal(k, (4,))) for k in keys])
    if noise == "uniform":
      want = np.asarray(jax.random.uniform(key, (6, 4), minval=-1.0, maxval=1.0))
      want_eval = np.stack([np.asarray(jax.random.uniform(k, (4,), minval=-1.0, maxval=1.0))
                            for k in keys])
    elif objective == "jmvae_gan" and noise == "from_w":
      enc = model.encode(state.params, ("attributes",), {"attributes": batch["attributes"]})
      mean, sd = np.asarray(enc.mean), np.exp(0.5 * np.asarray(enc.logvar))
      want, want_eval = mean + sd * eps, mean + sd * each
      assert np.abs(mean).max() > 1e-3   # not N(0, I) by accident
    else:
      want, want_eval = eps, each
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_eval, want_eval, rtol=1e-5, atol=1e-6)


def _sym_sqrt(a):
  w, v = np.linalg.eigh(a)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_and_discriminator_accuracy_against_numpy():
  """Through the masked loop (a padded batch) against the same quantities from numpy:
  the covariances' root through the symmetric form (S1^1/2 S2 S1^1/2)^1/2."""
  from jmvae_jax.eval import classifier, gan_metrics
  model, _, _, state, batch = _setup()
  layers = classifier._mlp_init(jax.random.key(4), (64 * 64 * 3, 16, 7))
  mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
  fds = gan_metrics.frechet_distances(model, state.params, layers, [(batch, mask)], seed=3,
                                      mesh=None)
  index = np.arange(5, dtype=np.int32)
  five = {k: v[:5] for k, v in batch.items()}
  # from w: z = mean + sd * the index-keyed normal draw of q(z|w), read from the encoder
  q = model.posterior(state.params, {"attributes": five["attributes"]})
  eps = np.asarray(gan_metrics._normal(gan_metrics._keys(3, index, 3), model.spec.latent_dim))
  z_w = np.asarray(q.mean) + np.exp(0.5 * np.asarray(q.logvar)) * eps
  generated = {"prior": gan_metrics.prior_images(model, state.params, five, index, 3),
               "from_w": model.generate(state.params, "image", jnp.asarray(z_w, jnp.float32))}
  feats = lambda x: np.maximum(np.asarray(x).reshape(len(x), -1).astype(np.float64)
                               @ np.asarray(layers[0]["w"], np.float64)
                               + np.asarray(layers[0]["b"], np.float64), 0)
  f1 = feats(batch["image"][:5])
  m1, s1 = f1.mean(0), np.cov(f1.T, bias=True)
  r = _sym_sqrt(s1)
  for kind, images in generated.items():
    f2 = feats(images)
    m2, s2 = f2.mean(0), np.cov(f2.T, bias=True)
    want = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(_sym_sqrt(r @ s2 @ r))
    np.testing.assert_allclose(fds[kind], want, rtol=1e-4, atol=1e-3)
  acc = gan_metrics.discriminator_accuracy(model, state.params, [(batch, mask)], seed=3,
                                           mesh=None)
  real = np.asarray(model.discriminate(state.params, batch["image"][:5])[0]) > 0
  assert acc["real"]["mean"] == pytest.approx(real.mean())
  assert set(acc) == {"real", "reconstructed", "prior"}


def test_with_features_the_encoders_loss_trades_the_pixel_term_for_the_features():
  """encoder_loss = the bound's loss + the pixel term - the feature term at its own z."""
  model, loss_fn, _, state, batch = _setup(reconstruction="features")
  key = jax.random.PRNGKey(2)
  got, _ = gan.encoder_loss(model, loss_fn, state.params, batch, key, 1.0)
  base, _ = loss_fn(model, state.params, batch, key, kl_weight=1.0)
  q = model.posterior(state.params, batch)
  z = q.mean + jnp.exp(0.5 * q.logvar) * jax.random.normal(jax.random.fold_in(key, 1),
                                                             q.mean.shape)
  pixel = np.mean(np.asarray(model.log_likelihood(state.params, "image", z, batch["image"])))
  feat = np.mean(np.asarray(gan.reconstruction(model, state.params, batch, z)))
  np.testing.assert_allclose(float(got), float(base) + pixel - feat, rtol=1e-5)


def test_each_player_keeps_the_batch_norm_averages_of_its_own_networks():
  """With batch norm, the encoder update keeps the averages its loss leaves for the
  encoders (computed again here from that loss alone); the image decoder's come from the
  decoder update, not from the encoder update's call of it."""
  from jmvae_jax import model as model_lib
  model, loss_fn, opt, state, batch = _setup(norm="batch")
  rng = jax.random.PRNGKey(3)
  new, _ = jax.jit(lambda s: gan.train_step(s, batch, rng, 0.5, model=model, loss_fn=loss_fn,
                                            optimizer=opt))(state)
  key = jax.random.split(jax.random.fold_in(rng, 0), 4)[0]

  def encoder_stats(params):
    with model_lib.collect_batch_stats() as stats:
      gan.encoder_loss(model, loss_fn, params, batch, key, 0.5)
    return dict(stats)
  stats = jax.jit(encoder_stats)(state.params)
  assert set(stats) == {("encoder", "attributes+image"), ("encoder", "image"),
                        ("decoder", "image")}
  for kind, k in [("encoder", "attributes+image"), ("encoder", "image")]:
    for a, b in zip(jax.tree.leaves(stats[(kind, k)]),
                    jax.tree.leaves(new.params["batch_stats"][kind][k])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  image = [np.asarray(v) for v in jax.tree.leaves(new.params["batch_stats"]["decoder"]["image"])]
  assert not any(np.allclose(a, b) for a, b in zip(jax.tree.leaves(stats[("decoder", "image")]),
                                                   image))
  assert not any(np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(state.params["batch_stats"]["decoder"]["image"]), image))


def _toy_inception(path):
  """A stand-in for Inception weights: a SavedModel of 6 features per image (each
  channel's mean over the image and over its top-left quarter), with Inception's input
  contract."""
  import tensorflow as tf

  class Toy(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
    def __call__(self, x):
      return tf.concat([tf.reduce_mean(x, [1, 2]), tf.reduce_mean(x[:, :150, :150], [1, 2])],
                       -1)
  tf.saved_model.save(Toy(), str(path))


def test_the_standard_fid_reads_the_users_savedmodel_and_matches_numpy(tmp_path):
  """The FID through eval.inception_path against a float64 numpy computation: the
  features of the resized images by hand, the trace of the root as
  Tr((S1^1/2 S2 S1^1/2)^1/2) from symmetric eigendecompositions."""
  import tensorflow as tf
  from jmvae_jax.eval import gan_metrics, inception
  model, _, _, state, batch = _setup()
  brightness = np.random.default_rng(1).uniform(0.2, 1.0, (6, 1, 1, 1)).astype(np.float32)
  batch = dict(batch, image=batch["image"] * brightness)   # real images that differ
  _toy_inception(tmp_path / "toy")
  real = np.array([1, 1, 1, 1, 1, 0], bool)   # the last row is padding
  got = inception.fid(model, state.params, [(batch, real)] * 2, str(tmp_path / "toy"))
  generated = np.asarray(gan_metrics.prior_images(model, state.params, batch,
                                                  np.arange(6, 12, dtype=np.int32), 0))
  first = np.asarray(gan_metrics.prior_images(model, state.params, batch,
                                              np.arange(6, dtype=np.int32), 0))

  def feats(images):
    x = tf.image.resize(np.clip(images, 0, 1), (299, 299), method="bilinear").numpy()
    x = x.astype(np.float64)
    return np.concatenate([x.mean((1, 2)), x[:, :150, :150].mean((1, 2))], -1)

  def gaussian(f):
    return f.mean(0), np.cov(f, rowvar=False, bias=True)

  def sqrtm(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

  f_real = feats(np.concatenate([batch["image"][real]] * 2))
  f_gen = feats(np.concatenate([first[real], generated[real]]))
  (m1, s1), (m2, s2) = gaussian(f_real), gaussian(f_gen)
  root = sqrtm(s1)
  want = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(root @ s2 @ root))
  # float32 features; the root's near-zero eigenvalues (an untrained decoder's images
  # barely vary) amplify their rounding, hence 1e-3
  np.testing.assert_allclose(got, want, rtol=1e-3)
  with pytest.raises(ConfigError, match=r"config.eval.inception_path='.*nowhere' is not a "
                     r"TensorFlow SavedModel directory"):
    inception.check_path(str(tmp_path / "nowhere"))


def test_the_balance_pauses_the_player_that_is_far_ahead_or_behind():
  """Larsen et al.'s balance: the gates from D's two costs recomputed in numpy, for
  settings that pause D, pause the decoder, and would pause both (then neither pauses);
  in a step with D paused its parameters and optimiser state stay bit for bit."""
  model, loss_fn, opt, state, batch = _setup(equilibrium=1.0)
  z_prior = gan.prior_noise(model, state.params, batch, jax.random.PRNGKey(5))
  cond = {"attributes": batch["attributes"]}
  sig = lambda a: 1 / (1 + np.exp(-np.asarray(a, np.float64)))
  eps = np.finfo(np.float32).eps
  real = sig(model.discriminate(state.params, batch["image"], cond)[0])
  fake = sig(model.discriminate(state.params, model.generate(state.params, "image", z_prior,
                                                             cond), cond)[0])
  costs = np.array([-np.mean(np.log(real + eps)), -np.mean(np.log(1 - fake + eps))])
  lo, hi = costs.min(), costs.max()
  assert hi > lo
  import dataclasses
  for eq, margin, want in ((hi + 0.3, 0.2, (True, False)),      # both under eq - margin
                           (lo - 0.3, 0.2, (False, True)),      # both over eq + margin
                           ((lo + hi) / 2, (hi - lo) / 4, (True, True)),   # both would
                           ((lo + hi) / 2, hi - lo + 0.1, (True, True))):   # neither
    spec = dataclasses.replace(model.gan, equilibrium=float(eq), margin=float(margin))
    tuned = gan.GanModel(model.spec, spec)
    got = gan.balance(tuned, state.params, batch, z_prior, jax.random.PRNGKey(2))
    ahead, behind = np.any(costs < eq - margin), np.any(costs > eq + margin)
    assert (not behind or ahead, not ahead or behind) == want    # the rule, in numpy
    assert (bool(got[0]), bool(got[1])) == want, (eq, margin, costs)
    # pause_d_on="fake": only the prior images' cost says D is far ahead; "mean": the mean
    for rule, judged in (("fake", costs[1]), ("mean", costs.mean())):
      ruled = gan.GanModel(model.spec, dataclasses.replace(spec, pause_d_on=rule))
      got = gan.balance(ruled, state.params, batch, z_prior, jax.random.PRNGKey(2))
      ahead = judged < eq - margin
      assert (bool(got[0]), bool(got[1])) == (not behind or ahead, not ahead or behind)
  # one step with D far ahead: D and its Adam state untouched, the decoder moved
  spec = dataclasses.replace(model.gan, equilibrium=float(hi + 3.0), margin=1.0)
  tuned = gan.GanModel(model.spec, spec)
  new, terms = jax.jit(lambda s: gan.train_step(s, batch, jax.random.PRNGKey(1), 0.5,
                                                model=tuned, loss_fn=loss_fn,
                                                optimizer=opt))(state)
  assert float(terms["gan/updates/discriminator"]) == 0 and float(terms["gan/updates/decoder"])
  for a, b in zip(jax.tree.leaves((state.params["discriminator"],
                                   state.opt_state["discriminator"])),
                  jax.tree.leaves((new.params["discriminator"], new.opt_state["discriminator"]))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(jax.tree.leaves(state.params["decoder"]["image"])[0]),
                            np.asarray(jax.tree.leaves(new.params["decoder"]["image"])[0]))


def test_log_d_exact_keeps_the_gradient_that_plus_eps_loses():
  """log D and log(1 - D) against float64 closed forms; at a logit of -30 (D far under
  float32's eps) the authors' log(D + eps) has a gradient of about D / eps, nearly 0,
  and the exact log-sigmoid one of about 1."""
  logits = np.array([-30.0, -5.0, 0.0, 5.0, 30.0], np.float32)
  l64 = logits.astype(np.float64)
  sig = 1 / (1 + np.exp(-l64))
  eps = np.finfo(np.float32).eps
  np.testing.assert_allclose(gan.log_d(logits), np.log(sig + eps), rtol=1e-5)
  np.testing.assert_allclose(gan.log_d(logits, "exact"), -np.logaddexp(0, -l64), rtol=1e-5)
  np.testing.assert_allclose(gan.log_not_d(logits, "exact"), -np.logaddexp(0, l64), rtol=1e-5)
  grad = lambda how: float(jax.grad(lambda l: gan.log_d(l, how))(jnp.float32(-30.0)))
  assert grad("plus_eps") == pytest.approx(np.exp(-30.0) / eps, rel=1e-3)
  assert grad("exact") == pytest.approx(1.0, rel=1e-6)
  c = shapes64.get_config("smoke")
  c.gan.log_d = "exact"
  assert builder.build(c)[0].gan.log_d == "exact"


def test_instance_noise_reaches_every_image_d_judges_and_nothing_else():
  """With gan.instance_noise = sigma, each image D judges in the two GAN losses is the
  clean image plus fresh N(0, sigma^2) noise: (seen - clean) has mean 0 and sd sigma,
  uncorrelated between images; the reconstruction term does not change."""
  sigma = 0.3
  model, _, _, state, batch = _setup(instance_noise=sigma)
  clean_model = _setup()[0]
  seen, judge = [], model.discriminate
  model.discriminate = lambda params, x, cond=None: seen.append(np.asarray(x)) or judge(
      params, x, cond)
  key = jax.random.PRNGKey(3)
  z_prior = gan.prior_noise(model, state.params, batch, jax.random.PRNGKey(4))
  _, x_rec, x_prior = gan.fakes(model, state.params, batch, key, z_prior)
  gan.discriminator_loss(model, state.params, batch, key, z_prior)
  key2 = jax.random.PRNGKey(5)    # the step gives each update a key of its own
  _, terms = gan.decoder_loss(model, state.params, batch, key2, z_prior)
  x_rec2 = gan.fakes(model, state.params, batch, key2, z_prior)[1]
  clean = [batch["image"], x_rec, x_prior, x_rec2, x_prior]   # D's loss, then the decoder's
  assert len(seen) == len(clean)
  diffs = [(s - np.asarray(c, np.float64)).ravel() for s, c in zip(seen, clean)]
  for d in diffs:
    assert abs(d.mean()) < 0.01 and abs(d.std() - sigma) < 0.01
  assert np.abs(np.corrcoef(np.stack(diffs)) - np.eye(len(diffs))).max() < 0.02
  _, clean_terms = gan.decoder_loss(clean_model, state.params, batch, key2, z_prior)
  assert float(terms["gan/reconstruction"]) == float(clean_terms["gan/reconstruction"])


def test_the_held_out_accuracy_judges_images_with_the_same_instance_noise():
  """D's held-out accuracy (eval/gan_metrics) feeds D each real, reconstructed and prior
  image plus fresh N(0, sigma^2) noise, as training does; with sigma 0 the clean ones."""
  from jmvae_jax.eval import gan_metrics
  sigma = 0.3
  for noise in (sigma, 0.0):
    model, _, _, state, batch = _setup(instance_noise=noise)
    seen, judge = [], model.discriminate
    model.discriminate = lambda params, x, cond=None: seen.append(np.asarray(x)) or judge(
        params, x, cond)
    index, mask = np.arange(6, dtype=np.int32), np.ones(6, np.float32)
    gan_metrics._d_values(model, 3, state.params, batch, index, mask)
    model.discriminate = judge
    clean = [batch["image"]] + [np.asarray(model.generate(state.params, "image", z, {
        "attributes": batch["attributes"]})) for z in _eval_zs(model, state.params, batch, index)]
    diffs = [(s - np.asarray(c, np.float64)).ravel() for s, c in zip(seen, clean)]
    assert len(diffs) == 3
    for d in diffs:
      if noise:
        assert abs(d.mean()) < 0.01 and abs(d.std() - sigma) < 0.01
      else:
        assert np.abs(d).max() < 1e-6
    if noise:
      assert np.abs(np.corrcoef(np.stack(diffs)) - np.eye(3)).max() < 0.02


def _eval_zs(model, params, batch, index):
  """The z of gan_metrics' reconstructed and prior images, from its index-keyed draws."""
  from jmvae_jax.eval import gan_metrics
  dim = model.spec.latent_dim
  q = model.posterior(params, batch)
  z = q.mean + jnp.exp(0.5 * q.logvar) * gan_metrics._normal(gan_metrics._keys(3, index, 1), dim)
  z_p = jax.vmap(lambda k: jax.random.uniform(k, (dim,), jnp.float32, -1.0, 1.0))(
      gan_metrics._keys(3, index, 2))
  return z, z_p


def test_with_the_reconstruction_alone_the_decoder_moves_as_in_jmvae_kls_step():
  """A second code path for the decoder player's update: with its loss the reconstruction
  alone (``gan.reconstruction_loss``) and plain SGD, it moves x's decoder exactly as one
  JMVAE-kl step (one optimiser on every network, no GAN code) moves it from the same
  parameters and the same z draw."""
  model, _, _, state, batch = _setup()
  c = shapes64.get_config("smoke")
  c.objective.name = "jmvae_kl"
  kl_model, kl_loss = builder.build(c)
  params = {k: v for k, v in state.params.items() if k != "discriminator"}
  sgd = optax.sgd(0.1)
  rng = jax.random.PRNGKey(3)
  kl_state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=sgd.init(params))
  kl_new, _ = train.train_step(kl_state, batch, rng, 0.5, model=kl_model, loss_fn=kl_loss,
                               optimizer=sgd)

  recon_model = gan.GanModel(model.spec, dataclasses.replace(
      model.gan, decoder_loss=gan.reconstruction_loss))
  part = gan.player_params(model, state.params, "decoder")
  z_prior = gan.prior_noise(model, state.params, batch, jax.random.PRNGKey(4))
  gan_new, _, _ = gan.decoder_update(recon_model, sgd, sgd.init(part), state.params, batch,
                                     jax.random.fold_in(rng, 0), z_prior)
  before = _leaves(part)
  want, got = _leaves(kl_new.params["decoder"]["image"]), _leaves(gan_new["decoder"]["image"])
  assert set(want) == set(got) == set(before)
  for k in want:
    assert not np.array_equal(got[k], before[k]), k
    np.testing.assert_allclose(got[k] - before[k], want[k] - before[k], rtol=1e-4,
                               atol=1e-6 * np.abs(want[k] - before[k]).max(), err_msg=k)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_the_simultaneous_order_with_the_reconstruction_alone_is_jmvae_kls_one_step(norm):
  """``gan.order="simultaneous"`` against a second code path: with the decoder's loss the
  reconstruction alone, the encoder and decoder updates of one GAN step leave every
  encoder, every decoder and their batch-norm averages as one JMVAE-kl step of
  ``train.train_step`` (one Adam on every network, no GAN code) from the same parameters
  and z draw; D moves, from the decoder's result."""
  model, loss_fn, _, state, batch = _setup(norm=norm, order="simultaneous")
  recon = gan.GanModel(model.spec, dataclasses.replace(model.gan,
                                                       decoder_loss=gan.reconstruction_loss))
  adam = optax.adam(1e-3, b1=0.5)
  opt = gan.PlayerOptimizers(recon, adam, adam, adam)
  state = state.replace(opt_state=opt.init(state.params))
  rng = jax.random.PRNGKey(3)
  new, _ = gan.train_step(state, batch, rng, 0.5, model=recon, loss_fn=loss_fn, optimizer=opt)

  c = shapes64.get_config("smoke")
  c.objective.name, c.model.norm = "jmvae_kl", norm
  kl_model, kl_loss = builder.build(c)
  key = jax.random.split(jax.random.fold_in(rng, 0), 4)[0]    # the GAN step's encoder key
  fixed = lambda m, p, b, r, kl_weight: kl_loss(m, p, b, key, kl_weight=kl_weight)
  params = {k: v for k, v in state.params.items() if k != "discriminator"}
  kl_state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=adam.init(params))
  kl_new, _ = train.train_step(kl_state, batch, rng, 0.5, model=kl_model, loss_fn=fixed,
                               optimizer=adam)
  want = _leaves(kl_new.params)
  got = _leaves({k: v for k, v in new.params.items() if k != "discriminator"})
  before = _leaves(params)
  assert set(want) == set(got)
  assert any("batch_stats" in k for k in want) == (norm == "batch")
  for k in want:
    assert not np.array_equal(got[k], before[k]), k
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert not np.array_equal(_leaves(new.params["discriminator"])["['logit']['kernel']"],
                            _leaves(state.params["discriminator"])["['logit']['kernel']"])
