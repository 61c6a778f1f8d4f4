"""PSNR/SSIM against skimage oracle values (reference spec §8.1, §8.2).

Run: .venv/bin/python -m pytest -q tests/test_image_quality.py
"""

import math
import os

import numpy as np
import pytest

from medsr_jax.errors import InputError
from medsr_jax.metrics import image_quality as iq

_CASES = np.load(os.path.join(os.path.dirname(__file__), "data", "metric_cases.npz"))
_TOL = 1e-6


@pytest.mark.parametrize("i", [0, 1, 2])
def test_matches_skimage_oracle(i):
  gt, pred = _CASES[f"gt_{i}"], _CASES[f"pred_{i}"]
  assert iq.psnr(gt, pred) == pytest.approx(float(_CASES[f"psnr_{i}"]), abs=_TOL)
  assert iq.ssim(gt, pred) == pytest.approx(float(_CASES[f"ssim_{i}"]), abs=_TOL)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_crop4_matches_oracle(i):
  gt, pred = _CASES[f"gt_{i}"], _CASES[f"pred_{i}"]
  p, s = iq.slice_scores(gt, pred, 4.0)
  assert p == pytest.approx(float(_CASES[f"psnr_crop4_{i}"]), abs=_TOL)
  assert s == pytest.approx(float(_CASES[f"ssim_crop4_{i}"]), abs=_TOL)
  # The crop must actually be applied: uncropped scores differ by far more than the tolerance.
  assert abs(s - float(_CASES[f"ssim_{i}"])) > 1e-4
  # Non-integer scale: ceil(3.5) = 4 gives the same crop.
  assert iq.slice_scores(gt, pred, 3.5) == (p, s)


def test_prediction_is_not_clipped():
  gt, pred = _CASES["gt_1"], _CASES["pred_1"]
  assert pred.min() < 0 or pred.max() > 1  # the oracle case leaves [0, 1]
  clipped = np.clip(pred, 0, 1)
  assert iq.psnr(gt, clipped) != pytest.approx(iq.psnr(gt, pred), abs=1e-3)


def test_identical_images():
  gt = _CASES["gt_0"]
  assert iq.psnr(gt, gt) == math.inf
  assert iq.ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
  p, s = iq.slice_scores(gt, gt.copy(), 2.5)
  assert p == math.inf and s == pytest.approx(1.0, abs=1e-12)


def test_hwc_is_channel_average():
  gt = np.stack([_CASES["gt_0"], _CASES["gt_1"], _CASES["gt_2"]], -1)
  pred = np.stack([_CASES["pred_0"], _CASES["pred_1"], _CASES["pred_2"]], -1)
  want = np.mean([float(_CASES[f"ssim_{i}"]) for i in range(3)])
  assert iq.ssim(gt, pred) == pytest.approx(want, abs=_TOL)
  mse = np.mean([10 ** (-float(_CASES[f"psnr_{i}"]) / 10) for i in range(3)])
  assert iq.psnr(gt, pred) == pytest.approx(-10 * math.log10(mse), abs=_TOL)
  assert iq.ssim(gt[..., :1], pred[..., :1]) == pytest.approx(float(_CASES["ssim_0"]), abs=_TOL)


def test_psnr_data_range_and_known_value():
  gt = np.zeros((8, 8))
  pred = np.full((8, 8), 0.1)
  assert iq.psnr(gt, pred) == pytest.approx(20.0)
  assert iq.psnr(gt * 255, pred * 255, data_range=255) == pytest.approx(20.0)


def test_crop_border_shapes():
  assert iq.crop_border(np.zeros((160, 128)), 4).shape == (152, 120)
  assert iq.crop_border(np.zeros((160, 128, 3)), 3).shape == (154, 122, 3)
  assert iq.crop_border(np.zeros((2, 160, 128, 1)), 4).shape == (2, 152, 120, 1)
  x = np.arange(100.0).reshape(10, 10)
  np.testing.assert_array_equal(iq.crop_border(x, 2), x[2:8, 2:8])
  assert iq.evaluation_margin(4) == 4
  assert iq.evaluation_margin(2.5) == 3
  assert iq.evaluation_margin(1.1) == 2


def test_summarise():
  mean, std = iq.summarise([1.0, 2.0, 3.0, 4.0])
  assert mean == pytest.approx(2.5)
  assert std == pytest.approx(np.std([1, 2, 3, 4]))  # ddof 0
  assert std != pytest.approx(np.std([1, 2, 3, 4], ddof=1))


def test_errors():
  with pytest.raises(ValueError, match="shape mismatch"):
    iq.psnr(np.zeros((8, 8)), np.zeros((8, 9)))
  with pytest.raises(InputError, match="shape mismatch"):
    iq.ssim(np.zeros((8, 8)), np.zeros((9, 8)))
  with pytest.raises(InputError):
    iq.ssim(np.zeros((5, 5)), np.zeros((5, 5)))
  with pytest.raises(InputError):
    iq.crop_border(np.zeros((8, 8)), 4)
