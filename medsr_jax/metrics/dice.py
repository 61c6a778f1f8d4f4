"""Dice coefficients of segmentation label maps (thesis §5.3.2, Eq. 5.16; reference spec §8.5).

The thesis judges SR images by segmenting them with a U-Net trained on HR slices and scoring the
predicted labels with the Dice coefficient 2|P ∩ G| / (|P| + |G|), per 2-D slice, for the whole
region and for each tissue / sub-region of a dataset (Tables 5.1-5.4, 5.8). Pure numpy.

  per_class(pred, gt, num_classes)      Dice of every label value on one slice (or any shape)
  region_dice(pred, gt, regions)        {region: (N,) per-slice Dice} of (N, H, W) stacks
  REGIONS[dataset], region_names(dataset)   the regions the thesis reports, in its column order

Label conventions (integer maps; 0 is the background everywhere):
  oasis     1 CSF, 2 grey matter (GM), 3 white matter (WM)   (FSL FAST tissue classes)
  brats     1 NCR/NET (necrotic / non-enhancing core), 2 ED (peritumoral edema),
            3 ET (enhancing tumour; the original label 4, remapped to 3 as in spec §5.16)
  acdc      1 RV cavity, 2 myocardium (MC), 3 LV cavity
  covid_ct  1 left lung (LL), 2 right lung (RL), 3 infection (lesion)   (Zenodo record 3757476)

A region is a union of label values. Multi-label regions can be scored two ways (`whole=`):
  'union'   the thesis' Eq. 5.16, Dice-T = Dice(P_sr, L_GT) of the whole region: a pixel counts
            as matched when both maps put it anywhere in the region (a GM / WM swap inside the
            brain is not an error of Dice-T);
  'pooled'  the author's figure scripts (`utils/save_rdst_results*.py`, spec §8.5):
            2 Σ_c |G_c ∩ P_c| / (Σ_c |G_c| + Σ_c |P_c|) over the region's classes c, i.e. a
            pixel only matches with the same class.
Both are the same for one-label regions. Where a slice has no pixel of a region in either map
the Dice is undefined: NaN here (the slice is left out of that region's mean; the author's code
adds 1e-6 to numerator and denominator instead, which scores such a slice 1).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_dice_metrics.py
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from medsr_jax.errors import InputError

# Label value -> name, per dataset (see the module docstring).
LABELS: dict[str, tuple[str, ...]] = {
    "oasis": ("background", "CSF", "GM", "WM"),
    "brats": ("background", "NCR/NET", "ED", "ET"),
    "acdc": ("background", "RV", "MC", "LV"),
    "covid_ct": ("background", "LL", "RL", "lesion"),
}

# The regions the thesis reports (§5.3.2), as unions of label values, in the column order of its
# tables: Table 5.1 (OASIS: T, G, W, CSF), Tables 5.2 / 5.8 (BraTS: WT, ET, TC), Table 5.3
# (ACDC: T, LV, RV, MC), Table 5.4 (COVID-CT: T, LL, RL, Lesion).
REGIONS: dict[str, dict[str, tuple[int, ...]]] = {
    "oasis": {"T": (1, 2, 3), "GM": (2,), "WM": (3,), "CSF": (1,)},
    "brats": {"WT": (1, 2, 3), "ET": (3,), "TC": (1, 3)},
    "acdc": {"T": (1, 2, 3), "LV": (3,), "RV": (1,), "MC": (2,)},
    "covid_ct": {"T": (1, 2, 3), "LL": (1,), "RL": (2,), "lesion": (3,)},
}

WHOLE_MODES = ("union", "pooled")


def region_names(dataset: str) -> tuple[str, ...]:
  """The region names of `dataset` in the thesis' column order ('oasis' -> T, GM, WM, CSF)."""
  return tuple(regions_of(dataset))


def regions_of(dataset: str) -> dict[str, tuple[int, ...]]:
  """REGIONS[dataset], with a one-line InputError for an unknown dataset."""
  if dataset not in REGIONS:
    raise InputError(f"no Dice regions for dataset {dataset!r}; known: {', '.join(REGIONS)}")
  return REGIONS[dataset]


def _label_map(name: str, labels) -> np.ndarray:
  """An int64 copy of an integer label map (integral floats are accepted); values must be >= 0."""
  a = np.asarray(labels)
  if a.dtype == bool:
    a = a.astype(np.int64)
  elif np.issubdtype(a.dtype, np.floating):
    if a.size and not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
      raise InputError(f"{name} must hold integer labels, got non-integer values ({a.dtype})")
    a = a.astype(np.int64)
  elif not np.issubdtype(a.dtype, np.integer):
    raise InputError(f"{name} must be an integer label map, got dtype {a.dtype}")
  a = a.astype(np.int64, copy=False)
  if a.size and a.min() < 0:
    raise InputError(f"{name} has negative labels (min {a.min()})")
  return a


def _pair(pred_labels, labels) -> tuple[np.ndarray, np.ndarray]:
  pred = _label_map("pred_labels", pred_labels)
  gt = _label_map("labels", labels)
  if pred.shape != gt.shape:
    raise InputError(f"pred_labels {pred.shape} and labels {gt.shape} differ in shape")
  return pred, gt


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """2 * numerator / denominator in float64; NaN where the denominator is 0."""
  num = np.asarray(numerator, np.float64)
  den = np.asarray(denominator, np.float64)
  out = np.full(np.broadcast(num, den).shape, np.nan)
  np.divide(2.0 * num, den, out=out, where=den > 0)
  return out


def per_class(pred_labels, labels, num_classes: int) -> np.ndarray:
  """Dice 2|P_c ∩ G_c| / (|P_c| + |G_c|) of each class c = 0 .. num_classes - 1 (background too).

  `pred_labels` and `labels` are integer maps of the same shape (one slice, or any stack: all
  pixels are pooled). A class absent from both maps is NaN. Labels must lie in
  [0, num_classes). Returns a float64 array of shape (num_classes,).
  """
  n = int(num_classes)
  if n < 1:
    raise InputError(f"num_classes must be >= 1, got {num_classes}")
  pred, gt = _pair(pred_labels, labels)
  top = max(int(pred.max(initial=0)), int(gt.max(initial=0)))
  if top >= n:
    raise InputError(f"label {top} is outside [0, {n}) (num_classes={n})")
  # Joint histogram: rows = ground truth, columns = prediction.
  joint = np.bincount((gt * n + pred).ravel(), minlength=n * n).reshape(n, n)
  return _ratio(np.diag(joint), joint.sum(axis=1) + joint.sum(axis=0))


def _check_regions(regions: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
  if isinstance(regions, str):
    regions = regions_of(regions)
  if not isinstance(regions, Mapping) or not regions:
    raise InputError("regions must be a non-empty {name: label values} mapping")
  out = {}
  for name, values in regions.items():
    try:
      values = tuple(int(v) for v in np.atleast_1d(values))
    except (TypeError, ValueError):
      raise InputError(f"region {name!r}: label values must be integers, got {values!r}") from None
    if not values or min(values) < 0 or len(set(values)) != len(values):
      raise InputError(f"region {name!r} needs distinct label values >= 0, got {values}")
    out[str(name)] = values
  return out


def _stack(name: str, labels) -> np.ndarray:
  a = _label_map(name, labels)
  if a.ndim == 4 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim != 3:
    raise InputError(f"{name} must be an (N, H, W) stack of label maps, got shape {a.shape}")
  return a


def region_dice(pred_labels, labels, regions, *, whole: str = "union") -> dict[str, np.ndarray]:
  """Per-slice Dice of each region of `regions` between two (N, H, W) label stacks.

  Args:
    pred_labels: (N, H, W) predicted labels (an (N, H, W, 1) stack is accepted too).
    labels: the reference labels, same shape (ground truth, or the labels of the HR slices).
    regions: {name: label values}, e.g. `REGIONS['oasis']`, or a dataset name.
    whole: 'union' (thesis Eq. 5.16) or 'pooled' (the author's scripts); see the module
      docstring. Only multi-label regions are affected.

  Returns:
    {region: (N,) float64 array}, in the order of `regions`; NaN on a slice where the region is
    absent from both maps.
  """
  if whole not in WHOLE_MODES:
    raise InputError(f"whole must be one of {WHOLE_MODES}, got {whole!r}")
  regions = _check_regions(regions)
  pred, gt = _stack("pred_labels", pred_labels), _stack("labels", labels)
  if pred.shape != gt.shape:
    raise InputError(f"pred_labels {pred.shape} and labels {gt.shape} differ in shape")
  slices = pred.shape[0]
  n = 1 + max(int(pred.max(initial=0)), int(gt.max(initial=0)),
              max(max(v) for v in regions.values()))
  # One joint histogram per slice: joint[i, g, p] = pixels of slice i with GT g and prediction p.
  index = (np.arange(slices, dtype=np.int64)[:, None, None] * n + gt) * n + pred
  joint = np.bincount(index.ravel(), minlength=slices * n * n).reshape(slices, n, n)
  out = {}
  for name, values in regions.items():
    sel = np.array(values)
    g_size = joint[:, sel, :].sum(axis=(1, 2))
    p_size = joint[:, :, sel].sum(axis=(1, 2))
    if whole == "union":
      matched = joint[:, sel][:, :, sel].sum(axis=(1, 2))
    else:
      matched = joint[:, sel, sel].sum(axis=1)
    out[name] = _ratio(matched, g_size + p_size)
  return out
