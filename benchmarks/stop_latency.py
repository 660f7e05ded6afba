"""How long a training run takes to stop on SIGTERM (a preemption notice), against the
time of one step: the loop saves the step it is at, so the wait should be about a step,
not every step JAX's asynchronous dispatch has queued since the last log.

  .venv/bin/python benchmarks/stop_latency.py [--after=150] [--data_dir=DIR] [--config.FIELD=VALUE ...]

Trains JMVAE-GAN on configs/shapes64.py (a slow step on a CPU) in a temporary workdir
through launch.py, logging every 10 steps, sends SIGTERM ``--after`` seconds into training,
and prints the seconds to exit (the step in flight, the save, the exit), the step saved,
and the time of a step (between the last two logs before the signal: a log waits for its
step). The last line is JSON.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import command, machine   # noqa: E402


LOG_EVERY = 10   # steps between logs; a log waits for its step, so their gap times 10 steps


def launch_cmd(workdir: str, data_dir: str, overrides: list[str]) -> list[str]:
  return [sys.executable, "launch.py", "--config=configs/shapes64.py", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", "--config.train.epochs=100",
          "--config.train.eval_every_epochs=0", f"--config.train.log_every_steps={LOG_EVERY}",
          *overrides]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--after", type=float, default=150.0,
                      help="seconds of training before the SIGTERM")
  parser.add_argument("--data_dir", default="", help="where the shapes data is built")
  args, overrides = parser.parse_known_args()
  if any(not a.startswith("--config.") for a in overrides):
    parser.error(f"unknown arguments {overrides}; only --config.FIELD=VALUE passes through")
  tmp = tempfile.mkdtemp(prefix="stop_latency_")
  data_dir = args.data_dir or os.path.join(tmp, "data")
  workdir = os.path.join(tmp, "run")
  proc = subprocess.Popen(launch_cmd(workdir, data_dir, overrides), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  lines, errors = [], []   # stdout as (arrival time, line): a log forces its step
  def read(stream, into, stamp):
    for line in stream:   # one at a time: each line's arrival time
      into.append((time.time(), line) if stamp else line)

  readers = [threading.Thread(target=read, args=(proc.stdout, lines, True)),
             threading.Thread(target=read, args=(proc.stderr, errors, False))]
  for r in readers:
    r.start()
  while not any(l.startswith("training ") for _, l in list(lines)):   # just before step 1
    if proc.poll() is not None:
      sys.exit(f"the run ended before training (exit {proc.returncode}): {errors[-1:]}")
    time.sleep(0.1)
  time.sleep(args.after)
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  proc.wait()
  latency = time.time() - sent
  for r in readers:
    r.join()
  shutil.rmtree(workdir if args.data_dir else tmp)
  err = "".join(errors)
  saved = re.search(r"stopped by SIGTERM after step (\d+)", err)
  if proc.returncode != 143 or not saved:
    sys.exit(f"the run did not stop on SIGTERM as expected (exit {proc.returncode}): "
             f"{err.strip().splitlines()[-1:]}")
  step = int(saved.group(1))
  logged = [t for t, l in lines if re.search(r"step \d+/\d+ ", l) and t < sent]
  if len(logged) < 2:
    sys.exit(f"fewer than two logs in {args.after} s of training: give a larger --after")
  step_s = (logged[-1] - logged[-2]) / LOG_EVERY
  result = {"machine": machine(), "command": command(), "after_s": args.after,
            "saved_step": step, "seconds_to_stop": round(latency, 2),
            "seconds_per_step": round(step_s, 3),
            "seconds_to_stop_in_steps": round(latency / step_s, 1)}
  print(f"SIGTERM {args.after:.0f} s into training: stopped {latency:.1f} s later with step "
        f"{step} saved; a step takes {step_s:.2f} s, so the stop waited "
        f"{latency / step_s:.1f} steps' time")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
