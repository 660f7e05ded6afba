"""JMVAE-GAN against JMVAE-kl on 64x64 shapes: the paper's point that the GAN makes
sharper images without losing the attributes.

  .venv/bin/python benchmarks/gan_vs_kl.py --workdir=/tmp/gan_vs_kl [--epochs=10] [--k=100] \
      [--config.FIELD=VALUE ...]   # passed to both runs, e.g. smaller networks

Both are trained through launch.py on configs/shapes64.py from the same seed for the same
number of steps, then evaluated (`--mode=evaluate`). Printed per model: the attributes ->
image coherence (the project's classifier of image -> attributes applied to images
generated from the test attributes), the Frechet distance between test and generated
images in that classifier's features (lower: closer to the data; images from z ~ N(0, I)
and from each test example's attributes), log p(x) and log p(x|w),
and for the GAN the discriminator's held-out accuracy at every evaluation during training
(below 1: the decoder still has a gradient). The last line is JSON; `ok` says whether the
GAN's coherence is within 0.05 of JMVAE-kl's or better, both its Frechet distances
lower, and every logged discriminator accuracy below 1. A finished workdir is evaluated,
not retrained.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import command, machine   # noqa: E402


def launch(workdir: str, objective: str, mode: str, args) -> None:
  cmd = [sys.executable, "launch.py", "--config=configs/shapes64.py", f"--workdir={workdir}",
         f"--mode={mode}", f"--config.objective.name={objective}",
         f"--config.train.epochs={args.epochs}", f"--config.eval.k={args.k}",
         f"--config.eval.prior_samples={args.k}", f"--config.data.data_dir={args.data_dir}",
         f"--config.train.eval_every_epochs={args.eval_every_epochs}"] + args.overrides
  print(" ".join(cmd[1:]), flush=True)
  subprocess.run(cmd, cwd=ROOT, check=True)


def d_accuracy_history(workdir: str) -> list[dict]:
  out = []
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    row = json.loads(line)
    acc = {k.split("/")[-1]: v for k, v in row.items() if k.startswith("test/d_accuracy/")}
    if acc:
      out.append({"step": row["step"], **acc})
  return out


def summary(workdir: str) -> dict:
  ev = json.load(open(os.path.join(workdir, "evaluation.json")))
  est = ev["estimates"]
  return {"coherence": ev["coherence"]["attributes"]["mean"],
          "frechet_distance": ev["frechet_distance"],
          "frechet_distance_from_w": ev.get("frechet_distance_from_w", float("nan")),
          "log_p_x": est["marginal_multiple"]["mean"],
          "log_p_x_given_w": est["conditional_multiple"]["mean"],
          "discriminator_accuracy": {k: v["mean"] for k, v in
                                     ev.get("discriminator_accuracy", {}).items()},
          "step": ev["step"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--k", type=int, default=100, help="importance samples of the estimates")
  parser.add_argument("--data_dir", default="", help="where the shapes data is built")
  parser.add_argument("--eval_every_epochs", type=int, default=1,
                      help="how often the test bound and D's held-out accuracy are logged")
  args, args.overrides = parser.parse_known_args()
  if any(not a.startswith("--config.") for a in args.overrides):
    parser.error(f"unknown arguments {args.overrides}; only --config.FIELD=VALUE passes through")
  args.data_dir = args.data_dir or os.path.join(args.workdir, "data")
  out = {}
  for objective in ("jmvae_kl", "jmvae_gan"):
    workdir = os.path.join(args.workdir, objective)
    if not os.path.exists(os.path.join(workdir, "evaluation.json")):
      launch(workdir, objective, "train", args)
      launch(workdir, objective, "evaluate", args)
    out[objective] = summary(workdir)
  history = d_accuracy_history(os.path.join(args.workdir, "jmvae_gan"))
  gan, kl = out["jmvae_gan"], out["jmvae_kl"]
  for name, s in out.items():
    print(f"{name}: coherence {s['coherence']:.4f}, Frechet distance "
          f"{s['frechet_distance']:.4g} (prior), {s['frechet_distance_from_w']:.4g} (from w), "
          f"log p(x) {s['log_p_x']:.2f}, "
          f"log p(x|w) {s['log_p_x_given_w']:.2f} (step {s['step']})")
  for row in history:
    print("discriminator right about held-out images at step {step}: ".format(**row)
          + " ".join(f"{k} {v:.3f}" for k, v in sorted(row.items()) if k != "step"))
  checks = {"coherence_within_0.05": gan["coherence"] >= kl["coherence"] - 0.05,
            "frechet_lower": gan["frechet_distance"] < kl["frechet_distance"],
            "frechet_from_w_lower": (gan["frechet_distance_from_w"]
                                     < kl["frechet_distance_from_w"]),
            "d_accuracy_below_1": bool(history) and all(
                v < 1.0 for row in history for k, v in row.items() if k != "step")}
  print(json.dumps({"machine": machine(), "command": command(), "epochs": args.epochs,
                    "k": args.k, **out, "d_accuracy_history": history, "checks": checks,
                    "ok": all(checks.values())}))


if __name__ == "__main__":
  main()
