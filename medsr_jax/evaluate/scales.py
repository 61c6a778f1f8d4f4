"""Evaluation at any scale: the thesis' chapter-4 test protocol for every model of the zoo.

Thesis ch. 4 (§4.3.2, §4.3.4, §4.4) scores MIASSR and its baselines at many magnifications s in
(1, 4] (Figs 4.4, 4.5, 4.10 plot PSNR / SSIM against s; Table 4.2 reports every BraTS modality
on its own). Per scale s (reference spec §4.4, "MIASSR meta"; `pipeline.miassr_test_pairs`):

  LR  = blur3x3(bicubic(HR, (int(H // s), int(W // s))))    (blur=False: no blur)
  GT  = bicubic(HR, (int(H // s * s), int(W // s * s)))     (HR itself when the size matches)
  PSNR / SSIM per slice after a ceil(s) border crop, predictions neither clipped nor quantised
  (spec §8.1-8.2, `evaluate.score_slices`), for bicubic interpolation and for the model.

How each kind of model reaches the scale (`models.registry.convention_of(model).scale_arg`):
  'required'  arbitrary-scale meta models (miassr, meta_*): run at s directly.
  'optional'  MDSR: called with ceil(s), then "up-and-down" (below).
  'none'      fixed-scale models (x m): run at m, then up-and-down. The thesis (§4.3.4; spec §4.4
              "fixed-scale models at non-integer s") uses the x ceil(s) model for each s; with a
              single fixed-scale export this module uses its scale m for every s with
              ceil(s) <= m (the table notes say which scales differ from the thesis) and refuses
              s > m ("model x2 cannot super-resolve x2.5").
  Up-and-down: the x m output (N, H_out, W_out, C) is bicubic-resized to
  (int(H_out // m * s), int(W_out // m * s)), which is the GT size.

Public functions (the arbitrary-scale trainer uses them too):
  parse_scales("1.1:4.0:0.1") -> (1.1, 1.2, ..., 4.0); parse_scales("1.5,2,2.5")
  up_and_down(sr_fixed, model_scale, scale)
  predict_at_scale(model, variables, lr, scale, batch_size=8, cache={})
  evaluate_scales(model, variables, images, scales, blur=True, subjects=..., channel_names=...)
      -> {"scales", "channels", "per_scale": {"2.5": {"bicubic": {...}, "model": {...}}}, ...}
  scale_table_markdown(result, model_label="MIASSR")  # one row per scale + the mean over scales
  plot_vs_scale({"MIASSR": result, "MetaRDN": other}, "scales.png")  # Figs 4.4 / 4.5 / 4.10

Each method entry of `evaluate_scales` holds the per-slice 'psnr' / 'ssim' lists, their pooled
psnr_mean, psnr_std, ssim_mean, ssim_std (population std) and slices (`evaluate.Scores.summary`),
'per_subject' (the same summary per subject) and, for C > 1 channels, 'per_channel' (each channel
scored as a single-channel image, with its own per-subject summaries). More metrics (FID, thesis
§4.3.2; Dice and MFD, §5.3.2) come through the `extra_metrics` hook, which
`python -m medsr_jax.evaluate --metrics=...` fills.

The command line is `python -m medsr_jax.evaluate` (see `evaluate/__main__.py`):
  python -m medsr_jax.evaluate --workdir=runs/miassr --scales=1.1:4.0:0.1
Run the checks with:
  .venv/bin/python -m pytest -q tests/test_evaluate_scales.py
"""

from __future__ import annotations

import decimal
import math
import os
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medsr_jax import evaluate
from medsr_jax.data import degradation, pipeline
from medsr_jax.errors import InputError
from medsr_jax.metrics import aggregate, image_quality
from medsr_jax.models import registry

MAX_SCALES = 1000       # a range longer than this is surely a typo
_DIGITS = 6             # scales are rounded to 1e-6
METRICS = {"psnr": "PSNR (dB)", "ssim": "SSIM"}


# ----------------------------------------------------------------------------------------------
# Scales.


def _number(text: str, what: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise InputError(f"scales: {what} {text.strip()!r} is not a number") from None
  if not math.isfinite(value):
    raise InputError(f"scales: {what} {text.strip()!r} is not a finite number")
  return value


def _decimals(text: str) -> int:
  """Digits after the decimal point of a number as written ('0.25' -> 2, '1e-1' -> 1)."""
  exponent = decimal.Decimal(text.strip()).as_tuple().exponent
  return min(_DIGITS, max(0, -int(exponent))) if isinstance(exponent, int) else _DIGITS


def parse_scales(text: str) -> tuple[float, ...]:
  """Scales from 'start:stop:step' (both ends included) or a comma list '1.5,2,2.5'.

  Range values are start + k * step rounded to the decimals written in start and step (and to
  1e-6), so '1.1:4.0:0.1' gives exactly the 30 floats round(0.1 * k, 1), k = 11..40. List values
  are rounded to 1e-6 and kept in the given order. InputError for an empty text, a non-numeric
  or non-positive value, a repeated scale, stop < start or step <= 0.
  """
  text = str(text or "").strip()
  if not text:
    raise InputError("scales: empty; give START:STOP:STEP (1.1:4.0:0.1) or a list (1.5,2,2.5)")
  if ":" in text:
    parts = text.split(":")
    if len(parts) != 3:
      raise InputError(f"scales: {text!r} is not START:STOP:STEP")
    start, stop, step = (_number(p, w) for p, w in zip(parts, ("start", "stop", "step")))
    if step <= 0:
      raise InputError(f"scales: step must be > 0, got {step:g}")
    if start <= 0:
      raise InputError(f"scales: start must be > 0, got {start:g}")
    if stop < start:
      raise InputError(f"scales: stop {stop:g} is below start {start:g}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_SCALES:
      raise InputError(f"scales: {text!r} gives {count} scales (at most {MAX_SCALES})")
    digits = max(_decimals(parts[0]), _decimals(parts[2]))
    values = [round(start + k * step, digits) for k in range(count)]
  else:
    values = []
    for item in text.split(","):
      if not item.strip():
        raise InputError(f"scales: empty item in {text!r}")
      values.append(round(_number(item, "scale"), _DIGITS))
  out = []
  for v in values:
    if v <= 0:
      raise InputError(f"scales: every scale must be > 0, got {v:g}")
    if v in out:
      raise InputError(f"scales: scale {v:g} is listed twice")
    out.append(float(v))
  return tuple(out)


def _key(scale: float) -> str:
  """The JSON key of a scale: '2.5', '2', '1.1'."""
  return f"{float(scale):g}"


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
  try:
    values = tuple(float(s) for s in scales)
  except (TypeError, ValueError):
    raise InputError(f"scales must be numbers, got {scales!r}") from None
  if not values:
    raise InputError("evaluate_scales needs at least one scale")
  for s in values:
    if not math.isfinite(s) or s <= 0:
      raise InputError(f"every scale must be a finite number > 0, got {s}")
  if len({_key(s) for s in values}) != len(values):
    raise InputError(f"scales are listed twice: {', '.join(_key(s) for s in values)}")
  return values


# ----------------------------------------------------------------------------------------------
# Running a model at a scale.


def up_and_down(sr_fixed: np.ndarray, model_scale: int, scale: float) -> np.ndarray:
  """The up-and-down step of thesis §4.3.4: a fixed x m output resized to the scale-s size.

  `sr_fixed` (N, H_out, W_out, C) is the x m (= `model_scale`) model's output for an LR of scale
  s; it is bicubic-resized (OpenCV-exact, `degradation.resize_bicubic`) to
  (int(H_out // m * s), int(W_out // m * s)) and returned unchanged when it has that size.
  """
  sr_fixed = np.asarray(sr_fixed)
  if sr_fixed.ndim != 4:
    raise InputError(f"up_and_down expects (N, H, W, C) images, got shape {sr_fixed.shape}")
  if float(model_scale) != int(model_scale) or int(model_scale) < 1:
    raise InputError(f"up_and_down: the model scale must be a positive integer, got "
                     f"{model_scale}")
  if not scale > 0:
    raise InputError(f"up_and_down: scale must be > 0, got {scale}")
  m = int(model_scale)
  h_out, w_out = sr_fixed.shape[1:3]
  target = (int(h_out // m * scale), int(w_out // m * scale))
  if min(target) < 1:
    raise InputError(f"up_and_down: {h_out}x{w_out} at x{m} is too small for x{scale:g}")
  if target == (h_out, w_out):
    return sr_fixed
  return degradation.resize_bicubic(sr_fixed, target)


def _model_name(model) -> str:
  return type(model).__name__


def _plan(model, scale: float) -> tuple[str, Any, int | None]:
  """(kind, the scale the model is called with, m of the up-and-down or None) for scale s.

  kind: 'meta' (run at s), 'mdsr' (ceil(s), then up-and-down) or 'fixed' (its own m, then
  up-and-down). InputError for a scale the model cannot reach.
  """
  kind = registry.convention_of(model).scale_arg
  s = float(scale)
  if not s >= 1:
    raise InputError(f"scale {s:g} is below 1: not a super-resolution scale")
  ceil_s = int(math.ceil(round(s, _DIGITS)))
  if kind == "required":
    return "meta", s, None
  if kind == "optional":
    branches = tuple(int(k) for k in (getattr(model, "scales", None) or ()))
    if branches and ceil_s not in branches:
      raise InputError(f"{_model_name(model)} has no x{ceil_s} branch for x{s:g} (its scales: "
                       f"{', '.join(str(k) for k in branches)})")
    return "mdsr", ceil_s, ceil_s
  own = getattr(model, "scale", None)
  if own is None or float(own) != int(own):
    raise InputError(f"{_model_name(model)} has no integer scale; it cannot be evaluated at "
                     f"x{s:g}")
  m = int(own)
  if ceil_s > m:
    raise InputError(f"model x{m} cannot super-resolve x{s:g}")
  return "fixed", m, m


def predict_at_scale(model, variables, lr: np.ndarray, scale: float, *, batch_size: int = 8,
                     cache: dict | None = None) -> np.ndarray:
  """The model's SR of the LR slices `lr` (N, h, w, C) at scale s (see the module docstring).

  Meta models run at s (`evaluate.Predictor(model, batch_size, scale=s)`); MDSR is called with
  ceil(s) and a fixed-scale x m model at m, both followed by `up_and_down`. A fixed-scale model
  needs ceil(s) <= m (InputError "model x2 cannot super-resolve x2.5"); the thesis uses the
  x ceil(s) model, and with m > ceil(s) the single x m model stands in for it. `cache` (a dict
  kept by the caller) holds one Predictor per (id(model), call scale, batch size), so repeated
  calls reuse compiled programs.
  """
  lr = np.asarray(lr)
  if lr.ndim != 4:
    raise InputError(f"predict_at_scale expects LR slices shaped (N, h, w, C), got {lr.shape}")
  if int(batch_size) < 1:
    raise InputError(f"batch_size must be >= 1, got {batch_size}")
  _, call_scale, m = _plan(model, scale)
  key = (id(model), float(call_scale), int(batch_size))
  predictor = None if cache is None else cache.get(key)
  if predictor is None:
    predictor = evaluate.Predictor(model, int(batch_size), scale=call_scale)
    if cache is not None:
      cache[key] = predictor
  sr = predictor(variables, lr.astype(np.float32, copy=False))
  return sr if m is None else up_and_down(sr, m, float(scale))


# ----------------------------------------------------------------------------------------------
# Scores.


def _subject_ids(subjects: Any, n: int) -> list[str]:
  """One subject id per slice: None -> 'all', one id -> that id for every slice."""
  if subjects is None:
    return ["all"] * n
  if isinstance(subjects, (str, bytes)) or np.ndim(subjects) == 0:
    value = subjects.decode() if isinstance(subjects, bytes) else subjects
    return [str(value)] * n
  ids = [s.decode() if isinstance(s, bytes) else str(s) for s in list(subjects)]
  if len(ids) != n:
    raise InputError(f"subjects: {len(ids)} ids for {n} slices")
  return ids


def _groups(ids: Sequence[str]) -> dict[str, np.ndarray]:
  """{subject: slice positions}, subjects in order of first appearance."""
  groups: dict[str, list[int]] = {}
  for i, s in enumerate(ids):
    groups.setdefault(s, []).append(i)
  return {s: np.array(v) for s, v in groups.items()}


def _scores_entry(scores: evaluate.Scores, groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Per-slice lists (slice order) and the pooled and per-subject summaries, aggregated with the
  clu collection of `metrics.aggregate`. Every process scores all slices here, so nothing is
  merged across hosts (`aggregate.merge_across_processes` is for per-host shares)."""
  subjects = np.empty(len(scores.psnr), dtype=object)
  for s, idx in groups.items():
    subjects[idx] = s
  collection = aggregate.from_scores(scores.psnr, scores.ssim, subjects=list(subjects),
                                     slice_indices=np.arange(len(scores.psnr)))
  summary = aggregate.summary(collection)
  entry: dict[str, Any] = {"psnr": [float(v) for v in scores.psnr],
                           "ssim": [float(v) for v in scores.ssim], **summary["pooled"]}
  entry["per_subject"] = {s: summary["per_subject"][s] for s in groups}  # first-seen order
  return entry


def _method_entry(gt: np.ndarray, pred: np.ndarray, scale: float,
                  groups: Mapping[str, np.ndarray], channels: Sequence[str]) -> dict[str, Any]:
  """Pooled, per-subject and (C > 1) per-channel PSNR / SSIM of one method at one scale."""
  entry = _scores_entry(evaluate.score_slices(gt, pred, scale), groups)
  if len(channels) > 1:
    entry["per_channel"] = {
        name: _scores_entry(evaluate.score_slices(gt[..., c:c + 1], pred[..., c:c + 1], scale),
                            groups)
        for c, name in enumerate(channels)}
  return entry


def _protocol_note(model, scales: Sequence[float]) -> str:
  kind = registry.convention_of(model).scale_arg
  name = _model_name(model)
  if kind == "required":
    return f"{name} is an arbitrary-scale model: it runs at each scale directly."
  if kind == "optional":
    return (f"{name} is called with ceil(s) and its output is bicubic-resized to the GT size "
            "(up-and-down, thesis §4.3.4).")
  m = int(getattr(model, "scale"))
  note = (f"{name} is a fixed x{m} model: its x{m} output is bicubic-resized to the GT size "
          "(up-and-down, thesis §4.3.4).")
  differ = [s for s in scales if int(math.ceil(round(s, _DIGITS))) != m]
  if differ:
    note += (f" The thesis uses the x ceil(s) model; this single x{m} model stands in for it at "
             f"x{', x'.join(_key(s) for s in differ)}.")
  return note


def evaluate_scales(model, variables, images: np.ndarray, scales, *, blur: bool = True,
                    batch_size: int = 8, subjects=None, channel_names=None, slice_index=None,
                    log: Callable[[str], None] | None = None, cache: dict | None = None,
                    extra_metrics: Callable[..., tuple[dict, dict]] | None = None) -> dict:
  """The chapter-4 test protocol at every scale of `scales` (see the module docstring).

  Args:
    model, variables: the model (any scale convention) and its variables.
    images: HR slices (N, H, W, C), float in [0, 1].
    scales: the scales s.
    blur: MIASSR's 3x3 blur on the LR (spec §4.4); False: bicubic only.
    batch_size: slices per forward pass (`evaluate.Predictor`).
    subjects: one subject id, or one per slice, for the per-subject means (None: 'all').
    channel_names: one name per channel (default 'c0', 'c1', ...); channels are scored
      separately when C > 1 (thesis Table 4.2).
    slice_index: each slice's position in its volume, recorded in the result.
    log: called with one progress line per scale ("x2.5: LR 72x57 -> 180x142, 24 slices, 3.1s").
    cache: Predictor cache shared with `predict_at_scale` (one compilation per scale and shape).
    extra_metrics: more metrics per scale (FID, Dice; `python -m medsr_jax.evaluate`): called
      as `extra_metrics(s, gt, {'bicubic': images, 'model': images})`, it returns
      ({method: {key: value}} merged into that method's entry, {key: value} added to the scale's
      entry).

  Returns:
    A JSON-ready dict: 'scales', 'channels', 'slices', 'hr_hw', 'blur', 'subjects' (one per
    slice), 'slice_index' (when given), 'notes' (the protocol) and 'per_scale' {'2.5': {'scale',
    'lr_hw', 'gt_hw', 'border', 'call_scale', 'up_and_down_from', 'seconds', 'bicubic': entry,
    'model': entry}}; an entry as in the module docstring.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise InputError(f"evaluate_scales expects slices shaped (N, H, W, C), got {images.shape}")
  if images.shape[0] == 0:
    raise InputError("evaluate_scales needs at least one slice")
  if not np.issubdtype(images.dtype, np.floating):
    raise InputError(f"evaluate_scales expects float images in [0, 1], got {images.dtype}")
  n, hr_h, hr_w, c = images.shape
  scales = _check_scales(scales)
  channels = ([f"c{i}" for i in range(c)] if channel_names is None
              else [str(v) for v in channel_names])
  if len(channels) != c:
    raise InputError(f"channel_names has {len(channels)} names for {c} channels")
  if len(set(channels)) != c:
    raise InputError(f"channel_names must be distinct, got {channels}")
  want_c = getattr(model, "in_channels", None)
  if isinstance(want_c, int) and want_c != c:
    raise InputError(f"the model takes {want_c} channel(s); the images have {c}")
  if slice_index is not None and np.shape(slice_index) != (n,):
    raise InputError(f"slice_index has shape {np.shape(slice_index)}, expected ({n},)")
  ids = _subject_ids(subjects, n)
  groups = _groups(ids)
  # Everything that can be checked is checked before the first scale runs.
  plans = {s: _plan(model, s) for s in scales}
  for s in scales:
    degradation.lr_size((hr_h, hr_w), s)

  per_scale = {}
  for s in scales:
    start = time.time()
    lr, gt = pipeline.miassr_test_pairs(images, [s], blur=blur)[s]
    sr = predict_at_scale(model, variables, lr, s, batch_size=batch_size, cache=cache)
    if sr.shape != gt.shape:
      raise InputError(f"x{_key(s)}: model output {sr.shape} does not match the ground truth "
                       f"{gt.shape}")
    bicubic = evaluate.bicubic_baseline(lr, gt.shape[1:3])
    _, call_scale, m = plans[s]
    per_scale[_key(s)] = {
        "scale": s, "lr_hw": list(lr.shape[1:3]), "gt_hw": list(gt.shape[1:3]),
        "border": image_quality.evaluation_margin(s), "call_scale": call_scale,
        "up_and_down_from": m,
        "bicubic": _method_entry(gt, bicubic, s, groups, channels),
        "model": _method_entry(gt, sr, s, groups, channels),
    }
    if extra_metrics is not None:
      per_method, per_scale_extra = extra_metrics(s, gt, {"bicubic": bicubic, "model": sr})
      for method, values in per_method.items():
        per_scale[_key(s)][method].update(values)
      per_scale[_key(s)].update(per_scale_extra)
    seconds = time.time() - start
    per_scale[_key(s)]["seconds"] = round(seconds, 3)
    if log is not None:
      log(f"x{_key(s)}: LR {lr.shape[1]}x{lr.shape[2]} -> {gt.shape[1]}x{gt.shape[2]}, "
          f"{n} slices, {seconds:.1f}s")

  blur_text = "blur3x3(bicubic(HR))" if blur else "bicubic(HR)"
  result = {
      "scales": list(scales), "channels": channels, "slices": int(n), "hr_hw": [hr_h, hr_w],
      "blur": bool(blur), "subjects": ids,
      "notes": [
          f"Test pairs per scale s (thesis ch. 4, spec §4.4): LR = {blur_text} at "
          "(int(H // s), int(W // s)); GT = bicubic(HR) at (int(H // s * s), int(W // s * s)).",
          "PSNR (data range 1) / SSIM per slice after a ceil(s) border crop, no clipping; "
          "mean (std) over slices (population std).",
          _protocol_note(model, scales),
      ],
      "per_scale": per_scale,
  }
  if slice_index is not None:
    result["slice_index"] = [int(v) for v in np.asarray(slice_index)]
  return result


# ----------------------------------------------------------------------------------------------
# Reports.


def _cell(entry: Mapping[str, Any], metric: str) -> str:
  digits = 2 if metric == "psnr" else 4
  return f"{entry[f'{metric}_mean']:.{digits}f} ({entry[f'{metric}_std']:.{digits}f})"


def _table(per_scale: Mapping[str, Any], pick: Callable[[Mapping[str, Any]], Mapping[str, Any]],
           model_label: str) -> list[str]:
  lines = [f"| scale | LR | bicubic PSNR | {model_label} PSNR | bicubic SSIM | "
           f"{model_label} SSIM |", "|---|---|---|---|---|---|"]
  sums = {(m, k): [] for m in ("bicubic", "model") for k in ("psnr", "ssim")}
  for entry in sorted(per_scale.values(), key=lambda e: e["scale"]):
    bic, mod = pick(entry["bicubic"]), pick(entry["model"])
    h, w = entry["lr_hw"]
    lines.append(f"| x{_key(entry['scale'])} | {h}x{w} | {_cell(bic, 'psnr')} | "
                 f"{_cell(mod, 'psnr')} | {_cell(bic, 'ssim')} | {_cell(mod, 'ssim')} |")
    for method, e in (("bicubic", bic), ("model", mod)):
      for metric in ("psnr", "ssim"):
        sums[(method, metric)].append(e[f"{metric}_mean"])
  mean = {k: float(np.mean(v)) for k, v in sums.items()}
  lines.append(f"| mean over scales | | {mean[('bicubic', 'psnr')]:.2f} | "
               f"{mean[('model', 'psnr')]:.2f} | {mean[('bicubic', 'ssim')]:.4f} | "
               f"{mean[('model', 'ssim')]:.4f} |")
  return lines


def scale_table_markdown(result: dict, *, model_label: str) -> str:
  """Markdown: one row per scale (LR size, 'mean (std)' PSNR and SSIM of bicubic and the model;
  PSNR 2 decimals, SSIM 4), then the mean over scales; for C > 1 channels one more such table
  per channel (thesis Table 4.2); then the protocol notes."""
  per_scale = result.get("per_scale") or {}
  if not per_scale:
    raise InputError("scale_table_markdown: the result has no scales")
  channels = list(result.get("channels") or [])
  n = result.get("slices", "?")
  blur = "blurred " if result.get("blur") else ""
  lines = [f"PSNR (dB) and SSIM, mean (std) over {n} slices; {blur}bicubic LR per scale, "
           "ceil(s) border cropped.", ""]
  title = "all channels" if len(channels) > 1 else ""
  if title:
    lines += [f"{title}:", ""]
  lines += _table(per_scale, lambda e: e, model_label)
  if len(channels) > 1:
    for name in channels:
      lines += ["", f"channel {name}:", ""]
      lines += _table(per_scale, lambda e, k=name: e["per_channel"][k], model_label)
  notes = result.get("notes") or []
  if notes:
    lines.append("")
    lines += [f"Note: {v}" for v in notes]
  return "\n".join(lines)


def _write_figure_atomic(fig, path: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise InputError(f"{path}: cannot create directory {folder} ({e.strerror or e})") from e
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      fig.savefig(f, format="png")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _curve(result: Mapping[str, Any], method: str, metric: str) -> tuple[list, list]:
  entries = sorted((result.get("per_scale") or {}).values(), key=lambda e: e["scale"])
  return [e["scale"] for e in entries], [e[method][f"{metric}_mean"] for e in entries]


def plot_vs_scale(runs: Mapping[str, dict], path, *, metrics=("psnr", "ssim")) -> None:
  """A PNG with one panel per metric: mean score against scale, one line per run (its label)
  and a dashed 'bicubic' line from the first run (thesis Figs 4.4, 4.5, 4.10).

  `runs` maps labels to `evaluate_scales` results. The PNG is written to a temporary file in
  the target's directory and renamed, so an error never leaves a partial file.
  """
  if not runs:
    raise InputError("plot_vs_scale needs at least one run")
  metrics = tuple(metrics)
  if not metrics or any(m not in METRICS for m in metrics):
    raise InputError(f"plot_vs_scale: metrics must be among {tuple(METRICS)}, got {metrics}")
  for label, result in runs.items():
    if not (result or {}).get("per_scale"):
      raise InputError(f"plot_vs_scale: run {label!r} has no scales")

  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(5.0 * len(metrics), 4.0), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(metrics), squeeze=False)[0]
  first = next(iter(runs.values()))
  for ax, metric in zip(axes, metrics):
    x, y = _curve(first, "bicubic", metric)
    ax.plot(x, y, linestyle="--", color="0.4", marker=".", label="bicubic")
    for label, result in runs.items():
      x, y = _curve(result, "model", metric)
      ax.plot(x, y, marker="o", markersize=3, label=str(label))
    ax.set_xlabel("scale s")
    ax.set_ylabel(METRICS[metric])
    ax.set_title(f"mean {METRICS[metric].split()[0]} vs scale")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize="small")
  fig.tight_layout()
  _write_figure_atomic(fig, os.fspath(path))
