"""Exact low-resolution synthesis: OpenCV-equivalent bicubic, the MIASSR 3x3 blur, noise.

The authors build every LR image with `cv2.resize(..., interpolation=cv2.INTER_CUBIC)`
(reference spec §4.3, §4.4, §11 item 1):
  * Keys cubic kernel with a = -0.75, half-pixel centres
    (src = (dst + 0.5) * in / out - 0.5), four taps floor(src) - 1 .. floor(src) + 2,
    border indices clamped (replicated), and NO anti-aliasing when downsampling.
  * MIASSR then blurs the LR image with `cv2.GaussianBlur(ksize=(3, 3), sigma=0)`, i.e. the
    separable kernel [0.25, 0.5, 0.25] with BORDER_REFLECT_101.
  * Thesis eq. 5.15 adds Gaussian noise on top: I_lr = (I_hr * k) downarrow_s + n.

`jax.image.resize(..., 'cubic')` uses a = -0.5 and anti-aliases, so it does not match; the
operators here are built by hand as dense 1-D matrices and applied separably (height, then
width). OpenCV's float64 path rounds tap positions and weights to float32, while its float32
path (like torch's bicubic) uses exact weights; `cubic_resize_matrix(..., input_dtype)` returns
the operator OpenCV applies for that input dtype, so both oracle families match to ~1e-7 or
better (float64: bit-for-bit).

Arrays are (H, W), (H, W, C) or (N, H, W, C); the spatial axes are the first two of HW/HWC
and axes 1, 2 of NHWC. Run the checks with:
  .venv/bin/python -m pytest -q tests/test_degradation.py
"""

import functools
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.errors import InputError

_A = -0.75  # OpenCV's INTER_CUBIC Keys parameter.


def _keys_weights(t, dt) -> Tuple:
  """The four Keys weights for fractional offset `t`, evaluated in dtype `dt`."""
  a, one = dt(_A), dt(1)
  t = dt(t)
  u, v = t + one, one - t
  w0 = ((a * u - dt(5) * a) * u + dt(8) * a) * u - dt(4) * a
  w1 = ((a + dt(2)) * t - (a + dt(3))) * t * t + one
  w2 = ((a + dt(2)) * v - (a + dt(3))) * v * v + one
  return w0, w1, w2, one - w0 - w1 - w2


@functools.lru_cache(maxsize=256)
def cubic_resize_matrix(in_size: int, out_size: int,
                        input_dtype: str = "float64") -> np.ndarray:
  """The 1-D `cv2.resize(INTER_CUBIC)` operator as a read-only float64 (out, in) matrix.

  Args:
    in_size: source length.
    out_size: destination length.
    input_dtype: "float64" gives OpenCV's double-precision path (tap positions and weights
      rounded to float32, bit-exact on float64 images, which is what the authors fed it);
      "float32" gives exact Keys weights (OpenCV's float32 path, torch bicubic).
  """
  in_size, out_size = int(in_size), int(out_size)
  if in_size < 1 or out_size < 1:
    raise InputError(f"resize sizes must be >= 1, got {in_size} -> {out_size}")
  if input_dtype not in ("float64", "float32"):
    raise InputError(f"input_dtype must be 'float64' or 'float32', got {input_dtype!r}")
  low = input_dtype == "float64"
  dt = np.float32 if low else np.float64
  scale = in_size / out_size
  mat = np.zeros((out_size, in_size), np.float64)
  for o in range(out_size):
    src = (o + 0.5) * scale - 0.5
    if low:
      src = np.float32(src)
    base = int(np.floor(src))
    frac = src - dt(base)
    for k, w in enumerate(_keys_weights(frac, dt)):
      mat[o, min(max(base - 1 + k, 0), in_size - 1)] += float(w)
  mat.setflags(write=False)
  return mat


@functools.lru_cache(maxsize=256)
def _blur_matrix(n: int) -> np.ndarray:
  """[0.25, 0.5, 0.25] as an (n, n) matrix with BORDER_REFLECT_101 (-1 -> 1, n -> n-2)."""
  mat = np.zeros((n, n), np.float64)
  for i in range(n):
    for off, w in ((-1, 0.25), (0, 0.5), (1, 0.25)):
      j = i + off
      if n > 1:
        j = -j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j)
      else:
        j = 0
      mat[i, j] += w
  mat.setflags(write=False)
  return mat


def _spatial_axes(ndim: int) -> Tuple[int, int]:
  if ndim in (2, 3):
    return 0, 1
  if ndim == 4:
    return 1, 2
  raise InputError(f"expected an HW, HWC or NHWC image, got {ndim} dimensions")


def _apply(mat: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
  """Multiplies `mat` (out, in) into axis `axis` of `x`."""
  return np.moveaxis(np.tensordot(mat, x, axes=([1], [axis])), 0, axis)


def _as_float(image) -> Tuple[np.ndarray, np.dtype, str]:
  x = np.asarray(image)
  if not np.issubdtype(x.dtype, np.floating):
    raise InputError(f"expected a floating-point image, got dtype {x.dtype}")
  kind = "float64" if x.dtype == np.float64 else "float32"
  return x.astype(np.float64), x.dtype, kind


def resize_separable(image, out_hw: Sequence[int], matrix_fn) -> np.ndarray:
  """Resizes an HW / HWC / NHWC float image with 1-D operators, height then width.

  `matrix_fn(in_size, out_size, input_dtype)` returns the (out, in) matrix ("float64" or
  "float32" names the input dtype). Computes in float64 and returns the input dtype.
  """
  x, dtype, kind = _as_float(image)
  ah, aw = _spatial_axes(x.ndim)
  oh, ow = (int(v) for v in out_hw)
  x = _apply(matrix_fn(x.shape[ah], oh, kind), x, ah)
  x = _apply(matrix_fn(x.shape[aw], ow, kind), x, aw)
  return x.astype(dtype)


def resize_bicubic(image, out_hw: Sequence[int]) -> np.ndarray:
  """OpenCV INTER_CUBIC resize of an HW / HWC / NHWC image to `out_hw` = (H, W).

  Computes in float64 and returns the input dtype. Note the argument is (H, W), not cv2's
  (W, H).
  """
  return resize_separable(image, out_hw, cubic_resize_matrix)


def upsample_bicubic(lr, out_hw: Sequence[int]) -> np.ndarray:
  """The bicubic baseline (and the 'res' image): the same operator as `resize_bicubic`."""
  return resize_bicubic(lr, out_hw)


def resize_bicubic_jax(x: jax.Array, out_hw: Sequence[int]) -> jax.Array:
  """`resize_bicubic` on device for an NHWC array; `out_hw` must be static under jit."""
  if x.ndim != 4:
    raise InputError(f"resize_bicubic_jax expects NHWC, got shape {tuple(x.shape)}")
  kind = "float64" if x.dtype == jnp.float64 else "float32"
  mh = jnp.asarray(cubic_resize_matrix(x.shape[1], int(out_hw[0]), kind), x.dtype)
  mw = jnp.asarray(cubic_resize_matrix(x.shape[2], int(out_hw[1]), kind), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("ah,nhwc->nawc", mh, x, precision=hi)
  return jnp.einsum("bw,nawc->nabc", mw, x, precision=hi)


def gaussian_blur_3x3(image) -> np.ndarray:
  """MIASSR's `cv2.GaussianBlur(img, (3, 3), 0)`: separable [.25, .5, .25], REFLECT_101."""
  x, dtype, _ = _as_float(image)
  ah, aw = _spatial_axes(x.ndim)
  x = _apply(_blur_matrix(x.shape[ah]), x, ah)
  x = _apply(_blur_matrix(x.shape[aw]), x, aw)
  return x.astype(dtype)


def gaussian_blur_3x3_jax(x: jax.Array) -> jax.Array:
  """`gaussian_blur_3x3` on device for an NHWC array."""
  if x.ndim != 4:
    raise InputError(f"gaussian_blur_3x3_jax expects NHWC, got shape {tuple(x.shape)}")
  mh = jnp.asarray(_blur_matrix(x.shape[1]), x.dtype)
  mw = jnp.asarray(_blur_matrix(x.shape[2]), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("ah,nhwc->nawc", mh, x, precision=hi)
  return jnp.einsum("bw,nawc->nabc", mw, x, precision=hi)


def add_gaussian_noise(image, sigma: float,
                       rng: np.random.Generator) -> np.ndarray:
  """Adds N(0, sigma^2) noise (the n of thesis eq. 5.15); no clipping, dtype kept."""
  x = np.asarray(image)
  if sigma < 0:
    raise InputError(f"noise sigma must be >= 0, got {sigma}")
  if sigma == 0:
    return x.copy()
  noise = rng.standard_normal(x.shape) * float(sigma)
  return (x.astype(np.float64) + noise).astype(x.dtype)


def lr_size(hr_hw: Sequence[int], scale: float) -> Tuple[int, int]:
  """LR size of the test protocol (§4.4): (int(H // s), int(W // s)).

  Python float floor division, as the authors wrote it: 180x144 at 2.5 -> 72x57. Beware that
  it can differ from int(H / s) (MIASSR training, §4.3), e.g. 96 // 1.2 == 79 but int(96/1.2)
  == 80.
  """
  if scale <= 0:
    raise InputError(f"scale must be > 0, got {scale}")
  h, w = hr_hw
  out = int(h // scale), int(w // scale)
  if min(out) < 1:
    raise InputError(f"image {h}x{w} is too small for scale {scale}")
  return out


def degrade(hr, scale: float, *, blur: bool = False, noise_sigma: float = 0.0,
            rng: Optional[np.random.Generator] = None,
            lr_hw: Optional[Sequence[int]] = None) -> np.ndarray:
  """HR -> LR: bicubic to `lr_hw` (default `lr_size`), then optional blur, then noise.

  RDST: blur=False (§4.3). MIASSR: blur=True; the blur is applied to the LR image, after
  downsampling (§4.3 step 3). Noise needs an explicit `rng` so runs are reproducible.
  """
  x = np.asarray(hr)
  ah, aw = _spatial_axes(x.ndim)
  if lr_hw is None:
    lr_hw = lr_size((x.shape[ah], x.shape[aw]), scale)
  lr = resize_bicubic(x, lr_hw)
  if blur:
    lr = gaussian_blur_3x3(lr)
  if noise_sigma:
    if rng is None:
      raise InputError("degrade: noise_sigma > 0 needs an explicit rng")
    lr = add_gaussian_noise(lr, noise_sigma, rng)
  return lr
