"""All orbax calls in one place: train-state checkpoints with the data-iterator state.

A checkpoint at step N (`WORKDIR/checkpoints/N/`) holds three items:
  state   the train-state pytree (params, optimiser state, EMA, step, rng, counters), sharded arrays
  data    the grain iterator state of every process (one JSON file per process)
  meta    JSON: the config and the validation metrics at that step
Orbax writes each checkpoint to a temporary directory and renames it when complete, so an
interrupted save never leaves a checkpoint that restores half a state. Kept: the latest
`keep` checkpoints, plus the one with the best validation metric (`metric`, by default
'val_psnr', higher is better; `mode='min'` for a loss). Saving is asynchronous; the loop
calls `wait()` before it exits.

Restoring takes an abstract state (shapes, dtypes and shardings), so a checkpoint written on one
mesh restores onto another.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

VAL_METRIC = "val_psnr"


class Checkpointer:
  """Keep-latest-N + best-by-validation-PSNR checkpoints of (state, data iterator, meta)."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 3, async_save: bool = True,
               metric: str = VAL_METRIC, mode: str = "max"):
    if mode not in ("max", "min"):
      raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    self.directory = pathlib.Path(directory).absolute()
    policies = [
        ocp.checkpoint_managers.LatestN(n=max(1, int(keep))),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics[metric], reverse=mode == "min", n=1,
            keep_checkpoints_without_metrics=False),
    ]
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=lambda metrics: metrics[metric], best_mode=mode,
        enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any, meta: dict,
           metrics: dict | None = None) -> bool:
    """Saves asynchronously; `metrics` (with the ranking metric) ranks the checkpoint for 'best'."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta))
    return self._manager.save(step, args=args, metrics=metrics, force=True)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict]:
    """Restores `state` onto the shardings of `abstract_state` and the iterator in place."""
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
        meta=ocp.args.JsonRestore())
    restored = self._manager.restore(step, args=args)
    return restored["state"], restored["meta"]

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Only the train state of checkpoint `step` (no data iterator): another run's weights."""
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    return self._manager.restore(step, args=args)["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete pytree, for `restore`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
