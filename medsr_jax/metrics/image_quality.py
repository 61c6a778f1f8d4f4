"""PSNR and SSIM exactly as the authors compute them, plus the evaluation border crop.

Reference spec §8.1, §8.2 and §11 item 7:
  * every metric is computed per slice after cropping ceil(s) pixels from each border of both
    GT and prediction; predictions are NOT clipped or quantised;
  * PSNR = 10 log10(range^2 / MSE), MSE in float64 over all elements;
  * SSIM = skimage `structural_similarity(data_range=1)` defaults: 7x7 uniform window,
    K1 = 0.01, K2 = 0.03, sample covariance (N / (N - 1)), mean over the SSIM map after
    excluding a 3-pixel border (i.e. over fully valid windows only), channels averaged.
skimage is not a dependency: the windows are box sums over valid positions, in float64
(skimage itself drops to float32 for float32 inputs; we always use float64).

Pure numpy. Images are HW or HWC (crop_border also accepts NHWC).
Run the checks with:
  .venv/bin/python -m pytest -q tests/test_image_quality.py
"""

import math
from typing import Iterable, Tuple

import numpy as np

from medsr_jax.errors import InputError

_WIN = 7
_K1 = 0.01
_K2 = 0.03


def _pair(gt, pred) -> Tuple[np.ndarray, np.ndarray]:
  gt = np.asarray(gt, dtype=np.float64)
  pred = np.asarray(pred, dtype=np.float64)
  if gt.shape != pred.shape:
    raise InputError(f"shape mismatch: gt {gt.shape} vs prediction {pred.shape}")
  if gt.size == 0:
    raise InputError("cannot score empty images")
  return gt, pred


def psnr(gt, pred, data_range: float = 1.0) -> float:
  """Peak signal-to-noise ratio in dB; `inf` for identical images."""
  gt, pred = _pair(gt, pred)
  mse = float(np.mean(np.square(gt - pred)))
  if mse == 0.0:
    return math.inf
  return 10.0 * math.log10(float(data_range) ** 2 / mse)


def _box_mean_valid(x: np.ndarray, win: int) -> np.ndarray:
  """Mean over every fully valid win x win window of a 2-D array (separable cumsums)."""
  for axis in (0, 1):
    c = np.cumsum(x, axis=axis)
    zero = np.zeros_like(np.take(c, [0], axis=axis))
    c = np.concatenate([zero, c], axis=axis)
    n = x.shape[axis]
    x = np.take(c, np.arange(win, n + 1), axis=axis) - np.take(c, np.arange(0, n + 1 - win),
                                                               axis=axis)
  return x / float(win * win)


def _ssim_2d(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
  n = _WIN * _WIN
  cov_norm = n / (n - 1.0)
  ux, uy = _box_mean_valid(x, _WIN), _box_mean_valid(y, _WIN)
  uxx = _box_mean_valid(x * x, _WIN)
  uyy = _box_mean_valid(y * y, _WIN)
  uxy = _box_mean_valid(x * y, _WIN)
  vx = cov_norm * (uxx - ux * ux)
  vy = cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  c1 = (_K1 * data_range) ** 2
  c2 = (_K2 * data_range) ** 2
  num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
  den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
  return float(np.mean(num / den))


def ssim(gt, pred, data_range: float = 1.0) -> float:
  """Structural similarity, equal to skimage's defaults; HWC averages the channels."""
  gt, pred = _pair(gt, pred)
  if gt.ndim not in (2, 3):
    raise InputError(f"ssim expects an HW or HWC image, got shape {gt.shape}")
  if min(gt.shape[:2]) < _WIN:
    raise InputError(f"ssim needs images of at least {_WIN}x{_WIN}, got {gt.shape[:2]}")
  if gt.ndim == 2:
    return _ssim_2d(gt, pred, float(data_range))
  scores = [_ssim_2d(gt[..., c], pred[..., c], float(data_range))
            for c in range(gt.shape[-1])]
  return float(np.mean(scores))


def crop_border(image, margin: int) -> np.ndarray:
  """Drops `margin` pixels from every side of H and W (HW, HWC or NHWC) (§8.1)."""
  x = np.asarray(image)
  margin = int(margin)
  if margin < 0:
    raise InputError(f"crop margin must be >= 0, got {margin}")
  if margin == 0:
    return x
  if x.ndim in (2, 3):
    ah = 0
  elif x.ndim == 4:
    ah = 1
  else:
    raise InputError(f"expected an HW, HWC or NHWC image, got shape {x.shape}")
  h, w = x.shape[ah], x.shape[ah + 1]
  if 2 * margin >= min(h, w):
    raise InputError(f"crop margin {margin} leaves nothing of a {h}x{w} image")
  index = [slice(None)] * x.ndim
  index[ah] = slice(margin, h - margin)
  index[ah + 1] = slice(margin, w - margin)
  return x[tuple(index)]


def evaluation_margin(scale: float) -> int:
  """The evaluation border crop for scale s: int(ceil(s)) (4 pixels at x4, 3 at x2.5)."""
  if scale <= 0:
    raise InputError(f"scale must be > 0, got {scale}")
  return int(math.ceil(scale))


def slice_scores(gt, pred, scale: float) -> Tuple[float, float]:
  """(PSNR, SSIM) of one slice as the authors report it: crop ceil(s), no clipping."""
  gt, pred = _pair(gt, pred)
  m = evaluation_margin(scale)
  gt, pred = crop_border(gt, m), crop_border(pred, m)
  return psnr(gt, pred, 1.0), ssim(gt, pred, 1.0)


def summarise(values: Iterable[float]) -> Tuple[float, float]:
  """(mean, std) with numpy's population std (ddof 0), for 'mean (std)' tables."""
  v = np.asarray(list(values), dtype=np.float64)
  if v.size == 0:
    raise InputError("cannot summarise an empty list of scores")
  return float(v.mean()), float(v.std())
