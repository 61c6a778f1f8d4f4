"""Metric writers for the trainer: TensorBoard event files (no TensorFlow), JSONL, and a fan-out.

- `TensorBoardWriter(logdir)` writes `events.out.tfevents.<time>.<host>.<pid>.<n>`, a TFRecord file
  (framing from `medsr_jax.io.tfrecord`) of `Event` protos from the installed `tensorboard` package:
  first the `file_version: "brain.Event:2"` event, then one event per `write_scalars` call (simple
  values) and per `write_images` call (PNG-encoded `Summary.Image`). `tensorboard --logdir WORKDIR`
  shows them; TensorFlow is never imported (environment notes section 1: clu's writers need TF).
- `JsonlWriter(path)` appends one JSON object per line: {"step": .., "time": .., name: value, ...};
  a resumed run continues the same file. Floats keep 7 significant digits; NaN/inf become null.
- `MultiWriter(writers)` fans every call out; `create_writers(workdir)` builds the trainer's
  JSONL + TensorBoard pair on the main process and a writer that does nothing elsewhere.
- `rewind(workdir, step)`: before a resumed run writes anything, removes what the killed attempt
  logged that the resumed run logs again (every record past `step`, and the final evaluation's
  records at `step`), from metrics.jsonl and from every TensorBoard event file, so both hold one
  record per step across any number of kills (a run killed before its first checkpoint rewinds
  to step 0: nothing of it is kept). Final-evaluation records are those whose every name starts
  with `FINAL_PREFIX` ('test': `test_model_psnr`, `test/panel_003`), as every trainer names them.

A failed write (a full disk) is an `InputError` naming the file. The trainer flushes the
TensorBoard file at every log step, so a killed run keeps everything it logged. TensorBoard
readers show one value per step anyway (the latest file's); the rewind is what makes the files
themselves a true record, for tools that read them directly. A TensorBoard instance that is
watching the folder while a run is resumed may need a reload to drop the rewritten steps.

Usage:
  writer = create_writers(workdir, is_main_process=jax.process_index() == 0)
  writer.write_scalars(step, {"train/loss": 0.04, "train/lr": 1e-4})
  writer.write_images(step, {"val/panel": comparison_panel(...)})
  writer.close()
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import socket
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2

from medsr_jax.errors import InputError
from medsr_jax.io import tfrecord
from medsr_jax.logging import panels

FILE_VERSION = "brain.Event:2"
FINAL_PREFIX = "test"  # names of the final evaluation's scalars and images
_COLORSPACE = {2: 1, 3: 3, 4: 4}  # Summary.Image colorspace: 1 grey, 3 RGB, 4 RGBA
_file_counter = itertools.count()


def _write_failed(path: str, e: OSError) -> InputError:
  return InputError(f"could not write {path}: {' '.join(str(e).split())}")


def _scalar(name: str, value: Any) -> float:
  try:
    arr = np.asarray(value)
    if arr.size != 1:
      raise TypeError
    return float(arr.reshape(()))
  except (TypeError, ValueError):
    raise ValueError(f"scalar {name!r} must be a single number, got {value!r}") from None


class TensorBoardWriter:
  """Writes scalars and images to one new TensorBoard event file in `logdir`."""

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = os.fspath(logdir)
    try:
      os.makedirs(self.logdir, exist_ok=True)
    except OSError as e:
      raise InputError(f"cannot create TensorBoard folder {self.logdir}: {e.strerror}") from e
    now = time.time()
    name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_file_counter)}")
    self.path = os.path.join(self.logdir, name)
    self._writer = tfrecord.TFRecordWriter(self.path)
    self._write_event(event_pb2.Event(wall_time=now, step=0, file_version=FILE_VERSION))
    self.flush()

  def _write_event(self, event: event_pb2.Event) -> None:
    try:
      self._writer.write(event.SerializeToString())
    except OSError as e:
      raise _write_failed(self.path, e) from e

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """One event at `step` holding every scalar as a simple_value."""
    if not scalars:
      return
    values = [summary_pb2.Summary.Value(tag=str(k), simple_value=_scalar(k, v))
              for k, v in scalars.items()]
    self._write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                      summary=summary_pb2.Summary(value=values)))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """One event at `step` with each image (uint8 or [0, 1] float; HxW, HxWx1/3/4) as a PNG."""
    if not images:
      return
    values = []
    for tag, image in images.items():
      image = panels.to_uint8(np.asarray(image))
      if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
      channels = 2 if image.ndim == 2 else image.shape[-1]
      if image.ndim not in (2, 3) or channels not in _COLORSPACE:
        raise ValueError(f"image {tag!r} must be HxW, HxWx1, HxWx3 or HxWx4, got {image.shape}")
      summary_image = summary_pb2.Summary.Image(
          height=image.shape[0], width=image.shape[1], colorspace=_COLORSPACE[channels],
          encoded_image_string=panels.encode_png(image))
      values.append(summary_pb2.Summary.Value(tag=str(tag), image=summary_image))
    self._write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                      summary=summary_pb2.Summary(value=values)))

  def flush(self) -> None:
    try:
      self._writer.flush()
    except OSError as e:
      raise _write_failed(self.path, e) from e

  def close(self) -> None:
    try:
      self._writer.close()
    except OSError as e:
      raise _write_failed(self.path, e) from e


def _json_value(name: str, value: Any) -> Any:
  """JSON-safe value: ints stay ints, floats keep 7 significant digits, non-finite -> None."""
  if isinstance(value, (str, bool)) or value is None:
    return value
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  arr = np.asarray(value)
  if arr.size == 1 and np.issubdtype(arr.dtype, np.integer):
    return int(arr.reshape(()))
  x = _scalar(name, value)
  if not math.isfinite(x):
    return None
  return float(f"{x:.7g}")


class JsonlWriter:
  """Appends one JSON line per `write_scalars` call to `path` (images are ignored)."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    try:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      needs_newline = False
      if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
        # A run killed mid-line leaves no newline at the end: start on a fresh line.
        with open(self.path, "rb") as f:
          f.seek(-1, os.SEEK_END)
          needs_newline = f.read(1) != b"\n"
      self._file = open(self.path, "a", encoding="utf-8")
      if needs_newline:
        self._file.write("\n")
    except OSError as e:
      raise InputError(f"cannot open metrics file {self.path}: {e.strerror}") from e

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {"step": int(step), "time": round(time.time(), 3)}
    for k, v in scalars.items():
      if k in ("step", "time"):
        raise ValueError(f"scalar name {k!r} is reserved in the JSONL metrics file")
      record[str(k)] = _json_value(k, v)
    try:
      self._file.write(json.dumps(record, allow_nan=False) + "\n")
      self._file.flush()
    except OSError as e:
      raise _write_failed(self.path, e) from e

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    del step, images  # JSONL holds scalars only.

  def flush(self) -> None:
    if not self._file.closed:
      try:
        self._file.flush()
      except OSError as e:
        raise _write_failed(self.path, e) from e

  def close(self) -> None:
    try:
      self._file.close()
    except OSError as e:
      raise _write_failed(self.path, e) from e


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a JSONL metrics file (blank lines skipped)."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def is_final(names) -> bool:
  """Whether a record with these metric names is the final evaluation's (see FINAL_PREFIX)."""
  names = [str(n) for n in names if n not in ("step", "time")]
  return bool(names) and all(n.startswith(FINAL_PREFIX) for n in names)


def _replace_atomic(path: str, write) -> None:
  """Calls `write(f)` on a temporary binary file beside `path`, then renames it over `path`."""
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except OSError as e:
    raise _write_failed(path, e) from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def drop_records_after(path: str | os.PathLike, step: int) -> int:
  """Removes the records that a run resumed at `step` logs again: those of later steps, and the
  final evaluation's at `step` (it runs again). A cut-off last line is dropped too.

  A run that dies between two checkpoints (or before the first one: `step` 0) has logged steps
  that the resumed run will log again; dropping them keeps one record per step. The file is
  replaced atomically. Returns the number of records removed.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        record_step = int(record.get("step", 0))
      except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        dropped += 1
        continue
      if record_step < step or (record_step == step and not is_final(record)):
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        dropped += 1
  if dropped:
    _replace_atomic(path, lambda f: f.write("".join(kept).encode("utf-8")))
  return dropped


def _event_names(event: event_pb2.Event) -> list[str]:
  return [v.tag for v in event.summary.value]


def drop_events_after(logdir: str | os.PathLike, step: int) -> int:
  """`drop_records_after` for the TensorBoard event files in `logdir`: events of later steps
  and final-evaluation events at `step` are removed (and a record cut off by a kill). A file left
  with no summary is deleted. Files are replaced atomically. Returns the events removed."""
  logdir = os.fspath(logdir)
  if not os.path.isdir(logdir):
    return 0
  total = 0
  for name in sorted(os.listdir(logdir)):
    path = os.path.join(logdir, name)
    if not name.startswith("events.out.tfevents.") or not os.path.isfile(path):
      continue
    kept, dropped = [], 0
    try:
      for data in tfrecord.read_records(path):
        event = event_pb2.Event.FromString(data)
        if event.HasField("summary") and (
            event.step > step or (event.step == step and is_final(_event_names(event)))):
          dropped += 1
        else:
          kept.append(data)
    except tfrecord.CorruptRecordError:
      dropped += 1  # the record a kill cut off (or damage): everything before it is kept
    if not dropped:
      continue
    total += dropped
    if not any(event_pb2.Event.FromString(d).HasField("summary") for d in kept):
      os.remove(path)
    else:
      _replace_atomic(path, lambda f, kept=kept: f.writelines(tfrecord.frame_record(d)
                                                               for d in kept))
  return total


def rewind(workdir: str | os.PathLike, step: int) -> int:
  """Before a run resumed at `step` (0: no checkpoint) logs anything: drops what it will log
  again from workdir/metrics.jsonl and workdir/tensorboard/. Returns the records removed."""
  workdir = os.fspath(workdir)
  return (drop_records_after(os.path.join(workdir, "metrics.jsonl"), step)
          + drop_events_after(os.path.join(workdir, "tensorboard"), step))


class MultiWriter:
  """Sends every call to each writer in `writers`; with none it does nothing."""

  def __init__(self, writers: Sequence[Any] = ()):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for w in self.writers:
      w.write_images(step, images)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()

  def __enter__(self) -> "MultiWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def create_writers(workdir: str | os.PathLike, *, is_main_process: bool = True) -> MultiWriter:
  """JSONL (workdir/metrics.jsonl) + TensorBoard (workdir/tensorboard/) on the main process.

  Other processes of a multi-host run get an empty MultiWriter, so callers need no `if`.
  """
  if not is_main_process:
    return MultiWriter([])
  workdir = os.fspath(workdir)
  return MultiWriter([
      JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
      TensorBoardWriter(os.path.join(workdir, "tensorboard")),
  ])
