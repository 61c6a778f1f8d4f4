"""Tests of medsr_jax.evaluate.segmentation (thesis §5.3.2: Dice of SR results, Tables 5.1-5.4).

  .venv/bin/python -m pytest -q tests/test_segmentation_eval.py

A tiny random U-Net (He-normal kernels, zero biases / BN means, so its labels follow the input
and a blank slice is all background) on 32 x 32 slices; a few seconds of compilation on a CPU.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.evaluate import segmentation as seg_eval
from medsr_jax.metrics import dice
from tests import host_variables

TINY = dict(in_channels=1, num_classes=4, stem_features=4, stage_widths=(4, 8, 8, 8),
            blocks_per_stage=(1, 1, 1, 1), decoder_channels=(8, 8, 8, 8, 4))
SUBJECTS = ["a", "a", "a", "b", "b", "c"]


@pytest.fixture(scope="module")
def unet():
  model = models.build("unet_seg", **TINY)
  return model, host_variables.he_normal(model, seed=0)


@pytest.fixture(scope="module")
def segmenter(unet):
  return seg_eval.Segmenter(*unet, batch_size=4)


@pytest.fixture(scope="module")
def data():
  """6 slices of 3 subjects; slice 2 is blank (no labels at all)."""
  yy, xx = np.mgrid[:32, :32] / 31.0
  hr = np.stack([np.clip(0.5 + 0.5 * np.sin(6 * (xx * np.cos(a) + yy * np.sin(a))) * yy, 0, 1)
                 for a in np.linspace(0, 3, 6)])[..., None].astype(np.float32)
  hr[2] = 0.0
  gt = np.digitize(hr[..., 0], [0.3, 0.55, 0.8]).astype(np.uint8)
  rng = np.random.default_rng(1)
  bicubic = np.clip(hr + 0.3 * rng.standard_normal(hr.shape), 0, 1).astype(np.float32)
  bicubic[2] = 0.0
  return hr, gt, {"bicubic": bicubic, "model": hr.copy()}


def test_segmenter_pads_crops_and_traces(unet):
  model, variables = unet
  seg = seg_eval.Segmenter(model, variables, batch_size=2)
  images = np.random.default_rng(2).uniform(0, 1, (3, 40, 36, 1)).astype(np.float32)
  labels = seg(images)
  assert labels.shape == (3, 40, 36) and np.issubdtype(labels.dtype, np.integer)
  assert seg.traces == 1
  padded = np.pad(images, ((0, 0), (0, 24), (0, 28), (0, 0)), mode="edge")
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(padded))
  np.testing.assert_array_equal(labels, np.argmax(np.asarray(out["logits"]), -1)[:, :40, :36])
  assert len(np.unique(labels)) > 1
  # the same padded shape (64 x 64) reuses the compilation; features are another program
  assert seg(images[:1, :33, :34]).shape == (1, 33, 34)
  assert seg.traces == 1
  feats = seg.features(images)
  assert feats.shape == (3, 8) and seg.traces == 2
  np.testing.assert_allclose(feats, np.asarray(out["e5"]).mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-6)
  both = seg.labels_and_features(images)
  np.testing.assert_array_equal(both[0], labels)
  np.testing.assert_allclose(both[1], feats, rtol=1e-5, atol=1e-6)
  with pytest.raises(InputError):
    seg(images[..., 0])
  with pytest.raises(InputError):
    seg(np.concatenate([images, images], axis=-1))


def _nan(values):
  return np.array([np.nan if v is None else v for v in values])


def test_dice_report(segmenter, data):
  hr, gt, outputs = data
  report = seg_eval.dice_report(segmenter, hr, gt, outputs, dataset="oasis", subjects=SUBJECTS)
  json.dumps(report, allow_nan=False)  # strict JSON: NaN is null
  assert report["methods"] == ["HR", "bicubic", "model"]
  assert report["subject_names"] == ["a", "b", "c"] and report["slices"] == 6
  assert list(report["regions"]) == ["T", "GM", "WM", "CSF"]
  res = report["results"]
  hr_labels = segmenter(hr)
  for name in dice.REGIONS["oasis"]:
    # 'model' == HR: Dice 1 against U(HR) where the region is present, NaN (null) where not
    present = np.isin(hr_labels, dice.REGIONS["oasis"][name]).any(axis=(1, 2))
    vs_hr = _nan(res["model"]["vs_hr"][name]["per_slice"])
    np.testing.assert_array_equal(np.isnan(vs_hr), ~present)
    assert np.all(vs_hr[present] == 1.0)
    assert not present[2]  # the blank slice
    assert res["model"]["vs_gt"][name] == res["HR"]["vs_gt"][name]
    # pooled summary and per-subject summaries
    entry = res["bicubic"]["vs_gt"][name]
    values = _nan(entry["per_slice"])
    expected = dice.region_dice(segmenter(outputs["bicubic"]), gt, dice.REGIONS["oasis"])[name]
    np.testing.assert_allclose(values, expected)
    assert entry["mean"] == pytest.approx(np.nanmean(values))
    assert entry["std"] == pytest.approx(np.nanstd(values))
    assert entry["slices"] + entry["absent"] == 6
    for s, idx in (("a", [0, 1, 2]), ("b", [3, 4]), ("c", [5])):
      sub = entry["per_subject"][s]
      assert sub["mean"] == pytest.approx(np.nanmean(values[idx]))
      assert sub["slices"] == int(np.isfinite(values[idx]).sum())
  # slice 2 is blank in GT and prediction: null everywhere
  assert res["HR"]["vs_gt"]["T"]["per_slice"][2] is None
  assert res["HR"]["vs_gt"]["T"]["absent"] >= 1
  # MFD: 0 for HR and the identical model row, per subject with >= 2 slices
  for name in ("HR", "model"):
    assert res[name]["mfd"]["value"] == 0.0
  mfd = res["bicubic"]["mfd"]
  assert mfd["subjects"] == 2 and mfd["skipped"] == ["c"] and mfd["per_subject"]["c"] is None
  assert mfd["value"] == pytest.approx(np.mean([mfd["per_subject"]["a"],
                                                mfd["per_subject"]["b"]]))
  assert mfd["value"] > 0
  # the author's pooled whole-region Dice differs only on multi-label regions
  pooled = seg_eval.dice_report(segmenter, hr, gt, {"bicubic": outputs["bicubic"]},
                                dataset="oasis", subjects=SUBJECTS, whole="pooled")
  assert pooled["whole"] == "pooled"
  assert pooled["results"]["bicubic"]["vs_gt"]["GM"] == res["bicubic"]["vs_gt"]["GM"]
  assert (pooled["results"]["bicubic"]["vs_gt"]["T"]["mean"]
          <= res["bicubic"]["vs_gt"]["T"]["mean"] + 1e-12)
  # one subject for all slices by default: a single MFD value over the 6 slices
  single = seg_eval.dice_report(segmenter, hr, gt, {}, dataset="acdc")
  assert single["subject_names"] == ["all"] and single["methods"] == ["HR"]
  assert list(single["regions"]) == ["T", "LV", "RV", "MC"]


def test_dice_report_bad_input(segmenter, data):
  hr, gt, outputs = data
  with pytest.raises(InputError):
    seg_eval.dice_report(segmenter, hr, gt, {"HR": hr}, dataset="oasis")
  with pytest.raises(InputError):
    seg_eval.dice_report(segmenter, hr, gt, {"model": hr[:3]}, dataset="oasis")
  with pytest.raises(InputError):
    seg_eval.dice_report(segmenter, hr, gt[:3], outputs, dataset="oasis")
  with pytest.raises(InputError):
    seg_eval.dice_report(segmenter, hr, gt, outputs, dataset="lits")
  with pytest.raises(InputError):
    seg_eval.dice_report(segmenter, hr, gt, outputs, dataset="oasis", subjects=["a"])


def test_dice_table_markdown(segmenter, data):
  hr, gt, outputs = data
  report = seg_eval.dice_report(segmenter, hr, gt, outputs, dataset="brats", subjects=SUBJECTS)
  table = seg_eval.dice_table_markdown(report, model_label="RDST")
  lines = table.splitlines()
  assert "ground-truth" in lines[0] and "BraTS" in lines[0] and lines[1] == ""
  assert lines[2] == "| method | Dice-WT | Dice-ET | Dice-TC | MFD |"
  assert lines[3] == "|---|---|---|---|---|"
  rows = [line.split(" | ")[0].lstrip("| ") for line in lines[4:]]
  assert rows == ["HR", "bicubic", "RDST"]
  wt = report["results"]["bicubic"]["vs_gt"]["WT"]
  assert f"{wt['mean']:.4f} ({wt['std']:.4f})" in lines[5]
  assert lines[4].endswith("| 0.0000 |")
  vs_hr = seg_eval.dice_table_markdown(report, against="vs_hr").splitlines()
  assert "HR slices" in vs_hr[0] and vs_hr[6].startswith("| model | 1.0000 (0.0000)")
  with pytest.raises(InputError):
    seg_eval.dice_table_markdown(report, against="gt")


def test_overlay_panel():
  image = np.full((8, 6), 0.5, np.float32)
  pred = np.zeros((8, 6), int)
  pred[2:4, 1:3] = 1
  gt = pred.copy()
  gt[2, 1] = 0   # a false positive
  gt[6, 5] = 2   # a false negative
  tile = seg_eval.overlay_panel(image, pred, gt)
  assert tile.shape == (8, 6, 3) and tile.dtype == np.uint8
  errors = np.all(tile == [255, 0, 0], axis=-1)
  np.testing.assert_array_equal(errors, pred != gt)
  np.testing.assert_array_equal(tile[0, 0], [128, 128, 128])        # background: grey
  np.testing.assert_array_equal(tile[3, 2], [191, 191, 64])         # label 1: yellow at 50 %
  titled = seg_eval.overlay_panel(image[..., None], pred, None, title="HR")
  assert titled.shape[0] > 8 and titled.shape[1:] == (6, 3)
  assert not np.all(titled[:8] == [255, 0, 0], axis=-1).any()
  with pytest.raises(InputError):
    seg_eval.overlay_panel(image, pred[:4], gt)


def test_dice_panels(tmp_path, segmenter, data):
  hr, gt, outputs = data
  written = seg_eval.dice_panels(tmp_path, hr, gt, outputs, segmenter, indices=[0, 4],
                                 dataset="oasis")
  assert sorted(written) == ["seg_panel_000", "seg_panel_004"]
  for name, panel in written.items():
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    assert panel.shape[1] == 4 * 32 + 3 * 2     # HR, bicubic, model, GT label
    assert panel.shape[0] > 32                  # captions under the tiles
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"{name}.png")), panel)
  # the HR tile shows the U-Net's errors against GT in red, the GT tile none
  hr_tile, gt_tile = written["seg_panel_000"][:32, :32], written["seg_panel_000"][:32, -32:]
  red = np.all(hr_tile == [255, 0, 0], axis=-1)
  np.testing.assert_array_equal(red, segmenter(hr[:1])[0] != gt[0])
  assert not np.all(gt_tile == [255, 0, 0], axis=-1).any()
  with pytest.raises(InputError):
    seg_eval.dice_panels(tmp_path, hr, gt, outputs, segmenter, indices=[6])
