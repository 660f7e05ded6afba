"""A user's own losses, selected by ``config.objective.name = 'tests.custom_losses:NAME'``."""
import jax.numpy as jnp

from jmvae_jax import distributions as D


def image_only_elbo(model, params, batch, rng, *, kl_weight=1.0, reduce=True, **_):
  """An ELBO that reconstructs the image only, from the joint encoder.

  It gets the default components (every encoder and decoder), so the label
  decoder and the unimodal encoders exist but must receive no gradient."""
  q = model.encode(params, model.spec.names, batch)
  recon = model.log_likelihood(params, "image", D.sample(rng, q), batch["image"])
  kl = D.kl_to_standard_normal(q)
  loss = -(recon - kl_weight * kl)
  terms = {"recon/image": recon, "kl/prior": kl, "elbo": recon - kl, "loss": loss}
  if reduce:
    terms = {k: jnp.mean(v) for k, v in terms.items()}
  return terms["loss"], terms


def nan_after_half_warmup(model, params, batch, rng, *, kl_weight=1.0, reduce=True, **options):
  """The JMVAE-kl loss, made NaN while the warm-up weight is between 0.5 and 1: a
  divergence at a known training step, for the test that a non-finite loss stops the
  run (the test bound, at weight 1, stays finite)."""
  from jmvae_jax import objectives
  loss, terms = objectives.jmvae_kl(model, params, batch, rng, kl_weight=kl_weight,
                                    reduce=reduce, **options)
  loss = loss * jnp.where((kl_weight > 0.5) & (kl_weight < 1.0), jnp.nan, 1.0)   # and grads
  return loss, dict(terms, loss=loss)


def per_example_loss(model, params, batch, rng, *, kl_weight=1.0, reduce=True, **options):
  """Forgets to average: a [B] loss."""
  return image_only_elbo(model, params, batch, rng, kl_weight=kl_weight, reduce=False)


def bare_loss(model, params, batch, rng, *, kl_weight=1.0, reduce=True, **options):
  """Returns the loss alone, no terms."""
  return image_only_elbo(model, params, batch, rng, kl_weight=kl_weight)[0]


def no_options(model, params, batch, rng, *, kl_weight=1.0, reduce=True):
  """Takes no **options (alpha, warmup_scope are passed)."""
  return image_only_elbo(model, params, batch, rng, kl_weight=kl_weight, reduce=reduce)
