"""Faults injected into small training runs, and what each leaves behind.

  .venv/bin/python benchmarks/fault_injection.py [--kills=6] [--seed=0] [--workdir=DIR]

On configs/shapes.py:smoke (20 steps, a checkpoint every 2) through launch.py, against one
uninterrupted run: SIGKILL, SIGTERM and SIGINT at random moments (a save takes a good
part of each step here, so some land in one); the newest checkpoint corrupted three ways
(bytes overwritten, a data file truncated, its metadata deleted); a disk that fills
(a small tmpfs, where mounting is allowed); a NaN in the loss. After each fault the same
command is run again (elsewhere for the full disk, as a user who freed space would), and
the run must end bit-identical to the uninterrupted one, or stop with one line (the NaN);
no checkpoint on disk may hold a non-finite value, and no checkpoint that was complete
before the fault may have changed. The last line is JSON: faults, recovered,
stopped_in_one_line, data_lost (must be 0).
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax   # noqa: E402
import numpy as np   # noqa: E402

from configs import shapes   # noqa: E402
from jmvae_jax import restore   # noqa: E402


def config(data_dir):
  c = shapes.get_config("smoke")
  c.data.data_dir = data_dir
  c.train.checkpoint_every_steps = 2
  return c


def command(workdir, data_dir, *extra):
  return [sys.executable, "launch.py", "--config=configs/shapes.py:smoke",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.train.checkpoint_every_steps=2"] + list(extra)


def run(workdir, data_dir, *extra):
  return subprocess.run(command(workdir, data_dir, *extra), cwd=ROOT, capture_output=True,
                        text=True, timeout=600)


def params(workdir, data_dir):
  return [np.asarray(x) for x in
          jax.tree.leaves(restore.load_trained(config(data_dir), workdir)[2].params)]


def complete_checkpoints(workdir) -> dict:
  """{step: a hash of every file of it} for the finished checkpoints in ``workdir``."""
  out, ckpts = {}, os.path.join(workdir, "checkpoints")
  for d in os.listdir(ckpts) if os.path.isdir(ckpts) else []:
    if d.isdigit():
      h = hashlib.sha256()
      for r, _, fs in sorted(os.walk(os.path.join(ckpts, d))):
        for f in sorted(fs):
          h.update(f.encode() + open(os.path.join(r, f), "rb").read())
      out[int(d)] = h.hexdigest()
  return out


def all_finite(workdir, data_dir) -> bool:
  """Every checkpoint on disk restores to finite values (or is set aside as damaged)."""
  ckpts = os.path.join(workdir, "checkpoints")
  for d in os.listdir(ckpts) if os.path.isdir(ckpts) else []:
    if d.isdigit():
      try:
        state = restore.load_trained(config(data_dir), workdir, int(d))[2]
      except Exception:  # pylint: disable=broad-except  # damaged: not trusted, not resumed
        continue
      if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state)):
        return False
  return True


def kill_at_random(workdir, data_dir, sig, rng) -> None:
  proc = subprocess.Popen(command(workdir, data_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpts = os.path.join(workdir, "checkpoints")
  while not (os.path.isdir(ckpts) and os.listdir(ckpts)) and proc.poll() is None:
    time.sleep(0.01)
  time.sleep(rng.uniform(0.0, 3.0))
  proc.send_signal(sig)
  proc.wait()


def damage(workdir, how) -> None:
  ckpts = os.path.join(workdir, "checkpoints")
  newest = os.path.join(ckpts, str(max(int(d) for d in os.listdir(ckpts) if d.isdigit())))
  files = sorted((os.path.getsize(os.path.join(r, f)), os.path.join(r, f))
                 for r, _, fs in os.walk(os.path.join(newest, "state")) for f in fs)
  size, path = files[-1]
  if how == "overwrite":
    with open(path, "r+b") as f:
      f.seek(size // 2)
      f.write(os.urandom(64))
  elif how == "truncate":
    with open(path, "r+b") as f:
      f.truncate(size // 3)
  else:
    os.remove(os.path.join(newest, "state", "_METADATA"))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=6, help="signals sent at random moments")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="")
  args = parser.parse_args()
  rng = random.Random(args.seed)
  root = args.workdir or tempfile.mkdtemp(prefix="jmvae-faults-")
  data = os.path.join(root, "data")
  done = run(os.path.join(root, "reference"), data)
  assert done.returncode == 0, done.stderr[-2000:]
  reference = params(os.path.join(root, "reference"), data)
  counts = {"faults": 0, "recovered": 0, "stopped_in_one_line": 0, "data_lost": 0}
  faults = [("kill", rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT]))
            for _ in range(args.kills)]
  faults += [("damage", h) for h in ("overwrite", "truncate", "metadata")]
  faults += [("full_disk", None), ("nan", None)]
  for i, (kind, what) in enumerate(faults):
    workdir = os.path.join(root, f"fault{i}")
    counts["faults"] += 1
    lost, note = False, ""
    if kind == "kill":
      kill_at_random(workdir, data, what, rng)
    elif kind == "damage":
      kill_at_random(workdir, data, signal.SIGKILL, rng)
      damage(workdir, what)
    elif kind == "full_disk":
      small = os.path.join(root, "small")
      os.makedirs(small, exist_ok=True)
      if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", small],
                        capture_output=True).returncode != 0:
        print("full disk: skipped (mounting is not allowed here)")
        counts["faults"] -= 1
        continue
      try:
        out = run(os.path.join(small, "run"), data)
        one_line = out.returncode == 2 and "No space left" in out.stderr.splitlines()[-1]
        shutil.copytree(os.path.join(small, "run"), workdir)   # space freed: moved
      finally:
        subprocess.run(["umount", small], capture_output=True)
      lost |= not one_line
      note = "; the full disk was one line" if one_line else "; the full disk was NOT one line"
    else:
      out = run(workdir, data, "--config.objective.name=tests.custom_losses:"
                "nan_after_half_warmup")
      stopped = out.returncode == 3 and out.stderr.strip().splitlines()[-1].startswith(
          "error: non-finite")
      lost |= not (stopped and all_finite(workdir, data))
      counts["stopped_in_one_line"] += int(stopped)
      print(f"fault {i}: {kind}: {'stopped in one line' if stopped else 'NOT STOPPED'}")
      counts["data_lost"] += int(lost)
      continue
    before = complete_checkpoints(workdir)
    lost |= not all_finite(workdir, data)
    again = run(workdir, data)
    after = complete_checkpoints(workdir)
    changed = [s for s in before if s in after and before[s] != after[s]
               and not os.path.isdir(os.path.join(workdir, "checkpoints_set_aside", str(s)))]
    same = again.returncode == 0 and all(
        np.array_equal(a, b) for a, b in zip(reference, params(workdir, data)))
    lost |= bool(changed) or not same
    counts["recovered"] += int(same)
    counts["data_lost"] += int(lost)
    print(f"fault {i}: {kind} {getattr(what, 'name', what)}: "
          f"{'recovered bit-identical' if same else 'NOT RECOVERED'}"
          + (f"; checkpoints changed: {changed}" if changed else "") + note, flush=True)
  print(json.dumps(counts))


if __name__ == "__main__":
  main()
