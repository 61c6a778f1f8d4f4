"""The segmentation U-Net trainer (thesis §5.3.3; trainers/segmentation.py, configs/unet_seg.py).

  (a) the thesis recipe in configs/unet_seg.py (ResNet-34 U-Net, Dice, Adam 1e-4 halved at 50k
      and 75k of 100k, batch 16; BraTS with 4 channels) and the padding helpers;
  (b) the Dice loss falls on one fixed batch over a few real train steps (BatchNorm in train
      mode, its running statistics updated);
  (c) `main.run` end to end on 32 x 32 crops of the sample: validation Dice in metrics.jsonl,
      results.md / results.json, an 'unet_seg' export that `export.load_export` reads; an
      interrupted run resumed to the end logs the same per-step losses as a straight run;
  (d) bad configs fail with one InputError line: another model, shards without labels; labelled
      shards whose slices are not multiples of 32 are padded.

Run: .venv/bin/python -m pytest -q tests/test_segmentation_trainer.py
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from medsr_jax import config_lib, export, sharding
from medsr_jax import main as main_lib
from medsr_jax.errors import InputError
from medsr_jax.trainers import segmentation
from tests import shard_fixtures, tiny_unet_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(pathlib.Path(tiny_unet_config.__file__).resolve())


# ----------------------------------------------------------------------------------------------
# (a) recipe and padding.


def test_thesis_recipe_and_dataset_options():
  c = config_lib.load_config(str(ROOT / "configs" / "unet_seg.py"))
  assert c.trainer == "segmentation" and c.model.name == "unet_seg"
  assert c.model.in_channels == 1 and c.model.kwargs.num_classes == 4
  assert tuple(c.model.kwargs.stage_widths) == (64, 128, 256, 512)
  assert tuple(c.model.kwargs.blocks_per_stage) == (3, 4, 6, 3)
  (stage,) = c.train.stages
  assert (stage.steps, stage.learning_rate, tuple(stage.milestones), stage.gamma) == (
      100_000, 1e-4, (50_000, 75_000), 0.5)
  assert stage.loss == "dice" and c.data.global_batch_size == 16
  b = config_lib.load_config(f"{ROOT / 'configs' / 'unet_seg.py'}:dataset=brats,"
                             "stage_widths=32/64/128/256,blocks_per_stage=2/2/2/2")
  assert b.model.in_channels == 4 and tuple(b.data.modalities) == ("t1ce", "t1", "t2", "flair")
  assert tuple(b.model.kwargs.stage_widths) == (32, 64, 128, 256)
  assert tuple(b.model.kwargs.blocks_per_stage) == (2, 2, 2, 2)
  d = config_lib.load_config(f"{ROOT / 'configs' / 'unet_seg.py'}:demo")
  assert d.data.source == "sample" and d.eval.dataset == "oasis"
  assert tuple(d.model.kwargs.blocks_per_stage) == (1, 1, 1, 1)


def test_padding_to_multiples_of_32():
  assert segmentation.padded_hw((160, 128)) == (160, 128)
  assert segmentation.padded_hw((180, 170)) == (192, 192)
  image = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
  padded = segmentation.pad_image(image, (4, 5))
  assert padded.shape == (4, 5, 1)
  np.testing.assert_array_equal(padded[:2, :3], image)
  np.testing.assert_array_equal(padded[3, :3, 0], image[1, :, 0])  # edge rows repeated
  np.testing.assert_array_equal(padded[:2, 4, 0], image[:, 2, 0])
  label = np.ones((2, 3), np.int32)
  padded_label = segmentation.pad_label(label, (4, 5))
  assert padded_label.sum() == 6 and padded_label[2:].sum() == 0 and padded_label[:, 3:].sum() == 0


# ----------------------------------------------------------------------------------------------
# (b) the loss falls on a fixed batch.


def test_dice_loss_falls_on_a_fixed_batch_and_bn_statistics_move(tmp_path):
  config = tiny_unet_config.get_config("steps=12")
  trainer = segmentation.SegmentationTrainer(config, tmp_path)
  batch = sharding.global_batch(next(trainer.train_iter), trainer.mesh)
  assert batch["image"].shape == (8, 32, 32, 1) and batch["label"].dtype == np.int32
  before = jax.device_get(trainer.state["players"]["g"]["model_state"])
  step = trainer.train_step(0, 0)
  losses = []
  for _ in range(8):
    trainer.state, metrics = step(trainer.state, batch)
    losses.append(float(metrics["loss"]))
  assert 0.0 < losses[-1] < 0.9 * losses[0], losses  # 0.77 -> 0.61 here
  after = jax.device_get(trainer.state["players"]["g"]["model_state"])
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before, after))
  assert max(moved) > 0  # BatchNorm running statistics are updated in the step


# ----------------------------------------------------------------------------------------------
# (c) main end to end, resume.


def _per_step(workdir, key):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r[key] for r in rows if r.get(key) is not None}


def test_main_trains_validates_exports_and_resumes(tmp_path, capsys):
  interrupted = tmp_path / "interrupted"
  main_lib.run(tiny_unet_config.get_config("steps=4"), str(interrupted))
  first_export = tmp_path / "first_export"
  shutil.copytree(interrupted / "export", first_export)
  capsys.readouterr()
  main_lib.run(tiny_unet_config.get_config("steps=6"), str(interrupted))
  out = capsys.readouterr().out
  assert "resumed from checkpoint at step 4" in out and "validation Dice" in out
  straight = tmp_path / "straight"
  main_lib.run(tiny_unet_config.get_config("steps=6"), str(straight))
  got, want = _per_step(interrupted, "loss"), _per_step(straight, "loss")
  assert sorted(got) == sorted(want) == list(range(1, 7))
  for s in want:
    np.testing.assert_allclose(got[s], want[s], rtol=1e-5, atol=1e-6, err_msg=f"step {s}")
  val = _per_step(straight, "val_dice")
  assert sorted(val) == [2, 4, 6] and all(0.0 <= v <= 1.0 for v in val.values())
  for k in (1, 2, 3):  # CSF, GM, WM are in every 32 x 32 validation crop
    assert sorted(_per_step(straight, f"val_dice_{k}")) == [2, 4, 6]

  results = (straight / "results.md").read_text()
  for row in ("| CSF (1) |", "| GM (2) |", "| WM (3) |", "| mean of classes 1-3 |",
              "| T | 1, 2, 3 |", "Best checkpoint by mean validation Dice"):
    assert row in results, results
  payload = json.loads((straight / "results.json").read_text())
  best = max(val, key=lambda s: (val[s], s))  # orbax keeps the later step on a tie
  assert payload["best_checkpoint"] == best == payload["params_step"]
  assert len(payload["slices"]) == 27 and payload["dataset"] == "oasis"
  assert set(payload["regions"]) == {"T", "GM", "WM", "CSF"}

  module, variables, cfg = segmentation.load_unet(str(straight / "export"))
  assert cfg["model"] == "unet_seg" and cfg["in_channels"] == 1
  assert cfg["extra"]["params_step"] == best and cfg["extra"]["num_classes"] == 4
  assert "batch_stats" in variables
  x = np.zeros((2, 32, 32, 1), np.float32)
  assert module.apply(variables, x)["logits"].shape == (2, 32, 32, 4)
  # The exported params reproduce the test Dice written in results.json.
  data = segmentation.eval_data(tiny_unet_config.get_config().data, "test", 4)
  predictor = segmentation.LabelPredictor(module, 16)
  class_dice = segmentation.per_slice_class_dice(predictor(variables, data.images), data.labels, 4)
  mean = payload["classes"]["mean of classes 1-3"]["mean"]
  np.testing.assert_allclose(np.nanmean(segmentation.foreground_dice(class_dice)), mean,
                             rtol=1e-6)
  _best_checkpoint_is_restored(straight, first_export)


def _best_checkpoint_is_restored(run_dir, earlier_export):
  """With an earlier best checkpoint, its params (not the final ones) are evaluated / exported:
  they equal the export of the 4-step run at the same step (same seed, same data order)."""
  _, earlier, cfg = export.load_export(str(earlier_export))
  step = cfg["extra"]["params_step"]
  assert step in (2, 4)
  trainer = segmentation.SegmentationTrainer(tiny_unet_config.get_config("steps=6"), run_dir)
  trainer.best_checkpoint = step
  variables, used = trainer._choose_variables(6)  # pylint: disable=protected-access
  assert used == step
  for want, got in zip(jax.tree.leaves(earlier), jax.tree.leaves(jax.device_get(variables))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  _, final, _ = export.load_export(str(run_dir / "export"))
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(final),
                                                   jax.tree.leaves(earlier)))


# ----------------------------------------------------------------------------------------------
# (d) bad configs and padded shards.


def test_another_model_fails_with_one_line():
  proc = subprocess.run(
      [sys.executable, "-m", "medsr_jax.main", f"--config={TINY}",
       "--config.model.name=edsr_lite", "--workdir=/nonexistent/never_written"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  # config_checks reports the U-Net options edsr_lite does not have, before the trainer's own
  # "trains a 'unet_seg'" check
  assert lines[-1].startswith("error: ") and "edsr_lite" in lines[-1], proc.stderr
  assert len([l for l in lines if l.startswith("error:")]) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("change,message", [
    (lambda c: setattr(c.train.stages[0], "loss", "l1"), "Dice loss only"),
    (lambda c: setattr(c.data, "scales", (2.0,)), "data.scales"),
    (lambda c: setattr(c.segmentation, "export_params", "last"), "export_params"),
])
def test_bad_configs_fail_early(tmp_path, change, message):
  c = tiny_unet_config.get_config("mesh=1x1")
  change(c)
  with pytest.raises(InputError, match=message):
    segmentation.SegmentationTrainer(c, tmp_path)


def test_shards_without_labels_fail_and_odd_sizes_are_padded(tmp_path):
  unlabelled = tmp_path / "unlabelled"
  shard_fixtures.write_shards(unlabelled, with_labels=False)
  c = tiny_unet_config.get_config("mesh=1x1")
  c.data.path = str(unlabelled)
  with pytest.raises(InputError, match="no label maps") as error:
    segmentation.SegmentationTrainer(c, tmp_path / "run0")
  assert "\n" not in str(error.value)

  labelled = tmp_path / "labelled"
  shard_fixtures.write_shards(labelled, crop_hw=(40, 36), dataset="acdc")
  c = tiny_unet_config.get_config("mesh=1x1")
  c.data.path, c.eval.dataset = str(labelled), ""
  trainer = segmentation.SegmentationTrainer(c, tmp_path / "run1")
  assert trainer.train_hw == (40, 36) and trainer.train_source.hw == (64, 64)
  assert trainer.dataset == "acdc" and trainer.class_names[1:] == ("RV", "MC", "LV")
  item = trainer.train_source[0]
  assert item["image"].shape == (64, 64, 1) and item["label"][40:].sum() == 0
  val = trainer.validate()  # predictions on padded slices, cropped back to 40 x 36
  assert 0.0 <= val["val_dice"] <= 1.0
  assert trainer.predict_labels(trainer.eval_params(), trainer.val.images).shape == (
      len(trainer.val.ids), 40, 36)
