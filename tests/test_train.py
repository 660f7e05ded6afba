"""The training entry point end to end: resume, multi-device equality, SIGKILL."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes
from jmvae_jax import ConfigError, restore, train
from jmvae_jax.eval import job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir, **train_fields):
  c = shapes.get_config("smoke")
  c.data.data_dir = str(data_dir)
  for k, v in train_fields.items():
    c.train[k] = v
  return c


def restore_params(config, workdir):
  _, _, state, meta = restore.load_trained(config, str(workdir))
  return state, meta


def test_train_then_resume_continues_from_the_checkpoint_and_lowers_the_loss(tmp_path,
                                                                           monkeypatch,
                                                                           capsys):
  workdir = tmp_path / "run"
  precisions, real = [], train.jit_train_step
  monkeypatch.setattr(train, "jit_train_step",
                      lambda *a: precisions.append(a[3]) or real(*a))
  out = train.train_and_evaluate(tiny_config(tmp_path / "data", epochs=1), str(workdir))
  assert out["step"] == 10
  # The resumed half at another matmul precision: a free field, passed to the step.
  resumed = tiny_config(tmp_path / "data", epochs=3, matmul_precision="default")
  out2 = train.train_and_evaluate(resumed, str(workdir))
  assert out2["step"] == 30 and precisions == ["highest", "default"]
  state, meta = restore_params(tiny_config(tmp_path / "data", epochs=3), workdir)
  seed_key = [int(v) for v in jax.random.PRNGKey(0)]   # config.seed = 0
  assert int(state.step) == 30 and meta == {"epoch": 3, "batch_in_epoch": 0, "batch_size": 40,
                                            "rng": seed_key}
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  train_loss = {l["step"]: l["train/loss"] for l in lines if "train/loss" in l}
  assert sorted(train_loss)[0] == 5 and max(train_loss) == 30   # the resumed run appended
  assert train_loss[30] < train_loss[5] - 100
  test = [l for l in lines if "test/elbo" in l]
  assert [l["step"] for l in test] == [10, 20, 30]   # every epoch (and at the end)
  assert test[-1]["test/elbo"] > test[0]["test/elbo"]
  figures = set(os.listdir(workdir / "figures"))
  assert figures == {"samples.png", "reconstructions.png", "image_to_attributes.png",
                     "attributes_to_image.png"}
  assert any(f.startswith("events") for f in os.listdir(workdir / "tensorboard"))
  # A complete run, even with a changed field: the test bound, and the workdir untouched.
  before = _mtimes(workdir)
  again = tiny_config(tmp_path / "data", epochs=3)
  again.objective.alpha = 0.5
  capsys.readouterr()
  out3 = train.train_and_evaluate(again, str(workdir))
  assert out3["step"] == 30 and out3["test"]["elbo"] == pytest.approx(test[-1]["test/elbo"])
  assert "complete (30 steps, this config asks for 30); raise config.train.epochs " in (
      capsys.readouterr().out)
  again.train.epochs, again.train.max_steps = 5, 30   # now max_steps is what ends it
  train.train_and_evaluate(again, str(workdir))
  assert "raise config.train.max_steps " in capsys.readouterr().out
  assert _mtimes(workdir) == before


def test_the_step_traces_every_matmul_at_the_requested_precision(tmp_path):
  """jit_train_step's matmuls, forward and backward, carry the precision asked for:
  "highest" (float32 products on a GPU, the default) or none ("default": TF32 there)."""
  from jmvae_jax import builder
  c = tiny_config(tmp_path / "data")
  model, loss_fn = builder.build(c)
  optimizer = train.make_optimizer(c.optim)
  state = train.init_state(model, optimizer, jax.random.PRNGKey(0))
  batch = {"image": np.zeros((4,) + tuple(c.model.modalities.image.shape), np.float32),
           "attributes": np.zeros((4,) + tuple(c.model.modalities.attributes.shape),
                                  np.float32)}
  dots = {}
  for precision in ("highest", "default"):
    step = train.jit_train_step(model, loss_fn, optimizer, precision)
    text = step.lower(state, batch, jax.random.PRNGKey(1), 1.0).as_text()
    lines = [l for l in text.splitlines() if "stablehlo.dot_general" in l]
    dots[precision] = (len(lines), sum("precision = [HIGHEST, HIGHEST]" in l for l in lines))
  n = dots["highest"][0]
  assert n >= 12 and dots == {"highest": (n, n), "default": (n, 0)}, dots


def _mtimes(workdir):
  return {p: os.path.getmtime(os.path.join(d, p)) for d, _, fs in os.walk(workdir) for p in fs}


def test_a_workdir_of_another_architecture_or_run_is_refused_and_left_untouched(tmp_path):
  workdir = tmp_path / "run"
  train.train_and_evaluate(tiny_config(tmp_path / "data", epochs=1), str(workdir))
  before = _mtimes(workdir)
  other = tiny_config(tmp_path / "data", epochs=1)
  other.model.latent_dim = 6
  with pytest.raises(ConfigError, match=r"another architecture \(config.model.latent_dim: 4 "
                     r"there, 6 here\)"):
    train.train_and_evaluate(other, str(workdir))
  for field, value, shown in [("seed", 7, "config.seed: 0 there, 7 here"),
                              ("batch_size", 20, "config.train.batch_size: 40 there, 20 here"),
                              ("num_train", 800, "config.data.num_train: 400 there, 800 here")]:
    c = tiny_config(tmp_path / "data", epochs=2)
    section = c if field == "seed" else (c.train if field == "batch_size" else c.data)
    section[field] = value
    with pytest.raises(ConfigError, match=r"holds another run \(" + re.escape(shown)):
      train.train_and_evaluate(c, str(workdir))
  assert _mtimes(workdir) == before
  c = tiny_config(tmp_path / "moved", epochs=1)   # the data may move: the same run
  os.rename(tmp_path / "data", tmp_path / "moved")
  assert train.train_and_evaluate(c, str(workdir))["step"] == 10
  os.remove(workdir / "config.json")   # a checkpoint with no config.json to compare with
  with pytest.raises(ConfigError, match=r"no config.json to compare with.*\(4, 16\) there, "
                     r"\(6, 16\) here"):
    train.train_and_evaluate(other, str(workdir))
  # ... and the checkpoint's own record of the batch size and the seed's key
  for field, value, shown in [("batch_size", 20, "config.train.batch_size 40, not 20"),
                              ("seed", 7, "config.seed (its key) [0, 0], not [0, 7]")]:
    c = tiny_config(tmp_path / "moved", epochs=2)
    (c if field == "seed" else c.train)[field] = value
    with pytest.raises(ConfigError, match=r"checkpoint 10 in .*" + re.escape(shown)):
      train.train_and_evaluate(c, str(workdir))
  assert not (workdir / "config.json").exists()


def test_a_workdir_in_use_by_another_run_is_refused(tmp_path):
  import fcntl
  workdir = tmp_path / "run"
  os.makedirs(workdir)
  with open(workdir / ".lock", "w") as held:
    held.write("pid 1 on elsewhere\n")
    held.flush()
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(ConfigError, match=r"in use by another run \(pid 1 on elsewhere\)"):
      train.train_and_evaluate(tiny_config(tmp_path / "data", epochs=1), str(workdir))
  assert sorted(os.listdir(workdir)) == [".lock"]


def test_bad_train_fields_fail_before_anything_runs(tmp_path):
  c = tiny_config(tmp_path / "data", batch_size=0)
  with pytest.raises(ConfigError, match=r"config.train.batch_size=0 must be an int > 0"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  c = tiny_config(tmp_path / "data", matmul_precision="tf32")
  with pytest.raises(ConfigError, match=r"config.train.matmul_precision='tf32' is not valid; "
                                        r"allowed: 'highest', 'high', 'default'"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  c = tiny_config(tmp_path / "data", epochs=1)
  c.data.source = "tfds"
  with pytest.raises(ConfigError, match=r"config.data.source='tfds' is not valid"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
  (tmp_path / "a_file").write_text("")
  for workdir, message in [(tmp_path / "a_file", r"is a file, not a directory"),
                           (tmp_path / "a_file" / "run", r"cannot be written: .*a_file' is not a "
                                                         r"writable directory")]:
    with pytest.raises(ConfigError, match=message):
      train.train_and_evaluate(tiny_config(tmp_path / "data", epochs=1), str(workdir))


RUN = """
import sys, numpy as np, jax
sys.path.insert(0, {root!r})
from tests.test_train import tiny_config, restore_params
from jmvae_jax import train
c = tiny_config({data!r}, epochs=2, checkpoint_every_steps={every})
{extra}
train.train_and_evaluate(c, {workdir!r})
state, _ = restore_params(c, {workdir!r})
np.savez({out!r}, *[np.asarray(x) for x in jax.tree.leaves(state.params)])
print("devices", jax.device_count())
"""


def run_script(tmp_path, name, devices=1, every=20, extra="", wait=True, cache=True):
  """Runs RUN in a subprocess; ``cache=False`` keeps it off the suite's compilation
  cache (tests/conftest.py), so that it compiles every program afresh."""
  script = RUN.format(root=ROOT, data=str(tmp_path / "data"), workdir=str(tmp_path / name),
                      out=str(tmp_path / f"{name}.npz"), every=every, extra=extra)
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  if not cache:
    env.pop("JAX_COMPILATION_CACHE_DIR")
  cmd = [sys.executable, "-c", script]
  if not wait:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  assert f"devices {devices}" in done.stdout
  return [v for _, v in sorted(np.load(tmp_path / f"{name}.npz").items(),
                               key=lambda kv: int(kv[0].split("_")[1]))]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """One uninterrupted one-device run (a checkpoint every 4 steps), shared by the tests
  below: (its directory, holding the data and the workdir "straight"; its parameters).
  `make test` gives each test file to one pytest-xdist worker (--dist loadfile), so it
  is made once."""
  base = tmp_path_factory.mktemp("reference")
  return base, run_script(base, "straight", every=4)


def test_one_device_and_four_simulated_devices_give_the_same_parameters(straight):
  base, one = straight
  four = run_script(base, "four", devices=4)
  assert len(one) == len(four)
  for a, b in zip(one, four):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_sigkill_and_restart_is_bit_identical_to_an_uninterrupted_run(straight):
  tmp_path, reference = straight
  # Both halves compile afresh, off the cache that holds the uninterrupted run's
  # programs: the comparison is of independent compilations, as for a user with no cache.
  proc = run_script(tmp_path, "killed", every=4, wait=False, cache=False)
  ckpts = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline:
    steps = [d for d in os.listdir(ckpts) if d.isdigit()] if ckpts.exists() else []
    if steps and max(map(int, steps)) >= 8:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert steps and steps[-1] < 20, f"the run finished before it was killed: {steps}"
  resumed = run_script(tmp_path, "killed", every=4, cache=False)
  for a, b in zip(reference, resumed):
    np.testing.assert_array_equal(a, b)
  # metrics.jsonl: what the killed run logged after its last checkpoint is not repeated,
  # and the test bounds (same parameters, same restored random key) are identical.
  logs = {}
  for name in ("straight", "killed"):
    lines = [json.loads(l) for l in open(tmp_path / name / "metrics.jsonl")]
    logs[name] = [(l["step"], "test/elbo" in l) for l in lines]
    assert len(set(logs[name])) == len(logs[name]), logs[name]
    logs[name + "_test"] = [l for l in lines if "test/elbo" in l]
  assert sorted(logs["straight"]) == sorted(logs["killed"])
  assert logs["straight_test"] == logs["killed_test"]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  c = tiny_config(tmp_path / "data", epochs=2, checkpoint_every_steps=5, log_every_steps=5)
  c.objective.name = "tests.custom_losses:nan_after_half_warmup"
  c.objective.warmup_epochs = 2      # kl_weight = step / 20: above 0.5 from step 11 (0-based)
  with pytest.raises(train.NonFiniteLoss,
                     match=r"non-finite .*grad_norm.* at step 12; .*last good checkpoint "
                           r"\(step 10\)"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  steps = sorted(int(d) for d in os.listdir(tmp_path / "run" / "checkpoints") if d.isdigit())
  assert steps == [5, 10]
  state, _ = restore_params(c, tmp_path / "run")
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))


JOIN = """
import sys, numpy as np, jax
sys.path.insert(0, {root!r})
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="localhost:{port}", num_processes=2,
                           process_id={pid})
from tests.test_train import tiny_config, restore_params
"""

MULTIHOST = JOIN + """
from jmvae_jax import preemption, train
c = tiny_config({data!r}, epochs=2, checkpoint_every_steps=20)
print("initialized", flush=True)
try:
  train.train_and_evaluate(c, {workdir!r})
except preemption.Preempted as e:
  print("preempted:", e, flush=True)
  raise SystemExit(0)
state, _ = restore_params(c, {workdir!r})
np.savez({out!r}, *[np.asarray(x) for x in jax.tree.leaves(state.params)])
from jmvae_jax.eval import job
c.eval.k, c.eval.prior_samples, c.eval.chunk_size = 8, 8, 4
res = job.evaluate_workdir(c, {workdir!r}, log=None)
print("joint", repr(res["estimates"]["joint"]["mean"]), "n", res["num_examples"])
print("processes", jax.process_count(), "devices", jax.device_count(), "finished")
"""


def two_processes(tmp_path, name, script, term_after_start=False):
  """``script`` on two processes (two simulated devices each) into WORKDIR ``name``, each
  saving to ``name{pid}.npz``; with ``term_after_start``, process 1 gets SIGTERM once both
  have joined. Their outputs (both must exit 0)."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(
      [sys.executable, "-c", script.format(
          root=ROOT, port=port, pid=pid, data=str(tmp_path / "data"),
          workdir=str(tmp_path / name), out=str(tmp_path / f"{name}{pid}.npz"))],
      env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for pid in (0, 1)]
  head = ""
  if term_after_start:
    for line in procs[1].stdout:
      head += line
      if line.startswith("initialized"):
        procs[1].send_signal(signal.SIGTERM)
        break
  outs = [p.communicate(timeout=300)[0] for p in procs]
  outs[1] = head + outs[1]
  for pid, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, (f"process {pid} exited with {p.returncode}:\n{out[-3000:]}\n"
                               f"the other process:\n{outs[1 - pid][-3000:]}")
  return outs


def test_two_processes_stop_together_on_one_sigterm_resume_and_match_one_process(straight):
  """Two processes through jax.distributed (JAX's preemption service): a SIGTERM to
  process 1 alone stops both after the same step, saved; the same command resumes there,
  ends at one process's parameters, and evaluates as one process does."""
  tmp_path, one = straight
  outs = two_processes(tmp_path, "multi", MULTIHOST, term_after_start=True)
  steps = set()
  for out in outs:
    m = re.search(r"preempted: stopped by SIGTERM after step (\d+), which is saved", out)
    assert m, out[-3000:]
    steps.add(int(m.group(1)))
  ckpts = tmp_path / "multi" / "checkpoints"
  assert len(steps) == 1, outs
  step = steps.pop()
  assert step < 20 and step in {int(d) for d in os.listdir(ckpts) if d.isdigit()}
  outs = two_processes(tmp_path, "multi", MULTIHOST)
  for pid, out in enumerate(outs):
    assert "processes 2 devices 4 finished" in out and "resumed from step" in out, \
        f"process {pid}:\n{out[-3000:]}"
  # The evaluation of the same parameters over every test example, split over processes.
  from jmvae_jax.eval import job
  c = tiny_config(tmp_path / "data", epochs=2)
  c.eval.k, c.eval.prior_samples, c.eval.chunk_size = 8, 8, 4
  single = job.evaluate_workdir(c, str(tmp_path / "straight"), log=None)
  for out in outs:
    joint = float(out.split("joint ")[1].split()[0])
    assert f"n {single['num_examples']}" in out
    np.testing.assert_allclose(joint, single["estimates"]["joint"]["mean"], rtol=1e-4)
  for pid in (0, 1):
    got = np.load(tmp_path / f"multi{pid}.npz")
    got = [v for _, v in sorted(got.items(), key=lambda kv: int(kv[0].split("_")[1]))]
    for a, b in zip(one, got):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_parameters_made_non_finite_by_an_update_are_never_checkpointed(tmp_path, monkeypatch):
  """The metrics of a step are computed before its update; an update that makes the
  parameters NaN (here an optimiser that scales every update by NaN) is caught before
  the save, and nothing is written."""
  import optax
  real = train.make_optimizers
  monkeypatch.setattr(train, "make_optimizers",
                      lambda c, model: optax.chain(real(c, model), optax.scale(float("nan"))))
  c = tiny_config(tmp_path / "data", epochs=1, checkpoint_every_steps=1)
  with pytest.raises(train.NonFiniteLoss, match=r"non-finite parameters or optimiser state "
                     r"after step 1; stopped, no checkpoint was written"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert [d for d in os.listdir(tmp_path / "run" / "checkpoints") if d.isdigit()] == []


def test_a_non_finite_estimate_is_an_error_not_a_result(tmp_path):
  """A checkpoint holding NaN (written by hand: training refuses to) is evaluated to an
  error with nothing written; optimiser settings that can only give NaN are refused."""
  from jmvae_jax import builder
  from jmvae_jax.workdir import Workdir
  c = tiny_config(tmp_path / "data", epochs=1)
  c.eval.k, c.eval.prior_samples = 4, 4
  model, _ = builder.build(c)
  state = train.init_state(model, train.make_optimizer(c.optim), jax.random.PRNGKey(0))
  state = state.replace(step=jnp.int32(1),
                        params=jax.tree.map(lambda a: a * np.nan, state.params))
  with Workdir(str(tmp_path / "run"), c, write=True) as wd:
    wd.begin_writing()
    wd.save(1, state, {"epoch": 0, "batch_in_epoch": 1})
  with pytest.raises(train.NonFiniteLoss, match=r"non-finite estimate \(.*joint.*\) of step 1 "
                     r"in .*; evaluation.json was not written"):
    job.evaluate_workdir(c, str(tmp_path / "run"), log=None)
  assert not (tmp_path / "run" / "evaluation.json").exists()
  for field, value in (("eps", 0.0), ("learning_rate", float("inf")), ("learning_rate", 1e39)):
    bad = tiny_config(tmp_path / "data", epochs=1)
    bad.optim[field] = value
    with pytest.raises(ConfigError, match=rf"config.optim.{field}={re.escape(repr(value))} must "):
      train.train_and_evaluate(bad, str(tmp_path / "other"))
  assert not (tmp_path / "other").exists()


@pytest.fixture
def ctrl_c_heard():
  """SIGINT as a terminal gives it to Python: the suite run as a background job ("make
  test &") starts with SIGINT ignored, which the run rightly leaves ignored."""
  before = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, before)


def test_ctrl_c_inside_a_save_lets_it_finish_then_stops_there(tmp_path, monkeypatch, capsys,
                                                               ctrl_c_heard):
  """Ctrl-C twice inside Orbax's save (sent from within it): the save completes, the run
  stops right after it (KeyboardInterrupt), the checkpoint verifies, nothing
  half-written is left, and the same command resumes from it."""
  from jmvae_jax import checkpoint
  real = checkpoint.Checkpointer.save

  def save(self, step, state, meta):
    if step == 5:
      manager_save = self.manager.save

      def interrupted(*args, **kwargs):
        for _ in range(2):   # each handled at the next bytecode: mid-save
          os.kill(os.getpid(), signal.SIGINT)
        return manager_save(*args, **kwargs)
      monkeypatch.setattr(self.manager, "save", interrupted)
    return real(self, step, state, meta)
  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  c = tiny_config(tmp_path / "data", epochs=1, checkpoint_every_steps=5)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  ckpts = tmp_path / "run" / "checkpoints"
  assert sorted(os.listdir(ckpts)) == ["5"]
  assert int(restore_params(c, tmp_path / "run")[0].step) == 5   # its fingerprint verified
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real)
  capsys.readouterr()
  assert train.train_and_evaluate(c, str(tmp_path / "run"))["step"] == 10
  assert "resumed from step 5" in capsys.readouterr().out


def test_a_seed_beyond_int64_and_a_read_only_workdir_on_evaluate_are_one_line(tmp_path,
                                                                             monkeypatch):
  c = tiny_config(tmp_path / "data", epochs=1)
  c.seed = 2 ** 64
  with pytest.raises(ConfigError, match=r"^config.seed=18446744073709551616 must be an int in "
                     r"\[0, 2\*\*63\)$"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  (tmp_path / "ro").mkdir()
  if os.access(tmp_path / "ro", os.W_OK):   # root writes anywhere: the answer simulated
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if os.fspath(p) == str(
        tmp_path / "ro") else real(p, m))
  with pytest.raises(ConfigError, match=r"--workdir='.*ro' cannot be written: the evaluation "
                     r"writes evaluation.json, classifiers/ and figures/ there"):
    job.evaluate_workdir(tiny_config(tmp_path / "data", epochs=1), str(tmp_path / "ro"))


def test_sigterm_saves_the_step_in_flight_and_the_rerun_ends_bit_identical(straight):
  """A preemption notice (SIGTERM) during training: launch.py finishes the step, saves it,
  exits 143 in one line; the same command resumes there and ends where the uninterrupted
  run did."""
  tmp_path, reference = straight
  workdir = tmp_path / "termed"
  cmd = [sys.executable, "launch.py", "--config=configs/shapes.py:smoke", f"--workdir={workdir}",
         f"--config.data.data_dir={tmp_path / 'data'}", "--config.train.epochs=2",
         "--config.train.checkpoint_every_steps=4"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  ckpts = workdir / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and not (ckpts.exists() and any(
      d.isdigit() for d in os.listdir(ckpts))):
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 143, err[-2000:]
  last = err.strip().splitlines()[-1]
  m = re.fullmatch(r"stopped by SIGTERM after step (\d+), which is saved in (.*): run the "
                   r"same command to resume", last)
  assert m, err[-2000:]
  steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert steps[-1] == int(m.group(1)) < 20
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0 and f"resumed from step {steps[-1]}" in done.stdout, done.stderr
  state, _ = restore_params(tiny_config(tmp_path / "data", epochs=2, checkpoint_every_steps=4),
                            workdir)
  for a, b in zip(reference, jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_the_loop_runs_at_most_one_step_ahead_of_the_device(tmp_path, monkeypatch):
  """JAX dispatches asynchronously: a loop that never waits queues steps far ahead of the
  device, and a SIGTERM then waits for every queued step before the save. With each step
  made slow on the device (a chain of matmuls after it), every step but the first two
  is dispatched only once the step two before it has finished."""
  real = train.jit_train_step

  def slow(metrics):
    x = jnp.full((384, 384), 1e-3) + 0.0 * metrics["loss"]
    for _ in range(24):
      x = jnp.tanh(x @ x + 1e-3)
    return dict(metrics, slow=jnp.sum(x))

  outputs, ready = [], []

  def jit_train_step(*a, **k):
    inner = real(*a, **k)
    fn = jax.jit(lambda *args: (lambda s, m: (s, slow(m)))(*inner(*args)))

    def step(*args):
      if len(outputs) >= 2:
        ready.append(all(v.is_ready() for v in outputs[-2].values()))
      state, metrics = fn(*args)
      outputs.append(dict(metrics))   # the loop adds to the dict it is given
      return state, metrics
    return step

  monkeypatch.setattr(train, "jit_train_step", jit_train_step)
  c = tiny_config(tmp_path / "data", epochs=1, checkpoint_every_steps=1000,
                  log_every_steps=1000, eval_every_epochs=0)
  assert train.train_and_evaluate(c, str(tmp_path / "run"))["step"] == 10
  assert ready == [True] * 8


def test_stop_requests_take_the_first_ctrl_c_as_a_request_and_the_second_at_once(ctrl_c_heard):
  from jmvae_jax import preemption
  before = signal.getsignal(signal.SIGINT)
  with preemption.StopRequests() as stops:
    assert stops.due(3) is None
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    assert stops.due(3) == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.05)
  assert signal.getsignal(signal.SIGINT) is before


def _damage(step_dir, how):
  files = sorted((os.path.getsize(os.path.join(r, f)), os.path.join(r, f))
                 for r, _, fs in os.walk(step_dir / "state") for f in fs)
  if how == "overwrite":   # 64 bytes in the middle of the largest data file
    size, path = files[-1]
    with open(path, "r+b") as f:
      f.seek(size // 2)
      f.write(bytes(range(64)))
  elif how == "swapped":   # the arrays of checkpoint 5: readable, but not what 10 recorded
    shutil.rmtree(step_dir / "state")
    shutil.copytree(step_dir.parent / "5" / "state", step_dir / "state")
  elif how == "truncate":
    size, path = files[-1]
    with open(path, "r+b") as f:
      f.truncate(size // 3)
  else:
    os.remove(step_dir / "state" / "_METADATA")


# 64 overwritten bytes may land in a compressed chunk (unreadable) or not (a mismatch)
WHY = {"overwrite": "(does not match its fingerprint|cannot be read)",
       "swapped": "does not match its fingerprint", "truncate": "cannot be read",
       "metadata": "cannot be read"}


@pytest.mark.parametrize("how", ["overwrite", "swapped", "truncate", "metadata"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_an_intact_one(
    tmp_path, capsys, how):
  c = tiny_config(tmp_path / "data", epochs=1, checkpoint_every_steps=5)
  train.train_and_evaluate(c, str(tmp_path / "run"))
  reference = restore_params(c, tmp_path / "run")[0]
  ckpts = tmp_path / "run" / "checkpoints"
  _damage(ckpts / "10", how)
  capsys.readouterr()
  state, _ = restore_params(c, tmp_path / "run")   # a reader passes it by
  assert int(state.step) == 5 and (ckpts / "10").exists()
  train.train_and_evaluate(c, str(tmp_path / "run"))   # a writer sets it aside, redoes it
  out = capsys.readouterr().out
  assert re.search(rf"checkpoint 10 in {re.escape(str(ckpts))} {WHY[how]}.*: set aside in "
                   r".*checkpoints_set_aside/10; using checkpoint 5", out), out
  assert "resumed from step 5" in out
  assert (tmp_path / "run" / "checkpoints_set_aside" / "10").is_dir()
  state = restore_params(c, tmp_path / "run")[0]
  assert int(state.step) == 10
  for a, b in zip(jax.tree.leaves(reference.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_when_no_checkpoint_can_be_trusted_one_line_says_so_and_nothing_changes(tmp_path):
  c = tiny_config(tmp_path / "data", epochs=1, checkpoint_every_steps=5)
  train.train_and_evaluate(c, str(tmp_path / "run"))
  _damage(tmp_path / "run" / "checkpoints" / "10", "swapped")
  _damage(tmp_path / "run" / "checkpoints" / "5", "truncate")
  before = _mtimes(tmp_path / "run")
  with pytest.raises(ConfigError, match=r"no checkpoint in .* can be trusted: 10 does not match "
                     r"its fingerprint \(\d+ array\(s\) differ, e.g. .*\); 5 cannot be read "
                     r"\(.*\); nothing was changed") as e:
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert "\n" not in str(e.value) and _mtimes(tmp_path / "run") == before


@pytest.mark.parametrize("name,message", [
    ("per_example_loss", r"returned a loss of shape \(40,\); with reduce=True \(training\) it "
                         r"is a scalar"),
    ("bare_loss", r"returned .*, not \(loss, terms\)"),
    ("no_options", r"calling it failed \(.*unexpected keyword argument 'alpha'.*\); an "
                   r"objective is fn\(model, params, batch, rng, \*, kl_weight=1.0"),
])
def test_a_loss_that_breaks_the_contract_is_one_line_before_anything_compiles(tmp_path, name,
                                                                             message):
  c = tiny_config(tmp_path / "data", epochs=1)
  c.objective.name = f"tests.custom_losses:{name}"
  with pytest.raises(ConfigError, match=message) as e:
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_damaged_workdir_files_and_a_home_relative_workdir_are_one_line(tmp_path, monkeypatch,
                                                                        capsys):
  from jmvae_jax import main
  c = tiny_config(tmp_path / "data", epochs=1)
  train.train_and_evaluate(c, str(tmp_path / "run"))
  config_json = tmp_path / "run" / "config.json"
  saved = config_json.read_text()
  for text, message in (("", r"config.json cannot be read as this run's config \(JSONDecode"),
                        ("[1, 2]", r"config.json holds no config")):
    config_json.write_text(text)
    with pytest.raises(ConfigError, match=message):
      train.train_and_evaluate(c, str(tmp_path / "run"))
  config_json.write_text(saved)
  # config.json gone: the checkpoint's own record still refuses another network
  os.remove(config_json)
  other = tiny_config(tmp_path / "data", epochs=1)
  other.model.activation = "relu"   # the same shapes
  with pytest.raises(ConfigError, match=r"was trained with another architecture \(config.model"
                                        r".activation: 'leaky_relu' there, 'relu' here\)"):
    train.train_and_evaluate(other, str(tmp_path / "run"))
  (tmp_path / "odd").mkdir()
  (tmp_path / "odd" / "checkpoints").write_text("")
  with pytest.raises(ConfigError, match=r"checkpoints is a file, not the directory"):
    train.train_and_evaluate(c, str(tmp_path / "odd"))
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  with pytest.raises(SystemExit) as e:
    main.run(other, "~/x", "evaluate")
  assert e.value.code == 2 and f"{tmp_path}/home/x" in capsys.readouterr().err
  assert not os.path.exists("~")


def test_a_full_disk_during_a_save_is_one_line_and_the_older_checkpoints_stay(tmp_path):
  """A 600 KB file system (tmpfs; the test needs the right to mount one) fills during the
  first save: the run stops with one line naming the cause, and keeps what it had."""
  mount = tmp_path / "small"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                    capture_output=True).returncode != 0:
    pytest.skip("mounting a small file system is not allowed here")
  try:
    done = subprocess.run(
        [sys.executable, "launch.py", "--config=configs/shapes.py:smoke",
         f"--workdir={mount / 'run'}", f"--config.data.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert re.fullmatch(r"error: checkpoint 5 could not be written in .*/checkpoints \(No space "
                        r"left on device\); the older checkpoints are intact: free the space "
                        r"\(or fix the directory\) and run the same command to resume",
                        done.stderr.strip().splitlines()[-1]), done.stderr[-2000:]
    # and nothing else: no traceback from Orbax's writer threads (TensorFlow's start-up
    # log lines aside)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not [d for d in os.listdir(mount / "run" / "checkpoints") if d.isdigit()]
  finally:
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_workdir_that_cannot_be_created_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match=r"--workdir='/proc/jmvae-x' cannot be (created in "
                                        r"'/proc'|written)"):
    train.train_and_evaluate(tiny_config(tmp_path / "data", epochs=1), "/proc/jmvae-x")
