"""Stopping a run cleanly: SIGTERM (a preemptible machine's notice) and Ctrl-C finish the
step in flight, save it, and stop, so that running the same command again resumes there.

One process: while the loop runs, SIGTERM and the first SIGINT only set a flag that the
loop reads after each step (it keeps at most one step in flight, so the stop waits for
one step of compute) and after each save (a signal during a save stops the run
right after it); a second SIGINT interrupts at once, except during a save; a signal the shell set
to be ignored (a background job's SIGINT) stays ignored. Several processes: JAX's
preemption service (started by ``jax.distributed.initialize``) hears SIGTERM on any
process and agrees with the others on the step after which all of them save
(``multihost_utils.reached_preemption_sync_point``).
"""
from __future__ import annotations

import contextlib
import signal
import threading

import jax

EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}


class Preempted(Exception):
  """The run saved its last step and stopped on SIGTERM."""


class StopRequests:
  """``with StopRequests() as stops: ... stops.due(step)``: the signal after which the run
  should save and stop at ``step`` ("SIGTERM", "SIGINT"), or None."""

  def __init__(self):
    self.caught: list[str] = []
    self._old = {}
    self._saving = False

  def _handler(self, signum, frame):
    del frame
    if signum == signal.SIGINT and "SIGINT" in self.caught and not self._saving:
      raise KeyboardInterrupt   # a second Ctrl-C: now, unless a save is being written
    self.caught.append(signal.Signals(signum).name)

  @contextlib.contextmanager
  def saving(self):
    """While a checkpoint is written no signal interrupts it, not even a second Ctrl-C;
    the loop asks ``pending`` afterwards."""
    self._saving = True
    try:
      yield
    finally:
      self._saving = False

  def pending(self) -> str | None:
    """A stop asked for on this process (a signal during the save just made), or None."""
    return self.caught[0] if self.caught else None

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is threading.main_thread():
      wanted = [signal.SIGINT] + ([signal.SIGTERM] if jax.process_count() == 1 else [])
      for s in wanted:
        if signal.getsignal(s) not in (signal.SIG_IGN, None):
          self._old[s] = signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    for s, h in self._old.items():
      signal.signal(s, h)

  def due(self, step: int) -> str | None:
    if self.caught:
      return self.caught[0]
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      try:
        return "SIGTERM" if multihost_utils.reached_preemption_sync_point(step) else None
      except RuntimeError:   # no preemption service in this distributed runtime
        return None
    return None

  @staticmethod
  def stop(name: str, step: int, directory: str) -> BaseException:
    """What the loop raises once step ``step`` is saved."""
    if name == "SIGINT":
      return KeyboardInterrupt()
    return Preempted(f"stopped by SIGTERM after step {step}, which is saved in {directory}: "
                     "run the same command to resume")
