"""The GAN of JMVAE-GAN and the GAN baselines (VAE-GAN, CVAE-GAN, CMMA-GAN).

As in VAE-GAN (Larsen et al. 2015) and the authors' code (Tars v0.0.2 ``mvaegan.py``,
``gan.py``), a discriminator D judges the images of the x decoder, and every training
step makes three updates, in this order, each with its own optimiser and each seeing the
parameters the previous one produced:

1. *encoder* (the encoders and every decoder but x's): the objective's own bound, e.g.
   JMVAE-kl's loss with the warm-up on the prior KL;
2. *decoder* (x's decoder alone): ``-gamma E log p(x|z) - E log D(x_rec) - E log D(x_prior)``,
   x_rec decoded from z ~ q (the encoder that sees x: q(z|x,w), or q(z|x) for VAE-GAN),
   x_prior from z_p ~ the prior noise (U(-1, 1), the authors', or N(0, I), or, not the
   authors', z drawn from each example's w as the w -> x translation draws it: q(z|w));
3. *discriminator*: ``-E log D(x) - E log(1 - D(x_prior)) - E log(1 - D(x_rec))``.

``log D`` is ``log(D + eps)`` with eps float32's machine epsilon, as the authors compute
it, or exactly (``log_d="exact"``); one z_p draw is shared by the three updates. With
``instance_noise`` sigma > 0 every image D judges, real or generated, gets N(0, sigma^2)
noise first (Sonderby et al. 2016, "instance noise"; not the authors'). With
``reconstruction="features"`` the reconstruction terms are Larsen et al.'s Gaussian on a
layer of D's features instead of the pixels. CVAE-GAN's discriminator also sees w (the
authors' ``cmmagan``/``cvaegan``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmvae_jax import distributions as D
from jmvae_jax import modalities as M
from jmvae_jax.model import Model, collect_batch_stats, with_batch_stats
from jmvae_jax.networks import StrideTwoConv

EPS = float(np.finfo(np.float32).eps)
PLAYERS = ("encoder", "decoder", "discriminator")
PRIOR_NOISES = ("uniform", "normal", "from_w")
RECONSTRUCTIONS = ("pixel", "features")


class Discriminator(nn.Module):
  """Four 4x4 stride-2 convolutions with leaky ReLU (no normalisation), flatten, a dense
  layer (leaky ReLU), one logit. Returns (logit [B], the features of every layer: the
  four convolutions' outputs and the dense layer's). ``conditions``: modalities
  concatenated to the flattened features (CVAE-GAN's w)."""
  filters: tuple[int, ...]
  dense: int
  conditions: tuple[M.ModalitySpec, ...] = ()

  @nn.compact
  def __call__(self, x, cond: dict | None = None):
    feats = []
    h = x
    for i, f in enumerate(self.filters):
      h = nn.leaky_relu(StrideTwoConv(f, name=f"conv{i}")(h))
      feats.append(h)
    h = h.reshape(h.shape[0], -1)
    if self.conditions:
      h = jnp.concatenate([h] + [M.encoder_input(s, cond[s.name]).reshape(h.shape[0], -1)
                                 for s in self.conditions], -1)
    h = nn.leaky_relu(nn.Dense(self.dense, name="dense")(h))
    feats.append(h)
    return nn.Dense(1, name="logit")(h)[:, 0], feats


@dataclasses.dataclass(frozen=True)
class GanSpec:
  """What the GAN adds to a model; hashable (static under jit)."""
  filters: tuple[int, ...] = (64, 128, 256, 256)
  dense: int = 1024
  gamma: float = 1.0
  prior_noise: str = "uniform"
  reconstruction: str = "pixel"
  feature_layer: int = 2
  log_d: str = "plus_eps"     # log D as the authors' log(D + eps), or "exact"
  equilibrium: float = 0.0    # Larsen et al.'s balance (0: off)
  margin: float = 0.35
  pause_d_on: str = "both"    # D pauses on its real or prior cost ("both"), the prior
                              # alone ("fake"), or their mean ("mean")
  order: str = "sequential"   # the decoder after the encoders (the authors'), or "simultaneous"
  instance_noise: float = 0.0  # sigma of the noise on D's inputs (0: none, the authors')
  conditioned: bool = False   # D sees w too (CVAE-GAN)
  decoder_loss: Any = None        # a user's own (model, params, batch, rng, z_prior) ->
  discriminator_loss: Any = None  # (loss, terms) for those players; None: the ones below


class GanModel(Model):
  """A Model whose parameters also hold the discriminator's (``params["discriminator"]``);
  inference, generation and the estimators are the Model's."""

  def __init__(self, spec, gan: GanSpec):
    super().__init__(spec)
    self.gan = gan
    cond = tuple(spec.modality(n) for n in spec.w) if gan.conditioned else ()
    self.discriminator = Discriminator(gan.filters, gan.dense, cond)

  def _init(self, rng):
    k_model, k_disc = jax.random.split(rng)
    params = super()._init(k_model)
    x = self.spec.modality(self.spec.x)
    image = jnp.zeros((1,) + x.shape, jnp.float32)
    cond = {n: jnp.zeros((1,) + self.spec.modality(n).shape, jnp.float32) for n in self.spec.w}
    return dict(params, discriminator=self.discriminator.init(k_disc, image, cond)["params"])

  def discriminate(self, params, x, cond=None):
    """(logit [B], features) of D on images ``x``."""
    return self.discriminator.apply({"params": params["discriminator"]}, x, cond)


# ----------------------------------------------------------------------------
# The players' parameters.
# ----------------------------------------------------------------------------

def player_params(model: GanModel, params, player: str):
  """The part of ``params`` that ``player`` updates."""
  x = model.spec.x
  if player == "encoder":
    return {"encoder": params["encoder"],
            "decoder": {n: p for n, p in params["decoder"].items() if n != x}}
  if player == "decoder":
    return params["decoder"][x]
  return params["discriminator"]


def with_player(model: GanModel, params, player: str, part):
  """``params`` with ``player``'s part replaced by ``part``."""
  x = model.spec.x
  if player == "encoder":
    return dict(params, encoder=part["encoder"],
                decoder=dict(part["decoder"], **{x: params["decoder"][x]}))
  if player == "decoder":
    return dict(params, decoder=dict(params["decoder"], **{x: part}))
  return dict(params, discriminator=part)


@dataclasses.dataclass(frozen=True)
class PlayerOptimizers:
  """One optax transformation per player of ``model``; its state is {player: state}."""
  model: GanModel
  encoder: Any
  decoder: Any
  discriminator: Any

  def init(self, params):
    return {p: getattr(self, p).init(player_params(self.model, params, p)) for p in PLAYERS}


# ----------------------------------------------------------------------------
# The losses, pure functions of the parameters.
# ----------------------------------------------------------------------------

def judge(model: GanModel, params, x, cond, rng) -> jax.Array:
  """D's logit [B] on images ``x`` as D is trained to see them: with ``instance_noise``
  sigma > 0, after N(0, sigma^2) is added to every value (drawn from ``rng``), real and
  generated images alike, so that D cannot tell them apart by a difference much smaller
  than sigma (an exactly black background that a sigmoid decoder never reaches)."""
  sigma = model.gan.instance_noise
  if sigma > 0:
    x = x + sigma * jax.random.normal(rng, x.shape, x.dtype)
  return model.discriminate(params, x, cond)[0]


def _noise_keys(rng, n: int):
  """Keys for the instance noise, apart from the z draws made with ``rng``."""
  return jax.random.split(jax.random.fold_in(rng, 0x6e6f), n)


def log_d(logit, how: str = "plus_eps"):
  """log D, D = sigmoid(logit): ``"plus_eps"``, the authors' log(D + eps), or ``"exact"``,
  log_sigmoid(logit). The first flattens once D < eps (a logit under about -16): a
  decoder whose images D calls fake that surely gets almost no gradient from them."""
  if how == "exact":
    return jax.nn.log_sigmoid(logit)
  return jnp.log(jax.nn.sigmoid(logit) + EPS)


def log_not_d(logit, how: str = "plus_eps"):
  """log(1 - D): log(1 - D + eps), or exactly log_sigmoid(-logit)."""
  if how == "exact":
    return jax.nn.log_sigmoid(-logit)
  return jnp.log(1.0 - jax.nn.sigmoid(logit) + EPS)


def prior_noise(model: GanModel, params, batch, rng):
  """z_p [B, latent] for x_prior: U(-1, 1) ("uniform"), N(0, I) ("normal"), or
  ("from_w") one draw from the z distribution of each example's w -> x translation
  (``Model.translation_posterior``: q(z|w), or N(0, I) for a decoder conditioned on w),
  so that D and the decoder work on the images that attributes -> image generation makes."""
  shape = (batch[model.spec.x].shape[0], model.spec.latent_dim)
  if model.gan.prior_noise == "uniform":
    return jax.random.uniform(rng, shape, jnp.float32, -1.0, 1.0)
  eps = jax.random.normal(rng, shape, jnp.float32)
  if model.gan.prior_noise == "normal":
    return eps
  w = {n: batch[n] for n in model.spec.w}
  q = model.translation_posterior(params, w, model.spec.x)
  return D.reparameterise(q, eps)


def _recon_posterior(model: Model, params, batch):
  """The encoder that sees x: q(z|x, w) where the model has it, else q(z|x)."""
  return model.posterior(params, {n: batch[n] for n in model.spec.read})


def fakes(model: GanModel, params, batch, rng, z_prior):
  """(z ~ q, the decoder means at z and at ``z_prior``): x_rec and x_prior."""
  x = model.spec.x
  z = D.sample(rng, _recon_posterior(model, params, batch))
  cond = {n: batch[n] for n in model.spec.w}
  return z, model.generate(params, x, z, cond), model.generate(params, x, z_prior, cond)


def reconstruction(model: GanModel, params, batch, z) -> jax.Array:
  """E log p(x|z) per example: the x decoder's likelihood ("pixel"), or a unit-variance
  Gaussian on D's ``feature_layer`` features of x given those of the decoder mean."""
  x = model.spec.x
  cond = {n: batch[n] for n in model.spec.w}
  if model.gan.reconstruction == "pixel":
    return model.log_likelihood(params, x, z, batch[x], cond)
  layer = model.gan.feature_layer
  real = model.discriminate(params, batch[x], cond)[1][layer]
  fake = model.discriminate(params, model.generate(params, x, z, cond), cond)[1][layer]
  diff = (real - fake).reshape(real.shape[0], -1)
  return -0.5 * jnp.sum(D.LOG_2PI + jnp.square(diff), -1)


def decoder_loss(model: GanModel, params, batch, rng, z_prior):
  """-gamma E log p(x|z) - E log D(x_rec) - E log D(x_prior); (loss, terms)."""
  cond = {n: batch[n] for n in model.spec.w}
  z, x_rec, x_prior = fakes(model, params, batch, rng, z_prior)
  recon = jnp.mean(reconstruction(model, params, batch, z))
  k_rec, k_prior = _noise_keys(rng, 2)
  d_rec = judge(model, params, x_rec, cond, k_rec)
  d_prior = judge(model, params, x_prior, cond, k_prior)
  how = model.gan.log_d
  loss = (-model.gan.gamma * recon - jnp.mean(log_d(d_rec, how))
          - jnp.mean(log_d(d_prior, how)))
  return loss, {"gan/decoder_loss": loss, "gan/reconstruction": recon}


def reconstruction_loss(model: GanModel, params, batch, rng, z_prior):
  """The decoder's loss with the adversarial terms taken out, -E log p(x|z) at z ~ q: a
  control, set as ``GanSpec.decoder_loss``, that leaves the three-update step JMVAE's own
  bound in the authors' order (benchmarks/gan_step_order.py)."""
  del z_prior
  z = D.sample(rng, _recon_posterior(model, params, batch))
  recon = jnp.mean(reconstruction(model, params, batch, z))
  return -recon, {"gan/reconstruction": recon}


def discriminator_loss(model: GanModel, params, batch, rng, z_prior):
  """-E log D(x) - E log(1 - D(x_prior)) - E log(1 - D(x_rec)); (loss, terms)."""
  x = model.spec.x
  cond = {n: batch[n] for n in model.spec.w}
  _, x_rec, x_prior = fakes(model, params, batch, rng, z_prior)
  k_rec, k_prior, k_real = _noise_keys(rng, 3)
  d_real = judge(model, params, batch[x], cond, k_real)
  d_rec = judge(model, params, x_rec, cond, k_rec)
  d_prior = judge(model, params, x_prior, cond, k_prior)
  how = model.gan.log_d
  loss = (-jnp.mean(log_d(d_real, how)) - jnp.mean(log_not_d(d_prior, how))
          - jnp.mean(log_not_d(d_rec, how)))
  accuracy = (jnp.mean(d_real > 0) + 0.5 * jnp.mean(d_rec < 0) + 0.5 * jnp.mean(d_prior < 0)) / 2
  return loss, {"gan/discriminator_loss": loss, "gan/d_real": jnp.mean(jax.nn.sigmoid(d_real)),
                "gan/d_reconstructed": jnp.mean(jax.nn.sigmoid(d_rec)),
                "gan/d_prior": jnp.mean(jax.nn.sigmoid(d_prior)), "gan/d_accuracy": accuracy}


# ----------------------------------------------------------------------------
# The three updates and the step.
# ----------------------------------------------------------------------------

def owner(model: GanModel, where) -> str:
  """The player that updates network ``where`` = (kind, key) (its batch-norm averages too)."""
  kind, key = where
  return "decoder" if (kind, key) == ("decoder", model.spec.x) else "encoder"


def _update(model, optimizer, opt_state, params, player, loss, into=None):
  """One player's optax update of ``loss(params with its part) -> (loss, terms)``, written
  into ``into`` (default ``params``, where the gradient is taken); the batch-norm averages
  of its own networks are the ones its loss left."""
  part = player_params(model, params, player)

  def player_loss(q):
    with collect_batch_stats() as stats:
      value, terms = loss(with_player(model, params, player, q))
    return value, (terms, dict(stats))

  (_, (terms, stats)), grads = jax.value_and_grad(player_loss, has_aux=True)(part)
  updates, opt_state = optimizer.update(grads, opt_state, part)
  terms[f"grad_norm/{player}"] = optax.tree.norm(grads)
  new = with_player(model, params if into is None else into, player,
                    optax.apply_updates(part, updates))
  new = with_batch_stats(new, stats, keep=lambda where: owner(model, where) == player)
  return new, opt_state, terms


def encoder_loss(model: GanModel, loss_fn, params, batch, rng, kl_weight):
  """The objective's own loss. With ``reconstruction="features"`` its x term is traded for
  the feature-space one in expectation: plus the pixel term and minus the feature term
  at a z of their own (Larsen et al.'s encoder loss, L_prior + L_llike)."""
  loss, terms = loss_fn(model, params, batch, rng, kl_weight=kl_weight)
  if model.gan.reconstruction == "features":
    x = model.spec.x
    z = D.sample(jax.random.fold_in(rng, 1), _recon_posterior(model, params, batch))
    pixel = model.log_likelihood(params, x, z, batch[x], {n: batch[n] for n in model.spec.w})
    loss = loss + jnp.mean(pixel) - jnp.mean(reconstruction(model, params, batch, z))
  return loss, terms


def encoder_update(model, loss_fn, optimizer, opt_state, params, batch, rng, kl_weight):
  return _update(model, optimizer, opt_state, params, "encoder",
                 lambda p: encoder_loss(model, loss_fn, p, batch, rng, kl_weight))


def decoder_update(model, optimizer, opt_state, params, batch, rng, z_prior, into=None):
  loss = model.gan.decoder_loss or decoder_loss
  return _update(model, optimizer, opt_state, params, "decoder",
                 lambda p: loss(model, p, batch, rng, z_prior), into)


def discriminator_update(model, optimizer, opt_state, params, batch, rng, z_prior, into=None):
  loss = model.gan.discriminator_loss or discriminator_loss
  return _update(model, optimizer, opt_state, params, "discriminator",
                 lambda p: loss(model, p, batch, rng, z_prior), into)


def balance(model: GanModel, params, batch, z_prior, rng):
  """Larsen et al.'s balance (their code; ``equilibrium`` 0.68, ``margin`` 0.35): from D's
  costs on real images, -E log D(x), and on prior images, -E log(1 - D(x_prior)), whether
  the decoder and D update: D pauses while either cost is under equilibrium - margin (D
  far ahead), the decoder while either is over equilibrium + margin (far behind); if both
  would pause, both update. With ``pause_d_on="fake"`` (not theirs) only the prior cost
  pauses D: where real images are easy to tell (shapes on black), the real cost stays under
  the threshold and their rule stops D for good. With ``"mean"`` (not theirs) the mean of
  the two costs does: a D that calls every image fake is not ahead, and trains. Returns
  (decoder updates, D updates)."""
  x = model.spec.x
  cond = {n: batch[n] for n in model.spec.w}
  k_real, k_fake = _noise_keys(rng, 2)
  real = judge(model, params, batch[x], cond, k_real)
  fake = judge(model, params, model.generate(params, x, z_prior, cond), cond, k_fake)
  how = model.gan.log_d
  costs = jnp.stack([-jnp.mean(log_d(real, how)), -jnp.mean(log_not_d(fake, how))])
  eq, margin = model.gan.equilibrium, model.gan.margin
  judged = {"both": costs, "fake": costs[1:], "mean": jnp.mean(costs, keepdims=True)}[
      model.gan.pause_d_on]
  disc = ~jnp.any(judged < eq - margin)
  dec = ~jnp.any(costs > eq + margin)
  neither = ~(disc | dec)
  return dec | neither, disc | neither


def _kept_unless(go, new, old):
  """``new`` where ``go``, else ``old`` (a paused player's parameters and state)."""
  return jax.tree.map(lambda a, b: jnp.where(go, a, b), new, old)


def train_step(state, batch, rng, kl_weight, *, model, loss_fn, optimizer):
  """The three updates in order, each from the parameters the previous one left; the
  randomness folded from the step, one prior-noise draw for all three. With
  ``equilibrium`` > 0, :func:`balance` (at the parameters the decoder update starts from)
  may pause the decoder or D for this step. With ``order="simultaneous"`` (not the
  authors') the decoder's gradient is taken where the encoder's was, at the step's starting
  parameters and the encoder's z draw, so that with the reconstruction alone the two
  updates are JMVAE's own one step; D still sees the decoder's result."""
  keys = jax.random.split(jax.random.fold_in(rng, state.step), 4)
  opt = dict(state.opt_state)
  params, opt["encoder"], terms = encoder_update(
      model, loss_fn, optimizer.encoder, opt["encoder"], state.params, batch, keys[0],
      kl_weight)
  simultaneous = model.gan.order == "simultaneous"
  start = state.params if simultaneous else params
  z_prior = prior_noise(model, start, batch, keys[3])   # "from_w": the decoder's encoders
  go = balance(model, start, batch, z_prior, keys[3]) if model.gan.equilibrium > 0 else None
  for i, (player, update) in enumerate((("decoder", decoder_update),
                                        ("discriminator", discriminator_update))):
    at, key = (start, keys[0]) if player == "decoder" and simultaneous else (params, keys[1 + i])
    new, new_opt, player_terms = update(model, getattr(optimizer, player), opt[player], at,
                                        batch, key, z_prior, into=params)
    if go is not None:
      new, new_opt = _kept_unless(go[i], (new, new_opt), (params, opt[player]))
      player_terms[f"gan/updates/{player}"] = go[i].astype(jnp.float32)
    params, opt[player] = new, new_opt
    terms = dict(terms, **player_terms)
  return state.replace(step=state.step + 1, params=params, opt_state=opt), terms
