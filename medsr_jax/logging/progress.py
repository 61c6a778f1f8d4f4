"""A one-line training progress report with steps/s and ETA.

`ProgressLine(total_steps, every=100).update(step, loss=...)` prints, every `every` steps and at the
last step, a line such as

  step 120/500  loss 0.0412  3.1 steps/s  ETA 2m03s

The rate is measured over the interval since the previous printed line (so it reflects the current
speed, not the compile time at the start), and the ETA is the remaining steps at that rate. Only step
differences are used, so a run resumed at step 5000 reports the right rate from its second line on;
the first line of a run (or of a resumed run) has no rate yet. Time comes from `time_fn`
(default `time.monotonic`), injectable for tests.

Usage:
  progress = ProgressLine(config.num_steps, every=config.log_every)
  for step in range(start_step + 1, config.num_steps + 1):
    ...
    progress.update(step, loss=float(loss))
"""

from __future__ import annotations

import numbers
import sys
import time
from typing import Callable, TextIO


def format_duration(seconds: float) -> str:
  """Compact duration: 45s, 2m03s, 1h02m, 2d03h."""
  s = max(0, int(round(seconds)))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  if s < 86400:
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
  return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _format_value(value) -> str:
  """Integers as is, other numbers with 4 significant digits, anything else via str()."""
  if isinstance(value, numbers.Integral):
    return str(int(value))
  try:
    return f"{float(value):.4g}"
  except (TypeError, ValueError):
    return str(value)


class ProgressLine:
  """Prints `step i/N  name value ...  R steps/s  ETA T` every `every` steps."""

  def __init__(self, total_steps: int, *, every: int = 100, stream: TextIO | None = None,
               time_fn: Callable[[], float] = time.monotonic):
    """`stream=None` prints to the `sys.stderr` of the moment each line is printed."""
    if every < 1:
      raise ValueError(f"every must be >= 1, got {every}")
    self.total_steps = int(total_steps)
    self.every = int(every)
    self.stream = stream
    self.time_fn = time_fn
    self._last: tuple[int, float] | None = None  # (step, time) of the previous printed line

  def update(self, step: int, **scalars) -> str | None:
    """Reports `step` if it is due; returns the printed line, or None when nothing was printed."""
    step = int(step)
    due = (self._last is None or step % self.every == 0 or step >= self.total_steps)
    if not due or (self._last is not None and step <= self._last[0]):
      return None
    now = self.time_fn()
    parts = [f"step {step}/{self.total_steps}"]
    parts += [f"{name} {_format_value(v)}" for name, v in scalars.items()]
    if self._last is not None:
      last_step, last_time = self._last
      elapsed = now - last_time
      if elapsed > 0:
        rate = (step - last_step) / elapsed
        parts.append(f"{rate:.3g} steps/s")
        parts.append(f"ETA {format_duration(max(0, self.total_steps - step) / rate)}")
    self._last = (step, now)
    line = "  ".join(parts)
    print(line, file=self.stream if self.stream is not None else sys.stderr, flush=True)
    return line
