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

A true record. The metrics of every step are written (and the TensorBoard file flushed) at each
log line and before each checkpoint, so a kill loses nothing that a checkpoint holds. A run that
starts in a used workdir first rewinds its logs to the checkpoint it resumes from (step 0 when
there is none: `writers.rewind`), dropping what it logs again, the final evaluation included, so
metrics.jsonl and the event files hold one record per step however often the run was killed.

A full disk. A checkpoint that cannot be written (orbax's own error, or one that surfaces from
an asynchronous save at the next save or at the end), a metrics write, or a write of the final
evaluation or the export that fails for lack of space stops the run at once with one line,
`could not write checkpoint 6 to DIR: [Errno 28] No space left on device` (InputError: exit 2).
"""

from __future__ import annotations

import errno
import pathlib
from typing import Any

import jax
import numpy as np
from absl import logging

from medsr_jax import checkpoint as checkpoint_lib
from medsr_jax import sharding
from medsr_jax.errors import DiskFull, InputError
from medsr_jax.logging import model_summary, progress, writers
from medsr_jax.trainers import schedule


def _meta(config, step: int, metrics: dict | None) -> dict:
  return {"config": config.to_json_best_effort(), "step": int(step), "metrics": metrics or {}}


def _restore(ckpt, step: int | None, trainer, is_main: bool = True) -> int | None:
  """Restores the newest intact checkpoint at or before `step` (None: the newest) into `trainer`;
  returns its step (None: there is none). Damaged newer ones are moved aside with a one-line
  warning each."""
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


# errno values of a write that failed for want of room or of a writable disk.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def _disk_error(e: BaseException) -> str | None:
  """One line naming the failed write when `e` (or an exception it wraps: orbax and tensorstore
  re-raise) is a full or unwritable disk; None for anything else."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
      text = f"[Errno {e.errno}] {e.strerror or errno.errorcode.get(e.errno, '')}"
      return text + (f": {e.filename}" if e.filename else "")
    if any(t in str(e) for t in _DISK_TEXTS):
      return checkpoint_lib.first_line(e)
    e = e.__cause__ or e.__context__
  return None


def _checkpoint_op(ckpt, step: int, what, *args):
  """Runs `what(*args)` (a save, wait or close of `ckpt`); a full disk becomes one line. A save
  seals the previous asynchronous one first, so its failure may be that earlier checkpoint's."""
  # pylint: disable-next=protected-access
  earlier = [s for s in getattr(ckpt, "_unsealed", ()) if s != step]
  try:
    return what(*args)
  except Exception as e:  # pylint: disable=broad-except
    why = _disk_error(e)
    if why is None:
      raise
    steps = " or ".join(str(s) for s in [*earlier, step])
    raise DiskFull(f"could not write checkpoint {steps} to {ckpt.directory}: {why}") from e


def _final_op(workdir: pathlib.Path, what: str, fn, *args):
  """Runs the final evaluation or the export; a full disk becomes one line."""
  try:
    return fn(*args)
  except InputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    why = _disk_error(e)
    if why is None:
      raise
    raise DiskFull(f"could not write the {what} to {workdir}: {why}") from e


def train_and_evaluate(trainer_class, config, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Trains (or resumes), evaluates and exports; returns the trainer's summary."""
  workdir = pathlib.Path(workdir)
  trainer = trainer_class(config, workdir)
  is_main = jax.process_index() == 0
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints,
                                     metric=trainer.best_metric, mode=trainer.best_mode)
  # The checkpoint to resume from, before anything in the workdir is rewritten.
  start = _restore(ckpt, ckpt.latest_step(), trainer, is_main)
  if is_main:  # what the killed attempt logged after that checkpoint is logged again
    writers.rewind(workdir, int(start or 0))
  writer = writers.create_writers(workdir, is_main_process=is_main)
  if start is not None:
    logging.info("resumed from checkpoint at step %d", start)
    print(f"resumed from checkpoint at step {start}", flush=True)
  step = int(start or 0)
  print(trainer.describe(), flush=True)
  if config.train.get("param_overview", True):
    model_summary.print_parameter_overview(trainer.state["players"]["g"]["params"],
                                           title=f"model {config.model.name}")

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
    last = step == trainer.total_steps
    checkpoint_now = step % config.train.checkpoint_every == 0 or last
    if step % config.train.log_every == 0 or last or checkpoint_now:
      # Before a checkpoint too: a run resumed from it never logs these steps again.
      _flush_metrics(pending, writer, line, stage_idx, trainer)
      pending = []
    val = None
    if step % config.train.eval_every == 0 or last:
      val = trainer.validate()
      writer.write_scalars(step, val)
      print(f"step {step}: {trainer.validation_line(val)}", flush=True)
    writer.flush()  # TensorBoard too: a killed run keeps what it logged
    if checkpoint_now:
      # Only checkpoints validated at their own step compete for "best".
      _checkpoint_op(ckpt, step, ckpt.save, step, trainer.state, trainer.train_iter,
                     _meta(config, step, val), val)
  _checkpoint_op(ckpt, step, ckpt.wait)
  writer.flush()
  trainer.best_checkpoint = ckpt.best_step()

  summary = _final_op(workdir, "final evaluation", trainer.final_evaluation, writer, step)
  writer.flush()
  _final_op(workdir, "export", trainer.export, workdir / "export", step)
  _checkpoint_op(ckpt, step, ckpt.close)
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
