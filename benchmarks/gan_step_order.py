"""The three-player step against JMVAE-kl's one step, with the adversarial terms removed:
does updating x's decoder after the encoders (the authors' order, gan.py) by itself change
how fast the image is learned?

  .venv/bin/python benchmarks/gan_step_order.py --steps=1500 [--seeds=3] \
      [--config.data.data_dir=DIR] [--config.FIELD=VALUE ...]   # e.g. smaller networks

Trains, in one process, from the same initial weights on the same batches of
configs/shapes64.py:
- ``joint``: JMVAE-kl's step (one optimiser, one gradient of the whole loss);
- ``sequential``: gan.train_step with the decoder's loss the reconstruction alone and the
  discriminator's update a no-op, so that what is left of the GAN is the order: the
  encoders (and w's decoder) step on JMVAE-kl's loss, then x's decoder steps on the
  reconstruction at a fresh z from the updated encoder.
Both use the config's optimiser settings (``config.gan.decoder_optim`` is set to
``config.optim`` for the comparison). Each is trained ``--seeds`` times, with other draws of
z (the step's key) and the same weights and batches, so that a difference between the two
orders can be told from the spread of one order over its draws. Prints the training
recon/image of each run, averaged over every ``--every`` steps, and a last JSON line with,
per window, whether every sequential run is behind every joint one ("behind"), ahead of
every one ("ahead"), or the two ranges overlap.
"""
import copy
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import command, machine   # noqa: E402
from jmvae_jax import builder, gan, schema, train   # noqa: E402
from jmvae_jax import data as data_lib   # noqa: E402

config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "shapes64.py"),
                                "The set-up of both runs.", lock_config=True)
flags.DEFINE_integer("steps", 1500, "Training steps of each.")
flags.DEFINE_integer("every", 100, "Steps per printed mean.")
flags.DEFINE_integer("seeds", 2, "Runs of each order, each with its own draws of z.")


def discriminator_idle(model, params, batch, rng, z_prior):
  """A zero loss: the discriminator's parameters stay where they are."""
  return 0.0 * sum(jnp.sum(a) for a in jax.tree.leaves(params["discriminator"])), {}


def config(base, objective: str):
  c = copy.deepcopy(base)
  c.objective.name = objective
  c.gan.decoder_optim = dict(c.optim)
  return schema.check(c)


def states(base, rng):
  """{order: (state, jitted step)}, both from the same encoders' and decoders' weights."""
  kl_cfg = config(base, "jmvae_kl")
  kl_model, kl_loss = builder.from_checked(kl_cfg)
  kl_opt = train.make_optimizers(kl_cfg, kl_model)
  kl_state = train.init_state(kl_model, kl_opt, rng)
  weights = jax.tree.map(np.asarray, kl_state.params)   # a copy: the kl step donates its own
  gan_cfg = config(base, "jmvae_gan")
  model, loss = builder.from_checked(gan_cfg)
  model.gan = dataclasses.replace(model.gan, decoder_loss=gan.reconstruction_loss,
                                  discriminator_loss=discriminator_idle)
  opt = train.make_optimizers(gan_cfg, model)
  params = dict(model.init(rng), **jax.tree.map(jnp.asarray, weights))
  seq_state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=opt.init(params))
  return kl_cfg, {"joint": (kl_state, train.jit_train_step(kl_model, kl_loss, kl_opt)),
                  "sequential": (seq_state, train.jit_train_step(model, loss, opt))}


def verdict(joint: list[float], sequential: list[float]) -> str:
  """How one window's sequential runs stand against its joint ones (higher is better)."""
  if max(sequential) < min(joint):
    return "behind"
  return "ahead" if min(sequential) > max(joint) else "overlap"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --steps, --every, "
                         "--seeds, --config and --config.SECTION.FIELD=VALUE")
  args = flags.FLAGS
  if args.seeds < 1 or args.every < 1 or args.steps < args.every:
    raise app.UsageError("--seeds and --every must be at least 1, --steps at least --every")
  rng = jax.random.PRNGKey(args.config.seed)
  c, pair = states(args.config, jax.random.split(rng, 3)[0])
  runs = {(order, seed): (jax.tree.map(jnp.copy, state), fn,   # each run its own (donated)
                          jax.random.fold_in(jax.random.split(rng, 3)[1], seed))  # state, key
          for order, (state, fn) in pair.items() for seed in range(args.seeds)}
  data = data_lib.load(c.data, c.seed)
  per_epoch = data.steps_per_epoch(c.train.batch_size)
  seen = {run: [] for run in runs}
  rows, step, start = [], 0, time.time()
  while step < args.steps:
    for batch in data.train_batches(step // per_epoch, c.train.batch_size):
      weight = np.float32(builder.kl_weight(step / per_epoch, c.objective.warmup_epochs))
      for run, (state, fn, key) in runs.items():
        state, terms = fn(state, batch, key, weight)
        runs[run] = (state, fn, key)
        seen[run].append(terms["recon/image"])
      step += 1
      if step % args.every == 0:
        means = {run: float(np.mean([float(v) for v in seen[run][-args.every:]]))
                 for run in runs}
        row = {"step": step, **{order: [means[(order, s)] for s in range(args.seeds)]
                                for order in ("joint", "sequential")}}
        row["verdict"] = verdict(row["joint"], row["sequential"])
        rows.append(row)
        print(f"step {step}: recon/image " + "; ".join(
            f"{order} " + ", ".join(f"{v:.1f}" for v in row[order])
            for order in ("joint", "sequential")) + f": {row['verdict']} "
            f"({time.time() - start:.0f} s)", flush=True)
      if step >= args.steps:
        break
  count = {v: sum(r["verdict"] == v for r in rows) for v in ("behind", "overlap", "ahead")}
  print(json.dumps({"machine": machine(), "command": command(), "seeds": args.seeds,
                    "rows": rows, "windows": count}))


if __name__ == "__main__":
  app.run(main)
