"""Dice evaluation of SR results with a segmentation U-Net (thesis §5.3.2; Tables 5.1-5.4, 5.8).

The thesis scores SR images by how well a U-Net trained on HR slices segments them
(Eq. 5.16: P_sr = U(I_sr), Dice-T = Dice(P_sr, L_GT), Dice-<tissue> on the tissue's labels). Per
method (bicubic, each SR model, and the HR slices themselves as the reference row) this module
segments every test slice and reports, per region of `metrics.dice.REGIONS[dataset]`:

  'vs_gt'  Dice of U(method) against the ground-truth label (the thesis' tables);
  'vs_hr'  Dice of U(method) against U(HR), the labels the U-Net gives the HR slice (the target of
           the thesis' L_HRL loss, §5.2.2);

per slice (NaN where the region is in neither map), per subject (mean of its defined slices)
and over all slices pooled (mean and population std, as `metrics.image_quality.summarise`;
the thesis pools all slices of all test subjects, spec §8.2). Whole slices are segmented (no
border crop); inputs whose sides are not multiples of 32 are edge-padded bottom / right for the
U-Net and the labels cropped back.

Beyond the thesis: 'mfd', a medical Fréchet distance: `metrics.frechet.frechet_distance` between
the U-Net's global-average-pooled deepest encoder features (e5, 512-d for the ResNet-34 encoder)
of a method's slices and of the HR slices, per subject like the thesis' FID (spec §8.4) and
averaged over the subjects with at least 2 slices. With fewer slices than feature dimensions
the covariances are singular and the 1e-6 diagonal offset applies (see `metrics.frechet`); the
value is then a rough one.

  seg = Segmenter(unet, unet_variables, batch_size=8)
  report = dice_report(seg, hr, gt_labels, {"bicubic": bic, "model": sr}, dataset="oasis",
                       subjects=subject_ids)
  print(dice_table_markdown(report))                      # vs the ground truth
  print(dice_table_markdown(report, against="vs_hr"))     # vs the U-Net's labels of HR
  dice_panels("runs/x/eval", hr, gt_labels, {"bicubic": bic, "model": sr}, seg, indices=[3, 40],
              dataset="oasis")                             # seg_panel_003.png, seg_panel_040.png

`dice_report` returns plain JSON types; an undefined value (NaN Dice, a skipped MFD) is None,
so `json.dumps(report)` gives strict JSON.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_segmentation_eval.py tests/test_dice_metrics.py
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax import cpu_compile
from medsr_jax.errors import InputError
from medsr_jax.evaluate import scales
from medsr_jax.logging import panels
from medsr_jax.metrics import dice
from medsr_jax.metrics import frechet
from medsr_jax.metrics import image_quality

SIDE_MULTIPLE = 32          # smp U-Net of depth 5: sides must be multiples of 2**5
REFERENCE = "HR"            # the reference row: the U-Net on the HR slices
AGAINST = {"vs_gt": "the ground-truth labels", "vs_hr": "the U-Net's labels of the HR slices"}
DATASET_TITLES = {"oasis": "OASIS", "brats": "BraTS", "acdc": "ACDC", "covid_ct": "COVID-CT"}

_GREY, _YELLOW, _CYAN = (0.8, 0.8, 0.8), (1.0, 1.0, 0.0), (0.0, 1.0, 1.0)
# Label colours of the thesis' figures (Figs 5.4-5.7 captions); errors are red in all of them.
THESIS_COLOURS: dict[str, dict[int, tuple[float, float, float]]] = {
    "oasis": {1: _CYAN, 2: _GREY, 3: _YELLOW},      # CSF cyan, GM grey, WM yellow
    "brats": {1: _YELLOW, 2: _CYAN, 3: _GREY},      # NCR/NET yellow, ED cyan, ET grey
    "acdc": {1: _GREY, 2: _YELLOW, 3: _CYAN},       # RV grey, MC yellow, LV cyan
    "covid_ct": {1: _GREY, 2: _YELLOW, 3: _CYAN},   # LL grey, RL yellow, lesion cyan
}
DEFAULT_COLOURS = {1: _YELLOW, 2: _CYAN, 3: (1.0, 0.0, 1.0), 4: (0.0, 0.6, 1.0),
                   5: (0.2, 1.0, 0.2)}
ERROR_COLOUR = (1.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# Running the U-Net.


def padded_size(size: int, multiple: int = SIDE_MULTIPLE) -> int:
  """The smallest multiple of `multiple` that is >= size."""
  return -(-int(size) // multiple) * multiple


class Segmenter:
  """Batched, jitted U-Net inference (inference-mode BN) over (N, H, W, C) numpy slices.

  `__call__` gives the argmax labels (N, H, W) int32; `features` the global-average-pooled e5
  encoder output (N, width) (512 for the ResNet-34 encoder); `labels_and_features` both from
  one pass. Slices are edge-padded bottom / right to multiples of 32 (the U-Net's constraint)
  and the labels cropped back. Every batch has `batch_size` slices (the last is padded with
  copies of its final slice, as in `evaluate.Predictor`), so one compilation serves each padded
  slice shape and output kind; `traces` counts compilations.
  """

  def __init__(self, unet_module, unet_variables, batch_size: int = 8):
    if int(batch_size) < 1:
      raise InputError(f"batch_size must be >= 1, got {batch_size}")
    self.module = unet_module
    self.variables = unet_variables
    self.batch_size = int(batch_size)
    self.in_channels = getattr(unet_module, "in_channels", None)
    self.traces = 0

    def forward(variables, x, what):
      self.traces += 1  # Python side effect: runs only while tracing.
      if what == "features":
        out = unet_module.apply(variables, x, train=False, encoder_only=True)
        return jnp.mean(out["e5"], axis=(1, 2))
      out = unet_module.apply(variables, x, train=False)
      labels = jnp.argmax(out["logits"], axis=-1).astype(jnp.int32)
      if what == "labels":
        return labels
      return labels, jnp.mean(out["e5"], axis=(1, 2))

    self._apply = jax.jit(forward, static_argnames="what",
                          compiler_options=cpu_compile.compiler_options(unet_module))

  def _check(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
      raise InputError(f"the segmenter expects slices shaped (N, H, W, C), got {images.shape}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
      raise InputError(f"the segmenter got an empty stack {images.shape}")
    if isinstance(self.in_channels, int) and images.shape[-1] != self.in_channels:
      raise InputError(f"the U-Net takes {self.in_channels} channel(s); the slices have "
                       f"{images.shape[-1]}")
    if not np.issubdtype(images.dtype, np.floating):
      raise InputError(f"the segmenter expects float images in [0, 1], got {images.dtype}")
    return images.astype(np.float32, copy=False)

  def _run(self, images, what: str):
    images = self._check(images)
    n, h, w, _ = images.shape
    ph, pw = padded_size(h) - h, padded_size(w) - w
    if ph or pw:
      images = np.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    labels, feats = [], []
    for start in range(0, n, self.batch_size):
      chunk = images[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out = jax.device_get(self._apply(self.variables, jnp.asarray(chunk), what=what))
      keep = len(chunk) - pad
      if what == "labels":
        labels.append(np.asarray(out)[:keep, :h, :w])
      elif what == "features":
        feats.append(np.asarray(out)[:keep])
      else:
        labels.append(np.asarray(out[0])[:keep, :h, :w])
        feats.append(np.asarray(out[1])[:keep])
    labels = np.concatenate(labels) if labels else None
    feats = np.concatenate(feats) if feats else None
    return labels, feats

  def __call__(self, images) -> np.ndarray:
    """Argmax labels (N, H, W) int32 of (N, H, W, C) slices."""
    return self._run(images, "labels")[0]

  def features(self, images) -> np.ndarray:
    """Global-average-pooled e5 features (N, width) float32 (of the padded slices)."""
    return self._run(images, "features")[1]

  def labels_and_features(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, H, W), features (N, width)) from one forward pass per batch."""
    return self._run(images, "both")


# ----------------------------------------------------------------------------------------------
# Scores.


def subject_groups(subjects, n: int) -> tuple[list[str], dict[str, np.ndarray]]:
  """(one subject id per slice, {subject: slice positions} in order of first appearance).

  The per-subject convention of `evaluate.scales`: None -> every slice in subject 'all'; one
  id -> that id for every slice; else one id per slice (bytes are decoded).
  """
  ids = scales._subject_ids(subjects, n)  # pylint: disable=protected-access
  return ids, scales._groups(ids)  # pylint: disable=protected-access


def _json_float(value) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def nan_summary(values) -> dict[str, Any]:
  """{'mean', 'std' (population), 'slices' (defined values), 'absent' (NaN values)}; the mean
  and std are None when no value is defined."""
  v = np.asarray(values, np.float64).ravel()
  ok = v[np.isfinite(v)]
  if ok.size:
    mean, std = image_quality.summarise(ok)
  else:
    mean = std = None
  return {"mean": mean, "std": std, "slices": int(ok.size), "absent": int(v.size - ok.size)}


def _region_entry(values: np.ndarray, groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
  entry = {"per_slice": [_json_float(v) for v in values], **nan_summary(values)}
  entry["per_subject"] = {s: nan_summary(values[idx]) for s, idx in groups.items()}
  return entry


def _mfd_entry(features: np.ndarray, reference: np.ndarray,
               groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
  per_subject, skipped = {}, []
  for s, idx in groups.items():
    if len(idx) < 2:
      per_subject[s] = None
      skipped.append(s)
      continue
    per_subject[s] = frechet.frechet_distance(features[idx], reference[idx])
  used = [v for v in per_subject.values() if v is not None]
  return {"value": float(np.mean(used)) if used else None, "per_subject": per_subject,
          "subjects": len(used), "skipped": skipped}


def _check_images(name: str, images, shape=None) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4:
    raise InputError(f"{name} must be slices shaped (N, H, W, C), got {images.shape}")
  if shape is not None and images.shape != shape:
    raise InputError(f"{name} has shape {images.shape}; the HR slices are {shape}")
  return images


def _check_outputs(outputs: Mapping[str, Any], shape) -> dict[str, np.ndarray]:
  if not isinstance(outputs, Mapping):
    raise InputError("outputs must be a {method name: SR images} mapping")
  if REFERENCE in outputs:
    raise InputError(f"outputs must not hold {REFERENCE!r}: the HR row is added from `hr`")
  return {str(k): _check_images(f"outputs[{k!r}]", v, shape) for k, v in outputs.items()}


def dice_report(segmenter: Segmenter, hr, gt_labels, outputs: Mapping[str, Any], *,
                dataset: str, subjects=None, whole: str = "union") -> dict[str, Any]:
  """Dice of the U-Net's labels of each method's slices, vs GT and vs U(HR), and the MFD.

  Args:
    segmenter: a `Segmenter` around the dataset's trained U-Net.
    hr: HR slices (N, H, W, C), float in [0, 1].
    gt_labels: ground-truth label maps (N, H, W) (or (N, H, W, 1)), the dataset's convention
      (`metrics.dice` docstring).
    outputs: {method name: images shaped like hr}, e.g. {'bicubic': ..., 'model': ...}, in
      table order; 'HR' (the reference row) is added first and must not be given.
    dataset: 'oasis', 'brats', 'acdc' or 'covid_ct' (picks `dice.REGIONS[dataset]`).
    subjects: one subject id, or one per slice (None: all slices in subject 'all').
    whole: 'union' (thesis Eq. 5.16) or 'pooled' (the author's scripts) for multi-label regions.

  Returns:
    {'dataset', 'whole', 'regions' {name: [labels]}, 'label_names', 'methods' (row order),
     'slices', 'hw', 'subjects' (one per slice), 'subject_names',
     'results': {method: {'vs_gt': {region: entry}, 'vs_hr': {region: entry},
                          'mfd': {'value', 'per_subject', 'subjects', 'skipped'}}},
     'notes': [...]}
    where entry = {'per_slice': [Dice or None], 'mean', 'std', 'slices', 'absent',
    'per_subject': {subject: {'mean', 'std', 'slices', 'absent'}}}. None stands for NaN.
  """
  regions = dice.regions_of(dataset)
  if whole not in dice.WHOLE_MODES:
    raise InputError(f"whole must be one of {dice.WHOLE_MODES}, got {whole!r}")
  if not callable(getattr(segmenter, "labels_and_features", None)):
    raise InputError("dice_report needs a Segmenter (evaluate.segmentation.Segmenter)")
  hr = _check_images("hr", hr)
  n, h, w = hr.shape[:3]
  if n == 0:
    raise InputError("dice_report needs at least one slice")
  gt = np.asarray(gt_labels)
  if gt.ndim == 4 and gt.shape[-1] == 1:
    gt = gt[..., 0]
  if gt.shape != (n, h, w):
    raise InputError(f"gt_labels has shape {gt.shape}; expected {(n, h, w)}")
  methods = _check_outputs(outputs, hr.shape)
  ids, groups = subject_groups(subjects, n)

  hr_labels, hr_features = segmenter.labels_and_features(hr)
  results = {}
  for name, images in [(REFERENCE, hr), *methods.items()]:
    if name == REFERENCE:
      labels, features = hr_labels, hr_features
    else:
      labels, features = segmenter.labels_and_features(images)
    results[name] = {
        against: {r: _region_entry(v, groups)
                  for r, v in dice.region_dice(labels, ref, regions, whole=whole).items()}
        for against, ref in (("vs_gt", gt), ("vs_hr", hr_labels))}
    results[name]["mfd"] = _mfd_entry(features, hr_features, groups)

  whole_text = ("the union of its labels (thesis Eq. 5.16)" if whole == "union" else
                "labels pooled class by class (author's scripts, spec §8.5)")
  return {
      "dataset": dataset, "whole": whole,
      "regions": {k: list(v) for k, v in regions.items()},
      "label_names": list(dice.LABELS[dataset]),
      "methods": list(results), "slices": int(n), "hw": [int(h), int(w)],
      "subjects": ids, "subject_names": list(groups),
      "results": results,
      "notes": [
          "Labels: argmax of the U-Net (inference-mode BN) on whole slices; sides edge-padded "
          f"to multiples of {SIDE_MULTIPLE} and cropped back.",
          f"Dice per slice; a multi-label region is scored as {whole_text}; a region absent "
          "from both maps on a slice is undefined (null) and left out of the means.",
          "mean (std): over the defined slices of all subjects, population std; per_subject: "
          "over that subject's defined slices.",
          "MFD: Fréchet distance of the U-Net's GAP'd e5 features, method vs HR, per subject "
          "(subjects with < 2 slices skipped), mean over subjects (not in the thesis).",
      ],
  }


# ----------------------------------------------------------------------------------------------
# Tables.


def _cell(entry: Mapping[str, Any]) -> str:
  if entry.get("mean") is None:
    return "n/a"
  return f"{entry['mean']:.4f} ({entry['std']:.4f})"


def dice_table_markdown(report: Mapping[str, Any], *, against: str = "vs_gt",
                        model_label: str | None = None) -> str:
  """The layout of thesis Tables 5.1-5.4 / 5.8: a caption line, then one row per method (HR
  first) with 'mean (std)' Dice per region (thesis column order, 4 decimals) and the MFD.

  `model_label` renames the 'model' row (e.g. 'RDST').
  """
  if against not in AGAINST:
    raise InputError(f"against must be one of {tuple(AGAINST)}, got {against!r}")
  try:
    dataset, methods, results = report["dataset"], report["methods"], report["results"]
    names = list(report["regions"])
  except (KeyError, TypeError):
    raise InputError("not a dice_report result (needs dataset, methods, regions, "
                     "results)") from None
  title = DATASET_TITLES.get(dataset, dataset)
  whole = "union of labels" if report.get("whole", "union") == "union" else "pooled classes"
  caption = (f"Dice vs {AGAINST[against]}, {title} (mean (std) over {report.get('slices', '?')} "
             f"slices; multi-label regions: {whole}); MFD: Fréchet distance of U-Net e5 "
             "features to HR, mean over subjects.")
  lines = [caption, "",
           "| method | " + " | ".join(f"Dice-{r}" for r in names) + " | MFD |",
           "|---" * (len(names) + 2) + "|"]
  for method in methods:
    row = results[method]
    label = model_label if (method == "model" and model_label) else method
    mfd = row.get("mfd", {}).get("value")
    cells = [_cell(row[against][r]) for r in names]
    lines.append(f"| {label} | " + " | ".join(cells) +
                 f" | {'n/a' if mfd is None else f'{mfd:.4f}'} |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Panels (thesis Figs 5.4-5.7).


def _grey(image, channel: int) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  if image.ndim == 3:
    if not 0 <= channel < image.shape[-1]:
      raise InputError(f"channel {channel} is outside the image's {image.shape[-1]} channels")
    image = image[..., channel]
  if image.ndim != 2 or image.size == 0:
    raise InputError(f"overlay_panel expects an (H, W) or (H, W, C) image, got {image.shape}")
  image = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
  return np.clip(image, 0.0, 1.0)


def _caption(title: str, width: int) -> np.ndarray:
  strip = panels._caption_strip([[str(title)]], [width], 0)  # pylint: disable=protected-access
  return np.repeat(strip[..., None], 3, axis=-1)


def overlay_panel(image, pred_labels, gt_labels=None, *, title: str | None = None,
                  colours: Mapping[int, Sequence[float]] | None = None, alpha: float = 0.5,
                  channel: int = 0) -> np.ndarray:
  """One tile in the style of thesis Figs 5.4-5.7: the grey slice, the predicted labels blended
  over it in colour, and the pixels where prediction != GT in pure red.

  Args:
    image: (H, W) or (H, W, C) slice in [0, 1] (clipped; uint8 is taken as 0..255); channel
      `channel` is shown.
    pred_labels: (H, W) integer labels; label 0 (background) is not coloured.
    gt_labels: (H, W) ground truth; None: no error pixels.
    title: drawn in a caption strip under the tile (Pillow's default font).
    colours: {label: (r, g, b) in [0, 1]} (default `DEFAULT_COLOURS`; the thesis' per dataset:
      `THESIS_COLOURS`); labels without a colour are not drawn.
    alpha: opacity of the label colours.

  Returns:
    uint8 (H, W, 3), or (H + caption height, W, 3) with a title.
  """
  grey = _grey(image, int(channel))
  pred = np.asarray(pred_labels)
  if pred.shape != grey.shape:
    raise InputError(f"pred_labels {pred.shape} do not match the image {grey.shape}")
  if not 0.0 <= float(alpha) <= 1.0:
    raise InputError(f"alpha must be in [0, 1], got {alpha}")
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  for label, colour in (DEFAULT_COLOURS if colours is None else colours).items():
    mask = pred == int(label)
    if int(label) != 0 and mask.any():
      rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)
  if gt_labels is not None:
    gt = np.asarray(gt_labels)
    if gt.shape != grey.shape:
      raise InputError(f"gt_labels {gt.shape} do not match the image {grey.shape}")
    rgb[pred != gt] = ERROR_COLOUR
  tile = panels.to_uint8(rgb)
  if title is not None:
    tile = np.concatenate([tile, _caption(title, tile.shape[1])], axis=0)
  return tile


def _hstack_rgb(tiles: Sequence[np.ndarray], separator: int = 2) -> np.ndarray:
  height = max(t.shape[0] for t in tiles)
  parts = []
  for i, t in enumerate(tiles):
    if i and separator:
      parts.append(np.full((height, separator, 3), panels.SEPARATOR_VALUE, np.uint8))
    if t.shape[0] < height:
      t = np.concatenate([t, np.zeros((height - t.shape[0],) + t.shape[1:], np.uint8)])
    parts.append(t)
  return np.concatenate(parts, axis=1)


def dice_panels(directory: str | os.PathLike, hr, gt_labels, outputs: Mapping[str, Any],
                segmenter: Segmenter, *, indices: Sequence[int], dataset: str | None = None,
                channel: int = 0) -> dict[str, np.ndarray]:
  """Writes `seg_panel_<iii>.png` (slice index, 3 digits) for each slice of `indices`: one
  `overlay_panel` tile per method (HR first, then `outputs` in order; errors vs the GT in red),
  then the GT labels over the HR slice. Tiles are captioned with the method name and, when
  `dataset` is given, the Dice of its first region (T / WT) vs GT; `dataset` also picks the
  thesis' label colours. Returns {'seg_panel_<iii>': uint8 image}.
  """
  hr = _check_images("hr", hr)
  n = hr.shape[0]
  gt = np.asarray(gt_labels)
  if gt.ndim == 4 and gt.shape[-1] == 1:
    gt = gt[..., 0]
  if gt.shape != hr.shape[:3]:
    raise InputError(f"gt_labels has shape {gt.shape}; expected {hr.shape[:3]}")
  methods = _check_outputs(outputs, hr.shape)
  try:
    indices = [int(i) for i in indices]
  except (TypeError, ValueError):
    raise InputError(f"indices must be slice numbers, got {indices!r}") from None
  for i in indices:
    if not 0 <= i < n:
      raise InputError(f"slice index {i} is outside 0..{n - 1}")
  colours = THESIS_COLOURS.get(dataset) if dataset is not None else None
  first = None
  if dataset is not None:
    name, values = next(iter(dice.regions_of(dataset).items()))
    first = (name, {name: values})
  directory = pathlib.Path(directory)
  written = {}
  if not indices:
    return written
  rows = {REFERENCE: hr[indices], **{k: v[indices] for k, v in methods.items()}}
  labels = {k: segmenter(v) for k, v in rows.items()}
  for j, i in enumerate(indices):
    tiles = []
    for name, images in rows.items():
      title = name
      if first is not None:
        score = dice.region_dice(labels[name][j:j + 1], gt[i:i + 1], first[1])[first[0]][0]
        title += f" Dice-{first[0]} " + ("n/a" if math.isnan(score) else f"{score:.4f}")
      tiles.append(overlay_panel(images[j], labels[name][j], gt[i], title=title,
                                 colours=colours, channel=channel))
    tiles.append(overlay_panel(hr[i], gt[i], None, title="GT label", colours=colours,
                               channel=channel))
    key = f"seg_panel_{i:03d}"
    written[key] = _hstack_rgb(tiles)
    panels.save_png(directory / f"{key}.png", written[key])
  return written
