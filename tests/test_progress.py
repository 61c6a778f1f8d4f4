"""Tests for medsr_jax.logging.progress with a fake clock."""

import io

import pytest

from medsr_jax.logging import progress


class FakeClock:
  def __init__(self, t=1000.0):
    self.t = t

  def __call__(self):
    return self.t


def test_rate_and_eta_over_interval():
  clock, out = FakeClock(), io.StringIO()
  p = progress.ProgressLine(500, every=20, stream=out, time_fn=clock)
  assert p.update(1, loss=0.9) == "step 1/500  loss 0.9"  # first line: no rate yet
  for step in range(2, 121):
    clock.t += 0.5 if step <= 100 else 1 / 3.1  # 2 steps/s, then 3.1 steps/s
    p.update(step, loss=0.0412)
  lines = out.getvalue().splitlines()
  assert [l.split()[1] for l in lines] == ["1/500", "20/500", "40/500", "60/500", "80/500",
                                           "100/500", "120/500"]
  assert lines[1] == "step 20/500  loss 0.0412  2 steps/s  ETA 4m00s"  # 480 steps at 2/s
  # The last interval alone counts: 380 steps at 3.1 steps/s = 122.6 s.
  assert lines[-1] == "step 120/500  loss 0.0412  3.1 steps/s  ETA 2m03s"


def test_resume_from_later_step_and_last_step():
  clock, out = FakeClock(), io.StringIO()
  p = progress.ProgressLine(10_000, every=100, stream=out, time_fn=clock)
  assert p.update(5_003, loss=1.0) is not None  # resumed: first update prints
  assert p.update(5_050) is None  # not due
  clock.t += 97 / 4  # 97 steps at 4 steps/s
  line = p.update(5_100, psnr=31.25, it=3)
  assert line == "step 5100/10000  psnr 31.25  it 3  4 steps/s  ETA 20m25s"
  clock.t += 2
  assert p.update(5_100) is None  # same step twice: no second line
  clock.t += 4900 / 4 - 2
  assert p.update(10_000).endswith("4 steps/s  ETA 0s")
  assert len(out.getvalue().splitlines()) == 3


def test_format_duration():
  assert progress.format_duration(45.4) == "45s"
  assert progress.format_duration(123) == "2m03s"
  assert progress.format_duration(3720) == "1h02m"
  assert progress.format_duration(2 * 86400 + 3 * 3600 + 59) == "2d03h"
  assert progress.format_duration(-3) == "0s"


def test_every_must_be_positive():
  with pytest.raises(ValueError):
    progress.ProgressLine(10, every=0)
