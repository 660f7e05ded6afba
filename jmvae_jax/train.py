"""Training: the state, the pure jitted step, and the one loop with side effects.

The step ``train_step(state, batch, rng, kl_weight) -> (state, metrics)`` is a
module-level pure function; everything static (model, loss, optimiser) is bound with
``functools.partial`` before ``jax.jit``. Its randomness is ``fold_in(rng, step)``, so a
resumed run draws the same numbers. ``train_and_evaluate`` owns the side effects: the
workdir, the data, the writers, the checkpoints.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmvae_jax import builder, optim, parallel, schema
from jmvae_jax import model as model_lib
from jmvae_jax.eval import loop


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(optim_cfg) -> optax.GradientTransformation:
  """Adam after the authors' clipping: global norm, then element-wise (optim.py); the
  section is checked against the schema first (missing fields take its defaults)."""
  return optim.clipped_adam(**schema.check_section("optim", optim_cfg))


def make_optimizers(c, model):
  """The optimiser of a checked config: ``config.optim``'s, or for a GAN one per player
  (the encoder: ``config.optim``; ``config.gan.decoder_optim``, ``discriminator_optim``)."""
  from jmvae_jax import gan
  if not isinstance(model, gan.GanModel):
    return make_optimizer(c.optim)
  return gan.PlayerOptimizers(model, make_optimizer(c.optim),
                              make_optimizer(c.gan.decoder_optim),
                              make_optimizer(c.gan.discriminator_optim))


def init_state(model, optimizer, rng) -> TrainState:
  params = model.init(rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def train_step(state: TrainState, batch, rng, kl_weight, *, model, loss_fn, optimizer):
  """One optimiser step on the mean loss; metrics are the mean named terms."""
  step_rng = jax.random.fold_in(rng, state.step)

  def loss(params):
    with model_lib.collect_batch_stats() as stats:
      value, terms = loss_fn(model, params, batch, step_rng, kl_weight=kl_weight)
    return value, (terms, dict(stats))

  (_, (terms, stats)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  # batch norm's running averages (no gradient, so no update) are the step's new ones
  params = model_lib.with_batch_stats(optax.apply_updates(state.params, updates), stats)
  terms["grad_norm"] = optax.tree.norm(grads)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), terms


def fed_step(state, inputs, rng, kl_weight, *, make_batch, step):
  """``step`` on the batch that ``make_batch`` makes from the feed's ``inputs``."""
  return step(state, make_batch(inputs), rng, kl_weight)


def jit_train_step(model, loss_fn, optimizer, matmul_precision: str = "highest",
                   make_batch=None):
  """The step with static parts bound, compiled once, state donated; every matmul
  traced at ``matmul_precision`` (jax's ``default_matmul_precision``: "highest" keeps
  float32 products where a GPU would use TF32; a CPU computes the same either way).
  ``make_batch``: the step takes a feed's inputs and makes its batch first (a
  ``DeviceFeed``: the batch is gathered and binarised on the device)."""
  from jmvae_jax import gan
  one_step = gan.train_step if isinstance(optimizer, gan.PlayerOptimizers) else train_step
  step = functools.partial(one_step, model=model, loss_fn=loss_fn, optimizer=optimizer)
  if make_batch is not None:
    step = functools.partial(fed_step, make_batch=make_batch, step=step)
  return jax.jit(jax.default_matmul_precision(matmul_precision)(step), donate_argnums=0)


# ----------------------------------------------------------------------------
# The training bound on the test split, through the one masked loop.
# ----------------------------------------------------------------------------

def bound_values(params, batch, mask, rng, *, model, loss_fn):
  """Every term of the objective per example (kl_weight 1: the true bound), 0 at padding."""
  _, terms = loss_fn(model, params, batch, rng, kl_weight=1.0, reduce=False)
  return {k: jnp.where(mask > 0, v, 0.0) for k, v in terms.items()}


def bound_fn(model, loss_fn, matmul_precision: str = "highest"):
  """``bound_values`` jitted with the model and loss bound."""
  fn = functools.partial(bound_values, model=model, loss_fn=loss_fn)
  return jax.jit(jax.default_matmul_precision(matmul_precision)(fn))


def evaluate_bound(fn, model, params, data, batch_size, mesh, rng) -> dict:
  """The mean of every term of the objective over the whole test split; batch i draws
  its z from ``fold_in(rng, i)``."""
  batches = iter(range(1 << 62))

  def call(batch, index, mask):
    del index   # one draw per batch, as the training step draws
    return fn(params, batch, mask, jax.random.fold_in(rng, next(batches)))

  sums, _, n, _ = loop.run(model, data.test_batches(batch_size), model.spec.read, call,
                           mesh=mesh, progress=None, total=None, what="test bound")
  return {k: float(v) / n for k, v in sums.items()}


# ----------------------------------------------------------------------------
# The one loop with side effects.
# ----------------------------------------------------------------------------

class NonFiniteLoss(FloatingPointError):
  """The loss, a gradient, the parameters or the test bound became inf or nan; the last
  good checkpoint is kept and nothing non-finite is written."""


def _stopped(what: str, wd) -> NonFiniteLoss:
  last = wd.latest_step()
  kept = (f"the last good checkpoint (step {last}) is kept in {wd.directory}" if last is not None
          else "no checkpoint was written")
  return NonFiniteLoss(f"non-finite {what}; stopped, {kept}")


@jax.jit
def all_finite(tree) -> jax.Array:
  """Whether every floating-point value of ``tree`` is finite (one reduction)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _mean_metrics(history, wd) -> dict:
  """The mean of each metric over ``history`` [(step, metrics)], after checking that
  every value is finite (NonFiniteLoss names the first step that is not)."""
  fetched = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(history)]
  for step, metrics in fetched:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
      raise _stopped(f"{', '.join(bad)} at step {step}", wd)
  if not fetched:
    return {}
  return {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}


def _bound_line(step: int, result: dict) -> str:
  return f"test bound at step {step}: " + " ".join(
      f"{k} {v:.4g}" for k, v in sorted(result.items()))


def _total_steps(train_cfg, steps_per_epoch: int) -> tuple[int, str]:
  """The steps this config asks for, and the field that limits them."""
  total = train_cfg.epochs * steps_per_epoch
  if train_cfg.max_steps and train_cfg.max_steps < total:
    return train_cfg.max_steps, "config.train.max_steps"
  return total, "config.train.epochs"


def _report(at, state, model, data, batch_size, mesh, writer, bound, rng, wd) -> dict:
  """The test bound of ``state``, printed and logged, and the figures (process 0); a
  non-finite bound stops the run."""
  from jmvae_jax import figures
  t0 = time.time()
  result = evaluate_bound(bound, model, state.params, data, batch_size, mesh, rng)
  print(_bound_line(at, result) + f" ({time.time() - t0:.1f}s)", flush=True)
  bad = sorted(k for k, v in result.items() if not np.isfinite(v))
  if bad:
    raise _stopped(f"test bound ({', '.join(bad)}) at step {at}", wd)
  writer.scalars(at, result, prefix="test")
  if hasattr(model, "discriminate"):   # a GAN: how often D is right about held-out images
    from jmvae_jax.eval import gan_metrics
    accuracy = gan_metrics.discriminator_accuracy(model, state.params,
                                                  data.test_batches(batch_size), mesh=mesh)
    writer.scalars(at, {k: v["mean"] for k, v in accuracy.items()}, prefix="test/d_accuracy")
    print(f"discriminator right about held-out images at step {at}: " + " ".join(
        f"{k} {v['mean']:.3f}" for k, v in sorted(accuracy.items())), flush=True)
  if jax.process_index() == 0:
    batch, real = next(iter(data.test_batches(min(16, batch_size))))
    batch = {k: v[np.asarray(real, bool)] for k, v in batch.items()}   # no padded rows
    for name, img in figures.model_figures(model, state.params, batch, rng,
                                           display=data.display).items():
      writer.image(at, name, img)
  return result


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint.

  Returns the last logged training metrics and the last test-bound metrics."""
  from jmvae_jax import data as data_lib
  from jmvae_jax.workdir import Workdir, key_ints
  c = schema.check(config)   # every field, before any data, file or compile
  model, loss_fn = builder.from_checked(c)
  optimizer = make_optimizers(c, model)
  local_batch = parallel.check_batch_size(c.train.batch_size)
  with Workdir(workdir, config, write=True, keep=c.train.keep_checkpoints) as wd:
    data = data_lib.load(c.data, c.seed)
    steps_per_epoch = data.steps_per_epoch(local_batch)
    total, limit = _total_steps(c.train, steps_per_epoch)
    mesh = parallel.make_mesh()
    rng = jax.random.PRNGKey(c.seed)
    state = parallel.replicate(init_state(model, optimizer, jax.random.split(rng, 3)[0]), mesh)
    builder.check_loss(model, loss_fn, state.params, data.modalities, local_batch,
                       c.objective.name)
    if wd.latest_step() is not None:
      abstract = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
      state, rng = wd.resume(abstract, rng, steps_per_epoch, c.train.batch_size)
    _, step_rng, eval_rng = jax.random.split(rng, 3)
    bound = bound_fn(model, loss_fn, c.train.matmul_precision)
    start = int(state.step)
    if start >= total:   # nothing to train: the test bound, and the workdir left as it is
      print(f"the run in {workdir} is complete ({start} steps, this config asks for "
            f"{total}); raise {limit} to train it further", flush=True)
      result = evaluate_bound(bound, model, state.params, data, local_batch, mesh, eval_rng)
      print(_bound_line(start, result), flush=True)
      return {"train": {}, "test": result, "step": start,
              "figures": os.path.join(workdir, "figures")}
    wd.begin_writing()
    feed = data.feed(local_batch, mesh)
    step_fn = jit_train_step(model, loss_fn, optimizer, c.train.matmul_precision,
                             feed.make_batch)
    meta = {"batch_size": c.train.batch_size, "rng": key_ints(rng),
            "architecture": wd.architecture()}
    return _loop(c, wd, data, feed, model, state, step_fn, bound, (step_rng, eval_rng), meta,
                 start, total, steps_per_epoch, mesh)


def _loop(c, wd, data, feed, model, state, step_fn, bound, rngs, meta, start, total,
          steps_per_epoch, mesh) -> dict:
  """Steps from ``start`` to ``total``: logs, evaluates and checkpoints as configured; on
  SIGTERM or Ctrl-C, saves the step it is at and stops (preemption.py). A step is
  dispatched while the one before runs, never further ahead: unbounded, JAX's
  asynchronous dispatch let the loop queue steps up to the next log, all of which a
  SIGTERM then waited for (``benchmarks/stop_latency.py``)."""
  from jmvae_jax import preemption, writers
  step_rng, eval_rng = rngs
  local_batch = parallel.check_batch_size(c.train.batch_size)
  writer = writers.Writer(wd.path, resumed_at=start)
  progress = writers.Progress(start, total)
  history, last_train, last_eval = [], {}, {}
  step = start
  print(f"training {c.objective.name} on {data.name}: {total} steps "
        f"({steps_per_epoch}/epoch, batch {c.train.batch_size}, "
        f"{jax.device_count()} device(s)) in {wd.path}", flush=True)
  with preemption.StopRequests() as stops, contextlib.closing(writer):
    while step < total:
      epoch, offset = divmod(step, steps_per_epoch)
      for inputs in feed.epoch(epoch, start=offset):
        if step >= total:
          break
        weight = np.float32(builder.kl_weight(step / steps_per_epoch,
                                              c.objective.warmup_epochs))
        state, metrics = step_fn(state, inputs, step_rng, weight)
        if history:   # at most this step in flight: a stop is heard within one step
          jax.block_until_ready(history[-1][1])
        step += 1
        metrics["kl_weight"] = weight
        history.append((step, metrics))
        stop = stops.due(step)
        save_now = step % c.train.checkpoint_every_steps == 0 or step == total or stop
        if step % c.train.log_every_steps == 0 or save_now:
          last_train, history = _mean_metrics(history, wd) or last_train, []
          writer.scalars(step, last_train)
          shown = " ".join(f"{k} {v:.4g}" for k, v in sorted(last_train.items()))
          print(f"epoch {step / steps_per_epoch:.2f}/{c.train.epochs} step "
                f"{step}/{total} {shown} {progress.update(step)}", flush=True)
        epochs_done, in_epoch = divmod(step, steps_per_epoch)
        every = c.train.eval_every_epochs
        # The evaluation comes before the save, so a run stopped in between redoes both.
        if (every and in_epoch == 0 and epochs_done % every == 0) or step == total:
          last_eval = _report(step, state, model, data, local_batch, mesh, writer, bound,
                              eval_rng, wd)
        if save_now:   # never a checkpoint with a non-finite value in it
          if not bool(all_finite(state)):
            raise _stopped(f"parameters or optimiser state after step {step}", wd)
          with stops.saving():
            wd.save(step, state, dict(meta, epoch=epochs_done, batch_in_epoch=in_epoch))
          if not stop and jax.process_count() == 1:   # a signal during the save: stop here
            stop = stops.pending()
        if stop:
          raise stops.stop(stop, step, wd.directory)
    last_train = _mean_metrics(history, wd) or last_train
  return {"train": last_train, "test": last_eval, "step": step,
          "figures": writer.figure_dir}
