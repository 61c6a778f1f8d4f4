"""RDST's two-stage recipe with the segmentation perceptual loss, and Dice in the test table.

  .venv/bin/python -m pytest -q tests/test_rdst_finetune.py

A tiny random U-Net export stands in for the trained one (the loss and the evaluation only need a
fixed network); a tiny RDST trains 3 L1 steps then 3 steps of 0.1 L1 + L_E(1) on 32 x 32 slices
of the embedded sample, one device.
"""

import json

import numpy as np
import pytest

from medsr_jax import config_lib, export, models
from medsr_jax import main as main_lib
from medsr_jax.errors import InputError
from tests import tiny_config

TINY_UNET = dict(num_classes=4, stem_features=4, stage_widths=(4, 8, 8, 8),
                 blocks_per_stage=(1, 1, 1, 1), decoder_channels=(8, 8, 8, 8, 4),
                 example_hw=(32, 32))


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
  module = models.build("unet_seg", in_channels=1, **TINY_UNET)
  import jax  # pylint: disable=import-outside-toplevel
  variables = models.init(module, jax.random.key(0))
  d = tmp_path_factory.mktemp("unet") / "export"
  kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_UNET.items()}
  export.save_export(str(d), model_name="unet_seg", model_kwargs=kwargs, scale=1, in_channels=1,
                     params=jax.device_get(variables), extra={"step": 0})
  return d


def _config(unet_dir, steps, loss="unet_e1"):
  c = tiny_config.get_config(f"steps={steps},mesh=1x1")
  c.train.stages = [
      config_lib.stage("l1", steps=3, learning_rate=1e-3),
      config_lib.stage("finetune", steps=3, learning_rate=5e-4,
                       losses={"l1": 0.1, loss: 1.0}),
  ]
  c.train.eval_every = c.train.checkpoint_every = 2
  c.train.frozen.unet = str(unet_dir)
  c.eval.num_panels = 1
  return c


def _per_step(workdir, key):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r[key] for r in rows if key in r}


def test_two_stages_resume_exactly_and_the_table_has_dice(tmp_path, unet_dir):
  straight = tmp_path / "straight"
  main_lib.run(_config(unet_dir, 6), str(straight))
  interrupted = tmp_path / "interrupted"
  # killed in the fine-tuning stage (resuming in the L1 stage is test_main's); the step-4
  # checkpoint is the resume point
  for steps in (4, 6):
    main_lib.run(_config(unet_dir, steps), str(interrupted))
  for key in ("loss", "loss_l1", "loss_unet_e1"):
    got, want = _per_step(interrupted, key), _per_step(straight, key)
    assert sorted(got) == sorted(want) and got, key
    for s in want:
      np.testing.assert_allclose(got[s], want[s], rtol=1e-5, atol=1e-7, err_msg=f"{key} {s}")
  assert sorted(_per_step(straight, "loss_unet_e1")) == [4, 5, 6]
  table = (straight / "results.md").read_text()
  for row in ("| bicubic |", "| rdst (l1) |", "| rdst |"):
    assert row in table, table
  assert "Dice" in table and "CSF" in table and "WM" in table, table
  results = json.loads((straight / "results.json").read_text())
  assert "dice" in results
  assert list(straight.glob("seg_panel_*.png"))
  assert (straight / "export_after_l1" / "config.json").is_file()


def test_finetuning_without_a_unet_fails_early(tmp_path, unet_dir):
  config = _config(unet_dir, 6)
  config.train.frozen.unet = ""
  with pytest.raises(InputError, match="frozen.unet"):
    main_lib.run(config, str(tmp_path))


def test_rdst_config_recipe_and_table_rows():
  c = config_lib.load_config("configs/rdst.py")
  assert [s.steps for s in c.train.stages] == [100_000, 20_000]
  assert dict(c.train.stages[1].losses) == {"l1": 0.1, "unet_e1": 1.0}
  assert tuple(c.train.stages[1].milestones) == (10_000, 15_000, 17_500)
  hrl = config_lib.load_config("configs/rdst_e.py:loss=hrl")
  assert hrl.model.name == "rdst_e" and dict(hrl.train.stages[1].losses)["unet_hrl"] == 1.0
  gan = config_lib.load_config("configs/rdst.py:loss=wgan_gp,stage=finetune")
  assert gan.trainer == "gan" and gan.gan.kind == "wgan_gp"
  demo = config_lib.load_config("configs/rdst.py:demo")
  assert dict(demo.prerequisites) == {"unet": "configs/unet_seg.py:demo"}
