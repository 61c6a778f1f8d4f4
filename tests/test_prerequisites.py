"""Prerequisite runs and `init_from`, and the clear failure on a checkpoint of another layout."""

import json
import pathlib
import types

import grain
import jax.numpy as jnp
import pytest

from medsr_jax import checkpoint as checkpoint_lib
from medsr_jax import main as main_lib
from medsr_jax.errors import InputError
from medsr_jax.trainers import loop, prerequisites
from tests import tiny_config

TINY = str(pathlib.Path(tiny_config.__file__).resolve())


def test_prerequisite_warmup_runs_once_and_starts_the_main_run(tmp_path, capsys):
  config = tiny_config.get_config("steps=2")
  config.prerequisites = {"init": f"{TINY}:steps=1"}
  main_lib.run(config, str(tmp_path))
  warmup = prerequisites.export_dir(tmp_path, "init")
  assert (warmup / "config.json").is_file()
  resolved = json.loads((tmp_path / "config.json").read_text())
  assert resolved["init_from"] == str(warmup)
  out = capsys.readouterr().out
  assert "running" in out and f"generator initialised from {warmup}" in out
  again = tiny_config.get_config("steps=2")
  again.prerequisites = {"init": f"{TINY}:steps=1"}
  main_lib.run(again, str(tmp_path))
  assert f"prerequisite 'init': using {warmup}" in capsys.readouterr().out


def test_prerequisite_without_a_use_is_rejected(tmp_path):
  config = tiny_config.get_config("steps=1")
  config.prerequisites = {"segmenter": f"{TINY}:steps=1"}
  with pytest.raises(InputError, match="no use"):
    prerequisites.run_prerequisites(config, tmp_path, lambda c, w: None)


def test_prerequisite_whose_slot_is_given_is_not_run(tmp_path, capsys):
  config = tiny_config.get_config("steps=1")
  config.prerequisites = {"unet": f"{TINY}:steps=1"}
  config.train.frozen.unet = "weights/unet"
  prerequisites.run_prerequisites(config, tmp_path, lambda c, w: pytest.fail("ran"))
  assert config.train.frozen.unet == "weights/unet"
  assert "skipped, train.frozen.unet is given" in capsys.readouterr().out


def test_checkpoint_of_another_layout_fails_with_one_clear_line(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(tmp_path / "checkpoints", async_save=False)
  old_iter = iter(grain.MapDataset.range(4).to_iter_dataset())
  ckpt.save(3, {"params": {"w": jnp.ones(2)}, "step": jnp.zeros((), jnp.int32)}, old_iter, {})
  trainer = types.SimpleNamespace(
      state={"players": {"g": {"params": {"w": jnp.ones(2)}}}, "step": jnp.zeros((), jnp.int32)},
      train_iter=iter(grain.MapDataset.range(4).to_iter_dataset()))
  with pytest.raises(InputError, match="init_from") as error:
    loop._restore(ckpt, 3, trainer)  # pylint: disable=protected-access
  assert "\n" not in str(error.value)
  ckpt.close()
