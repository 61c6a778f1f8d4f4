"""Checkpoint integrity: a damaged latest checkpoint is detected, moved aside and resumed past.

One tiny run (6 steps, checkpoints at 3 and 6) is copied for every case; each case damages the
copy the way the fault campaign of issue 14 did and resumes it with the same command.
"""

import pathlib
import re
import shutil
import types

import numpy as np
import pytest

from medsr_jax import checkpoint as checkpoint_lib
from medsr_jax import main as main_lib
from medsr_jax.errors import InputError
from tests import tiny_config as tiny_config_lib

STEPS = 6  # checkpoints at 3 and 6


def _config(steps=STEPS):
  return tiny_config_lib.get_config(f"steps={steps},mesh=1x1")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A straight run: its checkpoints to damage and its exported params to compare with."""
  workdir = tmp_path_factory.mktemp("straight")
  main_lib.run(_config(), str(workdir))
  return workdir


def _copy(base, tmp_path) -> pathlib.Path:
  workdir = tmp_path / "run"
  shutil.copytree(base, workdir)
  return workdir


def _params(workdir):
  with np.load(workdir / "export" / "params.npz") as f:
    return {k: f[k] for k in f.files}


def _assert_same_params(workdir, base):
  got, want = _params(workdir), _params(base)
  assert sorted(got) == sorted(want)
  for k in want:
    assert got[k].tobytes() == want[k].tobytes(), k


def _data_file(step_dir):
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  return max(files, key=lambda p: p.stat().st_size)


def _flip(step_dir):
  path = _data_file(step_dir)
  data = bytearray(path.read_bytes())
  for i in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _truncate(path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _unverified_and_unreadable(step_dir):
  """Killed before the manifest write, and the iterator JSON lost too: restoring fails."""
  (step_dir / checkpoint_lib.MANIFEST).unlink()
  (step_dir / "data" / "process_0-of-1.json").write_text("")


# kind: (damage to checkpoint 6, what the warning says, resume to the end and compare params).
# The other resumes stop at step 3 (no training after the fallback) to keep the tests short.
DAMAGE = {
    "flipped_bytes": (_flip, "sha256 mismatch in state/", True),
    "truncated_data": (lambda d: _truncate(_data_file(d)), "bytes,", False),
    "no_metadata": (lambda d: (d / "state" / "_METADATA").unlink(), "state/_METADATA is missing",
                    False),
    "empty_iterator": (lambda d: (d / "data" / "process_0-of-1.json").write_text(""),
                       "data/process_0-of-1.json has 0 bytes", False),
    "truncated_meta": (lambda d: _truncate(d / "meta" / "metadata"), "meta/metadata has", False),
    "unverified_unreadable": (_unverified_and_unreadable, "unverified and does not restore",
                              False),
    # Orbax reads every step's metrics when it opens the directory (one bad file used to stop
    # it): moved aside then, and reported with the resume.
    "unreadable_metrics": (lambda d: (d / "metrics" / "metrics").write_text('{"val_psnr": 1'),
                           "metrics/metrics is unreadable", False),
}


def _warnings(err):
  return [l for l in err.splitlines() if l.startswith("warning:")]


def _steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_latest_falls_back(base, tmp_path, capsys, kind):
  damage, reason, to_the_end = DAMAGE[kind]
  workdir = _copy(base, tmp_path)
  ckpts = workdir / "checkpoints"
  damage(ckpts / "6")
  capsys.readouterr()
  main_lib.run(_config(STEPS if to_the_end else 3), str(workdir))
  out, err = capsys.readouterr()
  [line] = _warnings(err)
  pattern = (rf"warning: checkpoint 6 in {re.escape(str(ckpts))} is damaged \((.*)\); "
             rf"moved to {re.escape(str(ckpts / 'damaged'))}/6-[0-9-]+, resuming from 3$")
  match = re.match(pattern, line)
  assert match, line
  assert reason in match.group(1), line
  assert "Traceback" not in err
  assert "resumed from checkpoint at step 3" in out
  [moved] = (ckpts / "damaged").iterdir()
  assert (moved / "state").is_dir()                         # moved whole, not deleted
  if to_the_end:
    assert _steps(workdir) == [3, 6]                        # step 6 saved again, and intact
    assert checkpoint_lib.verify(ckpts / "6")[0] == checkpoint_lib.INTACT
    _assert_same_params(workdir, base)                      # bitwise a straight run's
  else:
    assert _steps(workdir) == [3]


def test_every_checkpoint_damaged_is_one_error_and_changes_nothing(base, tmp_path, capsys):
  workdir = _copy(base, tmp_path)
  ckpts = workdir / "checkpoints"
  _flip(ckpts / "6")
  (ckpts / "3" / "data" / "process_0-of-1.json").write_text("")
  before = {f: (workdir / f).read_bytes() for f in ("config.json", "metrics.jsonl")}
  with pytest.raises(InputError) as e:
    main_lib.run(_config(), str(workdir))
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"no usable checkpoint in {ckpts}")
  assert "6: sha256 mismatch" in msg and "3: data/process_0-of-1.json has 0 bytes" in msg
  assert _steps(workdir) == [3, 6] and not (ckpts / "damaged").exists()  # left where they are
  assert {f: (workdir / f).read_bytes() for f in before} == before
  assert not _warnings(capsys.readouterr().err)


def test_none_usable_puts_back_what_opening_moved(base, tmp_path, capsys):
  """Checkpoint 6's metrics stop orbax from opening the directory, so it is moved aside at once;
  when 3 turns out damaged too, 6 goes back: the one error line, and nothing changed."""
  workdir = _copy(base, tmp_path)
  ckpts = workdir / "checkpoints"
  (ckpts / "6" / "metrics" / "metrics").write_text('{"val_psnr": 1')
  (ckpts / "3" / "data" / "process_0-of-1.json").write_text("")
  before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  with pytest.raises(InputError) as e:
    main_lib.run(_config(), str(workdir))
  msg = str(e.value)
  assert "\n" not in msg and "6: metrics/metrics is unreadable" in msg, msg
  assert msg.endswith("nothing was changed: move the directory aside to start afresh, or "
                      "restore a copy"), msg
  assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before
  assert not _warnings(capsys.readouterr().err)


def test_undamaged_resume_has_no_warning(base, tmp_path, capsys):
  workdir = _copy(base, tmp_path)
  capsys.readouterr()
  main_lib.run(_config(), str(workdir))
  out, err = capsys.readouterr()
  assert not _warnings(err)
  assert "resumed from checkpoint at step 6" in out
  assert not (workdir / "checkpoints" / "damaged").exists()
  _assert_same_params(workdir, base)


def test_newest_without_manifest_is_used_unverified(base, tmp_path, capsys):
  """Killed between orbax's rename and the manifest write: the newest is still resumed from."""
  workdir = _copy(base, tmp_path)
  (workdir / "checkpoints" / "6" / checkpoint_lib.MANIFEST).unlink()
  capsys.readouterr()
  main_lib.run(_config(), str(workdir))
  out, err = capsys.readouterr()
  assert not _warnings(err) and "resumed from checkpoint at step 6" in out
  assert checkpoint_lib.verify(workdir / "checkpoints" / "6")[0] == checkpoint_lib.INTACT


def test_only_the_newest_may_lack_a_manifest(base, tmp_path):
  workdir = _copy(base, tmp_path)
  ckpts = workdir / "checkpoints"
  (ckpts / "3" / checkpoint_lib.MANIFEST).unlink()
  ckpt = checkpoint_lib.Checkpointer(ckpts)
  try:
    status, reason = ckpt.check(3)
    assert status == checkpoint_lib.BROKEN and "no checksum manifest" in reason
    (ckpts / "6" / checkpoint_lib.MANIFEST).unlink()        # a run from before manifests
    assert ckpt.check(3)[0] == ckpt.check(6)[0] == checkpoint_lib.UNVERIFIED
  finally:
    ckpt.close()


def test_unreadable_orbax_metrics_do_not_stop_the_manager(base, tmp_path, capsys):
  """Orbax reads every step's metrics when it opens the directory; one bad file used to stop it.
  Opening moves it aside silently: the resume reports it (test_damaged_latest_falls_back)."""
  workdir = _copy(base, tmp_path)
  ckpts = workdir / "checkpoints"
  (ckpts / "6" / "metrics" / "metrics").write_text('{"val_psnr": 1')
  capsys.readouterr()
  ckpt = checkpoint_lib.Checkpointer(ckpts)
  try:
    assert ckpt.all_steps() == [3]
  finally:
    ckpt.close()
  assert not capsys.readouterr().err
  assert [p.name.split("-")[0] for p in (ckpts / "damaged").iterdir()] == ["6"]


def test_restore_state_verifies(base, tmp_path):
  workdir = _copy(base, tmp_path)
  _flip(workdir / "checkpoints" / "6")
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", async_save=False)
  try:
    with pytest.raises(checkpoint_lib.DamagedCheckpoint, match="checkpoint 6 in .* is damaged "
                       r"\(sha256 mismatch in state/"):
      ckpt.restore_state(6, None)
  finally:
    ckpt.close()
  assert _steps(workdir) == [3, 6]                          # another run's: left as it is


@pytest.mark.parametrize("with_manifest", [True, False])
def test_another_layout_is_still_a_mismatch_not_damage(tmp_path, with_manifest):
  """Intact files that do not restore onto this state: the mismatch error, nothing moved. Without
  a manifest (a run from before manifests) the same."""
  import grain  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from medsr_jax.trainers import loop  # pylint: disable=import-outside-toplevel

  def iterator():
    return iter(grain.MapDataset.range(3).to_iter_dataset())

  ckpts = tmp_path / "checkpoints"
  ckpt = checkpoint_lib.Checkpointer(ckpts, async_save=False)
  ckpt.save(2, {"w": jnp.zeros(3), "step": jnp.zeros((), jnp.int32)}, iterator(), {})
  if not with_manifest:
    (ckpts / "2" / checkpoint_lib.MANIFEST).unlink()
  trainer = types.SimpleNamespace(state={"v": {"w": jnp.zeros(3)}}, train_iter=iterator())
  try:
    with pytest.raises(InputError, match="does not match this run's train state") as e:
      loop._restore(ckpt, ckpt.latest_step(), trainer)  # pylint: disable=protected-access
  finally:
    ckpt.close()
  assert "\n" not in str(e.value) and "init_from" in str(e.value)
  assert _steps(tmp_path) == [2] and not (ckpts / "damaged").exists()
