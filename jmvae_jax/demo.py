"""``make demo``: JMVAE-kl on the generated shapes set, offline, in a few minutes.

Trains configs/shapes.py (or resumes it) in ``--workdir``, then reports on the
held-out shapes: the image-to-attributes accuracy (z from q(z|x), attributes from
p(w|z)) and the attributes-to-image-to-attributes round trip (an image generated
from the attributes alone, read back through q(z|x)), and where the figures are.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from jmvae_jax import input_pipeline, likelihood, parallel, train
from jmvae_jax.errors import ConfigError


def main(argv=None):
  from configs import shapes
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join("workdirs", "demo"))
  parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
  args = parser.parse_args(argv)
  from absl import logging
  logging.set_verbosity(logging.ERROR)   # tfds and Orbax narrate every file at INFO/WARNING
  config = shapes.get_config()
  if args.epochs is not None:
    config.train.epochs = args.epochs
  t0 = time.time()
  try:
    out = train.train_and_evaluate(config, args.workdir)
  except ConfigError as e:   # bad input: one line, as from launch.py
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  model, _, state, _ = train.load_trained(config, args.workdir)
  data = input_pipeline.load(config.data, config.seed)
  bs = parallel.check_batch_size(config.train.batch_size)
  acc = likelihood.cross_modal_accuracy(model, state.params, data.test_batches(bs))
  w = model.spec.w[0]
  rt = likelihood.round_trip_accuracy(model, state.params, data.test_batches(bs))[w]["mean"]
  print(f"\nheld-out shapes ({data.num_test}), after {int(state.step)} steps "
        f"({time.time() - t0:.0f}s):")
  print(f"  image -> {w} accuracy: {acc[w]['mean']:.4f} +- {acc[w]['stderr']:.4f}")
  print(f"  {w} -> image -> {w} round-trip accuracy: {rt:.4f}")
  print(f"  test bound (elbo): {out['test'].get('elbo', float('nan')):.2f} nats")
  for name in sorted(os.listdir(out["figures"])):
    print(f"  figure: {os.path.join(out['figures'], name)}")
  return acc[w]["mean"], rt


if __name__ == "__main__":
  main()
