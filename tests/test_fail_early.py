"""A bad config, machine or workdir stops a run with one line before anything is written.

  .venv/bin/python -m pytest -q tests/test_fail_early.py

Every case here but one is refused by `config_checks.check_run` (called first by `main._train`),
so nothing is trained or compiled; the one tiny run (2 steps) gives the resume cases a real workdir.
"""

import collections
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from medsr_jax import config_checks
from medsr_jax import config_lib
from medsr_jax import export_cli
from medsr_jax import main as main_lib
from medsr_jax.errors import InputError
from medsr_jax.trainers import prerequisites
from tests import tiny_config
from tests import tiny_gan_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "--config=tests/tiny_config.py:steps=2,mesh=1x1"


def _config():
  return tiny_config.get_config("steps=2,mesh=1x1")


def _refused(config, workdir, *fragments):
  """`main.run` raises one InputError line holding every fragment; the workdir is not created."""
  with pytest.raises(InputError) as e:
    main_lib.run(config, str(workdir))
  msg = str(e.value)
  assert "\n" not in msg
  for fragment in fragments:
    assert fragment in msg, msg
  assert not workdir.exists()
  return msg


def _cli(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


def _one_error_line(proc, *fragments):
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


@pytest.mark.parametrize("field, value, fragment", [
    ("steps", -5, "train.stages[0].steps must be a positive integer, got -5"),
    ("steps", 0, "train.stages[0].steps must be a positive integer"),
    ("learning_rate", 0.0, "train.stages[0].learning_rate must be a finite number > 0"),
    ("learning_rate", math.nan, "train.stages[0].learning_rate must be a finite number > 0"),
    ("milestones", (-1,), "train.stages[0].milestones must be integers >= 0"),
    ("gamma", 0.0, "train.stages[0].gamma must be a finite number > 0"),
    ("warmup_steps", -1, "train.stages[0].warmup_steps must be an integer >= 0"),
])
def test_bad_stage(tmp_path, field, value, fragment):
  config = _config()
  config.train.stages[0][field] = value
  _refused(config, tmp_path / "run", fragment)


def test_no_stages(tmp_path):
  config = _config()
  config.train.stages = []
  _refused(config, tmp_path / "run", "train.stages is empty")


@pytest.mark.parametrize("field, value", [("log_every", 0), ("eval_every", 0),
                                          ("checkpoint_every", -1), ("keep_checkpoints", 0),
                                          ("max_steps", 0)])
def test_bad_interval(tmp_path, field, value):
  config = _config()
  config.train[field] = value
  _refused(config, tmp_path / "run", f"train.{field} must be ", f"got {value}")


def test_every_problem_on_one_line(tmp_path):
  config = _config()
  config.train.eval_every = 0
  config.train.stages[1].steps = -1
  config.model.name = "nope"
  _refused(config, tmp_path / "run", "train.stages[1].steps", "train.eval_every",
           "unknown model.name 'nope'; available: ")


def test_unknown_model_option_and_trainer(tmp_path):
  config = _config()
  config.model.kwargs.embed_dimm = 30
  config.trainer = "nonexistent"
  _refused(config, tmp_path / "run", "model.kwargs.embed_dimm is not an option of 'rdst' "
           "(did you mean embed_dim?)", "unknown trainer 'nonexistent'")


def test_unknown_discriminator_option(tmp_path):
  config = tiny_gan_config.get_config("steps=2,mesh=1x1")
  config.gan.discriminator.kwargs.widthz = 3
  _refused(config, tmp_path / "run", "gan.discriminator.kwargs.widthz is not an option")


@pytest.mark.parametrize("shape, batch, fragment", [
    ((16, 1), 8, "mesh.shape (16, 1) needs 16 devices but 8 are present"),
    ((-1, 3), 8, "mesh.shape (-1, 3): 8 device(s) are not a multiple of 3"),
    ((-1, 1), 12, "data.global_batch_size 12 is not divisible by the 8 devices of mesh (8, 1)"),
    ((2, 2), 6, "data.global_batch_size 6 is not divisible by the 4 devices of mesh (2, 2)"),
])
def test_mesh_and_batch_fit_the_devices(tmp_path, shape, batch, fragment):
  import jax  # pylint: disable=import-outside-toplevel
  if jax.device_count() != 8:
    pytest.skip("needs the 8 emulated devices of conftest.py")
  config = _config()
  config.mesh.shape = shape
  config.data.global_batch_size = batch
  _refused(config, tmp_path / "run", fragment)


def test_workdir_under_a_file(tmp_path):
  (tmp_path / "file").write_text("x")
  _refused(_config(), tmp_path / "file" / "run", f"{tmp_path / 'file'} is not a directory")


def test_read_only_workdir(tmp_path):
  if os.geteuid() == 0:             # root writes anywhere chmod allows nothing: a read-only mount
    workdir = pathlib.Path("/sys/medsr_fail_early/run")
    if config_checks._workdir_problems(workdir) == []:  # pylint: disable=protected-access
      pytest.skip("no read-only directory for root here")
    _refused(_config(), workdir, "cannot create workdir")
    return
  parent = tmp_path / "ro"
  parent.mkdir()
  parent.chmod(0o555)
  try:
    _refused(_config(), parent / "run", "cannot create workdir", "Permission denied")
  finally:
    parent.chmod(0o755)


def test_full_disk(tmp_path, monkeypatch):
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(config_checks.shutil, "disk_usage", lambda _: usage(10**6, 10**6, 1000))
  msg = _refused(_config(), tmp_path / "run", f"not enough free space for {tmp_path / 'run'}: "
                 "0.0 MiB free, 2 checkpoints need about ")
  assert config_checks.checkpoint_bytes(_config()) > 4 * 4 * 1000  # > 1000 params, 4 copies


def test_prerequisite_slots_count_as_the_saved_config(tmp_path):
  """The saved config.json holds `init_from` as filled in by the prerequisite: not a change."""
  saved = _config()
  saved.prerequisites = {"init": "tests/tiny_config.py:steps=1"}
  saved.init_from = str(prerequisites.export_dir(tmp_path, "init"))
  main_lib.write_config(saved, tmp_path)
  (tmp_path / "checkpoints" / "2").mkdir(parents=True)
  config = _config()
  config.prerequisites = {"init": "tests/tiny_config.py:steps=1"}
  config_checks.check_run(config, tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 2-step tiny run: its config.json and checkpoints."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  main_lib.run(_config(), str(workdir))
  assert (workdir / "checkpoints" / "2").is_dir()
  return workdir


def test_resume_with_another_config_is_refused(trained):
  before = (trained / "config.json").read_bytes()
  config = _config()
  config.model.kwargs.embed_dim = 8
  config.data.lr_patch = 6
  with pytest.raises(InputError) as e:
    main_lib.run(config, str(trained))
  assert str(e.value) == (f"{trained} was trained with another config: data.lr_patch 8 -> 6, "
                          f"model.kwargs.embed_dim 12 -> 8; use a new --workdir (or "
                          f"--config.init_from={trained} to branch from its weights)")
  assert (trained / "config.json").read_bytes() == before


def test_resume_may_extend_the_last_stage_and_change_intervals(trained):
  config = _config()
  config.train.stages[-1].steps = 20
  config.train.max_steps = 4
  config.train.log_every = 2
  config.train.keep_checkpoints = 5
  config.data.num_threads = 1
  config_checks.check_run(config, trained)
  config.train.stages[0].steps = 7               # an earlier stage may not change
  with pytest.raises(InputError, match=r"train.stages\[0\].steps 6 -> 7;"):
    config_checks.check_run(config, trained)


def test_cli_resume_with_another_config(trained):
  before = (trained / "config.json").read_bytes()
  proc = _cli("-m", "medsr_jax.main", TINY, f"--workdir={trained}", "--config.data.lr_patch=6")
  _one_error_line(proc, "was trained with another config: data.lr_patch 8 -> 6;")
  assert (trained / "config.json").read_bytes() == before


@pytest.mark.parametrize("override, fragment", [
    ("--config.train.eval_evry=5", "error: --config.train.eval_evry: config.train has no field "
     "'eval_evry' (did you mean config.train.eval_every?)"),
    ("--config.train.stages[5].steps=3", "error: --config.train.stages[5].steps: "
     "config.train.stages has 2 entries, no [5]"),
])
def test_cli_bad_override_is_one_line(tmp_path, override, fragment):
  proc = _cli("-m", "medsr_jax.main", TINY, f"--workdir={tmp_path}/run", override)
  assert _one_error_line(proc) == fragment
  assert not (tmp_path / "run").exists()


def test_converter_unknown_model(tmp_path):
  np.savez(tmp_path / "w.npz", a=np.zeros(3, np.float32))
  proc = _cli("-m", "medsr_jax.export", "--model=nope", f"--from_torch={tmp_path}/w.npz",
              f"--out={tmp_path}/exp")
  _one_error_line(proc, "unknown model 'nope'; available: ")
  assert not (tmp_path / "exp").exists()


def test_converter_refuses_nan_weights(tmp_path):
  path = tmp_path / "w.npz"
  np.savez(path, **{"conv_first.weight": np.zeros((2, 2), np.float32),
                    "conv_first.bias": np.array([1.0, np.inf], np.float32)})
  with pytest.raises(InputError, match=r"tensor 'conv_first.bias' contains NaN or infinite"):
    export_cli.import_torch("rdst_e", str(path), str(tmp_path / "exp"), scale=4, in_channels=1,
                            model_kwargs={})
  assert not (tmp_path / "exp").exists()


def test_written_config_is_the_checked_json(tmp_path):
  main_lib.write_config(_config(), tmp_path)
  assert json.loads((tmp_path / "config.json").read_text()) == config_checks.resolved_json(
      _config())
  assert config_lib.total_steps(_config()) == 2
