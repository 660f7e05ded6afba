"""Where a run reports: a progress line, metrics.jsonl, TensorBoard and PNG figures."""
from __future__ import annotations

import json
import os
import re
import socket
import time

import jax
import numpy as np

from jmvae_jax import figures


def format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """Steps per second over the last interval, and the ETA to ``total`` steps at the
  mean rate since the first report (which excludes compilation), so that periodic
  evaluations do not make it swing."""

  def __init__(self, start_step: int, total: int):
    self.total, self.last_step, self.last_time = total, start_step, time.time()
    self.first = None

  def update(self, step: int) -> str:
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    if self.first is None or step <= self.first[0]:
      self.first, mean = (step, now), rate
    else:
      mean = (step - self.first[0]) / max(now - self.first[1], 1e-9)
    self.last_step, self.last_time = step, now
    if rate <= 0 or mean <= 0:
      return ""
    return f"{rate:.1f} steps/s ETA {format_duration((self.total - step) / mean)}"


def _record_step(line: str) -> int | None:
  """The step of one metrics.jsonl line; None for a blank line or one cut short by a
  killed run."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def truncate_jsonl(path: str, step: int) -> None:
  """Drops the records of steps after ``step`` (written before a crash, and about to
  be written again by the resumed run) and any line a kill cut short; atomic through a
  temporary file."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = [l for l in lines if (s := _record_step(l)) is not None and s <= step]
  if len(keep) != len(lines):
    with open(path + ".tmp", "w") as f:
      f.writelines(keep)
    os.replace(path + ".tmp", path)


_TFEVENTS = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def mark_restart(tb_dir: str, step: int) -> None:
  """Writes a SessionLog START at ``step`` into an event file of its own, named to sort
  after every event file already in ``tb_dir`` and before the one the run's writer
  opens next (TensorBoard reads a directory's files in name order). TensorBoard takes
  a run's first START as its beginning and every later one as a restart: it drops the
  events logged at steps >= ``step`` before it, i.e. what a killed run wrote after its
  last checkpoint. That is TensorBoard's Python reader (``--load_fast=false``); its
  faster Rust reader ignores START and replaces a tag's points only once the resumed
  run logs that tag again at a step at or below them."""
  import tensorflow as tf   # local, as in Writer
  os.makedirs(tb_dir, exist_ok=True)
  seen = [int(m.group(1)) for f in os.listdir(tb_dir) if (m := _TFEVENTS.match(f))]
  if seen and max(seen) > time.time() + 2:
    print(f"warning: {tb_dir} holds an event file dated in the future (another host's "
          "clock?); TensorBoard may show both the killed and the resumed run's points "
          "after the checkpoint", flush=True)
    return
  while seen and int(time.time()) <= max(seen):   # a name of a later second sorts after
    time.sleep(0.05)
  # "<time>.<host>.0.restart" sorts before the writer's "<time>.<host>.<pid>.<n>.v2".
  name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.0.restart"
  with tf.io.TFRecordWriter(os.path.join(tb_dir, name)) as f:
    for event in (tf.compat.v1.Event(wall_time=time.time(), file_version="brain.Event:2"),
                  tf.compat.v1.Event(wall_time=time.time(), step=step, session_log=(
                      tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START)))):
      f.write(event.SerializeToString())


class Writer:
  """metrics.jsonl, TensorBoard event files and figures, from process 0 only. A run
  that resumes at step s first drops what a killed run logged after s, from
  metrics.jsonl and (through ``mark_restart``) from TensorBoard's view."""

  def __init__(self, workdir: str, resumed_at: int = 0):
    self.active = jax.process_index() == 0
    self.workdir = workdir
    self.figure_dir = os.path.join(workdir, "figures")
    if self.active:
      import tensorflow as tf   # local: only the writer needs TensorFlow's summaries
      self._tf = tf
      os.makedirs(self.figure_dir, exist_ok=True)
      tb_dir = os.path.join(workdir, "tensorboard")
      mark_restart(tb_dir, resumed_at + 1)
      self._tb = tf.summary.create_file_writer(tb_dir)
      jsonl = os.path.join(workdir, "metrics.jsonl")
      truncate_jsonl(jsonl, resumed_at)
      self._jsonl = open(jsonl, "a")

  def scalars(self, step: int, values: dict, prefix: str = "train") -> None:
    if not self.active:
      return
    values = {f"{prefix}/{k}": float(v) for k, v in values.items()}
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self._jsonl.flush()
    with self._tb.as_default(step=int(step)):
      for k, v in values.items():
        self._tf.summary.scalar(k, v)

  def image(self, step: int, name: str, image: np.ndarray) -> str | None:
    """Writes a figure to TensorBoard and to figures/NAME.png; returns the path."""
    if not self.active:
      return None
    with self._tb.as_default(step=int(step)):
      self._tf.summary.image(name, np.asarray(image)[None], max_outputs=1)
    return figures.write_png(os.path.join(self.figure_dir, f"{name}.png"), image)

  def close(self) -> None:
    if self.active:
      self._tb.flush()
      self._jsonl.close()
