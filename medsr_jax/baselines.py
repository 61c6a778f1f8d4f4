"""Interpolation baselines of the thesis: bicubic, bilinear, and bilinear + non-local means.

Chapter 3 compares its GANs with bilinear interpolation (thesis §3.3.2, Figs. 3.5-3.8) and, in
the noisy BraTS experiments, with "bilinear interpolation plus non-local means" (B+NLD, §3.4.2,
Table 3.3, citing Froment's pixelwise NL-means [296]). The thesis resized with OpenCV (§3.3.3),
so `resize_bilinear` reproduces `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` on float
images:
  * half-pixel centres: src = (dst + 0.5) * in / out - 0.5, with OpenCV's arithmetic (the
    scale is 1 / (out / in) in double, the position and the two weights are float32);
  * the source coordinate is clamped to [0, in - 1] (replicated border);
  * two taps, no anti-aliasing when downsampling (plain bilinear sampling). OpenCV routes an
    exact 2x2 downscale to INTER_AREA, which gives the same 0.5 / 0.5 averages.
It is applied as two dense 1-D matrices (height, then width) through
`degradation.resize_separable`, like the OpenCV-exact bicubic there.

`bilinear_nlm` denoises the bilinear result with scikit-image's `denoise_nl_means` (patch-wise
"fast mode"), one 2-D plane (slice, channel) at a time. The thesis gives no NL-means settings,
so the defaults follow scikit-image's own denoising example: 5x5 patches, search distance 6,
h = 0.8 * sigma. Unless given, sigma is estimated by `estimate_sigma` (wavelet MAD) on each LR
plane, where the additive noise of the thesis protocol is white. On the upsampled plane the
finest wavelet band is nearly empty (bilinear x2 leaves almost no diagonal detail): there the
estimate came out ~15x too small in a x2 check, and NL-means then did next to nothing.
scikit-image (and PyWavelets, which `estimate_sigma` needs) are imported only when
`bilinear_nlm` runs.

`INTERPOLATION_BASELINES` maps a name to `fn(lr, hr_hw) -> sr` for evaluation scripts.

Arrays are (H, W), (H, W, C) or (N, H, W, C) floats; sizes are (H, W), not cv2's (W, H).
Run the checks with:
  .venv/bin/python -m pytest -q tests/test_baselines.py
"""

import functools
import math
import warnings
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from medsr_jax.data import degradation
from medsr_jax.errors import InputError

# NL-means defaults (thesis silent; scikit-image's "Non-local means denoising" example).
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
NLM_H_FACTOR = 0.8


@functools.lru_cache(maxsize=256)
def linear_resize_matrix(in_size: int, out_size: int,
                         input_dtype: str = "float64") -> np.ndarray:
  """The 1-D `cv2.resize(INTER_LINEAR)` operator as a read-only float64 (out, in) matrix.

  OpenCV uses float32 tap positions and weights for every float input, so `input_dtype`
  (accepted for `degradation.resize_separable`) does not change the result.
  """
  in_size, out_size = int(in_size), int(out_size)
  if in_size < 1 or out_size < 1:
    raise InputError(f"resize sizes must be >= 1, got {in_size} -> {out_size}")
  if input_dtype not in ("float64", "float32"):
    raise InputError(f"input_dtype must be 'float64' or 'float32', got {input_dtype!r}")
  scale = 1.0 / (out_size / in_size)  # OpenCV: 1 / inv_scale, in double
  mat = np.zeros((out_size, in_size), np.float64)
  for o in range(out_size):
    src = np.float32((o + 0.5) * scale - 0.5)
    base = int(math.floor(src))
    frac = np.float32(src - np.float32(base))
    if base < 0:
      base, frac = 0, np.float32(0)
    if base >= in_size - 1:
      base, frac = in_size - 1, np.float32(0)
    mat[o, base] += float(np.float32(1) - frac)
    mat[o, min(base + 1, in_size - 1)] += float(frac)
  mat.setflags(write=False)
  return mat


def resize_bilinear(image, out_hw: Sequence[int]) -> np.ndarray:
  """OpenCV INTER_LINEAR resize of an HW / HWC / NHWC float image to `out_hw` = (H, W).

  Computes in float64 and returns the input dtype.
  """
  if len(tuple(out_hw)) != 2:
    raise InputError(f"out_hw must be (H, W), got {tuple(out_hw)}")
  return degradation.resize_separable(image, out_hw, linear_resize_matrix)


def bilinear(lr, hr_hw: Sequence[int]) -> np.ndarray:
  """The bilinear-interpolation baseline (thesis §3.3.2): `resize_bilinear(lr, hr_hw)`."""
  return resize_bilinear(lr, hr_hw)


def _nlm_module():
  try:
    from skimage import restoration  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("bilinear_nlm needs scikit-image and PyWavelets") from e
  return restoration


def _as_nhwc(x: np.ndarray) -> np.ndarray:
  return x[None, :, :, None] if x.ndim == 2 else (x[None] if x.ndim == 3 else x)


def bilinear_nlm(lr, hr_hw: Sequence[int], *, patch_size: int = NLM_PATCH_SIZE,
                 patch_distance: int = NLM_PATCH_DISTANCE, h_factor: float = NLM_H_FACTOR,
                 sigma: Optional[float] = None) -> np.ndarray:
  """B+NLD of thesis Table 3.3: bilinear upsampling, then non-local means per slice/channel.

  h = h_factor * sigma with sigma the noise level of the LR plane (see the module docstring).

  Args:
    lr: (h, w), (h, w, C) or (N, h, w, C) float LR image(s).
    hr_hw: output (H, W).
    patch_size: NL-means patch side (pixels).
    patch_distance: NL-means search radius (pixels); the window is 2 * d + 1 wide.
    h_factor: filtering strength h = h_factor * sigma.
    sigma: noise standard deviation of the LR image (same units as the image); None:
      estimated for every LR (slice, channel) plane with `skimage.restoration.estimate_sigma`.
      It is also passed to `denoise_nl_means` (fast mode discounts it in patch distances).

  A plane whose h is not positive (e.g. a constant slice, estimated sigma 0) is left as the
  bilinear result. Returns the shape of `resize_bilinear` and the input dtype.
  """
  if int(patch_size) != patch_size or patch_size < 1:
    raise InputError(f"patch_size must be a positive integer, got {patch_size}")
  if int(patch_distance) != patch_distance or patch_distance < 1:
    raise InputError(f"patch_distance must be a positive integer, got {patch_distance}")
  if not h_factor > 0:
    raise InputError(f"h_factor must be > 0, got {h_factor}")
  if sigma is not None and not sigma >= 0:
    raise InputError(f"sigma must be >= 0 or None, got {sigma}")
  up = resize_bilinear(lr, hr_hw)
  restoration = _nlm_module()
  planes, lr_planes = (_as_nhwc(np.asarray(a, np.float64)) for a in (up, lr))
  out = planes.copy()
  for n in range(planes.shape[0]):
    for c in range(planes.shape[3]):
      plane = planes[n, :, :, c]
      if sigma is None:
        with warnings.catch_warnings():  # small grey planes look like colour images to it
          warnings.simplefilter('ignore', UserWarning)
          s = float(restoration.estimate_sigma(lr_planes[n, :, :, c], channel_axis=None))
      else:
        s = float(sigma)
      h = h_factor * s
      if not h > 0:
        continue
      out[n, :, :, c] = restoration.denoise_nl_means(
          plane, patch_size=int(patch_size), patch_distance=int(patch_distance), h=h,
          sigma=s, fast_mode=True, preserve_range=True)
  return out.reshape(up.shape).astype(up.dtype)


# name -> fn(lr, hr_hw) -> sr. Bicubic is OpenCV INTER_CUBIC (= evaluate.bicubic_baseline).
INTERPOLATION_BASELINES: Dict[str, Callable[..., np.ndarray]] = {
    "bicubic": degradation.upsample_bicubic,
    "bilinear": bilinear,
    "bilinear+nlm": bilinear_nlm,
}
