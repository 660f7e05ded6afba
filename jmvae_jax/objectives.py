"""Training objectives as pure functions, registered by name.

Every objective has the signature::

    fn(model, params, batch, rng, *, kl_weight=1.0, alpha=0.0,
       warmup_scope="prior", reduce=True) -> (loss, terms)

``loss`` is the quantity to minimise (the negative bound plus penalties) and
``terms`` a dict of named per-example values (``elbo`` is always the unweighted
bound the objective maximises). With ``reduce=False`` both keep the batch axis,
so evaluation gets per-example values from the training code.

``kl_weight`` is the warm-up weight beta. The authors' code scales only the KL
to the prior (``warmup_scope="prior"``); MultiVae scales every KL term
(``warmup_scope="all"``).

A user's own loss is named in the config as ``package.module:function``. It may
carry an attribute ``components`` (a function ``(names, x) -> (encoder subsets,
decoders)``); without it the model gets the joint encoder, one unimodal encoder
per modality and one decoder per modality.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import jax.numpy as jnp

from jmvae_jax import distributions as D
from jmvae_jax.errors import ConfigError, allowed
from jmvae_jax.model import full_components

WARMUP_SCOPES = ("prior", "all")


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  fn: Callable
  components: Callable = full_components
  gan: str = ""   # "": one player; "image": a GAN on x's decoder (gan.py); "conditioned":
                  # its discriminator also sees w (CVAE-GAN)


REGISTRY: dict[str, Objective] = {}


def register(name: str, components: Callable = full_components, gan: str = ""):
  """Decorator: makes ``fn`` selectable as ``config.objective.name = name``; with ``gan``,
  ``fn`` is the encoder's loss of a three-player GAN objective (gan.py)."""
  def wrap(fn):
    REGISTRY[name] = Objective(name, fn, components, gan)
    return fn
  return wrap


def _finish(loss, terms, reduce: bool):
  terms = dict(terms, loss=loss)
  if reduce:
    terms = {k: jnp.mean(v) for k, v in terms.items()}
  return terms["loss"], terms


def _warmup(kl_weight, warmup_scope):
  """(weight on the prior KL, weight on the other KL terms)."""
  if warmup_scope not in WARMUP_SCOPES:
    raise allowed("config.objective.warmup_scope", warmup_scope, WARMUP_SCOPES)
  return kl_weight, (kl_weight if warmup_scope == "all" else 1.0)


def _reconstructions(model, params, z, batch, names, cond=None):
  return {f"recon/{n}": model.log_likelihood(params, n, z, batch[n], cond) for n in names}


def joint_elbo(model, params, batch, rng):
  """Eq. 3 terms: z ~ q(z|all), log p(x_m|z) for every modality, KL(q || p(z)).

  Returns (terms, q, the summed reconstruction terms)."""
  names = model.spec.names
  q = model.encode(params, names, batch)
  z = D.sample(rng, q)
  terms = _reconstructions(model, params, z, batch, names)
  recon = sum(terms[f"recon/{n}"] for n in names)
  terms["kl/prior"] = D.kl_to_standard_normal(q)
  terms["elbo"] = recon - terms["kl/prior"]
  return terms, q, recon


# ----------------------------------------------------------------------------
# The JMVAE family.
# ----------------------------------------------------------------------------

def _joint_only(names, x):
  return (tuple(names),), tuple((n, ()) for n in names)


@register("jmvae", components=_joint_only)
@register("jmvae_zero", components=_joint_only)
def jmvae(model, params, batch, rng, *, kl_weight=1.0, alpha=0.0, warmup_scope="prior",
          reduce=True):
  """The JMVAE bound (Eq. 3). JMVAE-zero trains with it and, lacking unimodal
  encoders, infers from one modality by feeding zeros for the others."""
  del alpha
  w_prior, _ = _warmup(kl_weight, warmup_scope)
  terms, _, recon = joint_elbo(model, params, batch, rng)
  return _finish(-(recon - w_prior * terms["kl/prior"]), terms, reduce)


@register("jmvae_gan", components=full_components, gan="image")
@register("jmvae_kl", components=full_components)
def jmvae_kl(model, params, batch, rng, *, kl_weight=1.0, alpha=0.0, warmup_scope="prior",
             reduce=True):
  """JMVAE-kl (Eq. 4), for M modalities:
  L(x_1..x_M) - alpha * sum_m KL(q(z|x_1..x_M) || q(z|x_m))."""
  w_prior, w_other = _warmup(kl_weight, warmup_scope)
  terms, q, recon = joint_elbo(model, params, batch, rng)
  penalty = 0.0
  for n in model.spec.names:
    terms[f"kl/{n}"] = D.kl(q, model.encode(params, (n,), batch))
    penalty = penalty + terms[f"kl/{n}"]
  terms["elbo_kl"] = terms["elbo"] - alpha * penalty
  loss = -(recon - w_prior * terms["kl/prior"] - alpha * w_other * penalty)
  return _finish(loss, terms, reduce)


# ----------------------------------------------------------------------------
# The baselines of the paper's tables. x is config.model.x; w are the others.
# ----------------------------------------------------------------------------

def _x_bound(model, params, batch, rng, q, kl, w_prior, reduce, cond=None):
  """E_q log p(x | z [, cond]) - KL, the bound of the single-target baselines."""
  x = model.spec.x
  terms = _reconstructions(model, params, D.sample(rng, q), batch, (x,), cond)
  terms["kl/prior"] = kl
  terms["elbo"] = terms[f"recon/{x}"] - kl
  return _finish(-(terms[f"recon/{x}"] - w_prior * kl), terms, reduce)


@register("vae_gan", components=lambda names, x: (((x,),), ((x, ()),)), gan="image")
@register("vae", components=lambda names, x: (((x,),), ((x, ()),)))
def vae(model, params, batch, rng, *, kl_weight=1.0, alpha=0.0, warmup_scope="prior",
        reduce=True):
  """VAE on x alone: E_q(z|x) log p(x|z) - KL(q(z|x) || p(z))."""
  del alpha
  w_prior, _ = _warmup(kl_weight, warmup_scope)
  q = model.encode(params, (model.spec.x,), batch)
  return _x_bound(model, params, batch, rng, q, D.kl_to_standard_normal(q), w_prior, reduce)


def _cvae_components(names, x):
  return (tuple(names),), ((x, tuple(n for n in names if n != x)),)


@register("cvae_gan", components=_cvae_components, gan="conditioned")
@register("cvae", components=_cvae_components)
def cvae(model, params, batch, rng, *, kl_weight=1.0, alpha=0.0, warmup_scope="prior",
         reduce=True):
  """CVAE, a bound on log p(x|w): E_q(z|x,w) log p(x|z,w) - KL(q(z|x,w) || N(0, I))."""
  del alpha
  w_prior, _ = _warmup(kl_weight, warmup_scope)
  q = model.encode(params, model.spec.names, batch)
  return _x_bound(model, params, batch, rng, q, D.kl_to_standard_normal(q), w_prior, reduce,
                  cond=batch)


def _cmma_components(names, x):
  w = tuple(n for n in names if n != x)
  return (tuple(names), w), ((x, ()),)


@register("cmma_gan", components=_cmma_components, gan="image")
@register("cmma", components=_cmma_components)
def cmma(model, params, batch, rng, *, kl_weight=1.0, alpha=0.0, warmup_scope="prior",
         reduce=True):
  """CMMA, a bound on log p(x|w) with a learned prior p(z|w) (the encoder of w):
  E_q(z|x,w) log p(x|z) - KL(q(z|x,w) || p(z|w))."""
  del alpha
  w_prior, _ = _warmup(kl_weight, warmup_scope)
  q = model.encode(params, model.spec.names, batch)
  prior = model.encode(params, model.spec.w, batch)
  return _x_bound(model, params, batch, rng, q, D.kl(q, prior), w_prior, reduce)


# ----------------------------------------------------------------------------
# Lookup by name, including a user's own ``package.module:function``.
# ----------------------------------------------------------------------------

def get(name: str) -> Objective:
  """The objective registered as ``name``, or a user function ``module:function``."""
  if name in REGISTRY:
    return REGISTRY[name]
  if ":" in name:
    module_name, _, fn_name = name.partition(":")
    try:
      module = importlib.import_module(module_name)
    except (ImportError, ValueError) as e:   # ValueError: an empty or relative module name
      raise ConfigError(f"config.objective.name={name!r}: cannot import {module_name!r} ({e})")
    fn = getattr(module, fn_name, None)
    if not callable(fn):
      raise ConfigError(f"config.objective.name={name!r}: {module_name!r} has no function "
                        f"{fn_name!r}")
    return Objective(name, fn, getattr(fn, "components", full_components),
                     getattr(fn, "gan", ""))
  raise ConfigError(f"config.objective.name={name!r} is not valid; allowed: "
                    f"{', '.join(map(repr, sorted(REGISTRY)))} or 'package.module:function'")
