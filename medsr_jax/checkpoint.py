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

Integrity. The atomic rename guarantees that a checkpoint is complete, not that its bytes are the
ones written: orbax reads a data file with flipped bytes without complaint. So every checkpoint
also carries `N/sha256.json`, the size and sha256 of every other file under `N/`, written once
the save is known to be finished (orbax finalises an asynchronous save in the background: the
manifest of step N is written by the next `save`, `wait` or `close`, after orbax has finished).
`restore_latest` checks the newest checkpoint first; one whose files do not match its manifest
(or, unverified, that does not restore) is moved aside to `checkpoints/damaged/N-<time>` (never deleted, and
out of orbax's view) once an older one has restored, with a one-line warning; if none restores,
`NoUsableCheckpoint` says so in one line and nothing is moved. A checkpoint without a manifest
(the process died between orbax's rename and the manifest write, or it predates manifests) is
unverified: it is used only when no newer checkpoint has a manifest (so only the newest of a run
that writes manifests) and only if every item restores without error; once it has, its manifest
is written, so that damage after the resume is caught like any other.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sys
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from medsr_jax.errors import InputError

VAL_METRIC = "val_psnr"
ROOM_SLACK = 64 * 1024  # bytes of metadata (JSON, orbax's manifests) beyond the arrays
MANIFEST = "sha256.json"
DAMAGED = "damaged"

INTACT, UNVERIFIED, BROKEN = "intact", "unverified", "damaged"


class DamagedCheckpoint(InputError):
  """A checkpoint whose files do not match its manifest (or that cannot be trusted)."""


class NoUsableCheckpoint(InputError):
  """Every checkpoint of a run directory is damaged."""


class RestoreFailed(Exception):
  """A checkpoint whose files are intact does not restore onto this run's train state."""

  def __init__(self, step: int, cause: BaseException):
    super().__init__(str(cause))
    self.step, self.cause = step, cause


@dataclasses.dataclass
class Restored:
  """What `restore_latest` found: the step, its state and meta, and warnings to show."""
  step: int
  state: Any
  meta: dict
  warnings: list[str]


def first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0][:200] if text else type(e).__name__


def _size(nbytes: int) -> str:
  return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 10 * 2**20 else f"{nbytes / 2**10:.0f} KiB"


def warn(line: str) -> None:
  """A one-line warning on stderr."""
  print(line, file=sys.stderr, flush=True)


class _QuietOrbax(logging.Filter):
  """Drops orbax's own log records below CRITICAL (see `quiet_orbax_logs`)."""

  def filter(self, record: logging.LogRecord) -> bool:
    orbax = f"{os.sep}orbax{os.sep}" in (record.pathname or "")
    return not orbax or record.levelno >= logging.CRITICAL


def quiet_orbax_logs() -> None:
  """Keeps orbax's log lines off stderr: this module reports every checkpoint problem itself in
  one line (a damaged checkpoint moved aside, a full disk, no usable checkpoint), where orbax
  would add its own ERROR / WARNING lines about the same event (a metadata file it cannot parse,
  a temporary directory of a killed save it removes, a background save that ran out of room).
  `python -m medsr_jax.main --verbosity=0` shows them again (main calls this only without it)."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
    handler.addFilter(_QuietOrbax())


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def _digest(path: pathlib.Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def file_digests(step_dir: pathlib.Path) -> dict[str, dict]:
  """{relative path: {size, sha256}} of every file under `step_dir` but the manifest."""
  out = {}
  for path in sorted(step_dir.rglob("*")):
    rel = path.relative_to(step_dir).as_posix()
    if path.is_file() and rel not in (MANIFEST, MANIFEST + ".tmp"):
      out[rel] = {"size": path.stat().st_size, "sha256": _digest(path)}
  return out


def write_manifest(step_dir: pathlib.Path) -> None:
  """Writes `step_dir/sha256.json` atomically (a kill leaves no manifest, never half of one)."""
  text = json.dumps({"algorithm": "sha256", "files": file_digests(step_dir)}, indent=1,
                    sort_keys=True)
  tmp = step_dir / (MANIFEST + ".tmp")
  with open(tmp, "w") as f:
    f.write(text + "\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, step_dir / MANIFEST)


def verify(step_dir: pathlib.Path) -> tuple[str, str]:
  """(INTACT | UNVERIFIED | BROKEN, what is wrong) for one checkpoint directory."""
  manifest = step_dir / MANIFEST
  if not step_dir.is_dir():
    return BROKEN, "its directory is gone"
  if not manifest.exists():
    return UNVERIFIED, "it has no checksum manifest"
  try:
    files = json.loads(manifest.read_text())["files"]
    expected = {str(k): (int(v["size"]), str(v["sha256"])) for k, v in files.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return BROKEN, f"{MANIFEST} is unreadable"
  problems = []
  for rel, (size, sha) in sorted(expected.items()):
    path = step_dir / rel
    if not path.is_file():
      problems.append(f"{rel} is missing")
    elif path.stat().st_size != size:
      problems.append(f"{rel} has {path.stat().st_size} bytes, {size} expected")
    elif _digest(path) != sha:
      problems.append(f"sha256 mismatch in {rel}")
  if not problems:
    return INTACT, ""
  more = f" and {len(problems) - 1} more file(s)" if len(problems) > 1 else ""
  return BROKEN, problems[0] + more


class Checkpointer:
  """Keep-latest-N + best-by-validation-PSNR checkpoints of (state, data iterator, meta)."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 3, async_save: bool = True,
               metric: str = VAL_METRIC, mode: str = "max"):
    if mode not in ("max", "min"):
      raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    self.directory = pathlib.Path(directory).absolute()
    self._async = async_save
    self._unsealed: list[int] = []  # saved steps whose manifest is not written yet
    policies = [
        ocp.checkpoint_managers.LatestN(n=max(1, int(keep))),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics[metric], reverse=mode == "min", n=1,
            keep_checkpoints_without_metrics=False),
    ]
    self._options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=lambda metrics: metrics[metric], best_mode=mode,
        enable_async_checkpointing=async_save, create=True)
    self._set_aside: dict[int, pathlib.Path] = {}  # damaged checkpoints moved when opened
    self._manager = self._open_manager()

  def _open_manager(self) -> ocp.CheckpointManager:
    """Orbax reads every step's `metrics` when it opens a directory, and one unreadable file
    stops it: such a checkpoint is moved aside (it could not be listed, let alone restored)."""
    try:
      return ocp.CheckpointManager(self.directory, options=self._options)
    except ValueError:  # json.JSONDecodeError included
      bad = []
      for step_dir in self._step_dirs():
        try:
          path = step_dir / "metrics" / "metrics"
          if path.exists():
            json.loads(path.read_text())
        except (OSError, ValueError):
          bad.append(step_dir)
      if not bad:
        raise
    for step_dir in bad:  # reported by `restore_latest`, in its warnings or its error
      self._set_aside[int(step_dir.name)] = self._move_aside(int(step_dir.name))
    _sync("medsr_checkpoint_open")
    return ocp.CheckpointManager(self.directory, options=self._options)

  def _step_dirs(self) -> list[pathlib.Path]:
    if not self.directory.is_dir():
      return []
    return sorted((p for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))

  def step_dir(self, step: int) -> pathlib.Path:
    return self.directory / str(int(step))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  # Saving.

  def save(self, step: int, state: Any, data_iterator: Any, meta: dict,
           metrics: dict | None = None) -> bool:
    """Saves asynchronously; `metrics` (with the ranking metric) ranks the checkpoint for 'best'."""
    self._seal()  # the previous save has finished: its manifest first
    self._check_room(state)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta))
    saved = self._manager.save(step, args=args, metrics=metrics, force=True)
    if saved:
      self._unsealed.append(int(step))
      if not self._async:
        self._seal()
    return saved

  def _check_room(self, state: Any) -> None:
    """A full disk found before a save starts, not inside orbax's asynchronous writes (whose
    background failures print tracebacks of their own): an ENOSPC OSError when the free space is
    below the state's size (plus metadata room)."""
    needed = int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)) * 1.05) + ROOM_SLACK
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise OSError(errno.ENOSPC, f"No space left on device ({_size(free)} free, a checkpoint "
                    f"needs about {_size(needed)})")

  def _seal(self) -> None:
    """Waits for orbax to finish, then writes the manifest of every step saved since."""
    if not self._unsealed:
      return
    self._manager.wait_until_finished()
    steps, self._unsealed = self._unsealed, []
    if jax.process_index() == 0:
      for step in steps:
        if self.step_dir(step).is_dir():  # not already removed by the keep policy
          write_manifest(self.step_dir(step))

  def wait(self) -> None:
    self._manager.wait_until_finished()
    self._seal()

  def close(self) -> None:
    self.wait()
    self._manager.close()

  # Restoring.

  def check(self, step: int) -> tuple[str, str]:
    """(INTACT | UNVERIFIED | BROKEN, reason) of checkpoint `step`; an unverified checkpoint
    counts as damaged when a newer one has a manifest (only the newest may lack one)."""
    status, reason = verify(self.step_dir(step))
    if status == UNVERIFIED and any((self.step_dir(s) / MANIFEST).exists()
                                    for s in self.all_steps() if s > step):
      return BROKEN, "it has no checksum manifest, though a newer checkpoint has one"
    return status, reason

  def _damaged(self, step: int, reason: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(f"checkpoint {step} in {self.directory} is damaged ({reason})")

  def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict]:
    """Restores `state` onto the shardings of `abstract_state` and the iterator in place; a
    checkpoint that fails verification raises `DamagedCheckpoint`."""
    status, reason = self.check(step)
    if status == BROKEN:
      raise self._damaged(step, reason)
    return self._restore(step, abstract_state, data_iterator)

  def _restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict]:
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
        meta=ocp.args.JsonRestore())
    restored = self._manager.restore(step, args=args)
    return restored["state"], restored["meta"]

  def restore_latest(self, abstract_state: Any, data_iterator: Any,
                     newest: int | None = None) -> Restored | None:
    """Restores the newest usable checkpoint, at or before step `newest` if given (None when
    there is none at all).

    Newer damaged ones are moved aside once an older one has restored, each with a warning line
    in `Restored.warnings`. Raises `RestoreFailed` when an intact checkpoint does not restore
    (another config, an older layout), or when none restores and none has a manifest (a
    directory from before manifests), and `NoUsableCheckpoint` when every one is damaged.
    """
    steps = sorted((s for s in self.all_steps() if newest is None or s <= newest), reverse=True)
    opened = sorted(self._set_aside.items(), reverse=True)  # (step, where it was moved)
    if not steps and not opened:
      return None
    damaged: list[tuple[int, str]] = []
    unreadable: list[tuple[int, Exception]] = []  # unverified ones that did not restore
    for step in steps:
      status, reason = self.check(step)
      if status == BROKEN:
        damaged.append((step, reason))
        continue
      try:
        state, meta = self._restore(step, abstract_state, data_iterator)
      except Exception as e:  # pylint: disable=broad-except
        if status == INTACT and isinstance(e, (ValueError, KeyError, TypeError)):
          raise RestoreFailed(step, e) from e
        if status == INTACT:
          raise
        damaged.append((step, f"unverified and does not restore: {first_line(e)}"))
        unreadable.append((step, e))
        continue
      if status == UNVERIFIED and jax.process_index() == 0:
        write_manifest(self.step_dir(step))  # it restored: later damage to it will show
      if damaged:
        _sync("medsr_checkpoint_restored")  # every process is done reading them
      warnings = [f"warning: checkpoint {bad} in {self.directory} is damaged (metrics/metrics is "
                  f"unreadable); moved to {moved}, resuming from {step}" for bad, moved in opened]
      for bad, why in damaged:
        moved = self._move_aside(bad)
        warnings.append(f"warning: checkpoint {bad} in {self.directory} is damaged ({why}); "
                        f"moved to {moved}, resuming from {step}")
      if damaged:
        _sync("medsr_checkpoint_set_aside")
        self._manager.reload()
      return Restored(step, state, meta, warnings)
    if (unreadable and len(unreadable) == len(damaged) and not opened and
        isinstance(unreadable[0][1], (ValueError, KeyError, TypeError))):
      # No checksum says any is damaged: a directory from before manifests, most likely
      # written by another config or an older layout.
      raise RestoreFailed(*unreadable[0])
    self._put_back(opened)  # none is usable: the directory is left as it was found
    listed = "; ".join(f"{s}: {why}" for s, why in sorted(
        damaged + [(s, "metrics/metrics is unreadable") for s, _ in opened], reverse=True))
    raise NoUsableCheckpoint(
        f"no usable checkpoint in {self.directory} ({listed}); nothing was changed: move the "
        f"directory aside to start afresh, or restore a copy")

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Only the train state of checkpoint `step` (no data iterator): another run's weights.
    Verified like `restore`; a damaged one raises `DamagedCheckpoint` (and stays where it is)."""
    status, reason = self.check(step)
    if status == BROKEN:
      raise self._damaged(step, reason)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    return self._manager.restore(step, args=args)["state"]

  def _put_back(self, moved: list[tuple[int, pathlib.Path]]) -> None:
    """Undoes `_move_aside` of the checkpoints moved when the directory was opened."""
    if moved:
      _sync("medsr_checkpoint_put_back")  # every process is done with the manager's listing
    if jax.process_index() == 0:
      for step, path in moved:
        os.replace(path, self.step_dir(step))
      damaged_dir = self.directory / DAMAGED
      if moved and damaged_dir.is_dir() and not any(damaged_dir.iterdir()):
        damaged_dir.rmdir()
    self._set_aside.clear()

  def _move_aside(self, step: int) -> pathlib.Path:
    """Moves checkpoint `step` to `damaged/STEP-TIME` (process 0; others wait at a barrier)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = self.directory / DAMAGED / f"{step}-{stamp}"
    n = 1
    while target.exists():
      n += 1
      target = self.directory / DAMAGED / f"{step}-{stamp}-{n}"
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      os.replace(self.step_dir(step), target)
    return target


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete pytree, for `restore`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
