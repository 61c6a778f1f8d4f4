"""ROI detection accuracy of the lesion detector (thesis §3.4.2, Fig. 3.12, Table 3.2): pure numpy.

The thesis judges a predicted ROI box by the share of the lesion ("tumour") pixels it covers:

  perfect      the box covers 100 % of the lesion;
  acceptable   it covers more than 95 % (and less than 100 %);
  bad          every other case, i.e. 95 % or less.

Table 3.2's caption writes "bad (< 95%)"; the text says acceptable is "more than 95%" and
"the other cases are called bad", so a coverage of exactly 95 % is bad here (`ACCEPTABLE_ABOVE`).
A coverage is a ratio of integer pixel counts k / n; IEEE division rounds it correctly, so a ratio
that equals 0.95 exactly gives the same double as the literal 0.95 and the comparison is exact.
A slice without lesion pixels has no coverage: `coverage` returns NaN and `accuracy_level`
refuses it (such slices are left out of training and evaluation).

Coordinates. The detector regresses the lesion centre in units of the image it is given
(`normalised_targets`: c_x = (col + 0.5) / W, c_y = (row + 0.5) / H, pixel centres at half
integers), so one network serves HR and LR images (trained on HR, run on LR, thesis §3.2.2).
`centres_from_normalised` maps a prediction back to (row, col) pixels of any image size (the HR
slice, where the ROI box is placed).

  from medsr_jax.metrics import roi_detection as rd
  rc = rd.centres_from_normalised(pred_xy, (240, 240))
  box = rd.roi_box((240, 240), (120, 120), rc[0])          # (top, left, h, w), clamped
  level = rd.accuracy_level(rd.coverage(mask, box))

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_detector.py
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from medsr_jax.data import transforms
from medsr_jax.errors import InputError

PERFECT, ACCEPTABLE, BAD = 'perfect', 'acceptable', 'bad'
LEVELS = (PERFECT, ACCEPTABLE, BAD)
ACCEPTABLE_ABOVE = 0.95  # coverage > this (and < 1) is acceptable; <= this is bad
TARGET_CONVENTION = 'normalised (x, y), half-pixel'


def _hw(hw: Sequence[int]) -> tuple[int, int]:
  h, w = (int(v) for v in tuple(hw)[:2])
  if h < 1 or w < 1:
    raise InputError(f'image size must be positive, got {tuple(hw)}')
  return h, w


def coverage(mask: np.ndarray, box: Sequence[int]) -> float:
  """Fraction of the True pixels of `mask` (H, W) inside `box` = (top, left, h, w); NaN if none.

  The box may reach outside the image; only its part inside counts.
  """
  mask = np.asarray(mask, bool)
  if mask.ndim != 2:
    raise InputError(f'a lesion mask is (H, W), got shape {mask.shape}')
  top, left, h, w = (int(v) for v in box)
  if h < 0 or w < 0:
    raise InputError(f'box height and width must be >= 0, got {tuple(box)}')
  total = int(mask.sum())
  if total == 0:
    return float('nan')
  t, l = max(top, 0), max(left, 0)
  inside = int(mask[t:max(top + h, 0), l:max(left + w, 0)].sum())
  return inside / total


def accuracy_level(cov: float) -> str:
  """'perfect' (1.0), 'acceptable' (> 0.95 and < 1) or 'bad' (<= 0.95) (module docstring)."""
  cov = float(cov)
  if np.isnan(cov):
    raise InputError('coverage is undefined for a slice without lesion pixels')
  if not 0.0 <= cov <= 1.0:
    raise InputError(f'coverage must be in [0, 1], got {cov}')
  if cov == 1.0:
    return PERFECT
  return ACCEPTABLE if cov > ACCEPTABLE_ABOVE else BAD


def level_counts(levels: Iterable[str]) -> dict[str, int]:
  """{'perfect': n, 'acceptable': n, 'bad': n} (every level present, in that order)."""
  counts = {k: 0 for k in LEVELS}
  for level in levels:
    if level not in counts:
      raise InputError(f'unknown accuracy level {level!r}; expected one of {LEVELS}')
    counts[level] += 1
  return counts


def normalised_targets(centres_rc: np.ndarray, hw: Sequence[int]) -> np.ndarray:
  """(row, col) pixel centres (N, 2) or (2,) of (H, W) images -> (x, y) = ((col + 0.5) / W,
  (row + 0.5) / H), float32, same leading shape."""
  h, w = _hw(hw)
  rc = np.asarray(centres_rc, np.float64)
  if rc.shape[-1:] != (2,):
    raise InputError(f'centres must be (..., 2) (row, col), got shape {rc.shape}')
  xy = np.stack([(rc[..., 1] + 0.5) / w, (rc[..., 0] + 0.5) / h], axis=-1)
  return xy.astype(np.float32)


def centres_from_normalised(pred_xy: np.ndarray, hw: Sequence[int]) -> np.ndarray:
  """Normalised (x, y) (N, 2) or (2,) -> (row, col) = (y * H - 0.5, x * W - 0.5) pixels of an
  (H, W) image, float64 (the inverse of `normalised_targets`)."""
  h, w = _hw(hw)
  xy = np.asarray(pred_xy, np.float64)
  if xy.shape[-1:] != (2,):
    raise InputError(f'predictions must be (..., 2) (x, y), got shape {xy.shape}')
  return np.stack([xy[..., 1] * h - 0.5, xy[..., 0] * w - 0.5], axis=-1)


def roi_box(hw: Sequence[int], roi_hw: Sequence[int], centre_rc: Sequence[float]
            ) -> tuple[int, int, int, int]:
  """(top, left, h, w) of the ROI around `centre_rc`, clamped into the slice exactly as the ROI
  training crop places it (`transforms.roi_window`). A non-finite centre gets the slice centre."""
  centre = None if not np.all(np.isfinite(np.asarray(centre_rc, np.float64))) else centre_rc
  top, left = transforms.roi_window(_hw(hw), tuple(roi_hw), centre)
  return top, left, int(roi_hw[0]), int(roi_hw[1])


def detection_report(pred_rc: np.ndarray, true_rc: np.ndarray, masks: np.ndarray,
                     roi_hw: Sequence[int]) -> dict[str, np.ndarray]:
  """Per-slice boxes, coverages, levels and centre errors of predicted centres on HR slices.

  pred_rc, true_rc: (N, 2) (row, col) in pixels of the (N, H, W) lesion `masks`. Returns
  {'box' (N, 4) int, 'coverage' (N,), 'level' (N,) str, 'error' (N,) Euclidean px}.
  """
  masks = np.asarray(masks, bool)
  pred_rc, true_rc = np.asarray(pred_rc, np.float64), np.asarray(true_rc, np.float64)
  n = masks.shape[0]
  if masks.ndim != 3 or pred_rc.shape != (n, 2) or true_rc.shape != (n, 2):
    raise InputError(f'detection_report needs masks (N, H, W) and centres (N, 2); got '
                     f'{masks.shape}, {pred_rc.shape}, {true_rc.shape}')
  boxes = np.asarray([roi_box(masks.shape[1:], roi_hw, c) for c in pred_rc], np.int64)
  boxes = boxes.reshape(n, 4)
  cov = np.asarray([coverage(m, b) for m, b in zip(masks, boxes)], np.float64)
  levels = np.asarray([accuracy_level(c) for c in cov], dtype=object)
  error = np.sqrt(np.sum(np.square(pred_rc - true_rc), axis=-1))
  return {'box': boxes, 'coverage': cov, 'level': levels, 'error': error}


def summary(report: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Counts and fractions of the levels, and the mean centre error, of a `detection_report`."""
  n = len(report['coverage'])
  counts = level_counts(report['level'])
  out: dict[str, float] = {'count': n}
  for k, v in counts.items():
    out[k] = v
    out[f'{k}_fraction'] = v / n if n else float('nan')
  out['centre_error'] = float(np.mean(report['error'])) if n else float('nan')
  out['mean_coverage'] = float(np.mean(report['coverage'])) if n else float('nan')
  return out


def markdown_table(rows: Mapping[str, Mapping[str, float]]) -> str:
  """Thesis Table 3.2 layout: one row per label ('x4', ...) of `summary` dicts, counts (percent)
  of perfect / acceptable / bad detections, plus the slice count, the mean lesion coverage and
  the mean centre error in HR pixels."""
  lines = ['| | Perfect Detection | Acceptable Detection | Bad Detection | Slices | '
           'Mean coverage | Mean centre error (px) |',
           '|---|---|---|---|---|---|---|']
  for label, s in rows.items():
    cells = [f"{int(s[k])} ({100 * s[f'{k}_fraction']:.1f}%)" for k in LEVELS]
    lines.append(f"| {label} | {' | '.join(cells)} | {int(s['count'])} | "
                 f"{100 * s['mean_coverage']:.1f}% | {s['centre_error']:.2f} |")
  return '\n'.join(lines)
