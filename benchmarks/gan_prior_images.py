"""Why a trained model's images from the prior noise look as they do: where the noise
lands against the codes of real images, how many of its images are blank, and, for a
GAN, which term of the decoder's loss brightens or darkens them.

  .venv/bin/python benchmarks/gan_prior_images.py --workdir=W [--step=S] [--n=500] \
      [--png=grid.png]

On ``--n`` test examples of the run's own dataset (a model of an image x and
attributes w): the posterior q(z|x,w)'s sd per latent dimension and the spread of its
means (the prior's is 1); the mean pixel of images decoded at the posterior means, at
the midpoints of two of them, and at z from U(-1, 1) and N(0, I), and the share of them
that are blank (no value above 0.15; the dimmest real shape is 0.2). For a GAN: the
first-order change of the prior images' mean pixel under one sign step (Adam's
direction early on) of each term of the decoder's loss; each term's gradient norm on
the decoder's parameters (how hard it pulls); and the mean of D's input gradient step
on those images' dark and bright pixels (what D would have them become). The last line
is JSON; ``--png`` writes rows of posterior-mean, U(-1, 1) and midpoint images.
"""
import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import command, machine   # noqa: E402


def images_summary(images) -> dict:
  images = np.asarray(images)
  flat = images.reshape(len(images), -1)
  return {"mean_pixel": float(flat.mean()), "blank": float(np.mean(flat.max(1) < 0.15))}


def test_batch(config, n: int) -> dict:
  from jmvae_jax import data as data_lib
  ds = data_lib.load(dict(config.data), 0, process_index=0, process_count=1)
  rows = [{k: np.asarray(v)[np.asarray(m) > 0] for k, v in b.items()}
          for b, m in ds.test_batches(min(n, 500))]
  return {k: jnp.asarray(np.concatenate([r[k] for r in rows])[:n]) for k in rows[0]}


def decoder_terms(model, params, batch, z_prior) -> dict:
  """Per term of the decoder's loss: the change of the prior images' mean pixel under one
  sign step of that term alone, sum(d pixel / d theta * -sign(d term / d theta))."""
  from jmvae_jax import gan as G
  rng, how = jax.random.PRNGKey(0), model.gan.log_d
  cond = {n: batch[n] for n in model.spec.w}

  k_rec, k_prior = G._noise_keys(rng, 2)   # D's instance noise as the decoder's loss draws it

  def terms(part):
    p = G.with_player(model, params, "decoder", part)
    z, x_rec, x_prior = G.fakes(model, p, batch, rng, z_prior)
    return {"reconstruction": -model.gan.gamma * jnp.mean(G.reconstruction(model, p, batch, z)),
            "d_reconstructed": -jnp.mean(G.log_d(G.judge(model, p, x_rec, cond, k_rec), how)),
            "d_prior": -jnp.mean(G.log_d(G.judge(model, p, x_prior, cond, k_prior), how)),
            "prior_pixel": jnp.mean(x_prior)}

  part = G.player_params(model, params, "decoder")
  pixel = jax.grad(lambda q: terms(q)["prior_pixel"])(part)
  out, norms = {}, {}
  for name in ("reconstruction", "d_reconstructed", "d_prior"):
    g = jax.grad(lambda q: terms(q)[name])(part)
    out[name] = float(sum(jnp.vdot(a, -jnp.sign(b)) for a, b in
                          zip(jax.tree.leaves(pixel), jax.tree.leaves(g))))
    norms[name] = float(jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree.leaves(g))))
  out["gradient_norm"] = norms   # each term's pull on the decoder (gamma included)
  x_prior = G.fakes(model, params, batch, rng, z_prior)[2]
  grad_x = jax.grad(lambda x: -jnp.mean(G.log_d(G.judge(model, params, x, cond, k_prior),
                                                "exact")))(x_prior)
  dark = np.asarray(x_prior) < 0.1
  step = -np.asarray(grad_x)   # the direction that makes D call the images more real
  out["d_input_step_on_dark_pixels"] = float(step[dark].mean()) if dark.any() else 0.0
  out["d_input_step_on_bright_pixels"] = float(step[~dark].mean()) if (~dark).any() else 0.0
  return out


def probe_args(doc: str, n: int):
  """The flags of a probe of a trained run: --workdir, --step, --n test examples, --png."""
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=None, help="a checkpoint (default: the last)")
  parser.add_argument("--n", type=int, default=n, help="test examples")
  parser.add_argument("--png", default="", help="where to draw the images")
  return parser.parse_args()


def load_run(workdir: str, step):
  """(model, params, config, step) of the run's latest checkpoint that verifies (or ``step``)."""
  from jmvae_jax import restore
  model, state, config = restore.load_state(workdir, step)
  return model, state.params, config, int(state.step)


def main():
  args = probe_args(__doc__, 500)
  from jmvae_jax import figures
  model, params, config, step = load_run(args.workdir, args.step)
  batch = test_batch(config, args.n)
  n, dim, x = len(batch[model.spec.x]), model.spec.latent_dim, model.spec.x
  post = model.posterior(params, {k: batch[k] for k in model.spec.read})
  mu, sd = np.asarray(post.mean), np.exp(0.5 * np.asarray(post.logvar))
  gen = jax.jit(lambda z: model.generate(params, x, z, {k: batch[k] for k in model.spec.w}))
  rng = np.random.default_rng(0)
  pair = rng.permutation(n)
  zs = {"posterior_means": mu, "midpoints": 0.5 * (mu + mu[pair]),
        "uniform": rng.uniform(-1, 1, (n, dim)), "normal": rng.normal(size=(n, dim))}
  images = {k: gen(jnp.asarray(z, jnp.float32)) for k, z in zs.items()}
  out = {"step": step,
         "posterior_sd": [round(float(v), 3) for v in sd.mean(0)],
         "posterior_mean_spread": [round(float(v), 3) for v in mu.std(0)],
         "data": images_summary(batch[x]),
         **{k: images_summary(v) for k, v in images.items()}}
  for k in ("data", *zs):
    print(f"{k}: mean pixel {out[k]['mean_pixel']:.4f}, blank {out[k]['blank']:.3f}")
  print("posterior sd per dimension", out["posterior_sd"])
  print("spread of the posterior means per dimension (the prior's: 1)",
        out["posterior_mean_spread"])
  if hasattr(model, "gan"):
    from jmvae_jax import gan as G
    small = {k: v[:100] for k, v in batch.items()}
    z_prior = G.prior_noise(model, params, small, jax.random.PRNGKey(1))
    out["decoder_terms"] = decoder_terms(model, params, small, z_prior)
    terms = out["decoder_terms"]
    print("change of the prior images' mean pixel under one sign step of each decoder term:",
          {k: float(f"{v:.3g}") for k, v in terms.items() if k != "gradient_norm"})
    print("the gradient norm of each decoder term on the decoder's parameters:",
          {k: float(f"{v:.3g}") for k, v in terms["gradient_norm"].items()})
  if args.png:
    tiles = np.concatenate([np.asarray(images[k][:16]) for k in
                            ("posterior_means", "uniform", "midpoints")])
    figures.write_png(args.png, figures.grid(figures.to_rgb(tiles), 16), scale=1)
  print(json.dumps({"machine": machine(), "command": command(), "workdir": args.workdir,
                    **out}))


if __name__ == "__main__":
  main()
