"""How far the Frechet distances of `--mode=evaluate` move with the evaluation's own draws.

  .venv/bin/python benchmarks/frechet_spread.py --workdirs=W/jmvae_kl,W/jmvae_gan --seeds=0,1,2

For each workdir (its latest checkpoint, the classifier cached there) and each evaluation
seed, the two Frechet distances that `evaluation.json` reports (generated from z ~ N(0, I)
and from each test example's w); seed 0 is the evaluation's own, so its row repeats
`evaluation.json`. The spread over seeds is the noise of the estimate alone, for a fixed
trained model; a comparison of two models by less than it says nothing. Last line: JSON.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import command, machine   # noqa: E402


def distances(workdir: str, seeds) -> dict:
  from jmvae_jax import data as data_lib
  from jmvae_jax import restore
  from jmvae_jax.eval import classifier, gan_metrics
  model, state, config = restore.load_state(workdir, None)
  data = data_lib.load(config.data, config.seed)
  clf = classifier.coherence_classifier(model, data, workdir, model.spec.w[0], config.eval.seed)
  rows = {}
  for seed in seeds:
    fds = gan_metrics.frechet_distances(model, state.params, clf,
                                        data.test_batches(config.eval.batch_size), seed=seed)
    rows[str(seed)] = fds
    print(f"{workdir} seed {seed}: prior {fds['prior']:.4g}, from w {fds['from_w']:.4g}",
          flush=True)
  values = {k: [r[k] for r in rows.values()] for k in ("prior", "from_w")}
  spread = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
            for k, v in values.items()}
  return {"step": int(state.step), "by_seed": rows, "spread": spread}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdirs", required=True, help="comma-separated trained workdirs")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated evaluation seeds")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  out = {w: distances(w, seeds) for w in args.workdirs.split(",")}
  for w, r in out.items():
    print(w, " ".join(f"{k} {v['mean']:.4g} +- {v['sd']:.2g} (sd)" for k, v in r["spread"].items()))
  print(json.dumps({"machine": machine(), "command": command(), "seeds": seeds,
                    "runs": out}))


if __name__ == "__main__":
  main()
