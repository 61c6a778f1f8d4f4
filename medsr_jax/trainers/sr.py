"""The fixed-scale SR trainer: staged pixel-loss training, validation, checkpoints, evaluation.

  python -m medsr_jax.main --config=configs/rdst.py --workdir=runs/rdst

`train_and_evaluate(config, workdir)` runs every stage of `config.train.stages` (thesis §5.3.3),
resuming from the latest checkpoint in `workdir` if there is one (same data order: the grain
iterator state is in the checkpoint), then evaluates bicubic and the model on the test slices and
exports the parameters to `workdir/export/`.

Per step the host only fetches the next batch and dispatches the jitted step; metrics stay on
device until the next log line (every `train.log_every` steps), so there is no host round trip in
the step. Outputs in the workdir: config.json, metrics.jsonl, tensorboard/, checkpoints/,
results.md, results.json, panel_*.png, export/.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from medsr_jax import checkpoint as checkpoint_lib
from medsr_jax import config_lib, evaluate, export, models, sharding
from medsr_jax.data import pipeline, sources
from medsr_jax.errors import InputError
from medsr_jax.logging import progress, writers
from medsr_jax.metrics import image_quality
from medsr_jax.trainers import schedule, step as step_lib


def _build_model(config):
  return models.build(config.model.name, scale=config.model.scale,
                      in_channels=config.model.in_channels, **config.model.kwargs.to_dict())


def _check_channels(source, in_channels: int) -> None:
  """InputError unless the data's channel count is the model's `in_channels`."""
  channels = int(np.shape(source[0])[-1])
  if channels != in_channels:
    raise InputError(f"the training slices have {channels} channel(s) but model.in_channels is "
                     f"{in_channels}: set --config.model.in_channels={channels} or pick channels "
                     "with --config.data.modalities")


class _Run:
  """Everything one training run holds: mesh, model, data, state, step functions."""

  def __init__(self, config, workdir: pathlib.Path):
    self.config, self.workdir = config, workdir
    self.mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axis_names)
    self.model = _build_model(config)
    self.stages = list(config.train.stages)
    self.total_steps = config_lib.total_steps(config)
    self.scale = float(config.model.scale)
    self.train_iter = self._make_train_iterator()
    self.val_lr, self.val_hr, _ = self.eval_pairs("val")
    self.predict = evaluate.Predictor(self.model, config.data.eval_batch_size)
    self.state = self._init_state()
    self.state_shardings = jax.tree.map(lambda x: x.sharding, self.state)
    self._steps: dict[int, Any] = {}

  # ----- data -------------------------------------------------------------------------------
  def _make_train_iterator(self):
    c = self.config.data
    source = sources.source_from_config(c, "train")
    _check_channels(source, self.config.model.in_channels)
    dataset = pipeline.make_train_dataset(
        source, global_batch_size=c.global_batch_size,
        lr_patch=c.lr_patch, scale=self.scale, seed=self.config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        blur=c.blur, noise_sigma=c.noise_sigma)
    return pipeline.train_iterator(dataset, num_threads=c.num_threads,
                                   prefetch_buffer_size=c.prefetch_buffer_size,
                                   num_workers=c.num_workers)

  def eval_pairs(self, split: str):
    """Whole-slice (LR, HR, slice ids) of a split, by the thesis' test protocol (spec §4.4)."""
    source = sources.source_from_config(self.config.data, split)
    images = np.stack([source[i] for i in range(len(source))])
    lr, hr = pipeline.make_test_pairs(images, self.scale, blur=self.config.data.blur)
    return lr, hr, getattr(source, "slice_index", None)

  # ----- state ------------------------------------------------------------------------------
  def _tx(self, stage_idx: int):
    return step_lib.make_optimizer(self.config.train, self.stages[stage_idx])

  def _init_state(self):
    c = self.config
    rng_init, rng_train = jax.random.split(jax.random.key(c.seed))
    lp = c.data.lr_patch
    dummy = jnp.zeros((1, lp, lp, c.model.in_channels), jnp.float32)

    def init():
      params, model_state = step_lib.split_variables(self.model.init(rng_init, dummy))
      return step_lib.init_state(params, self._tx(0), rng_train, ema=c.train.ema_decay > 0,
                                 model_state=model_state)

    shardings = sharding.tree_shardings(jax.eval_shape(init), self.mesh, c.mesh.fsdp_min_size)
    return jax.jit(init, out_shardings=shardings)()

  def reset_optimizer(self, stage_idx: int):
    """A stage starts with a fresh optimiser state (its own learning-rate schedule)."""
    tx = self._tx(stage_idx)
    opt_sh = self.state_shardings["opt_state"]
    self.state["opt_state"] = jax.jit(tx.init, out_shardings=opt_sh)(self.state["params"])
    self.state["stage"] = jax.device_put(jnp.asarray(stage_idx, jnp.int32),
                                         self.state_shardings["stage"])

  def step_fn(self, stage_idx: int):
    """The jitted step of a stage, compiled once and reused."""
    if stage_idx not in self._steps:
      stage = self.stages[stage_idx]
      raw = step_lib.make_train_step(
          step_lib.pixel_objective(self.model, stage.loss), self._tx(stage_idx),
          loss_threshold=self.config.train.loss_threshold,
          ema_decay=self.config.train.ema_decay, name=f"stage{stage_idx}")
      batch_sh = sharding.batch_sharding(self.mesh)
      self._steps[stage_idx] = step_lib.jit_train_step(
          raw, self.state_shardings, {"lr": batch_sh, "hr": batch_sh},
          sharding.replicated(self.mesh))
    return self._steps[stage_idx]

  def eval_params(self):
    """This process's full copy of the variables to evaluate/export (EMA params when enabled)."""
    use_ema = self.config.eval.use_ema and "ema" in self.state
    params = self.state["ema"] if use_ema else self.state["params"]
    return {"params": sharding.host_local(params, self.mesh),
            **sharding.host_local(self.state["model_state"], self.mesh)}

  def counter(self, name: str) -> int:
    """A scalar of the state (step, stage, skipped) as a Python int."""
    return int(sharding.host_local(self.state[name], self.mesh))

  def validate(self) -> dict[str, float]:
    sr = self.predict(self.eval_params(), self.val_lr)
    scores = evaluate.score_slices(self.val_hr, sr, self.scale).summary()
    return {"val_psnr": scores["psnr_mean"], "val_ssim": scores["ssim_mean"]}


def _meta(config, step: int, metrics: dict | None) -> dict:
  return {"config": config.to_json_best_effort(), "step": int(step), "metrics": metrics or {}}


def train_and_evaluate(config, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Trains (or resumes), evaluates and exports; returns the summary of the test evaluation."""
  workdir = pathlib.Path(workdir)
  run = _Run(config, workdir)
  is_main = jax.process_index() == 0
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
  start = ckpt.latest_step()
  if start is not None and is_main:
    writers.drop_records_after(workdir / "metrics.jsonl", start)
  writer = writers.create_writers(workdir, is_main_process=is_main)
  if start is not None:
    run.state, _ = ckpt.restore(start, checkpoint_lib.abstract_like(run.state), run.train_iter)
    logging.info("resumed from checkpoint at step %d", start)
    print(f"resumed from checkpoint at step {start}", flush=True)
  step = int(start or 0)
  n_params = models.count_params(run.state["params"])
  print(f"model {config.model.name} x{run.scale:g}: {n_params:,} parameters; "
        f"{run.total_steps} steps; mesh {dict(run.mesh.shape)}", flush=True)

  line = progress.ProgressLine(run.total_steps, every=config.train.log_every)
  pending: list[tuple[int, Any]] = []
  val: dict[str, float] | None = None
  current_stage = run.counter("stage")  # host copy: no device read inside the loop
  while step < run.total_steps:
    stage_idx = schedule.stage_index(run.stages, step)
    if stage_idx != current_stage:
      run.reset_optimizer(stage_idx)
      current_stage = stage_idx
    batch = sharding.global_batch(next(run.train_iter), run.mesh)
    run.state, metrics = run.step_fn(stage_idx)(run.state, batch)
    step += 1
    pending.append((step, metrics))
    if step % config.train.log_every == 0 or step == run.total_steps:
      _flush_metrics(pending, writer, line, stage_idx, run.mesh)
      pending = []
    val = None
    if step % config.train.eval_every == 0 or step == run.total_steps:
      val = run.validate()
      writer.write_scalars(step, val)
      print(f"step {step}: validation PSNR {val['val_psnr']:.2f} dB, "
            f"SSIM {val['val_ssim']:.4f}", flush=True)
    if step % config.train.checkpoint_every == 0 or step == run.total_steps:
      # Only checkpoints validated at their own step compete for "best".
      ckpt.save(step, run.state, run.train_iter, _meta(config, step, val), val)
  ckpt.wait()
  writer.flush()

  summary = _final_evaluation(run, writer, step)
  _export(run, workdir / "export", step)
  ckpt.close()
  writer.close()
  return summary


def _flush_metrics(pending, writer, line, stage_idx, mesh):
  """One host round trip for all metrics since the last log line."""
  fetched = jax.device_get([sharding.host_local(m, mesh) for _, m in pending])
  for (s, _), m in zip(pending, fetched):
    scalars = {k: float(np.asarray(v)) for k, v in m.items()}
    scalars["stage"] = stage_idx
    writer.write_scalars(s, scalars)
  last_step, last = pending[-1][0], fetched[-1]
  line.update(last_step, loss=float(last["loss"]), lr=float(last["learning_rate"]))


def _final_evaluation(run: _Run, writer, step: int) -> dict[str, Any]:
  lr, hr, slice_ids = run.eval_pairs("test")
  scores, images = evaluate.evaluate(run.predict, run.eval_params(), lr, hr, run.scale)
  table = evaluate.markdown_table(scores, scale=run.scale, model_label=run.config.model.name)
  if jax.process_index() == 0:  # every process evaluates (same numbers); one writes the files
    table, panel_images = evaluate.write_report(
        run.workdir, scores, images, scale=run.scale, model_label=run.config.model.name,
        num_panels=run.config.eval.num_panels, slice_ids=slice_ids)
    writer.write_images(step, {f"test/{k}": v for k, v in panel_images.items()})
  summary = {k: v.summary() for k, v in scores.items()}
  writer.write_scalars(step, {f"test_{k}_{m}": summary[k][f"{m}_mean"]
                              for k in summary for m in ("psnr", "ssim")})
  gain = summary["model"]["psnr_mean"] - summary["bicubic"]["psnr_mean"]
  print(f"\nTest slices ({len(hr)}), whole-slice x{run.scale:g}, border "
        f"{image_quality.evaluation_margin(run.scale)} px cropped:\n{table}\n"
        f"PSNR gain over bicubic: {gain:+.2f} dB", flush=True)
  return summary


def _export(run: _Run, directory: pathlib.Path, step: int) -> None:
  variables = jax.device_get(run.eval_params())  # every process takes part in the gather
  skipped = run.counter("skipped")
  if jax.process_index() != 0:
    return
  c = run.config
  export.save_export(directory, model_name=c.model.name, model_kwargs=c.model.kwargs.to_dict(),
                     scale=c.model.scale, in_channels=c.model.in_channels, params=variables,
                     extra={"step": int(step), "skipped_steps": skipped})
  print(f"exported parameters to {directory}", flush=True)
