"""experiments/sweep.py expands a config's grid into checked `main` commands."""

import pytest

from experiments import sweep


def test_rdst_grid_expands_to_one_command_per_depth(tmp_path):
  cmds = sweep.commands("configs/rdst.py:demo", str(tmp_path))
  overrides = sorted(c[-1] for c in cmds)
  assert overrides == ["--config.model.kwargs.num_blocks=4", "--config.model.kwargs.num_blocks=8"]
  assert all("--config=configs/rdst.py:demo" in c for c in cmds)
  assert len({c[4] for c in cmds}) == 2  # one workdir per point


def test_grid_typo_is_an_error(tmp_path):
  config = tmp_path / "bad.py"
  config.write_text(
      "from medsr_jax import config_lib\n"
      "def get_config(arg=None):\n  return config_lib.base_sr_config()\n"
      "def sweep(add):\n  add(**{'train.nonexistent': 1})\n")
  with pytest.raises(ValueError, match="train.nonexistent"):
    sweep.grid_points(str(config))


def test_baseline_grid_has_one_point_per_generator(tmp_path):
  cmds = sweep.commands("configs/baseline.py", str(tmp_path))
  names = [c[3].split("model=")[1] for c in cmds]
  assert "--config=configs/baseline.py:model=edsr_lite" in [c[3] for c in cmds]
  assert len(names) == len(set(names)) == 17 and {"rcan", "swinir_psd", "rdst_e"} <= set(names)
  assert all(c[4].endswith(f"model={n}") for c, n in zip(cmds, names))
  with pytest.raises(ValueError, match="own trainers"):
    sweep._load("configs/baseline.py").get_config("model=miassr")
