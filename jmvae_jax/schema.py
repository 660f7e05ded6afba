"""The config schema: every section's fields, their defaults, checks and hints.

A config is checked here once, before anything is built, loaded or compiled, and every
problem is a one-line ConfigError that names the field and says what would be valid.
``check(config)`` returns a copy with every missing field at its default, which the
library then reads without checking again. The data section's fields belong to the
dataset (``jmvae_jax.data``): each dataset module declares them with the same ``Field``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from jmvae_jax.errors import ConfigError, allowed, is_int


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field: its default, what a valid value is (``ok`` and the ``hint`` the
  error gives, or a closed set of ``choices``) and an optional ``convert``."""
  default: Any
  hint: str = ""
  ok: Callable[[Any], bool] = lambda v: True
  choices: tuple = ()
  convert: Callable[[Any], Any] | None = None

  def check(self, path: str, value):
    if self.choices:
      if value not in self.choices:
        raise allowed(path, value, self.choices)
    elif not self.ok(value):
      raise ConfigError(f"{path}={value!r} must be {self.hint}")
    return self.convert(value) if self.convert else value


def is_number(v) -> bool:
  """An int or float (numpy's too), not a bool."""
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def int_field(default: int, minimum: int = 1, hint: str = "") -> Field:
  return Field(default, hint or (f"an int > {minimum - 1}" if minimum == 1 else
                                 f"an int >= {minimum}"),
               lambda v: is_int(v) and v >= minimum, convert=int)


def number_field(default: float, ok: Callable, hint: str) -> Field:
  return Field(default, f"a number {hint}", lambda v: is_number(v) and ok(v), convert=float)


def ints_field(default: tuple, hint: str = "a tuple of positive ints") -> Field:
  return Field(default, hint, lambda v: isinstance(v, (list, tuple)) and
               all(is_int(h) and h > 0 for h in v), convert=lambda v: tuple(int(h) for h in v))


def path_field(default: str = "") -> Field:
  return Field(default, "a path string", lambda v: isinstance(v, (str, os.PathLike)),
               convert=lambda v: os.path.expanduser(os.fspath(v)))


MATMUL_PRECISIONS = ("highest", "high", "default")
from jmvae_jax.objectives import WARMUP_SCOPES  # noqa: E402  (the objectives define it)

OBJECTIVE = {
    "name": Field("jmvae_kl", "a registered objective or 'package.module:function'",
                  lambda v: isinstance(v, str) and bool(v)),
    "alpha": number_field(0.0, lambda v: v >= 0, ">= 0"),
    "warmup_epochs": number_field(0, lambda v: v >= 0, ">= 0"),
    "warmup_scope": Field("prior", choices=WARMUP_SCOPES),
}
def _float32(v) -> bool:
  """Finite once rounded to float32, where the step computes with it."""
  with np.errstate(over="ignore"):
    return bool(np.isfinite(np.float32(v)))


OPTIM = {
    "learning_rate": number_field(1e-3, lambda v: v > 0 and _float32(v),
                                  "> 0 and finite in float32"),
    "b1": number_field(0.9, lambda v: 0 <= v < 1, "in [0, 1)"),
    "b2": number_field(0.999, lambda v: 0 <= v < 1, "in [0, 1)"),
    # eps = 0 divides 0 by 0 for a parameter whose gradient has been 0: NaN
    "eps": number_field(1e-8, lambda v: v > 0 and _float32(v),
                        "> 0 (Adam divides by sqrt(v) + eps) and finite"),
    "clip_global_norm": number_field(0.0, lambda v: v >= 0, ">= 0 (0: off)"),
    "clip_value": number_field(0.0, lambda v: v >= 0, ">= 0 (0: off)"),
}
TRAIN = {
    "batch_size": int_field(100),
    "epochs": int_field(500),
    "max_steps": int_field(0, 0, "an int >= 0 (0: off)"),
    "log_every_steps": int_field(500),
    "eval_every_epochs": int_field(10, 0, "an int >= 0 (0: off)"),
    "checkpoint_every_steps": int_field(5000),
    "keep_checkpoints": int_field(3),
    "matmul_precision": Field("highest", choices=MATMUL_PRECISIONS),
}
EVAL = {
    "k": int_field(5000),
    "prior_samples": int_field(5000),
    "chunk_size": int_field(125),
    "batch_size": int_field(16),
    "seed": Field(0, "an int in [0, 2**31)", lambda v: is_int(v) and 0 <= v < 2**31,
                  convert=int),
    "estimators": Field((), "a tuple of names", lambda v: not isinstance(v, str) and
                        isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v),
                        convert=tuple),
    "matmul_precision": Field("highest", choices=MATMUL_PRECISIONS),
    "figure_attributes": Field((), "a tuple of attribute names", lambda v: not isinstance(
        v, str) and isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v),
                               convert=tuple),
    "inception_path": path_field(),
}
GAN = {   # used by the GAN objectives (gan.py); the authors' CelebA values
    "gamma": number_field(1.0, lambda v: v >= 0, ">= 0"),
    "prior_noise": Field("uniform", choices=("uniform", "normal", "from_w")),
    "reconstruction": Field("pixel", choices=("pixel", "features")),
    "feature_layer": int_field(2, 0, "an int >= 0"),
    "filters": ints_field((64, 128, 256, 256)),
    "dense": int_field(1024),
    "log_d": Field("plus_eps", choices=("plus_eps", "exact")),
    "equilibrium": number_field(0.0, lambda v: v >= 0, ">= 0 (0: no balancing)"),
    "margin": number_field(0.35, lambda v: v >= 0, ">= 0"),
    "pause_d_on": Field("both", choices=("both", "fake", "mean")),
    "order": Field("sequential", choices=("sequential", "simultaneous")),
    "instance_noise": number_field(0.0, lambda v: v >= 0, ">= 0 (0: none)"),
    "decoder_optim": Field({}, "a dict of config.optim's fields", lambda v: isinstance(v, Mapping)),
    "discriminator_optim": Field({}, "a dict of config.optim's fields",
                                 lambda v: isinstance(v, Mapping)),
}
SECTIONS = {"objective": OBJECTIVE, "optim": OPTIM, "train": TRAIN, "eval": EVAL, "gan": GAN}
TOP_LEVEL = ("seed", "data", "model") + tuple(SECTIONS)


def _as_dict(section, path: str) -> dict:
  if section is None:
    return {}
  if isinstance(section, ml_collections.ConfigDict):
    return section.to_dict()
  if isinstance(section, Mapping):
    return dict(section)
  raise ConfigError(f"{path} must be a ConfigDict or dict, got {type(section).__name__}")


def check_fields(path: str, fields: Mapping[str, Field], values: Mapping,
                 strict: bool = True, what: str = "") -> dict:
  """``values`` checked against ``fields``, with defaults for the missing ones. ``strict``:
  a field not in ``fields`` is an error (a typo would be silently ignored)."""
  unknown = sorted(set(values) - set(fields))
  if strict and unknown:
    raise ConfigError(f"{path}.{unknown[0]} is not a field of {what or path}; its fields: "
                      f"{', '.join(sorted(fields))}")
  out = {}
  for name, field in fields.items():
    value = values.get(name)
    out[name] = field.default if value is None else field.check(f"{path}.{name}", value)
  return out


def check_section(name: str, section) -> dict:
  """One of the sections objective, optim, train, eval: checked and completed."""
  values = _as_dict(section, f"config.{name}")
  out = check_fields(f"config.{name}", SECTIONS[name], values,
                     what=f"config.{name}")
  if name == "objective":
    from jmvae_jax import objectives   # the name must resolve (a user's module imports)
    objectives.get(out["name"])
  if name == "gan":
    for player in ("decoder_optim", "discriminator_optim"):
      out[player] = check_fields(f"config.gan.{player}", OPTIM,
                                 _as_dict(out[player], f"config.gan.{player}"),
                                 what=f"config.gan.{player}")
    if not out["filters"]:
      raise ConfigError("config.gan.filters=() must hold at least one convolution's filters")
    if out["feature_layer"] > len(out["filters"]):
      raise ConfigError(f"config.gan.feature_layer={out['feature_layer']} is not a layer of the "
                        f"discriminator; allowed: 0-{len(out['filters'])} (its "
                        f"{len(out['filters'])} convolutions, then its dense layer)")
  return out


# ----------------------------------------------------------------------------
# The model: its own fields, then one schema per declared modality.
# ----------------------------------------------------------------------------

def _model_fields() -> dict:
  from jmvae_jax import networks
  return {
      "latent_dim": int_field(64),
      "x": Field("", "the name of a declared modality", lambda v: isinstance(v, str)),
      "activation": Field("leaky_relu", choices=tuple(networks.ACTIVATIONS)),
      "variance_param": Field("log", choices=networks.VARIANCE_PARAMS),
      "joint_hidden": ints_field((), "a tuple of positive ints (() for none)"),
      "norm": Field("none", choices=networks.NORMS),
      "modalities": Field({}, "a dict of modalities", lambda v: isinstance(v, Mapping)),
  }


def _modality_fields() -> dict:
  """The fields of one modality, in the order they are checked; defaults from
  ``ModalitySpec``."""
  from jmvae_jax import modalities as M
  d = {f.name: f.default for f in dataclasses.fields(M.ModalitySpec)}
  return {
      "likelihood": Field(None, choices=tuple(M.LIKELIHOODS)),
      "network": Field(d["network"], choices=M.NETWORKS),
      "mean_activation": Field(d["mean_activation"], choices=tuple(M.MEAN_ACTIVATIONS)),
      "shape": Field(None, "a non-empty tuple of positive ints",
                     lambda v: bool(v) and all(is_int(h) and h > 0 for h in v)),
      "variance": number_field(d["variance"], lambda v: v > 0, "> 0"),
      "learn_variance": Field(d["learn_variance"], "True or False",
                              lambda v: isinstance(v, bool)),
      "hidden": ints_field(d["hidden"], "hold positive ints"),
      "decoder_hidden": ints_field(d["decoder_hidden"], "hold positive ints"),
      "filters": ints_field(d["filters"], "hold positive ints"),
      "dense": int_field(d["dense"]),
      "reduction": Field(d["reduction"], choices=M.REDUCTIONS),
      "layout": Field(d["layout"], choices=M.LAYOUTS),
  }


def check_modality(name: str, cfg: Mapping) -> dict:
  """``config.model.modalities.NAME`` checked and completed."""
  field = f"config.model.modalities.{name}"
  fields = _modality_fields()
  unknown = sorted(set(cfg) - set(fields))
  if unknown:
    raise ConfigError(f"{field} has unknown field(s) {unknown}; allowed: {sorted(fields)}")
  if "likelihood" not in cfg or "shape" not in cfg:
    raise ConfigError(f"{field} needs 'likelihood' ({', '.join(fields['likelihood'].choices)}) "
                      "and 'shape'")
  for f in ("shape", "hidden", "decoder_hidden", "filters"):
    if f in cfg and not isinstance(cfg[f], (list, tuple)):
      raise ConfigError(f"{field}.{f}={cfg[f]!r} must be a tuple of positive ints")
  out = {}
  for f, spec in fields.items():
    value = cfg.get(f)
    value = tuple(value) if isinstance(value, list) else value
    out[f] = spec.default if value is None else spec.check(f"{field}.{f}", value)
  out["shape"] = tuple(int(d) for d in out["shape"])
  _modality_rules(field, out, set(cfg))
  return out


def _modality_rules(field: str, m: dict, given: set) -> None:
  """What holds between a modality's fields: the shape its likelihood and network need,
  and no field given that the modality does not use."""
  shape = m["shape"]
  if m["likelihood"] == "categorical" and len(shape) != 1:
    raise ConfigError(f"{field}.shape={shape!r}: a categorical modality has shape (num_classes,)")
  if m["network"] == "conv64" and (shape[:2] != (64, 64) or len(shape) != 3):
    raise ConfigError(f"{field}.shape={shape!r}: network 'conv64' needs shape (64, 64, C)")
  if m["network"] == "conv64" and len(m["filters"]) != 4:
    raise ConfigError(f"{field}.filters={m['filters']!r}: network 'conv64' has four "
                      "convolutions (64 to 4 pixels), so four filter counts")
  if m["reduction"] == "channel_mean" and (len(shape) != 3 or m["likelihood"] == "categorical"):
    raise ConfigError(f"{field}.reduction='channel_mean' averages over an image's channels; "
                      f"it needs an (H, W, C) bernoulli or gaussian modality, not "
                      f"{m['likelihood']} {shape!r}")
  gaussian_only = ("variance", "learn_variance", "mean_activation")
  by_likelihood = () if m["likelihood"] == "gaussian" else gaussian_only
  if m["learn_variance"]:
    by_likelihood += ("variance",)   # the decoder predicts it
  by_network = {"mlp": ("filters", "dense", "layout"), "conv64": ("hidden", "decoder_hidden")}
  for f in sorted(given & set(by_likelihood)):
    user = "learn_variance=True" if f == "variance" and m["learn_variance"] else \
        f"a {m['likelihood']} modality"
    raise ConfigError(f"{field}.{f} is not used by {user}; remove it")
  for f in sorted(given & set(by_network[m["network"]])):
    raise ConfigError(f"{field}.{f} is not used by network {m['network']!r}; remove it")


def check_model(section) -> dict:
  """``config.model`` checked and completed, each modality too (sorted by name)."""
  values = _as_dict(section, "config.model")
  if not values.get("modalities"):
    raise ConfigError("config.model.modalities is empty; declare at least one modality")
  fields = _model_fields()
  out = check_fields("config.model", fields, values, what="config.model")
  mods = {n: check_modality(n, _as_dict(c, f"config.model.modalities.{n}"))
          for n, c in sorted(out["modalities"].items())}
  names = tuple(mods)
  out["modalities"] = mods
  out["x"] = out["x"] or names[0]
  if out["x"] not in names:
    raise allowed("config.model.x", out["x"], names)
  if out["norm"] != "none" and all(m["network"] == "mlp" for m in mods.values()):
    raise ConfigError(f"config.model.norm={out['norm']!r} normalises inside convolutional "
                      "networks; this model has none (every modality's network is 'mlp')")
  return out


# ----------------------------------------------------------------------------
# The whole config.
# ----------------------------------------------------------------------------

def check(config, sections=TOP_LEVEL) -> ml_collections.ConfigDict:
  """``config`` checked section by section (``sections``: which; the rest are copied as
  they are) and returned as a new ConfigDict with every missing field at its default."""
  plain = _as_dict(config, "config")
  unknown = sorted(set(plain) - set(TOP_LEVEL))
  if unknown:
    raise ConfigError(f"config.{unknown[0]} is not a config section; sections: "
                      f"{', '.join(TOP_LEVEL)}")
  out = dict(plain)
  for name in sections:
    if name == "seed":
      seed = plain.get("seed", 0)
      if not is_int(seed) or not 0 <= seed < 2**63:
        raise ConfigError(f"config.seed={seed!r} must be an int in [0, 2**63)")
      out["seed"] = int(seed)
    elif name == "model":
      out["model"] = check_model(plain.get("model"))
    elif name == "data":
      from jmvae_jax import data
      out["data"] = data.resolve(plain.get("data"))
    else:
      out[name] = check_section(name, plain.get(name))
  return ml_collections.ConfigDict(out)


