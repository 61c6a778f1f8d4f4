"""Learning-rate schedules for staged training (thesis §5.3.3, reference spec §3.2).

Each stage starts from its own initial learning rate and multiplies it by `gamma` at each of its
milestones, counted from the start of the stage (PyTorch `MultiStepLR`). The optimiser's step count
only advances on applied updates, so a step skipped by the loss guard does not move the schedule,
as in the author's code where `scheduler.step()` sits inside the guard.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def stage_schedule(stage) -> optax.Schedule:
  """Schedule of one stage, as a function of the step within the stage.

  Multi-step decay (PyTorch `MultiStepLR`), optionally after a linear warm-up from 0 over
  `stage.warmup_steps` steps (0 in every thesis config; the CPU demo uses it).
  """
  boundaries = {int(m): float(stage.gamma) for m in stage.milestones if 0 < int(m) < int(stage.steps)}
  decay = optax.piecewise_constant_schedule(float(stage.learning_rate), boundaries)
  warmup = int(stage.get("warmup_steps", 0))
  if warmup <= 0:
    return decay
  ramp = optax.linear_schedule(0.0, float(stage.learning_rate), warmup)
  return lambda count: jnp.where(count < warmup, ramp(count), decay(count))


def stage_bounds(stages) -> list[tuple[int, int]]:
  """[(first_step, end_step)] of each stage on the global step axis."""
  bounds, start = [], 0
  for s in stages:
    bounds.append((start, start + int(s.steps)))
    start += int(s.steps)
  return bounds


def stage_index(stages, step: int) -> int:
  """Index of the stage that global `step` belongs to (the last one past the end)."""
  for i, (_, end) in enumerate(stage_bounds(stages)):
    if step < end:
      return i
  return len(stages) - 1
