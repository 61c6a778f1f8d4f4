"""Whole-slice evaluation as the thesis reports it (reference spec §3.5, §4.4, §8).

Each test slice is super-resolved whole (no tiling), the prediction is neither clipped nor
quantised, `ceil(scale)` border pixels are cropped from prediction and ground truth, and PSNR
(data range 1) and SSIM (skimage-equivalent) are computed per slice. Reports give mean (std) over
all slices, for bicubic interpolation and for the model, as a markdown table.

`Predictor` runs the model on device in fixed-size batches (the last batch is padded), so one
compilation serves every batch of the same slice size; it calls the model through
`models.registry.call_model` and keeps its primary output (ms_gan: the final x4 image).

Evaluation at any scale (thesis ch. 4, §4.3.4, §4.4) lives in `medsr_jax.evaluate.scales`
(imported on demand, `from medsr_jax.evaluate import scales`; this package never imports it), and
`python -m medsr_jax.evaluate` is its command line (`evaluate/__main__.py`):

  python -m medsr_jax.evaluate --workdir=runs/miassr [--scales=1.1:4.0:0.1] [--split=test]
  python -m medsr_jax.evaluate --workdir=runs/miassr,runs/meta_rdn --scales=1.5,2,2.5,3,3.5,4
  python -m medsr_jax.evaluate --model_dir=exports/edsr_x4 --scales=1.5,2.5,3.5

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_call_model.py tests/test_infer.py \\
      tests/test_evaluate_scales.py
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax import cpu_compile
from medsr_jax.data import degradation
from medsr_jax.errors import InputError
from medsr_jax.io import text_files
from medsr_jax.logging import panels
from medsr_jax.metrics import image_quality
from medsr_jax.models import registry


class Predictor:
  """Batched, jitted inference (`registry.call_model`) over (N, h, w, C) numpy LR slices.

  Every batch has `batch_size` slices (the last one is padded with copies of its final slice),
  so one compilation serves all batches of a slice size; `traces` counts compilations. With
  `clip` the outputs are clipped to [0, 1] on device (for writing images; metrics never clip).
  `scale` (a static number) is the scale of arbitrary-scale (meta) models and MDSR; default:
  the model's own `scale` field. The output is the model's primary output (ms_gan: x4 image).
  """

  def __init__(self, model, batch_size: int = 8, *, clip: bool = False,
               scale: Optional[float] = None):
    self.batch_size = int(batch_size)
    self.traces = 0
    scale = registry.default_call_scale(model, scale)

    def forward(variables, x):
      self.traces += 1  # Python side effect: runs only while tracing.
      outputs, _ = registry.call_model(model, variables, x, scale=scale)
      y = registry.primary_output(model, outputs)
      return jnp.clip(y, 0.0, 1.0) if clip else y

    self._apply = jax.jit(forward, compiler_options=cpu_compile.compiler_options(model))

  def __call__(self, variables: Any, lr: np.ndarray,
               log: Callable[[str], None] | None = None) -> np.ndarray:
    outputs, start_time = [], time.time()
    n_batches = -(-len(lr) // self.batch_size)
    for b, start in enumerate(range(0, len(lr), self.batch_size)):
      chunk = lr[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out = np.asarray(jax.device_get(self._apply(variables, jnp.asarray(chunk, jnp.float32))))
      outputs.append(out[:len(out) - pad] if pad else out)
      if log is not None:
        log(f"batch {b + 1}/{n_batches}, slices {start + len(chunk) - pad}/{len(lr)}, "
            f"{time.time() - start_time:.1f}s")
    return np.concatenate(outputs, axis=0)


@dataclasses.dataclass(frozen=True)
class Scores:
  """Per-slice scores of one method."""
  psnr: np.ndarray
  ssim: np.ndarray

  def summary(self) -> dict[str, float]:
    pm, ps = image_quality.summarise(self.psnr)
    sm, ss = image_quality.summarise(self.ssim)
    return dict(psnr_mean=pm, psnr_std=ps, ssim_mean=sm, ssim_std=ss, slices=int(len(self.psnr)))


def score_slices(gt: np.ndarray, pred: np.ndarray, scale: float) -> Scores:
  """PSNR and SSIM of each slice pair after the ceil(scale) border crop."""
  pairs = [image_quality.slice_scores(g, p, scale) for g, p in zip(gt, pred)]
  return Scores(psnr=np.array([p for p, _ in pairs]), ssim=np.array([s for _, s in pairs]))


def bicubic_baseline(lr: np.ndarray, hr_hw: tuple[int, int]) -> np.ndarray:
  """Bicubic interpolation (OpenCV INTER_CUBIC) of each LR slice to the HR size."""
  return degradation.upsample_bicubic(lr, hr_hw)


def evaluate(predict, variables, lr: np.ndarray, hr: np.ndarray, scale: float
             ) -> tuple[dict[str, Scores], dict[str, np.ndarray]]:
  """Scores of bicubic and of the model; also returns the images for panels."""
  sr = predict(variables, lr)
  if sr.shape != hr.shape:
    raise ValueError(f"model output {sr.shape} does not match ground truth {hr.shape}")
  bicubic = bicubic_baseline(lr, hr.shape[1:3])
  scores = {"bicubic": score_slices(hr, bicubic, scale), "model": score_slices(hr, sr, scale)}
  return scores, {"lr": lr, "bicubic": bicubic, "sr": sr, "hr": hr}


def markdown_table(scores: dict[str, Scores], *, scale: float, model_label: str) -> str:
  """The thesis-style table: mean (std) PSNR / SSIM per method, one row per entry of `scores`
  in its order ('model' is labelled `model_label`, other keys by themselves)."""
  lines = [f"| method (x{scale:g}) | PSNR (dB) | SSIM | slices |", "|---|---|---|---|"]
  for key, value in scores.items():
    label = model_label if key == "model" else key
    s = value.summary()
    lines.append(f"| {label} | {s['psnr_mean']:.2f} ({s['psnr_std']:.2f}) | "
                 f"{s['ssim_mean']:.4f} ({s['ssim_std']:.4f}) | {s['slices']} |")
  return "\n".join(lines)


def write_report(directory: str | pathlib.Path, scores: dict[str, Scores], images: dict, *,
                 scale: float, model_label: str, num_panels: int, slice_ids=None
                 ) -> tuple[str, dict[str, np.ndarray]]:
  """Writes results.md, results.json (per-slice scores) and PNG panels, each atomically
  (a temporary file, then a rename: a failed write, e.g. a full disk, leaves the previous file
  or none, never a partial one, and is an InputError on one line).

  Returns the markdown table and the panels ({'panel_007': uint8 image}, for TensorBoard).
  """
  directory = pathlib.Path(directory)
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise InputError(f"could not create {directory}: {' '.join(str(e).split())}") from e
  table = markdown_table(scores, scale=scale, model_label=model_label)
  text_files.write_text_atomic(directory / "results.md", table + "\n", what="results")
  per_slice = {k: {"psnr": v.psnr.tolist(), "ssim": v.ssim.tolist(), **v.summary()}
               for k, v in scores.items()}
  if slice_ids is not None:
    per_slice["slice_index"] = [int(i) for i in slice_ids]
  text_files.write_text_atomic(directory / "results.json", json.dumps(per_slice, indent=1),
                               what="results")
  n = len(images["hr"])
  written = {}
  channels = images["hr"].shape[-1]
  for i in np.linspace(0, n - 1, num=min(num_panels, n)).astype(int):
    for c in range(channels):  # one panel per channel (modality) of multi-channel slices
      name = f"panel_{int(i):03d}" + (f"_c{c}" if channels > 1 else "")
      written[name] = panels.comparison_panel(
          {k: images[key][i][..., c] for k, key in (("LR", "lr"), ("bicubic", "bicubic"),
                                                   ("SR", "sr"), ("HR", "hr"))},
          scale=scale, labels={"SR": model_label})
      path = directory / f"{name}.png"
      try:
        panels.save_png(path, written[name])  # atomic: a temporary file, then os.replace
      except OSError as e:
        raise InputError(f"results: cannot write {path} ({' '.join(str(e).split())})") from e
  return table, written
