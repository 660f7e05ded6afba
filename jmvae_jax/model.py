"""The multimodal VAE as pure functions of its parameters.

A ``Model`` holds Flax modules and no state. Its parameters are a plain dict::

    {"encoder": {"image+label": ..., "image": ..., "label": ...},
     "decoder": {"image": ..., "label": ...}}

Which encoders and decoders exist is decided by the objective (JMVAE-zero has
only the joint encoder; JMVAE-kl adds one unimodal encoder per modality; VAE has
one encoder and one decoder), so parameters an objective never uses are never
created. Every method is pure: ``method(params, ...) -> arrays``.

With ``norm="batch"`` the dict also holds ``"batch_stats"`` ({"encoder": {key: ...},
"decoder": {name: ...}}, the running averages of each batch-normalised network, saved
with the parameters). The networks use them, and so never depend on the rest of the
batch, except inside ``collect_batch_stats()``: there they use the batch's statistics
and the running averages they update are gathered, for the train step to keep.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jmvae_jax import distributions as D
from jmvae_jax import modalities as M
from jmvae_jax import networks
from jmvae_jax.errors import ConfigError

Params = Mapping[str, Any]
Batch = Mapping[str, jax.Array]


_COLLECTING: contextvars.ContextVar = contextvars.ContextVar("batch_stats", default=None)


@contextlib.contextmanager
def collect_batch_stats():
  """Inside: batch norm in training mode; yields {(kind, key): updated running averages}
  of every batch-normalised network called (the last call of each wins)."""
  collected = {}
  token = _COLLECTING.set(collected)
  try:
    yield collected
  finally:
    _COLLECTING.reset(token)


def with_batch_stats(params: Params, collected: dict, keep=lambda where: True) -> Params:
  """``params`` with the running averages in ``collected`` that ``keep((kind, key))``."""
  chosen = {w: v for w, v in collected.items() if keep(w)}
  if not chosen:
    return params
  stats = {kind: dict(v) for kind, v in params["batch_stats"].items()}
  for (kind, key), v in chosen.items():
    stats[kind][key] = v
  return dict(params, batch_stats=stats)


def subset_key(subset) -> str:
  """The params key of the encoder that sees ``subset``: names joined by '+'."""
  return "+".join(sorted(subset))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Everything that fixes the architecture; hashable."""
  modalities: tuple[M.ModalitySpec, ...]
  latent_dim: int
  x: str                                   # the paper's x (the image); the rest are w
  encoders: tuple[tuple[str, ...], ...]    # the subsets that have an encoder
  decoders: tuple[tuple[str, tuple[str, ...]], ...]   # (target, conditioning names)
  joint_hidden: tuple[int, ...] = ()
  activation: str = "leaky_relu"
  variance_param: str = "log"
  norm: str = "none"

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(s.name for s in self.modalities)

  @property
  def w(self) -> tuple[str, ...]:
    return tuple(n for n in self.names if n != self.x)

  @property
  def read(self) -> tuple[str, ...]:
    """The modalities some encoder or decoder of the model reads (VAE: x alone)."""
    used = {n for subset in self.encoders for n in subset}
    used |= {n for target, cond in self.decoders for n in (target, *cond)}
    return tuple(n for n in self.names if n in used)

  def modality(self, name: str) -> M.ModalitySpec:
    return {s.name: s for s in self.modalities}[name]


def full_components(names, x):
  """The joint encoder, one unimodal encoder per modality, one decoder per modality."""
  encoders = (tuple(names),) + tuple((n,) for n in names if len(names) > 1)
  return encoders, tuple((n, ()) for n in names)


def spec_from_config(model_cfg, components=full_components) -> ModelSpec:
  """The ModelSpec of a checked ``config.model`` (``schema.check_model``).

  ``components(names, x) -> (encoder subsets, decoders)`` comes from the objective.
  """
  mods = tuple(M.ModalitySpec(name=n, **c) for n, c in sorted(model_cfg["modalities"].items()))
  names = tuple(s.name for s in mods)
  encoders, decoders = components(names, model_cfg["x"])
  return ModelSpec(
      modalities=mods, latent_dim=model_cfg["latent_dim"], x=model_cfg["x"],
      encoders=tuple(tuple(sorted(e)) for e in encoders),
      decoders=tuple((t, tuple(sorted(c))) for t, c in decoders),
      joint_hidden=tuple(model_cfg["joint_hidden"]), activation=model_cfg["activation"],
      variance_param=model_cfg["variance_param"], norm=model_cfg["norm"])


def _fold(x: jax.Array, lead: tuple[int, ...]) -> jax.Array:
  """[*lead, *event] -> [prod(lead), *event]."""
  return x.reshape((-1,) + x.shape[len(lead):])


class Model:
  """Pure encode / decode / likelihood / posterior functions over a params dict."""

  def __init__(self, spec: ModelSpec):
    self.spec = spec
    kw = dict(activation=spec.activation, norm=spec.norm)
    self.encoders = {
        subset_key(s): networks.Encoder(
            tuple(spec.modality(n) for n in s), spec.latent_dim, spec.joint_hidden,
            variance_param=spec.variance_param, **kw)
        for s in spec.encoders}
    self.decoders = {
        t: networks.Decoder(spec.modality(t), tuple(spec.modality(c) for c in cond), **kw)
        for t, cond in spec.decoders}
    self.conditions = dict(spec.decoders)

  # -- parameters -------------------------------------------------------------

  def init(self, rng: jax.Array) -> dict:
    """Fresh parameters for every encoder and decoder of the spec.

    Called on a concrete key, the initialisers run as one program, on a CPU compiled at
    XLA's lowest backend optimisation: they run once, and optimising their hundreds of
    random-number loops takes longer than running them (BUILD_NOTES.md). The values
    differ from an optimised program's in the last bit or so. A traced key (under ``jit``, ``vmap``
    or ``eval_shape``) makes them part of the caller's program; a concrete key captured
    inside a jitted function still compiles them on their own, as constants."""
    if isinstance(rng, jax.core.Tracer) or jax.config.jax_disable_jit:
      return self._init(rng)
    fast = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
    return jax.jit(self._init).lower(rng).compile(compiler_options=fast)(rng)

  def _init(self, rng: jax.Array) -> dict:
    dummy = {s.name: jnp.zeros((1,) + s.shape, jnp.float32) for s in self.spec.modalities}
    z = jnp.zeros((1, self.spec.latent_dim), jnp.float32)
    keys = iter(jax.random.split(rng, len(self.encoders) + len(self.decoders)))
    enc = {k: m.init(next(keys), {n: dummy[n] for n in k.split("+")})
           for k, m in self.encoders.items()}
    dec = {t: m.init(next(keys), z, dummy) for t, m in self.decoders.items()}
    params = {"encoder": {k: v["params"] for k, v in enc.items()},
              "decoder": {k: v["params"] for k, v in dec.items()}}
    if self.spec.norm == "batch":
      params["batch_stats"] = {kind: {k: v["batch_stats"] for k, v in nets.items()
                                      if "batch_stats" in v}
                               for kind, nets in (("encoder", enc), ("decoder", dec))}
    return params

  def _apply(self, kind: str, key: str, module, params: Params, *args):
    """``module`` (encoder or decoder ``key``) on ``args``; batch norm as
    ``collect_batch_stats`` says."""
    variables = {"params": params[kind][key]}
    stats = params.get("batch_stats", {}).get(kind, {}).get(key)
    if stats is None:
      return module.apply(variables, *args)
    variables["batch_stats"] = stats
    collected = _COLLECTING.get()
    if collected is None:
      return module.apply(variables, *args, training=False)
    out, updated = module.apply(variables, *args, training=True, mutable=["batch_stats"])
    collected[(kind, key)] = updated["batch_stats"]
    return out

  # -- the networks as pure functions -------------------------------------------

  def encode(self, params: Params, subset, inputs: Batch) -> D.DiagGaussian:
    """q(z | the modalities in ``subset``), read from ``inputs`` (data-space values)."""
    key = subset_key(subset)
    if key not in self.encoders:
      raise ConfigError(f"this model has no encoder for {key!r}; it has {sorted(self.encoders)}")
    names = key.split("+")
    lead = M.batch_dims(self.spec.modality(names[0]), inputs[names[0]])
    feats = {n: _fold(M.encoder_input(self.spec.modality(n), inputs[n]), lead) for n in names}
    q = self._apply("encoder", key, self.encoders[key], params, feats)
    return jax.tree.map(lambda a: a.reshape(lead + a.shape[1:]), q)

  def decode(self, params: Params, name: str, z: jax.Array, cond: Batch | None = None):
    """Raw likelihood parameters of modality ``name`` given z of shape [*lead, latent]."""
    if name not in self.decoders:
      raise ConfigError(f"this model has no decoder for {name!r} (it decodes "
                        f"{sorted(self.decoders)}): it cannot generate {name!r}")
    lead = z.shape[:-1]
    folded_cond = None
    if self.conditions[name]:
      missing = [c for c in self.conditions[name] if c not in (cond or {})]
      if missing:
        raise ConfigError(f"the decoder of {name!r} is conditioned on "
                          f"{list(self.conditions[name])}; {missing} not given")
      folded_cond = {}
      for c in self.conditions[name]:
        v = M.encoder_input(self.spec.modality(c), cond[c])
        v = jnp.broadcast_to(v, lead + v.shape[v.ndim - self.spec.modality(c).event_ndim:])
        folded_cond[c] = _fold(v, lead)
    out = self._apply("decoder", name, self.decoders[name], params, _fold(z, lead),
                      folded_cond)
    return out.reshape(lead + out.shape[1:])

  def log_likelihood(self, params: Params, name: str, z: jax.Array, x: jax.Array,
                     cond: Batch | None = None) -> jax.Array:
    """log p(x_name | z [, cond]) with shape [*lead]; x broadcasts against z's lead."""
    return self.spec.modality(name).flat_log_prob(self.decode(params, name, z, cond), x)

  def generate(self, params: Params, name: str, z: jax.Array, cond: Batch | None = None,
               rng: jax.Array | None = None) -> jax.Array:
    """The decoder's mean of modality ``name`` (or a sample, if ``rng`` is given)."""
    spec = self.spec.modality(name)
    out = self.decode(params, name, z, cond)
    if rng is None:
      return spec.likelihood_fns.mean(spec, out)
    return spec.likelihood_fns.sample(rng, spec, out)

  # -- bidirectional inference -----------------------------------------------------

  def posterior_encoder(self, present) -> tuple[str, ...]:
    """The encoder used for the modalities ``present``: its own if the model has one
    (JMVAE-kl's unimodal encoders), else the smallest one that sees them all, with
    the missing modalities fed as zeros (JMVAE-zero)."""
    present = tuple(sorted(present))
    have = [tuple(s) for s in self.spec.encoders]
    cands = [s for s in have if set(present) <= set(s)]
    if not cands:
      raise ConfigError(f"no encoder of this model sees {present}; encoders: {have}")
    return min(cands, key=len)

  def posterior(self, params: Params, inputs: Batch) -> D.DiagGaussian:
    """q(z | the modalities present in ``inputs``), as the model's variant defines it."""
    present = [n for n in self.spec.names if n in inputs]
    subset = self.posterior_encoder(present)
    ref = self.spec.modality(present[0])
    lead = M.batch_dims(ref, inputs[present[0]])
    filled = dict(inputs)
    for n in subset:
      if n not in inputs:
        filled[n] = jnp.zeros(lead + self.spec.modality(n).shape, jnp.float32)
    return self.encode(params, subset, filled)

  def translate(self, params: Params, rng: jax.Array, inputs: Batch, target: str,
                sample_z: bool = True) -> jax.Array:
    """Generates modality ``target`` from the modalities in ``inputs`` (e.g. label to
    image, image to label): z from the posterior (its mean if not ``sample_z``),
    then the target decoder's mean. A decoder conditioned on the inputs (CVAE)
    draws z from its prior N(0, I) instead."""
    q = self.translation_posterior(params, inputs, target)
    z = D.sample(rng, q) if sample_z else q.mean
    return self.generate(params, target, z, inputs)

  def translation_posterior(self, params: Params, inputs: Batch, target: str):
    """The z distribution :meth:`translate` draws from: q(z | inputs), or N(0, I) where
    the ``target`` decoder is itself conditioned on the inputs (CVAE)."""
    present = set(inputs) & set(self.spec.names)
    if present and present <= set(self.conditions.get(target, ())):
      ref = self.spec.modality(sorted(present)[0])
      lead = M.batch_dims(ref, inputs[ref.name])
      return D.DiagGaussian(*(jnp.zeros(lead + (self.spec.latent_dim,)),) * 2)
    return self.posterior(params, inputs)

  def check_batch(self, batch: Batch, names=None, where: str = "batch") -> None:
    """One-line ConfigError if the batch lacks one of ``names`` (default: every
    modality) or one has a wrong shape, or, for concrete arrays, wrong values
    (``modalities.check_data``)."""
    for n in names or self.spec.names:
      if n not in batch:
        raise ConfigError(f"{where} has no modality {n!r}; it has {sorted(batch)}")
      M.check_data(self.spec.modality(n), batch[n], where)
