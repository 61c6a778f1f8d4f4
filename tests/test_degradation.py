"""Degradation against the OpenCV oracles (reference spec §4.3, §4.4, §11 item 1).

Run: .venv/bin/python -m pytest -q tests/test_degradation.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.data import degradation as deg
from medsr_jax.errors import InputError

_CASES = np.load(os.path.join(os.path.dirname(__file__), "data", "degradation_cases.npz"))
_TOL = 1e-5

# (output key, input key, out (H, W), blur after resizing)
_RESIZE_CASES = [
    ("lr_x4", "hr", (24, 24), False),
    ("lr_s2.5", "hr", (38, 38), False),
    ("lr_s2.5_blur", "hr", (38, 38), True),
    ("hr_s2.5_target", "hr", (95, 95), False),
    ("up_x4", "lr_x4", (96, 96), False),
    ("rect_lr_x4", "rect_hr", (40, 32), False),
    ("rect180_lr_s2.5_blur", "rect180_hr", (72, 57), True),
    ("rect180_gt_s2.5", "rect180_hr", (180, 142), False),
]
_SMOOTH_CASES = [
    ("smooth_lr_x4", "smooth_hr", (24, 24), False),
    ("smooth_lr_s2.5", "smooth_hr", (38, 38), False),
    ("smooth_lr_s2.5_blur", "smooth_hr", (38, 38), True),
]


def _all_cases():
  for out, inp, hw, blur in _RESIZE_CASES:
    yield out, inp, hw, blur
    yield out + "_f64", inp + "_f64", hw, blur
  yield from _SMOOTH_CASES


@pytest.mark.parametrize("out_key,in_key,hw,blur", list(_all_cases()))
def test_matches_opencv_oracle(out_key, in_key, hw, blur):
  x = _CASES[in_key]
  got = deg.resize_bicubic(x, hw)
  if blur:
    got = deg.gaussian_blur_3x3(got)
  want = _CASES[out_key]
  assert got.shape == want.shape
  assert got.dtype == x.dtype
  np.testing.assert_allclose(got, want, rtol=0, atol=_TOL)


def test_float64_path_is_bit_exact():
  # OpenCV's double path uses float32-rounded taps; we reproduce them exactly.
  for out, inp, hw, _ in _RESIZE_CASES:
    if "blur" in out:
      continue
    got = deg.resize_bicubic(_CASES[inp + "_f64"], hw)
    np.testing.assert_allclose(got, _CASES[out + "_f64"], rtol=0, atol=1e-12)


def test_degrade_end_to_end():
  lr = deg.degrade(_CASES["rect180_hr"], 2.5, blur=True)
  np.testing.assert_allclose(lr, _CASES["rect180_lr_s2.5_blur"], rtol=0, atol=_TOL)
  lr = deg.degrade(_CASES["rect_hr_f64"], 4)
  np.testing.assert_allclose(lr, _CASES["rect_lr_x4_f64"], rtol=0, atol=_TOL)
  lr = deg.degrade(_CASES["hr"], 2.5, blur=True, lr_hw=(38, 38))
  np.testing.assert_allclose(lr, _CASES["lr_s2.5_blur"], rtol=0, atol=_TOL)
  up = deg.upsample_bicubic(_CASES["lr_x4"], (96, 96))
  np.testing.assert_allclose(up, _CASES["up_x4"], rtol=0, atol=_TOL)


def test_matrix_rows_sum_to_one_and_are_cached_readonly():
  m = deg.cubic_resize_matrix(96, 38)
  assert m.shape == (38, 96) and m.dtype == np.float64
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
  assert deg.cubic_resize_matrix(96, 38) is m
  with pytest.raises(ValueError):
    m[0, 0] = 1.0


def test_identity_resize():
  x = _CASES["hr_f64"]
  np.testing.assert_allclose(deg.resize_bicubic(x, x.shape), x, atol=1e-12)


def test_nhwc_batching_matches_per_image():
  a, b = _CASES["rect_hr"], _CASES["rect_hr"][::-1, ::-1] * 0.5
  batch = np.stack([np.stack([a, b], -1), np.stack([b, a], -1)])  # (2, 160, 128, 2)
  got = deg.resize_bicubic(batch, (40, 32))
  assert got.shape == (2, 40, 32, 2)
  for n in range(2):
    for c in range(2):
      np.testing.assert_allclose(got[n, ..., c], deg.resize_bicubic(batch[n, ..., c], (40, 32)),
                                 atol=1e-6)
  hwc = deg.gaussian_blur_3x3(batch[0])
  np.testing.assert_allclose(hwc[..., 1], deg.gaussian_blur_3x3(batch[0, ..., 1]), atol=1e-7)
  np.testing.assert_allclose(deg.gaussian_blur_3x3(batch)[0], hwc, atol=1e-7)


def test_jax_matches_numpy():
  hr = _CASES["rect180_hr"]
  x = np.stack([hr, hr[::-1]])[..., None]  # (2, 180, 144, 1) float32
  fn = jax.jit(deg.resize_bicubic_jax, static_argnums=1)
  for hw in [(72, 57), (180, 142), (45, 36), (240, 200)]:
    got = np.asarray(fn(jnp.asarray(x), hw))
    np.testing.assert_allclose(got, deg.resize_bicubic(x, hw), rtol=0, atol=_TOL)
  lr = deg.gaussian_blur_3x3_jax(deg.resize_bicubic_jax(jnp.asarray(x), (72, 57)))
  np.testing.assert_allclose(np.asarray(lr)[0, ..., 0], _CASES["rect180_lr_s2.5_blur"],
                             rtol=0, atol=_TOL)


def test_blur_kernel_equals_opencv_kernel():
  kernel = _CASES["gauss_kernel"][:, 0]
  impulse = np.zeros((7, 7))
  impulse[3, 3] = 1.0
  out = deg.gaussian_blur_3x3(impulse)
  np.testing.assert_allclose(out[2:5, 3], kernel * kernel[1], atol=1e-15)
  np.testing.assert_allclose(out[2:5, 2:5], np.outer(kernel, kernel), atol=1e-15)
  # REFLECT_101 border: index -1 reads index 1.
  edge = np.zeros((5, 5))
  edge[1, 2] = 1.0
  assert deg.gaussian_blur_3x3(edge)[0, 2] == pytest.approx(0.5 * 0.5)


def test_lr_size_examples():
  assert deg.lr_size((180, 144), 2.5) == (72, 57)
  assert deg.lr_size((180, 144), 4) == (45, 36)
  assert deg.lr_size((160, 128), 4) == (40, 32)
  assert deg.lr_size((180, 144), 3.5) == (51, 41)
  with pytest.raises(InputError):
    deg.lr_size((4, 4), 8)


def test_noise():
  x = np.full((64, 64), 0.5, np.float32)
  y = deg.add_gaussian_noise(x, 0.1, np.random.default_rng(0))
  assert y.dtype == np.float32
  assert abs(float((y - x).std()) - 0.1) < 0.01
  y2 = deg.add_gaussian_noise(x, 0.1, np.random.default_rng(0))
  np.testing.assert_array_equal(y, y2)
  lr = deg.degrade(_CASES["hr"], 4, noise_sigma=0.05, rng=np.random.default_rng(1))
  assert 0.03 < float((lr - _CASES["lr_x4"]).std()) < 0.07
  with pytest.raises(InputError):
    deg.degrade(_CASES["hr"], 4, noise_sigma=0.05)


def test_jax_image_resize_does_not_match():
  # Guard: jax.image.resize (a=-0.5, anti-aliased) is NOT the OpenCV operator.
  x = jnp.asarray(_CASES["hr"])[None, ..., None]
  for hw, key in [((24, 24), "lr_x4"), ((38, 38), "lr_s2.5")]:
    ref = jax.image.resize(x, (1, *hw, 1), "cubic")[0, ..., 0]
    assert np.abs(np.asarray(ref) - _CASES[key]).max() > 1e-2
    ours = deg.resize_bicubic_jax(x, hw)[0, ..., 0]
    assert np.abs(np.asarray(ours) - _CASES[key]).max() < _TOL


def test_bad_inputs():
  with pytest.raises(InputError):
    deg.resize_bicubic(np.zeros((2, 3, 4, 5, 6)), (2, 2))
  with pytest.raises(InputError):
    deg.resize_bicubic(np.zeros((8, 8), np.uint8), (4, 4))
  with pytest.raises(InputError):
    deg.cubic_resize_matrix(0, 4)
