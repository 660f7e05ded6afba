"""Networks, bidirectional inference and config validation."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jmvae_jax
from jmvae_jax import ConfigError
from configs import mnist
from tests.test_objectives import mnist_batch, smoke


def np_leaky(x):
  return np.where(x > 0, x, 0.01 * x)


def np_dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_encoder(p, inputs):
  """A float64 numpy forward pass of an MLP Encoder (sorted branches, concat, head)."""
  feats = []
  for name in sorted(inputs):
    h = inputs[name].reshape(len(inputs[name]), -1).astype(np.float64)
    branch = p[f"branch_{name}"]
    for i in range(len(branch)):
      h = np_leaky(np_dense(branch[f"dense{i}"], h))
    feats.append(h)
  h = np.concatenate(feats, -1)
  return np_dense(p["head"]["mean"], h), np_dense(p["head"]["variance"], h)


def test_jmvae_zero_single_modality_posterior_is_the_joint_encoder_fed_zeros():
  model, _ = jmvae_jax.build(smoke("jmvae_zero"))
  params = model.init(jax.random.PRNGKey(0))
  batch = mnist_batch(5)
  joint = params["encoder"]["image+label"]
  q_img = model.posterior(params, {"image": batch["image"]})
  mean, logvar = np_encoder(joint, {"image": batch["image"], "label": np.zeros((5, 10))})
  np.testing.assert_allclose(q_img.mean, mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(q_img.logvar, logvar, rtol=1e-4, atol=1e-5)
  q_lab = model.posterior(params, {"label": batch["label"]})
  one_hot = np.eye(10)[batch["label"]]
  mean, _ = np_encoder(joint, {"image": np.zeros((5, 28, 28, 1)), "label": one_hot})
  np.testing.assert_allclose(q_lab.mean, mean, rtol=1e-4, atol=1e-5)
  q_both = model.posterior(params, batch)
  mean, _ = np_encoder(joint, {"image": batch["image"], "label": one_hot})
  np.testing.assert_allclose(q_both.mean, mean, rtol=1e-4, atol=1e-5)


def test_fast_compiled_init_matches_the_optimised_program_and_traces():
  model, _ = jmvae_jax.build(smoke("jmvae_kl"))
  key = jax.random.PRNGKey(3)
  fast = model.init(key)                       # one program at XLA's lowest optimisation
  optimised = jax.jit(model._init)(key)        # the same initialisers, default compile
  assert jax.tree.structure(fast) == jax.tree.structure(optimised)
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(optimised)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  assert any(np.std(np.asarray(a)) > 0 for a in jax.tree.leaves(fast))
  shapes = jax.eval_shape(model.init, key)     # traced: part of the caller's program
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, fast)
  with jax.disable_jit():                      # op by op, as before this change
    eager = model.init(key)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(optimised)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_jmvae_kl_single_modality_posterior_is_its_unimodal_encoder():
  model, _ = jmvae_jax.build(smoke("jmvae_kl"))
  params = model.init(jax.random.PRNGKey(0))
  batch = mnist_batch(4)
  q = model.posterior(params, {"image": batch["image"]})
  mean, logvar = np_encoder(params["encoder"]["image"], {"image": batch["image"]})
  np.testing.assert_allclose(q.mean, mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(q.logvar, logvar, rtol=1e-4, atol=1e-5)


def test_bidirectional_generation_shapes_and_ranges():
  model, _ = jmvae_jax.build(smoke("jmvae_kl"))
  params = model.init(jax.random.PRNGKey(0))
  batch = mnist_batch(6)
  rng = jax.random.PRNGKey(1)
  image = model.translate(params, rng, {"label": batch["label"]}, "image")
  probs = model.translate(params, rng, {"image": batch["image"]}, "label", sample_z=False)
  assert image.shape == (6, 28, 28, 1) and np.all((image >= 0) & (image <= 1))
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  labels = model.generate(params, "label", jnp.zeros((6, 8)), rng=rng)
  assert labels.shape == (6,) and labels.dtype == jnp.int32
  pixels = model.generate(params, "image", jnp.zeros((2, 3, 8)), rng=rng)
  assert pixels.shape == (2, 3, 28, 28, 1) and set(np.unique(pixels)) <= {0.0, 1.0}


def test_cvae_generates_x_from_w_with_the_standard_normal_prior():
  model, _ = jmvae_jax.build(smoke("cvae"))
  params = model.init(jax.random.PRNGKey(0))
  label = jnp.arange(4)
  got = model.translate(params, jax.random.PRNGKey(0), {"label": label}, "image",
                        sample_z=False)
  want = model.generate(params, "image", jnp.zeros((4, 8)), {"label": label})
  np.testing.assert_allclose(got, want, rtol=1e-6)


def celeba_like_config():
  c = mnist.get_config("smoke")
  c.model.latent_dim = 16
  c.model.activation = "relu"
  c.model.norm = "layer"
  c.model.modalities = ml_collections.ConfigDict()
  c.model.modalities.image = dict(likelihood="gaussian", shape=(64, 64, 3), network="conv64",
                                  filters=(8, 8, 16, 16), dense=32)
  c.model.modalities.attributes = dict(likelihood="gaussian", shape=(40,), hidden=(32, 32),
                                       decoder_hidden=(32, 32), mean_activation="tanh")
  return c


def test_celeba_conv_encoder_and_decoder_shapes():
  model, loss_fn = jmvae_jax.build(celeba_like_config())
  params = model.init(jax.random.PRNGKey(0))
  enc = params["encoder"]["image"]["branch_image"]
  assert [enc[f"conv{i}"]["kernel"].shape for i in range(4)] == [
      (4, 4, 3, 8), (4, 4, 8, 8), (4, 4, 8, 16), (4, 4, 16, 16)]
  assert enc["dense"]["kernel"].shape == (4 * 4 * 16, 32)
  batch = {"image": jnp.full((2, 64, 64, 3), 0.5), "attributes": jnp.ones((2, 40))}
  out = model.decode(params, "image", jnp.zeros((2, 16)))
  assert out.shape == (2, 64, 64, 3)
  attrs = model.generate(params, "attributes", jnp.zeros((2, 16)))
  assert attrs.shape == (2, 40) and np.all(np.abs(attrs) <= 1)
  loss, terms = jax.jit(lambda p, b: loss_fn(model, p, b, jax.random.PRNGKey(1)))(params, batch)
  assert np.isfinite(loss) and terms["recon/image"].shape == ()


def test_celeba_like_train_step_on_the_data_mesh_matches_the_plain_loss():
  """The conv stacks under the explicit-sharding mesh of the training loop, where a
  reshape that merges axes must be given its sharding, against the loss without it."""
  from jmvae_jax import parallel, train
  config = celeba_like_config()
  model, loss_fn = jmvae_jax.build(config)
  optimizer = train.make_optimizer(config.optim)
  key = jax.random.PRNGKey(0)
  state = train.init_state(model, optimizer, key)
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((4, 64, 64, 3), np.float32),
           "attributes": np.where(rng.random((4, 40)) < 0.5, -1.0, 1.0).astype(np.float32)}
  plain, _ = jax.jit(lambda p: loss_fn(model, p, batch, jax.random.fold_in(key, 0),
                                       kl_weight=0.5))(state.params)
  mesh = parallel.make_mesh()
  step = train.jit_train_step(model, loss_fn, optimizer)
  new, terms = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh), key,
                    jnp.float32(0.5))
  assert int(new.step) == 1
  np.testing.assert_allclose(terms["loss"], plain, rtol=1e-5)


@pytest.mark.parametrize("up", [False, True], ids=["conv", "conv_transpose"])
def test_stride_two_convolutions_as_matmuls_match_flax(up):
  import flax.linen as nn
  from jmvae_jax import networks as N
  layer = (nn.ConvTranspose if up else nn.Conv)(5, (4, 4), strides=(2, 2), padding="SAME")
  ours = N.conv_up_matmul if up else N.conv_down_matmul
  for h, w in [(8, 8), (9, 6), (5, 7), (1, 3)]:    # odd sizes pad unevenly
    x = jax.random.normal(jax.random.key(h), (2, h, w, 3))
    k = jax.random.normal(jax.random.key(w), (4, 4, 3, 5))
    flax_out = lambda k, x: layer.apply({"params": {"kernel": k, "bias": jnp.zeros(5)}}, x)
    want, got = jax.jit(flax_out)(k, x), jax.jit(ours)(x, k)
    assert got.shape == want.shape == (2, h * 2 if up else -(-h // 2), w * 2 if up else -(-w // 2), 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda k, x: jnp.sum(jnp.sin(f(k, x)))
    g_want = jax.jit(jax.grad(loss(flax_out), (0, 1)))(k, x)
    g_got = jax.jit(jax.grad(loss(lambda k, x: ours(x, k)), (0, 1)))(k, x)
    for a, b in zip(g_got, g_want):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # The module: Flax's parameters (names, shapes, initial values); both forms agree.
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  params = N.StrideTwoConv(5, up=up, impl="matmul").init(jax.random.key(1), x)
  flax_params = layer.init(jax.random.key(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(flax_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(flax_params)):
    np.testing.assert_array_equal(a, b)
  outs = [N.StrideTwoConv(5, up=up, impl=i).apply(params, x) for i in ("xla", "matmul", "auto")]
  np.testing.assert_allclose(outs[0], layer.apply(flax_params, x), rtol=1e-6, atol=1e-6)
  for o in outs[1:]:
    np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-5)
  with pytest.raises(ConfigError, match=r"StrideTwoConv.impl='fast' is not valid; allowed: 'auto'"):
    N.StrideTwoConv(5, up=up, impl="fast").apply(params, x)


def expect_error(config, *fragments):
  with pytest.raises(ConfigError) as e:
    jmvae_jax.build(config)
  msg = str(e.value)
  assert "\n" not in msg
  for f in fragments:
    assert f in msg, msg


def test_bad_configs_give_one_line_errors_naming_the_field():
  c = smoke("jmvae_kl")
  c.objective.name = "jmave"
  expect_error(c, "config.objective.name", "'jmvae_kl'")
  c = smoke("jmvae_kl", alpha=-0.1)
  expect_error(c, "config.objective.alpha", ">= 0")
  c = smoke("jmvae_kl")
  c.model.latent_dim = 0
  expect_error(c, "config.model.latent_dim", "> 0")
  c = smoke("jmvae_kl")
  c.model.modalities.image.likelihood = "bernouli"
  expect_error(c, "config.model.modalities.image.likelihood", "'bernoulli'", "'categorical'")
  c = smoke("jmvae_kl")
  c.model.activation = "gelu"
  expect_error(c, "config.model.activation", "'leaky_relu'")
  c = smoke("jmvae_kl", warmup_scope="everything")
  expect_error(c, "config.objective.warmup_scope", "'prior'", "'all'")
  c = smoke("no_such_module_xyz:loss")
  expect_error(c, "config.objective.name", "no_such_module_xyz")
  c = smoke("jmvae_kl")
  c.model.modalities.label.shape = (10, 2)
  expect_error(c, "config.model.modalities.label.shape", "num_classes")
  c = celeba_like_config()
  c.model.modalities.image.shape = (32, 32, 3)
  expect_error(c, "config.model.modalities.image.shape", "(64, 64, C)")
  c = celeba_like_config()
  c.model.modalities.image.filters = (8, 8, 16)   # would decode 32x32 images
  expect_error(c, "config.model.modalities.image.filters", "four filter counts")
  c = celeba_like_config()
  c.model.modalities.image.hidden = (32,)
  expect_error(c, "config.model.modalities.image.hidden", "not used by network 'conv64'")
  c = smoke("jmvae_kl")
  c.model.modalities.label.learn_variance = True
  expect_error(c, "config.model.modalities.label.learn_variance", "a categorical modality")
  c = smoke("jmvae_kl")
  c.model.modalities.image = dict(likelihood="bernoulli", shape=784)
  expect_error(c, "config.model.modalities.image.shape=784", "tuple of positive ints")
  c = celeba_like_config()
  c.model.modalities.attributes.learn_variance = True
  c.model.modalities.attributes.variance = 0.5     # the decoder predicts it
  expect_error(c, "config.model.modalities.attributes.variance", "learn_variance=True")
  c = smoke("jmvae_kl")
  c.model.joint_hidden = (0,)
  expect_error(c, "config.model.joint_hidden=(0,)", "positive ints")
  c = smoke("jmvae_kl")
  c.model.norm = "layer"
  expect_error(c, "config.model.norm='layer'", "every modality's network is 'mlp'")
  import ml_collections
  from jmvae_jax import model as model_lib
  m = ml_collections.ConfigDict(dict(smoke("jmvae_kl").model.to_dict(), latent_dim=np.int64(4),
                                     joint_hidden=(np.int32(8),)))   # numpy ints are ints
  m.modalities.image.likelihood = "gaussian"
  m.modalities.image.variance = np.float32(0.5)   # a numpy number is a number
  from jmvae_jax import schema
  spec = model_lib.spec_from_config(schema.check_model(m))
  assert (spec.latent_dim, spec.joint_hidden) == (4, (8,))
  assert type(spec.latent_dim) is int and type(spec.joint_hidden[0]) is int


def test_batches_that_do_not_match_the_declared_modalities_are_rejected():
  model, _ = jmvae_jax.build(smoke("jmvae_kl"))
  good = mnist_batch(3)
  model.check_batch(good)
  model.check_batch({"image": good["image"], "label": np.eye(10, dtype=np.float32)[:3]})
  with pytest.raises(ConfigError, match=r"batch\['image'\] has shape \(3, 28, 28\); .*"
                     r"expects \[batch, 28, 28, 1\]"):
    model.check_batch({"image": good["image"][..., 0], "label": good["label"]})
  with pytest.raises(ConfigError, match=r"batch\['label'\] has shape \(3, 9\)"):
    model.check_batch({"image": good["image"], "label": np.zeros((3, 9), np.float32)})
  with pytest.raises(ConfigError, match="batch has no modality 'label'"):
    model.check_batch({"image": good["image"]})


def test_model_train_step_and_benchmarks_import_without_tensorflow():
  """Only the datasets and the summary writers need TensorFlow: the configs and their
  checks, a train step, the evaluator and the benchmarks run where it is not installed (an
  accelerator machine with jax alone). A blocked ``import tensorflow`` proves it."""
  import os
  import subprocess
  import sys
  import textwrap
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = textwrap.dedent("""
      import sys
      sys.modules["tensorflow"] = None           # any import of it now raises ImportError
      sys.modules["tensorflow_datasets"] = None
      import jax
      from benchmarks import iw_eval, train_throughput
      from configs import celeba, fashion_mnist, mnist, shapes
      from jmvae_jax import eval, schema
      schema.check(mnist.get_config("smoke"), ("model", "objective", "optim", "train", "eval"))
      step, state, inputs = train_throughput.mnist_step(4)
      state, terms = step(state, *inputs)
      print(int(state.step), float(terms["loss"]) > 0)
      try:
        from jmvae_jax.data import mnist as mnist_data
      except ImportError:
        print("data needs tensorflow")
  """)
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split() == ["1", "True", "data", "needs", "tensorflow"]


def test_channel_mean_reduction_is_the_authors_sum_over_pixels_of_the_channel_mean():
  """The authors' CelebA image log-likelihood (Tars' mean_sum_samples: summed over height
  and width, averaged over channels), against a float64 numpy computation."""
  c = celeba_like_config()
  c.model.modalities.image.reduction = "channel_mean"
  c.model.modalities.image.variance = 0.5
  model, _ = jmvae_jax.build(c)
  rng = np.random.default_rng(0)
  mean, x = rng.normal(size=(2, 2, 64, 64, 3)).astype(np.float32)
  got = model.spec.modality("image").flat_log_prob(jnp.asarray(mean), jnp.asarray(x))
  per_value = -0.5 * np.log(2 * np.pi * 0.5) - (x.astype(np.float64) - mean) ** 2 / (2 * 0.5)
  np.testing.assert_allclose(got, per_value.mean(axis=3).sum(axis=(1, 2)), rtol=1e-5)
  summed = dataclasses.replace(model.spec.modality("image"), reduction="sum")
  np.testing.assert_allclose(summed.flat_log_prob(jnp.asarray(mean), jnp.asarray(x)),
                             per_value.sum(axis=(1, 2, 3)), rtol=1e-5)


def test_a_reduction_over_channels_needs_an_image_and_tanh_attributes_need_minus_one_one():
  c = mnist.get_config("smoke")
  c.model.modalities.label.reduction = "channel_mean"
  with pytest.raises(ConfigError, match=r"modalities.label.reduction='channel_mean'.*needs an "
                     r"\(H, W, C\)"):
    jmvae_jax.build(c)
  c.model.modalities.label.reduction = "mean"
  with pytest.raises(ConfigError, match=r"modalities.label.reduction.*'sum', 'channel_mean'"):
    jmvae_jax.build(c)
  model, _ = jmvae_jax.build(celeba_like_config())
  image = np.full((3, 64, 64, 3), 0.5, np.float32)
  model.check_batch({"image": image, "attributes": np.sign(np.arange(120) % 3 - 0.5)
                     .reshape(3, 40).astype(np.float32)})
  with pytest.raises(ConfigError, match=r"\['attributes'\] holds only 0 and 1.*coded -1 and 1"):
    model.check_batch({"image": image, "attributes": (np.arange(120) % 2).reshape(3, 40)
                       .astype(np.float32)})
  with pytest.raises(ConfigError, match=r"\['attributes'\] has values in \[-1, 2\].*\[-1, 1\]"):
    model.check_batch({"image": image, "attributes": np.where(
        np.arange(120).reshape(3, 40) % 2 == 0, 2.0, -1.0).astype(np.float32)})


def test_the_authors_conv_layout_flattens_into_the_joint_layers_and_decodes_from_one_dense():
  """masa-su/jmvae's CelebA networks: the joint encoder concatenates the flattened
  convolutions with the attribute branch, then Dense(joint_hidden); q(z|x) keeps its
  dense layer; the image decoder is one dense layer to 4x4 then the transposed
  convolutions."""
  c = celeba_like_config()
  c.model.joint_hidden = (24,)
  c.model.modalities.image.layout = "authors"
  model, _ = jmvae_jax.build(c)
  params = model.init(jax.random.PRNGKey(0))
  joint = params["encoder"]["attributes+image"]
  assert "dense" not in joint["branch_image"]
  assert joint["shared"]["dense0"]["kernel"].shape == (4 * 4 * 16 + 32, 24)
  assert params["encoder"]["image"]["branch_image"]["dense"]["kernel"].shape == (4 * 4 * 16, 32)
  decoder = params["decoder"]["image"]["net"]
  assert "dense0" not in decoder and decoder["dense1"]["kernel"].shape == (16, 4 * 4 * 16)
  assert model.decode(params, "image", jnp.zeros((2, 16))).shape == (2, 64, 64, 3)
  c.model.modalities.attributes.layout = "authors"
  with pytest.raises(ConfigError, match=r"modalities.attributes.layout is not used by network "
                     r"'mlp'"):
    jmvae_jax.build(c)


def test_a_field_added_since_a_workdir_was_written_compares_as_its_default():
  from jmvae_jax import workdir
  saved = {"model": {"modalities": {"image": {"likelihood": "gaussian"}}}, "data": {}}
  current = {"model": {"modalities": {"image": {"likelihood": "gaussian", "reduction": "sum",
                                                "layout": "mirrored"}}},
             "data": {"normalise": "unit"}}
  assert workdir.architecture_difference(saved, current) is None
  assert workdir.run_difference(saved, current) is None
  current["model"]["modalities"]["image"]["reduction"] = "channel_mean"
  assert workdir.architecture_difference(saved, current) == (
      "config.model.modalities.image.reduction: None there, 'channel_mean' here")
  current["data"]["normalise"] = "standardise"
  assert "config.data.normalise: None there" in workdir.run_difference(saved, current)


def _batch_norm_case():
  from jmvae_jax import train
  config = celeba_like_config()
  config.model.norm = "batch"
  model, loss_fn = jmvae_jax.build(config)
  optimizer = train.make_optimizer(config.optim)
  state = train.init_state(model, optimizer, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((4, 64, 64, 3), np.float32),
           "attributes": np.where(rng.random((4, 40)) < 0.5, -1.0, 1.0).astype(np.float32)}
  return model, loss_fn, optimizer, state, batch


def test_batch_norm_uses_running_averages_outside_training_so_examples_stay_independent():
  from jmvae_jax import model as model_lib
  model, _, _, state, batch = _batch_norm_case()
  alone = [model.posterior(state.params, {k: v[i:i + 1] for k, v in batch.items()}).mean
           for i in range(4)]
  together = model.posterior(state.params, batch).mean
  np.testing.assert_allclose(np.concatenate(alone), together, rtol=1e-5, atol=1e-6)
  with model_lib.collect_batch_stats() as stats:   # training mode: the batch's statistics
    trained = model.posterior(state.params, batch).mean
  assert ("encoder", "attributes+image") in stats
  assert np.max(np.abs(np.asarray(trained) - np.asarray(together))) > 1e-3


def test_a_train_step_keeps_the_running_averages_lasagne_would():
  """After one step, each running mean and variance is 0.9 * before + 0.1 * the batch's
  (biased) statistics over batch, height and width, computed here in float64 numpy from
  the layer's input (captured from the network) at the step's parameters."""
  from jmvae_jax import train
  model, loss_fn, optimizer, state, batch = _batch_norm_case()
  key = "attributes+image"
  variables = {"params": state.params["encoder"][key],
               "batch_stats": state.params["batch_stats"]["encoder"][key]}
  _, inter = model.encoders[key].apply(variables, batch, training=True,
                                       capture_intermediates=True, mutable=["intermediates",
                                                                            "batch_stats"])
  conv1 = np.asarray(inter["intermediates"]["branch_image"]["conv1"]["__call__"][0], np.float64)
  step = jax.jit(lambda s: train.train_step(s, batch, jax.random.PRNGKey(1), 0.5, model=model,
                                            loss_fn=loss_fn, optimizer=optimizer))
  new, _ = step(state)
  before = state.params["batch_stats"]["encoder"][key]["branch_image"]["norm1"]
  after = new.params["batch_stats"]["encoder"][key]["branch_image"]["norm1"]
  np.testing.assert_allclose(after["mean"], 0.9 * np.asarray(before["mean"])
                             + 0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(after["var"], 0.9 * np.asarray(before["var"])
                             + 0.1 * conv1.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  assert "norm0" not in state.params["batch_stats"]["encoder"][key]["branch_image"]
  # the attribute networks: every dense layer but the first (hidden (32, 32) here)
  assert set(state.params["batch_stats"]["encoder"][key]["branch_attributes"]) == {"norm1"}
  assert set(state.params["batch_stats"]["decoder"]["attributes"]["net"]) == {"norm1"}
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                       state.params["batch_stats"], new.params["batch_stats"])
  assert all(jax.tree.leaves(moved))   # every batch-normalised network was trained
