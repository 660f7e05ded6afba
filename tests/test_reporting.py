"""What a run shows its user: figures for every objective, the ETA, metrics.jsonl after a
resume, and one-line errors for mistyped command lines."""
import json
import os
import re
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from configs import mnist, shapes
from jmvae_jax import ConfigError, builder, figures, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("objective,expected", [
    ("vae", {"samples", "reconstructions"}),
    ("cvae", {"samples", "reconstructions", "label_to_image"}),
    ("cmma", {"samples", "reconstructions", "label_to_image"}),
    ("jmvae_kl", {"samples", "reconstructions", "label_to_image", "image_to_label"}),
])
def test_figures_draw_what_each_objective_can_generate(objective, expected):
  c = mnist.get_config("smoke")
  c.objective.name = objective
  model, _ = builder.build(c)
  params = model.init(jax.random.PRNGKey(0))
  batch = {"image": (np.random.default_rng(0).random((4, 28, 28, 1)) > 0.5).astype(np.float32),
           "label": np.arange(4, dtype=np.int32)}   # fewer examples than a figure holds
  out = figures.model_figures(model, params, batch, jax.random.PRNGKey(1))
  assert set(out) == expected
  assert out["samples"].shape == (2 + 2 * 30, 2 + 2 * 30, 3)   # 4 tiles of 28 in a 2x2 grid
  if objective == "vae":
    with pytest.raises(ConfigError, match=r"no decoder for 'label'"):
      model.translate(params, jax.random.PRNGKey(2), {"image": batch["image"]}, "label")


GREEN, RED, BLACK, WHITE = [0.1, 0.7, 0.1], [0.8, 0.1, 0.1], [0, 0, 0], [1, 1, 1]
BLUE = [0.1, 0.2, 0.9]


def test_strips_are_drawn_by_the_modality_not_by_the_values():
  """Attribute strips: green +, red -, a black top half where the sign is wrong, even
  when no value drawn is negative; label strips: grey 1 - p, the true class in blue."""
  s = figures.strip(np.full((2, 3), 0.4), 30, categorical=False,
                    truth=np.array([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]]))
  assert s.shape == (2, 6, 30, 3)   # cells of 10 pixels, the last column of each blank
  for i, wrong in enumerate([(False, True, False), (True, True, False)]):
    for j, w in enumerate(wrong):
      np.testing.assert_allclose(s[i, 0, 10 * j], BLACK if w else GREEN)
      np.testing.assert_allclose(s[i, 5, 10 * j + 8], GREEN)
      np.testing.assert_allclose(s[i, :, 10 * j + 9], np.ones((6, 3)))
  s = figures.strip(np.array([[0.2, -0.5]]), 4, categorical=False)
  np.testing.assert_allclose(s[0, 0, :, :], [GREEN, GREEN, RED, RED])   # no truth: no marks
  s = figures.strip(np.array([[1, -1, -1, 1, -1.0]]), 2, categorical=False)   # 5 cells, 2 px
  assert s.shape == (1, 18, 2, 3)                     # three rows of cells, one pixel each
  np.testing.assert_allclose(s[0, [0, 6, 12], 0], [GREEN, RED, RED])   # cells 0, 2, 4
  np.testing.assert_allclose(s[0, [0, 6, 12], 1], [RED, GREEN, WHITE])  # 1, 3, none
  s = figures.strip(np.array([[0.7, 0.2, 0.1]]), 30, categorical=True, truth=np.array([1]))
  np.testing.assert_allclose(s[0, 0, [0, 10, 20]], [[0.3] * 3, [0.8] * 3, [0.9] * 3])
  np.testing.assert_allclose(s[0, 5, [0, 10, 20]], [[0.3] * 3, BLUE, [0.9] * 3])


def test_figures_of_bernoulli_attributes_mark_signs_about_one_half():
  """Attributes in {0, 1} (a Bernoulli modality) never hold a negative value; their
  strips are signed about 1/2, the truth's as well."""
  c = shapes.get_config("smoke")
  c.model.modalities.attributes = dict(likelihood="bernoulli", shape=(7,), hidden=(16,),
                                       decoder_hidden=(16,))
  model, _ = builder.build(c)
  params = model.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  attrs = (rng.random((4, 7)) > 0.5).astype(np.float32)
  batch = {"image": (rng.random((4, 32, 32, 3)) > 0.5).astype(np.float32), "attributes": attrs}
  out = figures.model_figures(model, params, batch, jax.random.PRNGKey(1))
  assert {"image_to_attributes", "attributes_to_image"} <= set(out)
  # attributes -> image: the strip under the first tile shows the first example's truth
  cell = 32 // 7
  strip_rows = out["attributes_to_image"][2 + 32: 2 + 38, 2: 2 + 32]
  for j in range(7):
    np.testing.assert_allclose(strip_rows[3, cell * j], GREEN if attrs[0, j] else RED)


@pytest.mark.parametrize("objective", ["jmvae_kl", "cvae"])
def test_figures_of_three_modalities(objective):
  """Two w modalities: a figure pair for each, and CVAE's decoder, conditioned on both,
  is given both."""
  from tests.test_objectives import three_modality_config
  c = three_modality_config()
  c.objective.name = objective
  model, _ = builder.build(c)
  params = model.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {"image": (rng.random((5, 8, 8, 1)) > 0.5).astype(np.float32),
           "label": np.arange(5, dtype=np.int32) % 4,
           "sound": rng.normal(size=(5, 5)).astype(np.float32)}
  out = figures.model_figures(model, params, batch, jax.random.PRNGKey(1))
  drawn = {"samples", "reconstructions", "label_to_image", "sound_to_image"}
  if objective == "jmvae_kl":
    drawn |= {"image_to_label", "image_to_sound"}
  assert set(out) == drawn


def _demo_config(epochs):
  c = shapes.get_config()
  c.train.epochs = epochs
  return c


def test_the_demo_reports_bad_input_in_one_line(tmp_path, capsys):
  from jmvae_jax import main
  with pytest.raises(SystemExit) as e:
    main.run(_demo_config(0), str(tmp_path / "demo"), "demo")
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: config.train.epochs=0 must be an int > 0\n"
  assert not (tmp_path / "demo").exists()


def test_an_interrupted_evaluation_does_not_speak_of_resuming(tmp_path, capsys):
  from jmvae_jax import main
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  for mode, said in [("evaluate", "the evaluation of .* was not finished"),
                     ("train", "the checkpoints in .* are complete")]:
    with pytest.raises(SystemExit) as e:
      main.run(mnist.get_config("smoke"), str(tmp_path / "run"), mode, interrupted=True)
    assert e.value.code == 130
    assert re.search(said, capsys.readouterr().err)


def test_eta_uses_the_mean_rate_since_the_first_report(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(writers.time, "time", lambda: now[0])
  p = writers.Progress(start_step=0, total=1000)
  now[0] += 50.0                       # compilation and the first 100 steps
  assert p.update(100) == "2.0 steps/s ETA 7m30s"
  now[0] += 1.0                        # 100 steps at 100/s
  assert p.update(200) == "100.0 steps/s ETA 8s"
  now[0] += 9.0                        # 100 steps and an evaluation: 10/s
  assert p.update(300) == "11.1 steps/s ETA 35s"   # 700 steps at the mean 200 / 10 s


def test_truncate_jsonl_drops_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  records = [{"step": s, "train/loss": float(s)} for s in (5, 10, 15, 20)] + [{"step": 10,
                                                                              "test/elbo": -1.0}]
  path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 25, "train/lo')
  writers.truncate_jsonl(str(path), 10)
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
      records[0], records[1], records[4]]
  writers.truncate_jsonl(str(tmp_path / "absent.jsonl"), 10)   # nothing to do


def _tensorboard_scalars(tb_dir, tag):
  """(step, value) pairs as TensorBoard's own reader shows them (orphans purged)."""
  import tensorflow as tf
  from tensorboard.backend.event_processing import plugin_event_accumulator
  acc = plugin_event_accumulator.EventAccumulator(str(tb_dir)).Reload()
  return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def test_tensorboard_drops_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
  """A run killed at step 10 after a checkpoint at step 5, resumed: TensorBoard shows
  steps 1-5 of the first run and 6-8 of the second, not the first run's 6-10."""
  first = writers.Writer(str(tmp_path))
  for s in range(1, 11):
    first.scalars(s, {"loss": float(s)})
  first.close()                                   # what a SIGKILL leaves: flushed events
  second = writers.Writer(str(tmp_path), resumed_at=5)
  for s in range(6, 9):
    second.scalars(s, {"loss": 100.0 + s})
  second.close()
  want = [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(6, 9)]
  assert _tensorboard_scalars(tmp_path / "tensorboard", "train/loss") == want


@pytest.mark.parametrize("name,message", [
    (":my_loss", r"cannot import ''"),
    ("tests.custom_losses:nope", r"'tests.custom_losses' has no function 'nope'"),
    ("no_such_module_here:f", r"cannot import 'no_such_module_here'"),
])
def test_a_bad_custom_loss_name_is_one_line(name, message):
  from jmvae_jax import objectives
  with pytest.raises(ConfigError, match=r"config.objective.name=.*" + message):
    objectives.get(name)


def test_unknown_config_arguments_are_named():
  with pytest.raises(ConfigError, match=r"--config=configs/mnist.py:ARG='smok' is not valid; "
                     r"allowed: '', 'smoke'"):
    mnist.get_config("smok")


@pytest.mark.parametrize("args,message", [
    (["--config=configs/mnist.py:smoke", "--config.train.epoch=5"],
     "error: --config.train.epoch: no such config field; did you mean 'epochs'?"),
    (["--config=configs/mnist.py:smoke", "--config.modelx.latent_dim=3"],   # a KeyError
     "error: --config.modelx.latent_dim: no such config field; did you mean 'model'?"),
    (["--config=configs/mnst.py"],
     "error: --config: no such config file 'configs/mnst.py' (see configs/*.py)"),
    (["--config=configs/shapes.py:big"],
     "error: --config=configs/shapes.py:ARG='big' is not valid; allowed: '', 'smoke'"),
    (["--config=README.md"],
     "error: --config: README.md is not a Python config file (invalid syntax, line 3)"),
    (["--config=configs/__init__.py"],
     "error: --config: configs/__init__.py defines no get_config(); a config file defines "
     "get_config(arg='') returning an ml_collections.ConfigDict (see configs/)"),
])
def test_launch_reports_a_mistyped_command_line_in_one_line(tmp_path, args, message):
  done = subprocess.run([sys.executable, "launch.py", f"--workdir={tmp_path / 'run'}"] + args,
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().splitlines()[-1] == message, done.stderr
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "run").exists()


def test_a_key_error_of_the_config_file_itself_is_shown_as_is(tmp_path):
  """Not every KeyError is a mistyped --config.FIELD: one raised by the user's config
  file is shown as Python gives it."""
  (tmp_path / "presets.py").write_text(
      "def get_config(arg=''):\n  return {'small': None}[arg]\n")
  done = subprocess.run([sys.executable, "launch.py", f"--workdir={tmp_path / 'run'}",
                         f"--config={tmp_path / 'presets.py'}:large"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == "error: 'large'", (
      done.stderr)


@pytest.mark.parametrize("disposition", ["default", "ignored"])
def test_ctrl_c_during_start_up_stops_the_run(tmp_path, disposition):
  """A Ctrl-C while TensorFlow imports was swallowed by that import and the run went on.
  Here the Ctrl-C comes, deterministically, as ``import tensorflow`` begins, and the import
  swallows a KeyboardInterrupt as TensorFlow's does; launch.py must still exit 130 once
  its imports are done, having written nothing. A run that starts with SIGINT ignored (a
  shell's background job) keeps ignoring it and finishes."""
  workdir = tmp_path / "run"
  handler = {"default": "signal.default_int_handler", "ignored": "signal.SIG_IGN"}[disposition]
  code = textwrap.dedent(f"""
      import builtins, os, runpy, signal, sys, time
      real_import = builtins.__import__

      def import_like_tensorflow(name, *args, **kwargs):
        if name == "tensorflow" and not hasattr(import_like_tensorflow, "hit"):
          import_like_tensorflow.hit = True
          try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
          except KeyboardInterrupt:
            pass
        return real_import(name, *args, **kwargs)

      builtins.__import__ = import_like_tensorflow
      signal.signal(signal.SIGINT, {handler})   # as Python starts in a terminal, or in "&"
      sys.argv = ["launch.py", "--config=configs/shapes.py:smoke", "--workdir={workdir}"]
      runpy.run_path("launch.py", run_name="__main__")
  """)
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  if disposition == "ignored":
    assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "checkpoints").is_dir()
    return
  assert done.returncode == 130, done.stderr[-2000:]
  assert done.stderr.strip().splitlines()[-1] == "interrupted before the run wrote anything"
  assert not workdir.exists()


def test_an_event_file_from_the_future_gets_a_warning_not_a_wait(tmp_path, capsys):
  tb = tmp_path / "tensorboard"
  tb.mkdir()
  (tb / f"events.out.tfevents.{int(time.time()) + 3600}.otherhost.7.0.v2").write_bytes(b"")
  start = time.time()
  writers.mark_restart(str(tb), 6)
  assert time.time() - start < 1.0
  assert "dated in the future" in capsys.readouterr().out
  assert not [f for f in os.listdir(tb) if f.endswith(".restart")]


def test_generating_from_attributes_and_editing_them():
  """Figures 4 and 5 as library calls on the tiny shapes model: the mean image is the
  decoder's mean at q(z|w)'s mean; a column of draws shares its noise across rows;
  editing sets the attribute it names; the figures have a row per image or attribute."""
  from jmvae_jax import generate
  from jmvae_jax.data.shapes import ATTRIBUTES
  c = shapes.get_config("smoke")
  model, _ = builder.build(c)
  params = model.init(jax.random.PRNGKey(0))
  w = np.where(np.random.default_rng(0).random((3, 7)) < 0.5, -1.0, 1.0).astype(np.float32)
  w[2] = w[0]
  means, drawn = generate.from_attributes(model, params, w, jax.random.PRNGKey(1), samples=4)
  direct = model.generate(params, "image", model.posterior(params, {"attributes": w}).mean)
  np.testing.assert_allclose(means, np.asarray(direct), rtol=1e-6)
  assert drawn.shape == (3, 4, 32, 32, 3)
  np.testing.assert_array_equal(drawn[0], drawn[2])           # the same w, the same noise
  assert not np.allclose(drawn[0, 0], drawn[0, 1])
  images = np.random.default_rng(1).random((5, 32, 32, 3)).astype(np.float32)
  predicted, same = generate.edit(model, params, images, {}, ATTRIBUTES)
  z = model.posterior(params, {"image": images, "attributes": predicted}).mean
  np.testing.assert_allclose(same, np.asarray(model.generate(params, "image", z)), rtol=1e-6)
  _, edited = generate.edit(model, params, images, {"red": 1.0}, ATTRIBUTES)
  target = predicted.copy()
  target[:, 4] = 1.0
  z = model.posterior(params, {"image": images, "attributes": target}).mean
  np.testing.assert_allclose(edited, np.asarray(model.generate(params, "image", z)), rtol=1e-6)
  with pytest.raises(ConfigError, match=r"figure_attributes: 'purple' is not an attribute"):
    generate.edit(model, params, images, {"purple": 1.0}, ATTRIBUTES)
  batch = {"image": images, "attributes": np.repeat(w[:1], 5, 0)}
  out = figures.attribute_figures(model, params, batch, ATTRIBUTES, ("red", "big"),
                                  jax.random.PRNGKey(2), n=4, samples=3)
  assert out["fig4_attributes_to_image"].shape[0] == 2 * (32 + 2) + 2     # a row per attribute
  assert out["fig4_attributes_to_image"].shape[1] == 4 * (32 + 2) + 2     # mean + 3 draws
  assert out["fig5_edit_image"].shape[1] == 3 * (32 + 2) + 2              # image + 2 edits
