"""Reliability (issue 14): a full disk stops a run with one line, the logs of a run killed any
number of times hold one record per step, a split emptied by --skip_bad is an error, and
data_prep's workers die with it.

  .venv/bin/python -m pytest -q tests/test_true_record.py

Kills are simulated in process: `_Killed` (a BaseException, so nothing on the way catches it, as
nothing catches SIGKILL) raised from inside the run; only what reached the files before it counts.
The worker test kills a real process with SIGKILL.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2

from data_prep import build
from medsr_jax import checkpoint as checkpoint_lib
from medsr_jax import errors
from medsr_jax import export as export_lib
from medsr_jax import main as main_lib
from medsr_jax.data import manifest
from medsr_jax.io import text_files
from medsr_jax.io import tfrecord
from medsr_jax.trainers import sr
from tests import dataset_fixtures as fx
from tests import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Killed(BaseException):
  """The process died here (nothing after this point runs, no cleanup)."""


def _config(steps):
  return tiny_config.get_config(f"steps={steps},mesh=1x1")


def _rows(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _events(workdir):
  """[(tag, step)] of every summary value in every event file on disk (no Python buffers)."""
  out = []
  folder = workdir / "tensorboard"
  for name in sorted(os.listdir(folder)):
    for data in tfrecord.read_records(folder / name):
      event = event_pb2.Event.FromString(data)
      out += [(v.tag, event.step) for v in event.summary.value]
  return out


def _once_per_step(workdir, steps):
  """Every train step, validation and test record exactly once, in JSONL and TensorBoard."""
  rows = _rows(workdir)
  train = [r["step"] for r in rows if "loss" in r]
  assert train == list(range(1, steps + 1)), train
  assert [r["step"] for r in rows if "val_psnr" in r] == [3, steps]
  test = [r["step"] for r in rows if "test_model_psnr" in r]
  assert test == [steps], test
  counts = collections.Counter(_events(workdir))
  assert counts and max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
  assert {s for t, s in counts if t == "loss"} == set(range(1, steps + 1))
  assert {s for t, s in counts if t == "test_model_psnr"} == {steps}


def _run_cli(config, workdir, capsys, ends_at_once=False):
  """`main`'s error handling in-process: (exit code, stderr lines). A full disk ends the real
  process at once (`errors.end_at_once`, no interpreter shutdown); here it raises SystemExit."""
  capsys.readouterr()
  ended = []
  with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as e:
    mp.setattr(errors, "end_at_once", lambda code: ended.append(code) or sys.exit(code))
    errors.cli_main(lambda: main_lib.run(config, str(workdir)))
  assert ended == ([e.value.code] if ends_at_once else [])
  err = capsys.readouterr().err
  # stderr holds the progress lines ('step 4/9  loss ...') and nothing else but the error.
  return e.value.code, [l for l in err.splitlines() if l.strip() and not l.startswith("step ")]


def test_logs_hold_one_record_per_step_across_kills(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  save = checkpoint_lib.Checkpointer.save

  def killed_at_first_checkpoint(self, step, *args, **kwargs):
    # Everything logged so far is on disk (the TensorBoard file flushed at each log step).
    assert {s for t, s in _events(workdir) if t == "loss"} == {1, 2, 3}
    raise _Killed

  monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", killed_at_first_checkpoint)
  with pytest.raises(_Killed):
    main_lib.run(_config(6), str(workdir))  # killed before its first checkpoint
  assert not (workdir / "checkpoints" / "3").exists()
  monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", save)

  def killed_during_export(self, directory, step):
    raise _Killed

  monkeypatch.setattr(sr.SRTrainer, "export", killed_during_export)
  with pytest.raises(_Killed):
    main_lib.run(_config(6), str(workdir))  # starts afresh, killed in the final evaluation
  assert [r["step"] for r in _rows(workdir) if "loss" in r] == [1, 2, 3, 4, 5, 6]
  monkeypatch.undo()

  main_lib.run(_config(6), str(workdir))  # resumes at 6: the final evaluation again
  _once_per_step(workdir, 6)
  assert (workdir / "export" / "config.json").is_file()


def test_full_disk_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "run"

  def no_room(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  # The manifest of checkpoint 3 is written when its asynchronous save is done: at the next save.
  monkeypatch.setattr(checkpoint_lib, "write_manifest", no_room)
  code, lines = _run_cli(_config(6), workdir, capsys, ends_at_once=True)
  assert code == 2 and len(lines) == 1, lines
  assert lines[0] == (f"error: could not write checkpoint 3 or 6 to {workdir / 'checkpoints'}: "
                      "[Errno 28] No space left on device"), lines
  assert max(r["step"] for r in _rows(workdir)) == 6  # stopped at once: no final evaluation
  assert not (workdir / "results.md").exists()
  monkeypatch.undo()

  # A full disk while results.md is written: no 0-byte (or partial) results.md, one line.
  real_fdopen = os.fdopen

  def fdopen(fd, *args, **kwargs):
    f = real_fdopen(fd, *args, **kwargs)
    if ".results.md." in os.readlink(f"/proc/self/fd/{fd}"):
      def write(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      f.write = write
    return f

  monkeypatch.setattr(text_files.os, "fdopen", fdopen)
  code, lines = _run_cli(_config(6), workdir, capsys, ends_at_once=True)
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: results: cannot write ") and "[Errno 28]" in lines[0], lines
  assert not (workdir / "results.md").exists()
  assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]
  monkeypatch.undo()

  # A full disk while the export is written: one line, no half export.
  monkeypatch.setattr(export_lib, "_write_params", no_room)
  code, lines = _run_cli(_config(6), workdir, capsys, ends_at_once=True)
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith(f"error: could not write the export to {workdir}: [Errno 28]"), lines
  assert (workdir / "results.md").stat().st_size > 0
  assert not (workdir / "export" / "config.json").exists()


def test_appends_and_config_are_atomic(tmp_path, monkeypatch):
  """results.md appends (notes, Dice tables, the GAN's best checkpoint) and config.json go
  through one atomic helper: a full disk leaves the old text whole, never half an append."""
  results = tmp_path / "results.md"
  text_files.append_text_atomic(results, "| table |\n", what="results")  # created if missing
  text_files.append_text_atomic(results, "\nNote: a\n", what="results")
  assert results.read_text() == "| table |\n\nNote: a\n"
  real_fdopen = os.fdopen

  def full(fd, *args, **kwargs):
    f = real_fdopen(fd, *args, **kwargs)
    real_write = f.write

    def write(text):
      real_write(text[:3])  # part of it reached the file, then the disk was full
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    f.write = write
    return f

  monkeypatch.setattr(text_files.os, "fdopen", full)
  with pytest.raises(errors.InputError, match=r"^results: cannot write .*\[Errno 28\]"):
    text_files.append_text_atomic(results, "\nNote: b\n", what="results")
  assert results.read_text() == "| table |\n\nNote: a\n"
  config = _config(6)
  with pytest.raises(errors.InputError, match=r"^config: cannot write .*config.json"):
    main_lib.write_config(config, tmp_path)
  assert sorted(os.listdir(tmp_path)) == ["results.md"]  # no config.json, no temporary file
  monkeypatch.undo()
  main_lib.write_config(config, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["name"] == config.model.name


def _vol(seed):
  t1, _ = fx.brain_block((32, 36), [70 + seed + 3 * k for k in range(4)], step=4)
  return t1.astype(np.float64) + seed


def _build_with_a_bad_subject(tmp_path, capsys, bad_subject, content):
  """data_prep --skip_bad over sub01 (train), sub02 (val), sub03 (test) with `bad_subject`
  spoilt: (the build's arguments, its out dir, its one error line), the build having failed."""
  src, split = tmp_path / "src", tmp_path / "split.json"
  for i in (1, 2, 3):
    fx.write_nifti(str(src / f"sub0{i}.nii.gz"), _vol(i))
  (src / f"{bad_subject}.nii.gz").write_bytes(content)
  split.write_text(json.dumps({"train": ["sub01"], "val": ["sub02"], "test": ["sub03"]}))
  base = ["--dataset=folder", f"--src={src}", "--workers=1", "--quiet", f"--split=file:{split}",
          "--skip_bad"]
  out = tmp_path / "out"
  with pytest.raises(SystemExit) as e:
    errors.cli_main(lambda: build.main(base + [f"--out={out}"]))
  err = capsys.readouterr().err
  assert e.value.code == 2
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, err
  return base, out, lines[0]


def test_skip_bad_that_empties_a_split_is_an_error(tmp_path, capsys):
  base, out, line = _build_with_a_bad_subject(  # the only test subject
      tmp_path, capsys, "sub03", b"not a NIfTI file" * 20)
  assert "left the test split without slices" in line, line
  assert "sub03" in line and "--allow_empty_split" in line
  assert not manifest.read_manifest(str(out)).complete  # training refuses it
  # Asked for: the same build completes.
  assert build.main(base + [f"--out={out}", "--allow_empty_split"]) == 0
  m = manifest.read_manifest(str(out))
  assert m.complete and m.splits["test"].num_records == 0 and len(m.skipped) == 1


def test_skip_bad_that_empties_the_train_split_is_an_error(tmp_path, capsys):
  # The same rule for train (training would refuse the build at its start; the data can still
  # serve evaluation, with --allow_empty_split).
  base, out, line = _build_with_a_bad_subject(  # the only train subject
      tmp_path, capsys, "sub01", b"\x1f\x8b truncated")
  assert "left the train split without slices" in line, line
  assert "sub01" in line and "--allow_empty_split" in line
  m = manifest.read_manifest(str(out))
  assert not m.complete and m.splits["test"].num_records > 0  # every good shard is whole
  assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary file left
  assert build.main(base + [f"--out={out}", "--allow_empty_split"]) == 0
  m = manifest.read_manifest(str(out))
  assert m.complete and m.splits["train"].num_records == 0 and len(m.skipped) == 1


_POOL_SCRIPT = """
import sys, time
from data_prep import writer
for _ in writer.map_ordered([60] * 4, time.sleep, 2):
  pass
"""


def _children(pid):
  kids = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid:
        kids.append(int(entry))
  return kids


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def test_workers_die_with_a_killed_build(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT], cwd=REPO,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 20
    kids = []
    while len(kids) < 3 and time.monotonic() < deadline:  # two workers + the resource tracker
      time.sleep(0.2)
      kids = _children(proc.pid)
    assert len(kids) >= 3, kids
    time.sleep(1.0)  # the workers are in their tasks
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 8
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
      time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "orphaned worker processes"
  finally:
    for k in _children(proc.pid) if proc.poll() is None else []:
      os.kill(k, signal.SIGKILL)
    if proc.poll() is None:
      proc.kill()


def test_a_save_without_room_fails_before_orbax_writes(tmp_path, monkeypatch):
  """The free space is checked before a save starts (orbax's asynchronous writes would fail in
  background threads that print tracebacks of their own): ENOSPC, nothing written."""
  ckpt = checkpoint_lib.Checkpointer(tmp_path / "checkpoints", async_save=False)
  try:
    state = {"w": np.zeros(100_000, np.float32)}  # 400 KB
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint_lib.shutil, "disk_usage", lambda _: usage(1 << 30, 0, 300_000))
    with pytest.raises(OSError) as e:
      ckpt.save(1, state, None, {"step": 1})
    assert e.value.errno == errno.ENOSPC
    assert "293 KiB free, a checkpoint needs about 474 KiB" in str(e.value), str(e.value)
    assert ckpt.all_steps() == [] and not list((tmp_path / "checkpoints").glob("1*"))
  finally:
    ckpt.close()
