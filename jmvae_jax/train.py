"""Training state, the optimiser and the pure jitted step.

The step ``train_step(state, batch, rng, kl_weight) -> (state, metrics)`` is a
module-level pure function; everything static (model, loss, optimiser) is bound
with ``functools.partial`` before ``jax.jit``. Its randomness is
``fold_in(rng, step)``, so a resumed run draws the same numbers.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmvae_jax import optim
from jmvae_jax.errors import ConfigError, allowed
from jmvae_jax.likelihood import MATMUL_PRECISIONS


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(optim_cfg) -> optax.GradientTransformation:
  """Adam after the authors' clipping: global norm, then element-wise (optim.py). Fields
  missing from ``optim_cfg`` take ``optim.clipped_adam``'s defaults."""
  rules = {"learning_rate": (lambda x: x > 0, "> 0"),
           "b1": (lambda x: 0 <= x < 1, "in [0, 1)"), "b2": (lambda x: 0 <= x < 1, "in [0, 1)"),
           "eps": (lambda x: x >= 0, ">= 0"),
           "clip_global_norm": (lambda x: x >= 0, ">= 0 (0: off)"),
           "clip_value": (lambda x: x >= 0, ">= 0 (0: off)")}
  v = {k: optim_cfg[k] for k in rules if k in optim_cfg}
  for k, value in v.items():
    ok, want = rules[k]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
      raise ConfigError(f"config.optim.{k}={value!r} must be a number {want}")
  return optim.clipped_adam(**v)


def init_state(model, optimizer, rng) -> TrainState:
  params = model.init(rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def train_step(state: TrainState, batch, rng, kl_weight, *, model, loss_fn, optimizer):
  """One optimiser step on the mean loss; metrics are the mean named terms."""
  step_rng = jax.random.fold_in(rng, state.step)

  def loss(params):
    return loss_fn(model, params, batch, step_rng, kl_weight=kl_weight)

  (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  terms["grad_norm"] = optax.tree.norm(grads)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), terms


def jit_train_step(model, loss_fn, optimizer, matmul_precision: str = "highest"):
  """The step with static parts bound, compiled once, state donated; every matmul
  traced at ``matmul_precision`` (jax's ``default_matmul_precision``: "highest" keeps
  float32 products where a GPU would use TF32; a CPU computes the same either way)."""
  step = functools.partial(train_step, model=model, loss_fn=loss_fn, optimizer=optimizer)
  return jax.jit(jax.default_matmul_precision(matmul_precision)(step), donate_argnums=0)


# ----------------------------------------------------------------------------
# Evaluation of the training bound on the test split (exact over a padded batch).
# ----------------------------------------------------------------------------

def eval_step(params, batch, mask, rng, *, model, loss_fn):
  """Masked sums of the per-example terms (kl_weight 1: the true bound)."""
  _, terms = loss_fn(model, params, batch, rng, kl_weight=1.0, reduce=False)
  mask = mask.astype(jnp.float32)
  return {k: jnp.sum(v * mask) for k, v in terms.items()}, jnp.sum(mask)


def evaluate_bound(eval_fn, params, data, batch_size, mesh, rng) -> dict:
  """The mean of every term of the objective over the whole test split."""
  from jmvae_jax import parallel
  sums, count = {}, 0.0
  for i, (batch, mask) in enumerate(data.test_batches(batch_size)):
    arrays = parallel.shard_batch(dict(batch, _mask=mask), mesh)
    mask_arr = arrays.pop("_mask")
    s, c = eval_fn(params, arrays, mask_arr, jax.random.fold_in(rng, i))
    sums = {k: sums.get(k, 0.0) + v for k, v in s.items()}
    count += c
  return {k: float(v) / float(count) for k, v in jax.device_get(sums).items()}


# ----------------------------------------------------------------------------
# The one loop with side effects.
# ----------------------------------------------------------------------------

def check_train_config(train_cfg) -> None:
  for field in ("epochs", "batch_size", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints"):
    value = train_cfg.get(field)
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f"config.train.{field}={value!r} must be an int > 0")
  for field in ("eval_every_epochs", "max_steps"):
    value = train_cfg.get(field, 0)
    if not isinstance(value, int) or value < 0:
      raise ConfigError(f"config.train.{field}={value!r} must be an int >= 0 (0: off)")
  if train_cfg.get("matmul_precision", "highest") not in MATMUL_PRECISIONS:
    raise allowed("config.train.matmul_precision", train_cfg.matmul_precision,
                  MATMUL_PRECISIONS)


class NonFiniteLoss(FloatingPointError):
  """The loss or a gradient became inf or nan; the last good checkpoint is kept."""


def _first_non_finite(history):
  for step, metrics in history:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
      return step, bad
  return None


def _key_ints(key) -> list[int]:
  """A PRNG key as the list of ints a checkpoint's metadata holds."""
  return [int(v) for v in np.asarray(jax.device_get(key))]


def _check_resume(meta: dict, step: int, steps_per_epoch: int, directory: str, rng,
                  batch_size: int):
  """The base random key to resume with, once the checkpoint's metadata is known to
  mean the same here: the same batch size and seed (config.json is compared first;
  this holds where it is missing) and the same number of batches per epoch."""
  for field, saved, here in (
      ("train.batch_size", meta.get("batch_size"), batch_size),
      ("seed (its key)", meta.get("rng"), _key_ints(rng))):
    if saved is not None and saved != here:
      raise ConfigError(f"checkpoint {step} in {directory} was trained with config.{field} "
                        f"{saved}, not {here}: resume with the run's own config, or use a "
                        "new --workdir")
  epoch, offset = meta.get("epoch"), meta.get("batch_in_epoch")
  if None not in (epoch, offset) and epoch * steps_per_epoch + offset != step:
    raise ConfigError(
        f"checkpoint {step} in {directory} is at epoch {epoch}, batch {offset}, which is not "
        f"step {step} at this config's {steps_per_epoch} batches per epoch: the training "
        "data or the device count changed; use a new --workdir")
  if "rng" in meta:
    return jnp.asarray(np.asarray(meta["rng"], np.uint32))
  return rng


def _bound_line(step: int, result: dict) -> str:
  return f"test bound at step {step}: " + " ".join(
      f"{k} {v:.4g}" for k, v in sorted(result.items()))


def check_workdir(workdir: str) -> None:
  """A one-line ConfigError if ``workdir`` cannot be (or become) a writable directory."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={workdir!r} is a file, not a directory")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={workdir!r} cannot be written: {parent!r} is not a "
                      "writable directory")


def _lock(workdir: str):
  """An exclusive lock on WORKDIR/.lock for this run (process 0; creates the workdir),
  released at exit or on ``close()``; a one-line ConfigError if another run holds it."""
  import fcntl
  import types
  if jax.process_index() != 0:
    return types.SimpleNamespace(close=lambda: None)
  os.makedirs(workdir, exist_ok=True)
  f = open(os.path.join(workdir, ".lock"), "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise ConfigError(f"workdir {workdir!r} is in use by another run ({holder}); wait for "
                      "it to end or use a new --workdir") from None
  return f


def _sign(lock) -> None:
  """Writes who holds ``lock`` into it, for the message another run would get."""
  import socket
  if hasattr(lock, "truncate"):
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint.

  Returns the last logged training metrics and the last test-bound metrics."""
  import time
  from jmvae_jax import builder as build_lib
  from jmvae_jax import checkpoint, data_config, figures, input_pipeline, parallel, writers

  # Everything that can be checked on the config alone, before any data or compile.
  model, loss_fn = build_lib.build(config)
  optimizer = make_optimizer(config.optim)
  check_train_config(config.train)
  local_batch = parallel.check_batch_size(config.train.batch_size)
  data_config.resolve(config.data)
  check_workdir(workdir)
  # An existing workdir is locked first (another run may be writing it); the workdir is
  # read (architecture, run), the data found and the checkpoint restored before anything
  # is written.
  lock = _lock(workdir) if os.path.isdir(workdir) else None
  try:
    ckpt = checkpoint.Checkpointer(workdir, config, keep=config.train.keep_checkpoints)
    data = input_pipeline.load(config.data, config.seed)
    steps_per_epoch = data.steps_per_epoch(local_batch)
    total = config.train.epochs * steps_per_epoch
    if config.train.get("max_steps"):
      total = min(total, config.train.max_steps)
    mesh = parallel.make_mesh()
    rng = jax.random.PRNGKey(config.seed)
    state = parallel.replicate(init_state(model, optimizer, jax.random.split(rng, 3)[0]), mesh)
    if ckpt.latest_step() is not None:
      abstract = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
      state, meta = ckpt.restore(abstract)
      rng = _check_resume(meta, int(state.step), steps_per_epoch, ckpt.directory, rng,
                          config.train.batch_size)
      print(f"resumed from step {int(state.step)} (epoch {meta.get('epoch')}, batch "
            f"{meta.get('batch_in_epoch')} of {steps_per_epoch}) in {ckpt.directory}",
            flush=True)
    _, step_rng, eval_rng = jax.random.split(rng, 3)
    start = int(state.step)
    precision = config.train.get("matmul_precision", "highest")
    eval_fn = jax.jit(jax.default_matmul_precision(precision)(
        functools.partial(eval_step, model=model, loss_fn=loss_fn)))
    if start >= total:   # nothing to train: the test bound, and the workdir left as it is
      limit = ("config.train.max_steps" if total < config.train.epochs * steps_per_epoch
               else "config.train.epochs")
      print(f"the run in {workdir} is complete ({start} steps, this config asks for "
            f"{total}); raise {limit} to train it further", flush=True)
      result = evaluate_bound(eval_fn, state.params, data, local_batch, mesh, eval_rng)
      print(_bound_line(start, result), flush=True)
      ckpt.close()
      if lock is not None:
        lock.close()
      return {"train": {}, "test": result, "step": start,
              "figures": os.path.join(workdir, "figures")}
    lock = lock or _lock(workdir)
    _sign(lock)
    ckpt.begin_writing()
  except BaseException:
    if lock is not None:
      lock.close()
    raise

  step_fn = jit_train_step(model, loss_fn, optimizer, precision)
  saved_rng = _key_ints(rng)   # the base key, in every checkpoint
  writer = writers.Writer(workdir, resumed_at=start)
  progress = writers.Progress(start, total)
  warmup = config.objective.get("warmup_epochs", 0)
  history, last_train, last_eval = [], {}, {}
  eval_every = config.train.get("eval_every_epochs", 0)
  step = start
  print(f"training {config.objective.name} on {data.name}: {total} steps "
        f"({steps_per_epoch}/epoch, batch {config.train.batch_size}, "
        f"{jax.device_count()} device(s)) in {workdir}", flush=True)

  def flush_history():
    """Checks every step since the last check is finite; logs their mean."""
    nonlocal history, last_train
    fetched = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(history)]
    history = []
    bad = _first_non_finite(fetched)
    if bad:
      raise NonFiniteLoss(
          f"non-finite {', '.join(bad[1])} at step {bad[0]}; stopped, the last good "
          f"checkpoint (step {ckpt.latest_step()}) is kept in {ckpt.directory}")
    if fetched:
      last_train = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}

  def evaluate_and_draw(at: int) -> dict:
    """The test bound of the current parameters, printed and logged, and the figures
    (process 0)."""
    t0 = time.time()
    result = evaluate_bound(eval_fn, state.params, data, local_batch, mesh, eval_rng)
    print(_bound_line(at, result) + f" ({time.time() - t0:.1f}s)", flush=True)
    writer.scalars(at, result, prefix="test")
    if jax.process_index() == 0:
      batch, real = next(iter(data.test_batches(min(16, local_batch))))
      batch = {k: v[np.asarray(real, bool)] for k, v in batch.items()}   # no padded rows
      for name, img in figures.model_figures(model, state.params, batch, eval_rng).items():
        writer.image(at, name, img)
    return result

  try:
    while step < total:
      epoch, offset = divmod(step, steps_per_epoch)
      for local in data.train_batches(epoch, local_batch, start=offset):
        if step >= total:
          break
        weight = jnp.float32(build_lib.kl_weight(step / steps_per_epoch, warmup))
        state, metrics = step_fn(state, parallel.shard_batch(local, mesh), step_rng, weight)
        step += 1
        metrics["kl_weight"] = weight
        history.append((step, metrics))
        save_now = step % config.train.checkpoint_every_steps == 0 or step == total
        if step % config.train.log_every_steps == 0 or save_now:
          flush_history()
          rate = progress.update(step)
          writer.scalars(step, last_train)
          shown = " ".join(f"{k} {v:.4g}" for k, v in sorted(last_train.items()))
          print(f"epoch {step / steps_per_epoch:.2f}/{config.train.epochs} step "
                f"{step}/{total} {shown} {rate}", flush=True)
        epoch_done = step % steps_per_epoch == 0
        # The evaluation comes before the save, so a run stopped in between redoes both.
        if (eval_every and epoch_done and (step // steps_per_epoch) % eval_every == 0) or \
            step == total:
          last_eval = evaluate_and_draw(step)
        if save_now:
          ckpt.save(step, state, {"epoch": step // steps_per_epoch,
                                  "batch_in_epoch": step % steps_per_epoch,
                                  "batch_size": config.train.batch_size, "rng": saved_rng})
    flush_history()
  finally:
    ckpt.close()
    writer.close()
    lock.close()
  return {"train": last_train, "test": last_eval, "step": step,
          "figures": writer.figure_dir}


def load_trained(config, workdir: str, step: int | None = None):
  """(model, loss_fn, state, meta) restored from ``workdir``'s latest (or ``step``)
  checkpoint; a one-line ConfigError if there is none or it has another architecture."""
  from jmvae_jax import builder, checkpoint
  model, loss_fn = builder.build(config)
  optimizer = make_optimizer(config.optim)
  ckpt = checkpoint.Checkpointer(workdir, config, for_writing=False)
  try:
    abstract = jax.eval_shape(lambda: init_state(model, optimizer, jax.random.PRNGKey(0)))
    state, meta = ckpt.restore(abstract, step)
  finally:
    ckpt.close()
  return model, loss_fn, state, meta
