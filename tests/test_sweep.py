"""experiments/sweep.py expands a config's grid into checked `main` commands."""

import pytest

from experiments import sweep


def test_rdst_grid_branches_every_finetuning_loss_from_one_l1_run(tmp_path):
  cmds = sweep.commands("configs/rdst.py", str(tmp_path))
  names = [c[4] for c in cmds]
  assert len(names) == len(set(names))  # one workdir per point
  assert cmds[0][3] == "--config=configs/rdst.py:stage=l1"
  finetune = [c for c in cmds if "stage=finetune,loss=" in c[3]]
  assert sorted(c[3].rsplit("=", 1)[1] for c in finetune) == sorted(
      ["e1", "e2", "e3", "e4", "e5", "esum", "d", "hrl", "l1", "vgg", "wgan_gp"])
  assert all(c[-1] == f"--config.init_from={tmp_path}/stage=l1" for c in finetune)
  extra = sweep.commands("configs/rdst.py", str(tmp_path))[0] + ["--config.train.frozen.unet=U"]
  assert extra[-1] == "--config.train.frozen.unet=U"


def test_flags_after_double_dash_go_to_every_point(tmp_path, capsys):
  sweep.main(["--config=configs/rdst.py", f"--workdir={tmp_path}", "--",
              "--config.train.frozen.unet=runs/unet/export"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) > 10
  assert all(l.endswith("--config.train.frozen.unet=runs/unet/export") for l in lines)


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
