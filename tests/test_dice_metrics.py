"""Tests of medsr_jax.metrics.dice (thesis Eq. 5.16, spec §8.5) and metrics.frechet (spec §8.4).

  .venv/bin/python -m pytest -q tests/test_dice_metrics.py
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from medsr_jax.errors import InputError
from medsr_jax.metrics import dice
from medsr_jax.metrics import frechet

PRED = np.array([[0, 1, 1, 2],
                 [2, 2, 3, 3],
                 [0, 0, 3, 1]])
GT = np.array([[0, 1, 2, 2],
               [2, 2, 3, 0],
               [0, 0, 3, 3]])


def test_per_class_by_hand():
  d = dice.per_class(PRED, GT, 5)
  # class 0: P 3 px, G 4 px, both 3 -> 6/7; class 1: P 3, G 1, both 1 -> 2/4;
  # class 2: P 3, G 4, both 3 -> 6/7; class 3: P 3, G 3, both 2 -> 4/6; class 4: absent -> NaN.
  np.testing.assert_allclose(d[:4], [6 / 7, 2 / 4, 6 / 7, 4 / 6])
  assert np.isnan(d[4]) and d.shape == (5,) and d.dtype == np.float64
  np.testing.assert_array_equal(dice.per_class(GT, GT, 4), [1.0, 1.0, 1.0, 1.0])
  # any shape (a stack pools its pixels), integral floats accepted
  np.testing.assert_allclose(dice.per_class(PRED[None].astype(float), GT[None], 4), d[:4])


def test_per_class_bad_input():
  with pytest.raises(InputError):
    dice.per_class(PRED, GT[:2], 4)
  with pytest.raises(InputError):
    dice.per_class(PRED, GT, 3)          # label 3 outside [0, 3)
  with pytest.raises(InputError):
    dice.per_class(PRED + 0.5, GT, 4)
  with pytest.raises(InputError):
    dice.per_class(PRED - 1, GT, 4)
  with pytest.raises(InputError):
    dice.per_class(PRED, GT, 0)


def test_region_dice_union_and_pooled():
  pred = np.stack([PRED, np.zeros_like(PRED)])
  gt = np.stack([GT, np.zeros_like(GT)])
  regions = {"T": (1, 2, 3), "A": (1, 3), "one": (3,), "none": (4,)}
  union = dice.region_dice(pred, gt, regions)
  pooled = dice.region_dice(pred, gt, regions, whole="pooled")
  assert list(union) == list(regions) and union["T"].shape == (2,)
  # T: P 9 px, G 8 px; union overlap 8 (every G foreground pixel is foreground in P);
  # pooled overlap = same class only: 1 + 3 + 2 = 6.
  assert union["T"][0] == pytest.approx(16 / 17)
  assert pooled["T"][0] == pytest.approx(12 / 17)
  # A = {1, 3}: P 6 px, G 4 px; union overlap 4 (G's (2,3) is 3, P's is 1); pooled: 1 + 2.
  assert union["A"][0] == pytest.approx(8 / 10)
  assert pooled["A"][0] == pytest.approx(6 / 10)
  np.testing.assert_allclose(union["one"][0], dice.per_class(PRED, GT, 4)[3])
  assert union["one"][0] == pooled["one"][0]
  # slice 2 has no foreground at all; region 'none' is absent everywhere: NaN
  for name in regions:
    assert np.isnan(union[name][1]) and np.isnan(pooled[name][1])
  assert np.isnan(union["none"]).all()
  # (N, H, W, 1) stacks are accepted; a dataset name picks its regions
  again = dice.region_dice(pred[..., None], gt[..., None], "oasis")
  assert list(again) == ["T", "GM", "WM", "CSF"]
  assert again["T"][0] == pytest.approx(16 / 17)


def test_region_dice_bad_input():
  with pytest.raises(InputError):
    dice.region_dice(PRED, GT, {"T": (1,)})            # not a stack
  with pytest.raises(InputError):
    dice.region_dice(PRED[None], GT[None], {"T": (1,)}, whole="mean")
  with pytest.raises(InputError):
    dice.region_dice(PRED[None], GT[None], {})
  with pytest.raises(InputError):
    dice.region_dice(PRED[None], GT[None], "lits")


def test_regions_content():
  assert dice.REGIONS["oasis"] == {"T": (1, 2, 3), "GM": (2,), "WM": (3,), "CSF": (1,)}
  assert dice.REGIONS["brats"] == {"WT": (1, 2, 3), "ET": (3,), "TC": (1, 3)}
  assert dice.REGIONS["acdc"] == {"T": (1, 2, 3), "LV": (3,), "RV": (1,), "MC": (2,)}
  assert dice.REGIONS["covid_ct"] == {"T": (1, 2, 3), "LL": (1,), "RL": (2,), "lesion": (3,)}
  assert dice.region_names("oasis") == ("T", "GM", "WM", "CSF")
  assert dice.region_names("brats") == ("WT", "ET", "TC")   # Tables 5.2 / 5.8 order
  assert dice.region_names("acdc") == ("T", "LV", "RV", "MC")
  assert dice.region_names("covid_ct") == ("T", "LL", "RL", "lesion")
  assert dice.LABELS["oasis"][1:] == ("CSF", "GM", "WM")
  with pytest.raises(InputError):
    dice.region_names("OASIS")


def _direct_frechet(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(sa @ sb).real
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * root))


def test_frechet_matches_direct_computation():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((50, 8))
  b = 0.5 + 1.5 * rng.standard_normal((40, 8)) @ rng.standard_normal((8, 8)) / 3
  d = frechet.frechet_distance(a, b)
  assert isinstance(d, float) and d > 0
  assert d == pytest.approx(_direct_frechet(a, b), rel=1e-10)
  # float32 input is computed in float64
  assert frechet.frechet_distance(a.astype(np.float32), b) == pytest.approx(
      _direct_frechet(a.astype(np.float32), b), rel=1e-10)
  # symmetric up to round-off, statistics path equal
  assert frechet.frechet_distance(b, a) == pytest.approx(d, rel=1e-8)
  mu, sigma = frechet.feature_statistics(a)
  np.testing.assert_allclose(sigma, np.cov(a, rowvar=False))
  assert frechet.frechet_from_statistics(mu, sigma, *frechet.feature_statistics(b)) == d
  # a pure mean shift: ||delta||^2
  assert frechet.frechet_distance(a, a + 2.0) == pytest.approx(4.0 * 8, rel=1e-8)


def test_frechet_identical_and_singular():
  rng = np.random.default_rng(1)
  a = rng.standard_normal((50, 8))
  assert abs(frechet.frechet_distance(a, a)) < 1e-6
  assert abs(frechet.frechet_distance(a, a[::-1])) < 1e-6
  few, other = rng.standard_normal((5, 16)), rng.standard_normal((6, 16))  # n < d: singular
  assert frechet.frechet_distance(few, few) == 0.0  # -2 d eps, clamped
  d = frechet.frechet_distance(few, other)
  assert np.isfinite(d) and d > 0
  assert d == pytest.approx(frechet.frechet_distance(other, few), rel=1e-4)
  # one feature dimension: 1-D Gaussians, (mu_a - mu_b)^2 + (s_a - s_b)^2
  x, y = rng.standard_normal((30, 1)), 3 + 2 * rng.standard_normal((20, 1))
  sx, sy = x.std(ddof=1), y.std(ddof=1)
  assert frechet.frechet_distance(x, y) == pytest.approx(
      (x.mean() - y.mean()) ** 2 + (sx - sy) ** 2, rel=1e-8)


def test_frechet_bad_input():
  rng = np.random.default_rng(2)
  a = rng.standard_normal((10, 4))
  with pytest.raises(InputError):
    frechet.frechet_distance(a[:1], a)
  with pytest.raises(InputError):
    frechet.frechet_distance(a, rng.standard_normal((10, 5)))
  with pytest.raises(InputError):
    frechet.frechet_distance(a[0], a)
  with pytest.raises(InputError):
    frechet.frechet_distance(np.where(a > 1, np.nan, a), a)
  with pytest.raises(InputError):
    frechet.frechet_from_statistics(np.zeros(4), np.eye(3), np.zeros(4), np.eye(4))
