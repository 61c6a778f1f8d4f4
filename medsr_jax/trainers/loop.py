"""The one training loop every trainer shares: stages, logging, validation, checkpoints, resume,
final evaluation and export.

  python -m medsr_jax.main --config=configs/rdst.py --workdir=runs/rdst     # trainer 'sr'
  python -m medsr_jax.main --config=configs/srgan.py --workdir=runs/srgan   # trainer 'gan'

`train_and_evaluate(trainer_class, config, workdir)` builds the trainer, resumes from the latest
checkpoint in `workdir` if there is one (train state and data-iterator position, so the data
order is the same as an uninterrupted run), runs every stage of `config.train.stages`, then asks
the trainer for its final evaluation and export. What differs between training regimes lives in
the trainer (`trainers/sr.py`, `trainers/gan.py`), which provides:

  state, state_shardings, train_iter, mesh, stages, total_steps   attributes
  best_metric, best_mode       the validation metric that ranks checkpoints ('val_psnr', 'max')
  start_stage(i)               fresh optimiser states (and anything else) when stage i starts
  train_step(i, step) -> fn    the jitted `fn(state, global_batch) -> (state, metrics)` to run at
                               global `step` of stage i (a GAN picks D-only or D+G here)
  progress_fields(metrics)     the numbers of the progress line
  validate() -> dict           validation metrics (logged, and `best_metric` ranks checkpoints)
  validation_line(val) -> str  how the progress output shows them
  final_evaluation(writer, step) -> summary;  export(directory, step)

Per step the host only fetches the next batch and dispatches the jitted step; metrics stay on
device until the next log line (every `train.log_every` steps), so there is no host round trip in
the step. Outputs in the workdir: config.json, metrics.jsonl, tensorboard/, checkpoints/,
results.md, results.json, panel_*.png, export/.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
from absl import logging

from medsr_jax import checkpoint as checkpoint_lib
from medsr_jax import sharding
from medsr_jax.errors import InputError
from medsr_jax.logging import progress, writers
from medsr_jax.trainers import schedule


def _meta(config, step: int, metrics: dict | None) -> dict:
  return {"config": config.to_json_best_effort(), "step": int(step), "metrics": metrics or {}}


def _restore(ckpt, step: int | None, trainer, is_main: bool = True) -> int | None:
  """Restores the newest intact checkpoint at or before `step` into `trainer`; returns its step
  (None: there is none). Damaged newer ones are moved aside with a one-line warning each."""
  if step is None:
    return None
  try:
    found = ckpt.restore_latest(checkpoint_lib.abstract_like(trainer.state), trainer.train_iter,
                                newest=step)
  except checkpoint_lib.RestoreFailed as e:
    raise InputError(
        f"the checkpoint at step {e.step} in {ckpt.directory} does not match this run's train "
        f"state (written by an older medsr_jax, before the players layout, or by another "
        f"config: {checkpoint_lib.first_line(e.cause)}); use a new --workdir, and start from "
        f"that run's weights with --config.init_from={ckpt.directory.parent}") from e.cause
  if found is None:
    return None
  if is_main:
    for line in found.warnings:
      checkpoint_lib.warn(line)
  trainer.state = found.state
  return found.step


def train_and_evaluate(trainer_class, config, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Trains (or resumes), evaluates and exports; returns the trainer's summary."""
  workdir = pathlib.Path(workdir)
  trainer = trainer_class(config, workdir)
  is_main = jax.process_index() == 0
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints,
                                     metric=trainer.best_metric, mode=trainer.best_mode)
  # The checkpoint to resume from, before anything in the workdir is rewritten.
  start = _restore(ckpt, ckpt.latest_step(), trainer, is_main)
  if start is not None and is_main:
    writers.drop_records_after(workdir / "metrics.jsonl", start)
  writer = writers.create_writers(workdir, is_main_process=is_main)
  if start is not None:
    logging.info("resumed from checkpoint at step %d", start)
    print(f"resumed from checkpoint at step {start}", flush=True)
  step = int(start or 0)
  print(trainer.describe(), flush=True)

  line = progress.ProgressLine(trainer.total_steps, every=config.train.log_every)
  pending: list[tuple[int, Any]] = []
  current_stage = int(sharding.host_local(trainer.state["stage"], trainer.mesh))
  while step < trainer.total_steps:
    stage_idx = schedule.stage_index(trainer.stages, step)
    if stage_idx != current_stage:
      trainer.start_stage(stage_idx)
      current_stage = stage_idx
    batch = sharding.global_batch(next(trainer.train_iter), trainer.mesh)
    trainer.state, metrics = trainer.train_step(stage_idx, step)(trainer.state, batch)
    step += 1
    pending.append((step, metrics))
    if step % config.train.log_every == 0 or step == trainer.total_steps:
      _flush_metrics(pending, writer, line, stage_idx, trainer)
      pending = []
    val = None
    if step % config.train.eval_every == 0 or step == trainer.total_steps:
      val = trainer.validate()
      writer.write_scalars(step, val)
      print(f"step {step}: {trainer.validation_line(val)}", flush=True)
    if step % config.train.checkpoint_every == 0 or step == trainer.total_steps:
      # Only checkpoints validated at their own step compete for "best".
      ckpt.save(step, trainer.state, trainer.train_iter, _meta(config, step, val), val)
  ckpt.wait()
  writer.flush()
  trainer.best_checkpoint = ckpt.best_step()

  summary = trainer.final_evaluation(writer, step)
  trainer.export(workdir / "export", step)
  ckpt.close()
  writer.close()
  return summary


def _flush_metrics(pending, writer, line, stage_idx, trainer):
  """One host round trip for all metrics since the last log line."""
  fetched = jax.device_get([sharding.host_local(m, trainer.mesh) for _, m in pending])
  for (s, _), m in zip(pending, fetched):
    scalars = {k: float(np.asarray(v)) for k, v in m.items()}
    scalars["stage"] = stage_idx
    writer.write_scalars(s, scalars)
  last_step, last = pending[-1][0], fetched[-1]
  line.update(last_step, **trainer.progress_fields(last))
