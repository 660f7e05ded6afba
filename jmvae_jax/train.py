"""Training state, the optimiser and the pure jitted step.

The step ``train_step(state, batch, rng, kl_weight) -> (state, metrics)`` is a
module-level pure function; everything static (model, loss, optimiser) is bound
with ``functools.partial`` before ``jax.jit``. Its randomness is
``fold_in(rng, step)``, so a resumed run draws the same numbers.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jmvae_jax.errors import ConfigError


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(optim_cfg) -> optax.GradientTransformation:
  """Adam after the authors' clipping: global norm, then element-wise."""
  lr = optim_cfg.get("learning_rate", 1e-3)
  if not lr > 0:
    raise ConfigError(f"config.optim.learning_rate={lr!r} must be > 0")
  parts = []
  if optim_cfg.get("clip_global_norm"):
    parts.append(optax.clip_by_global_norm(optim_cfg.clip_global_norm))
  if optim_cfg.get("clip_value"):
    parts.append(optax.clip(optim_cfg.clip_value))
  parts.append(optax.adam(lr, b1=optim_cfg.get("b1", 0.9), b2=optim_cfg.get("b2", 0.999),
                          eps=optim_cfg.get("eps", 1e-8)))
  return optax.chain(*parts)


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


def jit_train_step(model, loss_fn, optimizer):
  """The step with static parts bound, compiled once, state donated."""
  step = functools.partial(train_step, model=model, loss_fn=loss_fn, optimizer=optimizer)
  return jax.jit(step, donate_argnums=0)
