"""The evaluation job end to end: a trained workdir in, evaluation.json out."""
import json
import os

import numpy as np
import pytest

from jmvae_jax import ConfigError, train
from jmvae_jax.eval import job
from tests.test_train import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run trained for one epoch, shared by the tests below."""
  root = tmp_path_factory.mktemp("eval")
  config = tiny_config(root / "data", epochs=1)
  train.train_and_evaluate(config, str(root / "run"))
  return config, root


def test_evaluate_writes_every_estimator_and_caches_the_classifier(trained):
  config, root = trained
  config = tiny_config(root / "data", epochs=1)
  config.eval.k, config.eval.prior_samples, config.eval.chunk_size = 16, 16, 8
  workdir = str(root / "run")
  lines = []
  result = job.evaluate_workdir(config, workdir, log=lines.append)
  saved = json.load(open(os.path.join(workdir, "evaluation.json")))
  assert saved["step"] == 10 and saved["k"] == 16 and saved["num_examples"] == 100
  assert saved["log_likelihood_reduction"] == {"attributes": "sum", "image": "sum"}
  est = saved["estimates"]
  assert {"joint", "marginal_multiple", "marginal_single", "conditional_multiple",
          "conditional_single"} <= set(est)
  for v in est.values():
    assert np.isfinite(v["mean"]) and v["stderr"] > 0
  # log p(x, w) = log p(x | w) + log p(w), and both log p(x) bounds sit above log p(x, w)
  # on average here (continuous attributes have log-densities that can be positive).
  assert abs(est["joint"]["mean"] - est["conditional_multiple"]["mean"]
             - est["log_p_w"]["mean"]) < 1e-3 * abs(est["joint"]["mean"])
  assert 0.5 <= saved["cross_modal_accuracy"]["attributes"]["mean"] <= 1.0
  assert 0.0 <= saved["round_trip_accuracy"]["attributes"]["mean"] <= 1.0
  assert "attributes" in saved["coherence"]
  assert any(l.startswith("| log p(x) |") for l in "\n".join(lines).splitlines())
  clf = os.path.join(workdir, "classifiers", "image_to_attributes.npz")
  mtime = os.path.getmtime(clf)
  again = job.evaluate_workdir(config, workdir, log=None)
  assert os.path.getmtime(clf) == mtime                      # trained once, then cached
  assert again["estimates"]["joint"]["mean"] == result["estimates"]["joint"]["mean"]


def test_bad_evaluation_requests_fail_clearly_before_heavy_work(trained, tmp_path):
  config, root = trained
  bad = tiny_config(root / "data", epochs=1)
  bad.eval.k = 0
  with pytest.raises(ConfigError, match=r"config.eval.k=0 must be an int > 0"):
    job.evaluate_workdir(bad, str(root / "run"), log=None)
  with pytest.raises(ConfigError, match="has no checkpoint"):
    job.evaluate_workdir(tiny_config(root / "data"), str(tmp_path / "empty"), log=None)
  other = tiny_config(root / "data", epochs=1)
  other.objective.name = "jmvae_zero"
  with pytest.raises(ConfigError, match="another architecture"):
    job.evaluate_workdir(other, str(root / "run"), log=None)


def test_a_tiny_split_gets_unpadded_figures_and_its_coherence(tmp_path):
  """60 training and 10 test examples: the figures show the 10 test examples (not 16,
  padded with copies), and the coherence classifier trains on the 60 (under its
  batch of 128) rather than being dropped."""
  import struct
  from jmvae_jax import figures
  c = tiny_config(tmp_path / "data", epochs=2)
  c.data.num_train, c.data.num_test = 60, 10
  c.eval.k, c.eval.prior_samples, c.eval.chunk_size = 4, 4, 4
  out = train.train_and_evaluate(c, str(tmp_path / "run"))
  with open(os.path.join(out["figures"], "image_to_attributes.png"), "rb") as f:
    height = struct.unpack(">II", f.read(24)[16:24])[1]          # the PNG's IHDR
  tiles = np.zeros((10, 32 + 6, 32, 3))                           # image and strip
  assert height == 2 * figures.grid(tiles, cols=4).shape[0]       # 10 tiles, 4 a row, x2
  result = job.evaluate_workdir(c, str(tmp_path / "run"), log=None)
  assert result["num_examples"] == 10
  assert 0.0 <= result["coherence"]["attributes"]["mean"] <= 1.0


@pytest.mark.parametrize("objective,generates", [("vae", False), ("cvae", True),
                                                 ("jmvae_kl", True)])
def test_coherence_is_only_prepared_for_models_that_generate_x_from_w(objective, generates):
  import jax
  import jmvae_jax
  c = tiny_config("unused")
  c.objective.name = objective
  model, _ = jmvae_jax.build(c)
  modalities = {"image": ((32, 32, 3), "float32"), "attributes": ((7,), "float32")}
  params = model.init(jax.random.PRNGKey(0))
  assert job.generates_x_from_w(model, params, modalities) is generates


def test_a_model_of_x_alone_generates_nothing_from_w():
  import jax
  import ml_collections
  import jmvae_jax
  c = tiny_config("unused")
  c.objective.name = "vae"
  c.model.modalities = ml_collections.ConfigDict({"image": c.model.modalities.image})
  model, _ = jmvae_jax.build(c)
  params = model.init(jax.random.PRNGKey(0))
  modalities = {"image": ((32, 32, 3), "float32")}
  assert model.spec.w == () and not job.generates_x_from_w(model, params, modalities)


def test_a_test_split_missing_a_modality_is_named():
  class Data:
    name, modalities = "shapes", {"image": ((32, 32, 3), "float32")}
  import jmvae_jax
  model, _ = jmvae_jax.build(tiny_config("unused"))
  with pytest.raises(ConfigError, match=r"test split of 'shapes' has no modality 'attributes'"):
    job.check_test_split(model, Data())


def test_load_brings_back_the_trained_run_for_a_notebook(trained, tmp_path):
  """jmvae_jax.load(workdir) -> (model, params, config): the checkpoint's parameters (the
  same leaves as the training state restored another way), and a model that translates."""
  import jax
  import jmvae_jax
  from jmvae_jax import restore
  config, root = trained
  model, params, saved = jmvae_jax.load(str(root / "run"))
  _, _, state, _ = restore.load_trained(config, str(root / "run"))
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert saved.model.latent_dim == config.model.latent_dim and saved.seed == config.seed
  attrs = np.where(np.arange(14).reshape(2, 7) % 2, 1.0, -1.0).astype(np.float32)
  images = model.translate(params, jax.random.PRNGKey(0), {"attributes": attrs}, "image")
  assert images.shape == (2, 32, 32, 3) and np.all((images >= 0) & (images <= 1))
  with pytest.raises(ConfigError, match=r"config.json is missing: .* not a workdir"):
    jmvae_jax.load(str(tmp_path))
