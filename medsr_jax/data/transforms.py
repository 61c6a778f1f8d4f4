"""Per-element training transforms: crops, ROI crops, channel selection, k-space noise, MS-GAN.

Every function here is a pure function of its inputs and, where random, of an explicit
`np.random.Generator` (the pipelines pass grain's per-element generator, keyed by the run's seed
and the global element index, so a stream never depends on threads, workers or process counts).
Images are (H, W, C) float32; labels (H, W) uint8.

Crops (reference spec §4.3)
  `random_crop_corner` draws the top then the left corner of a patch uniformly. RDST's
  `randint(0, H - P + 1)` includes the last position (`include_last=True`); MIASSR's meta-SR
  dataset calls `randint(0, H - P)`, which never draws it (`include_last=False`). Slices smaller
  than the patch are first edge-padded (`pad_to_at_least`, extra row/column last).

Lesion-focused ROI crops (thesis §3.2.2, §3.3.1)
  MS-GAN trains on whole ROIs, no random patches: a fixed-size window around the lesion. The
  thesis computes each ROI centre "by averaging the location of all masked pixels" of the manual
  label (all tumour labels fused), which is also the regression target of its lesion detector LD
  (eq. 3.8); LD then predicts the centre from the LR image (eq. 3.9, used at test time). Here
  `lesion_centre` is that centroid (label > 0), `roi_window` puts a window of the dataset's ROI
  size (`ROI_SIZES`: BraTS 120x120, LGE-CMR 160x120, DT-CMR 80x80, §3.3.1) whose pixel
  (h // 2, w // 2) is the rounded centre (top = round(cy) - h // 2, clamped into the slice), and
  `roi_crop` cuts image and label. A slice without lesion pixels uses the slice centre. An
  element may carry its own 'centre' (e.g. a detector's prediction): it then overrides the label.

Multi-modal channels
  Records hold every modality as a channel, named by the record/manifest (BraTS:
  't1ce', 't1', 't2', 'flair'). `select_channels` picks and orders channels by name, so the same
  shards serve 1-channel (MIASSR BraTS: ['t1ce']) and 4-channel models.

k-space additive white Gaussian noise (thesis §3.4.2, Table 3.3, Fig. 3.14)
  MS-GAN's noisy experiments add "additive white Gaussian noise (sigma = 20, 40) in k-space of
  LR images". The thesis gives no formula; `add_kspace_noise` implements, per channel,

    K  = F(x)                              F: 2-D DFT, `norm` 'ortho' (unitary, default) or
                                           'backward' (numpy / TensorFlow: unnormalised forward)
    K' = K + sigma * (n1 + i n2)           n1, n2 ~ N(0, 1) iid per k-space sample
    y  = |F^-1(K')|   (output='magnitude', MR magnitude images: Rician noise; default)
         Re F^-1(K')  (output='real')

  With the unitary DFT, F^-1 of the noise is again complex white noise with N(0, sigma^2) real
  and imaginary parts, so 'real' equals image-domain AWGN of std sigma and sigma is in units of
  the [0, 1] normalised image. With norm='backward' the image-domain std is sigma / sqrt(H * W),
  the thesis' likely convention (its numbers 20, 40 only make sense on unnormalised k-space or
  raw intensities; which one is not stated). Noise is drawn real parts first, then imaginary,
  shape (H, W, C). sigma = 0 returns the image unchanged.

MS-GAN triples (thesis eq. 3.22)
  HR = the ROI, HR/2 = HR downsampled x2, LR = HR downsampled x4 (both from the HR, not
  cascaded), with the OpenCV-exact bicubic of `degradation` (§3.3.3: OpenCV resizes). The thesis
  downsamples whole slices and then crops the ROI; here the ROI is cropped first (as every other
  pipeline here: patch first, then degrade), which only differs within two pixels of the ROI
  border. Optional 3x3 blur, image-domain and k-space noise apply to the LR only.

Speed
  The training pipelines synthesise each element's LR with `LrSynthesis`, which for an (H, W, C)
  float32 patch calls `degrade_hwc_float32` (and MIASSR's HR `resize_bicubic_hwc_float32`): the
  float64 products of `degradation.degrade` / `resize_bicubic` on operands of the same shapes and
  layouts, so bit-identical, without `np.tensordot`'s Python (96 -> 24: ~45 -> ~21 us).
  `random_patch` draws and crops as `random_crop_corner` + `crop` with fewer checks.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_transforms.py
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from medsr_jax.data import degradation
from medsr_jax.errors import InputError

# ROI (height, width) of each chapter-3 dataset, thesis §3.3.1.
ROI_SIZES = {'brats': (120, 120), 'lge_cmr': (160, 120), 'dt_cmr': (80, 80)}

KSPACE_OUTPUTS = ('magnitude', 'real')
FFT_NORMS = ('ortho', 'backward')


def parse_hw(size: Any, name: str = 'size') -> tuple[int, int]:
  """(h, w) from an int or a pair; InputError unless positive integers."""
  if type(size) is int and size >= 1:  # pylint: disable=unidiomatic-typecheck  (the hot path)
    return size, size
  try:
    pair = (size, size) if np.isscalar(size) else tuple(size)
    h, w = (int(v) for v in pair)
    ok = len(pair) == 2 and h == pair[0] and w == pair[1]
  except (TypeError, ValueError):
    ok = False
  if not ok or h < 1 or w < 1:
    raise InputError(f'{name} must be a positive integer or (height, width), got {size!r}')
  return h, w


def pad_to_at_least(image: np.ndarray, size_hw: Any) -> np.ndarray:
  """Edge-pads an (H, W, ...) image to at least size_hw (the extra row/column goes last)."""
  h, w = image.shape[:2]
  th, tw = parse_hw(size_hw)
  ph, pw = max(th - h, 0), max(tw - w, 0)
  if ph == 0 and pw == 0:
    return image
  pads = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (image.ndim - 2)
  return np.pad(image, pads, mode='edge')


def random_crop_corner(shape_hw: Sequence[int], size_hw: Any, rng: np.random.Generator, *,
                       include_last: bool = True) -> tuple[int, int]:
  """(top, left) of a uniformly drawn patch; draws top, then left, from `rng`.

  include_last=True: `integers(0, n - p + 1)` (RDST); False: `integers(0, max(n - p, 1))`
  (MIASSR's exclusive randint; a patch as large as the slice still gets corner 0).
  """
  ph, pw = parse_hw(size_hw)
  h, w = (int(v) for v in shape_hw[:2])
  if ph > h or pw > w:
    raise InputError(f'patch {ph}x{pw} does not fit in a {h}x{w} slice (pad it first)')
  extra = 1 if include_last else 0
  top = int(rng.integers(0, max(h - ph + extra, 1)))
  left = int(rng.integers(0, max(w - pw + extra, 1)))
  return top, left


def crop(image: np.ndarray, corner: Sequence[int], size_hw: Any) -> np.ndarray:
  """A contiguous copy of image[top:top + h, left:left + w]."""
  h, w = parse_hw(size_hw)
  top, left = corner
  return np.ascontiguousarray(image[top:top + h, left:left + w])


def random_patch(image: np.ndarray, size_hw: Any, rng: np.random.Generator, *,
                 include_last: bool = True) -> np.ndarray:
  """A random (h, w) patch of an (H, W, C) slice, edge-padded first if the slice is smaller.

  `pad_to_at_least`, `random_crop_corner` and `crop` in one (the same draws and values).
  """
  h, w = parse_hw(size_hw)
  image = np.asarray(image, np.float32)
  if image.shape[0] < h or image.shape[1] < w:
    image = pad_to_at_least(image, (h, w))
  extra = 1 if include_last else 0
  top = int(rng.integers(0, max(image.shape[0] - h + extra, 1)))
  left = int(rng.integers(0, max(image.shape[1] - w + extra, 1)))
  return np.ascontiguousarray(image[top:top + h, left:left + w])


# ----------------------------------------------------------------------------------------------
# Lesion-focused ROI.


def lesion_centre(label: np.ndarray) -> Optional[tuple[float, float]]:
  """(row, column) centroid of the pixels with label > 0 (all labels fused); None if none."""
  rows, cols = np.nonzero(np.asarray(label) > 0)
  if rows.size == 0:
    return None
  return float(rows.mean()), float(cols.mean())


def roi_window(shape_hw: Sequence[int], size_hw: Any,
               centre: Optional[Sequence[float]]) -> tuple[int, int]:
  """(top, left) of a size_hw window centred on `centre` (slice centre if None), kept inside.

  The window's pixel (h // 2, w // 2) is the centre rounded to the nearest pixel: top =
  round(cy) - h // 2, clamped to [0, H - h]; likewise left. The slice must be at least as large
  as the window (pad it first).
  """
  h, w = parse_hw(size_hw, 'ROI size')
  height, width = (int(v) for v in shape_hw[:2])
  if h > height or w > width:
    raise InputError(f'ROI {h}x{w} does not fit in a {height}x{width} slice (pad it first)')
  cy, cx = (height // 2, width // 2) if centre is None else (float(c) for c in centre)
  top = int(round(cy)) - h // 2
  left = int(round(cx)) - w // 2
  return min(max(top, 0), height - h), min(max(left, 0), width - w)


def roi_crop(image: np.ndarray, label: Optional[np.ndarray], size_hw: Any,
             centre: Optional[Sequence[float]] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """(image ROI, label ROI) around `centre`, else the lesion centroid of `label`.

  Slices smaller than the ROI are edge-padded (image) / zero-padded (label) symmetrically first,
  and the centre moves with the padding.
  """
  image = np.asarray(image)
  h, w = parse_hw(size_hw, 'ROI size')
  ph, pw = max(h - image.shape[0], 0), max(w - image.shape[1], 0)
  if centre is None and label is not None:
    centre = lesion_centre(label)
  if ph or pw:
    image = pad_to_at_least(image, (h, w))
    if label is not None:
      label = np.pad(np.asarray(label), ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    if centre is not None:
      centre = (centre[0] + ph // 2, centre[1] + pw // 2)
  corner = roi_window(image.shape, (h, w), centre)
  return crop(image, corner, (h, w)), (None if label is None else crop(label, corner, (h, w)))


# ----------------------------------------------------------------------------------------------
# Channels.


def channel_indices(have: Sequence[str], want: Optional[Sequence[str]]) -> tuple[int, ...]:
  """Indices into `have` of the modalities `want`, in `want`'s order (all of them if empty)."""
  have = [str(m) for m in have]
  if not want:
    return tuple(range(len(have)))
  missing = [m for m in want if m not in have]
  if missing:
    raise InputError(f'modalities {missing} are not in the data (it has {have})')
  return tuple(have.index(str(m)) for m in want)


def select_channels(image: np.ndarray, have: Sequence[str],
                    want: Optional[Sequence[str]]) -> np.ndarray:
  """The channels of (H, W, C) `image` named `want`, stacked in that order (a copy)."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != len(have):
    raise InputError(f'image of shape {image.shape} does not have the {len(have)} channels '
                     f'{list(have)}')
  return np.ascontiguousarray(image[..., list(channel_indices(have, want))])


# ----------------------------------------------------------------------------------------------
# Noise and LR synthesis.


def add_kspace_noise(image: np.ndarray, sigma: float, rng: np.random.Generator, *,
                     output: str = 'magnitude', norm: str = 'ortho') -> np.ndarray:
  """Complex white Gaussian noise added to the 2-D DFT of each channel (module docstring).

  Args:
    image: (H, W) or (H, W, C) float image.
    sigma: std of the real and of the imaginary part of each k-space noise sample (>= 0).
    rng: the generator; draws the real parts, then the imaginary parts, each `image.shape`.
    output: 'magnitude' (|.|, Rician) or 'real' (real part: image-domain AWGN).
    norm: DFT normalisation, 'ortho' (sigma in image units) or 'backward' (numpy / TF).

  Returns:
    The noisy image, same shape and dtype.
  """
  x = np.asarray(image)
  if not sigma >= 0:
    raise InputError(f'k-space noise sigma must be >= 0, got {sigma!r}')
  if output not in KSPACE_OUTPUTS:
    raise InputError(f'k-space noise output must be one of {KSPACE_OUTPUTS}, got {output!r}')
  if norm not in FFT_NORMS:
    raise InputError(f'k-space noise norm must be one of {FFT_NORMS}, got {norm!r}')
  if x.ndim not in (2, 3):
    raise InputError(f'k-space noise expects an (H, W) or (H, W, C) image, got {x.shape}')
  if sigma == 0:
    return x.copy()
  noise = rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)
  k = np.fft.fft2(x.astype(np.float64), axes=(0, 1), norm=norm) + float(sigma) * noise
  y = np.fft.ifft2(k, axes=(0, 1), norm=norm)
  y = np.abs(y) if output == 'magnitude' else y.real
  return y.astype(x.dtype)


def _apply_hwc(mat: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
  """`degradation._apply(mat, x, axis)` for an (H, W, C) float64 `x`, axis 0 or 1.

  The same `np.dot` on operands of the same shapes and memory layouts as `np.tensordot`'s (then
  the same `np.moveaxis` view), so the same BLAS call and bit-identical results, without the
  ~20 us of Python that tensordot and moveaxis spend per call.
  """
  if axis == 0:
    return np.dot(mat, x.reshape(x.shape[0], -1)).reshape((mat.shape[0],) + x.shape[1:])
  res = np.dot(mat, x.transpose(1, 0, 2).reshape(x.shape[1], -1))
  return res.reshape(mat.shape[0], x.shape[0], x.shape[2]).transpose(1, 0, 2)


def _separable(x: np.ndarray, mat_h: np.ndarray, mat_w: np.ndarray) -> np.ndarray:
  """`degradation.resize_separable` / `gaussian_blur_3x3` of an (H, W, C) float32 image with
  these matrices: float64 products, height then width, back to float32 (same casts, layouts)."""
  x = x.astype(np.float64)
  return _apply_hwc(mat_w, _apply_hwc(mat_h, x, 0), 1).astype(np.float32)


def resize_bicubic_hwc_float32(image: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
  """`degradation.resize_bicubic(image, out_hw)` for one (H, W, C) float32 image, bit for bit."""
  oh, ow = (int(v) for v in out_hw)
  return _separable(image, degradation.cubic_resize_matrix(image.shape[0], oh, 'float32'),
                    degradation.cubic_resize_matrix(image.shape[1], ow, 'float32'))


def degrade_hwc_float32(hr: np.ndarray, lr_hw: Sequence[int], *, blur: bool = False,
                        noise_sigma: float = 0.0,
                        rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """`degradation.degrade(hr, 1.0, blur=, noise_sigma=, rng=, lr_hw=)` for one (H, W, C)
  float32 patch, bit for bit (tests/test_transforms.py checks it), with less overhead: the
  training pipelines call it once per element."""
  oh, ow = (int(v) for v in lr_hw)
  lr = resize_bicubic_hwc_float32(hr, (oh, ow))
  if blur:
    lr = _separable(lr, degradation._blur_matrix(oh),  # pylint: disable=protected-access
                    degradation._blur_matrix(ow))  # pylint: disable=protected-access
  if noise_sigma:
    if rng is None:
      raise InputError('degrade: noise_sigma > 0 needs an explicit rng')
    lr = degradation.add_gaussian_noise(lr, noise_sigma, rng)
  return lr


@dataclasses.dataclass(frozen=True)
class LrSynthesis:
  """HR -> LR: exact bicubic, optional 3x3 blur, image noise, then k-space noise (in order)."""

  blur: bool = False
  noise_sigma: float = 0.0
  kspace_sigma: float = 0.0
  kspace_output: str = 'magnitude'
  kspace_norm: str = 'ortho'

  def __post_init__(self):
    if not self.noise_sigma >= 0 or not self.kspace_sigma >= 0:
      raise InputError(f'noise sigmas must be >= 0, got {self.noise_sigma!r}, '
                       f'{self.kspace_sigma!r}')
    if self.kspace_output not in KSPACE_OUTPUTS or self.kspace_norm not in FFT_NORMS:
      raise InputError(f'k-space output/norm must be in {KSPACE_OUTPUTS}/{FFT_NORMS}, got '
                       f'{self.kspace_output!r}/{self.kspace_norm!r}')

  def __call__(self, hr: np.ndarray, lr_hw: Sequence[int],
               rng: Optional[np.random.Generator]) -> np.ndarray:
    if isinstance(hr, np.ndarray) and hr.dtype == np.float32 and hr.ndim == 3:
      lr = degrade_hwc_float32(hr, lr_hw, blur=self.blur, noise_sigma=self.noise_sigma, rng=rng)
    else:
      lr = degradation.degrade(hr, 1.0, blur=self.blur, noise_sigma=self.noise_sigma, rng=rng,
                               lr_hw=tuple(lr_hw))
    if self.kspace_sigma:
      if rng is None:
        raise InputError('k-space noise needs an explicit rng')
      lr = add_kspace_noise(lr, self.kspace_sigma, rng, output=self.kspace_output,
                            norm=self.kspace_norm)
    return lr.astype(np.float32)


def _image_label(element: Any) -> tuple[np.ndarray, Optional[np.ndarray], Any]:
  if isinstance(element, Mapping):
    return element['image'], element.get('label'), element.get('centre')
  return element, None, None


@dataclasses.dataclass(frozen=True)
class MsganTriple:
  """grain random map: slice (+ label) -> {'lr', 'hr2', 'hr'} for MS-GAN (eq. 3.22).

  The element is an (H, W, C) image or a dict with 'image', 'label' (lesion map) and optional
  'centre' (row, column), e.g. from a shard source with labels. Output sizes for an ROI of
  h x w at scale s: hr (h, w), hr2 (int(h / 2), int(w / 2)), lr (int(h / s), int(w / s)).
  `intermediate=False` leaves out hr2 (lesion-focused training of single-output generators,
  LFSR, at any scale). `rng` is only drawn from by the LR noise.
  """

  roi_hw: tuple[int, int] = ROI_SIZES['brats']
  scale: float = 4.0
  lr: LrSynthesis = LrSynthesis()
  intermediate: bool = True

  def __post_init__(self):
    object.__setattr__(self, 'roi_hw', parse_hw(self.roi_hw, 'ROI size'))
    if self.intermediate and not self.scale > 2:
      raise InputError(f'MS-GAN needs a scale above the intermediate x2, got {self.scale!r}')
    if not self.scale > 0:
      raise InputError(f'scale must be > 0, got {self.scale!r}')

  def __call__(self, element: Any, rng: Optional[np.random.Generator] = None
               ) -> dict[str, np.ndarray]:
    image, label, centre = _image_label(element)
    hr, _ = roi_crop(np.asarray(image, np.float32), label, self.roi_hw, centre)
    h, w = self.roi_hw
    out = {'lr': self.lr(hr, (int(h / self.scale), int(w / self.scale)), rng), 'hr': hr}
    if self.intermediate:
      out['hr2'] = degradation.resize_bicubic(hr, (int(h / 2), int(w / 2))).astype(np.float32)
    return out
