"""Tests for medsr_jax.baselines: OpenCV-exact bilinear resize, bilinear + NL-means, registry.

Run: .venv/bin/python -m pytest -q tests/test_baselines.py
"""

import math

import numpy as np
import pytest

from medsr_jax import baselines
from medsr_jax.data import degradation
from medsr_jax.errors import InputError


def _reference_bilinear(x, out_hw):
  """Textbook 4-tap bilinear with half-pixel centres and clamped source coordinates (2-D)."""
  (h, w), (oh, ow) = x.shape, out_hw
  out = np.zeros((oh, ow))

  def taps(o, n_in, n_out):
    c = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
    i0 = int(math.floor(c))
    return i0, min(i0 + 1, n_in - 1), c - i0

  for r in range(oh):
    r0, r1, ty = taps(r, h, oh)
    for q in range(ow):
      c0, c1, tx = taps(q, w, ow)
      top = (1 - tx) * x[r0, c0] + tx * x[r0, c1]
      bottom = (1 - tx) * x[r1, c0] + tx * x[r1, c1]
      out[r, q] = (1 - ty) * top + ty * bottom
  return out


def test_known_values():
  up = baselines.resize_bilinear(np.array([[0.0, 1.0]]), (1, 4))
  np.testing.assert_allclose(up, [[0.0, 0.25, 0.75, 1.0]], atol=1e-7)
  # Downsampling is plain bilinear sampling (no anti-aliasing): x2 averages pairs, x3 picks
  # the middle sample.
  row = np.arange(12.0)[None]
  np.testing.assert_allclose(baselines.resize_bilinear(row, (1, 6)), [[0.5, 2.5, 4.5, 6.5,
                                                                     8.5, 10.5]], atol=1e-6)
  np.testing.assert_allclose(baselines.resize_bilinear(row, (1, 4)), [[1, 4, 7, 10]], atol=1e-6)
  # A single source pixel is replicated; identity sizes are exact.
  np.testing.assert_allclose(baselines.resize_bilinear(np.full((1, 1), 0.3), (3, 2)),
                             np.full((3, 2), 0.3))
  x = np.random.default_rng(1).uniform(size=(5, 7))
  np.testing.assert_array_equal(baselines.resize_bilinear(x, (5, 7)), x)


@pytest.mark.parametrize("in_hw,out_hw", [((6, 5), (12, 10)), ((7, 9), (17, 22)),
                                          ((16, 12), (8, 6)), ((20, 15), (8, 6)),
                                          ((9, 11), (9, 4)), ((180, 144), (72, 57))])
def test_matches_reference_formula(in_hw, out_hw):
  x = np.random.default_rng(0).uniform(size=in_hw)
  # OpenCV rounds source positions to float32: half an ulp of a coordinate < max(in) per axis.
  atol = 2 * 2.0 ** -24 * max(in_hw) + 1e-12
  np.testing.assert_allclose(baselines.resize_bilinear(x, out_hw),
                             _reference_bilinear(x, out_hw), rtol=0, atol=atol)


def test_matrix_rows_are_convex_two_tap():
  for n_in, n_out in [(5, 13), (13, 5), (1, 4), (4, 1), (57, 144)]:
    m = baselines.linear_resize_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-7)
    assert (m >= 0).all() and ((m > 0).sum(1) <= 2).all()
    assert not m.flags.writeable


def test_shapes_and_dtypes():
  rng = np.random.default_rng(2)
  batch = rng.uniform(size=(3, 6, 5, 2)).astype(np.float32)
  out = baselines.resize_bilinear(batch, (12, 10))
  assert out.shape == (3, 12, 10, 2) and out.dtype == np.float32
  for n in range(3):
    for c in range(2):
      np.testing.assert_allclose(out[n, :, :, c], _reference_bilinear(
          batch[n, :, :, c].astype(np.float64), (12, 10)), atol=2e-6)
  hwc = baselines.resize_bilinear(batch[0], (12, 10))
  np.testing.assert_array_equal(hwc, out[0])
  hw = baselines.bilinear(batch[0, :, :, 1].astype(np.float64), (12, 10))
  assert hw.dtype == np.float64
  np.testing.assert_allclose(hw, out[0, :, :, 1], atol=1e-6)


def test_bad_input():
  with pytest.raises(InputError):
    baselines.resize_bilinear(np.zeros((4, 4), np.uint8), (8, 8))
  with pytest.raises(InputError):
    baselines.resize_bilinear(np.zeros(4), (8, 8))
  with pytest.raises(InputError):
    baselines.resize_bilinear(np.zeros((4, 4)), (0, 8))
  with pytest.raises(InputError):
    baselines.bilinear_nlm(np.zeros((4, 4)), (8, 8), h_factor=0)


def test_resize_separable_reproduces_bicubic():
  x = np.random.default_rng(3).uniform(size=(2, 9, 7, 1))
  np.testing.assert_array_equal(
      degradation.resize_separable(x, (20, 15), degradation.cubic_resize_matrix),
      degradation.resize_bicubic(x, (20, 15)))


def _smooth(h, w):
  yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
  return 0.5 + 0.3 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)


def test_bilinear_nlm_denoises():
  pytest.importorskip("skimage")
  pytest.importorskip("pywt")
  rng = np.random.default_rng(0)
  clean_lr = np.stack([_smooth(32, 32), 1.0 - _smooth(32, 32)], -1)[None]  # (1, 32, 32, 2)
  clean_lr = np.concatenate([clean_lr, clean_lr[:, ::-1]]).astype(np.float32)
  noisy_lr = (clean_lr + rng.normal(0, 0.05, clean_lr.shape)).astype(np.float32)
  reference = baselines.bilinear(clean_lr.astype(np.float64), (64, 64))
  plain = baselines.bilinear(noisy_lr, (64, 64))
  denoised = baselines.bilinear_nlm(noisy_lr, (64, 64))
  assert denoised.shape == (2, 64, 64, 2) and denoised.dtype == np.float32
  for n in range(2):
    for c in range(2):
      mse_plain = np.mean((plain[n, ..., c] - reference[n, ..., c]) ** 2)
      mse_nlm = np.mean((denoised[n, ..., c] - reference[n, ..., c]) ** 2)
      assert mse_nlm < 0.6 * mse_plain, (n, c, mse_nlm, mse_plain)
  # A given sigma is used as is; a 2-D slice keeps its shape; sigma 0 leaves bilinear alone.
  one = baselines.bilinear_nlm(noisy_lr[0, ..., 0], (64, 64), sigma=0.05)
  assert one.shape == (64, 64) and one.dtype == np.float32
  assert np.mean((one - reference[0, ..., 0]) ** 2) < np.mean(
      (plain[0, ..., 0] - reference[0, ..., 0]) ** 2)
  np.testing.assert_array_equal(baselines.bilinear_nlm(noisy_lr[0], (64, 64), sigma=0.0),
                                plain[0])


def test_registry():
  assert list(baselines.INTERPOLATION_BASELINES) == ["bicubic", "bilinear", "bilinear+nlm"]
  lr = np.random.default_rng(4).uniform(size=(1, 8, 8, 1))
  np.testing.assert_array_equal(baselines.INTERPOLATION_BASELINES["bicubic"](lr, (16, 16)),
                                degradation.upsample_bicubic(lr, (16, 16)))
  np.testing.assert_array_equal(baselines.INTERPOLATION_BASELINES["bilinear"](lr, (16, 16)),
                                baselines.resize_bilinear(lr, (16, 16)))
