"""What a trained GAN's discriminator tells real images from generated ones by: its
accuracy on held-out real images with one property replaced by the generated images'.

  .venv/bin/python benchmarks/gan_d_cues.py --workdir=W [--step=S] [--n=300] [--png=p.png]

On ``--n`` test examples of a GAN run (an image x on a black background, as shapes64):
the share of images D calls real (with its instance noise, as it was trained to see
them) for the real images; the reconstructions (decoder means at z ~ q) and the images
from N(0, I); real images whose background (the pixels black in every channel) takes
the reconstruction's values, or its mean level everywhere (the haze that a sigmoid
decoder never takes to exactly 0); reconstructions with that background set to 0;
real images box-blurred (3x3) or dimmed (foreground x0.8); and real images whose
foreground takes the reconstruction's values. A cue D reads moves the share far from
the real images'. Also printed: the mean background level of the reconstructions, the
colour of the foreground (the mean over its pixels of the sd across the 3 channels:
0 for grey) and the edge energy (mean absolute difference of neighbouring values) of
each kind of image. The last line is JSON; ``--png`` draws rows of real,
reconstructed and prior images.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import command, machine   # noqa: E402
from benchmarks.gan_prior_images import load_run, probe_args, test_batch   # noqa: E402


def box_blur(images, r: int = 1):
  """The mean over each (2r + 1)^2 window, edges repeated: [B, H, W, C] -> the same."""
  h, w, k = images.shape[1], images.shape[2], 2 * r + 1
  pad = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
  return sum(pad[:, i:i + h, j:j + w] for i in range(k) for j in range(k)) / k ** 2


def colour(images, foreground) -> float:
  """The mean over foreground pixels of the sd across channels (0: grey)."""
  sd = np.asarray(images).std(-1)
  return float(sd[np.asarray(foreground)[..., 0]].mean())


def edge_energy(images) -> float:
  images = np.asarray(images)
  return float(np.abs(np.diff(images, axis=1)).mean() + np.abs(np.diff(images, axis=2)).mean())


def main():
  args = probe_args(__doc__, 300)
  from jmvae_jax import distributions as D
  from jmvae_jax import figures
  from jmvae_jax import gan as G
  model, params, config, step = load_run(args.workdir, args.step)
  if not hasattr(model, "gan"):
    raise SystemExit(f"--workdir={args.workdir}: not a GAN run (no discriminator to probe)")
  batch = test_batch(config, args.n)
  x = model.spec.x
  real, cond = batch[x], {k: batch[k] for k in model.spec.w}
  q = model.posterior(params, {k: batch[k] for k in model.spec.read})
  z = D.reparameterise(q, jax.random.normal(jax.random.key(3), q.mean.shape))
  rec = model.generate(params, x, z, cond)
  prior = model.generate(params, x, jax.random.normal(jax.random.key(4), q.mean.shape), cond)
  background = jnp.broadcast_to(jnp.all(real == 0, -1, keepdims=True), real.shape)
  haze = float(rec[background].mean())
  cases = {
      "real": real,
      "reconstructed": rec,
      "prior": prior,
      "real, background from the reconstruction": jnp.where(background, rec, real),
      "real + the reconstruction's background level": real + haze,
      "reconstructed, background set to 0": jnp.where(background, 0.0, rec),
      "real, 3x3 box blur": box_blur(real),
      "real, foreground x0.8": jnp.where(background, real, 0.8 * real),
      "real, foreground from the reconstruction": jnp.where(background, real, rec),
  }
  called_real = {}
  for i, (name, images) in enumerate(cases.items()):
    logit = G.judge(model, params, images, cond, jax.random.key(10 + i))
    called_real[name] = float(jnp.mean(logit > 0))
    print(f"D calls {called_real[name]:.3f} of them real: {name}")
  foreground = ~background
  stats = {"background_level": {"real": 0.0, "reconstructed": haze},
           "foreground_colour": {k: colour(v, foreground) for k, v in
                                 (("real", real), ("reconstructed", rec))},
           "edge_energy": {k: edge_energy(cases[k]) for k in ("real", "reconstructed", "prior")}}
  for k, v in stats.items():
    print(k, {a: round(b, 4) for a, b in v.items()})
  if args.png:
    tiles = np.clip(np.concatenate([np.asarray(v[:12]) for v in (real, rec, prior)]), 0, 1)
    figures.write_png(args.png, figures.grid(figures.to_rgb(tiles), 12), scale=2)
  print(json.dumps({"machine": machine(), "command": command(), "workdir": args.workdir,
                    "step": step,
                    "instance_noise": model.gan.instance_noise, "called_real": called_real,
                    **stats}))


if __name__ == "__main__":
  main()
