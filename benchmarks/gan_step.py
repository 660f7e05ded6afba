"""Images per second of the JMVAE-GAN train step (configs/celeba.py: three updates) against
this machine's matmul ceiling, beside the JMVAE-kl step of the same networks.

  .venv/bin/python benchmarks/gan_step.py [--batch_size=100] [--steps=3] [--rounds=2]

The step's FLOPs come from XLA's cost analysis of the compiled program (every matmul
and convolution, forward and backward, of all three updates); the ceiling is the dense
float32 matmul rate measured in the same run ([batch, 512] x [512, 512], as
train_throughput.py) divided by those FLOPs per image. On a CPU the stride-2
convolutions run as matmuls (networks.StrideTwoConv). The last line is JSON.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax   # noqa: E402
import numpy as np   # noqa: E402

from benchmarks.common import command, machine, matmul_rate, steps_per_second   # noqa: E402
from configs import celeba   # noqa: E402
from jmvae_jax import builder, schema, train   # noqa: E402


def step_and_flops(objective: str, batch_size: int):
  """(the jitted step, its state, its inputs, FLOPs per image) of configs/celeba.py."""
  c = celeba.get_config()
  c.objective.name = objective
  c = schema.check(c, ("model", "objective", "optim", "gan", "train"))
  model, loss_fn = builder.from_checked(c)
  optimizer = train.make_optimizers(c, model)
  state = train.init_state(model, optimizer, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(batch_size, 64, 64, 3)).astype(np.float32),
           "attributes": np.where(rng.random((batch_size, 40)) < 0.5, -1.0, 1.0)
           .astype(np.float32)}
  inputs = (batch, jax.random.PRNGKey(1), np.float32(1.0))
  step = train.jit_train_step(model, loss_fn, optimizer, c.train.matmul_precision)
  cost = step.lower(state, *inputs).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return step, state, inputs, float(cost["flops"]) / batch_size


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  runs = {name: step_and_flops(name, args.batch_size) for name in ("jmvae_gan", "jmvae_kl")}
  rates = {name: [] for name in runs}
  ceilings = []
  for r in range(args.rounds):
    ceilings.append(matmul_rate(args.batch_size))
    for name, (step, state, inputs, _) in runs.items():   # a fresh copy: the step donates
      rates[name].append(args.batch_size * steps_per_second(
          step, jax.tree.map(np.array, state), inputs, args.steps))
    print(f"round {r}: " + ", ".join(f"{n} {v[-1]:.1f} images/s" for n, v in rates.items())
          + f"; matmul {ceilings[-1] / 1e9:.0f} GFLOP/s")
  flops = runs["jmvae_gan"][3]
  best, ceiling = max(rates["jmvae_gan"]), max(ceilings) / flops
  print("command:", command())
  print("machine:", json.dumps(machine()))
  print(f"model: configs/celeba.py, batch {args.batch_size}; JMVAE-GAN step "
        f"{flops / 1e9:.2f} GFLOP per image, JMVAE-kl {runs['jmvae_kl'][3] / 1e9:.2f}")
  print(json.dumps({"gan_images_per_second": round(best, 2),
                    "kl_images_per_second": round(max(rates["jmvae_kl"]), 2),
                    "ceiling_images_per_second": round(ceiling, 2),
                    "fraction_of_ceiling": round(best / ceiling, 4),
                    "gflop_per_image": round(flops / 1e9, 3), "batch_size": args.batch_size}))


if __name__ == "__main__":
  main()
