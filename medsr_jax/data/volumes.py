"""Generic helpers that turn a 3-D medical volume into normalised, cropped 2-D slices.

These follow the reading rules the author's code applies to every dataset (reference spec §4.1,
§4.2) and work for any NIfTI / Analyze volume once it is an array (``nibabel.load(p).get_fdata()``):

  slices = axial_slices(volume)                    # (N, H, W), slice k = volume[:, :, k].T
  keep = nonempty_slice_mask(slices)               # OASIS rule: sum(slice) > 0
  slices = minmax_normalise(slices[keep])          # per volume, over the selected slices
  slices = margin_crop(slices, (24, 24))           # OASIS 208x176 -> 160x128 (RDST)

All functions are pure NumPy. Slices are stacked along a leading axis; the in-plane axes are 1 and 2
(a trailing channel axis, NHWC, is allowed in the crops). Bad input raises
`medsr_jax.errors.InputError`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medsr_jax.errors import InputError


def axial_slices(volume: np.ndarray, axis: int = 2) -> np.ndarray:
  """Cuts a 3-D volume into 2-D slices along `axis`, oriented as the reference reads them.

  For ``axis=2`` slice k is ``volume[:, :, k].T``, in-plane shape (Y, X): this is what the
  reference's ``np.swapaxes(vol, 0, 2)`` gives (spec §4.1). For another axis the axis is moved to
  the front and the in-plane pair (the remaining two axes, in order) is transposed, so slice k is
  always "the 2-D array of the other two axes, transposed". (The reference only ever slices axis 2;
  its swapaxes would not transpose for axes 0 and 1.)

  Args:
    volume: (X, Y, Z) array, or (X, Y, Z, 1) as OASIS Analyze files load; the singleton channel is
      squeezed.
    axis: the slicing axis, 0, 1 or 2 (negative values count from the end).

  Returns:
    (N, H, W) array of the same dtype (a view where NumPy can make one).
  """
  vol = np.asarray(volume)
  if vol.ndim == 4:
    if vol.shape[3] != 1:
      raise InputError(
          f"expected a 3-D volume or (X, Y, Z, 1), got shape {vol.shape} (multi-channel volumes"
          " must be split per channel first)")
    vol = vol[..., 0]
  if vol.ndim != 3:
    raise InputError(f"expected a 3-D volume, got shape {vol.shape}")
  if not -3 <= axis <= 2:
    raise InputError(f"slice axis must be 0, 1 or 2, got {axis}")
  return np.swapaxes(np.moveaxis(vol, axis, 0), 1, 2)


def minmax_normalise(volume_or_slices: np.ndarray) -> np.ndarray:
  """Min-max normalises an array to float32 in [0, 1]: ``(v - min) / (max - min)``.

  The reference normalises each volume over its *selected* slices, before any crop, with no
  percentile clipping (spec §4.1): pass exactly those slices. The arithmetic is float64 and the
  result is cast to float32 (and clipped against rounding).

  Raises:
    InputError: the array is empty, has non-finite values, or is constant.
  """
  v = np.asarray(volume_or_slices, dtype=np.float64)
  if v.size == 0:
    raise InputError("cannot normalise an empty volume (no slices selected?)")
  lo, hi = float(v.min()), float(v.max())
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise InputError("volume has NaN or infinite values; cannot min-max normalise it")
  if hi <= lo:
    raise InputError(f"volume is constant (every value is {lo:g}); cannot min-max normalise it")
  out = (v - lo) / (hi - lo)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def nonempty_slice_mask(slices: np.ndarray, threshold: float = 0) -> np.ndarray:
  """Returns a bool (N,) mask of slices whose sum exceeds `threshold` (OASIS rule: > 0, spec §4.2).

  BraTS / ACDC / COVID in the reference apply the same test with threshold 100 to the label slice.
  """
  s = np.asarray(slices)
  if s.ndim < 2:
    raise InputError(f"expected stacked slices (N, H, W), got shape {s.shape}")
  sums = s.reshape(s.shape[0], -1).sum(axis=1, dtype=np.float64)
  return sums > threshold


def _check_slices(slices: np.ndarray) -> np.ndarray:
  s = np.asarray(slices)
  if s.ndim not in (3, 4):
    raise InputError(f"expected slices of shape (N, H, W) or (N, H, W, C), got {s.shape}")
  return s


def _pair(value: Sequence[int], name: str) -> tuple[int, int]:
  try:
    a, b = (int(x) for x in value)
  except (TypeError, ValueError):
    raise InputError(f"{name} must be a pair of integers, got {value!r}") from None
  return a, b


def pad_to_at_least(slices: np.ndarray, hw: Sequence[int]) -> np.ndarray:
  """Edge-pads slices (axes 1, 2) up to at least `hw`, centred (the reference's ImagePadding).

  Slices already that large are returned unchanged. The extra row/column of an odd difference goes
  to the bottom/right.
  """
  s = _check_slices(slices)
  h, w = _pair(hw, "size")
  ph, pw = max(h - s.shape[1], 0), max(w - s.shape[2], 0)
  if ph == 0 and pw == 0:
    return s
  pad = [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (s.ndim - 3)
  return np.pad(s, pad, mode="edge")


def center_crop(slices: np.ndarray, hw: Sequence[int]) -> np.ndarray:
  """Crops the central (h, w) window of every slice; smaller slices are edge-padded up first.

  The window starts at ``((H - h) // 2, (W - w) // 2)``.

  Args:
    slices: (N, H, W) or (N, H, W, C).
    hw: output (h, w), both positive.

  Returns:
    (N, h, w[, C]) array (a view of the input when no padding was needed).
  """
  h, w = _pair(hw, "crop size")
  if h <= 0 or w <= 0:
    raise InputError(f"crop size must be positive, got {(h, w)}")
  s = pad_to_at_least(slices, (h, w))
  top, left = (s.shape[1] - h) // 2, (s.shape[2] - w) // 2
  return s[:, top:top + h, left:left + w]


def margin_crop(slices: np.ndarray, margins: Sequence[int]) -> np.ndarray:
  """Removes `m0` rows and `m1` columns from each border: ``img[m0:-m0, m1:-m1]`` (spec §4.2).

  OASIS 208x176 with margins (24, 24) gives the RDST 160x128 slices; (14, 16) gives MIASSR's
  180x144. A margin of 0 keeps that axis whole (the reference's ``img[0:-0]`` would be empty).

  Raises:
    InputError: a margin is negative or leaves nothing of the slice.
  """
  s = _check_slices(slices)
  m0, m1 = _pair(margins, "margins")
  if m0 < 0 or m1 < 0:
    raise InputError(f"margins must be >= 0, got {(m0, m1)}")
  h, w = s.shape[1] - 2 * m0, s.shape[2] - 2 * m1
  if h <= 0 or w <= 0:
    raise InputError(f"margins {(m0, m1)} leave nothing of slices of size {s.shape[1:3]}")
  return s[:, m0:m0 + h, m1:m1 + w]
